"""The durable job queue: enqueue, claim with a lease, checkpoint progress, finish.

A job is a row (kind, target, state, progress, checkpoint, attempts, lease). A worker claims
the oldest queued job, or a running one whose lease has expired (its worker died), by
setting itself as lease owner: with ``FOR UPDATE SKIP LOCKED`` on PostgreSQL, and inside
SQLite's ``BEGIN IMMEDIATE`` (one writer at a time) there. Each checkpoint renews the lease
and fails with ``LeaseLost`` if another worker took the job over, so two workers never both
finish one job. Handlers make every step idempotent, so a reclaimed job resumes from its
last checkpoint without losing or redoing work.

Cancelling (``request_cancel``, for the kinds whose registry entry allows it) ends a queued
job at once; a running one becomes ``cancelling``, and its worker stops at its next
checkpoint, after the batch that checkpoint commits (``stop_cancelled``). A process that stops
holding a job on purpose (Ctrl-C, ``retire``) gives it back at once (``release``), so a rerun or
another worker takes it up without waiting for the lease. ``list_jobs`` and ``get`` mark a
running job whose holder is gone (its lease ran out, or its worker is dead: see below) as
``interrupted``: it is shown so until someone takes it back.

A worker that is killed (SIGKILL, the OOM killer, its host lost) never retires its row in the
worker registry (``jobs.heartbeats``, which this class inherits). Every worker, on any host,
renews a heartbeat in its row while it lives; ``release_dead_workers`` finds the rows of dead
workers (a heartbeat older than the timeout, on any host; or, on this host, a process that no
longer exists in this boot) and returns their running jobs to the queue at once, checkpoints
kept. Every worker does this when it starts and from time to time while idle, so a job of a
dead worker resumes on any host within about the heartbeat timeout instead of its lease.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from customerkey.actor import Actor
from customerkey.clock import Clock
from customerkey.errors import Conflict, NotFound
from customerkey.jobs.heartbeats import (
    DEFAULT_HEARTBEAT,
    DEFAULT_TIMEOUT,
    WorkerRegistry,
    pid_alive,
)
from customerkey.storage.database import Database
from customerkey.storage.models import JobRow

__all__ = ["JobQueue", "pid_alive"]

log = logging.getLogger("customerkey.jobs")

STATES = ("queued", "running", "cancelling", "succeeded", "failed", "cancelled")
FINISHED = ("succeeded", "failed", "cancelled")
ACTIVE = ("queued", "running", "cancelling")
MAX_ATTEMPTS = 5  # attempts that ended in an error
# Claims in all, attempts whose worker died (SIGKILL, OOM) included: a job that takes its
# worker down every time fails after this many, instead of killing workers forever.
MAX_CLAIMS = 25


class JobNotFound(NotFound):
    code = "JobNotFound"


class JobFailed(Conflict):
    """A job the caller waited for did not succeed."""

    code = "JobFailed"


class LeaseLost(Conflict):
    """Another worker holds this job now; stop working on it."""


class JobNotCancellable(Conflict):
    """The job has finished, or its kind cannot be stopped part-way."""

    code = "JobNotCancellable"


@dataclass(frozen=True)
class Job:
    id: str
    kind: str
    target: str
    state: str
    payload: Mapping[str, Any]
    checkpoint: Mapping[str, Any]
    progress_done: int
    progress_total: int
    attempts: int
    lease_owner: str | None
    lease_expires_at: datetime | None
    error: str | None
    created_by: str
    created_by_id: str | None
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None
    # Running, but whoever held it is gone (lease expired, or its worker is dead).
    interrupted: bool = False

    @property
    def finished(self) -> bool:
        return self.state in FINISHED

    @property
    def shown_state(self) -> str:
        """The state to show people: a running job whose holder is gone is ``interrupted``."""
        return "interrupted" if self.interrupted and self.state == "running" else self.state

    @property
    def percent(self) -> float:
        if self.state == "succeeded":
            return 100.0
        if self.progress_total <= 0:
            return 0.0
        return min(100.0, 100.0 * self.progress_done / self.progress_total)


def _job(row: JobRow, *, interrupted: bool = False) -> Job:
    return Job(
        id=row.id,
        kind=row.kind,
        target=row.target,
        state=row.state,
        payload=dict(row.payload),
        checkpoint=dict(row.checkpoint),
        progress_done=row.progress_done,
        progress_total=row.progress_total,
        attempts=row.attempts,
        lease_owner=row.lease_owner,
        lease_expires_at=row.lease_expires_at,
        error=row.error,
        created_by=row.created_by,
        created_by_id=row.created_by_id,
        created_at=row.created_at,
        updated_at=row.updated_at,
        finished_at=row.finished_at,
        interrupted=interrupted,
    )


class JobQueue(WorkerRegistry):
    def __init__(
        self,
        db: Database,
        *,
        clock: Clock,
        lease: timedelta = timedelta(seconds=60),
        host_id: str | None = None,
        heartbeat: timedelta = DEFAULT_HEARTBEAT,
        heartbeat_timeout: timedelta = DEFAULT_TIMEOUT,
    ):
        super().__init__(host_id=host_id, heartbeat=heartbeat, heartbeat_timeout=heartbeat_timeout)
        self.db = db
        self._clock = clock
        self.lease = lease

    # ----------------------------------------------------------- inside a caller's transaction

    def enqueue(
        self,
        session: Session,
        kind: str,
        target: str,
        *,
        payload: Mapping[str, Any] | None = None,
        created_by: str | Actor,
        total: int = 0,
    ) -> Job:
        """Queue a job. ``created_by`` is who asked (an actor: its name and object id)."""
        if isinstance(created_by, Actor):
            created_by_name, created_by_id = created_by.principal_id, created_by.object_id or None
        else:
            created_by_name, created_by_id = created_by, None
        now = self._clock.now()
        row = JobRow(
            id=str(uuid.uuid4()),
            kind=kind,
            target=target,
            state="queued",
            payload=dict(payload or {}),
            checkpoint={},
            progress_done=0,
            progress_total=total,
            attempts=0,
            created_by=created_by_name,
            created_by_id=created_by_id,
            created_at=now,
            updated_at=now,
        )
        session.add(row)
        session.flush()
        return _job(row)

    @staticmethod
    def active_for(session: Session, kind: str, target: str) -> JobRow | None:
        return session.scalar(
            select(JobRow).where(
                JobRow.kind == kind,
                JobRow.target == target,
                JobRow.state.in_(ACTIVE),
            )
        )

    # ----------------------------------------------------------- own transactions

    def get(self, job_id: str) -> Job:
        with self.db.transaction() as session:
            row = session.get(JobRow, job_id)
            if row is None:
                raise JobNotFound(f"No job with id '{job_id}'.")
            return _job(row, interrupted=bool(self.holders_gone(session, [row])))

    def list_jobs(
        self, *, states: Sequence[str] | None = None, kind: str | None = None, limit: int = 100
    ) -> list[Job]:
        with self.db.transaction() as session:
            query = select(JobRow).order_by(JobRow.created_at.desc()).limit(limit)
            if states:
                query = query.where(JobRow.state.in_(tuple(states)))
            if kind:
                query = query.where(JobRow.kind == kind)
            rows = list(session.scalars(query))
            gone = self.holders_gone(session, rows)
            return [_job(r, interrupted=r.id in gone) for r in rows]

    def counts(self) -> list[tuple[str, str, int, int, int]]:
        """(kind, state, jobs, progress done, progress total) for each kind and state held."""
        with self.db.read() as session:
            rows = session.execute(
                select(
                    JobRow.kind,
                    JobRow.state,
                    func.count(),
                    func.coalesce(func.sum(JobRow.progress_done), 0),
                    func.coalesce(func.sum(JobRow.progress_total), 0),
                ).group_by(JobRow.kind, JobRow.state)
            ).all()
        return [(k, s, int(n), int(d), int(t)) for k, s, n, d, t in rows]

    def latest_for(self, target: str, kind: str | None = None) -> Job | None:
        with self.db.transaction() as session:
            query = select(JobRow).where(JobRow.target == target)
            if kind:
                query = query.where(JobRow.kind == kind)
            row = session.scalar(query.order_by(JobRow.created_at.desc()).limit(1))
            return _job(row) if row else None

    def claim(self, worker_id: str, kinds: Sequence[str] | None = None) -> Job | None:
        now = self._clock.now()
        with self.db.transaction() as session:
            query = (
                select(JobRow)
                .where(
                    or_(
                        JobRow.state == "queued",
                        JobRow.state.in_(("running", "cancelling"))
                        & (JobRow.lease_expires_at < now),
                    )
                )
                .order_by(JobRow.created_at)
                .limit(1)
                .with_for_update(skip_locked=True)
            )
            if kinds is not None:
                query = query.where(JobRow.kind.in_(tuple(kinds)))
            while (row := session.scalar(query)) is not None:
                if self._take(row, worker_id, now):
                    return _job(row)
            return None

    def claim_job(self, job_id: str, worker_id: str) -> Job | None:
        """Claim one given job if nobody holds it (queued, or its lease expired); None when
        a live lease holds it or it has finished."""
        now = self._clock.now()
        with self.db.transaction() as session:
            row = session.get(JobRow, job_id, with_for_update=True)
            if row is None:
                raise JobNotFound(f"No job with id '{job_id}'.")
            claimable = row.state == "queued" or (
                row.state in ("running", "cancelling")
                and row.lease_expires_at is not None
                and row.lease_expires_at < now
            )
            if claimable and self._take(row, worker_id, now):
                return _job(row)
            return None

    def _take(self, row: JobRow, worker_id: str, now: datetime) -> bool:
        """Lease ``row`` to ``worker_id``, or fail it for good when its claims are used up
        (errors fail a job after MAX_ATTEMPTS, so most of those claims ended with the
        worker dying: running it again would likely only take the next worker down). A
        job asked to stop whose holder died is not taken: it ends cancelled."""
        if row.state == "cancelling":
            self._end_cancelled(row, now)
            return False
        if row.attempts >= MAX_CLAIMS:
            row.state = "failed"
            row.error = (
                f"Gave up after {row.attempts} attempts: the workers running it stopped "
                "without finishing (killed or crashed)"
                + (f"; last error: {row.error}" if row.error else "")
                + "."
            )
            row.lease_owner = None
            row.lease_expires_at = None
            row.updated_at = now
            row.finished_at = now
            log.error("job %s failed: %s", row.id, row.error)
            return False
        row.state = "running"
        row.lease_owner = worker_id
        row.lease_expires_at = now + self.lease
        row.attempts += 1
        row.updated_at = now
        return True

    def checkpoint(
        self,
        job_id: str,
        worker_id: str,
        *,
        done: int | None = None,
        total: int | None = None,
        checkpoint: Mapping[str, Any] | None = None,
        session: Session | None = None,
    ) -> bool:
        """Record progress and renew the lease; pass ``session`` to commit it together with
        the work the checkpoint describes. True when the job has been asked to stop
        (cancelled): the caller stops once this checkpoint's work is committed."""
        if session is not None:
            return self._checkpoint(session, job_id, worker_id, done, total, checkpoint)
        with self.db.transaction() as own:
            return self._checkpoint(own, job_id, worker_id, done, total, checkpoint)

    def _checkpoint(
        self,
        session: Session,
        job_id: str,
        worker_id: str,
        done: int | None,
        total: int | None,
        checkpoint: Mapping[str, Any] | None,
    ) -> bool:
        row = session.get(JobRow, job_id, with_for_update=True)
        if (
            row is None
            or row.lease_owner != worker_id
            or row.state not in ("running", "cancelling")
        ):
            raise LeaseLost(f"Job {job_id} is no longer held by {worker_id}.")
        now = self._clock.now()
        if done is not None:
            row.progress_done = done
        if total is not None:
            row.progress_total = total
        if checkpoint is not None:
            row.checkpoint = {**row.checkpoint, **checkpoint}
        row.lease_expires_at = now + self.lease
        row.updated_at = now
        return row.state == "cancelling"

    def finish(self, job_id: str, worker_id: str, *, error: str | None = None) -> Job:
        now = self._clock.now()
        with self.db.transaction() as session:
            row = session.get(JobRow, job_id, with_for_update=True)
            if row is None or row.lease_owner != worker_id:
                raise LeaseLost(f"Job {job_id} is no longer held by {worker_id}.")
            if error is None:  # asked to stop but done first: it succeeded
                row.state = "succeeded"
                row.error = None
                if row.progress_total:
                    row.progress_done = row.progress_total
            elif row.attempts >= MAX_ATTEMPTS:
                row.state = "failed"
                row.error = error
            elif row.state == "cancelling":  # no retry for a job asked to stop
                self._end_cancelled(row, now)
                row.error = f"{row.error} (its last attempt failed: {error})"
                return _job(row)
            else:
                row.state = "queued"  # try again later
                row.error = error
            row.lease_owner = None if row.state != "running" else row.lease_owner
            row.lease_expires_at = None
            row.updated_at = now
            if row.state in ("succeeded", "failed"):
                row.finished_at = now
            return _job(row)

    def fail(self, job_id: str, worker_id: str, error: str) -> Job:
        """Give up on a job for good (a permanent error)."""
        now = self._clock.now()
        with self.db.transaction() as session:
            row = session.get(JobRow, job_id, with_for_update=True)
            if row is None or row.lease_owner != worker_id:
                raise LeaseLost(f"Job {job_id} is no longer held by {worker_id}.")
            row.state = "failed"
            row.error = error
            row.lease_owner = None
            row.lease_expires_at = None
            row.updated_at = now
            row.finished_at = now
            return _job(row)

    def release(self, job_id: str, worker_id: str) -> Job | None:
        """Give a job back at once (this process stops on purpose: Ctrl-C, shutting down),
        so that a rerun or another worker takes it up without waiting for the lease; the
        attempt does not count. A job asked to stop ends cancelled. None when ``worker_id``
        no longer holds it."""
        with self.db.transaction() as session:
            row = session.get(JobRow, job_id, with_for_update=True)
            if row is None or row.lease_owner != worker_id or row.state in FINISHED:
                return None
            self._release(row, self._clock.now())
            return _job(row)

    def _release(self, row: JobRow, now: datetime) -> None:
        if row.state == "cancelling":
            self._end_cancelled(row, now)
            return
        log.info("job %s released by %s", row.id, row.lease_owner)
        row.state = "queued"
        row.attempts = max(0, row.attempts - 1)
        row.lease_owner = None
        row.lease_expires_at = None
        row.updated_at = now

    @staticmethod
    def locked(session: Session, job_id: str) -> Job:
        """The job, its row locked for the rest of the caller's transaction."""
        row = session.get(JobRow, job_id, with_for_update=True)
        if row is None:
            raise JobNotFound(f"No job with id '{job_id}'.")
        return _job(row)

    def request_cancel(self, session: Session, job_id: str, *, by: str) -> tuple[Job, str]:
        """Cancel a job (inside the caller's transaction, which writes its audit record): a
        queued one ends ``cancelled`` at once; a running one becomes ``cancelling`` and stops
        at its next checkpoint. Returns the job and the state it was in. Whether its kind may
        be cancelled is the caller's to decide."""
        row = session.get(JobRow, job_id, with_for_update=True)
        if row is None:
            raise JobNotFound(f"No job with id '{job_id}'.")
        before = row.state
        if row.state in FINISHED:
            raise JobNotCancellable(f"Job {job_id} has already {row.state}; nothing to cancel.")
        now = self._clock.now()
        row.error = f"Cancelled by {by}."
        if row.state == "queued":
            self._end_cancelled(row, now)
        elif row.state == "running":
            row.state = "cancelling"
            row.updated_at = now
        return _job(row), before

    def stop_cancelled(self, job_id: str, worker_id: str) -> Job:
        """The worker stopped a job that was asked to stop: it ends ``cancelled``."""
        with self.db.transaction() as session:
            row = session.get(JobRow, job_id, with_for_update=True)
            if row is None or row.lease_owner != worker_id:
                raise LeaseLost(f"Job {job_id} is no longer held by {worker_id}.")
            self._end_cancelled(row, self._clock.now())
            return _job(row)

    def reopen_cancelled(self, session: Session, job_id: str) -> Job:
        """Queue a cancelled job again, to go on from its checkpoint (a rerun of the command
        that started it)."""
        row = session.get(JobRow, job_id, with_for_update=True)
        if row is None or row.state != "cancelled":
            raise Conflict(f"Job {job_id} is not cancelled.")
        row.state = "queued"
        row.error = None
        row.finished_at = None
        row.updated_at = self._clock.now()
        session.flush()
        return _job(row)

    @staticmethod
    def _end_cancelled(row: JobRow, now: datetime) -> None:
        row.state = "cancelled"
        row.error = row.error or "Cancelled."
        row.lease_owner = None
        row.lease_expires_at = None
        row.updated_at = now
        row.finished_at = now

    def _requeue_of_dead(self, job: JobRow, now: datetime) -> None:
        """A dead worker's job goes back to the queue as an expired lease would have let it
        (its claim stays counted); one asked to stop ends cancelled."""
        if job.state == "cancelling":
            self._end_cancelled(job, now)
            return
        job.state = "queued"
        job.lease_owner = None
        job.lease_expires_at = None
        job.updated_at = now
