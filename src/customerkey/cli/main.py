"""The ``customerkey`` entry point: global options, the command table, and error reporting.

Command groups are imported only when they run (or their help is asked for): the table
``COMMANDS`` names each one's module and one-line help, so ``--version`` and ``--help`` import
neither the runtime nor any command module. To add a group, add one line to ``COMMANDS``; a
group registered eagerly with ``app.add_typer(...)`` still works (it just costs its import).

Global options (``--json``, ``--as``, ``--home``) may stand anywhere before a ``--``, as
``az`` takes ``-o json`` anywhere: ``hoist_global_options`` moves them in front of the command.

Errors of ours print one line on stderr (``Error (Code): message``) and exit 1 (2 for usage
mistakes); with ``--json`` they print ``{"error": {"code", "message"}}`` on stdout instead
(scripts parse stdout), with the same exit codes. Nothing is changed by a command that fails.
"""

from __future__ import annotations

import difflib
import importlib
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import typer

# typer (>= 0.29) carries its own copy of click: its classes, not click's, are the ones to use.
from typer._click import Command, Context, HelpFormatter
from typer._click.exceptions import ClickException, NoArgsIsHelpError, UsageError
from typer.core import TyperCommand, TyperGroup
from typer.main import get_command, get_command_from_info, get_group_from_info
from typer.models import CommandInfo, TyperInfo

from customerkey import __version__
from customerkey.cli.context import CREATING_COMMANDS, CliContext
from customerkey.cli.parameter_help import fill_parameter_help
from customerkey.errors import CustomerKeyError


@dataclass(frozen=True)
class Entry:
    """A command loaded on first use: ``attribute`` of ``module`` is a ``typer.Typer`` (a
    group) or a command function; ``help`` is the line shown in ``customerkey --help``."""

    module: str
    attribute: str
    help: str
    context_settings: dict[str, Any] = field(default_factory=dict)


def _cli(name: str) -> str:
    return f"customerkey.cli.{name}"


# In the order ``customerkey --help`` lists them. The help of a group is its Typer's help.
COMMANDS: dict[str, Entry] = {
    "init": Entry(
        _cli("platform_commands"),
        "init",
        "Create the home folder (0700), its master key (0600) and the database.",
    ),
    "serve": Entry(
        _cli("serve_command"),
        "serve",
        "Run the platform: HTTPS only, a local CA made on first start unless --cert/--key.",
    ),
    "worker": Entry(
        _cli("job_commands"),
        "worker",
        "Run a standalone worker until SIGTERM/SIGINT (PostgreSQL: run as many as you like).",
    ),
    "tick": Entry(
        _cli("platform_commands"),
        "tick",
        "Run the scheduler once: purge what retention released, apply rotation policies.",
    ),
    "ps": Entry(
        _cli("shell_commands"),
        "ps",
        "Run one PowerShell line (Az.KeyVault, Exchange and SharePoint Customer Key cmdlets).",
        {"ignore_unknown_options": True},
    ),
    "shell": Entry(
        _cli("shell_commands"),
        "shell",
        "An interactive PowerShell-like prompt, or run a script from a file or standard input.",
    ),
    "demo": Entry(
        _cli("demo_command"),
        "demo",
        "Play Microsoft's Customer Key story in a fresh home folder, checking every step.",
    ),
    "vault": Entry(
        _cli("vault_commands"),
        "app",
        "Key vaults: create, show, delete and recover them; manage access.",
    ),
    "key": Entry(
        _cli("key_commands"), "app", "Keys: versions, attributes, soft delete, backup and restore."
    ),
    "principal": Entry(
        _cli("principal_commands"), "app", "Users and service principals that can sign in."
    ),
    "tenant": Entry(_cli("tenant_commands"), "app", "Tenants of the service (operator only)."),
    "dep": Entry(
        _cli("dep_commands"),
        "app",
        "Data encryption policies (DEPs): two root keys in two vaults.",
    ),
    "mailuser": Entry(_cli("mailuser_commands"), "app", "Mail users: recipients not yet migrated."),
    "mailbox": Entry(_cli("mailbox_commands"), "app", "Mailboxes: encrypted mail content."),
    "files": Entry(
        _cli("files_commands"),
        "app",
        "The tenant's files data encryption policy (SharePoint/OneDrive).",
    ),
    "site": Entry(
        _cli("site_commands"), "app", "Sites: https://<tenant>.sharepoint.local/sites/<name>."
    ),
    "file": Entry(
        _cli("file_commands"), "app", "Files in sites: streamed in and out, versions, recycle bin."
    ),
    "jobs": Entry(
        _cli("job_commands"), "app", "Background jobs: list, show, wait for and cancel them."
    ),
    "audit": Entry(
        _cli("audit_commands"), "app", "The chained audit log: show, verify, checkpoint, export."
    ),
    "storage": Entry(_cli("storage_commands"), "app", "The blob store: sweep orphaned blobs."),
    "tls": Entry(_cli("tls_commands"), "app", "The local CA and server certificate: show, renew."),
    "hsm": Entry(
        _cli("hsm_commands"), "app", "The HSM: its security domain (backup, restore, recovery)."
    ),
    "master-key": Entry(
        _cli("master_key_commands"),
        "app",
        "The master key: show its form, seal it in the HSM, unseal it.",
    ),
}


def _load(name: str, entry: Entry) -> Command:
    """The click command of ``COMMANDS[name]``, with plain (click) help pages: paragraphs
    re-flowed at words, no ``<bool>`` after flags."""
    target = getattr(importlib.import_module(entry.module), entry.attribute)
    command: Command
    if isinstance(target, typer.Typer):
        command = get_group_from_info(
            TyperInfo(target, name=name, cls=SubGroup, no_args_is_help=True),
            pretty_exceptions_short=False,
            suggest_commands=True,
            rich_markup_mode=None,
        )
    else:
        info = CommandInfo(name=name, callback=target, context_settings=entry.context_settings)
        command = get_command_from_info(info, pretty_exceptions_short=False, rich_markup_mode=None)
    fill_parameter_help(name, command)
    return command


def _subcommands(group: Command) -> list[str]:
    return list(getattr(group, "commands", {}))


def _cross_group_hint(root: RootGroup, ctx: Context, group: str, sub: str) -> str | None:
    """'file put' for 'files put': a sub-command of a group named like the one typed."""
    names = [n for n in root.list_commands(ctx) if n != group]
    for candidate in difflib.get_close_matches(group, names, n=3, cutoff=0.6):
        command = root.get_command(ctx, candidate)
        if command is not None and sub in _subcommands(command):
            return f"{candidate} {sub}"
    return None


def write_commands(group: TyperGroup, ctx: Context, formatter: HelpFormatter) -> None:
    """The commands of a help page, each with its first sentence in full, wrapped at words
    (click cuts it at the width with '...')."""
    rows = []
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        if command is not None and not command.hidden:
            rows.append((name, command.get_short_help_str(limit=1_000)))
    if rows:
        with formatter.section("Commands"):
            formatter.write_dl(rows)


def _usage_error(ctx: Context, message: str) -> UsageError:
    return UsageError(message, ctx=ctx)


class RootGroup(TyperGroup):
    """The top level: loads each command of ``COMMANDS`` on first use."""

    _listing = False

    def list_commands(self, ctx: Context) -> list[str]:
        eager = super().list_commands(ctx)
        return [*[n for n in COMMANDS if n not in self.commands], *eager]

    def get_command(self, ctx: Context, cmd_name: str) -> Command | None:
        command = super().get_command(ctx, cmd_name)
        entry = COMMANDS.get(cmd_name)
        if command is not None or entry is None:
            return command
        if self._listing:  # the root --help lists names and one line each: import nothing
            return TyperCommand(cmd_name, help=entry.help)
        command = _load(cmd_name, entry)
        self.commands[cmd_name] = command
        return command

    def format_commands(self, ctx: Context, formatter: HelpFormatter) -> None:
        self._listing = True
        try:
            write_commands(self, ctx, formatter)
        finally:
            self._listing = False

    def resolve_command(
        self, ctx: Context, args: list[str]
    ) -> tuple[str | None, Command | None, list[str]]:
        name = args[0] if args else ""
        if not args or name.startswith("-") or self.get_command(ctx, name) is not None:
            return self._click_resolve_command(ctx, args)
        # 'vaults list': a group named like the one typed that has the sub-command.
        if len(args) > 1 and not args[1].startswith("-"):
            hint = _cross_group_hint(self, ctx, name, args[1])
            if hint is not None:
                raise _usage_error(
                    ctx, f"No such command '{name} {args[1]}'. Did you mean '{hint}'?"
                )
        close = difflib.get_close_matches(name, self.list_commands(ctx))
        suggestion = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise _usage_error(ctx, f"No such command {name!r}.{suggestion}")


class SubGroup(TyperGroup):
    """A command group: a sub-command that belongs to a similar group is suggested there
    ("No such command 'files put'. Did you mean 'file put'?")."""

    def format_commands(self, ctx: Context, formatter: HelpFormatter) -> None:
        write_commands(self, ctx, formatter)

    def resolve_command(
        self, ctx: Context, args: list[str]
    ) -> tuple[str | None, Command | None, list[str]]:
        try:
            return super().resolve_command(ctx, args)
        except UsageError:
            root = ctx.find_root().command
            if args and isinstance(root, RootGroup) and ctx.info_name:
                hint = _cross_group_hint(root, ctx.find_root(), ctx.info_name, args[0])
                if hint is not None:
                    raise _usage_error(
                        ctx,
                        f"No such command '{ctx.info_name} {args[0]}'. Did you mean '{hint}'?",
                    ) from None
            raise


app = typer.Typer(
    name="customerkey",
    cls=RootGroup,
    help="customerkey: hold the root keys that protect your tenants' data at rest.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"customerkey {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    ctx: typer.Context,
    home: Path | None = typer.Option(
        None,
        "--home",
        envvar="CUSTOMERKEY_HOME",
        metavar="DIR",
        help="Data folder (default ~/.customerkey).",
    ),
    as_json: bool = typer.Option(
        False, "--json", help='Machine-readable output; errors too, as {"error": ...}.'
    ),
    acting_as: str | None = typer.Option(
        None,
        "--as",
        metavar="PRINCIPAL",
        help="Act as this principal: UPN, application id or object id (its rules apply).",
    ),
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Show the version and exit."
    ),
) -> None:
    """customerkey: hold the root keys that protect your tenants' data at rest.

    --json, --as and --home may also be given after the command."""
    ctx.obj = CliContext(
        home=home,
        as_json=as_json,
        acting_as=acting_as,
        may_create=ctx.invoked_subcommand in CREATING_COMMANDS,
    )
    ctx.call_on_close(ctx.obj.close)


def display_database_url(url: str) -> str:
    """The database URL without its password, fit to print."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "(unparsable database URL)"


# Options every command accepts anywhere on the line; the value-taking ones and whether a
# command has an option of the same name of its own (which then keeps it).
GLOBAL_FLAGS = frozenset({"--json"})
GLOBAL_OPTIONS = frozenset({"--as", "--home"})
OWN_OPTIONS = {"demo": frozenset({"--home"})}


def hoist_global_options(argv: list[str]) -> list[str]:
    """Move ``--json``, ``--as X``/``--as=X`` and ``--home X``/``--home=X`` typed after the
    command to just before it, where the root parses them.

    What follows a ``--`` end-of-options marker is left alone, and so is an option the
    command has of its own (``demo --home``). ``--json`` typed twice is still one flag.
    """
    end = argv.index("--") if "--" in argv else len(argv)
    at = 0  # the command: the first word that is neither an option nor an option's value
    while at < end and argv[at].startswith("-"):
        at += 2 if argv[at] in GLOBAL_OPTIONS else 1
    if at >= end:
        return argv
    own = OWN_OPTIONS.get(argv[at], frozenset())
    hoisted: list[str] = []
    rest: list[str] = []
    i = at + 1
    while i < end:
        word = argv[i]
        name = word.split("=", 1)[0]
        if word in GLOBAL_FLAGS and name not in own:
            if word not in hoisted:
                hoisted.append(word)
        elif name in GLOBAL_OPTIONS and name not in own:
            hoisted.append(word)
            if "=" not in word and i + 1 < end:
                hoisted.append(argv[i + 1])
                i += 1
        else:
            rest.append(word)
        i += 1
    if not hoisted:
        return argv
    head = argv[:at]
    if "--json" in hoisted and "--json" in head:
        hoisted.remove("--json")
    return [*head, *hoisted, argv[at], *rest, *argv[end:]]


def _wants_json(args: list[str]) -> bool:
    end = args.index("--") if "--" in args else len(args)
    return "--json" in args[:end]


def _report(as_json: bool, code: str, message: str) -> None:
    if as_json:
        print(json.dumps({"error": {"code": code, "message": message}}, indent=2))
    else:
        print(f"Error ({code}): {message}", file=sys.stderr)


def build() -> Command:
    """The click command of ``app`` (the root group; commands load on first use)."""
    command: Command = get_command(app)
    return command


def _run(as_json: bool, invoke: Callable[[], Any]) -> int:
    """``invoke()``'s exit code, with our errors and click's reported as ``--json`` says."""
    try:
        result = invoke()
    except CustomerKeyError as exc:
        _report(as_json, exc.code, exc.message)
        return 1
    except OSError as exc:  # the home folder or a named file cannot be read or written
        where = f" ({exc.filename})" if exc.filename else ""
        _report(as_json, "IOError", f"{exc.strerror or exc}{where}.")
        return 1
    except NoArgsIsHelpError as exc:
        exc.show()
        return exc.exit_code
    except UsageError as exc:
        if as_json:
            _report(True, "UsageError", exc.format_message())
        else:
            exc.show()
        return exc.exit_code
    except ClickException as exc:
        if as_json:
            _report(True, type(exc).__name__, exc.format_message())
        else:
            exc.show()
        return exc.exit_code
    except typer.Abort:  # a prompt answered with Ctrl-D, or declined with abort=True
        if as_json:
            _report(True, "Aborted", "Aborted.")
        else:
            print("Aborted!", file=sys.stderr)
        return 1
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    # With standalone_mode=False click hands back typer.Exit's code, or what the command
    # returned (our commands return None).
    return result if isinstance(result, int) and not isinstance(result, bool) else 0


def main(argv: list[str] | None = None) -> int:
    args = hoist_global_options(list(sys.argv[1:] if argv is None else argv))
    as_json = _wants_json(args)
    command = build()
    return _run(
        as_json,
        lambda: command.main(args=args, prog_name="customerkey", standalone_mode=False),
    )


if __name__ == "__main__":
    sys.exit(main())
