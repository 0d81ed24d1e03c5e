"""Asking before a destructive command: the one confirmation every delete, purge and purge
approval of the CLI uses.

Interactively the user types the name of what goes, as GitHub asks before deleting a
repository: a stray Enter or a habitual ``y`` destroys nothing. ``--yes`` skips the question
for scripts. With no terminal to ask on (a pipe, a script, CI) or with ``--json`` (output for
programs), a missing ``--yes`` is refused at once rather than waiting for an answer that never
comes. A refusal or a wrong answer changes nothing.
"""

from __future__ import annotations

import sys

import typer

from customerkey.cli.context import CliContext
from customerkey.errors import BadParameter

YES = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation (for scripts).")


def confirm_destruction(
    c: CliContext, action: str, name: str, *, yes: bool, consequence: str = ""
) -> None:
    """Return when the user confirmed ``action`` (e.g. "Deleting vault 'a1'") by typing
    ``name``, or passed ``--yes``; otherwise raise ``BadParameter``. ``consequence`` says what
    is lost, shown before the question."""
    if yes:
        return
    if c.as_json or not sys.stdin.isatty():
        raise BadParameter(f"{action} is destructive; pass --yes to confirm.")
    typer.echo(f"{action}{': ' + consequence if consequence else '.'}", err=True)
    try:
        answer = typer.prompt(f"Type '{name}' to confirm", default="", show_default=False, err=True)
    except typer.Abort:  # Ctrl-C or end of input at the prompt
        answer = None
    # Names of vaults, keys and policies are case-insensitive.
    if answer is None or answer.strip().lower() != name.lower():
        raise BadParameter(f"{action} cancelled: '{name}' was not typed; nothing changed.")
