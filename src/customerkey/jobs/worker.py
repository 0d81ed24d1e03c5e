"""Workers: claim jobs, run their handler, renew the lease through checkpoints.

A handler is ``handler(job, context)``; it reads ``job.checkpoint`` to resume, does its work
in idempotent batches, and calls ``context.checkpoint(...)`` after each (inside the batch's
own transaction when it passes ``session=``), which renews the lease. A handler that raises
``PermanentJobError`` fails the job at once; any other error sends it back to the queue until
its attempts run out.

Cancelling is cooperative: a checkpoint reports that the job was asked to stop. Without
``session=`` it raises ``JobCancelled`` at once; with one, the batch commits with its checkpoint
and the handler calls ``context.stop_if_cancelled()`` once it has (any later checkpoint raises
too, before writing). The worker then ends the job ``cancelled``. A worker that stops in the
middle of a job (Ctrl-C) gives it back when it retires (``JobQueue.retire``).

``run_forever`` is the loop of ``customerkey worker`` (any number of them, on any number of
hosts, may share a PostgreSQL database and an object store): it announces the worker in the
registry, which starts its heartbeat thread (``jobs.heartbeats``: the row is renewed every
few seconds, also while a long batch runs, until the worker retires), and on start and while
idle releases the jobs of dead workers, of this host or any other. It holds
``while_running`` open meanwhile (the runtime passes its revocation relay, so a standalone
worker's DEP-key cache follows revocations made by any other process).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any

from sqlalchemy import event
from sqlalchemy.orm import Session

from customerkey.errors import CustomerKeyError, StorageFull
from customerkey.jobs.heartbeats import Heartbeat
from customerkey.jobs.queue import Job, JobQueue, LeaseLost

log = logging.getLogger("customerkey.worker")

RELEASE_EVERY_SECONDS = 2.0


class PermanentJobError(CustomerKeyError):
    """The job cannot succeed by retrying (its target is gone, input is invalid)."""

    status = 409
    code = "JobFailed"


class JobCancelled(CustomerKeyError):
    """The job was asked to stop; raised at a checkpoint so that its handler stops there."""

    status = 409
    code = "JobCancelled"


@dataclass
class JobContext:
    queue: JobQueue
    job: Job
    worker_id: str
    on_progress: Callable[[Job, int, int], None] | None = None
    cancel_requested: bool = False

    def stop_if_cancelled(self) -> None:
        """Raise ``JobCancelled`` if a committed checkpoint saw that the job was cancelled."""
        if self.cancel_requested:
            raise JobCancelled(f"Job {self.job.id} was cancelled.")

    def checkpoint(
        self,
        *,
        done: int | None = None,
        total: int | None = None,
        checkpoint: Mapping[str, Any] | None = None,
        session: Session | None = None,
    ) -> None:
        self.stop_if_cancelled()  # a handler that did not stop after the last batch does now
        cancel = self.queue.checkpoint(
            self.job.id,
            self.worker_id,
            done=done,
            total=total,
            checkpoint=checkpoint,
            session=session,
        )
        if cancel and session is None:
            self.cancel_requested = True
            self.stop_if_cancelled()
        if cancel:

            def cancelled_after_commit(_session: Session) -> None:
                self.cancel_requested = True

            assert session is not None
            event.listen(session, "after_commit", cancelled_after_commit, once=True)
        if self.on_progress is None or done is None:
            return
        on_progress, shown_total = self.on_progress, total if total is not None else -1
        if session is None:
            on_progress(self.job, done, shown_total)
            return

        # Whoever watches progress reads the database: tell them once the batch is durable
        # (and not at all if it rolls back), never while its transaction holds the lock.
        def after_commit(_session: Session) -> None:
            on_progress(self.job, done, shown_total)

        event.listen(session, "after_commit", after_commit, once=True)


Handler = Callable[[Job, JobContext], None]


class Worker:
    def __init__(
        self,
        queue: JobQueue,
        handlers: Mapping[str, Handler],
        *,
        worker_id: str | None = None,
        on_progress: Callable[[Job, int, int], None] | None = None,
        while_running: Callable[[], AbstractContextManager[object]] | None = None,
    ) -> None:
        self.queue = queue
        self.while_running = while_running
        self.handlers = dict(handlers)
        # "<hostname>:<pid>:<random>", to be read by people; the registry row holds the identity.
        self.worker_id = worker_id or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.on_progress = on_progress
        self._heartbeat = Heartbeat(
            self._beat,
            queue.heartbeat_interval.total_seconds(),
            name=f"customerkey-heartbeat-{self.worker_id}",
        )

    def run_one(self, kinds: Sequence[str] | None = None) -> Job | None:
        """Claim and run one job; returns it as it ended, or None when there was none."""
        job = self.queue.claim(self.worker_id, kinds or tuple(self.handlers))
        if job is None:
            return None
        return self._run(job)

    def run_job(self, job_id: str) -> Job | None:
        """Claim and run one given job; None when another live worker holds it (or it has
        finished)."""
        job = self.queue.claim_job(job_id, self.worker_id)
        if job is None:
            return None
        return self._run(job)

    def announce(self) -> None:
        """Enter (or refresh) this worker in the registry and keep its heartbeat going until
        it retires, so that if this process dies its jobs are released at once by the next
        worker on this host, or within the heartbeat timeout by a worker on any host."""
        self._beat()
        self._heartbeat.start()

    def _beat(self) -> None:
        self.queue.announce(self.worker_id, self.queue.host_id, os.getpid())

    def retire(self) -> None:
        """Stop the heartbeat, give back a job still held and leave the registry."""
        self._heartbeat.stop()
        self.queue.retire(self.worker_id)

    def _run(self, job: Job) -> Job:
        handler = self.handlers.get(job.kind)
        if handler is None:
            return self.queue.fail(job.id, self.worker_id, f"no handler for job kind {job.kind}")
        context = JobContext(self.queue, job, self.worker_id, self.on_progress)
        try:
            handler(job, context)
        except LeaseLost:
            log.warning("job %s was taken over by another worker", job.id)
            return self.queue.get(job.id)
        except JobCancelled:
            log.info("job %s stopped: it was cancelled", job.id)
            return self.queue.stop_cancelled(job.id, self.worker_id)
        except PermanentJobError as exc:
            return self.queue.fail(job.id, self.worker_id, exc.message)
        except Exception as exc:
            message = exc.message if isinstance(exc, CustomerKeyError) else repr(exc)
            log.warning(
                "job %s failed (attempt %d): %s\n%s",
                job.id,
                job.attempts,
                message,
                traceback.format_exc(),
            )
            return self.queue.finish(job.id, self.worker_id, error=message)
        return self.queue.finish(job.id, self.worker_id)

    def run_until_idle(
        self, kinds: Sequence[str] | None = None, max_jobs: int = 10_000
    ) -> list[Job]:
        done: list[Job] = []
        for _ in range(max_jobs):
            job = self.run_one(kinds)
            if job is None:
                break
            done.append(job)
        return done

    def release_dead_workers(self) -> list[str]:
        """Requeue the jobs of dead workers, of any host (never raises)."""
        try:
            return self.queue.release_dead_workers()
        except Exception:
            log.exception("could not release the jobs of dead workers")
            return []

    def run_forever(
        self,
        stop: threading.Event,
        *,
        poll_seconds: float = 1.0,
        release_every: float = RELEASE_EVERY_SECONDS,
    ) -> None:
        """Claim and run jobs until ``stop`` is set. On start, and every ``release_every``
        seconds while idle, jobs held by dead workers go back to the queue, so a killed
        worker's job resumes at once (this host) or within the heartbeat timeout (any host)
        instead of after its lease."""
        companion = self.while_running() if self.while_running else nullcontext()
        with companion:
            self._run_forever(stop, poll_seconds, release_every)

    def _run_forever(
        self, stop: threading.Event, poll_seconds: float, release_every: float
    ) -> None:
        self.release_dead_workers()
        last_release = time.monotonic()
        try:
            while not stop.is_set():
                try:
                    self.announce()
                    job = self.run_one()
                except StorageFull:
                    job = None  # the database logs it once; the next round retries
                except Exception:
                    log.exception("worker loop error")
                    job = None
                if job is None:
                    if time.monotonic() - last_release >= release_every:
                        self.release_dead_workers()
                        last_release = time.monotonic()
                    stop.wait(poll_seconds)
        finally:
            self.retire()
