"""Mail store imports (mbox, Maildir, a folder of .eml files) as durable, resumable jobs:
stage the store into the blob store and queue its import (``start_import``, idempotent; the
staging is ``staging``'s), run it here (``import_messages``), read what it stored
(``import_result``), and the job itself (``run_import``: batches of items committed with the
checkpoint that counts them, read from the staged copy, so any worker on any host runs it).

What is not a mail store is refused before anything is queued (``formats.check_store``). A
cancelled import keeps what it stored, and the same import started again goes on from there.
An mbox message's ``From_`` date becomes its received time (its Date header otherwise)."""

from __future__ import annotations

import functools
import hashlib
import uuid
from collections.abc import Iterable, Iterator
from datetime import datetime
from functools import cached_property
from pathlib import Path

from sqlalchemy import func, select

from customerkey.crypto.aead import seal
from customerkey.errors import BadParameter, Conflict
from customerkey.jobs.queue import Job, JobFailed
from customerkey.jobs.registry import payload_dict, payload_of
from customerkey.jobs.runner import run_job_here
from customerkey.jobs.worker import JobContext, PermanentJobError, Worker
from customerkey.keys.containers import ContainerKeyDestroyed
from customerkey.storage.models import MailboxRow, MailItemRow
from customerkey.vault.models import Actor
from customerkey.workloads.mail import blobs as blob_names
from customerkey.workloads.mail import formats
from customerkey.workloads.mail.base import MailServiceBase
from customerkey.workloads.mail.jobs import IMPORT_JOB, ImportPayload
from customerkey.workloads.mail.models import IMPORT_NAMESPACE, ImportResult, Progress, item_context
from customerkey.workloads.mail.staging import (
    ImportStaging,
    MailboxKey,
    StagedCopyUnreadable,
    StagingProgress,
)

# (position in the store, folder, message, envelope date)
Entry = tuple[int, str, bytes, datetime | None]


def _digest(message: bytes) -> str:
    return hashlib.sha256(message).hexdigest()


class ImportsMixin(MailServiceBase):
    """Imports of mail stores."""

    @cached_property
    def staging(self) -> ImportStaging:
        """Where imports are staged before they are queued (``staging``)."""
        return ImportStaging(self.db, self.blobs, self.keys, clock=self._clock, rng=self._rng)

    def start_import(
        self,
        actor: Actor,
        identity: str,
        path: Path,
        *,
        fmt: str | None = None,
        again: bool = False,
        staging_progress: StagingProgress | None = None,
    ) -> Job:
        """Stage a mail store (mbox file, Maildir, folder of .eml files) into the blob store
        and queue its import into a mailbox as a durable job, which any worker on any host
        may run; returns the job. ``staging_progress(staged, total)`` follows the staging.

        Importing is idempotent, so that running the command again after its process was
        killed never stores a message twice: while an import of the same store (same path,
        unchanged on disk) into the same mailbox is unfinished, its job is returned (and
        resumes); a staging that was killed goes on from what it committed; when the
        mailbox's last import was of that store and succeeded, that finished job is
        returned, unless ``again`` asks for the messages to be added once more."""
        path = path.expanduser().resolve()
        if fmt is not None and fmt not in formats.FORMATS:
            raise BadParameter(f"Unknown mail format '{fmt}'; use mbox, maildir or eml.")
        if not path.exists():
            raise BadParameter(f"{path} does not exist.")
        detected = fmt is None
        fmt = fmt or formats.detect_format(path)
        formats.check_store(path, fmt, detected=detected)
        signature = formats.source_signature(path, fmt)
        with self.db.transaction() as session:
            row = self._find(session, actor, identity)
            self._may_use(session, actor, row)
            key_row = self._current_key(session, row)
            upn, mailbox_id, tenant = row.upn, row.id, row.tenant_id
            key = MailboxKey(key_row.id, key_row.seq, key_row.generation_id, key_row.wrapped)
            active = self.jobs.active_for(session, IMPORT_JOB, mailbox_id)
        source = {"path": str(path), "signature": signature}
        if active is not None:
            if active.state == "cancelling":
                raise Conflict(
                    f"The import into '{upn}' (job {active.id}) is being cancelled; it stops "
                    "after its current batch. Start it again once it has."
                )
            if {k: active.payload.get(k) for k in source} == source:
                return self.jobs.get(active.id)
            raise Conflict(
                f"An import into '{upn}' is in progress (job {active.id}, from "
                f"{active.payload.get('path')}); wait for it to finish before starting "
                "another."
            )
        last = self.jobs.latest_for(mailbox_id, IMPORT_JOB)
        same = last is not None and {k: last.payload.get(k) for k in source} == source
        if not again and last is not None and same and last.state == "succeeded":
            return last
        stage = functools.partial(
            self.staging.stage,
            tenant=tenant,
            mailbox_id=mailbox_id,
            key=key,
            path=path,
            fmt=fmt,
            signature=signature,
            request_id=actor.request_id,
            progress=staging_progress,
        )
        if not again and last is not None and same and last.state == "cancelled":
            # The same import, cancelled: go on from where it stopped (never store twice),
            # from its staged copy (staged again if the sweep has removed it meanwhile).
            staging_id = last.payload.get("staging")
            if staging_id is not None:
                stage(staging_id=str(staging_id), total=last.progress_total)
            with self.db.transaction() as session:
                if self.jobs.active_for(session, IMPORT_JOB, mailbox_id) is not None:
                    raise Conflict(f"An import into '{upn}' has just been started by someone else.")
                if staging_id is not None:
                    self.staging.attach(session, str(staging_id), last.id)
                return self.jobs.reopen_cancelled(session, last.id)
        # Counting reads the store once more, outside any transaction (it may be large).
        staged = stage(total=formats.count_messages(path, fmt))
        with self.db.transaction() as session:
            row = self._find(session, actor, identity)
            if self.jobs.active_for(session, IMPORT_JOB, mailbox_id) is not None:
                raise Conflict(f"An import into '{upn}' has just been started by someone else.")
            job = self.jobs.enqueue(
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
                        staging=staged.id,
                    )
                ),
                created_by=actor,
                total=staged.messages,
            )
            self.staging.attach(session, staged.id, job.id)
            return job

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
        if job.state == "cancelled":
            done = int(job.checkpoint.get("consumed", 0))
            raise JobFailed(
                f"Import job {job.id} was cancelled after {done} of {job.progress_total} "
                "messages; they stay in the mailbox. Run the same import again to go on from "
                "there."
            )
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
        """The import job: read the staged copy (or, for a job queued before imports were
        staged, the store at its path), one message in memory at a time, and commit a batch
        of items together with the checkpoint that counts them. A resumed attempt starts at
        the first message the checkpoint does not count, and gives each message the item id
        it had in every attempt (derived from the job and the message's position), so that
        the blob a killed attempt wrote before its batch committed is overwritten, not left
        behind. Once every message is stored, the staged copy is deleted; a job that fails
        for good deletes it too."""
        payload = payload_of(job, ImportPayload)
        consumed = int(job.checkpoint.get("consumed", 0))
        if payload.staging is None:
            self._import_entries(job, context, payload, self._entries_on_disk(job, payload))
            return
        staged = self.staging.get(payload.staging)
        if staged is None:
            if consumed >= job.progress_total:
                return  # an attempt stored every message and deleted the copy, then died
            raise PermanentJobError(
                f"The staged copy of {payload.path} is gone; {consumed} of "
                f"{job.progress_total} messages were imported. Start the import again."
            )
        if staged.mailbox_id != job.target or not staged.complete:
            raise PermanentJobError(f"Import job {job.id} names a staging that is not its own.")
        try:
            try:
                data_key = self.staging.data_key(
                    staged, request_id=str(payload.request_id) if payload.request_id else None
                )
                self._import_entries(
                    job, context, payload, self.staging.entries(staged, data_key, consumed)
                )
            except (StagedCopyUnreadable, ContainerKeyDestroyed) as exc:
                done = int(self.jobs.get(job.id).checkpoint.get("consumed", consumed))
                raise PermanentJobError(
                    f"The staged copy of {payload.path} cannot be read ({exc.message}); "
                    f"{done} of {job.progress_total} messages were imported. Start the "
                    "import again."
                ) from exc
        except PermanentJobError:
            self.staging.discard(staged.mailbox_id, staged.id)
            raise
        self.staging.discard(staged.mailbox_id, staged.id)

    def _entries_on_disk(self, job: Job, payload: ImportPayload) -> Iterator[Entry]:
        """The messages of a store read from its path (a job queued before staging), from
        the first one the checkpoint does not count, after checking that the store is the
        one the job began with."""
        path, fmt = Path(payload.path), payload.format
        consumed = int(job.checkpoint.get("consumed", 0))
        last_digest = str(job.checkpoint.get("last_digest", ""))
        if not path.exists():
            raise PermanentJobError(
                f"{path} is gone; {consumed} of {job.progress_total} messages were imported."
            )
        if formats.source_signature(path, fmt) != payload.signature:
            raise PermanentJobError(
                f"{path} changed since the import began; {consumed} of "
                f"{job.progress_total} messages were imported."
            )
        for index, (folder, message, envelope) in enumerate(formats.read_entries(path, fmt)):
            if index < consumed:
                if index == consumed - 1 and last_digest and _digest(message) != last_digest:
                    raise PermanentJobError(
                        f"{path} no longer holds the messages already imported; {consumed} "
                        f"of {job.progress_total} messages were imported."
                    )
                continue
            yield index, folder, message, envelope

    def _import_entries(
        self,
        job: Job,
        context: JobContext,
        payload: ImportPayload,
        entries: Iterable[Entry],
    ) -> None:
        principal, request_id = payload.principal, payload.request_id
        consumed = int(job.checkpoint.get("consumed", 0))
        total_bytes = int(job.checkpoint.get("bytes", 0))
        with self.db.transaction() as session:
            row = session.get(MailboxRow, job.target)
            if row is None or row.state != "active":
                raise PermanentJobError(f"Mailbox {job.target} is gone.")
            key_row = self._current_key(session, row)
            tenant, mailbox_id = row.tenant_id, row.id
            key_id, key_seq = key_row.id, key_row.seq
            generation_id, wrapped = key_row.generation_id, key_row.wrapped
        mailbox_key = self.keys.unwrap(
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
            context.stop_if_cancelled()  # cancelled: stop here, with this batch committed

        now = self._clock.now()
        for index, folder, message, envelope in entries:
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
                    received_at=envelope or formats.received_time(message, now),
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
