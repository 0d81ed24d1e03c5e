"""Key generations of a data encryption policy, and unwrapping their DEP keys.

A generation is a random DEP key wrapped by both root keys of its DEP and by the DEP's
availability key, stored with its key check value (``customerkey.crypto.key_check``) so a vault
that later unwraps it to a wrong key is caught. The first is made with the DEP
(``keys.deps``); every later one comes through ``new_generation_with_keys`` (a refresh onto the
newest root key versions, a files key roll, a recovery onto new keys). Retiring a generation
destroys its wrapped keys. ``generation_key`` unwraps under the availability rules of
``keys.resolver``: a cached key first, then either root key, then (mail only) the availability
key, each fallback audited.

``GenerationsMixin`` is the half of ``DataEncryptionPolicies`` that owns this; the other half
(``keys.deps``) owns the policies themselves.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime

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
    KeyAccessDenied,
    KeyProviderUnavailable,
    NotFound,
)
from customerkey.keyprovider.base import KeyProvider, KeyUri
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
from customerkey.storage.models import GenerationRow, PolicyRow
from customerkey.vault.models import Actor


class PolicyNotFound(NotFound):
    code = "DataEncryptionPolicyNotFound"


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


class GenerationsMixin:
    """Generations and DEP keys (the state is ``DataEncryptionPolicies``')."""

    db: Database
    cache: DepKeyCache
    resolver: DepKeyResolver
    _clock: Clock
    _rng: Rng
    _audit: AuditLog
    _sealer: MasterSealer
    _providers: Mapping[str, KeyProvider]

    def provider(self, kind: str) -> KeyProvider:
        return self._providers[kind]

    def _uuid(self) -> str:
        return str(uuid.UUID(bytes=self._rng.token_bytes(16), version=4))

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

    def generations(self, policy_id: str) -> list[PolicyGeneration]:
        with self.db.transaction() as session:
            rows = session.scalars(
                select(GenerationRow)
                .where(GenerationRow.policy_id == policy_id)
                .order_by(GenerationRow.seq)
            )
            return [_generation(r) for r in rows]

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
