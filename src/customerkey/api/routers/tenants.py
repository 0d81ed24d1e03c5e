"""The admin API's tenants under ``/api/v1``: the tenants of the service.

An operator creates them; an operator sees every tenant, a tenant admin (or purge approver)
its own.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict

from customerkey.api.deps import admin_actor, api
from customerkey.vault.models import Actor
from customerkey.views.mail import tenant_view

router = APIRouter(prefix="/api/v1", tags=["service"])


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TenantBody(_Body):
    name: str
    mail_domain: str
    display_name: str | None = None


@router.get("/tenants")
def list_tenants(request: Request, actor: Actor = Depends(admin_actor)) -> dict[str, Any]:
    return {"value": [tenant_view(t) for t in api(request).runtime.tenants.visible(actor)]}


@router.post("/tenants", status_code=201)
def create_tenant(
    body: TenantBody, request: Request, actor: Actor = Depends(admin_actor)
) -> dict[str, Any]:
    tenant = api(request).runtime.tenants.create(
        actor, body.name, mail_domain=body.mail_domain, display_name=body.display_name
    )
    return tenant_view(tenant)
