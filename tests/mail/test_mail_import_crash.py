"""SIGKILL during mailbox import: the ``customerkey mailbox import`` command, and the
``customerkey worker`` and ``customerkey serve`` processes running import jobs, are killed at
seeded random points (before the job is queued, as it is claimed, early, in the middle, late,
after its last batch), and the import is then finished by running the same command again (or
by a new worker). Afterwards every
mailbox holds exactly its store's messages, once each and in order, each decrypting to its
original bytes; no blob is orphaned; every job has succeeded; the audit chain verifies.

It runs on the local blob folder (SQLite, and PostgreSQL when configured) and on PostgreSQL +
S3 (a SeaweedFS server; the ``blob_stores`` mark): every process the harness starts gets the
same S3 settings, so nothing of an import may rest on the local disk but its source file.

``CUSTOMERKEY_IMPORT_CRASH_RUNS`` sets the kills per backend (CI: 8, and half of that on S3;
the full form, 50, is ``CUSTOMERKEY_IMPORT_CRASH_RUNS=50 pytest
tests/mail/test_mail_import_crash.py``); a failure prints its seed, to replay with
``CUSTOMERKEY_CRASH_SEED=<seed>``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from customerkey.jobs.queue import pid_alive
from customerkey.runtime import Runtime
from customerkey.vault.models import OPERATOR
from customerkey.workloads.mail.jobs import IMPORT_JOB
from tests.support.crash_harness import (
    CrashHarness,
    verify_audit,
    verify_imported,
    verify_jobs_succeeded,
)
from tests.support.mailfixtures import TENANT, setup_policy, write_mbox
from tests.support.servers import free_port

pytestmark = pytest.mark.storage

RUNS = int(os.environ.get("CUSTOMERKEY_IMPORT_CRASH_RUNS", "8"))
S3_RUNS = max(4, RUNS // 2)  # on S3 (CI time: each kill is a process start or two)
MESSAGES = 40  # per store the command imports; with batches of 5, eight commits
WORKER_MESSAGES = 100  # per store a worker imports (two a round: time for kills to land)


def _import_jobs(rt: Runtime, mailbox_id: str) -> list[str]:
    return [j.id for j in rt.jobs.list_jobs(kind=IMPORT_JOB) if j.target == mailbox_id]


def _dead_writers_only(rt: Runtime, context: str) -> int:
    """Temporary files a killed blob writer left: only dead writers may have left them (on
    S3 there are none: a killed writer leaves no visible object)."""
    if rt.settings.blob_store == "s3":
        return 0
    temps = list(rt.home.blobs_dir.rglob(".*.tmp"))
    for temp in temps:
        pid = int(temp.name.rsplit(".", 2)[-2])
        assert not pid_alive(pid), f"{temp} belongs to a live writer\n{context}"
    return len(temps)


@pytest.mark.slow
@pytest.mark.blob_stores
def test_kill_9_during_mailbox_import_loses_nothing(
    crash_runtime: Runtime, harness: CrashHarness, tmp_path: Path, crash_store: str
) -> None:
    rt = crash_runtime
    runs = S3_RUNS if crash_store == "s3" else RUNS
    setup_policy(rt)
    harness.calibrate()
    stores: dict[str, list[bytes]] = {}
    job_ids: list[str] = []

    def new_mailbox(name: str, messages: int = MESSAGES) -> tuple[str, str, Path]:
        upn = f"{name}@contoso.com"
        box = rt.mail.create_mailbox(OPERATOR, TENANT, upn, policy="NA-DEP")
        source = tmp_path / f"{name}.mbox"
        stores[upn] = write_mbox(source, messages)
        return upn, box.id, source

    # -- the command killed, then run again until it reports the whole store imported
    cli_target = runs - runs // 2
    cli_kills = 0
    round_ = 0
    while cli_kills < cli_target:
        upn, mailbox_id, source = new_mailbox(f"cli{round_:02d}")
        command = ["--json", "mailbox", "import", upn, str(source)]
        for _ in range(2):  # up to two kills of one import (the second hits a resumed one)
            kill = harness.kill_command(
                f"import#{round_}", command, lambda m=mailbox_id: _import_jobs(rt, m)
            )
            if kill is None:
                break
            cli_kills += 1
        if kill is not None:
            done = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "customerkey.cli.main",
                    "--home",
                    str(harness.home),
                    *command,
                ],
                env=harness.env(),
                capture_output=True,
                timeout=120,
            )
            assert done.returncode == 0, done.stderr.decode(errors="replace")
            reported = json.loads(done.stdout)
            assert reported["Imported"] == MESSAGES, (reported, harness.describe())
        job_ids += _import_jobs(rt, mailbox_id)
        assert len(_import_jobs(rt, mailbox_id)) == 1, harness.describe()  # resumed, never redone
        round_ += 1

    # -- workers killed while they run import jobs queued with --no-wait
    worker_target = runs - cli_target
    worker_kills = 0
    round_ = 0
    while worker_kills < worker_target:
        queued = []
        for i in range(2):
            upn, mailbox_id, source = new_mailbox(f"worker{round_:02d}x{i}", WORKER_MESSAGES)
            queued.append(rt.mail.start_import(OPERATOR, upn, source).id)
        budget = min(3, worker_target - worker_kills)
        # Every other round the jobs run in ``customerkey serve`` (its in-process worker),
        # killed the same way, rather than in ``customerkey worker``.
        serve = round_ % 2 == 0
        worker_kills += len(
            harness.run_jobs(
                f"import-{'serve' if serve else 'worker'}#{round_}",
                queued,
                kills=budget,
                command=(lambda: ["serve", "--port", str(free_port())]) if serve else None,
            )
        )
        job_ids += queued
        round_ += 1

    context = harness.describe()
    verify_jobs_succeeded(harness, job_ids, context)
    for upn, originals in stores.items():
        verify_imported(rt, upn, originals, context)
    _dead_writers_only(rt, context)
    verify_audit(rt, context)
    assert len(harness.kills) >= runs, context
    phases = Counter(k.phase for k in harness.kills)
    assert phases["mid-job"] >= 1, f"no kill landed inside an import\n{context}"
