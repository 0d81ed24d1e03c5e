"""The vault service's shared part: its constructor and state, and the plumbing every concern
uses.

It owns the transaction runner (``_run``: one transaction per call, a refusal audited in one of
its own), the audit record (``_record``), the revocation log and change listeners
(``_revoking``, ``_notify``, ``add_change_listener``), the permission checks (``_require``,
``_require_manager``), the row lookups (vault, key, version), the views handed out (key
bundles, vaults as the caller may see them), and the private keys: opened from their sealed
form, checked against their bound public half, and cached (``_PrivateKeyCache``). The
concerns (``vaults``, ``keys``, ``deletion``, ``backup``, ``operations``, ``usage``) each
inherit from ``ServiceBase``; ``KeyVaultService`` combines them.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace
from typing import Any, TypeVar

from sqlalchemy.orm import Session

from customerkey.audit.log import AuditLog
from customerkey.clock import Clock
from customerkey.crypto.ec import ec_public_key_from_jwk
from customerkey.crypto.key_material import PrivateMaterial, key_family, material_from_bytes
from customerkey.crypto.rsa import public_key_from_jwk
from customerkey.errors import (
    Forbidden,
    HsmUnavailable,
    KeyIntegrityFailure,
    KeyNotFound,
    StillProtectsData,
    VaultNotFound,
)
from customerkey.identity import authorize as authz
from customerkey.rng import Rng
from customerkey.storage import revocations
from customerkey.storage.database import Database
from customerkey.storage.models import KeyRow, KeyVersionRow, VaultRow
from customerkey.storage.repositories import KeyRepository, PrincipalRepository, VaultRepository
from customerkey.vault.binding import PublicKeyBinding, integrity_message
from customerkey.vault.hsm import HsmProtector, PublicKey, TokenKey
from customerkey.vault.models import (
    AccessPolicy,
    Actor,
    DeletedKeyBundle,
    KeyAttributes,
    KeyBundle,
    KeyId,
    Vault,
    recovery_level,
)
from customerkey.vault.names import validate_vault_name, validate_version
from customerkey.vault.protection import KeyProtector

T = TypeVar("T")
_log = logging.getLogger(__name__)
# What a version's private operations run on: its opened software key, or its token key.
VersionKey = PrivateMaterial | TokenKey


class _PrivateKeyCache:
    """Parsed private keys (or token keys) by version row id; parsing PKCS#8 costs more than
    the RSA op."""

    def __init__(self, capacity: int = 1024) -> None:
        self._items: OrderedDict[str, VersionKey] = OrderedDict()
        self._capacity = capacity
        self._lock = threading.Lock()

    def get(self, key: str) -> VersionKey | None:
        with self._lock:
            value = self._items.get(key)
            if value is not None:
                self._items.move_to_end(key)
            return value

    def put(self, key: str, value: VersionKey) -> None:
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self._capacity:
                self._items.popitem(last=False)

    def discard(self, keys: Iterable[str]) -> None:
        with self._lock:
            for key in keys:
                self._items.pop(key, None)


class ServiceBase:
    """State and plumbing shared by every part of ``KeyVaultService``."""

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
        hsm: HsmProtector | None = None,
    ) -> None:
        self.db = db
        self._protector = protector
        # With an HSM, the key types it serves are made and used in it (``vault.hsm``).
        self._hsm = hsm
        self._master_key = master_key
        self._master_key_id = master_key_id
        self._clock = clock
        self._rng = rng
        self.audit = audit or AuditLog(clock)
        self._private_keys = _PrivateKeyCache()
        self._binding = PublicKeyBinding(master_key)
        self._listeners: list[Callable[[str, str, str], None]] = []
        self._deletion_guards: list[Callable[[Session, str, str | None], str | None]] = []

    # ------------------------------------------------------------------ plumbing

    def add_change_listener(self, listener: Callable[[str, str, str], None]) -> None:
        """Called with (vault, key or "", change) after access is narrowed, so caches of this
        process drop what they hold at once. Other processes learn of it from the revocation
        log each change also writes (``_revoking``, ``storage.revocations``)."""
        self._listeners.append(listener)

    def add_deletion_guard(self, guard: Callable[[Session, str, str | None], str | None]) -> None:
        """Asked, inside the deleting transaction, with (vault, key or None for the whole
        vault) before a key or a vault is deleted; answers what still needs it, in words, or
        None. The service above the vault that knows what root keys protect registers one."""
        self._deletion_guards.append(guard)

    def _refuse_if_needed(
        self, session: Session, vault: str, key: str | None, *, force: bool
    ) -> str | None:
        """Raise ``StillProtectsData`` while a guard names something (unless ``force``);
        returns what it named, so a forced deletion can audit it."""
        needed = [n for g in self._deletion_guards if (n := g(session, vault, key)) is not None]
        if needed and not force:
            what = f"Key '{key}'" if key is not None else f"Vault '{vault}'"
            raise StillProtectsData(f"{what} still protects data: {' '.join(needed)}")
        return " ".join(needed) or None

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
        admitted: bool = False,
    ) -> None:
        """Append the audit record of ``operation``, scoped to the vault (a row, or its
        (name, id, tenant)) so its tenant's admins and its grantees can find it (``admitted``:
        the audit gate was asked already, ``AuditLog.admit``)."""
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
            admitted=admitted,
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
            crv=version.crv,
            x=version.public_x,
            y=version.public_y,
            key_size=version.key_size,
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
            crv=version.crv,
            x=version.public_x,
            y=version.public_y,
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

    # ------------------------------------------------------------------ private keys

    def _private_key(self, vault: VaultRow, key: KeyRow, version: KeyVersionRow) -> VersionKey:
        """The version's private key (or AES key), opened from its sealed form once and then
        cached; for a version held in the HSM, its token key."""
        cached = self._private_keys.get(version.id)
        if cached is not None:
            return cached
        if version.hsm_object_id is not None:
            token_key = self._token_key(vault, key, version, version.hsm_object_id)
            self._private_keys.put(version.id, token_key)
            return token_key
        der = self._protector.open_private_key(
            version.sealed_private_key, vault_id=vault.id, key_id=key.id, version=version.version
        )
        try:
            private_key = material_from_bytes(version.kty, der)
        except ValueError:
            # The sealed bytes opened, so they are what was stored; a key type that does not
            # read them is a changed row.
            raise KeyIntegrityFailure(
                integrity_message(f"{vault.name}/{key.name}/{version.version}")
            ) from None
        self._private_keys.put(version.id, private_key)
        return private_key

    def _token_key(
        self, vault: VaultRow, key: KeyRow, version: KeyVersionRow, object_id: str
    ) -> TokenKey:
        label = f"{vault.name}/{key.name}/{version.version}"
        if self._hsm is None:
            raise HsmUnavailable(
                f"Key version '{label}' is held in an HSM, and this installation has no "
                "PKCS#11 module configured (CUSTOMERKEY_PKCS11_MODULE)."
            )
        if key_family(version.kty) == "oct":
            return self._hsm.secret_key(object_id, version.key_size)
        public: PublicKey
        try:
            if key_family(version.kty) == "EC":
                public = ec_public_key_from_jwk(
                    {"kty": "EC", "crv": version.crv, "x": version.public_x, "y": version.public_y}
                )
            else:
                public = public_key_from_jwk(
                    {"kty": "RSA", "n": version.public_n, "e": version.public_e}
                )
        except ValueError:
            raise KeyIntegrityFailure(integrity_message(label)) from None
        return self._hsm.key(object_id, version.kty, public)

    @staticmethod
    def _versions_of_vault(session: Session, row: VaultRow) -> list[KeyVersionRow]:
        """Every version row of the vault's keys, live and deleted (a purge drops their ids
        from the cache and destroys the token objects of those held in the HSM)."""
        keys = KeyRepository(session)
        versions: list[KeyVersionRow] = []
        for key in keys.all(row.id) + keys.all(row.id, deleted=True):
            versions.extend(keys.versions(key.id))
        return versions

    def destroy_token_objects(self, object_ids: Iterable[str | None]) -> None:
        """Destroy the token objects of purged versions. Called after the purge commits: a
        failed purge must not lose keys, and one that fails here leaves objects nothing names
        (an object already gone is no error, so a rerun ends as one run would)."""
        if self._hsm is None:
            return
        for object_id in object_ids:
            if object_id is None:
                continue
            try:
                self._hsm.destroy(object_id)
            except HsmUnavailable:
                # The purge stands; the object is named so an operator can remove it.
                _log.warning("token object %s of a purged key version was not destroyed", object_id)
