"""A crash harness: real ``customerkey worker`` processes, killed with SIGKILL at random points.

The test process prepares state in-process (``Runtime.open`` with the system clock: workers
are separate processes on real time) and queues jobs; ``CrashHarness.run_jobs`` then starts
``customerkey --home HOME worker --poll 0.05`` subprocesses (the CLI run as ``python -m
customerkey.cli.main`` with this interpreter and this source tree) on the same home folder
and database (``CUSTOMERKEY_DATABASE_URL``), with small batches (``CUSTOMERKEY_REKEY_BATCH``,
``CUSTOMERKEY_REFRESH_BATCH``) so that kills land inside jobs. It SIGKILLs one of them at a
point drawn from ``random.Random(seed)`` and starts a new one, again and again, until every
job has finished. A kill point is either

- ``startup``: a delay after the process was spawned, up to a little past the time a worker
  needs to start and claim (imports, connecting, releasing dead workers, announcing, claiming);
- ``progress``: once the victim holds a job whose committed progress has covered a drawn
  fraction of the work left when it took the job (early, middle or late; or 1.0, the final
  step: after the last checkpoint, before the job is marked finished), plus a short drawn
  delay.

Where each kill really landed is read back from the database after the process was reaped
(``Kill.phase``). Every kill, and the seed, are in ``CrashHarness.describe()``, which test
assertions print, so a failure can be replayed with ``CUSTOMERKEY_CRASH_SEED=<seed>``.

Workers run with a job lease far longer than any round's deadline, so a killed worker's job
can only come back quickly through ``JobQueue.release_dead_workers``; if that broke, a round
would time out. ``MailCorpus`` builds the mailboxes and remembers every item's digest, and the
``verify_*`` helpers check what must hold after a crashed job has been finished.
"""

from __future__ import annotations

import hashlib
import math
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from sqlalchemy import create_engine, func, select
from sqlalchemy.orm import Session

import customerkey
from customerkey.jobs.queue import pid_alive
from customerkey.runtime import Runtime
from customerkey.storage.database import normalize_url
from customerkey.storage.models import (
    GenerationRow,
    JobRow,
    MailboxKeyRow,
    MailboxRow,
    MailItemRow,
    PolicyRow,
    WorkerRow,
)
from customerkey.vault.models import OPERATOR
from customerkey.workloads.mail.blobs import parse_item_blob
from tests.support.mailfixtures import TENANT, write_mbox

SEED_ENV = "CUSTOMERKEY_CRASH_SEED"
# The crash tests' kill counts are multiplied by this (CI: 1; the full form: 3 or more).
CRASH_SCALE = max(1, int(os.environ.get("CUSTOMERKEY_CRASH_SCALE", "1")))
# One deck of kill points, dealt in a seeded shuffle: two during start-up, one each early,
# in the middle and late in a job, and one after its last checkpoint (the final step).
KILL_DECK = ("startup", "startup", "early", "middle", "late", "final")
POLL = 0.002  # seconds between looks at the job table while waiting for a kill point
# What a worker's log shows when a job attempt failed or its loop erred.
PROBLEM_MARKS = ("Traceback", "failed (attempt", "worker loop error", "taken over", "Error (")
SRC_DIR = Path(customerkey.__file__).resolve().parents[1]


def pick_seed() -> int:
    """The seed to use: ``CUSTOMERKEY_CRASH_SEED`` (to replay a failure's kill plan) or a
    fresh one, so that each run kills at new points."""
    chosen = os.environ.get(SEED_ENV)
    if chosen:
        return int(chosen)
    return random.SystemRandom().randrange(2**31)


def dead_pid() -> int:
    """The pid of a process that has certainly exited and been reaped."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait(timeout=30)
    assert not pid_alive(child.pid)
    return child.pid


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class JobState:
    id: str
    kind: str
    target: str
    state: str
    lease_owner: str | None
    progress_done: int
    progress_total: int
    attempts: int
    error: str | None

    @property
    def finished(self) -> bool:
        return self.state in ("succeeded", "failed")


@dataclass(frozen=True)
class Kill:
    label: str
    worker: int  # which worker slot was killed
    trigger: str  # startup | progress
    aim: str  # the drawn point: "+1.234s" after spawn, or "62%+0.012s"
    at: float  # seconds between spawn and kill
    phase: str  # where it landed: before-claim | between-jobs | claimed | mid-job | final-step
    job: str | None
    progress: str

    def __str__(self) -> str:
        where = f" job {self.job[:8]} at {self.progress}" if self.job else ""
        return (
            f"{self.label}: worker#{self.worker} {self.trigger} {self.aim} -> killed "
            f"{self.at:.3f}s after spawn, {self.phase}{where}"
        )


def owner_pid(owner: str, known: dict[str, int] | None = None) -> int | None:
    """The pid of the worker whose id is ``owner``: from the worker registry as last read
    (``known``: worker id -> pid), else from the id itself, whose first all-digit field after
    the host is the pid ("<host>:<pid>:<random>"; an id naming the host and boot too keeps
    the pid a field of its own)."""
    if known and owner in known:
        return known[owner]
    return next((int(part) for part in owner.split(":")[1:] if part.isdigit()), None)


@dataclass
class WorkerProcess:
    slot: int
    popen: subprocess.Popen[bytes]
    log_path: Path
    log: IO[bytes]
    spawned_at: float
    held_a_job: bool = False
    owner_pids: dict[str, int] = field(default_factory=dict)  # the harness's, shared

    @property
    def pid(self) -> int:
        return self.popen.pid

    def holds(self, job: JobState) -> bool:
        return (
            job.state == "running"
            and job.lease_owner is not None
            and owner_pid(job.lease_owner, self.owner_pids) == self.pid
        )


class HarnessFailure(AssertionError):
    pass


@dataclass
class CrashHarness:
    home: Path
    db_url: str
    seed: int
    log_dir: Path
    rekey_batch: int = 2
    refresh_batch: int = 2
    import_batch: int = 5
    lease_seconds: int = 3600
    kills: list[Kill] = field(default_factory=list)
    startup_estimate: float = 0.0
    owners_seen: set[str] = field(default_factory=set)
    owner_pids: dict[str, int] = field(default_factory=dict)  # worker id -> pid, as registered
    _spawned: int = 0
    _deck: list[str] = field(default_factory=list)
    _live: list[WorkerProcess] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self._probe = create_engine(normalize_url(self.db_url))

    # ------------------------------------------------------------------ processes

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            CUSTOMERKEY_HOME=str(self.home),
            CUSTOMERKEY_DATABASE_URL=self.db_url,
            CUSTOMERKEY_REKEY_BATCH=str(self.rekey_batch),
            CUSTOMERKEY_REFRESH_BATCH=str(self.refresh_batch),
            CUSTOMERKEY_IMPORT_BATCH=str(self.import_batch),
            CUSTOMERKEY_JOB_LEASE_SECONDS=str(self.lease_seconds),
            PYTHONPATH=os.pathsep.join(
                [str(SRC_DIR), *filter(None, [os.environ.get("PYTHONPATH")])]
            ),
            PYTHONUNBUFFERED="1",
        )
        return env

    def spawn(
        self, slot: int = 0, command: Sequence[str] = ("worker", "--poll", "0.05")
    ) -> WorkerProcess:
        """Start ``customerkey --home HOME <command>`` (a worker, unless told otherwise)."""
        self._spawned += 1
        log_path = self.log_dir / f"worker-{self._spawned:03d}.log"
        log = log_path.open("wb")
        popen = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "customerkey.cli.main",
                "--home",
                str(self.home),
                *command,
            ],
            env=self.env(),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        proc = WorkerProcess(
            slot, popen, log_path, log, time.monotonic(), owner_pids=self.owner_pids
        )
        self._live.append(proc)
        return proc

    def kill(self, proc: WorkerProcess) -> None:
        """SIGKILL, then reap (a zombie still answers ``kill(pid, 0)``)."""
        if proc.popen.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        proc.popen.wait(timeout=30)
        self._forget(proc)

    def stop(self, proc: WorkerProcess) -> None:
        """SIGTERM: the worker finishes its job, retires and exits 0. (Only once it has
        started: a SIGTERM during start-up ends a process before its handler is set.)"""
        if proc.popen.poll() is None:
            self.wait_announced([proc])
            proc.popen.send_signal(signal.SIGTERM)
        try:
            code = proc.popen.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.kill(proc)
            raise HarnessFailure(f"worker {proc.pid} ignored SIGTERM\n{self.describe()}") from None
        self._forget(proc)
        if code != 0:
            raise HarnessFailure(
                f"worker {proc.pid} exited {code}:\n{self.tail(proc)}\n{self.describe()}"
            )

    def _forget(self, proc: WorkerProcess) -> None:
        proc.log.close()
        if proc in self._live:
            self._live.remove(proc)

    def close(self) -> None:
        for proc in list(self._live):
            self.kill(proc)
        self._probe.dispose()

    @staticmethod
    def tail(proc: WorkerProcess, lines: int = 40) -> str:
        text = proc.log_path.read_text(errors="replace").splitlines()
        return "\n".join(f"  [{proc.log_path.name}] {line}" for line in text[-lines:])

    def worker_problems(self) -> list[str]:
        """Log lines of every worker so far that show a job attempt failing or the loop
        erring: resuming after a crash must never need a retry."""
        problems = []
        for path in sorted(self.log_dir.glob("worker-*.log")):
            for line in path.read_text(errors="replace").splitlines():
                if any(mark in line for mark in PROBLEM_MARKS):
                    problems.append(f"{path.name}: {line}")
        return problems

    # ------------------------------------------------------------------ observing

    def jobs(self, job_ids: Sequence[str]) -> dict[str, JobState]:
        with Session(self._probe) as session:
            rows = session.scalars(select(JobRow).where(JobRow.id.in_(list(job_ids))))
            found = {
                r.id: JobState(
                    r.id,
                    r.kind,
                    r.target,
                    r.state,
                    r.lease_owner,
                    r.progress_done,
                    r.progress_total,
                    r.attempts,
                    r.error,
                )
                for r in rows
            }
            if any(j.lease_owner and j.lease_owner not in self.owner_pids for j in found.values()):
                for worker_id, pid in session.execute(select(WorkerRow.id, WorkerRow.pid)):
                    self.owner_pids[worker_id] = pid
        for job in found.values():
            if job.lease_owner:
                self.owners_seen.add(job.lease_owner)
        return found

    def workers_announced(self) -> set[int]:
        with Session(self._probe) as session:
            return set(session.scalars(select(WorkerRow.pid)))

    def wait_announced(self, procs: Iterable[WorkerProcess], timeout: float = 60) -> None:
        """Poll until every process has registered itself as a worker."""
        deadline = time.monotonic() + timeout
        pids = {p.pid for p in procs}
        while not pids <= self.workers_announced():
            for proc in procs:
                if proc.popen.poll() is not None:
                    raise HarnessFailure(f"worker exited at start-up:\n{self.tail(proc)}")
            if time.monotonic() > deadline:
                raise HarnessFailure(f"workers {pids} did not start within {timeout}s")
            time.sleep(0.01)

    def calibrate(self) -> float:
        """How long a worker takes from spawn to being ready to claim (on an empty queue)."""
        proc = self.spawn()
        self.wait_announced([proc])
        self.startup_estimate = time.monotonic() - proc.spawned_at
        self.stop(proc)
        return self.startup_estimate

    # ------------------------------------------------------------------ the crash loop

    def _deal(self) -> str:
        if not self._deck:
            self._deck = list(KILL_DECK)
            self.rng.shuffle(self._deck)
        return self._deck.pop()

    def _draw(self, *, final_allowed: bool) -> tuple[str, float, float]:
        """(trigger, progress fraction, delay) of the next kill: stratified, so every run
        spreads its kills over start-up, early, middle, late and final-step points."""
        kind = self._deal()
        deferred = []
        while kind == "final" and not final_allowed:
            deferred.append(kind)
            kind = self._deal()
        self._deck[:0] = deferred  # dealt when a final-step kill is allowed
        if kind == "startup":
            return "startup", 0.0, self.rng.uniform(0.0, 1.15 * self.startup_estimate)
        if kind == "final":
            return "progress", 1.0, self.rng.uniform(0.0, 0.003)
        low, high = {"early": (0.0, 0.3), "middle": (0.3, 0.6), "late": (0.6, 0.9)}[kind]
        return "progress", self.rng.uniform(low, high), self.rng.uniform(0.0, 0.002)

    def run_jobs(
        self,
        label: str,
        job_ids: Sequence[str],
        *,
        kills: int,
        workers: int = 1,
        deadline: float = 120.0,
        final_last: bool = True,
        command: Callable[[], Sequence[str]] | None = None,
    ) -> list[Kill]:
        """Run the jobs to the end with ``workers`` worker processes, SIGKILLing one of them
        (and starting a replacement) up to ``kills`` times; returns the kills made. A kill
        point the jobs finish before (the final step of a fast job) is not made.
        ``command`` gives the arguments of each process to start instead of a plain worker
        (``customerkey serve`` on a free port, whose in-process worker runs jobs)."""
        assert self.startup_estimate > 0, "calibrate() first"
        made: list[Kill] = []

        def start(slot: int) -> WorkerProcess:
            return self.spawn(slot, command()) if command is not None else self.spawn(slot)

        procs = [start(slot) for slot in range(workers)]
        end = time.monotonic() + deadline
        try:
            while True:
                plan = None
                if len(made) < kills:
                    # A final-step kill misses when the job ends first, and the kills after
                    # one all land in the short rerun; ``final_last`` deals it only as the
                    # last kill, so that the others are made, inside the job.
                    plan = self._draw(final_allowed=not final_last or len(made) == kills - 1)
                slot = self.rng.randrange(workers) if plan else 0
                fired = self._wait_for_kill_point(label, procs, slot, plan, job_ids, end)
                if not fired:
                    break
                assert plan is not None
                victim = procs[slot]
                at = time.monotonic() - victim.spawned_at
                self.kill(victim)
                kill = self._classify(label, victim, plan, at, job_ids)
                made.append(kill)
                self.kills.append(kill)
                procs[slot] = start(slot)
        except BaseException:
            for proc in procs:
                if proc in self._live:
                    self.kill(proc)
            raise
        for proc in procs:
            self.stop(proc)
        return made

    def kill_command(
        self, label: str, command: Sequence[str], find_jobs: Callable[[], list[str]]
    ) -> Kill | None:
        """Run one CLI command that starts a job and runs it in its own process (a mailbox
        import), and SIGKILL it at a drawn point: ``startup`` (a delay after spawn, up to a
        little past the time it takes to queue the job) or ``progress`` (a fraction of the
        job's work). Returns the kill, or None when the command finished first."""
        plan = self._draw(final_allowed=True)
        proc = self.spawn(command=command)
        trigger, fraction, delay = plan
        reached: float | None = None
        base: dict[str, int] = {}
        end = time.monotonic() + 120
        while proc.popen.poll() is None:
            now = time.monotonic()
            if now > end:
                self.kill(proc)
                raise HarnessFailure(f"{label}: command hung\n{self.tail(proc)}")
            job_ids = find_jobs()
            held = next((j for j in self.jobs(job_ids).values() if proc.holds(j)), None)
            if held is not None:
                proc.held_a_job = True
            if trigger == "startup":
                fire = now >= proc.spawned_at + delay
            else:
                if reached is None and held is not None and held.progress_total > 0:
                    total = held.progress_total
                    start = base.setdefault(held.id, min(held.progress_done, total))
                    target = start + math.ceil(fraction * (total - start))
                    if fraction < 1.0:
                        target = min(target, total - 2 if total > 2 else total - 1)
                    if held.progress_done >= target:
                        reached = now
                fire = reached is not None and now >= reached + delay
            if fire:
                at = time.monotonic() - proc.spawned_at
                self.kill(proc)
                kill = self._classify(label, proc, plan, at, find_jobs())
                self.kills.append(kill)
                return kill
            time.sleep(POLL)
        self._forget(proc)
        if proc.popen.returncode != 0:
            raise HarnessFailure(
                f"{label}: command exited {proc.popen.returncode}\n{self.tail(proc)}"
            )
        return None

    def wait_finished(
        self, label: str, procs: list[WorkerProcess], job_ids: Sequence[str], deadline: float
    ) -> None:
        """Poll until every job has finished (workers keep running)."""
        self._wait_for_kill_point(label, procs, 0, None, job_ids, time.monotonic() + deadline)

    def _wait_for_kill_point(
        self,
        label: str,
        procs: list[WorkerProcess],
        slot: int,
        plan: tuple[str, float, float] | None,
        job_ids: Sequence[str],
        end: float,
    ) -> bool:
        """Poll until the plan's kill point (True) or until every job has finished (False)."""
        victim = procs[slot]
        reached: float | None = None
        base: dict[str, int] = {}  # progress of each job when the victim was first seen on it
        while True:
            now = time.monotonic()
            jobs = self.jobs(job_ids)
            if len(jobs) == len(job_ids) and all(j.finished for j in jobs.values()):
                return False
            for proc in procs:
                if proc.popen.poll() is not None:
                    raise HarnessFailure(
                        f"{label}: worker {proc.pid} exited by itself "
                        f"({proc.popen.returncode}):\n{self.tail(proc)}\n{self.describe()}"
                    )
            if now > end:
                raise HarnessFailure(
                    f"{label}: jobs not finished in time: "
                    + "; ".join(
                        f"{j.kind} {j.id[:8]} {j.state} {j.progress_done}/{j.progress_total} "
                        f"attempts {j.attempts} owner {j.lease_owner}"
                        for j in jobs.values()
                        if not j.finished
                    )
                    + "\n"
                    + "\n".join(self.tail(p) for p in procs)
                    + "\n"
                    + self.describe()
                )
            held = next((j for j in jobs.values() if victim.holds(j)), None)
            if held is not None:
                victim.held_a_job = True
            if plan is not None:
                trigger, fraction, delay = plan
                if trigger == "startup":
                    if now >= victim.spawned_at + delay:
                        return True
                elif reached is None and held is not None and held.progress_total > 0:
                    # The fraction is of the work this run has left (a resumed job skips
                    # what is done quickly); a purge learns its total at its first step.
                    total = held.progress_total
                    start = base.setdefault(held.id, min(held.progress_done, total))
                    target = start + math.ceil(fraction * (total - start))
                    if fraction < 1.0:  # leave a step or two to go, or the job may win
                        target = min(target, total - 2 if total > 2 else total - 1)
                    if held.progress_done >= target:
                        reached = now
                if reached is not None and now >= reached + delay:
                    return True
            time.sleep(POLL)

    def _classify(
        self,
        label: str,
        victim: WorkerProcess,
        plan: tuple[str, float, float],
        at: float,
        job_ids: Sequence[str],
    ) -> Kill:
        trigger, fraction, delay = plan
        aim = f"+{delay:.3f}s" if trigger == "startup" else f"{fraction:.0%}+{delay:.3f}s"
        held = next((j for j in self.jobs(job_ids).values() if victim.holds(j)), None)
        if held is None:
            phase = "between-jobs" if victim.held_a_job else "before-claim"
            return Kill(label, victim.slot, trigger, aim, at, phase, None, "-")
        done, total = held.progress_done, held.progress_total
        if done == 0:
            phase = "claimed"
        elif total and done >= total:
            phase = "final-step"
        else:
            phase = "mid-job"
        return Kill(label, victim.slot, trigger, aim, at, phase, held.id, f"{done}/{total}")

    def describe(self) -> str:
        lines = [
            f"crash harness seed {self.seed} (replay: {SEED_ENV}={self.seed}), "
            f"{len(self.kills)} kill(s), worker start-up ~{self.startup_estimate:.2f}s, "
            f"batches rekey={self.rekey_batch} refresh={self.refresh_batch}, logs {self.log_dir}"
        ]
        lines += [f"  {k}" for k in self.kills]
        return "\n".join(lines)


# ---------------------------------------------------------------------- state and checks


@dataclass
class MailCorpus:
    """Mailboxes with imported mail, and the sha256 of every item as it was imported."""

    upns: list[str] = field(default_factory=list)
    mailbox_ids: dict[str, str] = field(default_factory=dict)  # upn -> id
    digests: dict[str, dict[str, str]] = field(default_factory=dict)  # upn -> item id -> sha

    def add(
        self,
        rt: Runtime,
        workdir: Path,
        prefix: str,
        count: int,
        *,
        policy: str | None,
        items: Sequence[int],
    ) -> list[str]:
        made = []
        for i in range(count):
            upn = f"{prefix}{i:02d}@contoso.com"
            box = rt.mail.create_mailbox(OPERATOR, TENANT, upn, policy=policy)
            path = workdir / f"{prefix}{i:02d}.mbox"
            originals = write_mbox(path, items[i % len(items)])
            rt.mail.import_messages(OPERATOR, upn, path)
            listed = rt.mail.list_items(OPERATOR, upn)
            assert len(listed) == len(originals)
            self.upns.append(upn)
            self.mailbox_ids[upn] = box.id
            self.digests[upn] = {
                item.id: sha256(data) for item, data in zip(listed, originals, strict=True)
            }
            made.append(upn)
        return made

    @property
    def item_count(self) -> int:
        return sum(len(d) for d in self.digests.values())

    def forget(self, upns: Iterable[str]) -> None:
        for upn in list(upns):
            self.upns.remove(upn)
            del self.digests[upn]


def blob_digests(rt: Runtime) -> dict[str, str]:
    """Every file under the blob folder (temporary files too) and its sha256."""
    root = rt.home.blobs_dir
    return {
        str(p.relative_to(root)): sha256(p.read_bytes()) for p in root.rglob("*") if p.is_file()
    }


def verify_imported(rt: Runtime, upn: str, originals: Sequence[bytes], context: str) -> None:
    """The mailbox holds exactly the store's messages, once each, in the store's order, each
    decrypting to its original bytes; and its folder of the blob store (whichever store it
    is: the local folder or S3) holds exactly the items' blobs, nothing orphaned or missing
    (staging files of killed local writers are not blobs: the sweep's to remove)."""
    rt.key_cache.clear()
    got = [sha256(data) for _, data in rt.mail.iter_messages(OPERATOR, upn)]
    expected = [sha256(m) for m in originals]
    first = next(
        (i for i, (a, b) in enumerate(zip(got, expected, strict=False)) if a != b),
        min(len(got), len(expected)),
    )
    assert got == expected, (
        f"{upn}: {len(got)} items, {len(expected)} expected; first difference at {first}\n{context}"
    )
    mailbox_id = rt.mail.get(OPERATOR, upn).id
    with rt.db.transaction() as session:
        referenced = set(
            session.scalars(select(MailItemRow.blob).where(MailItemRow.mailbox_id == mailbox_id))
        )
    # Item blobs only (``parse_item_blob``): whatever else an import keeps in the store (a
    # staged copy of its source) is the import's own business, not an orphaned item.
    stored = {
        name
        for name in rt.mail.blobs.list(f"mail/{mailbox_id}")
        if parse_item_blob(name) is not None
    }
    assert stored == referenced, (
        f"{upn}: orphaned blobs {sorted(stored - referenced)[:3]}, missing "
        f"{sorted(referenced - stored)[:3]}\n{context}"
    )


def verify_items(rt: Runtime, corpus: MailCorpus, upns: Iterable[str], context: str) -> None:
    """No item lost, none left unreadable, every one decrypts to its original bytes."""
    rt.key_cache.clear()
    for upn in upns:
        got = {item.id: sha256(data) for item, data in rt.mail.iter_messages(OPERATOR, upn)}
        expected = corpus.digests[upn]
        assert got.keys() == expected.keys(), (
            f"{upn}: items lost {sorted(expected.keys() - got.keys())[:5]} or appeared "
            f"{sorted(got.keys() - expected.keys())[:5]}\n{context}"
        )
        wrong = [i for i in expected if got[i] != expected[i]]
        assert not wrong, f"{upn}: {len(wrong)} item(s) decrypt to other bytes\n{context}"


def verify_jobs_succeeded(
    harness: CrashHarness, job_ids: Sequence[str], context: str
) -> dict[str, JobState]:
    jobs = harness.jobs(job_ids)
    bad = [
        f"{j.kind} {j.id} {j.state} error={j.error!r}"
        for j in jobs.values()
        if j.state != "succeeded"
    ]
    assert len(jobs) == len(job_ids) and not bad, f"jobs did not succeed: {bad}\n{context}"
    problems = harness.worker_problems()
    assert not problems, "a worker logged errors:\n" + "\n".join(problems[:20]) + f"\n{context}"
    return jobs


def verify_refresh(
    rt: Runtime, policy_id: str, generation_id: str, before: dict[str, str], context: str
) -> None:
    """Every live mailbox key of the DEP is on the new generation, every older generation is
    retired, and not one blob byte changed."""
    with rt.db.transaction() as session:
        keys = list(
            session.scalars(
                select(MailboxKeyRow)
                .join(GenerationRow, GenerationRow.id == MailboxKeyRow.generation_id)
                .where(GenerationRow.policy_id == policy_id, MailboxKeyRow.state != "destroyed")
            )
        )
        off = [k.id for k in keys if k.generation_id != generation_id]
        assert keys and not off, f"{len(off)} mailbox key(s) not on the new generation\n{context}"
        generations = list(
            session.scalars(select(GenerationRow).where(GenerationRow.policy_id == policy_id))
        )
        for generation in generations:
            if generation.id != generation_id:
                assert generation.retired_at is not None and generation.wrapped_1 is None, (
                    f"generation {generation.seq} was not retired\n{context}"
                )
    after = blob_digests(rt)
    assert after == before, (
        f"a refresh changed blobs: changed/removed "
        f"{sorted(k for k in before if after.get(k) != before[k])[:5]}, added "
        f"{sorted(after.keys() - before.keys())[:5]}\n{context}"
    )


def verify_move(rt: Runtime, mailbox_id: str, old_blobs: set[str], context: str) -> None:
    """One live key, every item under it, and on disk exactly the items' blobs: the old ones
    (and any temporary file) are gone."""
    with rt.db.transaction() as session:
        mailbox = session.get(MailboxRow, mailbox_id)
        assert mailbox is not None
        keys = list(
            session.scalars(select(MailboxKeyRow).where(MailboxKeyRow.mailbox_id == mailbox_id))
        )
        live = [k for k in keys if k.state != "destroyed"]
        assert len(live) == 1 and live[0].id == mailbox.current_key_id, (
            f"mailbox {mailbox_id}: live keys {[(k.seq, k.state) for k in live]}\n{context}"
        )
        assert all(k.wrapped is None for k in keys if k.state == "destroyed")
        items = list(
            session.scalars(select(MailItemRow).where(MailItemRow.mailbox_id == mailbox_id))
        )
        assert all(i.key_id == live[0].id for i in items), f"items on old keys\n{context}"
        expected = {i.blob for i in items}
    folder = rt.home.blobs_dir / "mail" / mailbox_id
    on_disk = {str(p.relative_to(rt.home.blobs_dir)) for p in folder.rglob("*") if p.is_file()}
    assert on_disk == expected, (
        f"mailbox {mailbox_id}: orphan files {sorted(on_disk - expected)[:5]}, missing blobs "
        f"{sorted(expected - on_disk)[:5]}\n{context}"
    )
    assert not (on_disk & old_blobs), f"old blobs survived the move\n{context}"


def verify_purge(rt: Runtime, policy_id: str, mailbox_ids: Iterable[str], context: str) -> None:
    """Nothing of the DEP's mailboxes left on disk; every key, generation and the
    availability key destroyed."""
    with rt.db.transaction() as session:
        policy = session.get(PolicyRow, policy_id)
        assert policy is not None and policy.state == "purged", context
        assert policy.sealed_availability_key is None, context
        for generation in session.scalars(
            select(GenerationRow).where(GenerationRow.policy_id == policy_id)
        ):
            assert generation.retired_at is not None, context
            assert generation.wrapped_1 is None and generation.wrapped_2 is None, context
            assert generation.wrapped_availability is None, context
        for mailbox_id in mailbox_ids:
            mailbox = session.get(MailboxRow, mailbox_id)
            assert mailbox is not None and mailbox.state == "purged", f"{mailbox_id}\n{context}"
            left = session.scalar(
                select(func.count())
                .select_from(MailItemRow)
                .where(MailItemRow.mailbox_id == mailbox_id)
            )
            assert not left, f"{mailbox_id}: {left} item rows left\n{context}"
            keys = list(
                session.scalars(select(MailboxKeyRow).where(MailboxKeyRow.mailbox_id == mailbox_id))
            )
            assert keys and all(k.state == "destroyed" and k.wrapped is None for k in keys), (
                f"{mailbox_id}: keys not destroyed\n{context}"
            )
            folder = rt.home.blobs_dir / "mail" / mailbox_id
            assert not folder.exists(), (
                f"{mailbox_id}: left on disk: {[p.name for p in folder.rglob('*')][:5]}\n{context}"
            )


def audit_operations(rt: Runtime) -> list[tuple[str, dict[str, object]]]:
    with rt.db.transaction() as session:
        return [(r.operation, dict(r.details)) for r in rt.audit.records(session)]


def verify_audit(rt: Runtime, context: str) -> None:
    result = rt.audit_log.verify(OPERATOR)
    assert result.ok, f"audit chain broken: {result.problems}\n{context}"
