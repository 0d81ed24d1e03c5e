"""Data encryption policies (DEPs) and their key generations.

A DEP names two root keys in two different vaults. Creating one validates both keys as the
workload's service principal would use them (RSA, enabled, not expired unless the expiry is
9999-12-31, soft delete on, and the principal holds get, wrapKey and unwrapKey), makes the
DEP's availability key (AES-256, sealed under the master key) and the first generation: a
random DEP key wrapped by both root keys' newest versions and by the availability key, stored
with its key check value (``customerkey.crypto.key_check``) so a vault that later unwraps it to
a wrong key is caught.
``Set-DataEncryptionPolicy -Refresh`` adds a generation (see ``refresh``).

Vault calls never happen inside a database transaction: the in-process vault opens its own,
and on SQLite a second writer would wait on the first.

Length: DEPs and their generations share one lifecycle (create, refresh, roll, retire, purge
request, unwrap with the availability-key rules); the next split is generations into their own
module.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from customerkey.audit.log import AuditLog
from customerkey.clock import Clock
from customerkey.crypto.key_check import key_check_value
from customerkey.crypto.sealing import MasterSealer
from customerkey.crypto.wrap import aes_kwp_unwrap, aes_kwp_wrap
from customerkey.errors import (
    BadParameter,
    Conflict,
    Forbidden,
    KeyAccessDenied,
    KeyProviderUnavailable,
    NotFound,
)
from customerkey.identity import authorize as authz
from customerkey.keyprovider.base import KeyProvider, KeyUri, RootKeyProperties
from customerkey.keys.cache import DepKeyCache
from customerkey.keys.resolver import (
    FALLBACK_ACTIVITY,
    DepKeyResolver,
    FallbackEvent,
    WrappedDepKey,
    key_mismatch,
)
from customerkey.rng import Rng
from customerkey.storage.database import Database
from customerkey.storage.models import GenerationRow, PolicyRow, TenantRow
from customerkey.vault.models import Actor

MAX_MAILBOX_POLICIES = 50
NO_EXPIRY = datetime(9999, 12, 31, tzinfo=UTC)
REQUIRED_PERMISSIONS = ("get", "wrapKey", "unwrapKey")
KINDS = ("mailbox", "files")
_NAME = re.compile(r"^\S{1,64}$")
_GUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")


class PolicyNotFound(NotFound):
    code = "DataEncryptionPolicyNotFound"


@dataclass(frozen=True)
class DataEncryptionPolicy:
    id: str
    tenant: str
    kind: str
    name: str
    description: str
    enabled: bool
    azure_key_ids: tuple[str, str]
    state: str
    current_generation_id: str | None
    generation_count: int
    created_at: datetime
    updated_at: datetime
    purge_reason: str | None = None
    purge_contact: str | None = None
    purge_requested_by: str | None = None
    purge_requested_at: datetime | None = None
    purged_at: datetime | None = None


@dataclass(frozen=True)
class PolicyGeneration:
    id: str
    policy_id: str
    seq: int
    key_uri_1: str
    key_uri_2: str
    created_at: datetime
    retired_at: datetime | None


def _generation(row: GenerationRow) -> PolicyGeneration:
    return PolicyGeneration(
        row.id,
        row.policy_id,
        row.seq,
        row.key_uri_1,
        row.key_uri_2,
        row.created_at,
        row.retired_at,
    )


def current_generation_row(session: Session, policy_id: str) -> GenerationRow | None:
    """The policy's newest generation that is not retired (the one new keys go under)."""
    return session.scalar(
        select(GenerationRow)
        .where(GenerationRow.policy_id == policy_id, GenerationRow.retired_at.is_(None))
        .order_by(GenerationRow.seq.desc())
        .limit(1)
    )


class DataEncryptionPolicies:
    def __init__(
        self,
        db: Database,
        *,
        clock: Clock,
        rng: Rng,
        audit: AuditLog,
        sealer: MasterSealer,
        providers: Mapping[str, KeyProvider],
        cache: DepKeyCache,
    ) -> None:
        self.db = db
        self._clock = clock
        self._rng = rng
        self._audit = audit
        self._sealer = sealer
        self._providers = providers
        self.cache = cache
        self.resolver = DepKeyResolver(
            cache=cache,
            rng=rng,
            unwrap_with_availability=self._unwrap_with_availability,
            on_fallback=self._record_fallback,
        )

    # ------------------------------------------------------------------ helpers

    def provider(self, kind: str) -> KeyProvider:
        return self._providers[kind]

    def _uuid(self) -> str:
        return str(uuid.UUID(bytes=self._rng.token_bytes(16), version=4))

    @staticmethod
    def _require_admin(actor: Actor, tenant: str) -> None:
        if not authz.allowed(actor, authz.Action.TENANT_ADMINISTER, authz.Tenant(tenant)):
            raise Forbidden(f"'{actor.principal_id}' is not an administrator of tenant '{tenant}'.")

    def _view(self, session: Session, row: PolicyRow) -> DataEncryptionPolicy:
        current = current_generation_row(session, row.id)
        count = session.scalar(
            select(func.count()).select_from(GenerationRow).where(GenerationRow.policy_id == row.id)
        )
        return DataEncryptionPolicy(
            id=row.id,
            tenant=row.tenant_id,
            kind=row.kind,
            name=row.name,
            description=row.description,
            enabled=row.enabled,
            azure_key_ids=(row.key_uri_1, row.key_uri_2),
            state=row.state,
            current_generation_id=current.id if current else None,
            generation_count=int(count or 0),
            created_at=row.created_at,
            updated_at=row.updated_at,
            purge_reason=row.purge_reason,
            purge_contact=row.purge_contact,
            purge_requested_by=row.purge_requested_by,
            purge_requested_at=row.purge_requested_at,
            purged_at=row.purged_at,
        )

    def _find(self, session: Session, tenant: str, identity: str, kind: str | None) -> PolicyRow:
        ident = identity.strip()
        row: PolicyRow | None = None
        if _GUID.match(ident):
            row = session.get(PolicyRow, ident.lower())
            if row is None:
                generation = session.get(GenerationRow, ident.lower())
                if generation is not None:
                    row = session.get(PolicyRow, generation.policy_id)
        else:
            query = select(PolicyRow).where(
                PolicyRow.tenant_id == tenant, PolicyRow.name_lower == ident.lower()
            )
            if kind is not None:
                query = query.where(PolicyRow.kind == kind)
            row = session.scalar(query)
        if row is None or row.tenant_id != tenant or (kind is not None and row.kind != kind):
            raise PolicyNotFound(
                f"The data encryption policy '{identity}' was not found in tenant '{tenant}'."
            )
        return row

    # ------------------------------------------------------------------ validation

    def validate_root_key(self, kind: str, uri: KeyUri, tenant: str) -> RootKeyProperties:
        """Check a root key the way Customer Key does; BadParameter says what is wrong.

        A key in another tenant's vault is refused exactly as a key in no vault at all, so
        the refusal does not tell whether it exists."""
        provider = self.provider(kind)
        belongs = getattr(provider, "belongs_to", None)  # routers know; a bare provider not
        if belongs is not None and not belongs(uri, tenant):
            raise BadParameter(
                f"The key {uri} cannot be read by the service principal: {uri}: No vault "
                f"named '{uri.vault}' was found."
            )
        try:
            props = provider.properties(uri)
        except KeyAccessDenied as denied:
            raise BadParameter(
                f"The key {uri} cannot be read by the service principal: {denied.message}"
            ) from None
        except KeyProviderUnavailable as failed:
            raise BadParameter(f"The vault of key {uri} is unreachable: {failed.message}") from None
        if props.kty.upper() not in ("RSA", "RSA-HSM"):
            raise BadParameter(f"The key {uri} is {props.kty}; root keys must be RSA keys.")
        if not props.enabled:
            raise BadParameter(f"The key {uri} is disabled.")
        now = self._clock.now()
        if props.expires is not None and props.expires < NO_EXPIRY:
            if props.expires <= now:
                raise BadParameter(f"The key {uri} has expired ({props.expires.isoformat()}).")
            raise BadParameter(
                f"The key {uri} expires on {props.expires.date().isoformat()}; root keys must "
                "not expire (or expire on 12/31/9999)."
            )
        if "Recoverable" not in props.recovery_level:
            raise BadParameter(
                f"The vault of key {uri} does not have soft delete on (recoveryLevel "
                f"'{props.recovery_level}')."
            )
        held = provider.holds(props.uri, REQUIRED_PERMISSIONS)
        missing = [p for p in REQUIRED_PERMISSIONS if not held.get(p)]
        if missing:
            raise BadParameter(
                f"The {kind} service principal lacks {', '.join(missing)} on the vault of key "
                f"{uri}; grant get, wrapKey and unwrapKey first."
            )
        return props

    # ------------------------------------------------------------------ create / read / update

    def _wrap_generation(
        self,
        kind: str,
        uri_1: KeyUri,
        uri_2: KeyUri,
        availability_key: bytes,
        *,
        exact_versions: bool = False,
    ) -> tuple[bytes, tuple[KeyUri, bytes], tuple[KeyUri, bytes], bytes]:
        """A fresh DEP key wrapped by both root keys (newest versions; with ``exact_versions``
        the versions the URIs name) and the availability key."""
        provider = self.provider(kind)
        dep_key = self._rng.token_bytes(32)
        if not exact_versions:
            uri_1, uri_2 = uri_1.unversioned(), uri_2.unversioned()
        first = provider.wrap(uri_1, dep_key)
        second = provider.wrap(uri_2, dep_key)
        return (
            dep_key,
            (first.uri, first.wrapped),
            (second.uri, second.wrapped),
            aes_kwp_wrap(availability_key, dep_key),
        )

    def create(
        self,
        actor: Actor,
        tenant: str,
        name: str,
        key_uris: Sequence[str],
        *,
        description: str = "",
        enabled: bool = True,
        kind: str = "mailbox",
        exact_versions: bool = False,
    ) -> DataEncryptionPolicy:
        """A policy over two root keys, its first generation wrapped by their newest versions;
        with ``exact_versions`` by the versions versioned key URIs name (as
        Register-SPODataEncryptionPolicy -PrimaryKeyVersion/-SecondaryKeyVersion do)."""
        tenant = tenant.lower()
        self._require_admin(actor, tenant)
        if kind not in KINDS:
            raise BadParameter(f"Policy kind must be one of {', '.join(KINDS)}.")
        if not _NAME.match(name or ""):
            raise BadParameter(
                f"The policy name '{name}' is invalid: 1-64 characters with no spaces."
            )
        if len(key_uris) != 2:
            raise BadParameter(
                f"A data encryption policy needs exactly two key URIs (AzureKeyIDs), got "
                f"{len(key_uris)}."
            )
        uri_1, uri_2 = (KeyUri.parse(u) for u in key_uris)
        if uri_1.netloc == uri_2.netloc:
            raise BadParameter(
                "The two root keys must be in two different vaults (ideally in two regions)."
            )
        with self.db.transaction() as session:
            if session.get(TenantRow, tenant) is None:
                raise NotFound(f"No tenant named '{tenant}'.")
            self._check_name_free(session, tenant, kind, name)
            if kind == "mailbox":
                count = session.scalar(
                    select(func.count())
                    .select_from(PolicyRow)
                    .where(PolicyRow.tenant_id == tenant, PolicyRow.kind == "mailbox")
                )
                if int(count or 0) >= MAX_MAILBOX_POLICIES:
                    raise Conflict(
                        f"Tenant '{tenant}' already has {MAX_MAILBOX_POLICIES} mailbox data "
                        "encryption policies, the most allowed."
                    )
        self.validate_root_key(kind, uri_1, tenant)
        self.validate_root_key(kind, uri_2, tenant)
        availability_key = self._rng.token_bytes(32)
        dep_key, (v1, w1), (v2, w2), wa = self._wrap_generation(
            kind, uri_1, uri_2, availability_key, exact_versions=exact_versions
        )
        now = self._clock.now()
        policy_id = self._uuid()
        with self.db.transaction() as session:
            self._check_name_free(session, tenant, kind, name)
            row = PolicyRow(
                id=policy_id,
                tenant_id=tenant,
                kind=kind,
                name=name,
                name_lower=name.lower(),
                description=description,
                enabled=enabled,
                key_uri_1=str(uri_1),
                key_uri_2=str(uri_2),
                sealed_availability_key=self._sealer.seal(
                    availability_key, purpose="availability-key", subject=policy_id
                ),
                state="active",
                created_at=now,
                updated_at=now,
            )
            session.add(row)
            session.flush()
            generation = self._add_generation(session, row, dep_key, v1, w1, v2, w2, wa)
            self._audit.append(
                session,
                tenant=row.tenant_id,
                principal=actor.audit_name,
                actor_id=actor.object_id or None,
                operation="DataEncryptionPolicyCreate",
                request_id=actor.request_id,
                details={
                    "policy": policy_id,
                    "name": name,
                    "kind": kind,
                    "tenant": tenant,
                    "generation": generation.id,
                    "keys": [str(v1), str(v2)],
                },
            )
            return self._view(session, row)

    @staticmethod
    def _check_name_free(session: Session, tenant: str, kind: str, name: str) -> None:
        taken = session.scalar(
            select(PolicyRow).where(
                PolicyRow.tenant_id == tenant,
                PolicyRow.kind == kind,
                PolicyRow.name_lower == name.lower(),
            )
        )
        if taken is not None:
            raise Conflict(f"A data encryption policy named '{taken.name}' already exists.")

    def _add_generation(
        self,
        session: Session,
        policy: PolicyRow,
        dep_key: bytes,
        v1: KeyUri,
        w1: bytes,
        v2: KeyUri,
        w2: bytes,
        wa: bytes,
    ) -> GenerationRow:
        seq = session.scalar(
            select(func.max(GenerationRow.seq)).where(GenerationRow.policy_id == policy.id)
        )
        generation_id = self._uuid()
        generation = GenerationRow(
            id=generation_id,
            policy_id=policy.id,
            seq=int(seq or 0) + 1,
            key_uri_1=str(v1),
            wrapped_1=w1,
            key_uri_2=str(v2),
            wrapped_2=w2,
            wrapped_availability=wa,
            key_check=key_check_value(dep_key, generation_id),
            created_at=self._clock.now(),
        )
        session.add(generation)
        session.flush()
        return generation

    def get(
        self, actor: Actor, tenant: str, identity: str, *, kind: str | None = None
    ) -> DataEncryptionPolicy:
        """By name, by DEP GUID, or by the GUID of one of its generations (for its tenant's
        admins, and its purge approvers, who sign off what they can read)."""
        tenant = tenant.lower()
        if not authz.allowed(actor, authz.Action.TENANT_READ, authz.Tenant(tenant)):
            raise Forbidden(f"'{actor.principal_id}' is not an administrator of tenant '{tenant}'.")
        with self.db.transaction() as session:
            return self._view(session, self._find(session, tenant, identity, kind))

    def list_policies(
        self, actor: Actor, tenant: str, *, kind: str | None = None
    ) -> list[DataEncryptionPolicy]:
        tenant = tenant.lower()
        self._require_admin(actor, tenant)
        with self.db.transaction() as session:
            query = select(PolicyRow).where(PolicyRow.tenant_id == tenant)
            if kind is not None:
                query = query.where(PolicyRow.kind == kind)
            return [self._view(session, r) for r in session.scalars(query.order_by(PolicyRow.name))]

    def update(
        self,
        actor: Actor,
        tenant: str,
        identity: str,
        *,
        enabled: bool | None = None,
        name: str | None = None,
        description: str | None = None,
    ) -> DataEncryptionPolicy:
        tenant = tenant.lower()
        self._require_admin(actor, tenant)
        if name is not None and not _NAME.match(name):
            raise BadParameter(f"The policy name '{name}' is invalid: 1-64 characters, no spaces.")
        with self.db.transaction() as session:
            row = self._find(session, tenant, identity, None)
            if row.state != "active":
                raise Conflict(f"Policy '{row.name}' is {row.state} and can no longer change.")
            changes: dict[str, object] = {}
            if name is not None and name != row.name:
                self._check_name_free(session, tenant, row.kind, name)
                changes["name"] = [row.name, name]
                row.name, row.name_lower = name, name.lower()
            if description is not None and description != row.description:
                changes["description"] = description
                row.description = description
            if enabled is not None and enabled != row.enabled:
                changes["enabled"] = enabled
                row.enabled = enabled
            row.updated_at = self._clock.now()
            self._audit.append(
                session,
                tenant=row.tenant_id,
                principal=actor.audit_name,
                actor_id=actor.object_id or None,
                operation="DataEncryptionPolicySet",
                request_id=actor.request_id,
                details={"policy": row.id, **changes},
            )
            return self._view(session, row)

    def generations(self, policy_id: str) -> list[PolicyGeneration]:
        with self.db.transaction() as session:
            rows = session.scalars(
                select(GenerationRow)
                .where(GenerationRow.policy_id == policy_id)
                .order_by(GenerationRow.seq)
            )
            return [_generation(r) for r in rows]

    def find_id(self, actor: Actor, tenant: str, identity: str, kind: str | None = None) -> str:
        return self.get(actor, tenant, identity, kind=kind).id

    def new_generation(
        self,
        actor: Actor,
        policy_id: str,
        *,
        in_transaction: Callable[[Session, GenerationRow], None] | None = None,
    ) -> PolicyGeneration | None:
        """A new generation wrapped by the newest versions of both root keys, or None when
        neither root key has a version newer than the current generation's (nothing to do).
        ``in_transaction`` runs in the transaction that stores it (to queue the re-wrap)."""
        with self.db.transaction() as session:
            policy = session.get(PolicyRow, policy_id)
            if policy is None:
                raise PolicyNotFound(f"No data encryption policy {policy_id}.")
            if policy.state != "active":
                raise Conflict(f"Policy '{policy.name}' is {policy.state}; it cannot be refreshed.")
            current = current_generation_row(session, policy_id)
            kind, tenant_id = policy.kind, policy.tenant_id
            uri_1, uri_2 = KeyUri.parse(policy.key_uri_1), KeyUri.parse(policy.key_uri_2)
            current_versions = (
                (current.key_uri_1, current.key_uri_2) if current is not None else ("", "")
            )
        # the newest versions, even when the policy was written with versioned key ids
        newest = tuple(
            self.validate_root_key(kind, uri.unversioned(), tenant_id).uri for uri in (uri_1, uri_2)
        )
        if (str(newest[0]), str(newest[1])) == current_versions:
            return None
        return self.new_generation_with_keys(
            actor,
            policy_id,
            (newest[0], newest[1]),
            operation="DataEncryptionPolicyRefresh",
            in_transaction=in_transaction,
        )

    def new_generation_with_keys(
        self,
        actor: Actor,
        policy_id: str,
        wrap_with: tuple[KeyUri, KeyUri],
        *,
        operation: str,
        policy_uris: tuple[str, str] | None = None,
        details: Mapping[str, object] | None = None,
        in_transaction: Callable[[Session, GenerationRow], None] | None = None,
    ) -> PolicyGeneration:
        """A new generation whose fresh DEP key is wrapped by exactly the two root keys of
        ``wrap_with`` (a versioned URI wraps with that version, an unversioned one with the
        newest) and by the availability key; the policy's key URIs become ``policy_uris`` when
        given. The one way a generation is added after the first: a refresh onto the newest
        versions, the files workload's key roll to another key or version (Update-SPO-
        DataEncryptionPolicy) and its recovery onto new keys. The caller validates the root
        keys first. ``in_transaction`` runs in the transaction that stores the generation, after
        the policy row is locked (so two callers cannot both pass a check made there)."""
        uri_1, uri_2 = wrap_with
        if uri_1.netloc == uri_2.netloc:
            raise BadParameter(
                "The two root keys must be in two different vaults (ideally in two regions)."
            )
        with self.db.transaction() as session:
            policy = session.get(PolicyRow, policy_id)
            if policy is None:
                raise PolicyNotFound(f"No data encryption policy {policy_id}.")
            if policy.state != "active":
                raise Conflict(f"Policy '{policy.name}' is {policy.state}; its keys cannot change.")
            kind = policy.kind
            sealed = policy.sealed_availability_key
        if sealed is None:
            raise Conflict("This policy's availability key has been destroyed.")
        availability = self._sealer.open(sealed, purpose="availability-key", subject=policy_id)
        provider = self.provider(kind)
        dep_key = self._rng.token_bytes(32)
        first = provider.wrap(uri_1, dep_key)
        second = provider.wrap(uri_2, dep_key)
        wa = aes_kwp_wrap(availability, dep_key)
        with self.db.transaction() as session:
            policy = session.get(PolicyRow, policy_id, with_for_update=True, populate_existing=True)
            assert policy is not None
            if policy.state != "active":
                raise Conflict(f"Policy '{policy.name}' is {policy.state}; its keys cannot change.")
            generation = self._add_generation(
                session, policy, dep_key, first.uri, first.wrapped, second.uri, second.wrapped, wa
            )
            if policy_uris is not None:
                policy.key_uri_1, policy.key_uri_2 = policy_uris
            policy.updated_at = self._clock.now()
            if in_transaction is not None:
                in_transaction(session, generation)
            self._audit.append(
                session,
                tenant=policy.tenant_id,
                principal=actor.audit_name,
                actor_id=actor.object_id or None,
                operation=operation,
                request_id=actor.request_id,
                details={
                    "policy": policy_id,
                    "generation": generation.id,
                    "seq": generation.seq,
                    "keys": [str(first.uri), str(second.uri)],
                    **(details or {}),
                },
            )
            return _generation(generation)

    def current_generation(self, policy_id: str) -> PolicyGeneration | None:
        with self.db.transaction() as session:
            row = current_generation_row(session, policy_id)
            return _generation(row) if row else None

    def retire_generation(self, session: Session, generation_id: str, *, reason: str) -> bool:
        """Destroy a generation's wrapped DEP keys (inside the caller's transaction)."""
        generation = session.get(GenerationRow, generation_id)
        if generation is None or generation.retired_at is not None:
            return False
        generation.wrapped_1 = None
        generation.wrapped_2 = None
        generation.wrapped_availability = None
        generation.retired_at = self._clock.now()
        self.cache.invalidate_policy(generation.policy_id)
        self._audit.append(
            session,
            tenant=session.scalar(
                select(PolicyRow.tenant_id).where(PolicyRow.id == generation.policy_id)
            ),
            principal="customerkey-service",
            operation="DataEncryptionPolicyGenerationRetired",
            details={"policy": generation.policy_id, "generation": generation.id, "reason": reason},
        )
        return True

    def request_purge(
        self,
        actor: Actor,
        tenant: str,
        identity: str,
        *,
        reason: str,
        contact: str,
        workload_principal: str,
    ) -> DataEncryptionPolicy:
        """Set-DataEncryptionPolicy -PermanentDataPurgeRequested: refused while the workload
        principal still holds wrapKey or unwrapKey on either vault."""
        tenant = tenant.lower()
        self._require_admin(actor, tenant)
        if not reason.strip() or not contact.strip():
            raise BadParameter("A purge request needs a reason and a contact.")
        with self.db.transaction() as session:
            row = self._find(session, tenant, identity, None)
            if row.state != "active":
                raise Conflict(f"Policy '{row.name}' is already {row.state}.")
            policy_id, kind = row.id, row.kind
            uris = (KeyUri.parse(row.key_uri_1), KeyUri.parse(row.key_uri_2))
        provider = self.provider(kind)
        still: list[str] = []
        for uri in uris:
            try:
                held = provider.holds(uri, ("wrapKey", "unwrapKey"))
            except KeyAccessDenied:
                continue  # the vault or key is gone: nothing is held there
            granted = [p for p, ok in held.items() if ok]
            if granted:
                still.append(f"{', '.join(granted)} on vault '{uri.vault}'")
        if still:
            raise Conflict(
                f"The {kind} service principal ({workload_principal}) still holds "
                + "; ".join(still)
                + ". Remove its access to both vaults before requesting a permanent data purge."
            )
        with self.db.transaction() as session:
            row = self._find(session, tenant, policy_id, None)
            now = self._clock.now()
            row.state = "purge-requested"
            row.purge_reason = reason
            row.purge_contact = contact
            row.purge_requested_by = actor.principal_id
            row.purge_requested_by_id = actor.object_id or None
            row.purge_requested_at = now
            row.updated_at = now
            self._audit.append(
                session,
                tenant=row.tenant_id,
                principal=actor.audit_name,
                actor_id=actor.object_id or None,
                operation="DataEncryptionPolicyPurgeRequested",
                request_id=actor.request_id,
                details={"policy": row.id, "reason": reason, "contact": contact},
            )
            return self._view(session, row)

    def assignable(self, tenant: str, identity: str, kind: str) -> tuple[str, str]:
        """(policy id, current generation id) of a policy that may be assigned now."""
        with self.db.transaction() as session:
            row = self._find(session, tenant.lower(), identity, kind)
            if row.state != "active":
                raise Conflict(
                    f"Policy '{row.name}' has a permanent data purge requested; it can no "
                    "longer be assigned."
                )
            if not row.enabled:
                raise Conflict(f"Policy '{row.name}' is disabled and cannot be assigned.")
            current = current_generation_row(session, row.id)
            if current is None:
                raise Conflict(f"Policy '{row.name}' has no usable key generation.")
            return row.id, current.id

    # ------------------------------------------------------------------ DEP keys

    def wrapped_generation(self, generation_id: str) -> tuple[str, WrappedDepKey]:
        """(policy kind, what is needed to unwrap) for a generation."""
        with self.db.transaction() as session:
            generation = session.get(GenerationRow, generation_id)
            if generation is None or generation.wrapped_1 is None or generation.wrapped_2 is None:
                raise KeyAccessDenied(
                    f"Key generation {generation_id} has been destroyed; its content cannot be "
                    "decrypted."
                )
            policy = session.get(PolicyRow, generation.policy_id)
            assert policy is not None
            return policy.kind, WrappedDepKey(
                policy_id=policy.id,
                generation_id=generation.id,
                uri_1=KeyUri.parse(generation.key_uri_1),
                wrapped_1=generation.wrapped_1,
                uri_2=KeyUri.parse(generation.key_uri_2),
                wrapped_2=generation.wrapped_2,
                wrapped_availability=generation.wrapped_availability,
                key_check=generation.key_check,
            )

    def generation_key(
        self, generation_id: str, *, system: bool = False, request_id: str | None = None
    ) -> bytes:
        """The unwrapped DEP key of a generation, under the availability rules."""
        # Rule 1 of the resolver (a cached key is used while its TTL lasts) needs only the
        # generation id: a warm read reads no database row for it. Retiring a generation and
        # revoking a root key drop its entry (``retire_generation``, the vault listener).
        cached = self.cache.peek(generation_id)
        if cached is not None:
            return cached
        kind, wrapped = self.wrapped_generation(generation_id)
        return self.resolver.resolve(
            self.provider(kind),
            wrapped,
            system=system,
            request_id=request_id,
            allow_availability=kind == "mailbox",
        )

    def _unwrap_with_availability(self, wrapped: WrappedDepKey) -> bytes | None:
        with self.db.transaction() as session:
            policy = session.get(PolicyRow, wrapped.policy_id)
            sealed = policy.sealed_availability_key if policy else None
        if sealed is None or wrapped.wrapped_availability is None:
            return None
        availability = self._sealer.open(
            sealed, purpose="availability-key", subject=wrapped.policy_id
        )
        return aes_kwp_unwrap(availability, wrapped.wrapped_availability)

    def unwrap_with_availability_key(self, generation_id: str) -> bytes:
        """Operator recovery path (files workload): use the availability key on purpose."""
        _, wrapped = self.wrapped_generation(generation_id)
        key = self._unwrap_with_availability(wrapped)
        if key is None:
            raise KeyAccessDenied("The availability key of this policy has been destroyed.")
        wrong = key_mismatch(wrapped, key, f"availability key of {wrapped.policy_id}", giver="it")
        if wrong is not None:
            raise KeyProviderUnavailable(wrong)
        return key

    def _record_fallback(self, event: FallbackEvent) -> None:
        # Every fallback record carries a request id, one of its own when the caller had none
        # (system operations, the CLI), so it can be told apart and correlated.
        request_id = event.request_id or self._uuid()
        with self.db.transaction() as session:
            self._audit.append(
                session,
                tenant=session.scalar(
                    select(PolicyRow.tenant_id).where(PolicyRow.id == event.policy_id)
                ),
                principal="customerkey-service",
                operation=FALLBACK_ACTIVITY,
                result="success",
                request_id=request_id,
                details={
                    "PolicyId": event.policy_id,
                    "ScopeKeyVersionId": event.generation_id,
                    "RequestId": request_id,
                    "Reason": event.reason,
                    "Failures": list(event.failures),
                },
            )
