"""The key vault service: every vault and key operation, each in one transaction with its audit.

This is the vault's Python API; the HTTPS keys API, the admin API, the CLI and the in-process
key provider all call it. Every method takes the ``Actor`` asking and checks it: vault
management (create, delete, access policies) needs the operator, a tenant admin of the vault's
tenant, or the vault's creator; key operations need the matching permission in the vault's
access policies (the operator bypasses them). Refusals change nothing, and are audited with
result ``denied`` in a transaction of their own.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, TypeVar

from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey
from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session

from customerkey.audit import AuditLog
from customerkey.clock import Clock
from customerkey.crypto.rsa import (
    generate_rsa_key,
    private_key_from_der,
    private_key_from_jwk,
    private_key_to_der,
    public_jwk_fields,
)
from customerkey.crypto.wrap import parse_rsa_algorithm, rsa_oaep_unwrap, rsa_oaep_wrap
from customerkey.errors import (
    BadParameter,
    Conflict,
    DecryptionFailed,
    Forbidden,
    KeyNotFound,
    KeyNotUsable,
    PrincipalNotFound,
    PurgeProtected,
    VaultNotFound,
)
from customerkey.identity import authorize as authz
from customerkey.rng import Rng, new_hex_id
from customerkey.storage import revocations
from customerkey.storage.database import Database
from customerkey.storage.models import (
    AccessPolicyRow,
    KeyRow,
    KeyVersionRow,
    PrincipalRow,
    SubscriptionRow,
    VaultRow,
)
from customerkey.storage.repositories import KeyRepository, PrincipalRepository, VaultRepository
from customerkey.vault import backup as backup_format
from customerkey.vault.binding import BackfillReport, PublicKeyBinding
from customerkey.vault.models import (
    AccessPolicy,
    Actor,
    DeletedKeyBundle,
    KeyAttributes,
    KeyBundle,
    KeyId,
    RotationPolicy,
    TickReport,
    Vault,
    VersionUsage,
    recovery_level,
)
from customerkey.vault.names import validate_key_name, validate_vault_name, validate_version
from customerkey.vault.permissions import KEY_PERMISSIONS, normalize_permissions
from customerkey.vault.protection import KeyProtector
from customerkey.vault.rotation import (
    due_actions,
    expiry_for_new_version,
    policy_from_json,
    policy_to_json,
)

T = TypeVar("T")

KEY_TYPES = ("RSA", "RSA-HSM")
KEY_SIZES = (2048, 3072, 4096)
RSA_KEY_OPS = ("encrypt", "decrypt", "sign", "verify", "wrapKey", "unwrapKey")
MIN_RETENTION_DAYS, MAX_RETENTION_DAYS = 7, 90

# Which permission and key operation each crypto call needs.
_CRYPTO_OPS = {
    "wrapKey": ("wrapKey", "KeyWrap"),
    "unwrapKey": ("unwrapKey", "KeyUnwrap"),
    "encrypt": ("encrypt", "KeyEncrypt"),
    "decrypt": ("decrypt", "KeyDecrypt"),
}


_VAULTS = VaultRow.__table__.c
_KEYS = KeyRow.__table__.c
_VERSIONS = KeyVersionRow.__table__.c
_POLICIES = AccessPolicyRow.__table__.c
# What crypto() checks, in one Core query (no ORM objects): the vault by name, the principal's
# access policy in it, the active key by name and the version (by id, or the newest).
_CRYPTO_CHECK = (
    select(
        _VAULTS.id,
        _VAULTS.name,
        _VAULTS.deleted_at,
        _KEYS.id,
        _KEYS.name,
        _KEYS.deleted_at,
        _VERSIONS.id,
        _VERSIONS.version,
        _VERSIONS.enabled,
        _VERSIONS.not_before,
        _VERSIONS.expires,
        _VERSIONS.key_ops,
        _POLICIES.key_permissions,
        _VAULTS.tenant,
    )
    .select_from(VaultRow.__table__)
    .join(KeyRow.__table__, _KEYS.vault_id == _VAULTS.id)
    .join(KeyVersionRow.__table__, _VERSIONS.key_id == _KEYS.id)
    .outerjoin(
        AccessPolicyRow.__table__,
        (_POLICIES.vault_id == _VAULTS.id) & (_POLICIES.object_id == bindparam("principal")),
    )
    .where(_VAULTS.name == bindparam("vault"), _KEYS.name_lower == bindparam("key"))
)
# The version's public half, checked against its tag before the version is used.
_CRYPTO_CHECK = _CRYPTO_CHECK.add_columns(
    _VERSIONS.kty.label("pk_kty"),
    _VERSIONS.public_n.label("pk_n"),
    _VERSIONS.public_e.label("pk_e"),
    _VERSIONS.public_tag.label("pk_tag"),
)
_CRYPTO_CHECK_VERSION = _CRYPTO_CHECK.where(_VERSIONS.version == bindparam("version"))
_CRYPTO_CHECK_NEWEST = _CRYPTO_CHECK.order_by(_VERSIONS.seq.desc()).limit(1)


@dataclass(frozen=True)
class CryptoResult:
    kid: KeyId
    value: bytes


class _PrivateKeyCache:
    """Parsed private keys by version row id; parsing PKCS#8 costs more than the RSA op."""

    def __init__(self, capacity: int = 1024) -> None:
        self._items: OrderedDict[str, RSAPrivateKey] = OrderedDict()
        self._capacity = capacity
        self._lock = threading.Lock()

    def get(self, key: str) -> RSAPrivateKey | None:
        with self._lock:
            value = self._items.get(key)
            if value is not None:
                self._items.move_to_end(key)
            return value

    def put(self, key: str, value: RSAPrivateKey) -> None:
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self._capacity:
                self._items.popitem(last=False)

    def discard(self, keys: Iterable[str]) -> None:
        with self._lock:
            for key in keys:
                self._items.pop(key, None)


def _check_usable(
    enabled: bool,
    not_before: datetime | None,
    expires: datetime | None,
    key_ops: Sequence[str],
    operation: str,
    now: datetime,
) -> None:
    if not enabled:
        raise KeyNotUsable(f"Operation {operation} is not allowed on a disabled key.")
    if not_before is not None and now < not_before:
        raise KeyNotUsable(
            f"Operation {operation} is not allowed before the key's not-before time "
            f"({not_before.isoformat()})."
        )
    if expires is not None and now >= expires:
        raise KeyNotUsable(f"Operation {operation} is not allowed on an expired key.")
    if operation not in key_ops:
        raise KeyNotUsable(f"Operation {operation} is not permitted on this key.")


class KeyVaultService:
    def __init__(
        self,
        db: Database,
        *,
        protector: KeyProtector,
        master_key: bytes,
        master_key_id: str,
        clock: Clock,
        rng: Rng,
        audit: AuditLog | None = None,
    ) -> None:
        self.db = db
        self._protector = protector
        self._master_key = master_key
        self._master_key_id = master_key_id
        self._clock = clock
        self._rng = rng
        self.audit = audit or AuditLog(clock)
        self._private_keys = _PrivateKeyCache()
        self._binding = PublicKeyBinding(master_key)
        self._listeners: list[Callable[[str, str, str], None]] = []

    # ------------------------------------------------------------------ plumbing

    def add_change_listener(self, listener: Callable[[str, str, str], None]) -> None:
        """Called with (vault, key or "", change) after access is narrowed, so caches of this
        process drop what they hold at once. Other processes learn of it from the revocation
        log each change also writes (``_revoking``, ``storage.revocations``)."""
        self._listeners.append(listener)

    def _notify(self, vault: str, key: str, change: str) -> None:
        for listener in list(self._listeners):
            listener(vault, key, change)

    def _revoking(self, change: str, work: Callable[[Session], T]) -> Callable[[Session], T]:
        """``work``, then a row in the revocation log naming the vault (and key) it narrowed,
        in the same transaction: the row commits exactly when the change does, whichever front
        end made it, and every running process on this database drops its cached DEP keys."""

        def run(session: Session) -> T:
            result = work(session)
            if isinstance(result, DeletedKeyBundle):
                vault, key = result.key.id.vault, result.key.id.name
            elif isinstance(result, KeyBundle):
                vault, key = result.id.vault, result.id.name
            elif isinstance(result, Vault):
                vault, key = result.name, ""
            else:  # pragma: no cover - a programming error, caught by the tests
                raise TypeError(f"cannot tell what {type(result).__name__} revokes")
            revocations.append(session, vault=vault, key=key, change=change, at=self._clock.now())
            return result

        return run

    def _run(
        self,
        actor: Actor,
        operation: str,
        fn: Callable[[Session], T],
        *,
        vault: str | None = None,
        key: str | None = None,
        read_only: bool = False,
    ) -> T:
        """Run ``fn`` in one transaction (a read-only one when ``read_only``: it takes no write
        lock); audit a refusal in a transaction of its own."""
        try:
            with self.db.read() if read_only else self.db.transaction() as session:
                return fn(session)
        except Forbidden as refusal:
            with self.db.transaction() as session:
                target = VaultRepository(session).find(vault) if vault else None
                self.audit.append(
                    session,
                    principal=actor.audit_name,
                    operation=operation,
                    result="denied",
                    vault=vault,
                    key=key,
                    request_id=actor.request_id,
                    details={"reason": refusal.message},
                    # The owner's admins see attempts on their vaults; the caller its own.
                    tenant=target.tenant if target is not None else None,
                    vault_id=target.id if target is not None else None,
                    actor_id=actor.object_id or None,
                )
            raise

    def _record(
        self,
        session: Session,
        actor: Actor,
        operation: str,
        *,
        vault: VaultRow | tuple[str, str, str] | None = None,
        key: str | None = None,
        version: str | None = None,
        details: Mapping[str, Any] | None = None,
        subject_id: str | None = None,
    ) -> None:
        """Append the audit record of ``operation``, scoped to the vault (a row, or its
        (name, id, tenant)) so its tenant's admins and its grantees can find it."""
        name: str | None = None
        vault_id: str | None = None
        tenant: str | None = None
        if isinstance(vault, VaultRow):
            name, vault_id, tenant = vault.name, vault.id, vault.tenant
        elif vault is not None:
            name, vault_id, tenant = vault
        self.audit.append(
            session,
            principal=actor.audit_name,
            operation=operation,
            vault=name,
            key=key,
            version=version,
            request_id=actor.request_id,
            details=details,
            tenant=tenant,
            vault_id=vault_id,
            actor_id=actor.object_id or None,
            subject_id=subject_id,
        )

    def _vault_row(self, session: Session, name: str, *, deleted: bool = False) -> VaultRow:
        canonical = validate_vault_name(name)
        row = VaultRepository(session).find(canonical)
        if row is None or (row.deleted_at is not None) != deleted:
            state = "deleted vault" if deleted else "vault"
            raise VaultNotFound(f"No {state} named '{name}' was found.")
        return row

    @staticmethod
    def _granted(session: Session, actor: Actor, vault: VaultRow) -> frozenset[str]:
        """The key permissions ``actor``'s access policy on ``vault`` holds (by object id)."""
        if not actor.object_id:
            return frozenset()
        policy = VaultRepository(session).policy(vault, actor.object_id)
        return frozenset(policy.key_permissions) if policy is not None else frozenset()

    def _require_manager(self, actor: Actor, vault: VaultRow) -> None:
        if authz.allowed(actor, authz.Action.VAULT_MANAGE, authz.Vault(vault.tenant)):
            return
        raise Forbidden(
            f"The client '{actor.principal_id}' does not have authorization to manage key "
            f"vault '{vault.name}'."
        )

    def _require(self, session: Session, actor: Actor, vault: VaultRow, permission: str) -> None:
        access = authz.KeyAccess(vault.tenant, self._granted(session, actor, vault), permission)
        if not authz.allowed(actor, authz.Action.KEY_OPERATION, access):
            raise Forbidden(
                f"The user, group or application '{actor.principal_id}' does not have keys "
                f"{permission} permission on key vault '{vault.name};location={vault.region}'."
            )

    def _key_row(self, session: Session, vault: VaultRow, name: str) -> KeyRow:
        row = KeyRepository(session).active(vault.id, name)
        if row is None:
            raise KeyNotFound(f"A key with (name/id) {name} was not found in this key vault.")
        return row

    def _version_row(self, session: Session, key: KeyRow, version: str | None) -> KeyVersionRow:
        keys = KeyRepository(session)
        if not version:
            row = keys.newest(key.id)
        else:
            row = keys.version(key.id, validate_version(version))
        if row is None:
            raise KeyNotFound(
                f"A key with (name/id) {key.name}/{version} was not found in this key vault."
            )
        return row

    def _check_public(self, vault: VaultRow, key: KeyRow, version: KeyVersionRow) -> None:
        """KeyIntegrityFailure unless the version's stored public key is bound to it."""
        self._binding.check(
            row_id=version.id,
            vault_id=vault.id,
            key_id=key.id,
            version=version.version,
            kty=version.kty,
            n=version.public_n,
            e=version.public_e,
            tag=version.public_tag,
            label=f"{vault.name}/{key.name}/{version.version}",
            private_key=lambda: self._private_key(vault, key, version),
        )

    def _bundle(self, vault: VaultRow, key: KeyRow, version: KeyVersionRow) -> KeyBundle:
        self._check_public(vault, key, version)
        return KeyBundle(
            id=KeyId(vault.name, key.name, version.version),
            kty=version.kty,
            key_size=version.key_size,
            key_ops=tuple(version.key_ops),
            n=version.public_n,
            e=version.public_e,
            attributes=KeyAttributes(
                enabled=version.enabled,
                not_before=version.not_before,
                expires=version.expires,
                created=version.created_at,
                updated=version.updated_at,
                recovery_level=recovery_level(vault.retention_days, vault.purge_protection),
                recoverable_days=vault.retention_days,
                exportable=version.exportable,
            ),
            tags=dict(version.tags),
            operation_count=version.operation_count,
            seq=version.seq,
        )

    @staticmethod
    def _vault(row: VaultRow, names: Mapping[str, tuple[str, str, str]] | None = None) -> Vault:
        names = names or {}
        return Vault(
            id=row.id,
            name=row.name,
            display_name=row.display_name,
            tenant=row.tenant,
            subscription=row.subscription,
            region=row.region,
            resource_group=row.resource_group,
            retention_days=row.retention_days,
            purge_protection=row.purge_protection,
            created_by=row.created_by,
            created_at=row.created_at,
            access_policies=tuple(
                AccessPolicy(
                    object_id=p.object_id,
                    key_permissions=tuple(p.key_permissions),
                    display_name=names.get(p.object_id, (p.object_id, "user", ""))[0],
                    kind=names.get(p.object_id, (p.object_id, "user", ""))[1],
                    sign_in_name=names.get(p.object_id, (p.object_id, "user", p.object_id))[2],
                )
                # by the name people read (object ids are random)
                for p in sorted(
                    row.policies,
                    key=lambda p: (names.get(p.object_id, ("", "", p.object_id))[2], p.object_id),
                )
            ),
            deleted_at=row.deleted_at,
            scheduled_purge_at=row.scheduled_purge_at,
        )

    def _vault_view(self, session: Session, row: VaultRow, actor: Actor | None = None) -> Vault:
        """The vault as ``actor`` may see it: a principal that only holds an access policy
        (it neither manages the vault nor created it) sees its own policy, not who else has
        access (reading access policies is management, as in Azure)."""
        found = PrincipalRepository(session).by_object_ids([p.object_id for p in row.policies])
        names = {oid: (p.display_name, p.kind, p.id) for oid, p in found.items()}
        vault = self._vault(row, names)
        if actor is None or self._sees_all_policies(actor, row):
            return vault
        own = actor.object_id or "-"
        return replace(
            vault, access_policies=tuple(p for p in vault.access_policies if p.object_id == own)
        )

    @staticmethod
    def _sees_all_policies(actor: Actor, row: VaultRow) -> bool:
        return authz.allowed(actor, authz.Action.VAULT_MANAGE, authz.Vault(row.tenant))

    # ------------------------------------------------------------------ vaults

    def create_vault(
        self,
        actor: Actor,
        name: str,
        *,
        subscription: str,
        region: str,
        resource_group: str = "customerkey",
        retention_days: int = 90,
        purge_protection: bool = False,
        tenant: str | None = None,
    ) -> Vault:
        canonical = validate_vault_name(name)
        if not MIN_RETENTION_DAYS <= retention_days <= MAX_RETENTION_DAYS:
            raise BadParameter(
                f"Soft-delete retention must be between {MIN_RETENTION_DAYS} and "
                f"{MAX_RETENTION_DAYS} days, got {retention_days}."
            )
        for label, value in (("subscription", subscription), ("region", region)):
            if not value or not value.strip():
                raise BadParameter(f"A vault needs a {label}.")
        owner_tenant = (tenant or actor.tenant).strip().lower()
        if not authz.allowed(actor, authz.Action.VAULT_CREATE, authz.Tenant(owner_tenant)):
            raise Forbidden(
                f"'{actor.principal_id}' cannot create vaults in tenant '{owner_tenant}'."
            )

        def work(session: Session) -> Vault:
            self._claim_subscription(session, owner_tenant, subscription.strip())
            vaults = VaultRepository(session)
            existing = vaults.find(canonical)
            if existing is not None:
                state = " (soft-deleted; recover or purge it)" if existing.deleted_at else ""
                raise Conflict(f"A vault named '{existing.name}' already exists{state}.")
            now = self._clock.now()
            row = VaultRow(
                id=new_hex_id(self._rng),
                name=canonical,
                display_name=name,
                tenant=owner_tenant,
                subscription=subscription.strip(),
                region=region.strip().lower(),
                resource_group=resource_group,
                retention_days=retention_days,
                purge_protection=purge_protection,
                created_by=actor.principal_id,
                created_at=now,
            )
            if actor.kind != "operator" and actor.object_id:
                grant = AccessPolicyRow(object_id=actor.object_id, key_permissions=[])
                grant.key_permissions = list(KEY_PERMISSIONS)
                row.policies.append(grant)
            vaults.add(row)
            self._record(
                session,
                actor,
                "VaultPut",
                vault=row,
                details={
                    "subscription": row.subscription,
                    "region": row.region,
                    "retention_days": retention_days,
                    "purge_protection": purge_protection,
                },
            )
            return self._vault_view(session, row)

        return self._run(actor, "VaultPut", work, vault=canonical)

    def _claim_subscription(self, session: Session, tenant: str, subscription: str) -> None:
        """A subscription belongs to the first tenant whose vault names it, and to it only."""
        owner = session.get(SubscriptionRow, subscription)
        if owner is None:
            session.add(
                SubscriptionRow(id=subscription, tenant=tenant, created_at=self._clock.now())
            )
            session.flush()
        elif owner.tenant != tenant:
            raise Forbidden(f"The subscription '{subscription}' belongs to another tenant.")

    def get_vault(self, actor: Actor, name: str) -> Vault:
        with self.db.transaction() as session:
            row = self._vault_row(session, name)
            resource = authz.Vault(row.tenant, self._granted(session, actor, row))
            if not authz.allowed(actor, authz.Action.VAULT_READ, resource):
                raise Forbidden(
                    f"The client '{actor.principal_id}' does not have authorization to read "
                    f"key vault '{row.name}'."
                )
            return self._vault_view(session, row, actor)

    def list_vaults(self, actor: Actor, *, deleted: bool = False) -> list[Vault]:
        with self.db.transaction() as session:
            rows = VaultRepository(session).all(deleted=deleted)
            own = actor.object_id or "-"

            def granted(row: VaultRow) -> frozenset[str]:
                held = [p.key_permissions for p in row.policies if p.object_id == own]
                return frozenset(held[0]) if held else frozenset()

            visible = [
                r
                for r in rows
                if authz.allowed(actor, authz.Action.VAULT_READ, authz.Vault(r.tenant, granted(r)))
            ]
            return [self._vault_view(session, r, actor) for r in visible]

    def delete_vault(self, actor: Actor, name: str) -> Vault:
        def work(session: Session) -> Vault:
            row = self._vault_row(session, name)
            self._require_manager(actor, row)
            now = self._clock.now()
            row.deleted_at = now
            row.scheduled_purge_at = now + timedelta(days=row.retention_days)
            self._record(session, actor, "VaultDelete", vault=row)
            return self._vault_view(session, row)

        result = self._run(
            actor, "VaultDelete", self._revoking("vault-deleted", work), vault=name.lower()
        )
        self._notify(result.name, "", "vault-deleted")
        return result

    def recover_vault(self, actor: Actor, name: str) -> Vault:
        def work(session: Session) -> Vault:
            row = self._vault_row(session, name, deleted=True)
            self._require_manager(actor, row)
            row.deleted_at = None
            row.scheduled_purge_at = None
            self._record(session, actor, "VaultRecover", vault=row)
            return self._vault_view(session, row)

        return self._run(actor, "VaultRecover", work, vault=name.lower())

    def purge_vault(self, actor: Actor, name: str) -> None:
        def work(session: Session) -> list[str]:
            row = self._vault_row(session, name, deleted=True)
            self._require_manager(actor, row)
            now = self._clock.now()
            if row.purge_protection and row.scheduled_purge_at and now < row.scheduled_purge_at:
                raise PurgeProtected(
                    f"Vault '{row.name}' has purge protection; it can be purged only after "
                    f"{row.scheduled_purge_at.isoformat()}."
                )
            version_ids = self._version_ids_of_vault(session, row)
            VaultRepository(session).purge(row)
            self._record(session, actor, "VaultPurge", vault=row)
            return version_ids

        self._private_keys.discard(self._run(actor, "VaultPurge", work, vault=name.lower()))

    @staticmethod
    def _version_ids_of_vault(session: Session, row: VaultRow) -> list[str]:
        keys = KeyRepository(session)
        ids: list[str] = []
        for key in keys.all(row.id) + keys.all(row.id, deleted=True):
            ids.extend(v.id for v in keys.versions(key.id))
        return ids

    def set_access_policy(
        self,
        actor: Actor,
        vault: str,
        object_id: str,
        permissions: Iterable[str],
        *,
        replace: bool = False,
    ) -> Vault:
        """Grant key permissions (merged with what the principal holds, unless ``replace``)."""
        try:
            wanted = normalize_permissions(permissions)
        except ValueError as exc:
            raise BadParameter(str(exc)) from None

        def work(session: Session) -> Vault:
            row = self._vault_row(session, vault)
            self._require_manager(actor, row)
            principal = self._grantee(session, actor, row, object_id)
            existing = VaultRepository(session).policy(row, principal.object_id)
            before: tuple[str, ...] = tuple(existing.key_permissions) if existing else ()
            merged = wanted if replace else normalize_permissions((*before, *wanted))
            if existing is None:
                row.policies.append(
                    AccessPolicyRow(object_id=principal.object_id, key_permissions=list(merged))
                )
            else:
                existing.key_permissions = list(merged)
            session.flush()
            self._record(
                session,
                actor,
                "VaultAccessPolicySet",
                vault=row,
                details={
                    "object_id": principal.object_id,
                    "principal": principal.id,
                    "before": list(before),
                    "after": list(merged),
                },
                subject_id=principal.object_id,
            )
            return self._vault_view(session, row)

        result = self._run(
            actor,
            "VaultAccessPolicySet",
            self._revoking("access-changed", work),
            vault=vault.lower(),
        )
        self._notify(result.name, "", "access-changed")
        return result

    def remove_access_policy(self, actor: Actor, vault: str, object_id: str) -> Vault:
        def work(session: Session) -> Vault:
            row = self._vault_row(session, vault)
            self._require_manager(actor, row)
            # A grant of a principal deleted since is removed by its object id.
            known = PrincipalRepository(session).find(object_id)
            target = known.object_id if known is not None else object_id.lower()
            existing = VaultRepository(session).policy(row, target)
            if existing is None:
                raise PrincipalNotFound(
                    f"Vault '{row.name}' has no access policy for '{object_id}'."
                )
            before = list(existing.key_permissions)
            row.policies.remove(existing)
            session.flush()
            self._record(
                session,
                actor,
                "VaultAccessPolicyRemove",
                vault=row,
                details={
                    "object_id": target,
                    "principal": known.id if known is not None else None,
                    "before": before,
                },
                subject_id=target,
            )
            return self._vault_view(session, row)

        result = self._run(
            actor,
            "VaultAccessPolicyRemove",
            self._revoking("access-changed", work),
            vault=vault.lower(),
        )
        self._notify(result.name, "", "access-changed")
        return result

    @staticmethod
    def _grantee(session: Session, actor: Actor, vault: VaultRow, reference: str) -> PrincipalRow:
        """The principal a grant names (sign-in name or object id), looked up in the vault's
        tenant and among the platform's first-party apps; the operator may name any. Another
        tenant's principal is not found, as if it did not exist."""
        principal = PrincipalRepository(session).find(reference)
        if principal is not None and (
            principal.tenant == vault.tenant
            or principal.builtin
            or authz.allowed(actor, authz.Action.PLATFORM_OPERATE, authz.Platform())
        ):
            return principal
        raise PrincipalNotFound(
            f"Cannot find principal '{reference}' in the directory of tenant '{vault.tenant}'."
        )

    def vault_tenant(self, name: str) -> str | None:
        """The tenant a live vault belongs to, or None. Not secret: the 401 challenge names it."""
        try:
            canonical = validate_vault_name(name)
        except BadParameter:
            return None
        with self.db.transaction() as session:
            row = VaultRepository(session).find(canonical)
            return row.tenant if row is not None and row.deleted_at is None else None

    def has_permissions(
        self, vault: str, object_id: str, permissions: Sequence[str]
    ) -> dict[str, bool]:
        """Which of ``permissions`` the principal holds on the vault (no audit; for checks)."""
        with self.db.transaction() as session:
            row = self._vault_row(session, vault)
            policy = VaultRepository(session).policy(row, object_id)
            held = set(policy.key_permissions) if policy else set()
            return {p: p in held for p in permissions}

    # ------------------------------------------------------------------ keys

    def _validate_new_key(
        self,
        kty: str,
        size: int | None,
        key_ops: Sequence[str] | None,
        not_before: datetime | None,
        expires: datetime | None,
    ) -> tuple[str, int, tuple[str, ...]]:
        normalized = kty.upper()
        if normalized not in KEY_TYPES:
            raise BadParameter(
                f"Key type '{kty}' is not supported; use one of: {', '.join(KEY_TYPES)}."
            )
        key_size = 2048 if size is None else size
        if key_size not in KEY_SIZES:
            raise BadParameter(f"RSA key size {key_size} is not supported; use 2048, 3072 or 4096.")
        ops = self._validate_ops(key_ops)
        if not_before and expires and expires <= not_before:
            raise BadParameter("The key's expiry must be after its not-before time.")
        return normalized, key_size, ops

    @staticmethod
    def _validate_ops(key_ops: Sequence[str] | None) -> tuple[str, ...]:
        if key_ops is None:
            return RSA_KEY_OPS
        by_lower = {op.lower(): op for op in RSA_KEY_OPS}
        ops: list[str] = []
        for op in key_ops:
            canonical = by_lower.get(op.lower())
            if canonical is None:
                raise BadParameter(
                    f"Key operation '{op}' is not valid for an RSA key; use: "
                    + ", ".join(RSA_KEY_OPS)
                    + "."
                )
            if canonical not in ops:
                ops.append(canonical)
        return tuple(ops)

    @staticmethod
    def _validate_tags(tags: Mapping[str, str] | None) -> dict[str, str]:
        tags = dict(tags or {})
        if len(tags) > 15:
            raise BadParameter("A key can carry at most 15 tags.")
        for k, v in tags.items():
            if not isinstance(k, str) or not isinstance(v, str) or not k or len(k) > 512:
                raise BadParameter("Tag names must be 1-512 characters and values strings.")
            if len(v) > 256:
                raise BadParameter(f"Tag '{k}' is longer than 256 characters.")
        return tags

    def _add_version(
        self,
        session: Session,
        actor: Actor,
        vault: VaultRow,
        name: str,
        private_key: RSAPrivateKey,
        *,
        kty: str,
        key_ops: tuple[str, ...],
        enabled: bool,
        not_before: datetime | None,
        expires: datetime | None,
        tags: dict[str, str],
        imported: bool,
        operation: str,
    ) -> KeyBundle:
        keys = KeyRepository(session)
        key = keys.find(vault.id, name)
        if key is not None and key.deleted_at is not None:
            raise Conflict(
                f"Key {key.name} is currently in a deleted but recoverable state, and its name "
                "cannot be reused; in this state, the key can only be recovered or purged."
            )
        now = self._clock.now()
        if key is None:
            key = KeyRow(
                id=new_hex_id(self._rng),
                vault_id=vault.id,
                name=name,
                name_lower=name.lower(),
                created_at=now,
            )
            keys.add(key)
        policy = self._policy(key)
        if expires is None and policy is not None:
            expires = expiry_for_new_version(policy, now)
        version = new_hex_id(self._rng)
        fields = public_jwk_fields(private_key.public_key())
        row = KeyVersionRow(
            id=new_hex_id(self._rng),
            key_id=key.id,
            version=version,
            seq=keys.next_seq(key.id),
            kty=kty,
            key_size=private_key.key_size,
            key_ops=list(key_ops),
            enabled=enabled,
            not_before=not_before,
            expires=expires,
            created_at=now,
            updated_at=now,
            tags=tags,
            exportable=False,
            imported=imported,
            public_n=fields["n"],
            public_e=fields["e"],
            sealed_private_key=self._protector.seal_private_key(
                private_key_to_der(private_key), vault_id=vault.id, key_id=key.id, version=version
            ),
            public_tag=self._binding.tag_for(
                vault_id=vault.id,
                key_id=key.id,
                version=version,
                kty=kty,
                public_key=private_key.public_key(),
            ),
        )
        keys.add_version(row)
        self._record(
            session,
            actor,
            operation,
            vault=vault,
            key=key.name,
            version=version,
            details={"kty": kty, "size": row.key_size, "ops": list(key_ops)},
        )
        return self._bundle(vault, key, row)

    def create_key(
        self,
        actor: Actor,
        vault: str,
        name: str,
        *,
        kty: str = "RSA",
        size: int | None = None,
        public_exponent: int = 65537,
        key_ops: Sequence[str] | None = None,
        enabled: bool = True,
        not_before: datetime | None = None,
        expires: datetime | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> KeyBundle:
        """Create a key, or a new version when the name exists (that is a key roll)."""
        validate_key_name(name)
        normalized, key_size, ops = self._validate_new_key(kty, size, key_ops, not_before, expires)
        clean_tags = self._validate_tags(tags)
        if public_exponent not in (3, 65537):
            raise BadParameter("The public exponent must be 65537 (or 3).")
        private_key = generate_rsa_key(key_size, public_exponent)

        def work(session: Session) -> KeyBundle:
            row = self._vault_row(session, vault)
            self._require(session, actor, row, "create")
            return self._add_version(
                session,
                actor,
                row,
                name,
                private_key,
                kty=normalized,
                key_ops=ops,
                enabled=enabled,
                not_before=not_before,
                expires=expires,
                tags=clean_tags,
                imported=False,
                operation="KeyCreate",
            )

        return self._run(actor, "KeyCreate", work, vault=vault.lower(), key=name)

    def import_key(
        self,
        actor: Actor,
        vault: str,
        name: str,
        jwk: Mapping[str, Any],
        *,
        hsm: bool = False,
        enabled: bool = True,
        not_before: datetime | None = None,
        expires: datetime | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> KeyBundle:
        validate_key_name(name)
        kty = str(jwk.get("kty", "")).upper()
        if kty not in KEY_TYPES:
            raise BadParameter(f"Key type '{jwk.get('kty')}' cannot be imported; use RSA.")
        try:
            private_key = private_key_from_jwk(jwk)
        except ValueError as exc:
            raise BadParameter(f"The key material is not a valid RSA private key: {exc}") from None
        if private_key.key_size not in KEY_SIZES:
            raise BadParameter(
                f"RSA key size {private_key.key_size} is not supported; use 2048, 3072 or 4096."
            )
        raw_ops = jwk.get("key_ops")
        if raw_ops is not None and not (
            isinstance(raw_ops, list) and all(isinstance(o, str) for o in raw_ops)
        ):
            raise BadParameter("'key_ops' must be a list of strings.")
        ops = self._validate_ops(raw_ops)
        if not_before and expires and expires <= not_before:
            raise BadParameter("The key's expiry must be after its not-before time.")
        clean_tags = self._validate_tags(tags)
        final_kty = "RSA-HSM" if hsm or kty == "RSA-HSM" else "RSA"

        def work(session: Session) -> KeyBundle:
            row = self._vault_row(session, vault)
            self._require(session, actor, row, "import")
            return self._add_version(
                session,
                actor,
                row,
                name,
                private_key,
                kty=final_kty,
                key_ops=ops,
                enabled=enabled,
                not_before=not_before,
                expires=expires,
                tags=clean_tags,
                imported=True,
                operation="KeyImport",
            )

        return self._run(actor, "KeyImport", work, vault=vault.lower(), key=name)

    def get_key(self, actor: Actor, vault: str, name: str, version: str | None = None) -> KeyBundle:
        def work(session: Session) -> KeyBundle:
            row = self._vault_row(session, vault)
            self._require(session, actor, row, "get")
            key = self._key_row(session, row, name)
            return self._bundle(row, key, self._version_row(session, key, version))

        return self._run(actor, "KeyGet", work, vault=vault.lower(), key=name)

    def list_keys(self, actor: Actor, vault: str) -> list[KeyBundle]:
        """The newest version of each active key, by name."""

        def work(session: Session) -> list[KeyBundle]:
            row = self._vault_row(session, vault)
            self._require(session, actor, row, "list")
            keys = KeyRepository(session)
            result = []
            for key in keys.all(row.id):
                newest = keys.newest(key.id)
                if newest is not None:
                    result.append(self._bundle(row, key, newest))
            return result

        return self._run(actor, "KeyList", work, vault=vault.lower())

    def list_versions(self, actor: Actor, vault: str, name: str) -> list[KeyBundle]:
        def work(session: Session) -> list[KeyBundle]:
            row = self._vault_row(session, vault)
            self._require(session, actor, row, "list")
            key = self._key_row(session, row, name)
            return [self._bundle(row, key, v) for v in KeyRepository(session).versions(key.id)]

        return self._run(actor, "KeyListVersions", work, vault=vault.lower(), key=name)

    def update_key(
        self,
        actor: Actor,
        vault: str,
        name: str,
        version: str | None = None,
        *,
        enabled: bool | None = None,
        not_before: datetime | None = None,
        expires: datetime | None = None,
        key_ops: Sequence[str] | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> KeyBundle:
        """Change a version's attributes, operations or tags (the newest when no version)."""
        ops = self._validate_ops(key_ops) if key_ops is not None else None
        clean_tags = self._validate_tags(tags) if tags is not None else None

        def work(session: Session) -> KeyBundle:
            row = self._vault_row(session, vault)
            self._require(session, actor, row, "update")
            key = self._key_row(session, row, name)
            target = self._version_row(session, key, version)
            changes: dict[str, Any] = {}
            if enabled is not None and enabled != target.enabled:
                target.enabled = enabled
                changes["enabled"] = enabled
            if not_before is not None:
                target.not_before = not_before
                changes["nbf"] = not_before.isoformat()
            if expires is not None:
                target.expires = expires
                changes["exp"] = expires.isoformat()
            if target.not_before and target.expires and target.expires <= target.not_before:
                raise BadParameter("The key's expiry must be after its not-before time.")
            if ops is not None:
                target.key_ops = list(ops)
                changes["key_ops"] = list(ops)
            if clean_tags is not None:
                target.tags = clean_tags
                changes["tags"] = clean_tags
            if not changes:
                return self._bundle(row, key, target)
            target.updated_at = self._clock.now()
            self._record(
                session,
                actor,
                "KeyUpdate",
                vault=row,
                key=key.name,
                version=target.version,
                details=changes,
            )
            return self._bundle(row, key, target)

        result = self._run(
            actor, "KeyUpdate", self._revoking("key-updated", work), vault=vault.lower(), key=name
        )
        self._notify(result.id.vault, result.id.name, "key-updated")
        return result

    def rotate_key(self, actor: Actor, vault: str, name: str) -> KeyBundle:
        """A new version with the newest version's type, size, operations and tags."""

        def work(session: Session) -> KeyBundle:
            row = self._vault_row(session, vault)
            self._require(session, actor, row, "rotate")
            key = self._key_row(session, row, name)
            return self._rotate(session, actor, row, key)

        return self._run(actor, "KeyRotate", work, vault=vault.lower(), key=name)

    def _rotate(self, session: Session, actor: Actor, vault: VaultRow, key: KeyRow) -> KeyBundle:
        newest = self._version_row(session, key, None)
        return self._add_version(
            session,
            actor,
            vault,
            key.name,
            generate_rsa_key(newest.key_size),
            kty=newest.kty,
            key_ops=tuple(newest.key_ops),
            enabled=True,
            not_before=None,
            expires=None,
            tags=dict(newest.tags),
            imported=False,
            operation="KeyRotate",
        )

    @staticmethod
    def _policy(key: KeyRow) -> RotationPolicy | None:
        if key.rotation_policy is None:
            return None
        stored = {k: v for k, v in key.rotation_policy.items() if not k.startswith("_")}
        policy = policy_from_json(stored)
        return RotationPolicy(
            lifetime_actions=policy.lifetime_actions,
            expiry_time=policy.expiry_time,
            created=key.rotation_policy_created,
            updated=key.rotation_policy_updated,
        )

    def get_rotation_policy(self, actor: Actor, vault: str, name: str) -> RotationPolicy:
        def work(session: Session) -> RotationPolicy:
            row = self._vault_row(session, vault)
            self._require(session, actor, row, "getrotationpolicy")
            key = self._key_row(session, row, name)
            return self._policy(key) or RotationPolicy()

        return self._run(actor, "KeyRotationPolicyGet", work, vault=vault.lower(), key=name)

    def set_rotation_policy(
        self, actor: Actor, vault: str, name: str, policy_json: Mapping[str, Any]
    ) -> RotationPolicy:
        policy = policy_from_json(policy_json)

        def work(session: Session) -> RotationPolicy:
            row = self._vault_row(session, vault)
            self._require(session, actor, row, "setrotationpolicy")
            key = self._key_row(session, row, name)
            now = self._clock.now()
            key.rotation_policy = policy_to_json(policy)
            key.rotation_policy_created = key.rotation_policy_created or now
            key.rotation_policy_updated = now
            self._record(
                session,
                actor,
                "KeyRotationPolicySet",
                vault=row,
                key=key.name,
                details=policy_to_json(policy),
            )
            return self._policy(key) or RotationPolicy()

        return self._run(actor, "KeyRotationPolicySet", work, vault=vault.lower(), key=name)

    # ------------------------------------------------------------------ soft delete

    def _deleted_bundle(self, session: Session, vault: VaultRow, key: KeyRow) -> DeletedKeyBundle:
        newest = self._version_row(session, key, None)
        assert key.deleted_at is not None and key.scheduled_purge_at is not None
        return DeletedKeyBundle(
            key=self._bundle(vault, key, newest),
            deleted_date=key.deleted_at,
            scheduled_purge_date=key.scheduled_purge_at,
        )

    def _deleted_key_row(self, session: Session, vault: VaultRow, name: str) -> KeyRow:
        row = KeyRepository(session).deleted(vault.id, name)
        if row is None:
            raise KeyNotFound(f"Deleted Key not found: {name}")
        return row

    def delete_key(self, actor: Actor, vault: str, name: str) -> DeletedKeyBundle:
        def work(session: Session) -> DeletedKeyBundle:
            row = self._vault_row(session, vault)
            self._require(session, actor, row, "delete")
            key = self._key_row(session, row, name)
            now = self._clock.now()
            key.deleted_at = now
            key.scheduled_purge_at = now + timedelta(days=row.retention_days)
            self._record(session, actor, "KeyDelete", vault=row, key=key.name)
            return self._deleted_bundle(session, row, key)

        result = self._run(
            actor, "KeyDelete", self._revoking("key-deleted", work), vault=vault.lower(), key=name
        )
        self._notify(result.key.id.vault, result.key.id.name, "key-deleted")
        return result

    def get_deleted_key(self, actor: Actor, vault: str, name: str) -> DeletedKeyBundle:
        def work(session: Session) -> DeletedKeyBundle:
            row = self._vault_row(session, vault)
            self._require(session, actor, row, "get")
            return self._deleted_bundle(session, row, self._deleted_key_row(session, row, name))

        return self._run(actor, "KeyGetDeleted", work, vault=vault.lower(), key=name)

    def list_deleted_keys(self, actor: Actor, vault: str) -> list[DeletedKeyBundle]:
        def work(session: Session) -> list[DeletedKeyBundle]:
            row = self._vault_row(session, vault)
            self._require(session, actor, row, "list")
            return [
                self._deleted_bundle(session, row, key)
                for key in KeyRepository(session).all(row.id, deleted=True)
            ]

        return self._run(actor, "KeyListDeleted", work, vault=vault.lower())

    def recover_deleted_key(self, actor: Actor, vault: str, name: str) -> KeyBundle:
        def work(session: Session) -> KeyBundle:
            row = self._vault_row(session, vault)
            self._require(session, actor, row, "recover")
            key = self._deleted_key_row(session, row, name)
            key.deleted_at = None
            key.scheduled_purge_at = None
            self._record(session, actor, "KeyRecover", vault=row, key=key.name)
            return self._bundle(row, key, self._version_row(session, key, None))

        return self._run(actor, "KeyRecover", work, vault=vault.lower(), key=name)

    def purge_deleted_key(self, actor: Actor, vault: str, name: str) -> None:
        def work(session: Session) -> list[str]:
            row = self._vault_row(session, vault)
            self._require(session, actor, row, "purge")
            key = self._deleted_key_row(session, row, name)
            now = self._clock.now()
            if row.purge_protection and key.scheduled_purge_at and now < key.scheduled_purge_at:
                raise PurgeProtected(
                    f"Operation 'DeletedKeyPurge' is not allowed: vault '{row.name}' has purge "
                    f"protection and key '{key.name}' is retained until "
                    f"{key.scheduled_purge_at.isoformat()}."
                )
            ids = [v.id for v in KeyRepository(session).versions(key.id)]
            KeyRepository(session).purge(key)
            self._record(session, actor, "KeyPurge", vault=row, key=key.name)
            return ids

        self._private_keys.discard(
            self._run(actor, "KeyPurge", work, vault=vault.lower(), key=name)
        )

    # ------------------------------------------------------------------ backup / restore

    def backup_key(self, actor: Actor, vault: str, name: str) -> bytes:
        def work(session: Session) -> bytes:
            row = self._vault_row(session, vault)
            self._require(session, actor, row, "backup")
            key = self._key_row(session, row, name)
            versions = []
            for v in KeyRepository(session).versions(key.id):
                self._check_public(row, key, v)
                der = self._protector.open_private_key(
                    v.sealed_private_key, vault_id=row.id, key_id=key.id, version=v.version
                )
                versions.append(
                    backup_format.BackupVersion(
                        version=v.version,
                        seq=v.seq,
                        kty=v.kty,
                        key_size=v.key_size,
                        key_ops=tuple(v.key_ops),
                        enabled=v.enabled,
                        not_before=v.not_before,
                        expires=v.expires,
                        created=v.created_at,
                        updated=v.updated_at,
                        tags=dict(v.tags),
                        exportable=v.exportable,
                        imported=v.imported,
                        n=v.public_n,
                        e=v.public_e,
                        private_der=der,
                    )
                )
            blob = backup_format.encode_backup(
                backup_format.KeyBackup(
                    header=backup_format.BackupHeader(
                        name=key.name,
                        subscription=row.subscription,
                        region=row.region,
                        created=key.created_at,
                        tenant=row.tenant,
                    ),
                    rotation_policy=key.rotation_policy,
                    versions=tuple(versions),
                ),
                master_key=self._master_key,
                master_key_id=self._master_key_id,
            )
            self._record(
                session,
                actor,
                "KeyBackup",
                vault=row,
                key=key.name,
                details={"versions": len(versions)},
            )
            return blob

        return self._run(actor, "KeyBackup", work, vault=vault.lower(), key=name)

    def restore_key(self, actor: Actor, vault: str, blob: bytes) -> KeyBundle:
        """Restore every version of a backed-up key, keeping its version ids."""
        header = backup_format.read_backup_header(blob)

        def work(session: Session) -> KeyBundle:
            row = self._vault_row(session, vault)
            self._require(session, actor, row, "restore")
            owner = session.get(SubscriptionRow, row.subscription)
            if (header.tenant is not None and header.tenant != row.tenant) or (
                owner is not None and owner.tenant != row.tenant
            ):
                raise Forbidden(
                    f"The backup of key '{header.name}' belongs to another tenant; it can only "
                    f"be restored into a vault of its own tenant."
                )
            if header.subscription != row.subscription or header.region != row.region:
                raise BadParameter(
                    f"The backup of key '{header.name}' belongs to subscription "
                    f"'{header.subscription}' in geography '{header.region}'; it can only be "
                    f"restored into a vault of that subscription and geography (vault "
                    f"'{row.name}' is in subscription '{row.subscription}', geography "
                    f"'{row.region}')."
                )
            keys = KeyRepository(session)
            existing = keys.find(row.id, header.name)
            if existing is not None:
                state = " (soft-deleted)" if existing.deleted_at else ""
                raise Conflict(
                    f"Key {existing.name} already exists in vault '{row.name}'{state}; "
                    "a backup can only be restored under a free name."
                )
            backup = backup_format.decode_backup(blob, master_key=self._master_key)
            key = KeyRow(
                id=new_hex_id(self._rng),
                vault_id=row.id,
                name=header.name,
                name_lower=header.name.lower(),
                created_at=header.created,
                rotation_policy=dict(backup.rotation_policy) if backup.rotation_policy else None,
            )
            keys.add(key)
            newest: KeyVersionRow | None = None
            for v in backup.versions:
                version_row = KeyVersionRow(
                    id=new_hex_id(self._rng),
                    key_id=key.id,
                    version=v.version,
                    seq=v.seq,
                    kty=v.kty,
                    key_size=v.key_size,
                    key_ops=list(v.key_ops),
                    enabled=v.enabled,
                    not_before=v.not_before,
                    expires=v.expires,
                    created_at=v.created,
                    updated_at=v.updated,
                    tags=dict(v.tags),
                    exportable=v.exportable,
                    imported=v.imported,
                    public_n=v.n,
                    public_e=v.e,
                    sealed_private_key=self._protector.seal_private_key(
                        v.private_der, vault_id=row.id, key_id=key.id, version=v.version
                    ),
                    public_tag=self._binding.tag_for_restore(
                        vault_id=row.id,
                        key_id=key.id,
                        version=v.version,
                        kty=v.kty,
                        n=v.n,
                        e=v.e,
                        private_der=v.private_der,
                    ),
                )
                keys.add_version(version_row)
                if newest is None or version_row.seq > newest.seq:
                    newest = version_row
            assert newest is not None
            self._record(
                session,
                actor,
                "KeyRestore",
                vault=row,
                key=key.name,
                details={"versions": len(backup.versions)},
            )
            return self._bundle(row, key, newest)

        return self._run(actor, "KeyRestore", work, vault=vault.lower(), key=header.name)

    # ------------------------------------------------------------------ crypto operations

    def _usable(self, version: KeyVersionRow, operation: str, now: datetime) -> None:
        _check_usable(
            version.enabled, version.not_before, version.expires, version.key_ops, operation, now
        )

    def _private_key(self, vault: VaultRow, key: KeyRow, version: KeyVersionRow) -> RSAPrivateKey:
        cached = self._private_keys.get(version.id)
        if cached is not None:
            return cached
        der = self._protector.open_private_key(
            version.sealed_private_key, vault_id=vault.id, key_id=key.id, version=version.version
        )
        private_key = private_key_from_der(der)
        self._private_keys.put(version.id, private_key)
        return private_key

    def _crypto_check_fast(
        self,
        session: Session,
        actor: Actor,
        vault: str,
        name: str,
        version: str | None,
        permission: str,
        operation: str,
    ) -> tuple[tuple[str, str, str], str, str, str, RSAPrivateKey] | None:
        """crypto()'s checks in one query for the usual case: (vault name, key name, version
        row id, version, private key). None when anything is unusual (no such vault, key or
        version, a deleted one, a missing permission, a name to validate): the step-by-step
        checks then run and raise exactly what they always raised."""
        if not name or (version is not None and len(version) != 32):
            return None
        params = {
            "vault": vault.lower(),
            "key": name.lower(),
            "principal": actor.object_id or "-",
        }
        if version is None:
            statement = _CRYPTO_CHECK_NEWEST
        else:
            statement = _CRYPTO_CHECK_VERSION
            params["version"] = version.lower()
        row = session.execute(statement, params).first()
        if row is None:
            return None
        (vault_id, vault_name, vault_deleted, key_id, key_name, key_deleted, version_id) = row[:7]
        enabled, not_before, expires, key_ops, permissions, tenant = row[8:14]
        if vault_deleted is not None or key_deleted is not None:
            return None
        access = authz.KeyAccess(tenant, frozenset(permissions or ()), permission)
        if not authz.allowed(actor, authz.Action.KEY_OPERATION, access):
            return None
        _check_usable(enabled, not_before, expires, key_ops, operation, self._clock.now())
        private_key = self._private_keys.get(version_id)
        if private_key is None:
            vault_row = session.get(VaultRow, vault_id)
            key_row = session.get(KeyRow, key_id)
            version_row = session.get(KeyVersionRow, version_id)
            if vault_row is None or key_row is None or version_row is None:
                return None
            private_key = self._private_key(vault_row, key_row, version_row)
        opened = private_key
        self._binding.check(
            row_id=version_id,
            vault_id=vault_id,
            key_id=key_id,
            version=row[7],
            kty=row.pk_kty,
            n=row.pk_n,
            e=row.pk_e,
            tag=row.pk_tag,
            label=f"{vault_name}/{key_name}/{row[7]}",
            private_key=lambda: opened,
        )
        return (vault_name, vault_id, tenant), key_name, version_id, row[7], private_key

    def crypto(
        self,
        actor: Actor,
        operation: str,
        vault: str,
        name: str,
        version: str | None,
        algorithm: str,
        value: bytes,
    ) -> CryptoResult:
        """wrapKey / unwrapKey / encrypt / decrypt with RSA-OAEP-256 or RSA-OAEP."""
        if operation not in _CRYPTO_OPS:
            raise BadParameter(f"Unknown key operation '{operation}'.")
        try:
            alg = parse_rsa_algorithm(algorithm)
        except ValueError:
            raise BadParameter(
                f"Algorithm '{algorithm}' is not supported; use RSA-OAEP-256 or RSA-OAEP."
            ) from None
        permission, audit_name = _CRYPTO_OPS[operation]

        # Three steps, so that the RSA operation holds no lock: the checks read in a read-only
        # transaction; the operation runs outside any; its usage count and its audit record
        # commit together in one short write transaction. (On SQLite a write transaction holds
        # the database's one write lock, which every other request would wait for.) A change
        # that commits between the checks and the operation (access removed, key disabled) is
        # seen by the next operation, as if it had committed a moment later.
        def check(session: Session) -> tuple[tuple[str, str, str], str, str, str, RSAPrivateKey]:
            fast = self._crypto_check_fast(
                session, actor, vault, name, version, permission, operation
            )
            if fast is not None:
                return fast
            row = self._vault_row(session, vault)
            self._require(session, actor, row, permission)
            key = self._key_row(session, row, name)
            target = self._version_row(session, key, version)
            self._usable(target, operation, self._clock.now())
            private_key = self._private_key(row, key, target)
            self._check_public(row, key, target)
            return (row.name, row.id, row.tenant), key.name, target.id, target.version, private_key

        vault_scope, key_name, version_id, version_name, private_key = self._run(
            actor, audit_name, check, vault=vault.lower(), key=name, read_only=True
        )
        try:
            if operation in ("wrapKey", "encrypt"):
                output = rsa_oaep_wrap(private_key.public_key(), value, alg)
            else:
                output = rsa_oaep_unwrap(private_key, value, alg)
        except ValueError as exc:
            raise BadParameter(str(exc)) from None
        except DecryptionFailed:
            raise BadParameter("The ciphertext could not be decrypted with this key.") from None
        with self.db.transaction() as session:
            KeyRepository(session).count_use(version_id)
            self._record(
                session,
                actor,
                audit_name,
                vault=vault_scope,
                key=key_name,
                version=version_name,
                details={"alg": algorithm},
            )
        return CryptoResult(KeyId(vault_scope[0], key_name, version_name), output)

    def wrap_key(
        self, actor: Actor, vault: str, name: str, version: str | None, alg: str, key: bytes
    ) -> CryptoResult:
        return self.crypto(actor, "wrapKey", vault, name, version, alg, key)

    def unwrap_key(
        self, actor: Actor, vault: str, name: str, version: str | None, alg: str, wrapped: bytes
    ) -> CryptoResult:
        return self.crypto(actor, "unwrapKey", vault, name, version, alg, wrapped)

    def backfill_public_tags(self, *, batch: int = 200) -> BackfillReport:
        """Give every key version made before public-key tags its tag, once it is checked
        against its sealed private key (run at start; idempotent; see ``vault.binding``)."""
        return self._binding.backfill(self.db, self._protector, batch=batch)

    # ------------------------------------------------------------------ usage and scheduler

    def key_usage(self, actor: Actor, vault: str, name: str) -> list[VersionUsage]:
        def work(session: Session) -> list[VersionUsage]:
            row = self._vault_row(session, vault)
            self._require(session, actor, row, "get")
            key = self._key_row(session, row, name)
            return [
                VersionUsage(
                    version=v.version,
                    seq=v.seq,
                    enabled=v.enabled,
                    created=v.created_at,
                    operation_count=v.operation_count,
                )
                for v in KeyRepository(session).versions(key.id)
            ]

        return self._run(actor, "KeyUsage", work, vault=vault.lower(), key=name)

    def tick(self, actor: Actor) -> TickReport:
        """The scheduler's periodic work: purge what retention has released, apply rotation
        policies. Safe to run from several processes (each step is its own transaction)."""
        if not authz.allowed(actor, authz.Action.PLATFORM_OPERATE, authz.Platform()):
            raise Forbidden("Only the platform operator runs the scheduler.")
        now = self._clock.now()
        purged_keys: list[str] = []
        purged_vaults: list[str] = []
        rotated: list[str] = []
        notified: list[str] = []
        with self.db.transaction() as session:
            for key in KeyRepository(session).due_for_purge(now):
                vault = session.get(VaultRow, key.vault_id)
                label = f"{vault.name if vault else '?'}/{key.name}"
                self._private_keys.discard(v.id for v in KeyRepository(session).versions(key.id))
                KeyRepository(session).purge(key)
                self._record(
                    session,
                    actor,
                    "KeyPurge",
                    vault=vault,
                    key=label.split("/", 1)[1],
                    details={"reason": "retention ended"},
                )
                purged_keys.append(label)
            for vault in VaultRepository(session).due_for_purge(now):
                self._private_keys.discard(self._version_ids_of_vault(session, vault))
                VaultRepository(session).purge(vault)
                self._record(
                    session,
                    actor,
                    "VaultPurge",
                    vault=vault,
                    details={"reason": "retention ended"},
                )
                purged_vaults.append(vault.name)
        with self.db.transaction() as session:
            for key in KeyRepository(session).with_rotation_policy():
                vault_row = session.get(VaultRow, key.vault_id)
                if vault_row is None or vault_row.deleted_at is not None:
                    continue
                policy = self._policy(key)
                newest = KeyRepository(session).newest(key.id)
                if policy is None or newest is None:
                    continue
                actions = due_actions(
                    policy,
                    newest_created=newest.created_at,
                    newest_expires=newest.expires,
                    now=now,
                )
                label = f"{vault_row.name}/{key.name}"
                if "Rotate" in actions:
                    self._rotate(session, actor, vault_row, key)
                    rotated.append(label)
                elif "Notify" in actions:
                    stored = dict(key.rotation_policy or {})
                    if stored.get("_notified_version") != newest.version:
                        stored["_notified_version"] = newest.version
                        key.rotation_policy = stored
                        self._record(
                            session,
                            actor,
                            "KeyNearExpiry",
                            vault=vault_row,
                            key=key.name,
                            version=newest.version,
                        )
                        notified.append(label)
        return TickReport(
            purged_keys=tuple(purged_keys),
            purged_vaults=tuple(purged_vaults),
            rotated_keys=tuple(rotated),
            notified_keys=tuple(notified),
        )
