"""The admin API's mailboxes under ``/api/v1``: mail users, mailboxes, their items.

Same rules as the CLI: an operator or the tenant's admin; objects carry the Exchange cmdlets'
property names. Long work (re-key after a DEP change) is queued; poll ``/api/v1/jobs/{id}``.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict

from customerkey.api.deps import admin_actor, api
from customerkey.vault.models import Actor
from customerkey.views.mail import item_view, job_view, mailbox_view, statistics_view

router = APIRouter(prefix="/api/v1", tags=["service"])


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class MailboxBody(_Body):
    upn: str
    kind: str = "user"
    alias: str | None = None
    display_name: str | None = None
    data_encryption_policy: str | None = None


class AssignBody(_Body):
    data_encryption_policy: str | None


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
