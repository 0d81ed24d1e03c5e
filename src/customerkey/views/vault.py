"""Views: domain objects as ordered property maps, with the real cmdlets' property names.

The CLI's ``--json`` output, its tables and the cmdlet shell all print these, so a script
written against ``Get-AzKeyVaultKey`` or against ``customerkey key show --json`` reads the
same fields.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from customerkey.audit.log import AuditRecord, AuditVerification
from customerkey.identity.directory import Principal
from customerkey.vault.models import (
    DeletedKeyBundle,
    KeyBundle,
    RotationPolicy,
    Vault,
    VersionUsage,
)


def iso(value: datetime | None) -> str | None:
    """ISO 8601 in UTC with a ``Z`` (a naive time is taken as UTC), whatever zone it came in."""
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def vault_view(vault: Vault, *, domain: str, port: int) -> dict[str, Any]:
    host = f"{vault.name}.{domain}" + ("" if port == 443 else f":{port}")
    view: dict[str, Any] = {
        "VaultName": vault.display_name,
        "ResourceGroupName": vault.resource_group,
        "Location": vault.region,
        "ResourceId": (
            f"/subscriptions/{vault.subscription}/resourceGroups/{vault.resource_group}"
            f"/providers/Microsoft.KeyVault/vaults/{vault.name}"
        ),
        "VaultUri": f"https://{host}/",
        "TenantId": vault.tenant,
        "SubscriptionId": vault.subscription,
        "EnableSoftDelete": vault.soft_delete_enabled,
        "SoftDeleteRetentionInDays": vault.retention_days,
        "EnablePurgeProtection": vault.purge_protection,
        "RecoveryLevel": vault.recovery_level,
        "CreatedBy": vault.created_by,
        "Created": iso(vault.created_at),
        "AccessPolicies": [
            {
                "ObjectId": p.object_id,
                "DisplayName": p.display_name,
                "PrincipalName": p.sign_in_name,
                "PermissionsToKeys": list(p.key_permissions),
            }
            for p in vault.access_policies
        ],
    }
    if vault.deleted_at is not None:
        view["DeletionDate"] = iso(vault.deleted_at)
        view["ScheduledPurgeDate"] = iso(vault.scheduled_purge_at)
    return view


def key_view(bundle: KeyBundle, *, domain: str, port: int) -> dict[str, Any]:
    attrs = bundle.attributes
    return {
        "VaultName": bundle.id.vault,
        "Name": bundle.id.name,
        "Version": bundle.id.version,
        "Id": bundle.id.uri(domain, port),
        "KeyType": bundle.kty,
        "KeySize": bundle.key_size,
        "KeyOps": list(bundle.key_ops),
        "Enabled": attrs.enabled,
        "NotBefore": iso(attrs.not_before),
        "Expires": iso(attrs.expires),
        "Created": iso(attrs.created),
        "Updated": iso(attrs.updated),
        "RecoveryLevel": attrs.recovery_level,
        "RecoverableDays": attrs.recoverable_days,
        "Exportable": attrs.exportable,
        "Tags": dict(bundle.tags),
    }


def deleted_key_view(deleted: DeletedKeyBundle, *, domain: str, port: int) -> dict[str, Any]:
    view = key_view(deleted.key, domain=domain, port=port)
    host = f"{deleted.key.id.vault}.{domain}" + ("" if port == 443 else f":{port}")
    view["RecoveryId"] = f"https://{host}/deletedkeys/{deleted.key.id.name}"
    view["DeletedDate"] = iso(deleted.deleted_date)
    view["ScheduledPurgeDate"] = iso(deleted.scheduled_purge_date)
    return view


def usage_view(usage: VersionUsage) -> dict[str, Any]:
    return {
        "Version": usage.version,
        "Sequence": usage.seq,
        "Enabled": usage.enabled,
        "Created": iso(usage.created),
        "Operations": usage.operation_count,
        **{name: count for name, count in usage.dependents.items()},
    }


def rotation_policy_view(
    policy: RotationPolicy, *, vault: str | None = None, key: str | None = None
) -> dict[str, Any]:
    """Like Get-AzKeyVaultKeyRotationPolicy (which names the vault and key when it knows)."""
    named: dict[str, Any] = {}
    if vault is not None:
        named["VaultName"] = vault
    if key is not None:
        named["KeyName"] = key
    return {
        **named,
        "LifetimeActions": [
            {
                "Action": a.action,
                "TimeAfterCreate": a.time_after_create,
                "TimeBeforeExpiry": a.time_before_expiry,
            }
            for a in policy.lifetime_actions
        ],
        "ExpiresIn": policy.expiry_time,
        "CreatedOn": iso(policy.created),
        "UpdatedOn": iso(policy.updated),
    }


def principal_view(principal: Principal) -> dict[str, Any]:
    return {
        "Id": principal.id,
        "ObjectId": principal.object_id,
        "Kind": principal.kind,
        "Tenant": principal.tenant,
        "DisplayName": principal.display_name,
        "Roles": list(principal.roles),
        "Enabled": principal.enabled,
        "HasSecret": principal.has_secret,
        "BuiltIn": principal.builtin,
        "Created": iso(principal.created_at),
    }


def verification_view(result: AuditVerification) -> dict[str, Any]:
    """What ``audit verify`` found, for the CLI's --json and GET /api/v1/audit/verify alike."""
    return {
        "Ok": result.ok,
        "Records": result.records,
        "Problems": list(result.problems),
        "Legacy": result.legacy,
        "KeyedFrom": result.keyed_from,
        "Checkpoints": result.checkpoints,
        "CheckpointsMatched": result.checkpoints_matched,
        "HeadSeq": result.head_seq,
        "Head": result.head,
    }


def audit_view(record: AuditRecord) -> dict[str, Any]:
    return {
        "Seq": record.seq,
        "Time": iso(record.time),
        "Principal": record.principal,
        "Operation": record.operation,
        "Result": record.result,
        "Vault": record.vault,
        "Key": record.key,
        "Version": record.version,
        "RequestId": record.request_id,
        "Details": dict(record.details),
        "Hash": record.hash,
    }
