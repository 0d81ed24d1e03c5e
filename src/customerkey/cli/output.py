"""Printing views: Rich tables for people, JSON for scripts (``--json``), progress on stderr.

Tables are laid out here, not by Rich: a column is never narrower than its longest word, so a
GUID, a URL or a header word is never split. On a terminal the width is ``COLUMNS`` if set,
else the terminal's, and a list that cannot fit prints one block per record instead
(``Format-List`` style). Output that is not a terminal (a pipe, a file; Rich's
``TTY_COMPATIBLE``/``FORCE_COLOR`` say otherwise) gets the same layout without a width limit
and without colour, one line per row. No line ends in padding.

Every JSON object uses PascalCase property names, as the cmdlets do (``emit_message`` prints
``{"Message": ..., **data}``).
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from rich.box import HEAVY_HEAD
from rich.cells import cell_len
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

# For what commands print themselves (messages, the demo's tables, progress bars). Not a
# terminal (a pipe, a test): room for wide tables instead of 80 columns of ellipses.
_WIDTH = None if sys.stdout.isatty() else 200
console = Console(highlight=False, soft_wrap=True, width=_WIDTH)
err_console = Console(stderr=True, highlight=False, soft_wrap=True, width=_WIDTH)

# Rich's HEAVY_HEAD box with (0, 1) padding: "│ a │ b │" is 3 per column plus 1.
_BORDER_PER_COLUMN = 3
_GAP = 2  # between the name and value columns of a record
_TRAILING_BLANKS = re.compile(r"[ \t]+((?:\x1b\[[0-9;]*m)*)$", re.MULTILINE)


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


def _is_terminal() -> bool:
    return Console(file=sys.stdout).is_terminal


def table_width() -> int | None:
    """Columns to fit tables in on a terminal (``COLUMNS``, else its size); None for a pipe
    or a file, which get every row on one line."""
    if not _is_terminal():
        return None
    columns = os.environ.get("COLUMNS", "")
    if columns.isdigit() and int(columns) > 0:
        return int(columns)
    return shutil.get_terminal_size().columns


def _longest_word(text: str) -> int:
    return max((cell_len(word) for word in text.split()), default=0)


def column_widths(
    headers: Sequence[str], rows: Sequence[Sequence[str]], width: int | None
) -> list[int] | None:
    """Content widths that fit ``width`` with no word split, or None when none do."""
    natural = [
        max([cell_len(h), *(cell_len(line) for row in rows for line in row[i].splitlines())])
        for i, h in enumerate(headers)
    ]
    border = _BORDER_PER_COLUMN * len(headers) + 1
    if width is None or sum(natural) + border <= width:
        return natural
    least = [
        max([_longest_word(h), *(_longest_word(row[i]) for row in rows)])
        for i, h in enumerate(headers)
    ]
    spare = width - border - sum(least)
    if spare < 0:
        return None
    slack = [n - m for n, m in zip(natural, least, strict=True)]
    total = sum(slack)
    widths = [m + (spare * s) // total for m, s in zip(least, slack, strict=True)]
    # Hand out what integer division left over, one column at a time.
    for i in sorted(range(len(widths)), key=lambda i: slack[i] - (widths[i] - least[i])):
        if sum(widths) >= width - border:
            break
        if widths[i] < natural[i]:
            widths[i] += 1
    return widths


def _render(renderable: Any, width: int | None) -> str:
    terminal = _is_terminal()
    buffer = io.StringIO()
    Console(
        file=buffer,
        width=width or 100_000,
        height=1_000,  # with a width, keeps Rich from sizing a TERM=dumb terminal at 80x25
        force_terminal=terminal,
        color_system="auto" if terminal else None,
        highlight=False,
        emoji=False,
    ).print(renderable)
    return _TRAILING_BLANKS.sub(r"\1", buffer.getvalue())


def _write(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


def _record(view: Mapping[str, Any], width: int | None, title: str | None = None) -> Table:
    """One record as name/value lines; values wrap at words to the width."""
    table = Table(show_header=False, title=title, box=None, pad_edge=False, padding=(0, _GAP, 0, 0))
    name_width = max((cell_len(str(k)) for k in view), default=0)
    value_width = None if width is None else max(width - name_width - _GAP, 10)
    table.add_column(style="bold", no_wrap=True)
    table.add_column(overflow="fold", max_width=value_width)
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
        table.add_row(str(key), _cell(value))
    return table


def emit_json(data: Any) -> None:
    print(json.dumps(data, indent=2, default=str))


def emit_object(view: Mapping[str, Any], *, as_json: bool, title: str | None = None) -> None:
    if as_json:
        emit_json(view)
        return
    width = table_width()
    _write(_render(_record(view, width, title), width))


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
    width = table_width()
    rows = [[_cell(view.get(column)) for column in columns] for view in views]
    widths = column_widths(columns, rows, width)
    if widths is None:  # too narrow for a table: one block per record
        blocks = [
            _render(_record({c: view.get(c) for c in columns}, width), width) for view in views
        ]
        _write(("" if title is None else f"{title}\n\n") + "\n".join(blocks))
        return
    table = Table(title=title, box=HEAVY_HEAD)
    for column, column_width in zip(columns, widths, strict=True):
        table.add_column(column, width=column_width, overflow="fold")
    for row in rows:
        table.add_row(*row)
    _write(_render(table, width))


def emit_message(message: str, *, as_json: bool, data: Mapping[str, Any] | None = None) -> None:
    """A sentence for people; with ``--json``, ``{"Message": ..., **data}`` (PascalCase)."""
    if as_json:
        emit_json({"Message": message, **(data or {})})
    else:
        console.print(message, markup=False)


@contextmanager
def late_count_bar(what: str, *, as_json: bool) -> Iterator[Callable[[int, int | None], None]]:
    """A ``progress(done, total)`` callback whose ``count_bar`` appears at its first call (so a
    refusal before any work prints no bar) and is stopped when the block ends."""
    shown: list[tuple[Progress, Any]] = []

    def progress(done: int, total: int | None) -> None:
        if not shown:
            bar = count_bar(what, as_json=as_json)
            bar.start()
            shown.append((bar, bar.add_task(what, total=total)))
        bar, task = shown[0]
        bar.update(task, completed=done, total=total)

    try:
        yield progress
    finally:
        for bar, _ in shown:
            bar.stop()


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
