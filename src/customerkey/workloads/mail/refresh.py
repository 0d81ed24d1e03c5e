"""The mailbox DEP's key roll (Set-DataEncryptionPolicy -Refresh): a new generation on the
newest root-key versions, and a job re-wrapping every mailbox key of the DEP onto it
(``ContainerKeys.rewrap``), then retiring the generations nothing depends on."""

from __future__ import annotations

from sqlalchemy import ColumnElement, select
from sqlalchemy.orm import Session

from customerkey.errors import Conflict
from customerkey.jobs.queue import Job
from customerkey.jobs.registry import payload_dict, payload_of
from customerkey.jobs.worker import JobContext, PermanentJobError
from customerkey.storage.models import GenerationRow, MailboxKeyRow, PolicyRow
from customerkey.vault.models import Actor
from customerkey.workloads.mail.base import MailServiceBase
from customerkey.workloads.mail.jobs import REFRESH_JOB, RefreshPayload


class RefreshMixin(MailServiceBase):
    """The refresh of a mailbox DEP and its re-wrap job."""

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
