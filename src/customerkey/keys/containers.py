"""Container keys: the per-container keys (a mailbox's, a site's) every workload wraps
under DEP generations, and the one implementation of what happens to them.

A container key is AES-256, stored only wrapped (AES-KWP) under the key of a DEP generation,
or under the tenant's service-managed key while ``generation_id`` is null. A workload names
its key table with a ``ContainerKeyTable`` (which ORM class, which rows are live) and gets:

- ``new_key`` / ``unwrap``: make and open keys (a destroyed key raises ``ContainerKeyDestroyed``
  to every caller, reader or job, with nothing said about the content);
- ``rewrap``: move every live key in a scope onto a new generation without touching content:
  keyset paging by key id, one guarded ``executemany`` UPDATE per batch (a key destroyed or
  moved meanwhile is left alone) and the job checkpoint in the same transaction, so a job
  killed anywhere resumes from what is still on an old generation and never reports progress
  that did not commit;
- ``finish_rewrap``: retire every generation no live key depends on and write the completion
  record, once: the checkpoint marking it done commits with it;
- ``retire_unused_generations`` and ``live_keys`` for key usage.

Vault calls (generation keys) happen outside transactions; this module opens its own.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, bindparam, func, select, update
from sqlalchemy.orm import Session

from customerkey.audit.log import AuditLog
from customerkey.clock import Clock
from customerkey.crypto.sealing import MasterSealer
from customerkey.crypto.wrap import aes_kwp_unwrap, aes_kwp_wrap
from customerkey.errors import Conflict
from customerkey.jobs.worker import JobContext
from customerkey.keys.deps import DataEncryptionPolicies
from customerkey.rng import Rng
from customerkey.storage.database import Database
from customerkey.storage.models import GenerationRow, PolicyRow

SERVICE_PRINCIPAL = "customerkey-service"


class ContainerKeyDestroyed(Conflict):
    """The key was destroyed: its container was re-keyed meanwhile (what it sealed now sits
    under the new key, so the caller may retry) or purged (then nothing is left)."""


@dataclass(frozen=True)
class ContainerKeyTable:
    """Which ORM class holds a workload's container keys and which of its rows are live.

    The class has ``id``, ``generation_id``, ``wrapped`` and ``state`` columns; ``touch``
    names a timestamp column to set on every re-wrap, if the table has one."""

    row: Any
    live: Callable[[], ColumnElement[bool]]
    touch: str | None = None


class ContainerKeys:
    def __init__(
        self,
        db: Database,
        table: ContainerKeyTable,
        *,
        policies: DataEncryptionPolicies,
        sealer: MasterSealer,
        audit: AuditLog,
        clock: Clock,
        rng: Rng,
    ) -> None:
        self.db = db
        self.table = table
        self.policies = policies
        self._sealer = sealer
        self._audit = audit
        self._clock = clock
        self._rng = rng

    # ------------------------------------------------------------------ one key

    def kek(
        self,
        tenant: str,
        generation_id: str | None,
        *,
        system: bool = False,
        request_id: str | None = None,
    ) -> bytes:
        """The key wrapping a container key: the generation's DEP key, or the tenant's
        service-managed key for ``None``."""
        if generation_id is None:
            return self._sealer.service_key(tenant)
        return self.policies.generation_key(generation_id, system=system, request_id=request_id)

    def new_key(
        self, tenant: str, generation_id: str | None, *, system: bool = False
    ) -> tuple[bytes, bytes]:
        """A fresh container key and its wrapped form (needs the vault: no transaction open)."""
        key = self._rng.token_bytes(32)
        return key, aes_kwp_wrap(self.kek(tenant, generation_id, system=system), key)

    def unwrap(
        self,
        tenant: str,
        generation_id: str | None,
        wrapped: bytes | None,
        *,
        system: bool = False,
        request_id: str | None = None,
    ) -> bytes:
        if wrapped is None:
            raise ContainerKeyDestroyed(
                "This key has been destroyed: its container was re-keyed or purged meanwhile."
            )
        kek = self.kek(tenant, generation_id, system=system, request_id=request_id)
        return aes_kwp_unwrap(kek, wrapped)

    # ------------------------------------------------------------------ re-wrap

    def count_to_rewrap(self, session: Session, scope: ColumnElement[bool]) -> int:
        row = self.table.row
        return int(
            session.scalar(select(func.count()).select_from(row).where(self.table.live(), scope))
            or 0
        )

    def rewrap(
        self,
        *,
        scope: ColumnElement[bool],
        target_id: str,
        old_kek: Callable[[str | None], bytes],
        context: JobContext,
        batch: int,
    ) -> int:
        """Re-wrap every live key matching ``scope`` (which must exclude keys already on
        ``target_id``) onto the target generation; returns how many keys the job has moved
        in all its runs. ``old_kek(generation_id)`` gives the key wrapping a key today."""
        row = self.table.row
        with self.db.transaction() as session:
            remaining = self.count_to_rewrap(session, scope)
        done = int(context.job.checkpoint.get("done", 0))
        total = remaining + done
        new_kek = self.policies.generation_key(target_id, system=True)
        keks: dict[str | None, bytes] = {}
        values: dict[str, Any] = {"generation_id": target_id, "wrapped": bindparam("b_wrapped")}
        if self.table.touch is not None:
            values[self.table.touch] = bindparam("b_now")
        guarded = (
            update(row)
            .where(
                row.id == bindparam("b_id"),
                row.generation_id.is_not_distinct_from(bindparam("b_old")),
                self.table.live(),
            )
            .values(**values)
        )
        last_id = ""
        while True:
            with self.db.transaction() as session:
                rows = session.execute(
                    select(row.id, row.generation_id, row.wrapped)
                    .where(self.table.live(), scope, row.id > last_id)
                    .order_by(row.id)
                    .limit(batch)
                ).all()
            if not rows:
                return done
            last_id = rows[-1][0]
            params: list[dict[str, object]] = []
            now = self._clock.now()
            for key_id, generation_id, wrapped in rows:
                if wrapped is None:
                    continue
                if generation_id not in keks:
                    keks[generation_id] = old_kek(generation_id)
                key = aes_kwp_unwrap(keks[generation_id], wrapped)
                params.append(
                    {
                        "b_id": key_id,
                        "b_old": generation_id,
                        "b_wrapped": aes_kwp_wrap(new_kek, key),
                        "b_now": now,
                    }
                )
            with self.db.transaction() as session:
                if params:
                    session.connection().execute(guarded, params)
                done += len(rows)
                context.checkpoint(
                    done=done, total=max(total, done), checkpoint={"done": done}, session=session
                )

    def finish_rewrap(
        self,
        context: JobContext,
        *,
        policy_id: str,
        target_id: str,
        done: int,
        operation: str,
        details: Mapping[str, object],
    ) -> None:
        """Retire the generations nothing depends on any more and record the end, in one
        transaction with the checkpoint that marks the job complete."""
        with self.db.transaction() as session:
            retired = self.retire_unused_generations(session, policy_id, keep=target_id)
            self._audit.append(
                session,
                tenant=session.scalar(select(PolicyRow.tenant_id).where(PolicyRow.id == policy_id)),
                principal=SERVICE_PRINCIPAL,
                operation=operation,
                details={
                    **details,
                    "policy": policy_id,
                    "generation": target_id,
                    "rewrapped": done,
                    "retired_generations": retired,
                },
            )
            # Progress was reported with the last batch; this only marks the end as done.
            context.checkpoint(checkpoint={"done": done, "complete": True}, session=session)

    # ------------------------------------------------------------------ generations

    def live_keys(self, session: Session, generation_id: str) -> int:
        row = self.table.row
        return int(
            session.scalar(
                select(func.count())
                .select_from(row)
                .where(row.generation_id == generation_id, self.table.live())
            )
            or 0
        )

    def retire_unused_generations(
        self, session: Session, policy_id: str, *, keep: str | None = None
    ) -> list[str]:
        """Retire every generation of the policy that no live key depends on, except the
        current (newest) one and ``keep``; returns the retired ids."""
        generations = list(
            session.scalars(
                select(GenerationRow)
                .where(GenerationRow.policy_id == policy_id, GenerationRow.retired_at.is_(None))
                .order_by(GenerationRow.seq)
            )
        )
        retired: list[str] = []
        for generation in generations[:-1]:
            if generation.id == keep or self.live_keys(session, generation.id):
                continue
            if self.policies.retire_generation(
                session, generation.id, reason="no container key depends on it"
            ):
                retired.append(generation.id)
        return retired
