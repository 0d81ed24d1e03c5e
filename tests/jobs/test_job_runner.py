"""The one runner for "run the job here, or wait for the worker running it"
(``customerkey.jobs.runner``), and the cmdlet shell's jobs, which go through it.

A command killed while it ran a job here leaves a worker row whose pid is gone and a job
leased to it. The next command on this host must take that job back and finish it at once:
not count the dead worker as live and wait (for the lease to run out, 60 s).
"""

from __future__ import annotations

import io
import socket
import subprocess
import sys
import time

import pytest
from sqlalchemy import select

from customerkey.clock import FrozenClock
from customerkey.jobs.queue import Job, JobQueue, pid_alive
from customerkey.jobs.runner import JobWaitTimeout, ProgressFn, run_or_wait
from customerkey.jobs.worker import JobContext, Worker
from customerkey.pwsh.engine.session import Session
from customerkey.runtime import Runtime
from customerkey.storage.models import JobRow, WorkerRow

pytestmark = pytest.mark.storage

HOST = socket.gethostname()
KIND = "runner-test"


def gone_pid() -> int:
    """The pid of a process that has certainly exited and been reaped."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait(timeout=30)
    assert not pid_alive(child.pid)
    return child.pid


def held_by_dead_worker(queue: JobQueue, clock: FrozenClock, target: str) -> tuple[Job, str]:
    """A job leased to a worker of this host that was then killed (its row still there, as
    fresh as a live worker's)."""
    gone = gone_pid()
    owner = f"{HOST}:{gone}:killed"
    queue.announce(owner, HOST, gone)
    with queue.db.transaction() as session:
        job = queue.enqueue(session, KIND, target, created_by="test", total=2)
        row = session.get(JobRow, job.id)
        assert row is not None
        row.state, row.lease_owner, row.attempts = "running", owner, 1
        row.lease_expires_at = clock.now() + queue.lease
    assert owner in queue.live_workers()  # the dead worker still looks live
    return job, owner


class Host:
    """The runtime's queue with a worker that knows the test's job kind."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.jobs = runtime.jobs
        self.seen: list[tuple[str, int, list[str]]] = []

    def handler(self, job: Job, context: JobContext) -> None:
        # While it runs a job here, the runner is announced as a (live) worker.
        self.seen.append((job.target, job.attempts, self.jobs.live_workers()))
        context.checkpoint(done=1, total=2)
        context.checkpoint(done=2, total=2)

    def worker(self, *, on_progress: ProgressFn | None = None) -> Worker:
        return Worker(self.jobs, {KIND: self.handler}, on_progress=on_progress)


def forbid_sleeping(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """From now on sleeping fails the test: taking a dead worker's job back needs no wait."""
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        raise AssertionError(f"slept {seconds} s waiting for a job a dead worker held")

    monkeypatch.setattr(time, "sleep", sleep)
    return slept


def worker_rows(runtime: Runtime) -> list[str]:
    with runtime.db.transaction() as session:
        return list(session.scalars(select(WorkerRow.id)))


def test_the_shell_takes_back_and_finishes_a_job_a_dead_worker_held(
    runtime: Runtime,
    clock: FrozenClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    host = Host(runtime)
    monkeypatch.setattr(runtime, "worker", host.worker)
    job, dead = held_by_dead_worker(runtime.jobs, clock, "shell")
    slept = forbid_sleeping(monkeypatch)
    observed: list[tuple[int, int]] = []
    shell = Session(
        lambda: runtime,
        out=io.StringIO(),
        err=io.StringIO(),
        on_job_progress=lambda _job, done, total: observed.append((done, total)),
    )

    (done,) = shell.run_jobs([job], "Testing")

    assert done.id == job.id and done.state == "succeeded" and done.attempts == 2
    ((target, attempts, live),) = host.seen
    assert (target, attempts) == ("shell", 2)
    assert dead not in live and len(live) == 1  # announced itself; the dead one is gone
    assert observed == [(1, 2), (2, 2)]
    assert worker_rows(runtime) == []  # retired after the job
    assert slept == []


def test_the_runner_takes_back_a_dead_workers_job_and_reports_progress(
    runtime: Runtime, clock: FrozenClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    host = Host(runtime)
    job, dead = held_by_dead_worker(runtime.jobs, clock, "runner")
    slept = forbid_sleeping(monkeypatch)
    progress: list[tuple[str, int, int]] = []
    polls: list[list[str]] = []

    finished = run_or_wait(
        host,
        [job.id],
        on_progress=lambda j, done, total: progress.append((j.id, done, total)),
        on_poll=lambda jobs: polls.append([j.state for j in jobs]),
    )

    assert [(j.id, j.state) for j in finished] == [(job.id, "succeeded")]
    assert slept == []
    assert progress == [(job.id, 1, 2), (job.id, 2, 2)]
    assert polls == [["queued"], ["succeeded"]]
    ((_, attempts, live),) = host.seen
    assert attempts == 2 and dead not in live and len(live) == 1
    assert worker_rows(runtime) == []


def test_the_runner_waits_for_a_live_worker_and_times_out(runtime: Runtime) -> None:
    host = Host(runtime)
    queue = runtime.jobs
    queue.announce("elsewhere:1:live", "elsewhere.example", 1)  # live, on another host
    with queue.db.transaction() as session:
        job = queue.enqueue(session, KIND, "waiting", created_by="test", total=1)
    now = [0.0]
    naps: list[float] = []

    def sleep(seconds: float) -> None:
        naps.append(seconds)
        now[0] += seconds

    with pytest.raises(JobWaitTimeout, match=r"Timed out waiting for 1 job\(s\)\."):
        run_or_wait(host, [job.id], timeout=1.0, sleep=sleep, clock=lambda: now[0])
    assert host.seen == []  # not run here: a worker is live
    assert naps and all(n == naps[0] for n in naps) and sum(naps) >= 1.0
    assert queue.get(job.id).state == "queued"
