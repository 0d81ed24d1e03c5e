"""Seeing jobs through from a front end: run them here, or wait for the worker that has them.

``run_or_wait`` is the one implementation of what a command that started a job does next
(the ``customerkey`` commands, with their progress bar; the cmdlet shell, with its text
progress; ``customerkey jobs wait``):

1. First the jobs of dead workers go back to the queue (``Worker.release_dead_workers``: this
   host's killed processes, and workers of any host whose heartbeat stopped): a killed
   command's job is taken up again at once instead of after its lease, and the dead worker no
   longer counts as live.
2. While no worker is live (the embedded default), queued jobs are run here, one at a time.
   This process is announced in the worker registry while it runs one (its heartbeat going
   meanwhile) and retired after, so that if it is killed mid-job, the next command or worker on
   this host takes the job back at once, and a worker on another host within the heartbeat
   timeout.
3. While a worker is live, the jobs are polled until every one has finished.

Interrupted (Ctrl-C: ``KeyboardInterrupt``), it raises ``JobsInterrupted``, a
``KeyboardInterrupt`` that says what happens next: a job it was running here has been given
back to the queue at once (``JobQueue.retire`` releases it, after the batch in flight rolled
back or committed), so the same command resumes it, or a live worker takes it up; a job a
worker runs goes on there.

Progress is reported through callbacks: ``on_progress(job, done, total)`` for every committed
step of a job run here (``total`` is -1 when unknown), ``on_poll(jobs)`` with the jobs as they
stand at every look (how a worker's progress is shown). ``timeout`` (seconds) bounds the wait
(``JobWaitTimeout``); ``sleep`` and ``clock`` are injectable so that tests need not sleep.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Protocol

from customerkey.errors import CustomerKeyError
from customerkey.jobs.queue import Job, JobQueue
from customerkey.jobs.worker import Worker

POLL_SECONDS = 0.2

ProgressFn = Callable[[Job, int, int], None]


class JobWaitTimeout(CustomerKeyError):
    status = 408
    code = "Timeout"


class JobsInterrupted(KeyboardInterrupt):
    """Ctrl-C while seeing jobs through: ``jobs`` as they stand now, and whether a worker is
    live (it runs them, or will take up the ones given back)."""

    def __init__(self, jobs: list[Job], *, worker_live: bool) -> None:
        super().__init__()
        self.jobs = jobs
        self.worker_live = worker_live


class JobHost(Protocol):
    """Where jobs live and who runs them (the runtime is one)."""

    @property
    def jobs(self) -> JobQueue: ...

    def worker(self, *, on_progress: ProgressFn | None = ...) -> Worker: ...


def run_or_wait(
    host: JobHost,
    job_ids: Sequence[str],
    *,
    on_progress: ProgressFn | None = None,
    on_poll: Callable[[list[Job]], None] | None = None,
    timeout: float | None = None,
    poll_seconds: float = POLL_SECONDS,
    sleep: Callable[[float], None] | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> list[Job]:
    """Run (no live worker) or watch (a worker holds them) until every job in ``job_ids`` has
    finished; returns them as they ended. Raises ``JobWaitTimeout`` after ``timeout``."""
    pause = sleep if sleep is not None else time.sleep
    deadline = None if timeout is None else clock() + timeout
    queue = host.jobs
    worker = host.worker(on_progress=on_progress)
    worker.release_dead_workers()  # a killed command's job comes back at once
    try:
        return _run_or_wait(queue, worker, job_ids, on_poll, deadline, poll_seconds, pause, clock)
    except KeyboardInterrupt as interrupt:
        # A job run here was given back as its run unwound (``run_one_here``).
        try:
            jobs = [queue.get(job_id) for job_id in job_ids]
            live = bool(queue.live_workers())
        except Exception:
            raise interrupt from None
        raise JobsInterrupted(jobs, worker_live=live) from None


def _run_or_wait(
    queue: JobQueue,
    worker: Worker,
    job_ids: Sequence[str],
    on_poll: Callable[[list[Job]], None] | None,
    deadline: float | None,
    poll_seconds: float,
    pause: Callable[[float], None],
    clock: Callable[[], float],
) -> list[Job]:
    while True:
        jobs = [queue.get(job_id) for job_id in job_ids]
        if on_poll is not None:
            on_poll(jobs)
        if all(job.finished for job in jobs):
            return jobs
        if deadline is not None and clock() > deadline:
            raise JobWaitTimeout(
                f"Timed out waiting for {sum(not job.finished for job in jobs)} job(s)."
            )
        if not queue.live_workers() and run_one_here(worker):
            continue
        pause(poll_seconds)


def run_one_here(worker: Worker) -> bool:
    """Run one queued job here, registered as a worker (with its heartbeat) meanwhile: if this
    process is killed, the next worker (or command) on this host takes the job back at once,
    one on another host after the heartbeat timeout. False when there was no job to run."""
    worker.announce()
    try:
        return worker.run_one() is not None
    finally:
        worker.retire()  # gives back a job left unfinished (Ctrl-C)


def run_job_here(worker: Worker, job_id: str) -> Job | None:
    """Run the job ``job_id`` here and now, after taking back the jobs of dead workers (a
    killed run of the same job resumes here), registered as a worker meanwhile. None when
    another live worker holds it."""
    worker.release_dead_workers()
    worker.announce()
    try:
        return worker.run_job(job_id)
    finally:
        worker.retire()
