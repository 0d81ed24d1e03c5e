"""The blob sweep (``service.blob_sweep``) on a real database (SQLite, and PostgreSQL when
configured) and real files: what killed writers leave behind goes once the grace has passed,
and nothing anything references, or may still reference, is touched.

Orphans are made the way crashes make them: an upload SIGKILLed after a few chunks (a child
process that kills itself from inside its source stream, at a chosen chunk, and a real
``customerkey file put`` killed mid-upload), a mail blob with no row (a write killed before
its commit; a re-key batch killed before its rows switched; a purge killed before its blob
deletion), and staging files of dead writers. Time moves on the frozen clock, never by
sleeping: blob files carry real modification times, so the clock starts at the real time.
"""

from __future__ import annotations

import hashlib
import io
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from customerkey.clock import FrozenClock
from customerkey.errors import Conflict, Forbidden
from customerkey.jobs.blob_sweep import AUDIT_OPERATION, BlobSweeper, SweepReport
from customerkey.runtime import Runtime
from customerkey.server.supervisor import startup_sweep
from customerkey.storage.blobs import temp_name
from customerkey.vault.models import OPERATOR, Actor
from tests.support.crash_harness import SRC_DIR, dead_pid, verify_audit
from tests.support.filesfixtures import (
    KEY_A,
    TENANT,
    URI_A,
    VAULT_A,
    generated_bytes,
    register,
    setup_tenant_and_vaults,
    site_url,
)

pytestmark = pytest.mark.storage

CHUNK = 64 * 1024
SEGMENT = 16 * 1024
GRACE = timedelta(hours=1)
PAST_GRACE = GRACE + timedelta(minutes=10)  # the test's own run time stays inside the margin
SITE = site_url("sweep")
UPLOAD = "Shared Documents/killed.bin"
TENANT_ADMIN = Actor("admin@contoso.com", tenant=TENANT, roles=("tenant-admin",))


@pytest.fixture
def rt(runtime: Runtime, clock: FrozenClock) -> Runtime:
    clock.set(datetime.now(UTC))
    runtime.files.chunk_size = CHUNK
    runtime.files.segment_size = SEGMENT
    setup_tenant_and_vaults(runtime)
    register(runtime)
    runtime.files.create_site(OPERATOR, SITE)
    return runtime


def sweeper(rt: Runtime) -> BlobSweeper:
    assert rt.blob_sweeper.grace == GRACE  # the setting's default reaches the runtime
    return rt.blob_sweeper


def tree(rt: Runtime) -> dict[str, str]:
    """Every file under the blob folder (staging files too) and its sha256."""
    root = rt.home.blobs_dir
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in root.rglob("*")
        if p.is_file()
    }


def site_id(rt: Runtime) -> str:
    return rt.files.get_site(OPERATOR, SITE).id


def download(rt: Runtime, path: str, version: int | None = None) -> bytes:
    out = io.BytesIO()
    rt.files.download(OPERATOR, SITE, path, out, version=version)
    return out.getvalue()


def child_env(db_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CUSTOMERKEY_")}
    env["CUSTOMERKEY_DATABASE_URL"] = db_url
    env["PYTHONPATH"] = os.pathsep.join([str(SRC_DIR), *filter(None, [env.get("PYTHONPATH")])])
    return env


KILLED_UPLOAD = """
import os, signal, sys
from pathlib import Path
from customerkey.config import Settings
from customerkey.runtime import Runtime
from customerkey.vault.models import OPERATOR

home, site, path, chunk, kill_after = sys.argv[1:6]
chunk, kill_after = int(chunk), int(kill_after)
rt = Runtime.open(Settings(home=Path(home)))
rt.files.chunk_size = chunk
rt.files.segment_size = 16 * 1024


class Source:
    # Dies (SIGKILL: no clean-up runs) once it has handed over kill_after chunks and part
    # of the next one, so the writer of that chunk has its staging file open.
    given = 0

    def read(self, size=-1):
        size = 4096 if size < 0 else min(size, 4096)
        if self.given >= chunk * kill_after + 1000:
            os.kill(os.getpid(), signal.SIGKILL)
        self.given += size
        return bytes([self.given % 251]) * size


rt.files.upload(OPERATOR, site, path, Source())
"""


def kill_an_upload(rt: Runtime, db_url: str, tmp_path: Path, kill_after: int) -> set[str]:
    """Run an upload in a child process that SIGKILLs itself in the middle of chunk
    ``kill_after``; returns the names of what it left under the site's folder."""
    before = {n for n in tree(rt) if n.startswith(f"files/{site_id(rt)}/")}
    script = tmp_path / "killed_upload.py"
    script.write_text(KILLED_UPLOAD)
    child = subprocess.run(
        [sys.executable, str(script), str(rt.home.path), SITE, UPLOAD, str(CHUNK), str(kill_after)],
        env=child_env(db_url),
        capture_output=True,
        timeout=120,
    )
    assert child.returncode == -signal.SIGKILL, child.stderr.decode(errors="replace")
    left = {n for n in tree(rt) if n.startswith(f"files/{site_id(rt)}/")} - before
    return left


def counts(report: SweepReport) -> tuple[int, int, int, int]:
    return report.orphans, report.orphan_bytes, report.temp_files, report.temp_bytes


def test_sweep_removes_what_crashes_left_after_the_grace_and_nothing_referenced(
    rt: Runtime, clock: FrozenClock, db_url: str, tmp_path: Path
) -> None:
    # Referenced content: files with versions, mail, then a files roll and a mailbox re-key.
    files = {
        "Shared Documents/a.bin": [generated_bytes(3 * CHUNK + 5, seed=1), b"second version"],
        "Shared Documents/empty.bin": [b""],
    }
    for path, versions in files.items():
        for data in versions:
            rt.files.upload(OPERATOR, SITE, path, io.BytesIO(data))
    upns = ["alice@contoso.com", "bob@contoso.com"]
    mail: dict[str, dict[str, bytes]] = {}
    box_ids: dict[str, str] = {}
    for upn in upns:
        box_ids[upn] = rt.mail.create_mailbox(OPERATOR, TENANT, upn).id
        messages = [f"Subject: {upn} {i}\n\nhello {i}\n".encode() * (i + 1) for i in range(4)]
        mail[upn] = {rt.mail.add_message(OPERATOR, upn, m).id: m for m in messages}
    rt.vault.rotate_key(OPERATOR, VAULT_A, KEY_A)
    rt.files.roll(OPERATOR, TENANT, "primary", URI_A)
    rt.mail.move(OPERATOR, upns[0])
    assert {j.state for j in rt.worker().run_until_idle()} == {"succeeded"}
    assert rt.files.status(OPERATOR, TENANT).state == "Registered"
    referenced = tree(rt)

    # A raising source is not a crash: the upload removes its own chunks.
    class Failing(io.RawIOBase):
        given = 0

        def readinto(self, buffer: memoryview | bytearray) -> int:  # type: ignore[override]
            if self.given > 2 * CHUNK:
                raise OSError("client went away")
            view = memoryview(buffer).cast("B")
            view[:] = b"x" * len(view)
            self.given += len(view)
            return len(view)

    with pytest.raises(OSError):
        rt.files.upload(OPERATOR, SITE, UPLOAD, Failing())
    assert tree(rt) == referenced

    # What crashes leave: a SIGKILLed upload (3 chunks and a staging file) ...
    killed = kill_an_upload(rt, db_url, tmp_path, kill_after=3)
    killed_chunks = {n for n in killed if not n.rsplit("/", 1)[1].startswith(".")}
    killed_staging = killed - killed_chunks
    assert len(killed_chunks) == 3 and len(killed_staging) == 1, killed
    with pytest.raises(Exception, match="No file"):
        rt.files.versions(OPERATOR, SITE, UPLOAD)
    # ... mail blobs with no row: a write killed before its commit, a re-key batch killed
    # before its rows switched (alice's items are at key 2 now), an old blob whose deletion a
    # re-key did not reach, and a mailbox folder a purge killed before deleting it ...
    store = rt.blob_sweeper.blobs
    alice_id, bob_id = box_ids[upns[0]], box_ids[upns[1]]
    first_item = rt.mail.list_items(OPERATOR, upns[0])[0].id
    assert f"mail/{alice_id}/{first_item}.2" in referenced  # re-keyed: the old blob is gone
    orphans = {
        f"mail/{bob_id}/{uuid.uuid4()}.1",
        f"mail/{alice_id}/{first_item}.3",
        f"mail/{alice_id}/{first_item}.1",
        f"mail/{uuid.uuid4()}/{uuid.uuid4()}.1",
    }
    for name in orphans:
        store.put_bytes(name, os.urandom(100))
    # ... and a mail writer killed mid-write.
    dead_tmp = f"mail/{bob_id}/{temp_name(f'{uuid.uuid4()}.1', dead_pid())}"
    (store.root / dead_tmp).write_bytes(b"half a blob")
    # Not ours: left alone whatever its age.
    (store.root / "mail" / bob_id / "NOTES").write_bytes(b"an operator's file")
    # In flight: an upload still writing (a live writer's staging file beside an old chunk),
    # and one whose newest chunk is recent; no row names either yet.
    busy = f"files/{site_id(rt)}/{uuid.uuid4()}/{uuid.uuid4()}"
    store.put_bytes(f"{busy}/000000", b"old chunk of a live upload")
    (store.root / busy / temp_name("000001", os.getpid())).write_bytes(b"being written")
    slow = f"files/{site_id(rt)}/{uuid.uuid4()}/{uuid.uuid4()}"
    store.put_bytes(f"{slow}/000000", b"old chunk")
    store.put_bytes(f"{slow}/000001", b"recent chunk")
    fresh = clock.now() + PAST_GRACE  # recent once the clock has moved on
    os.utime(store.root / slow / "000001", (fresh.timestamp(), fresh.timestamp()))
    audit_before = len(rt.audit_log.records(OPERATOR, operation=AUDIT_OPERATION))

    # Within the grace: only dead writers' staging files go.
    early = sweeper(rt).sweep(OPERATOR)
    assert set(early.removed) == killed_staging | {dead_tmp}
    assert early.orphans == 0 and early.temp_files == 2 and early.temp_bytes > 0
    after_early = tree(rt)
    assert after_early.keys() == (referenced.keys() | killed_chunks | orphans) | {
        f"mail/{bob_id}/NOTES",
        f"{busy}/000000",
        f"{busy}/{temp_name('000001', os.getpid())}",
        f"{slow}/000000",
        f"{slow}/000001",
    }
    assert all(after_early[n] == d for n, d in referenced.items())

    # Past the grace: a dry run says what would go and removes nothing ...
    clock.advance(PAST_GRACE)
    expected = killed_chunks | orphans
    dry = sweeper(rt).sweep(OPERATOR, dry_run=True)
    assert dry.dry_run and set(dry.removed) == expected and dry.listed_all
    assert dry.orphans == len(expected) and dry.temp_files == 0 and dry.unknown == 1
    assert tree(rt) == after_early
    # ... and the sweep removes exactly that, and nothing referenced or in flight.
    done: list[tuple[int, int]] = []
    real = sweeper(rt).sweep(OPERATOR, progress=lambda d, t: done.append((d, t)))
    assert not real.dry_run and set(real.removed) == expected
    assert counts(real) == counts(dry) and real.bytes_reclaimed == dry.orphan_bytes > 0
    assert done[0][0] == 0 and done[-1] == (real.folders, real.folders) and real.folders >= 4
    left = tree(rt)
    assert left == {n: d for n, d in after_early.items() if n not in expected}
    killed_version = next(iter(killed_chunks)).rsplit("/", 1)[0]
    assert not (store.root / killed_version).exists()  # the empty version folder went too
    assert (store.root / busy).is_dir() and (store.root / slow).is_dir()

    # Everything reads back byte-identical (no cached key helps).
    rt.key_cache.clear()
    for path, versions in files.items():
        for number, data in enumerate(versions, start=1):
            assert download(rt, path, number) == data
    for upn in upns:
        assert {i.id for i in rt.mail.list_items(OPERATOR, upn)} == mail[upn].keys()
        for item_id, data in mail[upn].items():
            assert rt.mail.read_item(OPERATOR, upn, item_id) == data

    # One audit record with the counts; the chain still verifies; a second sweep has
    # nothing to do and records nothing.
    records = rt.audit_log.records(OPERATOR, operation=AUDIT_OPERATION)
    assert len(records) == audit_before + 2  # the early sweep removed staging files
    details = records[-1].details
    assert details["orphans"] == len(expected) and details["temp_files"] == 0
    assert details["bytes_reclaimed"] == real.bytes_reclaimed and details["dry_run"] is False
    assert records[-1].principal == OPERATOR.principal_id
    again = sweeper(rt).sweep(OPERATOR)
    assert counts(again) == (0, 0, 0, 0) and again.removed == ()
    assert len(rt.audit_log.records(OPERATOR, operation=AUDIT_OPERATION)) == len(records)
    verify_audit(rt, "after the blob sweeps")
    # The killed upload never became a version; a new one works.
    rt.files.upload(OPERATOR, SITE, UPLOAD, io.BytesIO(b"after the crash"))
    assert download(rt, UPLOAD) == b"after the crash"


def test_only_the_operator_sweeps(rt: Runtime, clock: FrozenClock) -> None:
    store = rt.blob_sweeper.blobs
    orphan = f"mail/{uuid.uuid4()}/{uuid.uuid4()}.1"
    store.put_bytes(orphan, b"orphan")
    clock.advance(PAST_GRACE)
    with pytest.raises(Forbidden):
        rt.blob_sweeper.sweep(TENANT_ADMIN)
    with pytest.raises(Forbidden):
        rt.blob_sweeper.sweep(TENANT_ADMIN, dry_run=True)
    assert store.exists(orphan)
    operator_principal = Actor("root@platform.example", roles=("operator",))
    assert rt.blob_sweeper.sweep(operator_principal).removed == (orphan,)


def test_a_blob_rewritten_during_the_sweep_survives(rt: Runtime, clock: FrozenClock) -> None:
    """A retried import or re-key writes the same name again: if that lands between the
    sweep's look at an old orphan and its deletion, the new blob stays."""
    store = rt.blob_sweeper.blobs
    name = f"mail/{uuid.uuid4()}/{uuid.uuid4()}.1"
    store.put_bytes(name, b"left by a killed attempt")
    clock.advance(PAST_GRACE)
    real_delete = store.delete_unless_newer

    def rewritten_first(blob: str, older_than: datetime) -> int | None:
        store.put_bytes(blob, b"written by the retry")  # a fresh file, as every write makes
        now = clock.now().timestamp()  # "fresh" on the frozen clock, which has moved on
        os.utime(store.root / blob, (now, now))
        return real_delete(blob, older_than)

    store.delete_unless_newer = rewritten_first  # type: ignore[method-assign]
    try:
        report = rt.blob_sweeper.sweep(OPERATOR)
    finally:
        del store.delete_unless_newer
    assert report.orphans == 0 and report.removed == ()
    assert store.read_bytes(name) == b"written by the retry"


def _chunk_blobs(folder: Path) -> Iterator[Path]:
    return (p for p in folder.rglob("*") if p.is_file() and not p.name.startswith("."))


def test_a_sigkilled_file_put_leaves_chunks_the_sweep_removes(
    rt: Runtime, clock: FrozenClock, db_url: str, tmp_path: Path
) -> None:
    """The real command, killed as soon as its first chunk (8 MiB, the default) is stored."""
    rt.files.upload(OPERATOR, SITE, "Shared Documents/kept.bin", io.BytesIO(b"kept"))
    before = tree(rt)
    local = tmp_path / "big.bin"
    local.write_bytes(generated_bytes(40 * 1024 * 1024, seed=7))
    site_blobs = rt.home.blobs_dir / "files" / site_id(rt)
    chunks_before = set(_chunk_blobs(site_blobs))
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "customerkey.cli.main",
            "--home",
            str(rt.home.path),
            "file",
            "put",
            SITE,
            UPLOAD,
            str(local),
        ],
        env=child_env(db_url),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 120
    while proc.poll() is None and time.monotonic() < deadline:
        if set(_chunk_blobs(site_blobs)) - chunks_before:
            break
        time.sleep(0.002)
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGKILL)
    _, err = proc.communicate(timeout=60)
    if proc.returncode == 0:
        pytest.skip("the upload finished before it could be killed")
    assert proc.returncode == -signal.SIGKILL, err.decode(errors="replace")
    left = tree(rt).keys() - before.keys()
    assert left, "the killed put left nothing to sweep"
    with pytest.raises(Exception, match="No file"):
        rt.files.versions(OPERATOR, SITE, UPLOAD)

    assert rt.blob_sweeper.sweep(OPERATOR, dry_run=True).orphans == 0  # within the grace
    clock.advance(PAST_GRACE)
    report = rt.blob_sweeper.sweep(OPERATOR)
    assert set(report.removed) == left and report.orphans >= 1
    assert tree(rt) == before
    assert download(rt, "Shared Documents/kept.bin") == b"kept"
    verify_audit(rt, "after sweeping a killed file put")


def test_the_worker_sweeps_once_as_it_starts(rt: Runtime, db_url: str) -> None:
    """``customerkey worker`` sweeps before its loop (on the system clock, so the orphan is
    made old on disk); a sweep that fails is logged and the worker carries on."""
    store = rt.blob_sweeper.blobs
    orphan = f"mail/{uuid.uuid4()}/{uuid.uuid4()}.1"
    store.put_bytes(orphan, b"left by a killed writer")
    old = time.time() - 2 * GRACE.total_seconds()
    os.utime(store.root / orphan, (old, old))
    proc = subprocess.Popen(
        [sys.executable, "-m", "customerkey.cli.main", "--home", str(rt.home.path), "worker"],
        env=child_env(db_url),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 60
        while store.exists(orphan) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not store.exists(orphan)
        assert proc.poll() is None  # still running its loop
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0 and b"Traceback" not in err, err.decode(errors="replace")
    (record,) = rt.audit_log.records(OPERATOR, operation=AUDIT_OPERATION)
    assert record.details["orphans"] == 1


def test_a_failing_start_up_sweep_does_not_stop_the_worker(
    rt: Runtime, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(*_args: object, **_kwargs: object) -> SweepReport:
        raise OSError("blob folder unreadable")

    monkeypatch.setattr(rt.blob_sweeper, "sweep", broken)
    with caplog.at_level("ERROR", logger="customerkey.sweep"):
        assert startup_sweep(rt) is None
    assert "blob sweep at worker start failed" in caplog.text


def test_an_upload_that_stalled_past_the_grace_and_lost_chunks_to_a_sweep_is_refused(
    rt: Runtime, clock: FrozenClock
) -> None:
    """A client that stalls between chunks for longer than the grace: its first chunks look
    like a killed upload's orphans and are swept; the upload must then fail, not commit a
    version whose chunks are gone."""

    class Stalling(io.RawIOBase):
        given = 0

        def readinto(self, buffer: memoryview | bytearray) -> int:  # type: ignore[override]
            if self.given >= 3 * CHUNK:
                return 0
            if self.given == 2 * CHUNK:  # the client stalls; meanwhile a sweep runs
                for chunk in _chunk_blobs(rt.home.blobs_dir / "files"):
                    os.utime(chunk, (0, 0))
                clock.advance(PAST_GRACE)
                swept = sweeper(rt).sweep(OPERATOR)
                assert swept.orphans == 2, swept
            view = memoryview(buffer).cast("B")[: min(len(buffer), 3 * CHUNK - self.given)]
            view[:] = b"s" * len(view)
            self.given += len(view)
            return len(view)

    with pytest.raises(Conflict, match="removed while the upload stalled"):
        rt.files.upload(OPERATOR, SITE, UPLOAD, Stalling())
    assert rt.files.list_files(OPERATOR, SITE) == []
