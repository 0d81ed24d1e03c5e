"""The last step of the data purge path, shared by every workload: destroy each container
of a DEP (its keys, its content rows, its blobs), then the DEP's generations and its
availability key.

The step is idempotent, so a purge job killed anywhere and run again ends exactly as one
uninterrupted run would: one record per container and one final record, counting every
container, with the first run's timestamp.

- The containers are those the workload names for the policy *including ones already
  purged* (it finds them by the policy or by keys under the policy's generations), so a rerun
  counts the same set.
- A container is destroyed in one transaction, only if it is not purged yet; its blobs are
  deleted after that commit on every run (a crash may have come in between).
- Progress never goes back on a rerun; the final step runs only while the policy is not
  purged yet, and commits with the last checkpoint.

The two-person approval that queues the job lives in ``service.purge_approval``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.orm import Session

from customerkey.audit.log import AuditLog
from customerkey.clock import Clock
from customerkey.jobs.queue import Job
from customerkey.jobs.worker import JobContext, PermanentJobError
from customerkey.keys.deps import DataEncryptionPolicies
from customerkey.storage.database import Database
from customerkey.storage.models import GenerationRow, PolicyRow

SERVICE_PRINCIPAL = "customerkey-service"


@dataclass(frozen=True)
class PurgeSteps:
    """What a workload contributes to the shared purge step.

    ``containers(session, policy, generation_ids)`` lists every container of the policy,
    purged ones included, in a stable order. ``purge_container(session, id)`` destroys one
    container's keys and content rows and returns the details of its audit record, or None
    when it was purged before (then nothing is written). ``delete_blobs(id)`` removes its
    blobs (idempotent). ``on_purged(session, policy)`` makes workload-specific changes to the
    policy row in the final transaction."""

    containers: Callable[[Session, PolicyRow, list[str]], list[str]]
    purge_container: Callable[[Session, str], Mapping[str, object] | None]
    delete_blobs: Callable[[str], None]
    container_operation: str  # e.g. MailboxPurged
    final_operation: str  # e.g. DataEncryptionPolicyPurged
    count_name: str  # what the final record calls the container count: mailboxes, sites
    on_purged: Callable[[Session, PolicyRow], None] = field(default=lambda _s, _p: None)


def run_purge(
    job: Job,
    context: JobContext,
    steps: PurgeSteps,
    *,
    db: Database,
    audit: AuditLog,
    policies: DataEncryptionPolicies,
    clock: Clock,
) -> None:
    policy_id = job.target
    with db.transaction() as session:
        policy = session.get(PolicyRow, policy_id)
        if policy is None:
            raise PermanentJobError(f"Policy {policy_id} no longer exists.")
        tenant = policy.tenant_id
        generation_ids = list(
            session.scalars(select(GenerationRow.id).where(GenerationRow.policy_id == policy_id))
        )
        container_ids = steps.containers(session, policy, generation_ids)
    total = len(container_ids) + 1
    for index, container_id in enumerate(container_ids, start=1):
        with db.transaction() as session:
            details = steps.purge_container(session, container_id)
            if details is not None:
                audit.append(
                    session,
                    tenant=tenant,
                    principal=SERVICE_PRINCIPAL,
                    operation=steps.container_operation,
                    details={"policy": policy_id, **details},
                )
            # A rerun walks the finished containers again: progress must not go back.
            context.checkpoint(done=max(index, job.progress_done), total=total, session=session)
        steps.delete_blobs(container_id)
    with db.transaction() as session:
        policy = session.get(PolicyRow, policy_id)
        assert policy is not None
        if policy.state != "purged":  # else a crash came after this step committed
            for generation_id in generation_ids:
                policies.retire_generation(session, generation_id, reason="data purge")
            policy.sealed_availability_key = None
            policy.state = "purged"
            policy.purged_at = clock.now()
            policy.updated_at = policy.purged_at
            steps.on_purged(session, policy)
            audit.append(
                session,
                tenant=tenant,
                principal=SERVICE_PRINCIPAL,
                operation=steps.final_operation,
                details={
                    "tenant": tenant,
                    "policy": policy_id,
                    steps.count_name: len(container_ids),
                    "generations": len(generation_ids),
                    "availability_key": "destroyed",
                },
            )
        context.checkpoint(done=total, total=total, session=session)
    policies.cache.invalidate_policy(policy_id)
