"""Workers on two hosts, one killed: the done-when test of scale-out (issue 20).

Two "hosts" are two process groups of ``customerkey worker`` processes, each with a home folder
of its own (holding the same master key) and its own ``CUSTOMERKEY_HOST_ID``, sharing ONE
PostgreSQL database and ONE SeaweedFS bucket (``CUSTOMERKEY_BLOB_STORE=s3``). A DEP refresh
over many mailboxes and a mail import (staged into the bucket; its source file is deleted before
any worker starts) are queued; host A's two workers take them, and once both are part-way
host A's process group is SIGKILLed. Job leases are an hour long, so only host B judging host
A's heartbeats dead (``jobs.heartbeats``; a short timeout here) brings the jobs back. Host B
must finish both: every mailbox key re-wrapped onto the new generation (once: one completion
record), every message imported once and in order (the import's audit records count each
message once), the staged copy gone, and ``customerkey audit verify`` passes.

Needs PostgreSQL (``CUSTOMERKEY_TEST_POSTGRES_URL``; without it the test is not generated, as
every PostgreSQL case) and SeaweedFS (``weed``; see ``tests/support/seaweedfs.py``).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import pytest
from sqlalchemy import create_engine, select, text

import customerkey
from customerkey.config import Settings
from customerkey.rng import SystemRng
from customerkey.runtime import Runtime
from customerkey.storage.database import normalize_url
from customerkey.storage.models import GenerationRow, MailboxKeyRow
from customerkey.vault.models import OPERATOR
from customerkey.workloads.mail.jobs import IMPORT_JOB, REFRESH_JOB
from customerkey.workloads.mail.staging import PREFIX
from tests.support.mailfixtures import KEY_B, TENANT, VAULT_B, canary, setup_policy, write_mbox
from tests.support.seaweedfs import SeaweedFs

pytestmark = [pytest.mark.storage, pytest.mark.slow]

POSTGRES_URL = os.environ.get("CUSTOMERKEY_TEST_POSTGRES_URL")
SRC_DIR = Path(customerkey.__file__).resolve().parents[1]
MAILBOXES = 80  # re-wrapped one per batch by the refresh: 81 batches (the importer's too)
MESSAGES = 500  # imported two per batch: 250 batches, so that the two jobs overlap
HEARTBEAT = "0.5"
TIMEOUT = "3"  # seconds: host B takes host A's jobs back within this (plus its release round)
DEADLINE = 240.0


@pytest.fixture
def pg_url(backend: str) -> Iterator[str]:
    """A schema of its own in the test PostgreSQL database (as ``db_url`` makes one)."""
    assert backend == "postgresql" and POSTGRES_URL
    base = normalize_url(POSTGRES_URL)
    schema = "t_" + uuid.uuid4().hex[:16]
    admin = create_engine(base, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    try:
        sep = "&" if "?" in base else "?"
        yield f"{base}{sep}options=-csearch_path%3D{schema}"
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@dataclass
class Host:
    """One host: a home folder, a host id, and the worker processes it runs (one group)."""

    name: str
    home: Path
    env: dict[str, str]
    logs: Path
    procs: list[subprocess.Popen[bytes]]
    files: list[IO[bytes]]
    group: int | None = None

    def start_workers(self, count: int) -> None:
        for _ in range(count):
            log = (self.logs / f"{self.name}-{len(self.procs)}.log").open("wb")
            self.files.append(log)
            proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "customerkey.cli.main",
                    "--home",
                    str(self.home),
                    "worker",
                    "--poll",
                    "0.05",
                ],
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                # the host's first worker leads a new process group; the others join it
                process_group=0 if self.group is None else self.group,
            )
            if self.group is None:
                self.group = proc.pid
            self.procs.append(proc)

    def kill(self) -> None:
        """SIGKILL the whole host (its process group), then reap."""
        assert self.group is not None
        os.killpg(self.group, signal.SIGKILL)
        for proc in self.procs:
            proc.wait(timeout=30)

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=30)
        for log in self.files:
            log.close()

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "customerkey.cli.main", "--home", str(self.home), *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
        )

    def tail(self) -> str:
        out = []
        for path in sorted(self.logs.glob(f"{self.name}-*.log")):
            lines = path.read_text(errors="replace").splitlines()[-15:]
            out.append(f"--- {path.name}\n" + "\n".join(lines))
        return "\n".join(out)


def host_env(name: str, db_url: str, seaweedfs: SeaweedFs, prefix: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("CUSTOMERKEY_") or k.startswith("CUSTOMERKEY_REQUIRE_")
    }
    env.update(seaweedfs.env(prefix))
    env.update(
        CUSTOMERKEY_HOST_ID=name,
        CUSTOMERKEY_DATABASE_URL=db_url,
        CUSTOMERKEY_REFRESH_BATCH="1",
        CUSTOMERKEY_IMPORT_BATCH="2",
        CUSTOMERKEY_JOB_LEASE_SECONDS="3600",
        CUSTOMERKEY_WORKER_HEARTBEAT_SECONDS=HEARTBEAT,
        CUSTOMERKEY_WORKER_TIMEOUT_SECONDS=TIMEOUT,
        CUSTOMERKEY_AUDIT_CHECKPOINT_SECONDS="0",
        PYTHONPATH=os.pathsep.join([str(SRC_DIR), *filter(None, [os.environ.get("PYTHONPATH")])]),
        PYTHONUNBUFFERED="1",
    )
    return env


@pytest.mark.parametrize("backend", ["postgresql"] if POSTGRES_URL else [])
def test_host_b_finishes_what_killed_host_a_was_doing(
    backend: str,
    pg_url: str,
    seaweedfs: SeaweedFs,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    prefix = seaweedfs.new_prefix()
    for name in [n for n in os.environ if n.startswith("CUSTOMERKEY_")]:
        if not name.startswith(("CUSTOMERKEY_TEST_", "CUSTOMERKEY_REQUIRE_")):
            monkeypatch.delenv(name)
    for name, value in seaweedfs.env(prefix).items():
        monkeypatch.setenv(name, value)
    home_a, home_b = tmp_path / "host-a", tmp_path / "host-b"
    logs = tmp_path / "logs"
    logs.mkdir()

    # -- the state, made in-process (real clock: the workers are other processes)
    rt = Runtime.open(Settings(home=home_a, database_url=pg_url, host_id="host-a"), rng=SystemRng())
    try:
        na = setup_policy(rt)
        upns = [f"user{i:03d}@contoso.com" for i in range(MAILBOXES)]
        for upn in upns:
            rt.mail.create_mailbox(OPERATOR, TENANT, upn, policy="NA-DEP")
        rt.mail.create_mailbox(OPERATOR, TENANT, "importer@contoso.com", policy="NA-DEP")
        source = tmp_path / "store.mbox"
        originals = write_mbox(source, MESSAGES)
        rt.mail.staging.chunk_bytes = 64 * 1024
        import_job = rt.mail.start_import(OPERATOR, "importer@contoso.com", source)
        source.unlink()  # no worker may need the path: only the staged copy is left
        rt.vault.rotate_key(OPERATOR, VAULT_B, KEY_B)
        refresh_job = rt.mail.refresh(OPERATOR, TENANT, "NA-DEP")
        assert refresh_job is not None
        generation = str(refresh_job.payload["generation_id"])
    finally:
        rt.close()
    home_b.mkdir(mode=0o700)
    shutil.copy2(home_a / "master.key", home_b / "master.key")
    host_a = Host("host-a", home_a, host_env("host-a", pg_url, seaweedfs, prefix), logs, [], [])
    host_b = Host("host-b", home_b, host_env("host-b", pg_url, seaweedfs, prefix), logs, [], [])

    rt = Runtime.open(  # the test's own view, judging heartbeats as the workers do
        Settings(
            home=home_b,
            database_url=pg_url,
            host_id="observer",
            worker_heartbeat_seconds=float(HEARTBEAT),
            worker_timeout_seconds=float(TIMEOUT),
        ),
        rng=SystemRng(),
    )
    try:
        jobs = [refresh_job.id, import_job.id]

        def look() -> dict[str, tuple[str, str | None, int, int]]:
            return {
                j: (job.state, job.lease_owner, job.progress_done, job.progress_total)
                for j in jobs
                for job in [rt.jobs.get(j)]
            }

        # -- host A takes both jobs; it is killed once both are part-way
        host_a.start_workers(2)
        deadline = time.monotonic() + DEADLINE
        at_kill: dict[str, tuple[str, str | None, int, int]] = {}
        while True:
            seen = look()
            if all(s == "running" and 0 < done < total for s, _, done, total in seen.values()):
                host_a.kill()
                at_kill = look()
                break
            assert not any(s in ("succeeded", "failed") for s, *_ in seen.values()), (
                f"host A finished a job before both were part-way: {seen}\n{host_a.tail()}"
            )
            assert time.monotonic() < deadline, f"{seen}\n{host_a.tail()}"
            time.sleep(0.005)
        owners_a = {owner for _, owner, *_ in at_kill.values()}
        assert len(owners_a) == 2 and None not in owners_a, at_kill
        # host A is dead, its rows still there; its jobs show interrupted once it is stale
        assert {rt.jobs.get(j).shown_state for j in jobs} == {"running"}
        time.sleep(float(TIMEOUT) + 0.5)
        assert {rt.jobs.get(j).shown_state for j in jobs} == {"interrupted"}

        # -- host B finishes both, long before an hour's lease could have run out
        host_b.start_workers(2)
        while not all(rt.jobs.get(j).finished for j in jobs):
            assert time.monotonic() < deadline, f"{look()}\n{host_b.tail()}"
            time.sleep(0.05)
        context = f"at kill: {at_kill}\n{host_a.tail()}\n{host_b.tail()}"
        ended = {j: rt.jobs.get(j) for j in jobs}
        assert all(job.state == "succeeded" for job in ended.values()), f"{ended}\n{context}"
        assert all(job.attempts == 2 for job in ended.values()), f"{ended}\n{context}"
        host_b.stop()

        # nothing lost: every message imported once, in order, from the staged copy
        rt.key_cache.clear()
        got = [data for _, data in rt.mail.iter_messages(OPERATOR, "importer@contoso.com")]
        assert got == originals, context
        with rt.db.read() as session:
            records = list(rt.audit.records(session))
        imported = sum(
            int(r.details["items"])
            for r in records
            if r.operation == "MailboxImport" and r.details.get("job") == import_job.id
        )
        assert imported == MESSAGES, f"{imported} messages recorded as imported\n{context}"
        # every mailbox refreshed, once
        with rt.db.read() as session:
            keys = list(
                session.scalars(
                    select(MailboxKeyRow)
                    .join(GenerationRow, GenerationRow.id == MailboxKeyRow.generation_id)
                    .where(
                        GenerationRow.policy_id == na.policy_id,
                        MailboxKeyRow.state != "destroyed",
                    )
                )
            )
        assert len(keys) == MAILBOXES + 1, context
        assert {k.generation_id for k in keys} == {generation}, context
        completions = [
            r
            for r in records
            if r.operation == "DataEncryptionPolicyRefreshComplete"
            and r.details.get("generation") == generation
        ]
        assert len(completions) == 1, context
        for upn in upns[:: MAILBOXES // 8]:  # the re-wrapped keys open
            assert rt.mail.list_items(OPERATOR, upn) == []
        # the staged copy is gone, and the bucket holds no plaintext
        keys_left = seaweedfs.keys(prefix)
        assert not any(k.startswith(f"{prefix}/{PREFIX}/") for k in keys_left), context
        client = seaweedfs.client()
        needles = [canary(i).encode() for i in range(MESSAGES)]
        for key in keys_left:
            body = client.get_object(Bucket=seaweedfs.bucket, Key=key)["Body"].read()
            assert not any(n in body for n in needles), key
        assert rt.jobs.list_jobs(kind=IMPORT_JOB)[0].id == import_job.id
        assert rt.jobs.list_jobs(kind=REFRESH_JOB)[0].id == refresh_job.id
    finally:
        host_a.stop()
        host_b.stop()
        rt.close()

    verified = host_b.run("audit", "verify")
    assert verified.returncode == 0, verified.stdout + verified.stderr
