"""Plain data objects the vault service hands out: vaults, access policies, key bundles.

They carry no database session and no secret; a ``KeyBundle`` holds only the public key.
The API layer turns them into Key Vault JSON, the CLI into tables.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

from customerkey.actor import OPERATOR as OPERATOR
from customerkey.actor import Actor as Actor


@dataclass(frozen=True)
class AccessPolicy:
    object_id: str  # the principal's immutable object id
    key_permissions: tuple[str, ...]
    display_name: str = ""
    kind: str = "user"
    sign_in_name: str = ""  # its UPN or application id, for people to read


@dataclass(frozen=True)
class Vault:
    id: str
    name: str
    display_name: str
    tenant: str
    subscription: str
    region: str
    resource_group: str
    retention_days: int
    purge_protection: bool
    created_by: str
    created_at: datetime
    access_policies: tuple[AccessPolicy, ...] = ()
    deleted_at: datetime | None = None
    scheduled_purge_at: datetime | None = None

    soft_delete_enabled: bool = True  # always on; kept so views can say so

    @property
    def recovery_level(self) -> str:
        return recovery_level(self.retention_days, self.purge_protection)


def recovery_level(retention_days: int, purge_protection: bool) -> str:
    """Key Vault's recoveryLevel for a vault's settings."""
    prefix = "Recoverable" if retention_days == 90 else "CustomizedRecoverable"
    return prefix if purge_protection else prefix + "+Purgeable"


@dataclass(frozen=True)
class KeyId:
    vault: str
    name: str
    version: str

    def uri(self, domain: str, port: int | None = None) -> str:
        host = f"{self.vault}.{domain}" + (f":{port}" if port and port != 443 else "")
        return f"https://{host}/keys/{self.name}/{self.version}"


@dataclass(frozen=True)
class KeyAttributes:
    enabled: bool
    not_before: datetime | None
    expires: datetime | None
    created: datetime
    updated: datetime
    recovery_level: str
    recoverable_days: int
    exportable: bool = False


@dataclass(frozen=True)
class KeyReleasePolicy:
    """The rules under which an exportable key version may be released (secure key release):
    the policy document's bytes as given (``vault.release_policy`` reads them), its content
    type, and whether it may never change again."""

    data: bytes
    content_type: str = "application/json; charset=utf-8"
    immutable: bool = False


@dataclass(frozen=True)
class KeyBundle:
    """One key version's public face: ``n``/``e`` for RSA; ``crv``/``x``/``y`` for EC (``n``
    and ``e`` are then ""); no public member for oct-HSM. ``key_size`` is in bits: the
    modulus, the curve (256, 256, 384, 521) or the AES key."""

    id: KeyId
    kty: str
    key_size: int
    key_ops: tuple[str, ...]
    n: str  # base64url
    e: str
    attributes: KeyAttributes
    tags: Mapping[str, str] = field(default_factory=dict)
    managed: bool = False
    operation_count: int = 0
    seq: int = 1
    crv: str | None = None
    x: str | None = None  # base64url, full length
    y: str | None = None
    release_policy: KeyReleasePolicy | None = None  # exportable versions only


@dataclass(frozen=True)
class DeletedKeyBundle:
    key: KeyBundle
    deleted_date: datetime
    scheduled_purge_date: datetime


@dataclass(frozen=True)
class LifetimeAction:
    action: str  # "Rotate" | "Notify"
    time_after_create: str | None = None  # ISO 8601 duration
    time_before_expiry: str | None = None


@dataclass(frozen=True)
class RotationPolicy:
    lifetime_actions: tuple[LifetimeAction, ...] = ()
    expiry_time: str | None = None
    created: datetime | None = None
    updated: datetime | None = None


@dataclass(frozen=True)
class VersionUsage:
    """How much one key version has been used, for ``key usage``."""

    version: str
    seq: int
    enabled: bool
    created: datetime
    operation_count: int
    dependents: Mapping[str, int | str] = field(default_factory=dict)


@dataclass(frozen=True)
class TickReport:
    purged_keys: tuple[str, ...] = ()
    purged_vaults: tuple[str, ...] = ()
    rotated_keys: tuple[str, ...] = ()
    notified_keys: tuple[str, ...] = ()
