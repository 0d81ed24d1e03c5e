"""The mail service's shared part: its constructor and state, and the helpers every concern uses.

It owns the mailbox-key table (``MAILBOX_KEYS``) and its ``ContainerKeys``, the permission
checks (``_may_manage``: a tenant admin; ``_may_use``: a tenant admin or the mailbox's owner),
the mailbox lookup and view (``_find``, ``_view``), and the mailbox keys' life: made,
wrapped and unwrapped by ``self.keys`` (a job unwraps through ``_job_key``, for which a
destroyed key is a permanent failure), stored (``_add_key``), the current one
(``_current_key``), the check a writer makes before storing under one
(``_require_live_key``), and destroyed (``_destroy_key``). The
concerns (``mailboxes``, ``rekey``, ``imports``, ``items``, ``refresh``, ``purge``) each
inherit from ``MailServiceBase``; ``service.MailService`` combines them."""

from __future__ import annotations

import uuid

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from customerkey.audit.log import AuditLog
from customerkey.clock import Clock
from customerkey.crypto.sealing import MasterSealer
from customerkey.errors import Conflict, Forbidden
from customerkey.identity import authorize as authz
from customerkey.jobs.queue import JobQueue
from customerkey.jobs.worker import PermanentJobError
from customerkey.keys.containers import ContainerKeyDestroyed, ContainerKeys, ContainerKeyTable
from customerkey.keys.deps import DataEncryptionPolicies
from customerkey.rng import Rng
from customerkey.storage.blob_store import BlobStore
from customerkey.storage.database import Database
from customerkey.storage.models import MailboxKeyRow, MailboxRow, PolicyRow, PrincipalRow
from customerkey.vault.models import Actor
from customerkey.workloads.mail.models import (
    IMPORT_BATCH,
    REFRESH_BATCH,
    REKEY_BATCH,
    Mailbox,
    MailboxNotFound,
)

MAILBOX_KEYS = ContainerKeyTable(MailboxKeyRow, live=lambda: MailboxKeyRow.state != "destroyed")


class MailServiceBase:
    """State and helpers shared by every part of ``MailService``."""

    def __init__(
        self,
        db: Database,
        *,
        clock: Clock,
        rng: Rng,
        audit: AuditLog,
        policies: DataEncryptionPolicies,
        sealer: MasterSealer,
        blobs: BlobStore,
        jobs: JobQueue,
        rekey_batch: int = REKEY_BATCH,
        refresh_batch: int = REFRESH_BATCH,
        import_batch: int = IMPORT_BATCH,
    ) -> None:
        if rekey_batch < 1 or refresh_batch < 1 or import_batch < 1:
            raise ValueError("batch sizes must be at least 1")
        self.db = db
        self._clock = clock
        self._rng = rng
        self._audit = audit
        self.policies = policies
        self._sealer = sealer
        self.blobs = blobs
        self.jobs = jobs
        self.rekey_batch = rekey_batch  # items re-encrypted per transaction (run_rekey)
        self.refresh_batch = refresh_batch  # mailbox keys re-wrapped per transaction
        self.import_batch = import_batch  # imported messages per transaction (run_import)
        self.keys = ContainerKeys(
            db,
            MAILBOX_KEYS,
            policies=policies,
            sealer=sealer,
            audit=audit,
            clock=clock,
            rng=rng,
        )

    def _uuid(self) -> str:
        return str(uuid.UUID(bytes=self._rng.token_bytes(16), version=4))

    @staticmethod
    def _may_manage(actor: Actor, tenant: str) -> None:
        if not authz.allowed(actor, authz.Action.TENANT_ADMINISTER, authz.Tenant(tenant)):
            raise Forbidden(f"'{actor.principal_id}' is not an administrator of '{tenant}'.")

    @staticmethod
    def _may_use(session: Session, actor: Actor, row: MailboxRow) -> None:
        """A tenant admin of the mailbox's tenant, or its owner: the user principal of that
        tenant whose UPN the mailbox has (decided by object id)."""
        owner = None
        if actor.object_id and actor.kind == "user":  # only a user can be the owner
            principal = session.get(PrincipalRow, row.upn)  # by primary key
            if principal is not None and (principal.tenant, principal.kind) == (
                row.tenant_id,
                "user",
            ):
                owner = principal.object_id
        if authz.allowed(actor, authz.Action.MAILBOX_OPEN, authz.Mailbox(row.tenant_id, owner)):
            return
        raise Forbidden(f"'{actor.principal_id}' may not open mailbox '{row.upn}'.")

    @staticmethod
    def _find(session: Session, actor: Actor, identity: str) -> MailboxRow:
        """The mailbox ``identity`` names (UPN, id, or an alias unique among the tenants the
        caller may look into). A mailbox of a tenant the caller may not look into is not
        found, exactly as a missing one, so nobody can probe another tenant's mailboxes."""

        def visible(row: MailboxRow) -> bool:
            return authz.allowed(actor, authz.Action.TENANT_LOOKUP, authz.Tenant(row.tenant_id))

        ident = identity.strip().lower()
        row = session.scalar(select(MailboxRow).where(MailboxRow.upn == ident))
        if row is None:
            row = session.get(MailboxRow, ident)
        if row is None:
            aliased = session.scalars(select(MailboxRow).where(MailboxRow.alias == ident))
            matches = [m for m in aliased if visible(m)]
            if len(matches) == 1:
                row = matches[0]
        if row is None or row.state in ("deleted", "purged") or not visible(row):
            raise MailboxNotFound(f"The mailbox or mail user '{identity}' was not found.")
        return row

    def _view(self, session: Session, row: MailboxRow) -> Mailbox:
        policy_name = None
        if row.policy_id:
            policy = session.get(PolicyRow, row.policy_id)
            policy_name = policy.name if policy else None
        return Mailbox(
            id=row.id,
            tenant=row.tenant_id,
            upn=row.upn,
            alias=row.alias,
            display_name=row.display_name,
            kind=row.kind,
            state=row.state,
            policy_id=row.policy_id,
            policy_name=policy_name,
            created_at=row.created_at,
        )

    def _job_key(self, tenant: str, generation_id: str | None, wrapped: bytes | None) -> bytes:
        """A mailbox key a job needs; its destruction fails the job for good."""
        try:
            return self.keys.unwrap(tenant, generation_id, wrapped, system=True)
        except ContainerKeyDestroyed as exc:
            raise PermanentJobError(str(exc)) from exc

    def _add_key(
        self, session: Session, mailbox: MailboxRow, generation_id: str | None, wrapped: bytes
    ) -> MailboxKeyRow:
        seq = session.scalar(
            select(func.max(MailboxKeyRow.seq)).where(MailboxKeyRow.mailbox_id == mailbox.id)
        )
        row = MailboxKeyRow(
            id=self._uuid(),
            mailbox_id=mailbox.id,
            seq=int(seq or 0) + 1,
            generation_id=generation_id,
            wrapped=wrapped,
            state="active",
            created_at=self._clock.now(),
        )
        session.add(row)
        session.flush()
        return row

    def _resolve_policy(self, tenant: str, policy: str | None) -> tuple[str | None, str | None]:
        if policy is None:
            return None, None
        return self.policies.assignable(tenant, policy, "mailbox")

    def _current_key(self, session: Session, row: MailboxRow) -> MailboxKeyRow:
        key = session.get(MailboxKeyRow, row.current_key_id) if row.current_key_id else None
        if key is None or key.wrapped is None:
            raise Conflict(f"Mailbox '{row.upn}' has no usable key.")
        return key

    @staticmethod
    def _require_live_key(session: Session, key_id: str) -> None:
        """Refuse to store items under a key a finished re-key has destroyed meanwhile."""
        key = session.get(MailboxKeyRow, key_id)
        if key is None or key.state == "destroyed":
            raise Conflict(
                "The mailbox was re-keyed while this write was in progress; nothing was stored "
                "for it. Retry the write."
            )

    def _destroy_key(self, key: MailboxKeyRow) -> None:
        key.wrapped = None
        key.state = "destroyed"
        key.destroyed_at = self._clock.now()
