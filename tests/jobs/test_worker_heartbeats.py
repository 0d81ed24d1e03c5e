"""The worker registry's heartbeats (``jobs.heartbeats``), on a frozen clock: who is judged dead,
by whom, one unit either side of the timeout; what happens to the dead worker's jobs; how the
job list shows them; that a worker declared dead cannot finish the job another host took over;
and that the heartbeat thread beats while a long batch runs. On SQLite and PostgreSQL."""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from customerkey import config
from customerkey.clock import FrozenClock
from customerkey.config import Settings, load_settings
from customerkey.errors import BadParameter
from customerkey.jobs.heartbeats import boot_id, pid_namespace
from customerkey.jobs.queue import Job, JobQueue, LeaseLost
from customerkey.jobs.worker import JobContext, Worker
from customerkey.runtime import Runtime
from customerkey.storage.models import WorkerRow
from tests.support.crash_harness import dead_pid

pytestmark = pytest.mark.storage

TIMEOUT = timedelta(seconds=20)
TICK = timedelta(microseconds=1)


def host_queue(runtime: Runtime, clock: FrozenClock, host: str) -> JobQueue:
    """The queue as a worker on host ``host`` sees it (one database, one clock)."""
    return JobQueue(
        runtime.db,
        clock=clock,
        host_id=host,
        heartbeat=timedelta(seconds=5),
        heartbeat_timeout=TIMEOUT,
    )


def running_job(queue: JobQueue, owner: str, target: str = "t") -> Job:
    with queue.db.transaction() as session:
        job = queue.enqueue(session, "demo", target, created_by="test", total=10)
    claimed = queue.claim_job(job.id, owner)
    assert claimed is not None
    queue.checkpoint(job.id, owner, done=4, checkpoint={"next": 4})
    return claimed


def worker_ids(runtime: Runtime) -> list[str]:
    with runtime.db.read() as session:
        return sorted(session.scalars(select(WorkerRow.id)))


def test_a_worker_of_another_host_is_dead_one_tick_after_its_heartbeat_timed_out(
    runtime: Runtime, clock: FrozenClock
) -> None:
    host_a = host_queue(runtime, clock, "host-a")
    host_b = host_queue(runtime, clock, "host-b")
    host_a.announce("a:1", pid=os.getpid())
    job = running_job(host_a, "a:1")
    clock.advance(TIMEOUT)  # exactly the timeout: still alive
    assert host_b.release_dead_workers() == []
    assert host_b.get(job.id).shown_state == "running"
    clock.advance(TICK)
    assert host_b.get(job.id).shown_state == "interrupted"  # shown so before it is released
    assert host_b.release_dead_workers() == [job.id]
    released = host_b.get(job.id)
    assert (released.state, released.lease_owner, released.lease_expires_at) == (
        "queued",
        None,
        None,
    )
    # the checkpoint is kept, and the claim stays counted exactly as a lease running out
    assert released.checkpoint == {"next": 4} and released.progress_done == 4
    assert released.attempts == 1 and released.error is None
    assert worker_ids(runtime) == []
    resumed = host_b.claim("b:1")
    assert resumed is not None and resumed.id == job.id and resumed.attempts == 2


def test_each_heartbeat_puts_the_timeout_off(runtime: Runtime, clock: FrozenClock) -> None:
    host_a = host_queue(runtime, clock, "host-a")
    host_b = host_queue(runtime, clock, "host-b")
    host_a.announce("a:1", pid=os.getpid())
    job = running_job(host_a, "a:1")
    for _ in range(5):
        clock.advance(TIMEOUT)
        host_a.announce("a:1", pid=os.getpid())  # a beat
    clock.advance(TIMEOUT)
    assert host_b.release_dead_workers() == []
    assert host_b.get(job.id).lease_owner == "a:1"
    assert host_b.live_workers() == ["a:1"]
    clock.advance(TICK)
    assert host_b.live_workers() == []


def test_on_this_host_a_dead_pid_of_this_boot_is_released_at_once(
    runtime: Runtime, clock: FrozenClock
) -> None:
    here = host_queue(runtime, clock, "host-a")
    gone = dead_pid()
    here.announce("a:dead", pid=gone)
    here.announce("a:live", pid=os.getpid())
    dead_job = running_job(here, "a:dead", "x")
    live_job = running_job(here, "a:live", "y")
    assert here.get(dead_job.id).shown_state == "interrupted"
    assert here.get(live_job.id).shown_state == "running"
    # another host cannot judge a pid of this host: it waits for the heartbeat
    assert host_queue(runtime, clock, "host-b").release_dead_workers() == []
    assert here.release_dead_workers() == [dead_job.id]
    assert worker_ids(runtime) == ["a:live"]


@pytest.mark.parametrize(
    ("boot", "namespace"),
    [("another-boot", "ours"), ("ours", "pid:[1]"), (None, "ours")],
    ids=["rebooted", "other-pid-namespace", "boot-unknown"],
)
def test_a_pid_of_another_boot_or_pid_namespace_is_judged_by_its_heartbeat_alone(
    runtime: Runtime, clock: FrozenClock, boot: str | None, namespace: str
) -> None:
    """After a reboot the pid may name another process (so a live pid proves nothing), and
    a dead one in another namespace proves nothing either: only the heartbeat decides."""
    here = host_queue(runtime, clock, "host-a")
    ours = {"ours": None}

    def resolve(value: str | None, own: Callable[[], str | None]) -> str | None:
        return own() if value in ours else value

    gone = dead_pid()
    for owner, pid in (("a:reused", os.getpid()), ("a:gone", gone)):
        here.announce(
            owner,
            pid=pid,
            boot=resolve(boot, boot_id),
            namespace=resolve(namespace, pid_namespace),
        )
    reused = running_job(here, "a:reused", "x")
    gone_job = running_job(here, "a:gone", "y")
    assert here.release_dead_workers() == []
    assert here.get(gone_job.id).shown_state == "running"
    clock.advance(TIMEOUT + TICK)
    assert sorted(here.release_dead_workers()) == sorted([reused.id, gone_job.id])


def test_a_row_without_a_heartbeat_waits_for_its_lease(
    runtime: Runtime, clock: FrozenClock
) -> None:
    """A row written before migration 0012 (no heartbeat, no boot id) of another host."""
    old = host_queue(runtime, clock, "old-host")
    old.announce("old:1", pid=1, boot=None, namespace=None)
    with runtime.db.transaction() as session:
        row = session.get(WorkerRow, "old:1")
        assert row is not None
        row.heartbeat_at = None
    job = running_job(old, "old:1")
    clock.advance(timedelta(seconds=59))
    judge = host_queue(runtime, clock, "host-b")
    assert judge.release_dead_workers() == []
    assert judge.get(job.id).shown_state == "running"
    clock.advance(timedelta(seconds=1) + TICK)  # the lease (60 s) has run out
    assert judge.get(job.id).shown_state == "interrupted"
    assert judge.claim("b:1") is not None


def test_a_dead_workers_job_asked_to_stop_ends_cancelled(
    runtime: Runtime, clock: FrozenClock
) -> None:
    host_a = host_queue(runtime, clock, "host-a")
    host_a.announce("a:1", pid=os.getpid())
    job = running_job(host_a, "a:1")
    with runtime.db.transaction() as session:
        host_a.request_cancel(session, job.id, by="ops")
    clock.advance(TIMEOUT + TICK)
    judge = host_queue(runtime, clock, "host-b")
    assert judge.release_dead_workers() == [job.id]
    ended = judge.get(job.id)
    assert ended.state == "cancelled" and ended.error == "Cancelled by ops."


def test_a_worker_declared_dead_cannot_finish_the_job_another_host_took_over(
    runtime: Runtime, clock: FrozenClock
) -> None:
    host_a = host_queue(runtime, clock, "host-a")
    host_b = host_queue(runtime, clock, "host-b")
    host_a.announce("a:1", pid=os.getpid())
    job = running_job(host_a, "a:1")
    clock.advance(TIMEOUT + TICK)  # host a stalls (a partition, a pause) past the timeout
    assert host_b.release_dead_workers() == [job.id]
    assert host_b.claim("b:1") is not None
    host_b.checkpoint(job.id, "b:1", done=7, checkpoint={"next": 7})
    # host a comes back: its heartbeat enters it again, but the job is no longer its own
    host_a.announce("a:1", pid=os.getpid())
    with pytest.raises(LeaseLost):
        host_a.checkpoint(job.id, "a:1", done=9, checkpoint={"next": 9})
    with pytest.raises(LeaseLost):
        host_a.finish(job.id, "a:1")
    with pytest.raises(LeaseLost):
        host_a.fail(job.id, "a:1", "late")
    assert host_a.release(job.id, "a:1") is None
    host_a.retire("a:1")  # gives back nothing that is not its own
    assert host_b.get(job.id).lease_owner == "b:1"
    assert host_b.get(job.id).checkpoint == {"next": 7}
    ended = host_b.finish(job.id, "b:1")
    assert ended.state == "succeeded" and ended.attempts == 2


def test_the_heartbeat_beats_while_a_long_batch_runs_and_stops_when_the_worker_retires(
    runtime: Runtime, clock: FrozenClock
) -> None:
    host_a = JobQueue(
        runtime.db,
        clock=clock,
        host_id="host-a",
        heartbeat=timedelta(milliseconds=10),
        heartbeat_timeout=TIMEOUT,
    )
    host_b = host_queue(runtime, clock, "host-b")
    in_batch = threading.Event()
    finish_batch = threading.Event()

    def long_batch(job: Job, context: JobContext) -> None:
        in_batch.set()
        assert finish_batch.wait(60)
        context.checkpoint(done=10)

    with runtime.db.transaction() as session:
        job = host_a.enqueue(session, "long", "t", created_by="test", total=10)
    worker = Worker(host_a, {"long": long_batch}, worker_id="a:long")
    stop = threading.Event()
    thread = threading.Thread(
        target=worker.run_forever, args=(stop,), kwargs={"poll_seconds": 0.01}
    )
    thread.start()
    try:
        assert in_batch.wait(60)
        for _ in range(3):  # three timeouts pass while the batch runs; each beat renews it
            clock.advance(TIMEOUT)
            wait_for(lambda: heartbeat_of(runtime, "a:long") == clock.now())
            assert host_b.release_dead_workers() == []
        assert host_b.get(job.id).shown_state == "running"
        finish_batch.set()
        wait_for(lambda: host_b.get(job.id).state == "succeeded")
    finally:
        finish_batch.set()
        stop.set()
        thread.join(timeout=60)
    assert not thread.is_alive()
    assert worker_ids(runtime) == []  # retired, and no beat entered it again
    clock.advance(timedelta(seconds=1))
    time.sleep(0.05)  # five beat intervals: a beat still going would enter it again
    assert worker_ids(runtime) == []


def heartbeat_of(runtime: Runtime, worker_id: str) -> object:
    with runtime.db.read() as session:
        row = session.get(WorkerRow, worker_id)
        return None if row is None else row.heartbeat_at


def wait_for(condition: Callable[[], bool], seconds: float = 30.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


def test_the_runtimes_queue_takes_its_host_and_heartbeat_from_the_settings(
    db_url: str, tmp_path: Path, clock: FrozenClock
) -> None:
    settings = Settings(
        home=tmp_path / "home",
        database_url=db_url,
        host_id="rack7-node3",
        worker_heartbeat_seconds=2,
        worker_timeout_seconds=9,
    )
    rt = Runtime.open(settings, clock=clock)
    try:
        assert rt.jobs.host_id == "rack7-node3"
        assert rt.jobs.heartbeat_interval == timedelta(seconds=2)
        assert rt.jobs.heartbeat_timeout == timedelta(seconds=9)
        worker = rt.worker(worker_id="w")
        worker.announce()
        try:
            with rt.db.read() as session:
                row = session.get(WorkerRow, "w")
                assert row is not None
                assert (row.host, row.pid, row.boot_id, row.pid_namespace) == (
                    "rack7-node3",
                    os.getpid(),
                    boot_id(),
                    pid_namespace(),
                )
                assert row.heartbeat_at == clock.now()
        finally:
            worker.retire()
        with rt.db.read() as session:
            assert session.get(WorkerRow, "w") is None
    finally:
        rt.close()


def test_heartbeat_settings_defaults_and_bounds(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for name in ("HOST_ID", "WORKER_HEARTBEAT_SECONDS", "WORKER_TIMEOUT_SECONDS"):
        monkeypatch.delenv(f"CUSTOMERKEY_{name}", raising=False)
    settings = load_settings(home=tmp_path)
    assert (settings.worker_heartbeat_seconds, settings.worker_timeout_seconds) == (5.0, 20.0)
    assert load_settings(home=tmp_path, worker_timeout_seconds=10).worker_timeout_seconds == 10
    with pytest.raises(BadParameter) as refused:
        load_settings(home=tmp_path, worker_timeout_seconds=9.9)
    assert str(refused.value) == (
        "Invalid settings: settings: Value error, CUSTOMERKEY_WORKER_TIMEOUT_SECONDS must be "
        "at least twice CUSTOMERKEY_WORKER_HEARTBEAT_SECONDS."
    )
    monkeypatch.setenv("CUSTOMERKEY_HOST_ID", "from-env")
    assert load_settings(home=tmp_path).resolved_host_id() == "from-env"


def test_the_host_id_defaults_to_the_machine_id_else_the_hostname(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    machine_id = tmp_path / "machine-id"
    machine_id.write_text("0123456789abcdef0123456789abcdef\n")
    monkeypatch.setattr(config, "MACHINE_ID_FILE", machine_id)
    assert config.default_host_id() == "0123456789abcdef0123456789abcdef"
    assert Settings(home=tmp_path).resolved_host_id() == "0123456789abcdef0123456789abcdef"
    machine_id.write_text("\n")  # set but empty (an image not booted yet)
    assert config.default_host_id() == socket.gethostname()
    monkeypatch.setattr(config, "MACHINE_ID_FILE", tmp_path / "missing")
    assert config.default_host_id() == socket.gethostname()


def test_this_process_has_a_boot_id_and_a_pid_namespace() -> None:
    assert boot_id() == Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    assert pid_namespace() == os.readlink("/proc/self/ns/pid")
