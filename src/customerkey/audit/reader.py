"""Reading and verifying the audit log, each call in its own read transaction.

Who sees which record is decided by ``identity.authorize`` (``Action.AUDIT_READ``) from each
record's scope: the operator sees everything; a tenant admin the records of its tenant; a
principal holding a grant only its own calls and the changes to its own grant on vaults it
holds a grant on. A vault is followed by its immutable id, so a vault created under the name
of a purged one starts with an empty history. Records written before scopes existed
(migration 0007) are the operator's only.

Every front end reads through here: ``page`` (the admin API: records after a sequence number,
a bounded page), ``newest`` (the CLI: the newest records, shown oldest first), ``records``,
``export`` (every record after a sequence number, streamed in pages, under the same rules).
Verifying the whole chain (against signed checkpoints, if given) and publishing a checkpoint
are the operator's.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from sqlalchemy import or_, select

from customerkey.actor import Actor
from customerkey.audit.checkpoints import Checkpoint, InvalidCheckpoint, read_checkpoints
from customerkey.audit.log import AuditLog, AuditRecord, AuditVerification
from customerkey.audit.publisher import CheckpointPublisher
from customerkey.errors import BadParameter, Forbidden
from customerkey.identity import authorize as authz
from customerkey.storage.database import Database
from customerkey.storage.models import AccessPolicyRow, AuditRow, VaultRow

# The largest page ``page`` returns, and the first sequence number past any the log can hold.
MAX_PAGE = 1000
SEQ_END = 2**62
# Records ``export`` reads per read transaction.
EXPORT_BATCH = 500


class AuditService:
    def __init__(
        self, db: Database, audit: AuditLog, checkpoints: CheckpointPublisher | None = None
    ) -> None:
        self._db = db
        self._audit = audit
        self._checkpoints = checkpoints

    def records(
        self,
        actor: Actor,
        *,
        vault: str | None = None,
        operation: str | None = None,
        since_seq: int = 0,
        limit: int | None = None,
        newest_first: bool = False,
    ) -> list[AuditRecord]:
        """The records ``actor`` may read, oldest first unless ``newest_first``."""
        with self._db.read() as session:
            if authz.allowed(actor, authz.Action.PLATFORM_OPERATE, authz.Platform()):
                return self._audit.records(
                    session,
                    vault=vault.lower() if vault else None,
                    operation=operation,
                    since_seq=since_seq,
                    limit=limit,
                    newest_first=newest_first,
                )
            granted = frozenset(
                session.scalars(
                    select(AccessPolicyRow.vault_id).where(
                        AccessPolicyRow.object_id == (actor.object_id or "-")
                    )
                )
            )
            query = select(AuditRow).where(
                AuditRow.seq > since_seq,
                or_(
                    AuditRow.tenant == actor.tenant,
                    AuditRow.vault_id.in_(granted),
                    AuditRow.actor_id == (actor.object_id or "-"),
                    AuditRow.subject_id == (actor.object_id or "-"),
                ),
            )
            if vault is not None:
                live = session.scalar(select(VaultRow.id).where(VaultRow.name == vault.lower()))
                query = query.where(AuditRow.vault_id == (live or "-"))
            if operation is not None:
                query = query.where(AuditRow.operation == operation)
            query = query.order_by(AuditRow.seq.desc() if newest_first else AuditRow.seq)
            records: list[AuditRecord] = []
            for row in session.scalars(query):
                entry = authz.AuditEntry(
                    tenant=row.tenant,
                    vault_id=row.vault_id,
                    actor_object_id=row.actor_id,
                    subject_object_id=row.subject_id,
                    reader_vault_ids=granted,
                )
                if authz.allowed(actor, authz.Action.AUDIT_READ, entry):
                    records.append(self._audit.record_of(row))
                    if limit is not None and len(records) >= limit:
                        break
            return records

    def page(
        self,
        actor: Actor,
        *,
        vault: str | None = None,
        operation: str | None = None,
        since_seq: int = 0,
        limit: int = 100,
    ) -> list[AuditRecord]:
        """Up to ``limit`` (1 to ``MAX_PAGE``) records ``actor`` may read after ``since_seq``,
        oldest first; a caller pages on with the last record's ``seq``."""
        if not 1 <= limit <= MAX_PAGE:
            raise BadParameter(f"limit must be between 1 and {MAX_PAGE}.")
        if since_seq < 0:
            raise BadParameter("since must be a sequence number (0 or more).")
        if since_seq >= SEQ_END:
            raise BadParameter("since is past the end of the audit log.")
        return self.records(
            actor, vault=vault, operation=operation, since_seq=since_seq, limit=limit
        )

    def newest(
        self,
        actor: Actor,
        *,
        vault: str | None = None,
        operation: str | None = None,
        limit: int,
    ) -> list[AuditRecord]:
        """The newest ``limit`` records ``actor`` may read, oldest first."""
        records = self.records(
            actor, vault=vault, operation=operation, limit=limit, newest_first=True
        )
        return records[::-1]

    def export(self, actor: Actor, *, since_seq: int = 0) -> Iterator[AuditRecord]:
        """Every record ``actor`` may read after ``since_seq``, oldest first, read a page at a
        time (never the whole log at once)."""
        if since_seq < 0:
            raise BadParameter("since must be a sequence number (0 or more).")
        last = since_seq
        while last < SEQ_END:
            batch = self.records(actor, since_seq=last, limit=EXPORT_BATCH)
            yield from batch
            if len(batch) < EXPORT_BATCH:
                return
            last = batch[-1].seq

    def verify(self, actor: Actor, *, checkpoint_file: Path | None = None) -> AuditVerification:
        """Walk the whole chain; with ``checkpoint_file`` also require every signed checkpoint
        in it (each checked against this installation's key first, ``InvalidCheckpoint`` if
        one is not) to be found in the chain."""
        if not authz.allowed(actor, authz.Action.AUDIT_VERIFY, authz.Platform()):
            raise Forbidden("Only an operator can verify the whole audit chain.")
        heads: dict[int, str] = {}
        if checkpoint_file is not None:
            for checkpoint in read_checkpoints(checkpoint_file):
                self._publisher().signer.check(checkpoint)
                if heads.setdefault(checkpoint.seq, checkpoint.head) != checkpoint.head:
                    raise InvalidCheckpoint(
                        f"Two signed checkpoints name different heads for record {checkpoint.seq}."
                    )
        with self._db.transaction() as session:
            return self._audit.verify(session, checkpoints=heads if checkpoint_file else None)

    def checkpoint(self, actor: Actor) -> Checkpoint:
        """Publish a signed checkpoint of the chain's head to every sink now."""
        if not authz.allowed(actor, authz.Action.AUDIT_VERIFY, authz.Platform()):
            raise Forbidden("Only an operator can publish audit checkpoints.")
        return self._publisher().publish()

    def public_key_pem(self) -> str:
        """The checkpoint signing key's public half (PEM), for whoever keeps the checkpoints."""
        return self._publisher().signer.public_key_pem()

    def _publisher(self) -> CheckpointPublisher:
        if self._checkpoints is None:
            raise BadParameter("This audit service was opened without checkpoint signing.")
        return self._checkpoints
