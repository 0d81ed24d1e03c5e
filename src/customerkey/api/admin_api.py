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
    id: str
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
    runtime = api(request).runtime
    visible: set[str] | None = None
    if not actor.is_operator:
        # Soft-deleted vaults too: who deleted a vault is what its admin looks for.
        vaults = runtime.vault.list_vaults(actor) + runtime.vault.list_vaults(actor, deleted=True)
        visible = {v.name for v in vaults}
    if visible is None or vault is not None:
        records = runtime.audit_log.records(
            actor,
            vault=vault,
            operation=operation,
            since_seq=since,
            limit=limit,
            visible_vaults=visible,
        )
    else:
        # The audit service applies the limit before it drops other tenants' records, so one
        # query could return an empty page with visible records after it. Vault by vault, the
        # first ``limit`` visible records since ``since`` are among the union.
        merged = [
            record
            for name in sorted(visible)
            for record in runtime.audit_log.records(
                actor,
                vault=name,
                operation=operation,
                since_seq=since,
                limit=limit,
                visible_vaults=visible,
            )
        ]
        records = sorted(merged, key=lambda r: r.seq)[:limit]
    return {"value": [audit_view(r) for r in records]}


@router.get("/audit/verify")
def audit_verify(request: Request, actor: Actor = Depends(admin_actor)) -> dict[str, Any]:
    result = api(request).runtime.audit_log.verify(actor)
    return {"ok": result.ok, "records": result.records, "problems": list(result.problems)}
