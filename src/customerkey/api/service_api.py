"""The admin API's service side under ``/api/v1``: tenants, DEPs, mail users, mailboxes, jobs.

Same rules as the CLI: an operator or a tenant admin; objects carry the Exchange cmdlets'
property names. Long work (re-key after a DEP change) is queued; poll ``/api/v1/jobs/{id}``.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

from customerkey.api.deps import admin_actor, api
from customerkey.errors import Forbidden
from customerkey.identity import authorize as authz
from customerkey.service_views import (
    item_view,
    job_view,
    mailbox_view,
    policy_view,
    statistics_view,
    tenant_view,
)
from customerkey.vault.models import Actor

router = APIRouter(prefix="/api/v1", tags=["service"])


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TenantBody(_Body):
    name: str
    mail_domain: str
    display_name: str | None = None


class PolicyBody(_Body):
    name: str
    azure_key_ids: list[str] = Field(alias="AzureKeyIDs")
    description: str = ""
    enabled: bool = True


class PolicyUpdateBody(_Body):
    enabled: bool | None = None
    name: str | None = None
    description: str | None = None


class MailboxBody(_Body):
    upn: str
    kind: str = "user"
    alias: str | None = None
    display_name: str | None = None
    data_encryption_policy: str | None = None


class AssignBody(_Body):
    data_encryption_policy: str | None


@router.get("/tenants")
def list_tenants(request: Request, actor: Actor = Depends(admin_actor)) -> dict[str, Any]:
    tenants = api(request).runtime.tenants.list()
    visible = [
        t for t in tenants if authz.allowed(actor, authz.Action.TENANT_READ, authz.Tenant(t.id))
    ]
    return {"value": [tenant_view(t) for t in visible]}


@router.post("/tenants", status_code=201)
def create_tenant(
    body: TenantBody, request: Request, actor: Actor = Depends(admin_actor)
) -> dict[str, Any]:
    tenant = api(request).runtime.tenants.create(
        actor, body.name, mail_domain=body.mail_domain, display_name=body.display_name
    )
    return tenant_view(tenant)


@router.get("/tenants/{tenant}/policies")
def list_policies(
    tenant: str, request: Request, actor: Actor = Depends(admin_actor)
) -> dict[str, Any]:
    policies = api(request).runtime.policies.list_policies(actor, tenant)
    return {"value": [policy_view(p) for p in policies]}


@router.post("/tenants/{tenant}/policies", status_code=201)
def create_policy(
    tenant: str, body: PolicyBody, request: Request, actor: Actor = Depends(admin_actor)
) -> dict[str, Any]:
    policy = api(request).runtime.policies.create(
        actor,
        tenant,
        body.name,
        body.azure_key_ids,
        description=body.description,
        enabled=body.enabled,
    )
    return policy_view(policy)


@router.get("/tenants/{tenant}/policies/{identity}")
def get_policy(
    tenant: str, identity: str, request: Request, actor: Actor = Depends(admin_actor)
) -> dict[str, Any]:
    return policy_view(api(request).runtime.policies.get(actor, tenant, identity))


@router.patch("/tenants/{tenant}/policies/{identity}")
def update_policy(
    tenant: str,
    identity: str,
    body: PolicyUpdateBody,
    request: Request,
    actor: Actor = Depends(admin_actor),
) -> dict[str, Any]:
    policy = api(request).runtime.policies.update(
        actor,
        tenant,
        identity,
        enabled=body.enabled,
        name=body.name,
        description=body.description,
    )
    return policy_view(policy)


@router.get("/tenants/{tenant}/mailboxes")
def list_mailboxes(
    tenant: str, request: Request, actor: Actor = Depends(admin_actor)
) -> dict[str, Any]:
    boxes = api(request).runtime.mail.list_mailboxes(actor, tenant)
    return {"value": [mailbox_view(m) for m in boxes]}


@router.post("/tenants/{tenant}/mailboxes", status_code=201)
def create_mailbox(
    tenant: str, body: MailboxBody, request: Request, actor: Actor = Depends(admin_actor)
) -> dict[str, Any]:
    mailbox = api(request).runtime.mail.create_mailbox(
        actor,
        tenant,
        body.upn,
        kind=body.kind,
        alias=body.alias,
        display_name=body.display_name,
        policy=body.data_encryption_policy,
    )
    return mailbox_view(mailbox)


@router.get("/mailboxes/{identity}")
def get_mailbox(
    identity: str, request: Request, actor: Actor = Depends(admin_actor)
) -> dict[str, Any]:
    return mailbox_view(api(request).runtime.mail.get(actor, identity))


@router.get("/mailboxes/{identity}/statistics")
def mailbox_statistics(
    identity: str, request: Request, actor: Actor = Depends(admin_actor)
) -> dict[str, Any]:
    return statistics_view(api(request).runtime.mail.statistics(actor, identity))


@router.put("/mailboxes/{identity}/dataEncryptionPolicy", status_code=202)
def assign_policy(
    identity: str, body: AssignBody, request: Request, actor: Actor = Depends(admin_actor)
) -> dict[str, Any]:
    job = api(request).runtime.mail.set_policy(actor, identity, body.data_encryption_policy)
    return {"job": job_view(job) if job else None}


@router.get("/mailboxes/{identity}/items")
def list_items(
    identity: str, request: Request, actor: Actor = Depends(admin_actor)
) -> dict[str, Any]:
    items = api(request).runtime.mail.list_items(actor, identity)
    return {"value": [item_view(i) for i in items]}


@router.get("/mailboxes/{identity}/items/{item}")
def read_item(
    identity: str, item: str, request: Request, actor: Actor = Depends(admin_actor)
) -> Response:
    data = api(request).runtime.mail.read_item(actor, identity, item)
    return Response(data, media_type="message/rfc822")


@router.get("/jobs")
def list_jobs(request: Request, actor: Actor = Depends(admin_actor)) -> dict[str, Any]:
    jobs = api(request).runtime.jobs.list_jobs()
    return {
        "value": [
            job_view(j)
            for j in jobs
            if authz.allowed(actor, authz.Action.JOB_READ, authz.Job(j.created_by_id))
        ]
    }


@router.get("/jobs/{job_id}")
def get_job(job_id: str, request: Request, actor: Actor = Depends(admin_actor)) -> dict[str, Any]:
    job = api(request).runtime.jobs.get(job_id)
    if not authz.allowed(actor, authz.Action.JOB_READ, authz.Job(job.created_by_id)):
        raise Forbidden(f"Job {job_id} was not started by '{actor.principal_id}'.")
    return job_view(job)
