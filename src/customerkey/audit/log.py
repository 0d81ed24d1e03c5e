"""The append-only, hash-chained audit log.

Each record's ``hash`` is SHA-256 over the previous record's hash and the record's canonical
JSON (sequence number, time, principal, operation, result, vault, key, version, request id,
details, and, when set, its scope: tenant id, vault id, actor and subject object ids; records
written before scopes existed hash without them, so their hashes still verify). Records are
numbered 1, 2, 3, ... without gaps, so ``verify`` detects a record that was edited (its hash
no longer matches), deleted or inserted (the numbering or the chain breaks) or reordered (the
chain breaks). The first record chains to 64 zeros.

Appends happen inside the caller's transaction, so a state change and its record commit
together. On PostgreSQL an advisory transaction lock serialises appends; SQLite's
``BEGIN IMMEDIATE`` already does.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import func, insert, select, text
from sqlalchemy.orm import Session

from customerkey.clock import Clock
from customerkey.storage.models import AuditRow

GENESIS_HASH = "0" * 64
_PG_AUDIT_LOCK = 0x636B_6175  # "ckau"
_AUDIT_TABLE = AuditRow.metadata.tables[AuditRow.__tablename__]
# A prepared Core INSERT, not session.add + flush: the unit of work cost more than the rest of
# an append, and nothing reads the row back through the session's identity map.
_INSERT = insert(_AUDIT_TABLE)
_HEAD = select(AuditRow.seq, AuditRow.hash).order_by(AuditRow.seq.desc()).limit(1)


@dataclass(frozen=True)
class AuditRecord:
    seq: int
    time: datetime
    principal: str
    operation: str
    result: str
    vault: str | None
    key: str | None
    version: str | None
    request_id: str | None
    details: Mapping[str, Any]
    prev_hash: str
    hash: str
    tenant: str | None = None
    vault_id: str | None = None
    actor_id: str | None = None
    subject_id: str | None = None


@dataclass(frozen=True)
class AuditScope:
    """Whom a record concerns: read by the visibility rules (``identity.authorize``)."""

    tenant: str | None = None
    vault_id: str | None = None
    actor_id: str | None = None
    subject_id: str | None = None


@dataclass(frozen=True)
class AuditVerification:
    ok: bool
    records: int
    problems: Sequence[str] = field(default_factory=tuple)


def _canonical(
    seq: int,
    time: datetime,
    principal: str,
    operation: str,
    result: str,
    vault: str | None,
    key: str | None,
    version: str | None,
    request_id: str | None,
    details: Mapping[str, Any],
    scope: AuditScope | None = None,
) -> bytes:
    body: dict[str, Any] = {
        "seq": seq,
        "time": time.isoformat(timespec="microseconds"),
        "principal": principal,
        "operation": operation,
        "result": result,
        "vault": vault,
        "key": key,
        "version": version,
        "request_id": request_id,
        "details": details,
    }
    if scope is not None:
        for name in ("tenant", "vault_id", "actor_id", "subject_id"):
            value = getattr(scope, name)
            if value is not None:
                body[name] = value
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def chain_hash(prev_hash: str, canonical: bytes) -> str:
    return hashlib.sha256(prev_hash.encode("ascii") + canonical).hexdigest()


def _row_hash(row: AuditRow, prev_hash: str) -> str:
    return chain_hash(
        prev_hash,
        _canonical(
            row.seq,
            row.time,
            row.principal,
            row.operation,
            row.result,
            row.vault,
            row.key,
            row.version,
            row.request_id,
            row.details,
            AuditScope(row.tenant, row.vault_id, row.actor_id, row.subject_id),
        ),
    )


class AuditLog:
    def __init__(self, clock: Clock) -> None:
        self._clock = clock

    def append(
        self,
        session: Session,
        *,
        principal: str,
        operation: str,
        result: str = "success",
        vault: str | None = None,
        key: str | None = None,
        version: str | None = None,
        request_id: str | None = None,
        details: Mapping[str, Any] | None = None,
        tenant: str | None = None,
        vault_id: str | None = None,
        actor_id: str | None = None,
        subject_id: str | None = None,
    ) -> AuditRecord:
        if session.get_bind().dialect.name == "postgresql":
            session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_AUDIT_LOCK})
        head = session.execute(_HEAD).first()
        seq, prev = (head[0] + 1, head[1]) if head else (1, GENESIS_HASH)
        # Round-trip through JSON so what we hash is exactly what the database gives back.
        clean_details: dict[str, Any] = json.loads(json.dumps(dict(details or {}), default=str))
        # Databases keep microseconds at most; hash what will be read back.
        now = self._clock.now()
        scope = AuditScope(tenant, vault_id, actor_id, subject_id)
        digest = chain_hash(
            prev,
            _canonical(
                seq,
                now,
                principal,
                operation,
                result,
                vault,
                key,
                version,
                request_id,
                clean_details,
                scope,
            ),
        )
        session.execute(
            _INSERT,
            {
                "seq": seq,
                "time": now,
                "principal": principal,
                "operation": operation,
                "result": result,
                "vault": vault,
                "key": key,
                "version": version,
                "request_id": request_id,
                "details": clean_details,
                "prev_hash": prev,
                "hash": digest,
                "tenant": tenant,
                "vault_id": vault_id,
                "actor_id": actor_id,
                "subject_id": subject_id,
            },
        )
        return AuditRecord(
            seq=seq,
            time=now,
            principal=principal,
            operation=operation,
            result=result,
            vault=vault,
            key=key,
            version=version,
            request_id=request_id,
            details=clean_details,
            prev_hash=prev,
            hash=digest,
            tenant=tenant,
            vault_id=vault_id,
            actor_id=actor_id,
            subject_id=subject_id,
        )

    def records(
        self,
        session: Session,
        *,
        vault: str | None = None,
        operation: str | None = None,
        since_seq: int = 0,
        limit: int | None = None,
        newest_first: bool = False,
    ) -> list[AuditRecord]:
        query = select(AuditRow).where(AuditRow.seq > since_seq)
        if vault is not None:
            query = query.where(AuditRow.vault == vault)
        if operation is not None:
            query = query.where(AuditRow.operation == operation)
        query = query.order_by(AuditRow.seq.desc() if newest_first else AuditRow.seq)
        if limit is not None:
            query = query.limit(limit)
        return [_to_record(row) for row in session.scalars(query)]

    @staticmethod
    def record_of(row: AuditRow) -> AuditRecord:
        return _to_record(row)

    def count(self, session: Session) -> int:
        return int(session.scalar(select(func.count()).select_from(AuditRow)) or 0)

    def verify(self, session: Session) -> AuditVerification:
        problems: list[str] = []
        prev = GENESIS_HASH
        expected_seq = 1
        count = 0
        for row in _iter_rows(session):
            count += 1
            if row.seq != expected_seq:
                problems.append(f"record {row.seq}: expected sequence number {expected_seq}")
            if row.prev_hash != prev:
                problems.append(f"record {row.seq}: does not chain to the record before it")
            if _row_hash(row, row.prev_hash) != row.hash:
                problems.append(f"record {row.seq}: contents do not match its hash")
            prev = row.hash
            expected_seq = row.seq + 1
            if len(problems) >= 20:
                problems.append("stopped after 20 problems")
                break
        return AuditVerification(ok=not problems, records=count, problems=tuple(problems))


def _iter_rows(session: Session, batch: int = 2000) -> Iterator[AuditRow]:
    last = 0
    while True:
        rows = list(
            session.scalars(
                select(AuditRow).where(AuditRow.seq > last).order_by(AuditRow.seq).limit(batch)
            )
        )
        if not rows:
            return
        yield from rows
        last = rows[-1].seq


def _to_record(row: AuditRow) -> AuditRecord:
    return AuditRecord(
        seq=row.seq,
        time=row.time,
        principal=row.principal,
        operation=row.operation,
        result=row.result,
        vault=row.vault,
        key=row.key,
        version=row.version,
        request_id=row.request_id,
        details=row.details,
        prev_hash=row.prev_hash,
        hash=row.hash,
        tenant=row.tenant,
        vault_id=row.vault_id,
        actor_id=row.actor_id,
        subject_id=row.subject_id,
    )
