"""Mail imports staged into the blob store (``workloads.mail.staging``): a store is staged in
bounded memory, a killed staging goes on from its last committed chunk, the staged copy holds
no plaintext (local folder and S3 bucket), it is gone once the import succeeded (or failed for
good) and the sweep removes an abandoned one past its grace, a job runs on another "host" with
the source deleted, and nobody opens another tenant's staged copy. Runs on SQLite and
PostgreSQL (``db_url``); the S3 cases on a real SeaweedFS server."""

from __future__ import annotations

import shutil
import tracemalloc
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, BinaryIO

import pytest
from sqlalchemy import select

from customerkey.clock import FrozenClock
from customerkey.config import Settings
from customerkey.rng import SystemRng
from customerkey.runtime import Runtime
from customerkey.storage.models import MailboxRow, MailImportStagingRow
from customerkey.vault.models import OPERATOR
from customerkey.workloads.mail.jobs import IMPORT_JOB
from customerkey.workloads.mail.staging import (
    PREFIX,
    StagedCopyUnreadable,
    Staging,
    chunk_blob,
)
from tests.support.mail_import import verify_import
from tests.support.mailfixtures import TENANT, assert_no_plaintext, canary, setup_policy, write_mbox
from tests.support.seaweedfs import SeaweedFs

pytestmark = pytest.mark.storage

UPN = "alice@contoso.com"


class Killed(BaseException):
    """What a SIGKILL does to the code after it: nothing runs (not even ``except Exception``)."""


@pytest.fixture
def mailbox(runtime: Runtime) -> str:
    setup_policy(runtime)
    runtime.mail.create_mailbox(OPERATOR, TENANT, UPN, policy="NA-DEP")
    return UPN


def stagings(rt: Runtime) -> list[MailImportStagingRow]:
    with rt.db.read() as session:
        rows = list(session.scalars(select(MailImportStagingRow)))
        session.expunge_all()
        return rows


def staged_names(rt: Runtime) -> list[str]:
    return [
        name for folder in rt.mail.blobs.iter_folders(PREFIX) for name in rt.mail.blobs.list(folder)
    ]


def write_big_mbox(path: Path, count: int, size: int) -> None:
    """An mbox of ``count`` messages of about ``size`` bytes each, written line by line."""
    line = b"lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod\n"
    with path.open("wb") as out:
        for i in range(count):
            out.write(f"From sender{i}@fabrikam.com Tue Nov  3 10:00:07 2026\n".encode())
            out.write(f"From: sender{i}@fabrikam.com\nSubject: {canary(i)}\n\n".encode())
            out.write(line * (size // len(line)))
            out.write(b"\n")


def test_staging_streams_a_store_in_bounded_memory(
    runtime: Runtime, mailbox: str, tmp_path: Path
) -> None:
    staging = runtime.mail.staging
    staging.chunk_bytes = 256 * 1024
    source = tmp_path / "big.mbox"
    write_big_mbox(source, 800, 20_000)  # 16 MB
    assert source.stat().st_size > 15_000_000
    seen: list[tuple[int, int | None]] = []
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        job = runtime.mail.start_import(
            OPERATOR, mailbox, source, staging_progress=lambda d, t: seen.append((d, t))
        )
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # a chunk, the crypto's two 1 MiB segment buffers and a message, never the store
    assert peak < 5 * 1024 * 1024, peak
    (row,) = stagings(runtime)
    assert row.complete and row.messages == 800 and job.progress_total == 800
    assert row.chunks == len(staged_names(runtime)) > 50
    assert row.chunk_starts[:2] == [0, row.chunk_starts[1]] and row.chunk_starts[1] > 1
    assert seen[0] == (0, 800) and seen[-1] == (800, 800)
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)
    for name in staged_names(runtime):
        assert runtime.mail.blobs.size(name) < staging.chunk_bytes + 25_000
    runtime.worker().run_until_idle()
    items = runtime.mail.list_items(OPERATOR, mailbox)
    assert len(items) == 800 and staged_names(runtime) == [] and stagings(runtime) == []


@pytest.mark.parametrize("when", ["before-its-write", "after-its-write"])
def test_a_killed_staging_goes_on_from_its_last_committed_chunk(
    runtime: Runtime,
    mailbox: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    when: str,
) -> None:
    runtime.mail.staging.chunk_bytes = 8 * 1024
    source = tmp_path / "a.mbox"
    originals = write_mbox(source, 40)
    blobs = runtime.mail.blobs
    real_write = blobs.write
    written: list[str] = []
    killed: list[str] = []

    def write(name: str, fill: Callable[[BinaryIO], object]) -> int:
        if name.endswith("/000004") and not killed:
            killed.append(name)
            if when == "after-its-write":
                real_write(name, fill)
            raise Killed
        written.append(name)
        return real_write(name, fill)

    monkeypatch.setattr(blobs, "write", write)
    with pytest.raises(Killed):
        runtime.mail.start_import(OPERATOR, mailbox, source)
    assert runtime.jobs.list_jobs(kind=IMPORT_JOB) == []  # nothing queued yet
    (row,) = stagings(runtime)
    assert (row.chunks, row.complete) == (4, False)
    committed = row.messages
    assert 0 < committed < 40 and row.chunk_starts[0] == 0
    written.clear()
    # the same command again: it goes on from chunk 4, rewriting it, never chunks 0 to 3
    job = runtime.mail.start_import(OPERATOR, mailbox, source)
    assert written[0] == chunk_blob(row.mailbox_id, row.id, 4)
    (done,) = stagings(runtime)
    assert done.id == row.id and done.complete and done.messages == 40
    assert done.chunk_starts[:5] == [*row.chunk_starts, committed]
    assert job.payload["staging"] == row.id and job.progress_total == 40
    assert runtime.mail.start_import(OPERATOR, mailbox, source).id == job.id  # joins it
    runtime.worker().run_until_idle()
    verify_import(runtime, mailbox, originals)
    assert staged_names(runtime) == [] and stagings(runtime) == []
    # done: the same command does nothing (no staging); --again stages and imports again
    assert runtime.mail.start_import(OPERATOR, mailbox, source).id == job.id
    assert stagings(runtime) == []
    again = runtime.mail.start_import(OPERATOR, mailbox, source, again=True)
    assert again.id != job.id and again.payload["staging"] != row.id
    runtime.worker().run_until_idle()
    verify_import(runtime, mailbox, originals + originals)


def test_the_staged_copy_holds_no_plaintext_in_the_blob_folder_or_database(
    runtime: Runtime, mailbox: str, tmp_path: Path
) -> None:
    runtime.mail.staging.chunk_bytes = 16 * 1024
    originals = write_mbox(tmp_path / "a.mbox", 30, big=True)
    runtime.mail.start_import(OPERATOR, mailbox, tmp_path / "a.mbox")
    assert len(staged_names(runtime)) > 3
    needles = [canary(i).encode() for i in range(30)] + [b"From the finance team"]
    needles += [m[100:164] for m in originals if len(m) > 200]
    assert_no_plaintext(runtime.home.blobs_dir, needles)
    (row,) = stagings(runtime)
    assert not any(n in row.sealed_key for n in needles)
    assert len(row.sealed_key) < 200  # a sealed 32-byte key, no content


def test_a_job_that_fails_for_good_removes_its_staged_copy(
    runtime: Runtime, mailbox: str, tmp_path: Path
) -> None:
    write_mbox(tmp_path / "a.mbox", 5)
    job = runtime.mail.start_import(OPERATOR, mailbox, tmp_path / "a.mbox")
    assert staged_names(runtime) != []
    (row,) = stagings(runtime)
    name = chunk_blob(row.mailbox_id, row.id, 0)  # its copy is tampered with in the store
    sealed = bytearray(runtime.mail.blobs.read_bytes(name))
    sealed[-3] ^= 1
    runtime.mail.blobs.put_bytes(name, bytes(sealed))
    (ended,) = runtime.worker().run_until_idle()
    assert ended.id == job.id and ended.state == "failed"
    assert ended.error == (
        f"The staged copy of {tmp_path / 'a.mbox'} cannot be read (Staged chunk 0 does not "
        "open.); 0 of 5 messages were imported. Start the import again."
    )
    assert staged_names(runtime) == [] and stagings(runtime) == []


def test_the_sweep_removes_abandoned_staging_past_its_grace_and_keeps_a_queued_one(
    runtime: Runtime,
    mailbox: str,
    tmp_path: Path,
    clock: FrozenClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock.set(datetime.now(UTC))  # the local store stamps files with the real clock
    runtime.mail.staging.chunk_bytes = 8 * 1024
    write_mbox(tmp_path / "abandoned.mbox", 20)
    originals = write_mbox(tmp_path / "queued.mbox", 20)
    other = runtime.mail.create_mailbox(OPERATOR, TENANT, "bob@contoso.com", policy="NA-DEP")
    real_write = runtime.mail.blobs.write

    def killed_at_chunk_2(name: str, fill: Callable[[BinaryIO], object]) -> int:
        if name.endswith("/000002"):
            raise Killed
        return real_write(name, fill)

    monkeypatch.setattr(runtime.mail.blobs, "write", killed_at_chunk_2)
    with pytest.raises(Killed):  # killed while staging, and never run again
        runtime.mail.start_import(OPERATOR, "bob@contoso.com", tmp_path / "abandoned.mbox")
    monkeypatch.setattr(runtime.mail.blobs, "write", real_write)
    job = runtime.mail.start_import(OPERATOR, mailbox, tmp_path / "queued.mbox")
    grace = runtime.blob_sweeper.grace
    clock.advance(grace - timedelta(seconds=1))
    runtime.blob_sweeper.sweep(OPERATOR)  # within the grace: everything stays
    assert len(stagings(runtime)) == 2
    clock.advance(timedelta(seconds=60))
    report = runtime.blob_sweeper.sweep(OPERATOR)
    assert report.orphans == 2  # the abandoned staging's two chunks
    assert [r.job_id for r in stagings(runtime)] == [job.id]  # the queued one's row stays
    assert all(n.startswith(f"{PREFIX}/{job.target}/") for n in staged_names(runtime))
    assert list((runtime.home.blobs_dir / PREFIX / other.id).iterdir()) == []
    runtime.worker().run_until_idle()
    verify_import(runtime, mailbox, originals)


def test_a_cancelled_import_resumes_from_its_staging_or_stages_again_once_swept(
    runtime: Runtime, mailbox: str, tmp_path: Path, clock: FrozenClock
) -> None:
    clock.set(datetime.now(UTC))
    source = tmp_path / "a.mbox"
    originals = write_mbox(source, 12)
    job = runtime.mail.start_import(OPERATOR, mailbox, source)
    with runtime.db.transaction() as session:
        runtime.jobs.request_cancel(session, job.id, by="ops")
    (row,) = stagings(runtime)
    clock.advance(runtime.blob_sweeper.grace + timedelta(seconds=60))
    runtime.blob_sweeper.sweep(OPERATOR)  # cancelled and not started again: swept
    assert stagings(runtime) == [] and staged_names(runtime) == []
    reopened = runtime.mail.start_import(OPERATOR, mailbox, source)
    assert reopened.id == job.id and reopened.state == "queued"
    (restaged,) = stagings(runtime)  # staged again under its old id, for its job
    assert (restaged.id, restaged.job_id, restaged.complete) == (row.id, job.id, True)
    runtime.worker().run_until_idle()
    verify_import(runtime, mailbox, originals)
    assert stagings(runtime) == []


def test_nobody_opens_another_tenants_staged_import(
    runtime: Runtime, mailbox: str, tmp_path: Path
) -> None:
    runtime.tenants.create(OPERATOR, "fabrikam", mail_domain="fabrikam.com")
    theirs = runtime.mail.create_mailbox(OPERATOR, "fabrikam", "eve@fabrikam.com")
    write_mbox(tmp_path / "a.mbox", 6)
    job = runtime.mail.start_import(OPERATOR, mailbox, tmp_path / "a.mbox")
    staging = runtime.mail.staging
    ours = staging.get(str(job.payload["staging"]))
    assert ours is not None
    data_key = staging.data_key(ours)
    assert len(list(staging.entries(ours, data_key))) == 6
    with runtime.db.read() as session:
        their_row = session.get(MailboxRow, theirs.id)
        assert their_row is not None
        their_key_id = their_row.current_key_id
    assert their_key_id is not None
    # the staging row claimed for the other tenant's mailbox and key: its key does not open
    forged = Staging(
        **{
            **ours.__dict__,
            "tenant": "fabrikam",
            "mailbox_id": theirs.id,
            "key_id": their_key_id,
        }
    )
    with pytest.raises(StagedCopyUnreadable, match=r"^The staged copy's key does not open\.$"):
        staging.data_key(forged)
    # nor do the chunks under another tenant's context, even with the right data key
    moved = Staging(**{**ours.__dict__, "tenant": "fabrikam"})
    with pytest.raises(StagedCopyUnreadable, match=r"^Staged chunk 0 does not open\.$"):
        list(staging.entries(moved, data_key))
    # a job of the other tenant's mailbox naming this staging fails, and leaves it alone
    with runtime.db.transaction() as session:
        forged_job = runtime.jobs.enqueue(
            session,
            IMPORT_JOB,
            theirs.id,
            payload={**job.payload},
            created_by=OPERATOR,
            total=6,
        )
    worker = runtime.worker()
    failed = worker.run_job(forged_job.id)
    assert failed is not None and failed.state == "failed"
    assert failed.error == f"Import job {forged_job.id} names a staging that is not its own."
    assert staging.get(ours.id) == ours  # left alone
    (ended,) = worker.run_until_idle()
    assert ended.id == job.id and ended.state == "succeeded"
    assert runtime.mail.list_items(OPERATOR, "eve@fabrikam.com") == []
    assert len(runtime.mail.list_items(OPERATOR, mailbox)) == 6


# ---------------------------------------------------------------------- on S3, two hosts


def s3_runtime(
    seaweedfs: SeaweedFs,
    prefix: str,
    home: Path,
    db_url: str,
    host: str,
    clock: FrozenClock,
    monkeypatch: pytest.MonkeyPatch,
) -> Runtime:
    for name, value in seaweedfs.env(prefix).items():
        monkeypatch.setenv(name, value)
    settings = Settings(home=home, database_url=db_url, host_id=host)
    assert settings.blob_store == "s3"
    return Runtime.open(settings, clock=clock, rng=SystemRng())


def bucket(seaweedfs: SeaweedFs, prefix: str) -> dict[str, bytes]:
    client = seaweedfs.client()
    return {
        key: client.get_object(Bucket=seaweedfs.bucket, Key=key)["Body"].read()
        for key in seaweedfs.keys(prefix)
    }


def test_a_staged_import_runs_on_another_host_with_the_source_deleted(
    seaweedfs: SeaweedFs,
    db_url: str,
    tmp_path: Path,
    clock: FrozenClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock.set(datetime.now(UTC))
    prefix = seaweedfs.new_prefix()
    host_a = s3_runtime(
        seaweedfs, prefix, tmp_path / "home-a", db_url, "host-a", clock, monkeypatch
    )
    (tmp_path / "home-b").mkdir(mode=0o700)
    shutil.copy2(host_a.home.master_key_file, tmp_path / "home-b" / "master.key")
    host_b = s3_runtime(
        seaweedfs, prefix, tmp_path / "home-b", db_url, "host-b", clock, monkeypatch
    )
    try:
        setup_policy(host_a)
        host_a.mail.create_mailbox(OPERATOR, TENANT, UPN, policy="NA-DEP")
        host_a.mail.staging.chunk_bytes = 32 * 1024
        source = tmp_path / "a.mbox"
        originals = write_mbox(source, 25, big=True)
        job = host_a.mail.start_import(OPERATOR, UPN, source)
        staged = bucket(seaweedfs, prefix)
        assert staged and all(k.startswith(f"{prefix}/{PREFIX}/{job.target}/") for k in staged)
        needles = [canary(i).encode() for i in range(25)] + [b"From the finance team"]
        assert not any(n in body for body in staged.values() for n in needles)
        source.unlink()
        (ended,) = host_b.worker().run_until_idle()
        assert ended.id == job.id and ended.state == "succeeded"
        assert ended.lease_owner is None
        got = [data for _, data in host_b.mail.iter_messages(OPERATOR, UPN)]
        assert got == originals
        left = bucket(seaweedfs, prefix)
        assert all(k.startswith(f"{prefix}/mail/{job.target}/") for k in left)  # copy gone
        assert len(left) == 25
        assert not any(n in body for body in left.values() for n in needles)
        assert not (tmp_path / "home-a" / "blobs").exists() or not any(
            (tmp_path / "home-a" / "blobs").rglob("*")
        )
    finally:
        host_b.close()
        host_a.close()


def test_staged_copies_on_s3_hold_no_plaintext_and_resume(
    seaweedfs: SeaweedFs,
    db_url: str,
    tmp_path: Path,
    clock: FrozenClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock.set(datetime.now(UTC))
    prefix = seaweedfs.new_prefix()
    rt = s3_runtime(seaweedfs, prefix, tmp_path / "home", db_url, "host-a", clock, monkeypatch)
    try:
        setup_policy(rt)
        rt.mail.create_mailbox(OPERATOR, TENANT, UPN, policy="NA-DEP")
        rt.mail.staging.chunk_bytes = 8 * 1024
        originals = write_mbox(tmp_path / "a.mbox", 30)
        real_write: Any = rt.mail.blobs.write
        calls = {"n": 0}

        def dies_at_third(name: str, fill: Callable[[BinaryIO], object]) -> int:
            calls["n"] += 1
            if calls["n"] == 3:
                raise Killed
            return int(real_write(name, fill))

        monkeypatch.setattr(rt.mail.blobs, "write", dies_at_third)
        with pytest.raises(Killed):
            rt.mail.start_import(OPERATOR, UPN, tmp_path / "a.mbox")
        monkeypatch.setattr(rt.mail.blobs, "write", real_write)
        assert len(bucket(seaweedfs, prefix)) == 2
        job = rt.mail.start_import(OPERATOR, UPN, tmp_path / "a.mbox")
        needles = [canary(i).encode() for i in range(30)] + [b"From the finance team"]
        staged = bucket(seaweedfs, prefix)
        assert len(staged) > 3
        assert not any(n in body for body in staged.values() for n in needles)
        rt.worker().run_until_idle()
        verify_imported = [d for _, d in rt.mail.iter_messages(OPERATOR, UPN)]
        assert verify_imported == originals
        assert rt.jobs.get(job.id).state == "succeeded"
        assert all(k.startswith(f"{prefix}/mail/") for k in bucket(seaweedfs, prefix))
    finally:
        rt.close()
