"""The job queue and workers against a real database."""

from __future__ import annotations

import threading
from datetime import timedelta
from pathlib import Path

import pytest

from customerkey.clock import FrozenClock
from customerkey.jobs.queue import MAX_CLAIMS, Job, JobQueue, LeaseLost
from customerkey.jobs.worker import JobContext, PermanentJobError, Worker
from customerkey.runtime import Runtime
from customerkey.vault.models import OPERATOR
from tests.support.mailfixtures import TENANT, setup_policy, write_mbox

pytestmark = pytest.mark.storage


def _enqueue(queue: JobQueue, kind: str = "demo", target: str = "t") -> Job:
    with queue.db.transaction() as session:
        return queue.enqueue(session, kind, target, created_by="test", total=3)


def test_claim_checkpoint_finish(runtime: Runtime) -> None:
    queue = runtime.jobs
    job = _enqueue(queue)
    claimed = queue.claim("w1")
    assert claimed is not None and claimed.id == job.id and claimed.state == "running"
    assert claimed.attempts == 1 and claimed.lease_owner == "w1"
    assert queue.claim("w2") is None  # leased
    queue.checkpoint(job.id, "w1", done=2, checkpoint={"last": 2})
    with pytest.raises(LeaseLost):
        queue.checkpoint(job.id, "w2", done=3)
    finished = queue.finish(job.id, "w1")
    assert finished.state == "succeeded" and finished.progress_done == 3
    assert finished.checkpoint == {"last": 2} and finished.percent == 100.0


def test_expired_lease_is_reclaimed_and_old_owner_loses_it(
    runtime: Runtime, clock: FrozenClock
) -> None:
    queue = runtime.jobs
    job = _enqueue(queue)
    assert queue.claim("dead-worker") is not None
    clock.advance(queue.lease + timedelta(seconds=1))
    reclaimed = queue.claim("w2")
    assert reclaimed is not None and reclaimed.id == job.id and reclaimed.attempts == 2
    with pytest.raises(LeaseLost):
        queue.checkpoint(job.id, "dead-worker", done=1)
    with pytest.raises(LeaseLost):
        queue.finish(job.id, "dead-worker")
    assert queue.finish(job.id, "w2").state == "succeeded"


def test_a_job_whose_worker_dies_every_time_fails_instead_of_running_forever(
    runtime: Runtime, clock: FrozenClock
) -> None:
    queue = runtime.jobs
    job = _enqueue(queue, target="poison")
    for attempt in range(1, MAX_CLAIMS + 1):
        claimed = queue.claim(f"w{attempt}", ["demo"])
        assert claimed is not None and claimed.id == job.id and claimed.attempts == attempt
        clock.advance(queue.lease + timedelta(seconds=1))  # its worker died: the lease runs out
    other = _enqueue(queue, target="fine")
    # the next claim gives up on it, says why, and takes the next job instead
    claimed = queue.claim("w-last", ["demo"])
    assert claimed is not None and claimed.id == other.id
    gave_up = queue.get(job.id)
    assert gave_up.state == "failed" and gave_up.finished_at is not None
    assert f"Gave up after {MAX_CLAIMS} attempts" in (gave_up.error or "")
    assert queue.claim_job(job.id, "w-x") is None  # finished: nothing to claim


def test_failures_retry_then_fail_and_permanent_errors_fail_at_once(runtime: Runtime) -> None:
    calls: list[int] = []

    def flaky(job: Job, context: JobContext) -> None:
        calls.append(job.attempts)
        raise RuntimeError("vault down")

    def broken(job: Job, context: JobContext) -> None:
        raise PermanentJobError("target gone")

    worker = Worker(runtime.jobs, {"flaky": flaky, "broken": broken})
    flaky_job = _enqueue(runtime.jobs, "flaky")
    broken_job = _enqueue(runtime.jobs, "broken")
    worker.run_until_idle()
    assert runtime.jobs.get(flaky_job.id).state == "failed"
    assert calls == [1, 2, 3, 4, 5]
    assert "vault down" in (runtime.jobs.get(flaky_job.id).error or "")
    final = runtime.jobs.get(broken_job.id)
    assert final.state == "failed" and final.attempts == 1 and final.error == "target gone"


def test_two_workers_never_run_one_job_twice(runtime: Runtime) -> None:
    ran: list[str] = []
    lock = threading.Lock()

    def record(job: Job, context: JobContext) -> None:
        with lock:
            ran.append(job.id)
        context.checkpoint(done=1)

    jobs = [_enqueue(runtime.jobs, "rec", f"t{i}") for i in range(40)]
    workers = [Worker(runtime.jobs, {"rec": record}, worker_id=f"w{i}") for i in range(2)]
    threads = [threading.Thread(target=w.run_until_idle) for w in workers]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert sorted(ran) == sorted(j.id for j in jobs)
    assert all(runtime.jobs.get(j.id).state == "succeeded" for j in jobs)


def test_rekey_interrupted_midway_resumes_without_loss(
    runtime: Runtime, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    setup_policy(runtime)
    mail = runtime.mail
    mail.create_mailbox(OPERATOR, TENANT, "bob@contoso.com")
    originals = write_mbox(tmp_path / "bob.mbox", 25)
    mail.import_messages(OPERATOR, "bob@contoso.com", tmp_path / "bob.mbox")
    monkeypatch.setattr(runtime.mail, "rekey_batch", 4)
    job = mail.set_policy(OPERATOR, "bob@contoso.com", "NA-DEP")
    assert job is not None
    # A worker that dies inside its second batch, before that batch commits: the lease
    # stays with it and the first batch (4 items) is all that was recorded.
    seen = {"n": 0}
    real_checkpoint = JobQueue.checkpoint

    def dying_checkpoint(self: JobQueue, *args: object, **kwargs: object) -> None:
        real_checkpoint(self, *args, **kwargs)  # type: ignore[arg-type]
        seen["n"] += 1
        if seen["n"] == 2:
            raise SystemExit("killed")

    monkeypatch.setattr(JobQueue, "checkpoint", dying_checkpoint)
    with pytest.raises(SystemExit):
        runtime.worker(worker_id="doomed").run_one()
    monkeypatch.setattr(JobQueue, "checkpoint", real_checkpoint)
    half = runtime.jobs.get(job.id)
    assert half.state == "running" and half.progress_done == 4
    assert [d for _, d in mail.iter_messages(OPERATOR, "bob@contoso.com")] == originals
    runtime.clock.advance(runtime.jobs.lease + timedelta(seconds=1))  # type: ignore[attr-defined]
    finished = runtime.worker(worker_id="rescuer").run_one()
    assert finished is not None and finished.state == "succeeded" and finished.attempts == 2
    assert [d for _, d in mail.iter_messages(OPERATOR, "bob@contoso.com")] == originals
    assert mail.statistics(OPERATOR, "bob@contoso.com").is_encrypted
