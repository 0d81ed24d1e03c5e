"""``customerkey mailbox ...``: mailboxes and their encrypted content.

Create, show, list and set mailboxes (a DEP change re-keys the mailbox in a job), move
requests, statistics, import and export of items, reading and deleting one.
"""

from __future__ import annotations

from pathlib import Path

import typer
from rich.progress import Progress

from customerkey.cli.context import CliContext, cli_context, tenant_for_upn, tenant_of
from customerkey.cli.job_commands import finish_or_report
from customerkey.cli.output import count_bar, emit_list, emit_message, emit_object
from customerkey.errors import BadParameter
from customerkey.views.mail import (
    item_view,
    mailbox_view,
    move_view,
    statistics_view,
)

app = typer.Typer(help="Mailboxes: encrypted mail content.")

MAILBOX_COLUMNS = ["UserPrincipalName", "Alias", "RecipientTypeDetails", "DataEncryptionPolicy"]


def _bar(c: CliContext, what: str) -> Progress:
    return count_bar(what, as_json=c.as_json)


@app.command("create")
def mailbox_create(
    ctx: typer.Context,
    upn: str,
    shared: bool = typer.Option(False, "--shared", help="A shared mailbox."),
    alias: str | None = typer.Option(None, "--alias"),
    display_name: str | None = typer.Option(None, "--display-name"),
    dep: str | None = typer.Option(None, "--dep"),
    tenant: str | None = typer.Option(None, "--tenant"),
) -> None:
    """New-Mailbox."""
    c = cli_context(ctx)
    mailbox = c.runtime.mail.create_mailbox(
        c.actor,
        tenant_for_upn(c, upn, tenant),
        upn,
        kind="shared" if shared else "user",
        alias=alias,
        display_name=display_name,
        policy=dep,
    )
    emit_object(mailbox_view(mailbox), as_json=c.as_json)


@app.command("show")
def mailbox_show(ctx: typer.Context, identity: str) -> None:
    c = cli_context(ctx)
    emit_object(mailbox_view(c.runtime.mail.get(c.actor, identity)), as_json=c.as_json)


@app.command("list")
def mailbox_list(
    ctx: typer.Context,
    tenant: str | None = typer.Option(None, "--tenant"),
    mail_users: bool = typer.Option(False, "--mail-users", help="Only mail users."),
) -> None:
    c = cli_context(ctx)
    boxes = c.runtime.mail.list_mailboxes(
        c.actor, tenant_of(c, tenant), kind="mailuser" if mail_users else None
    )
    emit_list([mailbox_view(m) for m in boxes], MAILBOX_COLUMNS, as_json=c.as_json)


@app.command("set")
def mailbox_set(
    ctx: typer.Context,
    identity: str,
    dep: str = typer.Option(..., "--dep", help="A DEP name or GUID, or 'none' (service keys)."),
    no_wait: bool = typer.Option(False, "--no-wait", help="Queue the re-key job and return."),
) -> None:
    """Set-Mailbox / Set-MailUser -DataEncryptionPolicy: re-encrypts existing content."""
    c = cli_context(ctx)
    policy = None if dep.lower() in ("none", "$null", "null") else dep
    job = c.runtime.mail.set_policy(c.actor, identity, policy)
    finish_or_report(c, job, no_wait=no_wait)
    stats = c.runtime.mail.statistics(c.actor, identity)
    emit_object(statistics_view(stats), as_json=c.as_json)


@app.command("move")
def mailbox_move(
    ctx: typer.Context,
    identity: str,
    no_wait: bool = typer.Option(False, "--no-wait"),
) -> None:
    """New-MoveRequest: re-encrypt all content under a new mailbox key."""
    c = cli_context(ctx)
    job = c.runtime.mail.move(c.actor, identity)
    done = finish_or_report(c, job, no_wait=no_wait)
    emit_object(move_view(done or job, identity), as_json=c.as_json)


@app.command("move-status")
def mailbox_move_status(ctx: typer.Context, identity: str) -> None:
    """Get-MoveRequest."""
    c = cli_context(ctx)
    job = c.runtime.mail.move_status(c.actor, identity)
    if job is None:
        raise BadParameter(f"There is no move request for '{identity}'.")
    emit_object(move_view(job, identity), as_json=c.as_json)


@app.command("stats")
def mailbox_stats(ctx: typer.Context, identity: str) -> None:
    """Get-MailboxStatistics: IsEncrypted, DataEncryptionPolicyID, ItemCount, TotalItemSize."""
    c = cli_context(ctx)
    emit_object(statistics_view(c.runtime.mail.statistics(c.actor, identity)), as_json=c.as_json)


@app.command("import")
def mailbox_import(
    ctx: typer.Context,
    identity: str,
    path: Path,
    fmt: str | None = typer.Option(None, "--format", help="mbox, maildir or eml (detected)."),
    again: bool = typer.Option(
        False, "--again", help="Import a store this mailbox already imported once more."
    ),
    no_wait: bool = typer.Option(False, "--no-wait", help="Queue the import job and return."),
) -> None:
    """Import an mbox file, a Maildir or a folder of .eml files, streaming, as a durable job.
    If it is interrupted, the same command resumes it (or a worker does); once it is done,
    the same command does nothing (``--again`` imports the store once more)."""
    c = cli_context(ctx)
    job = c.runtime.mail.start_import(c.actor, identity, path, fmt=fmt, again=again)
    if job.state == "succeeded":
        result = c.runtime.mail.import_result(job)
        emit_message(
            f"{path} was already imported into {identity} ({result.imported} messages, job "
            f"{job.id}); nothing done. Use --again to import it once more.",
            as_json=c.as_json,
            data={"imported": result.imported, "bytes": result.bytes, "job": job.id},
        )
        return
    done = finish_or_report(c, job, no_wait=no_wait)
    if no_wait or done is None:
        return
    result = c.runtime.mail.import_result(done)
    emit_message(
        f"Imported {result.imported} messages ({result.bytes:,} bytes) into {identity}.",
        as_json=c.as_json,
        data={"imported": result.imported, "bytes": result.bytes, "job": done.id},
    )


@app.command("export")
def mailbox_export(
    ctx: typer.Context,
    identity: str,
    path: Path,
    fmt: str = typer.Option("mbox", "--format", help="mbox, maildir or eml."),
) -> None:
    """Export every message, byte for byte as imported."""
    c = cli_context(ctx)
    with _bar(c, f"exporting {identity}") as bar:
        task = bar.add_task("export", total=None)
        count = c.runtime.mail.export_messages(
            c.actor,
            identity,
            path,
            fmt=fmt,
            progress=lambda done, total: bar.update(task, completed=done, total=total),
        )
    emit_message(
        f"Exported {count} messages to {path}.",
        as_json=c.as_json,
        data={"exported": count, "path": str(path)},
    )


@app.command("items")
def mailbox_items(
    ctx: typer.Context, identity: str, folder: str | None = typer.Option(None, "--folder")
) -> None:
    c = cli_context(ctx)
    items = c.runtime.mail.list_items(c.actor, identity, folder=folder)
    emit_list(
        [item_view(i) for i in items],
        ["Seq", "Folder", "Size", "Received", "Id"],
        as_json=c.as_json,
    )


@app.command("read")
def mailbox_read(
    ctx: typer.Context,
    identity: str,
    item: str = typer.Argument(..., help="Item id or sequence number."),
    out: Path | None = typer.Option(None, "--out", help="Write to a file instead of stdout."),
) -> None:
    c = cli_context(ctx)
    data = c.runtime.mail.read_item(c.actor, identity, item)
    if out is not None:
        out.write_bytes(data)
        emit_message(f"Wrote {len(data)} bytes to {out}.", as_json=c.as_json)
    else:
        import sys

        sys.stdout.buffer.write(data)
        sys.stdout.flush()


@app.command("delete-item")
def mailbox_delete_item(ctx: typer.Context, identity: str, item: str) -> None:
    c = cli_context(ctx)
    c.runtime.mail.delete_item(c.actor, identity, item)
    emit_message(f"Deleted item {item} from {identity}.", as_json=c.as_json)
