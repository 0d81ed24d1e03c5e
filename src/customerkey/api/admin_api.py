"""The admin API under ``/api/v1`` on the bare host: vaults, access policies, principals, audit.

It needs a bearer token of an operator or a tenant admin; the services then apply the same
rules as the CLI (a tenant admin manages its own tenant only). Objects use the cmdlets'
property names (``VaultName``, ``AccessPolicies``, ...), like the CLI's ``--json``.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from pydantic import ConfigDict, Field

from customerkey.api.deps import admin_actor, api
from customerkey.api.schemas import UnicodeBody
from customerkey.errors import BadParameter
from customerkey.vault.models import Actor
from customerkey.views import audit_view, principal_view, vault_view

router = APIRouter(prefix="/api/v1", tags=["admin"])


class _Body(UnicodeBody):
    model_config = ConfigDict(extra="forbid")


class VaultCreateBody(_Body):
    name: str
    subscription: str
    region: str
    resource_group: str = "customerkey"
    retention_days: int = Field(default=90)
    purge_protection: bool = False
    tenant: str | None = None


class AccessPolicyBody(_Body):
    object_id: str
    key_permissions: list[str]
    replace: bool = False


class PrincipalCreateBody(_Body):
    # A user's UPN. Service principals get a platform-made application id (only an operator
    # may give one).
    id: str | None = None
    kind: str = "user"
    tenant: str | None = None
    display_name: str | None = None
    roles: list[str] = Field(default_factory=list)
    with_secret: bool = True


def _vault(request: Request, vault: Any) -> dict[str, Any]:
    context = api(request)
    return vault_view(vault, domain=context.domain, port=context.port)


@router.get("/vaults")
def list_vaults(
    request: Request, deleted: bool = False, actor: Actor = Depends(admin_actor)
) -> dict[str, Any]:
    vaults = api(request).runtime.vault.list_vaults(actor, deleted=deleted)
    return {"value": [_vault(request, v) for v in vaults]}


@router.post("/vaults", status_code=201)
def create_vault(
    body: VaultCreateBody, request: Request, actor: Actor = Depends(admin_actor)
) -> dict[str, Any]:
    vault = api(request).runtime.vault.create_vault(
        actor,
        body.name,
        subscription=body.subscription,
        region=body.region,
        resource_group=body.resource_group,
        retention_days=body.retention_days,
        purge_protection=body.purge_protection,
        tenant=body.tenant,
    )
    return _vault(request, vault)


@router.get("/vaults/{name}")
def get_vault(name: str, request: Request, actor: Actor = Depends(admin_actor)) -> dict[str, Any]:
    return _vault(request, api(request).runtime.vault.get_vault(actor, name))


@router.delete("/vaults/{name}")
def delete_vault(
    name: str, request: Request, actor: Actor = Depends(admin_actor)
) -> dict[str, Any]:
    return _vault(request, api(request).runtime.vault.delete_vault(actor, name))


@router.post("/vaults/{name}/recover")
def recover_vault(
    name: str, request: Request, actor: Actor = Depends(admin_actor)
) -> dict[str, Any]:
    return _vault(request, api(request).runtime.vault.recover_vault(actor, name))


@router.post("/vaults/{name}/purge")
def purge_vault(name: str, request: Request, actor: Actor = Depends(admin_actor)) -> dict[str, Any]:
    api(request).runtime.vault.purge_vault(actor, name)
    return {"message": f"Vault '{name}' purged."}


@router.put("/vaults/{name}/accessPolicies")
def set_access_policy(
    name: str, body: AccessPolicyBody, request: Request, actor: Actor = Depends(admin_actor)
) -> dict[str, Any]:
    vault = api(request).runtime.vault.set_access_policy(
        actor, name, body.object_id, body.key_permissions, replace=body.replace
    )
    return _vault(request, vault)


@router.delete("/vaults/{name}/accessPolicies/{object_id}")
def remove_access_policy(
    name: str, object_id: str, request: Request, actor: Actor = Depends(admin_actor)
) -> dict[str, Any]:
    return _vault(request, api(request).runtime.vault.remove_access_policy(actor, name, object_id))


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


@router.get("/audit")
def audit_records(
    request: Request,
    vault: str | None = None,
    operation: str | None = None,
    since: int = 0,
    limit: int = 100,
    actor: Actor = Depends(admin_actor),
) -> dict[str, Any]:
    if not 1 <= limit <= 1000:
        raise BadParameter("limit must be between 1 and 1000.")
    if since < 0:
        raise BadParameter("since must be a sequence number (0 or more).")
    if since >= 2**62:
        raise BadParameter("since is past the end of the audit log.")
    records = api(request).runtime.audit_log.records(
        actor, vault=vault, operation=operation, since_seq=since, limit=limit
    )
    return {"value": [audit_view(r) for r in records]}


@router.get("/audit/verify")
def audit_verify(request: Request, actor: Actor = Depends(admin_actor)) -> dict[str, Any]:
    result = api(request).runtime.audit_log.verify(actor)
    return {"ok": result.ok, "records": result.records, "problems": list(result.problems)}
