"""The ``customerkey`` entry point: global options, sub-commands, and error reporting.

Errors of ours print one line on stderr (``Error (Code): message``) and exit 1 (2 for usage
mistakes); nothing is changed by a command that fails.
"""

from __future__ import annotations

import sys
from pathlib import Path

import typer
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from customerkey import __version__
from customerkey.cli import (
    audit_commands,
    demo_command,
    dep_commands,
    file_commands,
    files_commands,
    job_commands,
    key_commands,
    mailbox_commands,
    mailuser_commands,
    principal_commands,
    serve_command,
    shell_commands,
    site_commands,
    storage_commands,
    tenant_commands,
    vault_commands,
)
from customerkey.cli.context import CREATING_COMMANDS, CliContext, cli_context
from customerkey.cli.output import console, emit_object, err_console
from customerkey.errors import CustomerKeyError
from customerkey.home import Home

app = typer.Typer(
    name="customerkey",
    help="customerkey: hold the root keys that protect your tenants' data at rest.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(vault_commands.app, name="vault")
app.add_typer(key_commands.app, name="key")
app.add_typer(principal_commands.app, name="principal")
app.add_typer(audit_commands.app, name="audit")
app.add_typer(tenant_commands.app, name="tenant")
app.add_typer(dep_commands.app, name="dep")
app.add_typer(mailuser_commands.app, name="mailuser")
app.add_typer(mailbox_commands.app, name="mailbox")
app.add_typer(job_commands.app, name="jobs")
app.add_typer(files_commands.app, name="files")
app.add_typer(site_commands.app, name="site")
app.add_typer(file_commands.app, name="file")
app.add_typer(storage_commands.app, name="storage")
app.command("serve")(serve_command.serve)
app.command("worker")(job_commands.worker)
app.command("ps", context_settings={"ignore_unknown_options": True})(shell_commands.ps)
app.command("shell")(shell_commands.shell)
app.command("demo")(demo_command.demo)


def _version(value: bool) -> None:
    if value:
        console.print(f"customerkey {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    ctx: typer.Context,
    home: Path | None = typer.Option(
        None, "--home", envvar="CUSTOMERKEY_HOME", help="Data folder (default ~/.customerkey)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
    acting_as: str | None = typer.Option(
        None, "--as", help="Act as this principal (access policies apply)."
    ),
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True),
) -> None:
    ctx.obj = CliContext(
        home=home,
        as_json=as_json,
        acting_as=acting_as,
        may_create=ctx.invoked_subcommand in CREATING_COMMANDS,
    )
    ctx.call_on_close(ctx.obj.close)


def display_database_url(url: str) -> str:
    """The database URL without its password, fit to print."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "(unparsable database URL)"


@app.command("init")
def init(ctx: typer.Context) -> None:
    """Create the home folder (0700), its master key (0600) and the database."""
    c = cli_context(ctx)
    settings = c.settings()
    home = Home(settings.home)
    created = home.init()
    runtime = c.runtime  # opens the database and runs migrations
    view = {
        "Home": str(home.path),
        "MasterKey": str(home.master_key_file),
        "MasterKeyCreated": created,
        "Database": (
            display_database_url(runtime.db.url)
            if runtime.settings.database_url
            else str(home.database_file)
        ),
        "SchemaRevision": runtime.db.current_revision(),
    }
    emit_object(view, as_json=c.as_json)
    if created and not c.as_json:
        console.print(
            f"[yellow]Back up {home.master_key_file}: every key in every vault is sealed "
            "under it.[/yellow]"
        )


@app.command("tick")
def tick(ctx: typer.Context) -> None:
    """Run the scheduler once: purge what retention released, apply rotation policies."""
    c = cli_context(ctx)
    report = c.runtime.vault.tick(c.actor)
    emit_object(
        {
            "PurgedKeys": list(report.purged_keys),
            "PurgedVaults": list(report.purged_vaults),
            "RotatedKeys": list(report.rotated_keys),
            "NotifiedKeys": list(report.notified_keys),
        },
        as_json=c.as_json,
    )


def _hoist_global_flags(argv: list[str]) -> list[str]:
    """Let ``--json`` stand anywhere on the line, as people type it (after the command).

    Every ``--json`` before a ``--`` end-of-options marker becomes one leading ``--json``
    (typed twice it is still one flag); what follows ``--`` is left alone.
    """
    end = argv.index("--") if "--" in argv else len(argv)
    head = [a for a in argv[:end] if a != "--json"]
    if len(head) == end:
        return argv
    return ["--json", *head, *argv[end:]]


def main(argv: list[str] | None = None) -> int:
    args = _hoist_global_flags(list(sys.argv[1:] if argv is None else argv))
    try:
        app(args=args, prog_name="customerkey")
    except CustomerKeyError as exc:
        err_console.print(f"Error ({exc.code}): {exc.message}", markup=False, emoji=False)
        return 1
    except OSError as exc:  # the home folder or a named file cannot be read or written
        where = f" ({exc.filename})" if exc.filename else ""
        err_console.print(
            f"Error (IOError): {exc.strerror or exc}{where}.", markup=False, emoji=False
        )
        return 1
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
