"""The mailbox re-key: assigning a DEP (Set-Mailbox -DataEncryptionPolicy) or moving a mailbox
(New-MoveRequest) makes a new mailbox key that new writes use at once, and a ``mailbox-rekey``
job (``run_rekey``) re-encrypts every item under it, destroys the keys it replaced and sweeps
what a killed worker left on disk."""

from __future__ import annotations

import io

from sqlalchemy import func, select

from customerkey.crypto.aead import open_stream, seal_stream
from customerkey.errors import Conflict
from customerkey.jobs.queue import Job, pid_alive
from customerkey.jobs.registry import payload_dict
from customerkey.jobs.worker import JobContext, PermanentJobError
from customerkey.storage.models import MailboxKeyRow, MailboxRow, MailItemRow
from customerkey.vault.models import Actor
from customerkey.workloads.mail import blobs as blob_names
from customerkey.workloads.mail.base import MailServiceBase
from customerkey.workloads.mail.jobs import REKEY_JOB, RekeyPayload
from customerkey.workloads.mail.models import item_context


class RekeyMixin(MailServiceBase):
    """Policy changes, moves and the re-key job."""

    def set_policy(self, actor: Actor, identity: str, policy: str | None) -> Job | None:
        """Assign a DEP (or None: service-managed keys). Returns the re-key job, if one was
        needed (the mailbox has content under another key)."""
        with self.db.transaction() as session:
            row = self._find(session, actor, identity)
            self._may_manage(actor, row.tenant_id)
            tenant = row.tenant_id
        policy_id, generation_id = self._resolve_policy(tenant, policy)
        return self._rekey(actor, identity, policy_id, generation_id, reason="policy-change")

    def move(self, actor: Actor, identity: str) -> Job:
        """New-MoveRequest: a new mailbox key under the mailbox's DEP's current generation
        (or the service key), all content re-encrypted, the old key destroyed."""
        with self.db.transaction() as session:
            row = self._find(session, actor, identity)
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
            row = self._find(session, actor, identity)
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
            row = self._find(session, actor, identity)
            if self.jobs.active_for(session, REKEY_JOB, row.id) is not None:
                raise Conflict(
                    f"Mailbox '{row.upn}' is being re-encrypted; wait for that job to finish."
                )
            tenant = row.tenant_id
        _, wrapped = self.keys.new_key(tenant, generation_id)
        with self.db.transaction() as session:
            row = self._find(session, actor, identity)
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

    def run_rekey(self, job: Job, context: JobContext) -> None:
        """Re-encrypt every item of the mailbox under its current key, then destroy the
        keys it replaced. Batches are idempotent: a new blob is written under a name that
        carries the new key's sequence number, the row switches to it in one transaction,
        and only then is the old blob removed.

        Crash safety: the final step (destroying the old keys, its audit record) commits
        together with a checkpoint that marks it done, so a worker killed after it never
        applies it twice; and a last sweep, repeated by every run that gets that far, removes
        what a killed worker left on disk: old blobs of destroyed keys whose deletion it did
        not reach, and half-written temporary files of writers that are dead.

        Cancelled, it stops after a batch, before the old keys are destroyed: moving the
        mailbox (or setting its DEP) again makes a new key and finishes the work."""
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
                # Cancelled: stop between batches. Each item is under the key its row names
                # and the replaced keys are not destroyed, so everything stays readable.
                context.stop_if_cancelled()
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
