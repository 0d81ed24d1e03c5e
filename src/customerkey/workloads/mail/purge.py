"""The mailbox DEP's data purge path: the second tenant admin's approval, and the purge job
(``keys.purge.run_purge``) destroying every mailbox key, mailbox, item and blob of the DEP."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from customerkey.errors import Conflict
from customerkey.jobs.queue import Job
from customerkey.jobs.worker import JobContext
from customerkey.keys.purge import PurgeSteps, run_purge
from customerkey.keys.purge_approval import queue_purge
from customerkey.storage.models import MailboxKeyRow, MailboxRow, MailItemRow, PolicyRow
from customerkey.vault.models import Actor
from customerkey.workloads.mail import blobs as blob_names
from customerkey.workloads.mail.base import MailServiceBase
from customerkey.workloads.mail.jobs import PURGE_JOB


class PurgeMixin(MailServiceBase):
    """Purge approval and the purge job."""

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
            row = session.get(PolicyRow, policy.id)
            assert row is not None
            return queue_purge(
                session,
                actor,
                approver,
                row,
                job_kind=PURGE_JOB,
                jobs=self.jobs,
                audit=self._audit,
                clock=self._clock,
                operation="DataEncryptionPolicyPurgeApproved",
                details={},
                already_running="The purge of this policy is already running.",
            )

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
