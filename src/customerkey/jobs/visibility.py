"""Who sees which job: the rule every front end applies to the job queue.

The decision is ``identity.authorize`` (``Action.JOB_READ``): a job is seen by whoever started
it (by object id), and by the operator. Here it is applied to jobs read from the queue.
"""

from __future__ import annotations

from collections.abc import Iterable

from customerkey.actor import Actor
from customerkey.errors import Forbidden
from customerkey.identity import authorize as authz
from customerkey.jobs.queue import Job


def may_read(actor: Actor, job: Job) -> bool:
    return authz.allowed(actor, authz.Action.JOB_READ, authz.Job(job.created_by_id))


def visible_jobs(actor: Actor, jobs: Iterable[Job]) -> list[Job]:
    """The jobs of ``jobs`` that ``actor`` may read, in their order."""
    return [job for job in jobs if may_read(actor, job)]


def check_readable(actor: Actor, job: Job) -> Job:
    """``job`` if ``actor`` may read it; ``Forbidden`` otherwise."""
    if not may_read(actor, job):
        raise Forbidden(f"Job {job.id} was not started by '{actor.principal_id}'.")
    return job
