"""``customerkey dep ...``: data encryption policies (DEPs) for the mail workload.

New-, Get- and Set-DataEncryptionPolicy: create one from two root keys, refresh it after a key
roll, rename or disable it, and the two-person data purge path.
"""

from __future__ import annotations

import typer

from customerkey.cli.confirm import YES, confirm_destruction
from customerkey.cli.context import cli_context, tenant_of
from customerkey.cli.job_commands import finish_or_report
from customerkey.cli.output import emit_list, emit_message, emit_object
from customerkey.identity.workload_principals import EXCHANGE
from customerkey.views.mail import generation_usage_view, policy_view

app = typer.Typer(help="Data encryption policies (DEPs): two root keys in two vaults.")

POLICY_COLUMNS = ["Name", "Enabled", "State", "AzureKeyIDs", "Guid"]


@app.command("create")
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


@app.command("show")
def dep_show(
    ctx: typer.Context,
    identity: str = typer.Argument(..., help="Name, DEP GUID or key-generation GUID."),
    tenant: str | None = typer.Option(None, "--tenant"),
) -> None:
    """One policy (Get-DataEncryptionPolicy) and which root-key versions protect its data."""
    c = cli_context(ctx)
    policy = c.runtime.policies.get(c.actor, tenant_of(c, tenant), identity)
    view = policy_view(policy)
    view["KeyGenerationUsage"] = [
        generation_usage_view(g) for g in c.runtime.usage.policy_generations(policy.id)
    ]
    emit_object(view, as_json=c.as_json)


@app.command("list")
def dep_list(ctx: typer.Context, tenant: str | None = typer.Option(None, "--tenant")) -> None:
    """The tenant's data encryption policies (Get-DataEncryptionPolicy)."""
    c = cli_context(ctx)
    policies = c.runtime.policies.list_policies(c.actor, tenant_of(c, tenant))
    emit_list([policy_view(p) for p in policies], POLICY_COLUMNS, as_json=c.as_json)


@app.command("refresh")
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
            data={"Refreshed": False},
        )
        return
    finish_or_report(c, job, no_wait=no_wait)
    policy = c.runtime.policies.get(c.actor, tenant_id, identity)
    emit_object({**policy_view(policy), "JobId": job.id}, as_json=c.as_json)


@app.command("purge-request")
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


@app.command("purge-approve")
def dep_purge_approve(
    ctx: typer.Context,
    identity: str,
    approver: str = typer.Option(
        ..., "--approver", help="The approver: a principal holding the purge-approver role."
    ),
    tenant: str | None = typer.Option(None, "--tenant"),
    no_wait: bool = typer.Option(False, "--no-wait"),
    yes: bool = YES,
) -> None:
    """Approve a requested purge: every key of the DEP is destroyed, its mailboxes deleted."""
    c = cli_context(ctx)
    tenant_id = tenant_of(c, tenant)
    policy = c.runtime.policies.get(c.actor, tenant_id, identity, kind="mailbox")
    confirm_destruction(
        c,
        f"Approving the permanent data purge of DEP '{policy.name}'",
        policy.name,
        yes=yes,
        consequence="every key of the DEP is destroyed and its mailboxes deleted, for good",
    )
    job = c.runtime.mail.approve_purge(c.actor, tenant_id, identity, approver)
    finish_or_report(c, job, no_wait=no_wait)
    emit_object(
        policy_view(c.runtime.policies.get(c.actor, tenant_id, identity)), as_json=c.as_json
    )


@app.command("set")
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
