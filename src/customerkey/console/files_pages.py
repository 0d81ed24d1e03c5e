"""The console's SharePoint/OneDrive side: a tenant's files policy (Get-SPODataEncryptionPolicy:
State, percent of sites done, the root keys and their TIK generations), registering it
(Register-SPODataEncryptionPolicy), rolling one root key (Update-SPODataEncryptionPolicy), and
the sites it protects.

Registering and rolling are jobs: the action leads to the job's page, whose progress is live.
The files service decides who may do what (a tenant admin of the tenant, or the operator) and
writes the audit records; a tenant this principal may not manage is the same 404 as a missing
one, checked before any action is tried.
"""

from __future__ import annotations

from typing import Any

from fastapi.responses import Response

from customerkey.console.web import Ctx, Missing, page
from customerkey.errors import Forbidden, NotFound
from customerkey.identity.workload_principals import SHAREPOINT
from customerkey.views.files import files_policy_view, site_view, tik_usage_view


def _status(ctx: Ctx, tenant: str) -> Any:
    """The tenant's files policy status, or the 404 of a missing tenant."""
    try:
        return ctx.runtime.files.status(ctx.actor, tenant)
    except (NotFound, Forbidden):
        raise Missing("Tenant", tenant) from None


@page("/console/files")
def files_policy(ctx: Ctx) -> Response:
    tenant = ctx.tenant()
    status = _status(ctx, tenant)
    generations: list[dict[str, Any]] = []
    if status.policy_id:
        generations = [
            tik_usage_view(g) for g in ctx.runtime.usage.policy_generations(status.policy_id)
        ]
        generations.sort(key=lambda g: g["Sequence"], reverse=True)
    sites = [site_view(s) for s in ctx.runtime.files.list_sites(ctx.actor, tenant)]
    return ctx.render(
        "files.html",
        title="SharePoint and OneDrive encryption",
        tenant=tenant,
        policy=files_policy_view(status),
        running=status.job_state in ("queued", "running", "cancelling"),
        generations=generations,
        sites=sites,
        workload_app_id=SHAREPOINT.app_id,
    )


@page("/console/files/register", methods=("POST",))
def register_files_policy(ctx: Ctx) -> Response:
    tenant = ctx.tenant()
    _status(ctx, tenant)
    job = ctx.runtime.files.register(
        ctx.actor, tenant, ctx.field("primary"), ctx.field("secondary")
    )
    return ctx.done(
        f"/console/jobs/{job.id}",
        f"Files policy of '{tenant}' registered; every site is being moved under it.",
    )


@page("/console/files/roll", methods=("POST",))
def roll_files_key(ctx: Ctx) -> Response:
    tenant = ctx.tenant()
    _status(ctx, tenant)
    key_type = ctx.field("key_type")
    job = ctx.runtime.files.roll(ctx.actor, tenant, key_type, ctx.field("key"))
    return ctx.done(
        f"/console/jobs/{job.id}",
        f"Roll of the {key_type.lower()} key of '{tenant}' queued; every site key is re-wrapped.",
    )
