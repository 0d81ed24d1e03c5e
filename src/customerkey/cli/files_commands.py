"""``customerkey files ...``: the tenant's files policy (SharePoint Online / OneDrive).

Register-, Update- and Get-SPODataEncryptionPolicy, recovery and the data purge path. Sites
are ``customerkey site`` (``site_commands``); files in them ``customerkey file``
(``file_commands``).
"""

from __future__ import annotations

import typer

from customerkey.cli.confirm import YES, confirm_destruction
from customerkey.cli.context import CliContext, cli_context, tenant_of
from customerkey.cli.job_commands import finish_or_report
from customerkey.cli.output import emit_message, emit_object
from customerkey.views.files import (
    files_policy_view,
    tik_usage_view,
)

app = typer.Typer(help="The tenant's files data encryption policy (SharePoint/OneDrive).")

_IDENTITY = typer.Option(
    None, "--identity", help="The tenant's admin site URL, https://<tenant>-admin.sharepoint.local."
)
_TENANT = typer.Option(None, "--tenant")


def _tenant(c: CliContext, tenant: str | None, identity: str | None) -> str:
    return c.runtime.files.resolve_tenant(tenant, identity) or tenant_of(c, None)


def _show_status(c: CliContext, tenant: str) -> None:
    emit_object(files_policy_view(c.runtime.files.status(c.actor, tenant)), as_json=c.as_json)


@app.command("register")
def files_register(
    ctx: typer.Context,
    primary: str = typer.Option(..., "--primary", help="The primary root key URI."),
    secondary: str = typer.Option(..., "--secondary", help="The secondary root key URI."),
    identity: str | None = _IDENTITY,
    tenant: str | None = _TENANT,
    no_wait: bool = typer.Option(False, "--no-wait", help="Queue the job and return."),
) -> None:
    """Register-SPODataEncryptionPolicy: every site is re-protected under the new TIK."""
    c = cli_context(ctx)
    tenant_id = _tenant(c, tenant, identity)
    job = c.runtime.files.register(c.actor, tenant_id, primary, secondary, identity=identity)
    finish_or_report(c, job, no_wait=no_wait)
    _show_status(c, tenant_id)


@app.command("roll")
def files_roll(
    ctx: typer.Context,
    key_type: str = typer.Option(..., "--key-type", help="primary or secondary"),
    key: str = typer.Option(..., "--key", help="The new key URI (with a version, or newest)."),
    identity: str | None = _IDENTITY,
    tenant: str | None = _TENANT,
    no_wait: bool = typer.Option(False, "--no-wait", help="Queue the job and return."),
) -> None:
    """Update-SPODataEncryptionPolicy: a key roll (one at a time); no file is rewritten."""
    c = cli_context(ctx)
    tenant_id = _tenant(c, tenant, identity)
    job = c.runtime.files.roll(c.actor, tenant_id, key_type, key)
    finish_or_report(c, job, no_wait=no_wait)
    _show_status(c, tenant_id)


@app.command("status")
def files_status(
    ctx: typer.Context,
    identity: str | None = _IDENTITY,
    tenant: str | None = _TENANT,
    generations: bool = typer.Option(
        False, "--generations", help="Also list the TIK generations and what uses each."
    ),
) -> None:
    """Get-SPODataEncryptionPolicy: key URIs, State and percent of sites done."""
    c = cli_context(ctx)
    tenant_id = _tenant(c, tenant, identity)
    status = c.runtime.files.status(c.actor, tenant_id)
    view = files_policy_view(status)
    if generations and status.policy_id:
        view["KeyGenerationUsage"] = [
            tik_usage_view(g) for g in c.runtime.usage.policy_generations(status.policy_id)
        ]
    emit_object(view, as_json=c.as_json)


@app.command("resume")
def files_resume(
    ctx: typer.Context,
    identity: str | None = _IDENTITY,
    tenant: str | None = _TENANT,
    no_wait: bool = typer.Option(False, "--no-wait"),
) -> None:
    """Finish a registration or key roll whose job failed (after fixing the cause)."""
    c = cli_context(ctx)
    tenant_id = _tenant(c, tenant, identity)
    job = c.runtime.files.resume(c.actor, tenant_id)
    if job is None:
        emit_message(
            "Every site is on the current key generation; nothing to resume.",
            as_json=c.as_json,
            data={"Resumed": False},
        )
        return
    finish_or_report(c, job, no_wait=no_wait)
    _show_status(c, tenant_id)


@app.command("recover")
def files_recover(
    ctx: typer.Context,
    primary: str = typer.Option(..., "--primary", help="The new primary root key URI."),
    secondary: str = typer.Option(..., "--secondary", help="The new secondary root key URI."),
    reason: str = typer.Option(..., "--reason", help="The customer's request (audited)."),
    with_availability_key: bool = typer.Option(
        False,
        "--with-availability-key",
        help="Confirm: unwrap the tenant's keys with the availability key.",
    ),
    identity: str | None = _IDENTITY,
    tenant: str | None = _TENANT,
    no_wait: bool = typer.Option(False, "--no-wait"),
) -> None:
    """Operator recovery when the root keys are lost: the availability key unwraps the TIK,
    and every site key is re-wrapped under a new TIK protected by two new root keys."""
    c = cli_context(ctx)
    tenant_id = _tenant(c, tenant, identity)
    job = c.runtime.files.recover(
        c.actor,
        tenant_id,
        primary,
        secondary,
        with_availability_key=with_availability_key,
        reason=reason,
    )
    finish_or_report(c, job, no_wait=no_wait)
    _show_status(c, tenant_id)


@app.command("purge-request")
def files_purge_request(
    ctx: typer.Context,
    reason: str = typer.Option(..., "--reason"),
    contact: str = typer.Option(..., "--contact"),
    identity: str | None = _IDENTITY,
    tenant: str | None = _TENANT,
) -> None:
    """Start the files data purge path (refused while the SharePoint principal still has
    wrapKey/unwrapKey on either vault)."""
    c = cli_context(ctx)
    tenant_id = _tenant(c, tenant, identity)
    status = c.runtime.files.request_purge(c.actor, tenant_id, reason=reason, contact=contact)
    emit_object(files_policy_view(status), as_json=c.as_json)


@app.command("purge-approve")
def files_purge_approve(
    ctx: typer.Context,
    approver: str = typer.Option(
        ..., "--approver", help="The approver: a principal holding the purge-approver role."
    ),
    identity: str | None = _IDENTITY,
    tenant: str | None = _TENANT,
    no_wait: bool = typer.Option(False, "--no-wait"),
    yes: bool = YES,
) -> None:
    """Approve the purge: the TIK, site keys and file keys are destroyed, with the content."""
    c = cli_context(ctx)
    tenant_id = _tenant(c, tenant, identity)
    c.runtime.files.status(c.actor, tenant_id)  # an unknown tenant or no right: say so first
    confirm_destruction(
        c,
        f"Approving the permanent files data purge of tenant '{tenant_id}'",
        tenant_id,
        yes=yes,
        consequence="the TIK, every site key and file key are destroyed with the content, for good",
    )
    job = c.runtime.files.approve_purge(c.actor, tenant_id, approver)
    finish_or_report(c, job, no_wait=no_wait)
    _show_status(c, tenant_id)
