"""The admin API's data encryption policies (DEPs) under ``/api/v1/tenants/{tenant}/policies``.

Same rules as the CLI: an operator or the tenant's admin; objects carry the Exchange cmdlets'
property names (``AzureKeyIDs``, ...).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field

from customerkey.api.deps import admin_actor, api
from customerkey.vault.models import Actor
from customerkey.views.mail import policy_view

router = APIRouter(prefix="/api/v1", tags=["service"])


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PolicyBody(_Body):
    name: str
    azure_key_ids: list[str] = Field(alias="AzureKeyIDs")
    description: str = ""
    enabled: bool = True


class PolicyUpdateBody(_Body):
    enabled: bool | None = None
    name: str | None = None
    description: str | None = None


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
