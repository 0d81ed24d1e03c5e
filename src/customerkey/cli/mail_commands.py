"""``customerkey tenant|dep|mailuser|mailbox ...``: the service side of Customer Key."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.progress import Progress

from customerkey.cli.context import CliContext, cli_context
from customerkey.cli.job_commands import finish_or_report
from customerkey.cli.output import count_bar, emit_list, emit_message, emit_object
from customerkey.errors import BadParameter
from customerkey.service.workloads import EXCHANGE
from customerkey.service_views import (
    generation_usage_view,
    item_view,
    mailbox_view,
    move_view,
    policy_view,
    statistics_view,
    tenant_view,
)

tenants = typer.Typer(help="Tenants of the service (operator only).")
deps = typer.Typer(help="Data encryption policies (DEPs): two root keys in two vaults.")
mailusers = typer.Typer(help="Mail users: recipients not yet migrated.")
mailboxes = typer.Typer(help="Mailboxes: encrypted mail content.")

POLICY_COLUMNS = ["Name", "Enabled", "State", "AzureKeyIDs", "Guid"]
MAILBOX_COLUMNS = ["UserPrincipalName", "Alias", "RecipientTypeDetails", "DataEncryptionPolicy"]


def tenant_of(c: CliContext, tenant: str | None) -> str:
    """The tenant a command is about: --tenant, else the acting principal's, else the only one."""
    if tenant:
        return tenant.lower()
    actor = c.actor
    if not actor.is_operator:
        return actor.tenant
    known = c.runtime.tenants.list()
    if len(known) == 1:
        return known[0].id
    raise BadParameter(
        "Say which tenant with --tenant"
        + (f" (one of: {', '.join(t.id for t in known)})." if known else "; none exists yet.")
    )


def _bar(c: CliContext, what: str) -> Progress:
    return count_bar(what, as_json=c.as_json)


# ------------------------------------------------------------------ tenants


@tenants.command("create")
def tenant_create(
    ctx: typer.Context,
    name: str,
    mail_domain: str = typer.Option(..., "--mail-domain", help="e.g. contoso.com"),
    display_name: str | None = typer.Option(None, "--display-name"),
) -> None:
    c = cli_context(ctx)
    tenant = c.runtime.tenants.create(
        c.actor, name, mail_domain=mail_domain, display_name=display_name
    )
    emit_object(tenant_view(tenant), as_json=c.as_json)


@tenants.command("show")
def tenant_show(ctx: typer.Context, name: str) -> None:
    c = cli_context(ctx)
    emit_object(tenant_view(c.runtime.tenants.get(name)), as_json=c.as_json)


@tenants.command("list")
def tenant_list(ctx: typer.Context) -> None:
    c = cli_context(ctx)
    emit_list(
        [tenant_view(t) for t in c.runtime.tenants.list()],
        ["Name", "DisplayName", "MailDomain"],
        as_json=c.as_json,
    )


# ------------------------------------------------------------------ DEPs


@deps.command("create")
def dep_create(
    ctx: typer.Context,
    name: str,
    key: list[str] = typer.Option(..., "--key", help="A root key URI; give it twice."),
    description: str = typer.Option("", "--description"),
    disabled: bool = typer.Option(False, "--disabled"),
    tenant: str | None = typer.Option(None, "--tenant"),
) -> None:
    """New-DataEncryptionPolicy: validates both root keys before creating anything."""
    c = cli_context(ctx)
    policy = c.runtime.policies.create(
        c.actor,
        tenant_of(c, tenant),
        name,
        key,
        description=description,
        enabled=not disabled,
    )
    emit_object(policy_view(policy), as_json=c.as_json)


@deps.command("show")
def dep_show(
    ctx: typer.Context,
    identity: str = typer.Argument(..., help="Name, DEP GUID or key-generation GUID."),
    tenant: str | None = typer.Option(None, "--tenant"),
) -> None:
    c = cli_context(ctx)
    policy = c.runtime.policies.get(c.actor, tenant_of(c, tenant), identity)
    view = policy_view(policy)
    view["KeyGenerationUsage"] = [
        generation_usage_view(g) for g in c.runtime.usage.policy_generations(policy.id)
    ]
    emit_object(view, as_json=c.as_json)


@deps.command("list")
def dep_list(ctx: typer.Context, tenant: str | None = typer.Option(None, "--tenant")) -> None:
    c = cli_context(ctx)
    policies = c.runtime.policies.list_policies(c.actor, tenant_of(c, tenant))
    emit_list([policy_view(p) for p in policies], POLICY_COLUMNS, as_json=c.as_json)


@deps.command("refresh")
def dep_refresh(
    ctx: typer.Context,
    identity: str,
    tenant: str | None = typer.Option(None, "--tenant"),
    no_wait: bool = typer.Option(False, "--no-wait", help="Queue the re-wrap and return."),
) -> None:
    """Set-DataEncryptionPolicy -Refresh: use the newest root-key versions after a key roll."""
    c = cli_context(ctx)
    tenant_id = tenant_of(c, tenant)
    job = c.runtime.mail.refresh(c.actor, tenant_id, identity)
    if job is None:
        emit_message(
            f"Policy '{identity}' already uses the newest version of both root keys; "
            "nothing to refresh.",
            as_json=c.as_json,
            data={"refreshed": False},
        )
        return
    finish_or_report(c, job, no_wait=no_wait)
    policy = c.runtime.policies.get(c.actor, tenant_id, identity)
    emit_object(policy_view(policy), as_json=c.as_json)


@deps.command("purge-request")
def dep_purge_request(
    ctx: typer.Context,
    identity: str,
    reason: str = typer.Option(..., "--reason"),
    contact: str = typer.Option(..., "--contact"),
    tenant: str | None = typer.Option(None, "--tenant"),
) -> None:
    """Set-DataEncryptionPolicy -PermanentDataPurgeRequested (refused while the mail service
    principal still has wrapKey/unwrapKey on either vault)."""
    c = cli_context(ctx)
    policy = c.runtime.policies.request_purge(
        c.actor,
        tenant_of(c, tenant),
        identity,
        reason=reason,
        contact=contact,
        workload_principal=EXCHANGE.app_id,
    )
    emit_object(policy_view(policy), as_json=c.as_json)


@deps.command("purge-approve")
def dep_purge_approve(
    ctx: typer.Context,
    identity: str,
    approver: str = typer.Option(
        ..., "--approver", help="The approver: a principal holding the purge-approver role."
    ),
    tenant: str | None = typer.Option(None, "--tenant"),
    no_wait: bool = typer.Option(False, "--no-wait"),
) -> None:
    """Approve a requested purge: every key of the DEP is destroyed, its mailboxes deleted."""
    c = cli_context(ctx)
    tenant_id = tenant_of(c, tenant)
    job = c.runtime.mail.approve_purge(c.actor, tenant_id, identity, approver)
    finish_or_report(c, job, no_wait=no_wait)
    emit_object(
        policy_view(c.runtime.policies.get(c.actor, tenant_id, identity)), as_json=c.as_json
    )


@deps.command("set")
def dep_set(
    ctx: typer.Context,
    identity: str,
    enable: bool | None = typer.Option(None, "--enable/--disable"),
    name: str | None = typer.Option(None, "--name", help="Rename."),
    description: str | None = typer.Option(None, "--description"),
    tenant: str | None = typer.Option(None, "--tenant"),
) -> None:
    """Set-DataEncryptionPolicy -Enabled/-Name/-Description."""
    c = cli_context(ctx)
    policy = c.runtime.policies.update(
        c.actor,
        tenant_of(c, tenant),
        identity,
        enabled=enable,
        name=name,
        description=description,
    )
    emit_object(policy_view(policy), as_json=c.as_json)


# ------------------------------------------------------------------ recipients


@mailusers.command("create")
def mailuser_create(
    ctx: typer.Context,
    upn: str,
    dep: str | None = typer.Option(None, "--dep", help="Assign a DEP before migration."),
    display_name: str | None = typer.Option(None, "--display-name"),
    tenant: str | None = typer.Option(None, "--tenant"),
) -> None:
    """New-MailUser (+ Set-MailUser -DataEncryptionPolicy)."""
    c = cli_context(ctx)
    mailbox = c.runtime.mail.create_mailbox(
        c.actor,
        _tenant_for_upn(c, upn, tenant),
        upn,
        kind="mailuser",
        policy=dep,
        display_name=display_name,
    )
    emit_object(mailbox_view(mailbox), as_json=c.as_json)


def _tenant_for_upn(c: CliContext, upn: str, tenant: str | None) -> str:
    if tenant:
        return tenant.lower()
    domain = upn.rsplit("@", 1)[-1]
    return c.runtime.tenants.for_domain(domain).id


@mailboxes.command("create")
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
        _tenant_for_upn(c, upn, tenant),
        upn,
        kind="shared" if shared else "user",
        alias=alias,
        display_name=display_name,
        policy=dep,
    )
    emit_object(mailbox_view(mailbox), as_json=c.as_json)


@mailboxes.command("show")
def mailbox_show(ctx: typer.Context, identity: str) -> None:
    c = cli_context(ctx)
    emit_object(mailbox_view(c.runtime.mail.get(c.actor, identity)), as_json=c.as_json)


@mailboxes.command("list")
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


@mailboxes.command("set")
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


@mailboxes.command("move")
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


@mailboxes.command("move-status")
def mailbox_move_status(ctx: typer.Context, identity: str) -> None:
    """Get-MoveRequest."""
    c = cli_context(ctx)
    job = c.runtime.mail.move_status(c.actor, identity)
    if job is None:
        raise BadParameter(f"There is no move request for '{identity}'.")
    emit_object(move_view(job, identity), as_json=c.as_json)


@mailboxes.command("stats")
def mailbox_stats(ctx: typer.Context, identity: str) -> None:
    """Get-MailboxStatistics: IsEncrypted, DataEncryptionPolicyID, ItemCount, TotalItemSize."""
    c = cli_context(ctx)
    emit_object(statistics_view(c.runtime.mail.statistics(c.actor, identity)), as_json=c.as_json)


@mailboxes.command("import")
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


@mailboxes.command("export")
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


@mailboxes.command("items")
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


@mailboxes.command("read")
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


@mailboxes.command("delete-item")
def mailbox_delete_item(ctx: typer.Context, identity: str, item: str) -> None:
    c = cli_context(ctx)
    c.runtime.mail.delete_item(c.actor, identity, item)
    emit_message(f"Deleted item {item} from {identity}.", as_json=c.as_json)
