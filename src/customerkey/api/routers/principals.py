"""The admin API's principals under ``/api/v1`` on the bare host: users and service principals.

An operator or a tenant admin (of the principal's tenant) manages them. A change that ends a
principal's tokens (disable, delete, a role removed, a new secret) also drops it from this
process's principal cache at once (other processes within the cache's TTL).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from pydantic import ConfigDict, Field

from customerkey.api.deps import admin_actor, api
from customerkey.api.schemas import UnicodeBody
from customerkey.vault.models import Actor
from customerkey.views.vault import principal_view

router = APIRouter(prefix="/api/v1", tags=["admin"])


class _Body(UnicodeBody):
    model_config = ConfigDict(extra="forbid")


class PrincipalCreateBody(_Body):
    # A user's UPN. Service principals get a platform-made application id (only an operator
    # may give one).
    id: str | None = None
    kind: str = "user"
    tenant: str | None = None
    display_name: str | None = None
    roles: list[str] = Field(default_factory=list)
    with_secret: bool = True


@router.get("/principals")
def list_principals(
    request: Request, tenant: str | None = None, actor: Actor = Depends(admin_actor)
) -> dict[str, Any]:
    principals = api(request).runtime.principals.list_principals(actor, tenant=tenant)
    return {"value": [principal_view(p) for p in principals]}


@router.post("/principals", status_code=201)
def create_principal(
    body: PrincipalCreateBody, request: Request, actor: Actor = Depends(admin_actor)
) -> dict[str, Any]:
    principal, secret = api(request).runtime.principals.create(
        actor,
        body.id,
        kind=body.kind,
        tenant=body.tenant,
        display_name=body.display_name,
        roles=body.roles,
        with_secret=body.with_secret,
    )
    view = principal_view(principal)
    if secret is not None:
        view["ClientSecret"] = secret
    return view


class RolesBody(_Body):
    add: list[str] = Field(default_factory=list)
    remove: list[str] = Field(default_factory=list)


def _forget(request: Request, principal: Any) -> None:
    """This process stops honouring the principal's cached state at once (others within the
    principal cache's TTL)."""
    api(request).principals.forget(principal.object_id)


@router.get("/principals/{principal_id}")
def get_principal(
    principal_id: str, request: Request, actor: Actor = Depends(admin_actor)
) -> dict[str, Any]:
    return principal_view(api(request).runtime.principals.show(actor, principal_id))


@router.delete("/principals/{principal_id}")
def delete_principal(
    principal_id: str, request: Request, actor: Actor = Depends(admin_actor)
) -> dict[str, Any]:
    principal = api(request).runtime.principals.delete(actor, principal_id)
    _forget(request, principal)
    return principal_view(principal)


def _set_enabled(request: Request, actor: Actor, principal_id: str, enabled: bool) -> Any:
    principal = api(request).runtime.principals.set_enabled(actor, principal_id, enabled)
    _forget(request, principal)
    return principal_view(principal)


@router.post("/principals/{principal_id}/disable")
def disable_principal(
    principal_id: str, request: Request, actor: Actor = Depends(admin_actor)
) -> dict[str, Any]:
    """Its tokens stop working at once."""
    return dict(_set_enabled(request, actor, principal_id, False))


@router.post("/principals/{principal_id}/enable")
def enable_principal(
    principal_id: str, request: Request, actor: Actor = Depends(admin_actor)
) -> dict[str, Any]:
    return dict(_set_enabled(request, actor, principal_id, True))


@router.post("/principals/{principal_id}/roles")
def change_roles(
    principal_id: str, body: RolesBody, request: Request, actor: Actor = Depends(admin_actor)
) -> dict[str, Any]:
    principal = api(request).runtime.principals.change_roles(
        actor, principal_id, add=body.add, remove=body.remove
    )
    _forget(request, principal)
    return principal_view(principal)


@router.post("/principals/{principal_id}/resetSecret")
def reset_secret(
    principal_id: str, request: Request, actor: Actor = Depends(admin_actor)
) -> dict[str, Any]:
    runtime = api(request).runtime
    secret = runtime.principals.reset_secret(actor, principal_id)
    principal = runtime.principals.show(actor, principal_id)
    _forget(request, principal)
    return {**principal_view(principal), "ClientSecret": secret}
