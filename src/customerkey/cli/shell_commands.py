"""``customerkey ps "<line>"`` and ``customerkey shell``: run Microsoft's Customer Key
PowerShell lines as written (the shell itself is ``customerkey.pwsh``)."""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from customerkey.cli.context import CliContext, cli_context
from customerkey.pwsh.engine.session import Session


def _session(c: CliContext) -> Session:
    return Session(
        lambda: c.runtime,
        actor=lambda: c.actor,
        out=sys.stdout,
        err=sys.stderr,
        as_json=c.as_json,
    )


def ps(
    ctx: typer.Context,
    line: list[str] = typer.Argument(
        ...,
        metavar="LINE",
        help='A PowerShell line, e.g. "Get-AzKeyVault -VaultName contoso-a1".',
    ),
) -> None:
    """Run one PowerShell line (Az.KeyVault, Exchange and SharePoint Customer Key cmdlets).

    Give the line as one quoted argument; several arguments are joined with blanks (as
    pwsh -Command does). The line runs against the home folder given by --home (or
    CUSTOMERKEY_HOME); put -- before a line that holds --json, --as or --home of its own."""
    c = cli_context(ctx)
    source = " ".join(line)
    if not _session(c).run(source):
        raise typer.Exit(1)


def shell(
    ctx: typer.Context,
    script: Path | None = typer.Argument(
        None,
        metavar="SCRIPT",
        help="A .ps1 script to run ('-' for standard input).",
        show_default=False,
    ),
) -> None:
    """An interactive PowerShell-like prompt, or run a script from a file or standard input.

    History is kept in the home folder; Tab completes cmdlet and parameter names. The lines
    run against the home folder given by --home (or CUSTOMERKEY_HOME)."""
    c = cli_context(ctx)
    session = _session(c)
    if script is not None and str(script) != "-":
        try:
            source = script.read_text(encoding="utf-8-sig")
        except OSError as exc:
            typer.echo(f"Cannot read the script {script}: {exc.strerror or exc}.", err=True)
            raise typer.Exit(1) from None
        except UnicodeDecodeError:
            typer.echo(f"The script {script} is not UTF-8 text.", err=True)
            raise typer.Exit(1) from None
        ok = session.run(source, file=str(script))
        raise typer.Exit(0 if ok else 1)
    if script is not None or not sys.stdin.isatty():
        ok = session.run(sys.stdin.read())
        raise typer.Exit(0 if ok else 1)
    try:
        from customerkey.pwsh.engine.repl import run_repl
    except ImportError:  # prompt_toolkit missing
        typer.echo(
            "The interactive shell needs prompt_toolkit (pip install prompt_toolkit); scripts "
            "run without it: customerkey shell script.ps1, or pipe them to standard input.",
            err=True,
        )
        raise typer.Exit(1) from None

    history = c.runtime.home.path / "shell_history"
    raise typer.Exit(run_repl(session, history))
