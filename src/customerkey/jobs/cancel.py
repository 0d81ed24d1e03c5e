"""Cancelling a job: who may (``identity.authorize``, ``Action.JOB_CANCEL``: whoever may see
it), which kinds may be stopped part-way (their ``JobKind.cancellable``), and the audit record.

A queued job ends ``cancelled`` at once; a running one becomes ``cancelling`` and its worker
stops at its next checkpoint, after the batch that checkpoint commits (``jobs.worker``). What a
stopped job leaves is its kind's to say (``JobKind.cancel_note``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from customerkey.actor import Actor
from customerkey.audit.log import AuditLog
from customerkey.errors import Forbidden
from customerkey.identity import authorize as authz
from customerkey.jobs.queue import Job, JobNotCancellable, JobQueue
from customerkey.jobs.registry import JobKind


@dataclass(frozen=True)
class Cancelled:
    """A cancel's outcome: the job as it stands now (``cancelled`` or ``cancelling``)."""

    job: Job
    stopped: bool  # True: it has ended; False: its worker stops at its next checkpoint
    note: str  # what the cancel leaves behind


def cancel_job(
    queue: JobQueue,
    audit: AuditLog,
    kinds: Mapping[str, JobKind],
    actor: Actor,
    job_id: str,
) -> Cancelled:
    """Cancel ``job_id`` for ``actor``; refuses (409) a finished job and a kind that cannot be
    stopped part-way, and (403) an actor who may not see the job."""
    with queue.db.transaction() as session:
        job = queue.locked(session, job_id)  # raises JobNotFound
        if not authz.allowed(actor, authz.Action.JOB_CANCEL, authz.Job(job.created_by_id)):
            raise Forbidden(f"Job {job.id} was not started by '{actor.principal_id}'.")
        kind = kinds.get(job.kind)
        if kind is None or not kind.cancellable:
            raise JobNotCancellable(
                f"Jobs of kind '{job.kind}' cannot be cancelled: once started they run to the "
                "end, since stopping one part-way is not known to leave its data consistent "
                "(a failed attempt is retried)."
            )
        job, before = queue.request_cancel(session, job_id, by=actor.audit_name)
        tenant = kind.tenant_of(session, job.target) if kind.tenant_of is not None else None
        audit.append(
            session,
            tenant=tenant,
            principal=actor.audit_name,
            actor_id=actor.object_id or None,
            operation="JobCancel",
            request_id=actor.request_id,
            details={
                "job": job.id,
                "kind": job.kind,
                "target": job.target,
                "state": before,
                "done": job.progress_done,
                "total": job.progress_total,
            },
        )
    return Cancelled(job, stopped=job.finished, note=kind.cancel_note)
