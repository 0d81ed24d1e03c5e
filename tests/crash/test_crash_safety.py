"""Crash safety and scale: workers killed with SIGKILL mid-job lose nothing, and several
workers share one queue without doing any job twice.

The slow tests run real ``customerkey worker`` processes (``crash_harness``) against the
database of ``db_url`` (SQLite, and PostgreSQL when configured); the fast ones test the
release of a dead worker's jobs directly. Every slow test prints its seed and kills; replay one
with ``CUSTOMERKEY_CRASH_SEED=<seed>``.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
from sqlalchemy import select

from customerkey.clock import FrozenClock
from customerkey.identity.workload_principals import EXCHANGE
from customerkey.jobs.queue import Job, JobQueue, pid_alive
from customerkey.jobs.worker import JobContext, Worker
from customerkey.runtime import Runtime
from customerkey.storage.models import JobRow, MailItemRow, WorkerRow
from customerkey.vault.models import OPERATOR
from tests.support.crash_harness import (
    CRASH_SCALE,
    CrashHarness,
    MailCorpus,
    audit_operations,
    blob_digests,
    dead_pid,
    owner_pid,
    verify_audit,
    verify_items,
    verify_jobs_succeeded,
    verify_move,
    verify_purge,
    verify_refresh,
)
from tests.support.mailfixtures import (
    GRANT,
    KEY_A,
    KEY_B,
    TENANT,
    VAULT_A,
    VAULT_B,
    setup_policy,
)

pytestmark = pytest.mark.storage

HOST = socket.gethostname()


def _enqueue(queue: JobQueue, kind: str, target: str) -> Job:
    with queue.db.transaction() as session:
        return queue.enqueue(session, kind, target, created_by="test", total=1)


# ---------------------------------------------------------------------- release of dead workers


def test_pid_alive_tells_running_from_exited_and_zombie_processes() -> None:
    assert pid_alive(os.getpid())
    assert not pid_alive(dead_pid())
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        assert pid_alive(child.pid)
        os.kill(child.pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while pid_alive(child.pid):  # killed but not reaped yet: a zombie, and dead
            assert time.monotonic() < deadline, "a killed, unreaped child still looks alive"
            time.sleep(0.01)
    finally:
        child.kill()
        child.wait(timeout=30)
    assert not pid_alive(child.pid)


def test_release_dead_workers_requeues_only_jobs_of_dead_workers_on_this_host(
    runtime: Runtime, clock: FrozenClock
) -> None:
    queue = runtime.jobs
    gone = dead_pid()
    queue.announce(f"{HOST}:{gone}:dead", HOST, gone)
    queue.announce(f"{HOST}:{os.getpid()}:live", HOST, os.getpid())
    queue.announce(f"elsewhere:{gone}:remote", "elsewhere.example", gone)
    jobs = []
    for target in "abcd":  # oldest first
        jobs.append(_enqueue(queue, "demo", target))
        clock.advance(1)
    dead_job, live_job, remote_job, waiting = jobs
    assert queue.claim(f"{HOST}:{gone}:dead") is not None
    assert queue.claim(f"{HOST}:{os.getpid()}:live") is not None
    assert queue.claim(f"elsewhere:{gone}:remote") is not None

    assert queue.release_dead_workers(HOST) == [dead_job.id]
    released = queue.get(dead_job.id)
    assert released.state == "queued" and released.lease_owner is None
    assert released.lease_expires_at is None and released.attempts == 1
    assert queue.get(live_job.id).lease_owner == f"{HOST}:{os.getpid()}:live"
    assert queue.get(remote_job.id).lease_owner == f"elsewhere:{gone}:remote"  # not judged here
    assert queue.get(waiting.id).state == "queued"
    with runtime.db.transaction() as session:
        assert sorted(session.scalars(select(WorkerRow.id))) == sorted(
            [f"{HOST}:{os.getpid()}:live", f"elsewhere:{gone}:remote"]
        )
    assert queue.release_dead_workers(HOST) == []  # nothing more to do
    # the released job is claimable at once, long before its lease would have expired
    reclaimed = queue.claim("rescuer")
    assert reclaimed is not None and reclaimed.id == dead_job.id and reclaimed.attempts == 2


def test_a_worker_resumes_jobs_of_killed_workers_at_start_and_while_idle(
    runtime: Runtime, clock: FrozenClock
) -> None:
    queue = runtime.jobs

    def killed_holding(target: str) -> Job:
        """A job leased to a worker that then died (in one step, so that the worker under
        test cannot claim it first), and that worker's registry row."""
        gone = dead_pid()
        owner = f"{HOST}:{gone}:killed"
        with queue.db.transaction() as session:
            job = queue.enqueue(session, "demo", target, created_by="test", total=1)
            row = session.get(JobRow, job.id)
            assert row is not None
            row.state, row.lease_owner, row.attempts = "running", owner, 1
            row.lease_expires_at = clock.now() + queue.lease
        queue.announce(owner, HOST, gone)
        return job

    def wait_succeeded(job: Job, why: str) -> None:
        deadline = time.monotonic() + 30  # the frozen clock never lets a lease expire
        while queue.get(job.id).state != "succeeded":
            assert time.monotonic() < deadline, why
            time.sleep(0.01)

    ran: list[tuple[str, int]] = []

    def handler(job: Job, context: JobContext) -> None:
        ran.append((job.target, job.attempts))
        context.checkpoint(done=1)

    first = killed_holding("at-start")
    worker = Worker(queue, {"demo": handler}, worker_id="rescuer")
    stop = threading.Event()
    thread = threading.Thread(
        target=worker.run_forever,
        args=(stop,),
        kwargs={"poll_seconds": 0.01, "release_every": 0.05},
    )
    thread.start()
    try:
        wait_succeeded(first, "the job of a worker killed before this one started waits")
        second = killed_holding("while-idle")
        wait_succeeded(second, "the job of a worker killed while this one idled waits")
    finally:
        stop.set()
        thread.join(timeout=30)
    assert ran == [("at-start", 2), ("while-idle", 2)]
    with runtime.db.transaction() as session:
        assert session.scalars(select(WorkerRow.id)).all() == []  # every row gone


# ---------------------------------------------------------------------- the crash harness


def _count(rt: Runtime, operation: str, **details: object) -> int:
    return sum(
        1
        for op, d in audit_operations(rt)
        if op == operation and all(d.get(k) == v for k, v in details.items())
    )


def _mailbox_blobs(rt: Runtime, mailbox_id: str) -> set[str]:
    with rt.db.transaction() as session:
        return set(
            session.scalars(select(MailItemRow.blob).where(MailItemRow.mailbox_id == mailbox_id))
        )


REFRESH_KILLS, MOVE_KILLS, PURGE_KILLS, TOTAL_KILLS = (n * CRASH_SCALE for n in (8, 8, 4, 20))
# A DEP each; purged in turn until enough kills were made.
PURGED_REGIONS = ("EU", "AP", "SA", "AF", "ME", "OC", "LA", "NE", "SE", "IN", "JP", "KR")[
    : 3 * CRASH_SCALE
]


def _regional_policy(rt: Runtime, region: str) -> str:
    """<region>-DEP, on root keys in two vaults of its own (so its purge can revoke them)."""
    uris = []
    for vault in (f"Contoso-O365EX-{region}-VaultB1", f"Contoso-O365EX-{region}-VaultB2"):
        rt.vault.create_vault(
            OPERATOR,
            vault,
            subscription="contoso-sub",
            region="westeurope",
            tenant=TENANT,
            purge_protection=True,
        )
        rt.vault.create_key(
            OPERATOR, vault, f"{vault}-Key001", kty="RSA-HSM", key_ops=["wrapKey", "unwrapKey"]
        )
        rt.vault.set_access_policy(OPERATOR, vault, EXCHANGE.app_id, GRANT)
        uris.append(f"https://{vault.lower()}.vault.azure.net/keys/{vault}-Key001")
    return rt.policies.create(OPERATOR, TENANT, f"{region}-DEP", uris, description=region).id


def _purge(rt: Runtime, region: str) -> Job:
    """Revoke the workload's access to the DEP's vaults, request the purge, approve it."""
    for vault in (f"Contoso-O365EX-{region}-VaultB1", f"Contoso-O365EX-{region}-VaultB2"):
        rt.vault.remove_access_policy(OPERATOR, vault, EXCHANGE.app_id)
    rt.policies.request_purge(
        rt.principals.get("admin1@contoso.com").actor(),
        TENANT,
        f"{region}-DEP",
        reason=f"leaving {region}",
        contact="sec@contoso.com",
        workload_principal=EXCHANGE.app_id,
    )
    approver = rt.principals.get("admin2@contoso.com").actor()
    return rt.mail.approve_purge(approver, TENANT, f"{region}-DEP", "admin2@contoso.com")


@pytest.mark.slow
def test_kill_9_during_purge_refresh_and_move_loses_nothing(
    crash_runtime: Runtime, harness: CrashHarness, tmp_path: Path
) -> None:
    rt = crash_runtime
    na = setup_policy(rt)
    regional = {region: _regional_policy(rt, region) for region in PURGED_REGIONS}
    corpus = MailCorpus()
    na_upns = corpus.add(rt, tmp_path, "na", 30, policy="NA-DEP", items=(5, 9, 7, 12, 6, 8))
    regional_upns = {
        region: corpus.add(rt, tmp_path, region.lower(), 6, policy=f"{region}-DEP", items=(6, 10))
        for region in PURGED_REGIONS
    }
    plain = corpus.add(rt, tmp_path, "plain", 4, policy=None, items=(6,))
    assert len(corpus.upns) >= 40 and corpus.item_count >= 300
    for admin, roles in (
        ("admin1@contoso.com", ["tenant-admin"]),
        ("admin2@contoso.com", ["tenant-admin", "purge-approver"]),
    ):
        rt.principals.create(OPERATOR, admin, tenant=TENANT, roles=roles)
    plain_ids = {corpus.mailbox_ids[u] for u in plain}
    plain_blobs = {k: v for k, v in blob_digests(rt).items() if k.split("/")[1] in plain_ids}
    harness.calibrate()

    # -- the data purge path: kills while a DEP's mailboxes are destroyed (a DEP a round)
    purge_kills = 0
    for region in PURGED_REGIONS:
        ids = {corpus.mailbox_ids[u] for u in regional_upns[region]}
        others = {k: v for k, v in blob_digests(rt).items() if k.split("/")[1] not in ids}
        job = _purge(rt, region)
        budget = PURGE_KILLS + 1 - purge_kills  # the last one may aim at the final step
        made = harness.run_jobs(f"purge {region}", [job.id], kills=budget)
        purge_kills += len(made)
        context = harness.describe()
        verify_jobs_succeeded(harness, [job.id], context)
        verify_purge(rt, regional[region], ids, context)
        assert _count(rt, "DataEncryptionPolicyPurged", policy=regional[region]) == 1, (
            f"purge completion applied more than once\n{context}"
        )
        purged = Counter(
            d.get("mailbox") for op, d in audit_operations(rt) if op == "MailboxPurged"
        )
        assert all(purged[m] == 1 for m in ids), f"mailboxes purged: {purged}\n{context}"
        assert blob_digests(rt) == others, f"the purge touched other mailboxes' blobs\n{context}"
        corpus.forget(regional_upns[region])
        verify_items(rt, corpus, corpus.upns, context)  # every other mailbox is readable
        if purge_kills >= PURGE_KILLS:
            break
    assert purge_kills >= PURGE_KILLS, harness.describe()

    # -- refresh of NA-DEP after a key roll: kills while the mailbox keys are re-wrapped
    refresh_kills = 0
    for round_ in range(
        1, 1 + 12 * CRASH_SCALE
    ):  # a final-step kill the job outran ends a round early
        vault, key = (VAULT_B, KEY_B) if round_ % 2 else (VAULT_A, KEY_A)
        rt.vault.rotate_key(OPERATOR, vault, key)
        before = blob_digests(rt)
        job = rt.mail.refresh(OPERATOR, TENANT, "NA-DEP")
        assert job is not None
        budget = min(4, REFRESH_KILLS - refresh_kills)
        refresh_kills += len(harness.run_jobs(f"refresh#{round_}", [job.id], kills=budget))
        context = harness.describe()
        verify_jobs_succeeded(harness, [job.id], context)
        generation = str(job.payload["generation_id"])
        verify_refresh(rt, na.policy_id, generation, before, context)
        assert _count(rt, "DataEncryptionPolicyRefreshComplete", generation=generation) == 1, (
            f"refresh completion applied more than once\n{context}"
        )
        if refresh_kills >= REFRESH_KILLS:
            break
    assert refresh_kills >= REFRESH_KILLS, harness.describe()
    verify_items(rt, corpus, corpus.upns, harness.describe())

    # -- move requests: kills while content is re-encrypted under new mailbox keys
    move_kills = 0
    wanted = max(MOVE_KILLS, TOTAL_KILLS - purge_kills - refresh_kills)
    for round_ in range(1, 1 + 10 * CRASH_SCALE):
        chosen = [na_upns[(6 * (round_ - 1) + i) % len(na_upns)] for i in range(6)]
        ids = {upn: corpus.mailbox_ids[upn] for upn in chosen}
        old_blobs = {upn: _mailbox_blobs(rt, ids[upn]) for upn in chosen}
        moves = {upn: rt.mail.move(OPERATOR, upn) for upn in chosen}
        jobs = [job.id for job in moves.values()]
        budget = min(4, wanted - move_kills)
        move_kills += len(harness.run_jobs(f"move#{round_}", jobs, kills=budget))
        context = harness.describe()
        verify_jobs_succeeded(harness, jobs, context)
        for upn, job in moves.items():
            verify_move(rt, ids[upn], old_blobs[upn], f"{upn}\n{context}")
            new_key = job.payload["key_id"]
            assert _count(rt, "MailboxRekeyComplete", mailbox=ids[upn], key=new_key) == 1, (
                f"{upn}: re-key completion applied more than once\n{context}"
            )
        verify_items(rt, corpus, chosen, context)
        if move_kills >= wanted:
            break
    assert move_kills >= wanted, harness.describe()

    context = harness.describe()
    verify_items(rt, corpus, corpus.upns, context)
    assert {k: v for k, v in blob_digests(rt).items() if k.split("/")[1] in plain_ids} == (
        plain_blobs
    ), f"mailboxes nobody touched changed\n{context}"
    verify_audit(rt, context)
    # -- the kills were many and landed at varied points
    assert len(harness.kills) >= TOTAL_KILLS, context
    phases = Counter(k.phase for k in harness.kills)
    assert phases["mid-job"] >= 4 and phases["before-claim"] >= 1, f"{phases}\n{context}"


# ---------------------------------------------------------------------- several workers


def _move_all(rt: Runtime, corpus: MailCorpus) -> tuple[dict[str, Job], dict[str, set[str]]]:
    old = {upn: _mailbox_blobs(rt, corpus.mailbox_ids[upn]) for upn in corpus.upns}
    return {upn: rt.mail.move(OPERATOR, upn) for upn in corpus.upns}, old


def _verify_moves_once(
    rt: Runtime,
    harness: CrashHarness,
    corpus: MailCorpus,
    moves: dict[str, Job],
    old: dict[str, set[str]],
) -> dict[str, int]:
    """Every move succeeded and completed exactly once; returns each job's attempts."""
    context = harness.describe()
    done = verify_jobs_succeeded(harness, [job.id for job in moves.values()], context)
    completions = Counter(
        (d.get("mailbox"), d.get("key"))
        for op, d in audit_operations(rt)
        if op == "MailboxRekeyComplete"
    )
    for upn, job in moves.items():
        mailbox_id = corpus.mailbox_ids[upn]
        assert completions[(mailbox_id, job.payload["key_id"])] == 1, (
            f"{upn}: re-key completed {completions[(mailbox_id, job.payload['key_id'])]} "
            f"times\n{context}"
        )
        verify_move(rt, mailbox_id, old[upn], f"{upn}\n{context}")
    verify_items(rt, corpus, corpus.upns, context)
    verify_audit(rt, context)
    with rt.db.transaction() as session:
        assert session.scalars(select(WorkerRow.id)).all() == [], "a worker row was left"
    return {j.id: j.attempts for j in done.values()}


@pytest.mark.slow
def test_two_workers_share_the_queue_without_double_work(
    crash_runtime: Runtime, harness: CrashHarness, tmp_path: Path
) -> None:
    rt = crash_runtime
    setup_policy(rt)
    corpus = MailCorpus()
    corpus.add(rt, tmp_path, "box", 30, policy="NA-DEP", items=(4, 6, 5))
    procs = [harness.spawn(0), harness.spawn(1)]
    harness.wait_announced(procs)
    moves, old = _move_all(rt, corpus)
    harness.wait_finished("two workers", procs, [job.id for job in moves.values()], deadline=120)
    for proc in procs:
        harness.stop(proc)
    attempts = _verify_moves_once(rt, harness, corpus, moves, old)
    assert set(attempts.values()) == {1}, f"a job was claimed twice: {attempts}"
    completions = Counter(
        d.get("mailbox") for op, d in audit_operations(rt) if op == "MailboxRekeyComplete"
    )
    assert completions == Counter(corpus.mailbox_ids.values()), f"{completions}"
    owners = {owner_pid(owner, harness.owner_pids) for owner in harness.owners_seen}
    assert owners == {p.pid for p in procs}, f"both workers should have worked: {owners}"


@pytest.mark.slow
def test_two_workers_one_killed_again_and_again(
    crash_runtime: Runtime, harness: CrashHarness, tmp_path: Path
) -> None:
    rt = crash_runtime
    setup_policy(rt)
    corpus = MailCorpus()
    corpus.add(rt, tmp_path, "box", 24, policy="NA-DEP", items=(6, 9, 12))
    harness.calibrate()
    kills = 0
    for round_ in range(1, 6):  # two workers drain a queue fast: move everything again
        moves, old = _move_all(rt, corpus)
        jobs = [job.id for job in moves.values()]
        made = harness.run_jobs(f"two workers#{round_}", jobs, kills=6 - kills, workers=2)
        kills += len(made)
        attempts = _verify_moves_once(rt, harness, corpus, moves, old)
        # a kill sends back at most the one job its worker held
        assert sum(attempts.values()) <= len(jobs) + len(made), f"{attempts}\n{harness.describe()}"
        if kills >= 6:
            break
    assert kills >= 6, harness.describe()


def _release_together(queue: JobQueue, workers: int) -> tuple[list[list[str]], list[Exception]]:
    barrier = threading.Barrier(workers)
    released: list[list[str]] = []
    errors: list[Exception] = []

    def release() -> None:
        barrier.wait()
        try:
            released.append(queue.release_dead_workers(HOST))
        except Exception as exc:
            errors.append(exc)

    threads = [threading.Thread(target=release) for _ in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    return released, errors


@pytest.mark.filterwarnings("error::sqlalchemy.exc.SAWarning")
def test_workers_releasing_the_same_dead_worker_at_once_do_not_trip(runtime: Runtime) -> None:
    """Workers that start together all release: the job goes back to the queue once, and
    nobody errs (or warns) over the worker row another one deleted first."""
    queue = runtime.jobs
    for round_ in range(15):
        gone = dead_pid()
        owner = f"{HOST}:{gone}:dead{round_}"
        queue.announce(owner, HOST, gone)
        job = _enqueue(queue, "demo", f"r{round_}")
        assert queue.claim(owner) is not None
        released, errors = _release_together(queue, 3)
        assert not errors, errors
        assert sorted(released) == [[], [], [job.id]], released
        assert queue.get(job.id).state == "queued"
        with runtime.db.transaction() as session:  # out of the way of the next round
            row = session.get(JobRow, job.id)
            assert row is not None
            row.state = "succeeded"
