"""Printing views: Rich tables for people, JSON for scripts (``--json``), errors on stderr."""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

# Not a terminal (a pipe, a test): tables get room instead of 80 columns of ellipses.
_WIDTH = None if sys.stdout.isatty() else 200
console = Console(highlight=False, soft_wrap=True, width=_WIDTH)
err_console = Console(stderr=True, highlight=False, soft_wrap=True, width=_WIDTH)


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "True" if value else "False"
    if isinstance(value, list | tuple):
        return ", ".join(_cell(v) for v in value)
    if isinstance(value, Mapping):
        return "; ".join(f"{k}={_cell(v)}" for k, v in value.items())
    return str(value)


def emit_json(data: Any) -> None:
    print(json.dumps(data, indent=2, default=str))


def emit_object(view: Mapping[str, Any], *, as_json: bool, title: str | None = None) -> None:
    if as_json:
        emit_json(view)
        return
    table = Table(show_header=False, title=title, box=None, pad_edge=False)
    table.add_column(style="bold", no_wrap=True)
    table.add_column(overflow="fold")
    for key, value in view.items():
        if key == "AccessPolicies" and isinstance(value, list):
            table.add_row(key, "" if value else "(none)")
            for policy in value:
                name = policy.get("PrincipalName") or policy["ObjectId"]
                table.add_row(
                    "",
                    f"{policy['DisplayName']} ({name}): {', '.join(policy['PermissionsToKeys'])}",
                )
            continue
        table.add_row(key, _cell(value))
    console.print(table)


def emit_list(
    views: Sequence[Mapping[str, Any]],
    columns: Sequence[str],
    *,
    as_json: bool,
    title: str | None = None,
) -> None:
    if as_json:
        emit_json(list(views))
        return
    table = Table(title=title)
    for column in columns:
        table.add_column(column, overflow="fold")
    for view in views:
        table.add_row(*(_cell(view.get(column)) for column in columns))
    console.print(table)


def emit_message(message: str, *, as_json: bool, data: Mapping[str, Any] | None = None) -> None:
    if as_json:
        emit_json({"message": message, **(data or {})})
    else:
        console.print(message)


def count_bar(what: str, *, as_json: bool) -> Progress:
    """A progress bar of things counted (items, keys, folders) on stderr, off with ``--json``.
    ``what`` is its label; ``"{task.description}"`` labels each task by its own name."""
    return Progress(
        TextColumn(what),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err_console,
        disable=as_json,
        transient=False,
    )
