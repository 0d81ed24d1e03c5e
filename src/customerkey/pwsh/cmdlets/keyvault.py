"""The Az.KeyVault vault cmdlets (with their AzureRM spellings): ``New-/Get-/Remove-AzKeyVault``,
``Undo-AzKeyVaultRemoval`` and the access policies (``Set-/Remove-AzKeyVaultAccessPolicy``),
and the vault objects they print (``vault_object``). The key cmdlets are ``keyvault_keys``.

Cmdlets call the vault service as the connected principal and print objects with the real
cmdlets' property names, built from ``customerkey.views.vault`` (the CLI's ``--json`` shape) with
dates kept as dates.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from customerkey.pwsh.cmdlets.registry import AZ, AZ_HINT, Invocation, cmdlet, fail, matches
from customerkey.pwsh.engine.formatting import format_value, register_view
from customerkey.pwsh.language.binding import Param
from customerkey.pwsh.language.values import PSObject
from customerkey.vault.models import AccessPolicy, Vault
from customerkey.views.vault import vault_view

VAULT_TYPE = "Microsoft.Azure.Commands.KeyVault.Models.PSKeyVault"
VAULT_ITEM_TYPE = "Microsoft.Azure.Commands.KeyVault.Models.PSKeyVaultIdentityItem"
DELETED_VAULT_TYPE = "Microsoft.Azure.Commands.KeyVault.Models.PSDeletedKeyVault"
ACCESS_POLICY_TYPE = "Microsoft.Azure.Commands.KeyVault.Models.PSKeyVaultAccessPolicy"

register_view(
    VAULT_TYPE,
    list_view=[
        ("Vault Name", "VaultName"),
        ("Resource Group Name", "ResourceGroupName"),
        ("Location", "Location"),
        ("Resource ID", "ResourceId"),
        ("Vault URI", "VaultUri"),
        ("Tenant ID", "TenantId"),
        ("Soft Delete Enabled?", "EnableSoftDelete"),
        ("Soft Delete Retention Period (days)", "SoftDeleteRetentionInDays"),
        ("Purge Protection Enabled?", "EnablePurgeProtection"),
        ("Access Policies", "AccessPoliciesText"),
    ],
)
register_view(
    VAULT_ITEM_TYPE,
    list_view=[
        ("Vault Name", "VaultName"),
        ("Resource Group Name", "ResourceGroupName"),
        ("Location", "Location"),
        ("Resource ID", "ResourceId"),
    ],
)
register_view(
    DELETED_VAULT_TYPE,
    list_view=[
        ("Vault Name", "VaultName"),
        ("Location", "Location"),
        ("Resource ID", "ResourceId"),
        ("Deletion Date", "DeletionDate"),
        ("Scheduled Purge Date", "ScheduledPurgeDate"),
        ("Purge Protection Enabled?", "EnablePurgeProtection"),
    ],
)
register_view(
    ACCESS_POLICY_TYPE,
    list_view=[
        ("Tenant ID", "TenantId"),
        ("Object ID", "ObjectId"),
        ("Application ID", "ApplicationId"),
        ("Display Name", "DisplayName"),
        ("Permissions to Keys", "PermissionsToKeysStr"),
    ],
)


def _policy_display(policy: AccessPolicy) -> str:
    name = policy.sign_in_name or policy.object_id
    if policy.display_name and policy.display_name.lower() != name.lower():
        return f"{policy.display_name} ({name})"
    return name


def _text_block(pairs: Sequence[tuple[str, Any]]) -> list[str]:
    width = max(len(label) for label, _ in pairs)
    return [f"{label:<{width}} : {format_value(value)}".rstrip() for label, value in pairs]


def vault_object(inv: Invocation, vault: Vault, *, item: bool = False) -> PSObject:
    props = vault_view(vault, domain=inv.domain, port=inv.port)
    policies = [
        PSObject(
            ACCESS_POLICY_TYPE,
            {
                "TenantId": vault.tenant,
                "ObjectId": p.object_id,
                "ApplicationId": p.sign_in_name if p.kind == "service" else None,
                "DisplayName": _policy_display(p),
                "PermissionsToKeys": list(p.key_permissions),
                "PermissionsToKeysStr": ", ".join(p.key_permissions),
            },
            display=_policy_display(p),
        )
        for p in vault.access_policies
    ]
    blocks = [
        "\n".join(
            _text_block(
                [
                    ("Tenant ID", p.get("TenantId")),
                    ("Object ID", p.get("ObjectId")),
                    ("Application ID", p.get("ApplicationId")),
                    ("Display Name", p.get("DisplayName")),
                    ("Permissions to Keys", p.get("PermissionsToKeysStr")),
                ]
            )
        )
        for p in policies
    ]
    props["Created"] = vault.created_at
    props["AccessPolicies"] = policies
    props["AccessPoliciesText"] = ("\n" + "\n\n".join(blocks)) if blocks else ""
    type_name = VAULT_ITEM_TYPE if item else VAULT_TYPE
    if vault.deleted_at is not None:
        props["DeletionDate"] = vault.deleted_at
        props["ScheduledPurgeDate"] = vault.scheduled_purge_at
        type_name = DELETED_VAULT_TYPE
    return PSObject(type_name, props, display=vault.display_name)


def _principal_target(inv: Invocation) -> tuple[str, str | None]:
    """(object id, kind wanted) from -UserPrincipalName / -ServicePrincipalName / -ObjectId."""
    for param, kind in (
        ("UserPrincipalName", "user"),
        ("ServicePrincipalName", "service"),
        ("ObjectId", None),
    ):
        value = inv.args.get(param)
        if value:
            return str(value), kind
    raise fail(
        "Specify -UserPrincipalName, -ServicePrincipalName or -ObjectId.", "MissingPrincipal"
    )


def _check_principal(inv: Invocation, object_id: str, kind: str | None, vault: Vault) -> str:
    try:
        principal = inv.runtime.principals.get(object_id)
    except Exception:  # PrincipalNotFound, a malformed id
        principal = None
    # (whether the principal may be granted on this vault is the vault service's decision)
    if principal is None or (kind is not None and principal.kind != kind):
        raise fail(
            f"Cannot find the Active Directory object '{object_id}' in tenant '{vault.tenant}'. "
            "Please make sure that the user or application service principal you are "
            "authorizing is registered in the current subscription's Azure Active directory. "
            "(Create it first with 'customerkey principal create'.)",
            "ObjectNotFound",
            "InvalidArgument",
        )
    return principal.object_id


def _no_other_permissions(inv: Invocation) -> None:
    for param in ("PermissionsToSecrets", "PermissionsToCertificates", "PermissionsToStorage"):
        if inv.args.get(param):
            raise fail(
                f"customerkey vaults hold keys only; -{param} cannot be granted.",
                "NotSupported",
                "NotImplemented",
            )


# ====================================================================== vaults


@cmdlet(
    "New-AzKeyVault",
    Param("Name", aliases=("VaultName",), position=0, mandatory=True),
    Param("ResourceGroupName", position=1, mandatory=True),
    Param("Location", position=2, mandatory=True),
    Param("EnablePurgeProtection", "switch"),
    Param("EnableSoftDelete", "switch", help="Soft delete is always on; accepted for old lines."),
    Param("SoftDeleteRetentionInDays", "int"),
    Param("SubscriptionId"),
    Param("Tenant", help="customerkey: the tenant that owns the vault."),
    aliases=("New-AzureRmKeyVault",),
    synopsis="Create a key vault (soft delete always on).",
)
def new_azkeyvault(inv: Invocation) -> list[Any]:
    tenant = inv.args.get("Tenant") or inv.session.connected_tenant(AZ)
    if tenant is None and inv.actor(AZ).is_operator:
        known = inv.runtime.tenants.list()
        if len(known) == 1:
            tenant = known[0].id
        elif known:
            raise fail(
                f"Say which tenant owns the vault with -Tenant or {AZ_HINT} (tenants: "
                f"{', '.join(t.id for t in known)}).",
                "NotConnected",
                "InvalidOperation",
            )
    connection = inv.session.connections.get(AZ)
    subscription = (
        inv.args.get("SubscriptionId")
        or (connection.details.get("subscription") if connection else None)
        or "default"
    )
    vault = inv.runtime.vault.create_vault(
        inv.actor(AZ),
        inv.args.get("Name"),
        subscription=subscription,
        region=inv.args.get("Location"),
        resource_group=inv.args.get("ResourceGroupName"),
        retention_days=inv.args.get("SoftDeleteRetentionInDays") or 90,
        purge_protection=inv.args.flag("EnablePurgeProtection"),
        tenant=tenant,
    )
    return [vault_object(inv, vault)]


@cmdlet(
    "Get-AzKeyVault",
    Param("VaultName", aliases=("Name",), position=0),
    Param("ResourceGroupName", position=1),
    Param("Location"),
    Param("InRemovedState", "switch"),
    aliases=("Get-AzureRmKeyVault",),
    synopsis="Show a vault (access policies, soft delete, purge protection) or list vaults.",
)
def get_azkeyvault(inv: Invocation) -> list[Any]:
    actor = inv.actor(AZ)
    name = inv.args.get("VaultName")
    group = inv.args.get("ResourceGroupName")
    location = inv.args.get("Location")
    tenant = inv.session.connected_tenant(AZ)
    if name and not inv.args.flag("InRemovedState") and not any(c in name for c in "*?["):
        vault = inv.runtime.vault.get_vault(actor, name)
        if group and vault.resource_group.lower() != group.lower():
            raise fail(
                f"Vault '{name}' was not found in resource group '{group}'.",
                "VaultNotFound",
                "ObjectNotFound",
            )
        return [vault_object(inv, vault)]
    vaults = inv.runtime.vault.list_vaults(actor, deleted=inv.args.flag("InRemovedState"))
    chosen = [
        v
        for v in vaults
        if matches(name, v.display_name)
        and matches(group, v.resource_group)
        and (location is None or v.region == location.lower())
        and (tenant is None or v.tenant == tenant)
    ]
    return [vault_object(inv, v, item=True) for v in chosen]


@cmdlet(
    "Remove-AzKeyVault",
    Param("VaultName", aliases=("Name",), position=0, mandatory=True),
    Param("ResourceGroupName", position=1),
    Param("Location", position=2),
    Param("InRemovedState", "switch", help="Purge a soft-deleted vault."),
    Param("Force", "switch"),
    Param("PassThru", "switch"),
    aliases=("Remove-AzureRmKeyVault",),
    synopsis="Soft-delete a vault, or purge a deleted one (-InRemovedState).",
)
def remove_azkeyvault(inv: Invocation) -> list[Any]:
    name = inv.args.get("VaultName")
    if inv.args.flag("InRemovedState"):
        inv.runtime.vault.purge_vault(inv.actor(AZ), name)
    else:
        # Like Remove-AzKeyVaultKey: refused while a key of the vault protects data, unless -Force.
        inv.runtime.vault.delete_vault(inv.actor(AZ), name, force=inv.args.flag("Force"))
    return [True] if inv.args.flag("PassThru") else []


@cmdlet(
    "Undo-AzKeyVaultRemoval",
    Param("VaultName", position=0, mandatory=True),
    Param("ResourceGroupName", position=1),
    Param("Location", position=2),
    aliases=("Undo-AzureRmKeyVaultRemoval",),
    synopsis="Recover a soft-deleted vault.",
)
def undo_azkeyvaultremoval(inv: Invocation) -> list[Any]:
    return [
        vault_object(inv, inv.runtime.vault.recover_vault(inv.actor(AZ), inv.args.get("VaultName")))
    ]


_PRINCIPAL_PARAMS = (
    Param(
        "UserPrincipalName",
        aliases=("UPN", "EmailAddress", "Email"),
        sets=("ByUserPrincipalName",),
        mandatory=True,
    ),
    Param(
        "ServicePrincipalName",
        aliases=("SPN",),
        sets=("ByServicePrincipalName",),
        mandatory=True,
    ),
    Param("ObjectId", sets=("ByObjectId",), mandatory=True),
)


@cmdlet(
    "Set-AzKeyVaultAccessPolicy",
    Param("VaultName", position=0, mandatory=True),
    Param("ResourceGroupName", position=1),
    *_PRINCIPAL_PARAMS,
    Param("PermissionsToKeys", "string[]", aliases=("PermissionToKeys",)),
    Param("PermissionsToSecrets", "string[]", aliases=("PermissionToSecrets",)),
    Param("PermissionsToCertificates", "string[]", aliases=("PermissionToCertificates",)),
    Param("PermissionsToStorage", "string[]", aliases=("PermissionToStorage",)),
    Param("PassThru", "switch"),
    default_set="ByUserPrincipalName",
    aliases=("Set-AzureRmKeyVaultAccessPolicy",),
    synopsis="Grant a principal key permissions (they replace what it held).",
)
def set_azkeyvaultaccesspolicy(inv: Invocation) -> list[Any]:
    _no_other_permissions(inv)
    vault_name = inv.args.get("VaultName")
    actor = inv.actor(AZ)
    vault = inv.runtime.vault.get_vault(actor, vault_name)
    object_id, kind = _principal_target(inv)
    principal = _check_principal(inv, object_id, kind, vault)
    permissions = inv.args.get("PermissionsToKeys")
    if permissions is None:
        existing = next((p for p in vault.access_policies if p.object_id == principal), None)
        if existing is None:
            raise fail(
                "Access policy is not set. No permission is specified: give -PermissionsToKeys.",
                "NoPermission",
            )
        return [vault_object(inv, vault)] if inv.args.flag("PassThru") else []
    updated = inv.runtime.vault.set_access_policy(
        actor, vault_name, principal, permissions, replace=True
    )
    return [vault_object(inv, updated)] if inv.args.flag("PassThru") else []


@cmdlet(
    "Remove-AzKeyVaultAccessPolicy",
    Param("VaultName", position=0, mandatory=True),
    Param("ResourceGroupName", position=1),
    *_PRINCIPAL_PARAMS,
    Param("PassThru", "switch"),
    default_set="ByUserPrincipalName",
    aliases=("Remove-AzureRmKeyVaultAccessPolicy",),
    synopsis="Remove a principal's access policy (for a workload principal: revocation).",
)
def remove_azkeyvaultaccesspolicy(inv: Invocation) -> list[Any]:
    object_id, _ = _principal_target(inv)
    vault = inv.runtime.vault.remove_access_policy(
        inv.actor(AZ), inv.args.get("VaultName"), object_id
    )
    return [vault_object(inv, vault)] if inv.args.flag("PassThru") else []
