"""Reading and verifying the audit log, each call in its own read transaction."""

from __future__ import annotations

from customerkey.audit import AuditLog, AuditRecord, AuditVerification
from customerkey.errors import Forbidden
from customerkey.storage.database import Database
from customerkey.vault.models import Actor


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
        visible_vaults: set[str] | None = None,
    ) -> list[AuditRecord]:
        """Records, oldest first unless ``newest_first``. Non-operators see only records of
        the vaults in ``visible_vaults``."""
        if not actor.is_operator and visible_vaults is None:
            raise Forbidden("Only an operator can read the whole audit log.")
        with self._db.transaction() as session:
            records = self._audit.records(
                session,
                vault=vault.lower() if vault else None,
                operation=operation,
                since_seq=since_seq,
                limit=limit,
                newest_first=newest_first,
            )
        if visible_vaults is not None and not actor.is_operator:
            records = [r for r in records if r.vault in visible_vaults]
        return records

    def verify(self, actor: Actor) -> AuditVerification:
        if not actor.is_operator:
            raise Forbidden("Only an operator can verify the whole audit chain.")
        with self._db.transaction() as session:
            return self._audit.verify(session)
