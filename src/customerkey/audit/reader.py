"""Reading and verifying the audit log, each call in its own read transaction.

Who sees which record is decided by ``identity.authorize`` (``Action.AUDIT_READ``) from each
record's scope: the operator sees everything; a tenant admin the records of its tenant; a
principal holding a grant only its own calls and the changes to its own grant on vaults it
holds a grant on. A vault is followed by its immutable id, so a vault created under the name
of a purged one starts with an empty history. Records written before scopes existed
(migration 0007) are the operator's only.

Every front end reads through here: ``page`` (the admin API: records after a sequence number,
a bounded page), ``newest`` (the CLI: the newest records, shown oldest first), ``records``.
"""

from __future__ import annotations

from sqlalchemy import or_, select

from customerkey.actor import Actor
from customerkey.audit.log import AuditLog, AuditRecord, AuditVerification
from customerkey.errors import BadParameter, Forbidden
from customerkey.identity import authorize as authz
from customerkey.storage.database import Database
from customerkey.storage.models import AccessPolicyRow, AuditRow, VaultRow

# The largest page ``page`` returns, and the first sequence number past any the log can hold.
MAX_PAGE = 1000
SEQ_END = 2**62


class AuditService:
    def __init__(self, db: Database, audit: AuditLog) -> None:
        self._db = db
        self._audit = audit

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

    def verify(self, actor: Actor) -> AuditVerification:
        if not authz.allowed(actor, authz.Action.AUDIT_VERIFY, authz.Platform()):
            raise Forbidden("Only an operator can verify the whole audit chain.")
        with self._db.transaction() as session:
            return self._audit.verify(session)
