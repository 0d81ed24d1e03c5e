"""``customerkey mailbox ...``: mailboxes and their encrypted content.

Create, show, list and set mailboxes (a DEP change re-keys the mailbox in a job), move
requests, statistics, import and export of items, reading and deleting one. Commands that
queue a job print its id with ``--json`` (``JobId``), with ``--no-wait`` too.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from customerkey.cli.confirm import YES, confirm_destruction
from customerkey.cli.context import cli_context, tenant_for_upn, tenant_of
from customerkey.cli.job_commands import finish_or_report
from customerkey.cli.output import (
    emit_list,
    emit_message,
    emit_object,
    err_console,
    late_count_bar,
)

if TYPE_CHECKING:
    pass

app = typer.Typer(help="Mailboxes: encrypted mail content.")

MAILBOX_COLUMNS = ["UserPrincipalName", "Alias", "RecipientTypeDetails", "DataEncryptionPolicy"]
IDENTITY_HELP = "The mailbox: its UPN, alias or id."
# What to do after Ctrl-C stopped an import run here (the message starts "Stopped at N of M; ").
IMPORT_RESUME = "run the same command to resume (the import continues where it stopped)"


@app.command("create")
def mailbox_create(
    ctx: typer.Context,
    upn: str = typer.Argument(..., help="The user principal name (in a tenant's mail domain)."),
    shared: bool = typer.Option(False, "--shared", help="A shared mailbox."),
    alias: str | None = typer.Option(None, "--alias", help="Alias (default: the UPN's name)."),
    display_name: str | None = typer.Option(None, "--display-name", help="Display name."),
    dep: str | None = typer.Option(None, "--dep", help="A DEP (name or GUID) to protect it."),
    tenant: str | None = typer.Option(
        None, "--tenant", help="Tenant (default: the one whose mail domain the UPN is in)."
    ),
) -> None:
    """New-Mailbox: create a mailbox (under a DEP, or service-managed keys)."""
    from customerkey.views.mail import mailbox_view

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
def mailbox_show(
    ctx: typer.Context, identity: str = typer.Argument(..., help=IDENTITY_HELP)
) -> None:
    """Get-Mailbox: one mailbox and its DEP."""
    from customerkey.views.mail import mailbox_view

    c = cli_context(ctx)
    emit_object(mailbox_view(c.runtime.mail.get(c.actor, identity)), as_json=c.as_json)


@app.command("list")
def mailbox_list(
    ctx: typer.Context,
    tenant: str | None = typer.Option(None, "--tenant", help="Tenant (default: yours)."),
    mail_users: bool = typer.Option(False, "--mail-users", help="Only mail users."),
) -> None:
    """Get-Mailbox: the mailboxes of a tenant."""
    from customerkey.views.mail import mailbox_view

    c = cli_context(ctx)
    boxes = c.runtime.mail.list_mailboxes(
        c.actor, tenant_of(c, tenant), kind="mailuser" if mail_users else None
    )
    emit_list([mailbox_view(m) for m in boxes], MAILBOX_COLUMNS, as_json=c.as_json)


@app.command("set")
def mailbox_set(
    ctx: typer.Context,
    identity: str = typer.Argument(..., help=IDENTITY_HELP),
    dep: str = typer.Option(..., "--dep", help="A DEP name or GUID, or 'none' (service keys)."),
    no_wait: bool = typer.Option(False, "--no-wait", help="Queue the re-key job and return."),
) -> None:
    """Set-Mailbox / Set-MailUser -DataEncryptionPolicy: re-encrypts existing content (a job;
    JobId in the output, empty when there was no content to re-encrypt)."""
    from customerkey.views.mail import statistics_view

    c = cli_context(ctx)
    policy = None if dep.lower() in ("none", "$null", "null") else dep
    job = c.runtime.mail.set_policy(c.actor, identity, policy)
    finish_or_report(c, job, no_wait=no_wait, what="re-key")
    stats = c.runtime.mail.statistics(c.actor, identity)
    emit_object({**statistics_view(stats), "JobId": job.id if job else None}, as_json=c.as_json)


@app.command("move")
def mailbox_move(
    ctx: typer.Context,
    identity: str = typer.Argument(..., help=IDENTITY_HELP),
    no_wait: bool = typer.Option(False, "--no-wait", help="Queue the move job and return."),
) -> None:
    """New-MoveRequest: re-encrypt all content under a new mailbox key."""
    from customerkey.views.mail import move_view

    c = cli_context(ctx)
    job = c.runtime.mail.move(c.actor, identity)
    done = finish_or_report(c, job, no_wait=no_wait, what="move")
    emit_object(move_view(done or job, identity), as_json=c.as_json)


@app.command("move-status")
def mailbox_move_status(
    ctx: typer.Context, identity: str = typer.Argument(..., help=IDENTITY_HELP)
) -> None:
    """Get-MoveRequest: the mailbox's latest move or re-key (a cancelled one is Suspended)."""
    from customerkey.errors import BadParameter
    from customerkey.views.mail import move_view

    c = cli_context(ctx)
    job = c.runtime.mail.move_status(c.actor, identity)
    if job is None:
        raise BadParameter(f"There is no move request for '{identity}'.")
    emit_object(move_view(job, identity), as_json=c.as_json)


@app.command("stats")
def mailbox_stats(
    ctx: typer.Context, identity: str = typer.Argument(..., help=IDENTITY_HELP)
) -> None:
    """Get-MailboxStatistics: IsEncrypted, DataEncryptionPolicyID, ItemCount, TotalItemSize."""
    from customerkey.views.mail import statistics_view

    c = cli_context(ctx)
    emit_object(statistics_view(c.runtime.mail.statistics(c.actor, identity)), as_json=c.as_json)


def _import_data(job_id: str, imported: int, size: int) -> dict[str, Any]:
    return {"Imported": imported, "Bytes": size, "JobId": job_id}


@app.command("import")
def mailbox_import(
    ctx: typer.Context,
    identity: str = typer.Argument(..., help=IDENTITY_HELP),
    path: Path = typer.Argument(
        ..., help="An mbox file, a Maildir folder, an .eml file or a folder of .eml files."
    ),
    fmt: str | None = typer.Option(
        None, "--format", help="mbox, maildir or eml (default: told from the path)."
    ),
    again: bool = typer.Option(
        False, "--again", help="Import a store this mailbox already imported once more."
    ),
    no_wait: bool = typer.Option(
        False, "--no-wait", help="Queue the import job, print its id and return."
    ),
) -> None:
    """Import an mbox file, a Maildir or a folder of .eml files, streaming, as a durable job.

    The store is first staged, encrypted, into the blob store (so a worker on any host can
    run the job); an interrupted staging goes on where it stopped when the command is run
    again. What is not a mail store is refused, with nothing changed. If the import is interrupted
    (Ctrl-C), the same command resumes it (or a worker does); once it is done, the same command
    does nothing (--again imports the store once more). 'customerkey jobs cancel' stops it,
    keeping what it imported."""
    c = cli_context(ctx)
    mail = c.runtime.mail
    with late_count_bar(f"staging {path.name}", as_json=c.as_json) as staging:
        job = mail.start_import(
            c.actor, identity, path, fmt=fmt, again=again, staging_progress=staging
        )
    if job.state == "succeeded":
        result = mail.import_result(job)
        emit_message(
            f"{path} was already imported into {identity} ({result.imported} messages, job "
            f"{job.id}); nothing done. Use --again to import it once more.",
            as_json=c.as_json,
            data=_import_data(job.id, result.imported, result.bytes),
        )
        return
    done = finish_or_report(c, job, no_wait=no_wait, what="import", resume_hint=IMPORT_RESUME)
    if no_wait or done is None:
        if c.as_json:
            emit_message(
                f"Started import job {job.id}.",
                as_json=True,
                data={"JobId": job.id, "Kind": job.kind, "State": job.state},
            )
        return
    result = mail.import_result(done)
    if result.imported == 0:
        err_console.print(
            f"Warning: {path} is an empty {done.payload.get('format', 'mail')} store; "
            "no messages were imported.",
            markup=False,
            highlight=False,
        )
    emit_message(
        f"Imported {result.imported} messages ({result.bytes:,} bytes) into {identity}.",
        as_json=c.as_json,
        data=_import_data(done.id, result.imported, result.bytes),
    )


@app.command("export")
def mailbox_export(
    ctx: typer.Context,
    identity: str = typer.Argument(..., help=IDENTITY_HELP),
    path: Path = typer.Argument(..., help="A new file (mbox) or folder (maildir, eml)."),
    fmt: str = typer.Option("mbox", "--format", help="mbox, maildir or eml."),
) -> None:
    """Export every message, byte for byte as imported, into a new store readable by you only
    (0600 files, 0700 folders). An mbox keeps each message's envelope date; its envelope
    sender is the message's Return-Path (else its From address)."""
    c = cli_context(ctx)
    with late_count_bar(f"exporting {identity}", as_json=c.as_json) as progress:
        count = c.runtime.mail.export_messages(c.actor, identity, path, fmt=fmt, progress=progress)
    emit_message(
        f"Exported {count} messages to {path}.",
        as_json=c.as_json,
        data={"Exported": count, "Path": str(path)},
    )


@app.command("items")
def mailbox_items(
    ctx: typer.Context,
    identity: str = typer.Argument(..., help=IDENTITY_HELP),
    folder: str | None = typer.Option(None, "--folder", help="Only items of this folder."),
) -> None:
    """List a mailbox's items (sequence number, folder, size, received time, id)."""
    from customerkey.views.mail import item_view

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
    identity: str = typer.Argument(..., help=IDENTITY_HELP),
    item: str = typer.Argument(..., help="Item id or sequence number."),
    out: Path | None = typer.Option(None, "--out", help="Write to a file instead of stdout."),
) -> None:
    """Print one message, decrypted (or write it to --out)."""
    c = cli_context(ctx)
    data = c.runtime.mail.read_item(c.actor, identity, item)
    if out is not None:
        from customerkey.home import write_private_file

        write_private_file(out, data)  # 0600, as exports are
        emit_message(
            f"Wrote {len(data)} bytes to {out}.",
            as_json=c.as_json,
            data={"Bytes": len(data), "Path": str(out)},
        )
    else:
        sys.stdout.buffer.write(data)
        sys.stdout.flush()


@app.command("delete-item")
def mailbox_delete_item(
    ctx: typer.Context,
    identity: str = typer.Argument(..., help=IDENTITY_HELP),
    item: str = typer.Argument(..., help="Item id or sequence number."),
    yes: bool = YES,
) -> None:
    """Delete one item (its encrypted blob too)."""
    c = cli_context(ctx)
    confirm_destruction(
        c, f"Deleting item {item} of {identity}", item, yes=yes, consequence="it cannot be restored"
    )
    c.runtime.mail.delete_item(c.actor, identity, item)
    emit_message(f"Deleted item {item} from {identity}.", as_json=c.as_json, data={"Item": item})
