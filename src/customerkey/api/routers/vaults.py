"""The admin API's vaults under ``/api/v1`` on the bare host: vaults and their access policies.

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
from customerkey.vault.models import Actor
from customerkey.views.vault import vault_view

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
    name: str, request: Request, force: bool = False, actor: Actor = Depends(admin_actor)
) -> dict[str, Any]:
    """409 Conflict while a key of the vault protects data, unless ``?force=true``."""
    return _vault(request, api(request).runtime.vault.delete_vault(actor, name, force=force))


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
