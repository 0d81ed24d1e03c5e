"""Mailbox import as a durable job: an interrupted import resumes where its last batch
committed and stores every message exactly once and in order, from the copy staged when it
began (a store changed or deleted on disk meanwhile does not matter). Runs on SQLite and
PostgreSQL (``db_url``)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from customerkey.errors import BadParameter, Conflict, DecryptionFailed
from customerkey.jobs.queue import JobFailed
from customerkey.jobs.registry import payload_dict
from customerkey.runtime import Runtime
from customerkey.storage.models import MailItemRow
from customerkey.vault.models import OPERATOR
from customerkey.workloads.mail.formats import source_signature
from customerkey.workloads.mail.jobs import IMPORT_JOB, ImportPayload
from tests.support.mail_import import verify_import
from tests.support.mailfixtures import setup_policy, write_mbox

pytestmark = pytest.mark.storage

UPN = "alice@contoso.com"


def fail_blob_write_once(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch, nth: int, error: OSError
) -> None:
    """The ``nth`` blob write of the mail service (counting from 1) fails with ``error``
    (a full or failing disk); every other write goes through."""
    real_put = runtime.mail.blobs.put_bytes
    writes = 0

    def put_bytes(name: str, data: bytes) -> int:
        nonlocal writes
        writes += 1
        if writes == nth:
            raise error
        return real_put(name, data)

    monkeypatch.setattr(runtime.mail.blobs, "put_bytes", put_bytes)


@pytest.fixture
def mailbox(runtime: Runtime) -> str:
    setup_policy(runtime)
    runtime.mail.create_mailbox(OPERATOR, "contoso", UPN, policy="NA-DEP")
    return UPN


def test_import_runs_as_a_job_and_reports_what_it_stored(
    runtime: Runtime, mailbox: str, tmp_path: Path
) -> None:
    originals = write_mbox(tmp_path / "a.mbox", 12)
    seen: list[tuple[int, int | None]] = []
    result = runtime.mail.import_messages(
        OPERATOR, mailbox, tmp_path / "a.mbox", progress=lambda d, t: seen.append((d, t))
    )
    assert (result.imported, result.bytes) == (12, sum(len(m) for m in originals))
    verify_import(runtime, mailbox, originals)
    (job,) = runtime.jobs.list_jobs(kind=IMPORT_JOB)
    assert job.state == "succeeded" and job.progress_done == job.progress_total == 12
    assert seen and seen[-1] == (12, 12)
    # importing the same store again does nothing (a command killed after the job finished
    # is run again by its user), unless asked to import it once more
    again = runtime.mail.import_messages(OPERATOR, mailbox, tmp_path / "a.mbox")
    assert again.imported == 12 and len(runtime.jobs.list_jobs(kind=IMPORT_JOB)) == 1
    verify_import(runtime, mailbox, originals)
    runtime.mail.import_messages(OPERATOR, mailbox, tmp_path / "a.mbox", again=True)
    verify_import(runtime, mailbox, originals + originals)
    # a changed store is a new import
    (tmp_path / "a.mbox").unlink()
    more = write_mbox(tmp_path / "a.mbox", 3)
    runtime.mail.import_messages(OPERATOR, mailbox, tmp_path / "a.mbox")
    verify_import(runtime, mailbox, originals + originals + more)


def test_an_import_stopped_part_way_resumes_without_losing_or_repeating_a_message(
    runtime: Runtime, mailbox: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    runtime.mail.import_batch = 4
    originals = write_mbox(tmp_path / "a.mbox", 23)
    # the 3rd batch: 2 committed (8 messages), 2 blobs of the 3rd written
    fail_blob_write_once(runtime, monkeypatch, 11, OSError(28, "No space left on device"))
    with pytest.raises(JobFailed, match=r"stopped after 8 of 23 messages.*resume"):
        runtime.mail.import_messages(OPERATOR, mailbox, tmp_path / "a.mbox")
    assert len(runtime.mail.list_items(OPERATOR, mailbox)) == 8
    (job,) = runtime.jobs.list_jobs(kind=IMPORT_JOB)
    assert job.state == "queued" and job.checkpoint["consumed"] == 8
    assert "No space left" in (job.error or "")

    result = runtime.mail.import_messages(OPERATOR, mailbox, tmp_path / "a.mbox")
    assert result.imported == 23
    assert [j.id for j in runtime.jobs.list_jobs(kind=IMPORT_JOB)] == [job.id]  # resumed
    # the blobs the stopped attempt wrote before its batch committed were overwritten
    verify_import(runtime, mailbox, originals)


def test_a_resumed_import_goes_on_from_its_staged_copy_when_the_store_changed(
    runtime: Runtime, mailbox: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    runtime.mail.import_batch = 5
    source = tmp_path / "a.mbox"
    originals = write_mbox(source, 12)
    fail_blob_write_once(runtime, monkeypatch, 8, OSError(5, "Input/output error"))
    with pytest.raises(JobFailed):
        runtime.mail.import_messages(OPERATOR, mailbox, source)
    (job,) = runtime.jobs.list_jobs(kind=IMPORT_JOB)
    # the store is rewritten with other messages (and another modification time)
    source.unlink()
    replacement = write_mbox(source, 3)
    os.utime(source, ns=(1, 1))
    # a new import of the path is refused while the stopped one is unfinished...
    with pytest.raises(Conflict, match="in progress"):
        runtime.mail.start_import(OPERATOR, mailbox, source)
    # ...and the stopped one, run again, finishes from the copy staged when it began
    worker = runtime.worker()
    ended = worker.run_job(job.id)
    assert ended is not None and ended.state == "succeeded"
    verify_import(runtime, mailbox, originals)
    # now a new import of the new store may start
    assert runtime.mail.import_messages(OPERATOR, mailbox, source).imported == 3
    verify_import(runtime, mailbox, originals + replacement)


def test_starting_the_same_import_twice_joins_it_and_another_store_is_refused(
    runtime: Runtime, mailbox: str, tmp_path: Path
) -> None:
    write_mbox(tmp_path / "a.mbox", 4)
    write_mbox(tmp_path / "b.mbox", 4)
    first = runtime.mail.start_import(OPERATOR, mailbox, tmp_path / "a.mbox")
    again = runtime.mail.start_import(OPERATOR, mailbox, tmp_path / "." / "a.mbox")
    assert again.id == first.id and first.payload["path"] == str(tmp_path / "a.mbox")
    with pytest.raises(Conflict, match=f"job {first.id}"):
        runtime.mail.start_import(OPERATOR, mailbox, tmp_path / "b.mbox")
    assert runtime.mail.list_items(OPERATOR, mailbox) == []  # queued, nothing stored yet
    runtime.worker().run_until_idle()
    assert len(runtime.mail.list_items(OPERATOR, mailbox)) == 4


def test_import_input_errors_change_nothing(runtime: Runtime, mailbox: str, tmp_path: Path) -> None:
    with pytest.raises(BadParameter, match="does not exist"):
        runtime.mail.start_import(OPERATOR, mailbox, tmp_path / "missing.mbox")
    write_mbox(tmp_path / "a.mbox", 2)
    with pytest.raises(BadParameter, match="Unknown mail format 'pst'"):
        runtime.mail.start_import(OPERATOR, mailbox, tmp_path / "a.mbox", fmt="pst")
    assert runtime.jobs.list_jobs(kind=IMPORT_JOB) == []


def test_an_import_whose_store_is_gone_runs_from_its_staged_copy(
    runtime: Runtime, mailbox: str, tmp_path: Path
) -> None:
    originals = write_mbox(tmp_path / "a.mbox", 3)
    job = runtime.mail.start_import(OPERATOR, mailbox, tmp_path / "a.mbox")
    (tmp_path / "a.mbox").unlink()
    (ended,) = runtime.worker().run_until_idle()
    assert ended.id == job.id and ended.state == "succeeded"
    verify_import(runtime, mailbox, originals)


@pytest.mark.parametrize("fmt", ["mbox", "maildir", "eml"])
def test_an_export_that_fails_part_way_leaves_nothing_at_its_path(
    runtime: Runtime, mailbox: str, tmp_path: Path, fmt: str
) -> None:
    write_mbox(tmp_path / "a.mbox", 5)
    runtime.mail.import_messages(OPERATOR, mailbox, tmp_path / "a.mbox")
    third = runtime.mail.list_items(OPERATOR, mailbox)[2]
    with runtime.db.transaction() as session:
        row = session.get(MailItemRow, third.id)
        assert row is not None
        blob = runtime.home.blobs_dir / row.blob
    sealed = bytearray(blob.read_bytes())
    sealed[-5] ^= 1  # tampered with on disk
    blob.write_bytes(bytes(sealed))
    out = tmp_path / "out" / f"export.{fmt}"
    out.parent.mkdir()
    with pytest.raises(DecryptionFailed):
        runtime.mail.export_messages(OPERATOR, mailbox, out, fmt=fmt)
    assert list(out.parent.iterdir()) == []  # no partial store, no staging left behind
    # once the item is gone, the export succeeds and holds the other four
    runtime.mail.delete_item(OPERATOR, mailbox, third.id)
    assert runtime.mail.export_messages(OPERATOR, mailbox, out, fmt=fmt) == 4
    assert [p.name for p in out.parent.iterdir()] == [out.name]


def test_a_resumed_import_checks_the_last_message_it_stored_even_when_the_store_looks_the_same(
    runtime: Runtime, mailbox: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An import queued before imports were staged (its payload names a path, no staging)
    still reads the store on disk, and checks it as it did."""
    runtime.mail.import_batch = 4
    source = tmp_path / "a.mbox"
    write_mbox(source, 12)
    with runtime.db.transaction() as session:
        job = runtime.jobs.enqueue(
            session,
            IMPORT_JOB,
            runtime.mail.get(OPERATOR, mailbox).id,
            payload=payload_dict(
                ImportPayload(
                    path=str(source),
                    format="mbox",
                    signature=source_signature(source, "mbox"),
                    principal=OPERATOR.principal_id,
                )
            ),
            created_by=OPERATOR,
            total=12,
        )
    fail_blob_write_once(runtime, monkeypatch, 10, OSError(5, "Input/output error"))
    stopped = runtime.worker().run_job(job.id)
    assert stopped is not None and stopped.state == "queued"
    assert stopped.checkpoint["consumed"] == 8
    # the 8th message is edited in place: same size, same modification time
    stat = source.stat()
    data = source.read_bytes()
    edited = data.replace(b"Quarterly numbers 7 ", b"Quarterly numbers X ", 1)
    assert edited != data and len(edited) == len(data)
    source.write_bytes(edited)
    os.utime(source, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    ended = runtime.worker().run_job(job.id)
    assert ended is not None and ended.state == "failed"
    assert "no longer holds the messages already imported; 8 of 12" in (ended.error or "")
    assert len(runtime.mail.list_items(OPERATOR, mailbox)) == 8
