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

Generations, and unwrapping their DEP keys under the availability rules, are
``keys.generations``' half of ``DataEncryptionPolicies``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from customerkey.audit.log import AuditLog
from customerkey.clock import Clock
from customerkey.crypto.sealing import MasterSealer
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
from customerkey.keys.generations import (
    GenerationsMixin,
    PolicyGeneration,
    PolicyNotFound,
    current_generation_row,
)
from customerkey.keys.resolver import (
    DepKeyResolver,
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


class DataEncryptionPolicies(GenerationsMixin):
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
