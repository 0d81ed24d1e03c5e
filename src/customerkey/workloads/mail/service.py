"""The mail workload: mail users, mailboxes and their items, always stored encrypted.

Key hierarchy (DESIGN.md): each mailbox has a mailbox key (AES-256), wrapped (AES-KWP) by the
DEP key of the policy generation protecting it, or by the tenant's service-managed key when
it has no customer DEP. Each item is one envelope (``crypto.aead``) under the mailbox key,
bound to tenant, mailbox, item and key ids, in a blob named ``mail/<mailbox>/<item>.<key seq>``.
The database holds ids, folder, sizes, a date and wrapped keys; never content.

Changing a mailbox's DEP when it holds content (or ``$null``, back to service-managed keys)
makes a new mailbox key that new writes use at once, and a ``mailbox-rekey`` job that
re-encrypts every item under it and then destroys the old key. Items are always read under
whichever key seals them, so the mailbox stays readable throughout.

Length: not split yet. The seams are the banner comments (recipients, content, re-key, refresh,
purge); the split behind this facade is the remaining step of the architecture issue (15).
"""

from __future__ import annotations

import hashlib
import io
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from sqlalchemy import ColumnElement, func, select
from sqlalchemy.orm import Session

from customerkey.audit.log import AuditLog
from customerkey.clock import Clock
from customerkey.crypto.aead import open_stream, seal, seal_stream
from customerkey.crypto.sealing import MasterSealer
from customerkey.errors import BadParameter, Conflict, Forbidden, NotFound
from customerkey.identity import authorize as authz
from customerkey.jobs.queue import Job, JobFailed, JobQueue, pid_alive
from customerkey.jobs.registry import payload_dict, payload_of
from customerkey.jobs.runner import run_job_here
from customerkey.jobs.worker import Handler, JobContext, PermanentJobError, Worker
from customerkey.keys.containers import ContainerKeyDestroyed, ContainerKeys, ContainerKeyTable
from customerkey.keys.deps import PolicyService
from customerkey.keys.purge import PurgeSteps, run_purge
from customerkey.keys.purge_approval import approving_actor
from customerkey.rng import Rng
from customerkey.storage.blobs import LocalBlobStore
from customerkey.storage.database import Database
from customerkey.storage.models import (
    GenerationRow,
    MailboxKeyRow,
    MailboxRow,
    MailItemRow,
    PolicyRow,
    PrincipalRow,
    TenantRow,
)
from customerkey.vault.models import Actor
from customerkey.workloads.mail import blobs as blob_names
from customerkey.workloads.mail import formats
from customerkey.workloads.mail.jobs import (
    IMPORT_JOB,
    PURGE_JOB,
    REFRESH_JOB,
    REKEY_JOB,
    ImportPayload,
    PurgePayload,
    RefreshPayload,
    RekeyPayload,
)

REFRESH_BATCH = 5000  # default of Settings.refresh_batch
IMPORT_BATCH = 200
# Item ids of imported messages: uuid5(IMPORT_NAMESPACE, "<job id>/<position in the store>").
IMPORT_NAMESPACE = uuid.UUID("5d0f3c52-9a0e-4c7b-8b3e-6f1c2a9d4e71")
REKEY_BATCH = 100  # default of Settings.rekey_batch
Progress = Callable[[int, int | None], None]


class MailboxNotFound(NotFound):
    code = "MailboxNotFound"


class ItemNotFound(NotFound):
    code = "ItemNotFound"


@dataclass(frozen=True)
class Mailbox:
    id: str
    tenant: str
    upn: str
    alias: str
    display_name: str
    kind: str  # user | shared | mailuser
    state: str
    policy_id: str | None
    policy_name: str | None
    created_at: datetime

    @property
    def recipient_type(self) -> str:
        return {"user": "UserMailbox", "shared": "SharedMailbox", "mailuser": "MailUser"}[self.kind]


@dataclass(frozen=True)
class MailboxStatistics:
    mailbox: Mailbox
    item_count: int
    total_size: int
    is_encrypted: bool
    data_encryption_policy_id: str | None
    job_state: str | None
    percent_complete: float | None


@dataclass(frozen=True)
class MailItem:
    id: str
    seq: int
    folder: str
    size: int
    received_at: datetime
    key_id: str


@dataclass(frozen=True)
class ImportResult:
    mailbox: str
    imported: int
    bytes: int


def _digest(message: bytes) -> str:
    return hashlib.sha256(message).hexdigest()


def item_context(tenant: str, mailbox_id: str, item_id: str, key_id: str) -> dict[str, str]:
    return {"tenant": tenant, "mailbox": mailbox_id, "item": item_id, "key": key_id}


MAILBOX_KEYS = ContainerKeyTable(MailboxKeyRow, live=lambda: MailboxKeyRow.state != "destroyed")


class MailUsage:
    """Key usage: the mailboxes and items under a DEP generation (shown for every kind)."""

    policy_kinds: frozenset[str] | None = None
    labels = ("Mailboxes", "Items")

    def count(self, session: Session, generation_id: str) -> dict[str, int]:
        mailboxes = session.scalar(
            select(func.count(func.distinct(MailboxKeyRow.mailbox_id))).where(
                MailboxKeyRow.generation_id == generation_id, MailboxKeyRow.state != "destroyed"
            )
        )
        items = session.scalar(
            select(func.count())
            .select_from(MailItemRow)
            .join(MailboxKeyRow, MailboxKeyRow.id == MailItemRow.key_id)
            .where(MailboxKeyRow.generation_id == generation_id)
        )
        return {"Mailboxes": int(mailboxes or 0), "Items": int(items or 0)}

    def describe(self, counts: Mapping[str, int]) -> str:
        return f"{counts['Mailboxes']} mailbox(es) and {counts['Items']} item(s)"


class MailService:
    def __init__(
        self,
        db: Database,
        *,
        clock: Clock,
        rng: Rng,
        audit: AuditLog,
        policies: PolicyService,
        sealer: MasterSealer,
        blobs: LocalBlobStore,
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

    def job_handlers(self) -> dict[str, Handler]:
        return {
            IMPORT_JOB: self.run_import,
            REKEY_JOB: self.run_rekey,
            REFRESH_JOB: self.run_refresh,
            PURGE_JOB: self.run_purge,
        }

    # ------------------------------------------------------------------ helpers

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
    def _find(session: Session, identity: str) -> MailboxRow:
        ident = identity.strip().lower()
        row = session.scalar(select(MailboxRow).where(MailboxRow.upn == ident))
        if row is None:
            row = session.get(MailboxRow, ident)
        if row is None:
            matches = list(session.scalars(select(MailboxRow).where(MailboxRow.alias == ident)))
            if len(matches) == 1:
                row = matches[0]
        if row is None or row.state in ("deleted", "purged"):
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

    def _wrap_new_key(
        self, tenant: str, generation_id: str | None, *, system: bool = False
    ) -> tuple[bytes, bytes]:
        """A fresh mailbox key and its wrapped form (needs the vault: no transaction open)."""
        return self.keys.new_key(tenant, generation_id, system=system)

    def unwrap_mailbox_key(
        self,
        tenant: str,
        generation_id: str | None,
        wrapped: bytes | None,
        *,
        system: bool = False,
        request_id: str | None = None,
    ) -> bytes:
        return self.keys.unwrap(
            tenant, generation_id, wrapped, system=system, request_id=request_id
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

    # ------------------------------------------------------------------ recipients

    def create_mailbox(
        self,
        actor: Actor,
        tenant: str,
        upn: str,
        *,
        alias: str | None = None,
        display_name: str | None = None,
        kind: str = "user",
        policy: str | None = None,
    ) -> Mailbox:
        """A mailbox (kind user or shared) or a mail user not yet migrated (kind mailuser)."""
        tenant = tenant.lower()
        self._may_manage(actor, tenant)
        if kind not in ("user", "shared", "mailuser"):
            raise BadParameter("A mailbox kind is user, shared or mailuser.")
        upn_l = upn.strip().lower()
        if "@" not in upn_l or upn_l.startswith("@") or " " in upn_l:
            raise BadParameter(f"'{upn}' is not a user principal name (name@domain).")
        with self.db.transaction() as session:
            tenant_row = session.get(TenantRow, tenant)
            if tenant_row is None:
                raise NotFound(f"No tenant named '{tenant}'.")
            if upn_l.split("@", 1)[1] != tenant_row.mail_domain:
                raise BadParameter(
                    f"'{upn}' is not in tenant '{tenant}''s mail domain {tenant_row.mail_domain}."
                )
            if session.scalar(select(MailboxRow).where(MailboxRow.upn == upn_l)) is not None:
                raise Conflict(f"A mailbox or mail user '{upn_l}' already exists.")
        policy_id, generation_id = self._resolve_policy(tenant, policy)
        _, wrapped = self._wrap_new_key(tenant, generation_id)
        now = self._clock.now()
        with self.db.transaction() as session:
            if session.scalar(select(MailboxRow).where(MailboxRow.upn == upn_l)) is not None:
                raise Conflict(f"A mailbox or mail user '{upn_l}' already exists.")
            row = MailboxRow(
                id=self._uuid(),
                tenant_id=tenant,
                upn=upn_l,
                alias=(alias or upn_l.split("@", 1)[0]).lower(),
                display_name=display_name or upn_l.split("@", 1)[0],
                kind=kind,
                state="active",
                policy_id=policy_id,
                created_at=now,
                updated_at=now,
            )
            session.add(row)
            session.flush()
            key = self._add_key(session, row, generation_id, wrapped)
            row.current_key_id = key.id
            self._audit.append(
                session,
                tenant=tenant,
                principal=actor.audit_name,
                actor_id=actor.object_id or None,
                operation="MailUserCreate" if kind == "mailuser" else "MailboxCreate",
                request_id=actor.request_id,
                details={"mailbox": row.id, "upn": upn_l, "kind": kind, "policy": policy_id},
            )
            return self._view(session, row)

    def get(self, actor: Actor, identity: str) -> Mailbox:
        with self.db.transaction() as session:
            row = self._find(session, identity)
            self._may_use(session, actor, row)
            return self._view(session, row)

    def list_mailboxes(
        self, actor: Actor, tenant: str, *, kind: str | None = None
    ) -> list[Mailbox]:
        tenant = tenant.lower()
        self._may_manage(actor, tenant)
        with self.db.transaction() as session:
            query = select(MailboxRow).where(
                MailboxRow.tenant_id == tenant, MailboxRow.state.not_in(("deleted", "purged"))
            )
            if kind is not None:
                query = query.where(MailboxRow.kind == kind)
            return [self._view(session, r) for r in session.scalars(query.order_by(MailboxRow.upn))]

    def set_policy(self, actor: Actor, identity: str, policy: str | None) -> Job | None:
        """Assign a DEP (or None: service-managed keys). Returns the re-key job, if one was
        needed (the mailbox has content under another key)."""
        with self.db.transaction() as session:
            row = self._find(session, identity)
            self._may_manage(actor, row.tenant_id)
            tenant = row.tenant_id
        policy_id, generation_id = self._resolve_policy(tenant, policy)
        return self._rekey(actor, identity, policy_id, generation_id, reason="policy-change")

    def move(self, actor: Actor, identity: str) -> Job:
        """New-MoveRequest: a new mailbox key under the mailbox's DEP's current generation
        (or the service key), all content re-encrypted, the old key destroyed."""
        with self.db.transaction() as session:
            row = self._find(session, identity)
            self._may_manage(actor, row.tenant_id)
            tenant, policy_id = row.tenant_id, row.policy_id
        generation_id = None
        if policy_id is not None:
            _, generation_id = self.policies.assignable(tenant, policy_id, "mailbox")
        job = self._rekey(actor, identity, policy_id, generation_id, reason="move", always=True)
        assert job is not None
        return job

    def move_status(self, actor: Actor, identity: str) -> Job | None:
        """Get-MoveRequest: the newest re-key job of the mailbox."""
        with self.db.transaction() as session:
            row = self._find(session, identity)
            self._may_manage(actor, row.tenant_id)
            mailbox_id = row.id
        return self.jobs.latest_for(mailbox_id, REKEY_JOB)

    def _rekey(
        self,
        actor: Actor,
        identity: str,
        policy_id: str | None,
        generation_id: str | None,
        *,
        reason: str,
        always: bool = False,
    ) -> Job | None:
        with self.db.transaction() as session:
            row = self._find(session, identity)
            if self.jobs.active_for(session, REKEY_JOB, row.id) is not None:
                raise Conflict(
                    f"Mailbox '{row.upn}' is being re-encrypted; wait for that job to finish."
                )
            tenant = row.tenant_id
        _, wrapped = self._wrap_new_key(tenant, generation_id)
        with self.db.transaction() as session:
            row = self._find(session, identity)
            old_keys = list(
                session.scalars(
                    select(MailboxKeyRow).where(
                        MailboxKeyRow.mailbox_id == row.id, MailboxKeyRow.state != "destroyed"
                    )
                )
            )
            items = int(
                session.scalar(
                    select(func.count())
                    .select_from(MailItemRow)
                    .where(MailItemRow.mailbox_id == row.id)
                )
                or 0
            )
            key = self._add_key(session, row, generation_id, wrapped)
            row.current_key_id = key.id
            row.policy_id = policy_id
            row.updated_at = self._clock.now()
            job: Job | None = None
            if items == 0 and not always:
                for old in old_keys:
                    self._destroy_key(old)
            else:
                for old in old_keys:
                    old.state = "retiring"
                job = self.jobs.enqueue(
                    session,
                    REKEY_JOB,
                    row.id,
                    created_by=actor,
                    payload=payload_dict(RekeyPayload(key_id=key.id, reason=reason)),
                    total=items,
                )
            self._audit.append(
                session,
                tenant=row.tenant_id,
                principal=actor.audit_name,
                actor_id=actor.object_id or None,
                operation="MailboxMoveRequest"
                if reason == "move"
                else "MailboxSetDataEncryptionPolicy",
                request_id=actor.request_id,
                details={
                    "mailbox": row.id,
                    "policy": policy_id,
                    "generation": generation_id,
                    "job": job.id if job else None,
                },
            )
            return job

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

    # ------------------------------------------------------------------ content

    def _current_key(self, session: Session, row: MailboxRow) -> MailboxKeyRow:
        key = session.get(MailboxKeyRow, row.current_key_id) if row.current_key_id else None
        if key is None or key.wrapped is None:
            raise Conflict(f"Mailbox '{row.upn}' has no usable key.")
        return key

    def start_import(
        self,
        actor: Actor,
        identity: str,
        path: Path,
        *,
        fmt: str | None = None,
        again: bool = False,
    ) -> Job:
        """Queue the import of a mail store (mbox file, Maildir, folder of .eml files) into a
        mailbox as a durable job; returns it.

        Importing is idempotent, so that running the command again after its process was
        killed never stores a message twice: while an import of the same store (same path,
        unchanged on disk) into the same mailbox is unfinished, its job is returned (and
        resumes); when the mailbox's last import was of that store and succeeded, that
        finished job is returned, unless ``again`` asks for the messages to be added once
        more."""
        path = path.expanduser().resolve()
        fmt = fmt or formats.detect_format(path)
        if fmt not in formats.FORMATS:
            raise BadParameter(f"Unknown mail format '{fmt}'; use mbox, maildir or eml.")
        if not path.exists():
            raise BadParameter(f"{path} does not exist.")
        signature = formats.source_signature(path, fmt)
        with self.db.transaction() as session:
            row = self._find(session, identity)
            self._may_use(session, actor, row)
            self._current_key(session, row)
            upn, mailbox_id = row.upn, row.id
            active = self.jobs.active_for(session, IMPORT_JOB, mailbox_id)
        source = {"path": str(path), "signature": signature}
        if active is not None:
            if {k: active.payload.get(k) for k in source} == source:
                return self.jobs.get(active.id)
            raise Conflict(
                f"An import into '{upn}' is in progress (job {active.id}, from "
                f"{active.payload.get('path')}); wait for it to finish before starting "
                "another."
            )
        last = self.jobs.latest_for(mailbox_id, IMPORT_JOB)
        if (
            not again
            and last is not None
            and last.state == "succeeded"
            and {k: last.payload.get(k) for k in source} == source
        ):
            return last
        # Counting reads the store once more, outside any transaction (it may be large).
        total = formats.count_messages(path, fmt) or 0
        with self.db.transaction() as session:
            row = self._find(session, identity)
            if self.jobs.active_for(session, IMPORT_JOB, mailbox_id) is not None:
                raise Conflict(f"An import into '{upn}' has just been started by someone else.")
            return self.jobs.enqueue(
                session,
                IMPORT_JOB,
                mailbox_id,
                payload=payload_dict(
                    ImportPayload(
                        path=str(path),
                        format=fmt,
                        signature=signature,
                        principal=actor.principal_id,
                        request_id=actor.request_id,
                    )
                ),
                created_by=actor,
                total=total,
            )

    def import_messages(
        self,
        actor: Actor,
        identity: str,
        path: Path,
        *,
        fmt: str | None = None,
        again: bool = False,
        progress: Progress | None = None,
    ) -> ImportResult:
        """Import a mail store here and now (the import job, run in this process); see
        ``start_import``. Raises what stopped it; running it again resumes."""
        job = self.start_import(actor, identity, path, fmt=fmt, again=again)
        if job.finished:
            return self.import_result(job)
        worker = Worker(
            self.jobs,
            {IMPORT_JOB: self.run_import},
            on_progress=(
                (lambda _job, done, total: progress(done, total if total >= 0 else None))
                if progress
                else None
            ),
        )
        ended = run_job_here(worker, job.id)  # a killed run of this import resumes here
        if ended is None:
            raise Conflict(f"Import job {job.id} is being run by another worker.")
        return self.import_result(ended)

    def import_result(self, job: Job) -> ImportResult:
        """What an import job stored (so far, until it has succeeded)."""
        if job.state == "failed":
            raise JobFailed(f"Import job {job.id} failed: {job.error}")
        if job.state != "succeeded":
            done = int(job.checkpoint.get("consumed", 0))
            raise JobFailed(
                f"Import job {job.id} stopped after {done} of {job.progress_total} messages: "
                f"{job.error or 'it has not finished'}. Run the same import again to resume "
                "it, or let a worker retry it."
            )
        return ImportResult(
            mailbox=job.target,
            imported=int(job.checkpoint.get("consumed", 0)),
            bytes=int(job.checkpoint.get("bytes", 0)),
        )

    def run_import(self, job: Job, context: JobContext) -> None:
        """The import job: stream the store, one message in memory at a time, and commit a
        batch of items together with the checkpoint that counts them. A resumed attempt
        skips the messages the checkpoint counts, after checking that the store is the one
        the job began with, and gives each message the item id it had in every attempt
        (derived from the job and the message's position), so that the blob a killed attempt
        wrote before its batch committed is overwritten, not left behind."""
        payload = payload_of(job, ImportPayload)
        path, fmt = Path(payload.path), payload.format
        principal, request_id = payload.principal, payload.request_id
        consumed = int(job.checkpoint.get("consumed", 0))
        total_bytes = int(job.checkpoint.get("bytes", 0))
        if not path.exists():
            raise PermanentJobError(
                f"{path} is gone; {consumed} of {job.progress_total} messages were imported."
            )
        if formats.source_signature(path, fmt) != payload.signature:
            raise PermanentJobError(
                f"{path} changed since the import began; {consumed} of "
                f"{job.progress_total} messages were imported."
            )
        with self.db.transaction() as session:
            row = session.get(MailboxRow, job.target)
            if row is None or row.state != "active":
                raise PermanentJobError(f"Mailbox {job.target} is gone.")
            key_row = self._current_key(session, row)
            tenant, mailbox_id = row.tenant_id, row.id
            key_id, key_seq = key_row.id, key_row.seq
            generation_id, wrapped = key_row.generation_id, key_row.wrapped
        mailbox_key = self.unwrap_mailbox_key(
            tenant, generation_id, wrapped, request_id=str(request_id) if request_id else None
        )
        pending: list[MailItemRow] = []
        last_digest = str(job.checkpoint.get("last_digest", ""))
        last_message = b""

        def flush() -> None:
            nonlocal last_digest
            if not pending:
                return
            last_digest = _digest(last_message)  # only a batch's last message is checked
            with self.db.transaction() as session:
                self._require_live_key(session, key_id)
                next_seq = int(
                    session.scalar(
                        select(func.max(MailItemRow.seq)).where(
                            MailItemRow.mailbox_id == mailbox_id
                        )
                    )
                    or 0
                )
                for offset, item in enumerate(pending, start=1):
                    item.seq = next_seq + offset
                session.add_all(pending)
                mailbox = session.get(MailboxRow, mailbox_id)
                assert mailbox is not None
                if mailbox.kind == "mailuser":
                    mailbox.kind = "user"
                mailbox.updated_at = self._clock.now()
                self._audit.append(
                    session,
                    tenant=mailbox.tenant_id,
                    principal=principal,
                    operation="MailboxImport",
                    request_id=str(request_id) if request_id else None,
                    details={"mailbox": mailbox_id, "items": len(pending), "job": job.id},
                )
                context.checkpoint(
                    done=consumed,
                    total=max(job.progress_total, consumed),
                    checkpoint={
                        "consumed": consumed,
                        "bytes": total_bytes,
                        "last_digest": last_digest,
                    },
                    session=session,
                )
            pending.clear()

        now = self._clock.now()
        for index, (folder, message) in enumerate(formats.read_messages(path, fmt)):
            if index < consumed:
                if index == consumed - 1 and last_digest and _digest(message) != last_digest:
                    raise PermanentJobError(
                        f"{path} no longer holds the messages already imported; {consumed} "
                        f"of {job.progress_total} messages were imported."
                    )
                continue
            item_id = str(uuid.uuid5(IMPORT_NAMESPACE, f"{job.id}/{index}"))
            blob = blob_names.item_blob(mailbox_id, item_id, key_seq)
            sealed = seal(
                mailbox_key,
                message,
                key_id=key_id,
                key_version=str(key_seq),
                context=item_context(tenant, mailbox_id, item_id, key_id),
                rng=self._rng,
            )
            self.blobs.put_bytes(blob, sealed)
            pending.append(
                MailItemRow(
                    id=item_id,
                    mailbox_id=mailbox_id,
                    seq=0,  # numbered when the batch commits
                    folder=folder[:256],
                    key_id=key_id,
                    blob=blob,
                    size=len(message),
                    sealed_size=len(sealed),
                    received_at=formats.received_time(message, now),
                    created_at=now,
                )
            )
            consumed = index + 1
            total_bytes += len(message)
            last_message = message
            if len(pending) >= self.import_batch:
                flush()
        flush()
        if consumed != job.progress_total:
            context.checkpoint(done=consumed, total=consumed)

    def add_message(
        self, actor: Actor, identity: str, message: bytes, folder: str = "Inbox"
    ) -> MailItem:
        """Deliver one message (the write path applications use)."""
        with self.db.transaction() as session:
            row = self._find(session, identity)
            self._may_use(session, actor, row)
            key_row = self._current_key(session, row)
            tenant, mailbox_id, key_id, key_seq = row.tenant_id, row.id, key_row.id, key_row.seq
            generation_id, wrapped = key_row.generation_id, key_row.wrapped
        mailbox_key = self.unwrap_mailbox_key(
            tenant, generation_id, wrapped, request_id=actor.request_id
        )
        item_id = self._uuid()
        blob = blob_names.item_blob(mailbox_id, item_id, key_seq)
        sealed = seal(
            mailbox_key,
            message,
            key_id=key_id,
            key_version=str(key_seq),
            context=item_context(tenant, mailbox_id, item_id, key_id),
            rng=self._rng,
        )
        self.blobs.put_bytes(blob, sealed)
        now = self._clock.now()
        with self.db.transaction() as session:
            self._require_live_key(session, key_id)
            seq = (
                int(
                    session.scalar(
                        select(func.max(MailItemRow.seq)).where(
                            MailItemRow.mailbox_id == mailbox_id
                        )
                    )
                    or 0
                )
                + 1
            )
            item = MailItemRow(
                id=item_id,
                mailbox_id=mailbox_id,
                seq=seq,
                folder=folder[:256],
                key_id=key_id,
                blob=blob,
                size=len(message),
                sealed_size=len(sealed),
                received_at=formats.received_time(message, now),
                created_at=now,
            )
            session.add(item)
            self._audit.append(
                session,
                tenant=tenant,
                principal=actor.audit_name,
                actor_id=actor.object_id or None,
                operation="MailItemCreate",
                request_id=actor.request_id,
                details={"mailbox": mailbox_id, "item": item_id},
            )
            return MailItem(item.id, item.seq, item.folder, item.size, item.received_at, key_id)

    def list_items(
        self, actor: Actor, identity: str, *, folder: str | None = None
    ) -> list[MailItem]:
        with self.db.transaction() as session:
            row = self._find(session, identity)
            self._may_use(session, actor, row)
            query = select(MailItemRow).where(MailItemRow.mailbox_id == row.id)
            if folder is not None:
                query = query.where(MailItemRow.folder == folder)
            return [
                MailItem(i.id, i.seq, i.folder, i.size, i.received_at, i.key_id)
                for i in session.scalars(query.order_by(MailItemRow.seq))
            ]

    def _open_item(
        self,
        tenant: str,
        item: MailItemRow,
        key: MailboxKeyRow,
        *,
        system: bool,
        request_id: str | None,
    ) -> bytes:
        mailbox_key = self.unwrap_mailbox_key(
            tenant, key.generation_id, key.wrapped, system=system, request_id=request_id
        )
        out = io.BytesIO()
        with self.blobs.open(item.blob) as handle:
            open_stream(
                mailbox_key,
                handle,
                out,
                context=item_context(tenant, item.mailbox_id, item.id, key.id),
            )
        return out.getvalue()

    def _item(self, session: Session, row: MailboxRow, item_ref: str) -> MailItemRow:
        item = session.get(MailItemRow, item_ref)
        if item is None and item_ref.isdigit():
            item = session.scalar(
                select(MailItemRow).where(
                    MailItemRow.mailbox_id == row.id, MailItemRow.seq == int(item_ref)
                )
            )
        if item is None or item.mailbox_id != row.id:
            raise ItemNotFound(f"No item '{item_ref}' in mailbox '{row.upn}'.")
        return item

    def read_item(self, actor: Actor, identity: str, item_ref: str) -> bytes:
        with self.db.transaction() as session:
            row = self._find(session, identity)
            self._may_use(session, actor, row)
            item = self._item(session, row, item_ref)
            key = session.get(MailboxKeyRow, item.key_id)
            assert key is not None
            tenant = row.tenant_id
        return self._open_item(tenant, item, key, system=False, request_id=actor.request_id)

    def delete_item(self, actor: Actor, identity: str, item_ref: str) -> None:
        with self.db.transaction() as session:
            row = self._find(session, identity)
            self._may_use(session, actor, row)
            item = self._item(session, row, item_ref)
            blob = item.blob
            session.delete(item)
            self._audit.append(
                session,
                tenant=row.tenant_id,
                principal=actor.audit_name,
                actor_id=actor.object_id or None,
                operation="MailItemDelete",
                request_id=actor.request_id,
                details={"mailbox": row.id, "item": item.id},
            )
        self.blobs.delete(blob)

    def iter_messages(
        self, actor: Actor, identity: str, *, system: bool = False
    ) -> Iterator[tuple[MailItem, bytes]]:
        """Every item with its plaintext, oldest first, one at a time."""
        items = self.list_items(actor, identity)
        for item in items:
            with self.db.transaction() as session:
                row = session.get(MailItemRow, item.id)
                if row is None:
                    continue
                key = session.get(MailboxKeyRow, row.key_id)
                mailbox = session.get(MailboxRow, row.mailbox_id)
                assert key is not None and mailbox is not None
                tenant = mailbox.tenant_id
            data = self._open_item(tenant, row, key, system=system, request_id=actor.request_id)
            yield item, data

    def export_messages(
        self,
        actor: Actor,
        identity: str,
        path: Path,
        *,
        fmt: str | None = None,
        progress: Progress | None = None,
    ) -> int:
        fmt = fmt or ("eml" if path.suffix == "" and not path.name.endswith(".mbox") else "mbox")
        total = len(self.list_items(actor, identity))  # refused before anything is written
        writer = formats.MessageWriter(path, fmt)
        count = 0
        try:
            for item, data in self.iter_messages(actor, identity):
                writer.add(item.folder, data)
                count += 1
                if progress is not None:
                    progress(count, total)
        except BaseException:
            writer.abort()
            raise
        writer.commit()
        return count

    # ------------------------------------------------------------------ status

    def statistics(self, actor: Actor, identity: str) -> MailboxStatistics:
        with self.db.transaction() as session:
            row = self._find(session, identity)
            self._may_use(session, actor, row)
            count, size = session.execute(
                select(func.count(), func.coalesce(func.sum(MailItemRow.size), 0)).where(
                    MailItemRow.mailbox_id == row.id
                )
            ).one()
            current = session.get(MailboxKeyRow, row.current_key_id) if row.current_key_id else None
            unprotected = session.scalar(
                select(func.count())
                .select_from(MailItemRow)
                .join(MailboxKeyRow, MailboxKeyRow.id == MailItemRow.key_id)
                .where(MailItemRow.mailbox_id == row.id, MailboxKeyRow.generation_id.is_(None))
            )
            customer = current is not None and current.generation_id is not None
            job = self.jobs.active_for(session, REKEY_JOB, row.id)
            percent = None
            if job is not None:
                percent = (
                    100.0 * job.progress_done / job.progress_total if job.progress_total else 0.0
                )
            return MailboxStatistics(
                mailbox=self._view(session, row),
                item_count=int(count),
                total_size=int(size),
                is_encrypted=customer and int(unprotected or 0) == 0,
                data_encryption_policy_id=current.generation_id if customer and current else None,
                job_state=job.state if job is not None else None,
                percent_complete=percent,
            )

    # ------------------------------------------------------------------ re-key job

    def run_rekey(self, job: Job, context: JobContext) -> None:
        """Re-encrypt every item of the mailbox under its current key, then destroy the
        keys it replaced. Batches are idempotent: a new blob is written under a name that
        carries the new key's sequence number, the row switches to it in one transaction,
        and only then is the old blob removed.

        Crash safety: the final step (destroying the old keys, its audit record) commits
        together with a checkpoint that marks it done, so a worker killed after it never
        applies it twice; and a last sweep, repeated by every run that gets that far, removes
        what a killed worker left on disk: old blobs of destroyed keys whose deletion it did
        not reach, and half-written temporary files of writers that are dead."""
        mailbox_id = job.target
        if "keys_destroyed" in job.checkpoint:
            self._sweep_mailbox_blobs(mailbox_id)
            return
        with self.db.transaction() as session:
            row = session.get(MailboxRow, mailbox_id)
            if row is None:
                raise PermanentJobError(f"Mailbox {mailbox_id} no longer exists.")
            target = self._current_key(session, row)
            tenant = row.tenant_id
            total = session.scalar(
                select(func.count())
                .select_from(MailItemRow)
                .where(MailItemRow.mailbox_id == row.id)
            )
        new_key = self._job_key(tenant, target.generation_id, target.wrapped)
        old_keys: dict[str, bytes] = {}
        while True:
            while True:
                with self.db.transaction() as session:
                    batch = list(
                        session.scalars(
                            select(MailItemRow)
                            .where(
                                MailItemRow.mailbox_id == mailbox_id,
                                MailItemRow.key_id != target.id,
                            )
                            .order_by(MailItemRow.seq)
                            .limit(self.rekey_batch)
                        )
                    )
                    keys = {
                        k.id: k
                        for k in session.scalars(
                            select(MailboxKeyRow).where(MailboxKeyRow.mailbox_id == mailbox_id)
                        )
                    }
                    remaining = session.scalar(
                        select(func.count())
                        .select_from(MailItemRow)
                        .where(
                            MailItemRow.mailbox_id == mailbox_id, MailItemRow.key_id != target.id
                        )
                    )
                if not batch:
                    break
                moves: list[tuple[str, str, str, int]] = []
                for item in batch:
                    old = keys[item.key_id]
                    if old.id not in old_keys:
                        old_keys[old.id] = self._job_key(tenant, old.generation_id, old.wrapped)
                    new_blob = blob_names.item_blob(mailbox_id, item.id, target.seq)
                    source_key = old_keys[old.id]

                    def fill(
                        handle: object,
                        item: MailItemRow = item,
                        old_id: str = old.id,
                        source_key: bytes = source_key,
                    ) -> None:
                        plain = io.BytesIO()
                        with self.blobs.open(item.blob) as src:
                            open_stream(
                                source_key,
                                src,
                                plain,
                                context=item_context(tenant, mailbox_id, item.id, old_id),
                            )
                        plain.seek(0)
                        seal_stream(
                            new_key,
                            plain,
                            handle,  # type: ignore[arg-type]
                            key_id=target.id,
                            key_version=str(target.seq),
                            context=item_context(tenant, mailbox_id, item.id, target.id),
                            rng=self._rng,
                        )

                    sealed_size = self.blobs.write(new_blob, fill)
                    moves.append((item.id, item.blob, new_blob, sealed_size))
                done = int(total or 0) - int(remaining or 0) + len(moves)
                with self.db.transaction() as session:
                    for item_id, _, new_blob, sealed_size in moves:
                        item_row = session.get(MailItemRow, item_id)
                        if item_row is None:
                            continue
                        item_row.key_id = target.id
                        item_row.blob = new_blob
                        item_row.sealed_size = sealed_size
                    context.checkpoint(done=done, total=int(total or 0), session=session)
                for _, old_blob, new_blob, _ in moves:
                    if old_blob != new_blob:
                        self.blobs.delete(old_blob)
            with self.db.transaction() as session:
                # A write that picked up an old key just before the re-key began may commit
                # its item after the last batch: then there is more to move, not a key to
                # destroy (the writers refuse once the key is destroyed).
                late = session.scalar(
                    select(func.count())
                    .select_from(MailItemRow)
                    .where(MailItemRow.mailbox_id == mailbox_id, MailItemRow.key_id != target.id)
                )
                if int(late or 0):
                    continue
                destroyed = []
                for key in session.scalars(
                    select(MailboxKeyRow).where(
                        MailboxKeyRow.mailbox_id == mailbox_id,
                        MailboxKeyRow.id != target.id,
                        MailboxKeyRow.state != "destroyed",
                    )
                ):
                    self._destroy_key(key)
                    destroyed.append(key.seq)
                self._audit.append(
                    session,
                    tenant=session.scalar(
                        select(MailboxRow.tenant_id).where(MailboxRow.id == mailbox_id)
                    ),
                    principal="customerkey-service",
                    operation="MailboxRekeyComplete",
                    details={"mailbox": mailbox_id, "key": target.id, "destroyed_keys": destroyed},
                )
                # In the same transaction: a rerun after a crash skips straight to the sweep, and
                # a worker that lost its lease cannot commit this step.
                context.checkpoint(
                    done=int(total or 0),
                    total=int(total or 0),
                    checkpoint={"keys_destroyed": destroyed},
                    session=session,
                )
            break
        self._sweep_mailbox_blobs(mailbox_id)

    def _sweep_mailbox_blobs(self, mailbox_id: str) -> None:
        """Remove a mailbox's files no item can need any more: blobs named after its
        destroyed keys (their items moved on; a crash came before the old blob's deletion),
        and temporary files of blob writers that died (killed in the middle of a write).
        Temporary files of live writers (this process included) are left alone."""
        with self.db.transaction() as session:
            destroyed = set(
                session.scalars(
                    select(MailboxKeyRow.seq).where(
                        MailboxKeyRow.mailbox_id == mailbox_id,
                        MailboxKeyRow.state == "destroyed",
                    )
                )
            )
        if destroyed:
            for name in self.blobs.list(blob_names.mailbox_folder(mailbox_id)):
                parsed = blob_names.parse_item_blob(name)
                if parsed is not None and parsed[2] in destroyed:
                    self.blobs.delete(name)
        self.blobs.sweep_temp_files(blob_names.mailbox_folder(mailbox_id), is_alive=pid_alive)

    # ------------------------------------------------------------------ key roll: refresh

    def refresh(self, actor: Actor, tenant: str, identity: str) -> Job | None:
        """Set-DataEncryptionPolicy -Refresh: a new generation on the newest root-key versions
        and a job re-wrapping every mailbox key of the DEP onto it (no content rewritten).
        Returns None, changing nothing, when neither root key has a newer version."""
        policy_id = self.policies.find_id(actor, tenant, identity, kind="mailbox")
        with self.db.transaction() as session:
            running = self.jobs.active_for(session, REFRESH_JOB, policy_id)
            if running is not None:
                raise Conflict(
                    f"A refresh of this policy is already running (job {running.id}); wait for "
                    "it to finish."
                )
        queued: list[Job] = []

        def enqueue(session: Session, generation: GenerationRow) -> None:
            if self.jobs.active_for(session, REFRESH_JOB, policy_id) is not None:
                raise Conflict("A refresh of this policy is already running.")
            queued.append(
                self.jobs.enqueue(
                    session,
                    REFRESH_JOB,
                    policy_id,
                    created_by=actor,
                    payload=payload_dict(RefreshPayload(generation_id=generation.id)),
                    total=self._keys_to_rewrap(session, policy_id, generation.id),
                )
            )

        generation = self.policies.new_generation(actor, policy_id, in_transaction=enqueue)
        if generation is None:
            return None
        return queued[0]

    @staticmethod
    def _rewrap_scope(session: Session, policy_id: str, generation_id: str) -> ColumnElement[bool]:
        """The mailbox keys a refresh onto ``generation_id`` moves: those on the policy's
        other generations."""
        old = list(
            session.scalars(
                select(GenerationRow.id).where(
                    GenerationRow.policy_id == policy_id, GenerationRow.id != generation_id
                )
            )
        )
        return MailboxKeyRow.generation_id.in_(old)

    def _keys_to_rewrap(self, session: Session, policy_id: str, generation_id: str) -> int:
        return self.keys.count_to_rewrap(
            session, self._rewrap_scope(session, policy_id, generation_id)
        )

    def run_refresh(self, job: Job, context: JobContext) -> None:
        """Re-wrap every live mailbox key of the policy onto the job's generation
        (``ContainerKeys.rewrap``: resumable, the checkpoint in each batch's transaction),
        then retire the old generations and record the end, once."""
        policy_id = job.target
        target_id = payload_of(job, RefreshPayload).generation_id
        if job.checkpoint.get("complete"):
            return
        with self.db.transaction() as session:
            policy = session.get(PolicyRow, policy_id)
            if policy is None:
                raise PermanentJobError(f"Policy {policy_id} no longer exists.")
            tenant = policy.tenant_id
            scope = self._rewrap_scope(session, policy_id, target_id)
        done = self.keys.rewrap(
            scope=scope,
            target_id=target_id,
            old_kek=lambda generation_id: self.keys.kek(tenant, generation_id, system=True),
            context=context,
            batch=self.refresh_batch,
        )
        self.keys.finish_rewrap(
            context,
            policy_id=policy_id,
            target_id=target_id,
            done=done,
            operation="DataEncryptionPolicyRefreshComplete",
            details={"tenant": tenant},
        )

    def retire_unused_generations(self, session: Session, policy_id: str) -> list[str]:
        """Retire every old generation that no live mailbox key depends on any more."""
        return self.keys.retire_unused_generations(session, policy_id)

    # ------------------------------------------------------------------ data purge path

    def approve_purge(self, actor: Actor, tenant: str, identity: str, approver: str) -> Job:
        """The second tenant admin signs off; the purge job then destroys the DEP's keys."""
        tenant = tenant.lower()
        policy = self.policies.get(actor, tenant, identity, kind="mailbox")
        if policy.state != "purge-requested":
            raise Conflict(
                f"Policy '{policy.name}' has no permanent data purge requested (state "
                f"{policy.state})."
            )
        with self.db.transaction() as session:
            requested = session.get(PolicyRow, policy.id)
            assert requested is not None
            signer = approving_actor(
                session,
                actor,
                approver,
                tenant=tenant,
                requested_by_id=requested.purge_requested_by_id,
                requested_by_name=requested.purge_requested_by,
                requested_at=requested.purge_requested_at,
            )
            approver_id = signer.principal_id
            if self.jobs.active_for(session, PURGE_JOB, policy.id) is not None:
                raise Conflict("The purge of this policy is already running.")
            row = session.get(PolicyRow, policy.id)
            assert row is not None
            row.state = "purging"
            row.updated_at = self._clock.now()
            job = self.jobs.enqueue(
                session,
                PURGE_JOB,
                policy.id,
                created_by=signer,
                payload=payload_dict(PurgePayload(approver=approver_id)),
            )
            self._audit.append(
                session,
                principal=signer.audit_name,
                operation="DataEncryptionPolicyPurgeApproved",
                request_id=actor.request_id,
                details={"policy": policy.id, "approver": approver_id, "job": job.id},
                tenant=tenant,
                actor_id=signer.object_id or None,
            )
            return job

    def run_purge(self, job: Job, context: JobContext) -> None:
        """Destroy every mailbox key, mailbox and blob of the DEP, then every generation and
        the availability key (``keys.purge``: idempotent, one mailbox per transaction)."""
        run_purge(
            job,
            context,
            PurgeSteps(
                containers=self._purge_targets,
                purge_container=self._purge_mailbox,
                delete_blobs=lambda mailbox_id: self.blobs.delete_prefix(
                    blob_names.mailbox_folder(mailbox_id)
                ),
                container_operation="MailboxPurged",
                final_operation="DataEncryptionPolicyPurged",
                count_name="mailboxes",
            ),
            db=self.db,
            audit=self._audit,
            policies=self.policies,
            clock=self._clock,
        )

    @staticmethod
    def _purge_targets(session: Session, policy: PolicyRow, generation_ids: list[str]) -> list[str]:
        """The DEP's mailboxes, and every mailbox with a key under one of its generations."""
        assigned = session.scalars(select(MailboxRow.id).where(MailboxRow.policy_id == policy.id))
        keyed = session.scalars(
            select(MailboxKeyRow.mailbox_id).where(MailboxKeyRow.generation_id.in_(generation_ids))
        )
        return sorted(set(assigned) | set(keyed))

    def _purge_mailbox(self, session: Session, mailbox_id: str) -> dict[str, object] | None:
        mailbox = session.get(MailboxRow, mailbox_id)
        assert mailbox is not None
        if mailbox.state == "purged":
            return None
        for key in session.scalars(
            select(MailboxKeyRow).where(MailboxKeyRow.mailbox_id == mailbox_id)
        ):
            self._destroy_key(key)
        for item in session.scalars(
            select(MailItemRow).where(MailItemRow.mailbox_id == mailbox_id)
        ):
            session.delete(item)
        mailbox.state = "purged"
        mailbox.updated_at = self._clock.now()
        return {"mailbox": mailbox_id, "upn": mailbox.upn}
