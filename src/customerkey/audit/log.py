"""The append-only, chained audit log: the writer and the whole-chain check.

What each record's ``hash`` is and how a chain is checked is ``audit.chain``'s: records
written since migration 0010 are keyed (HMAC-SHA256 under a key derived from the master
key), older ones stay plain SHA-256 and still verify. Records are numbered 1, 2, 3, ...
without gaps, so ``verify`` detects a record that was edited (its hash no longer matches),
deleted or inserted (the numbering or the chain breaks), reordered (the chain breaks) or
downgraded from keyed to plain; given signed checkpoints (``audit.checkpoints``) it also
detects a tail cut off and a chain rewritten after them.

Appends happen inside the caller's transaction, so a state change and its record commit
together. On PostgreSQL an advisory transaction lock serialises appends; SQLite's
``BEGIN IMMEDIATE`` already does. The first append of a transaction reads the head (its
number, hash and chain version); later appends in the same transaction (a group commit,
``storage.group_commit``, writes many records in one) chain onto the record written before
them, which the transaction remembers, so each costs one insert. Before an append, the
``gate`` (``audit.sinks.SinkHealth``) may refuse the operation while the audit sinks cannot be
written (fail closed); a caller that writes its record in a shared transaction asks it first
(``admit``), so a refusal fails its operation alone.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from sqlalchemy import func, insert, select, text
from sqlalchemy.orm import Session

from customerkey.audit.chain import GENESIS_HASH, KEYED, PLAIN, ChainKey, check_chain, record_hash
from customerkey.clock import Clock
from customerkey.errors import CustomerKeyError
from customerkey.storage.models import AuditRow

__all__ = ["GENESIS_HASH", "AuditLog", "AuditRecord", "AuditVerification"]
_PG_AUDIT_LOCK = 0x636B_6175  # "ckau"
_AUDIT_TABLE = AuditRow.metadata.tables[AuditRow.__tablename__]
# A prepared Core INSERT, not session.add + flush: the unit of work cost more than the rest of
# an append, and nothing reads the row back through the session's identity map.
_INSERT = insert(_AUDIT_TABLE)
_HEAD = select(AuditRow.seq, AuditRow.hash, AuditRow.chain).order_by(AuditRow.seq.desc()).limit(1)
# Called with (operation, result) before a record is appended; raises to refuse it.
Gate = Callable[[str, str], None]
# session.info key: (the transaction, seq, hash, chain) of the record it appended last.
_HEAD_INFO = "customerkey_audit_head"


class AuditChainKeyMissing(CustomerKeyError):
    """A writer without the chain key was asked to append to a keyed chain: a plain record
    there would read as a downgrade, so it refuses (a wiring fault, not the caller's)."""

    code = "AuditChainKeyMissing"


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
    chain: int = PLAIN


@dataclass(frozen=True)
class AuditVerification:
    ok: bool
    records: int
    problems: Sequence[str] = field(default_factory=tuple)
    # Records in the plain (pre-0010) chain; the first keyed record (None: none is keyed).
    legacy: int = 0
    keyed_from: int | None = None
    # Signed checkpoints given, and how many the chain still matches.
    checkpoints: int = 0
    checkpoints_matched: int = 0
    head_seq: int = 0
    head: str = GENESIS_HASH


class AuditLog:
    def __init__(
        self, clock: Clock, *, chain_key: ChainKey | None = None, gate: Gate | None = None
    ) -> None:
        self._clock = clock
        self._key = chain_key
        self._gate = gate
        self._chain = KEYED if chain_key is not None else PLAIN

    def admit(self, operation: str, result: str = "success") -> None:
        """Ask the gate now whether a record of ``operation`` may be written (raises to refuse):
        for a record appended later with ``admitted=True``."""
        if self._gate is not None:
            self._gate(operation, result)

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
        admitted: bool = False,
    ) -> AuditRecord:
        if self._gate is not None and not admitted:
            self._gate(operation, result)
        transaction = session.get_transaction()
        known = session.info.get(_HEAD_INFO)
        if known is not None and known[0] is transaction:
            head: Sequence[Any] | None = known[1:]
        else:
            if session.get_bind().dialect.name == "postgresql":
                session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_AUDIT_LOCK})
            head = session.execute(_HEAD).first()
        seq, prev = (head[0] + 1, head[1]) if head else (1, GENESIS_HASH)
        if head is not None and head[2] != PLAIN and self._chain == PLAIN:
            raise AuditChainKeyMissing("The audit chain is keyed; this writer has no chain key.")
        # Round-trip through JSON so what we hash is exactly what the database gives back.
        clean_details: dict[str, Any] = json.loads(json.dumps(dict(details or {}), default=str))
        # Databases keep microseconds at most; hash what will be read back.
        unhashed = AuditRecord(
            seq=seq,
            time=self._clock.now(),
            principal=principal,
            operation=operation,
            result=result,
            vault=vault,
            key=key,
            version=version,
            request_id=request_id,
            details=clean_details,
            prev_hash=prev,
            hash="",
            tenant=tenant,
            vault_id=vault_id,
            actor_id=actor_id,
            subject_id=subject_id,
            chain=self._chain,
        )
        record = replace(unhashed, hash=record_hash(unhashed, prev, self._chain, self._key))
        session.execute(
            _INSERT,
            {
                "seq": seq,
                "time": record.time,
                "principal": principal,
                "operation": operation,
                "result": result,
                "vault": vault,
                "key": key,
                "version": version,
                "request_id": request_id,
                "details": clean_details,
                "prev_hash": prev,
                "hash": record.hash,
                "tenant": tenant,
                "vault_id": vault_id,
                "actor_id": actor_id,
                "subject_id": subject_id,
                "chain": self._chain,
            },
        )
        session.info[_HEAD_INFO] = (transaction, seq, record.hash, self._chain)
        return record

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

    def head(self, session: Session) -> tuple[int, str]:
        """The newest record's number and hash ((0, genesis) for an empty log)."""
        head = session.execute(_HEAD).first()
        return (int(head[0]), str(head[1])) if head else (0, GENESIS_HASH)

    def verify(
        self, session: Session, *, checkpoints: Mapping[int, str] | None = None
    ) -> AuditVerification:
        """Walk the whole chain; ``checkpoints`` (``{seq: head hash}``, from signed checkpoints
        already checked) must each still be found in it."""
        check = check_chain(_iter_rows(session), self._key, checkpoints)
        return AuditVerification(
            ok=not check.problems,
            records=check.records,
            problems=tuple(check.problems),
            legacy=check.legacy,
            keyed_from=check.keyed_from,
            checkpoints=len(checkpoints or {}),
            checkpoints_matched=check.checkpoints_matched,
            head_seq=check.head_seq,
            head=check.head,
        )


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
        chain=row.chain,
    )
