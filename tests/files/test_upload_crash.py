"""SIGKILL during file uploads, on the local blob folder and on PostgreSQL + S3 (SeaweedFS).

An upload runs in a child process (``Runtime.open`` from the environment the crash harness
gives every process it starts: home, database, blob store) that SIGKILLs itself from inside
its source stream at a seeded point (no clean-up of any kind runs): early in the first chunk
(on S3, before any part was sent), late in the second (on S3, a multipart upload open with a
part uploaded) and at the start of the third (two chunks stored, the version not committed).
Afterwards:

- the file has no version, and the site lists only what was there before;
- no reader sees a partial blob: every object a killed upload left is a whole chunk;
- the blob sweep, once the grace has passed, removes exactly what the killed uploads left
  (chunks, staging files of dead writers, incomplete S3 multipart uploads) and nothing any
  version references;
- the same path uploads afterwards and downloads byte for byte; the audit chain verifies.

A failure prints its seed; ``CUSTOMERKEY_CRASH_SEED=<seed>`` replays its kill points.
"""

from __future__ import annotations

import io
import random
import signal
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from customerkey.clock import FrozenClock
from customerkey.config import Settings
from customerkey.runtime import Runtime
from customerkey.vault.models import OPERATOR
from tests.support.crash_harness import CrashHarness, verify_audit
from tests.support.filesfixtures import (
    generated_bytes,
    register,
    setup_tenant_and_vaults,
    site_url,
)

pytestmark = [pytest.mark.storage, pytest.mark.slow, pytest.mark.blob_stores]

MIB = 1024 * 1024
CHUNK = 6 * MIB  # above S3's smallest part (5 MiB, set in the child): a chunk is multipart
SEGMENT = 256 * 1024
SITE = site_url("crash")
UPLOAD = "Shared Documents/killed.bin"
KEPT = "Shared Documents/kept.bin"
# (name, chunk, low, high): a kill inside chunk ``chunk`` once the source has handed over a
# drawn fraction in [low, high) of it.
KILL_POINTS = (
    ("first chunk, early", 0, 0.05, 0.6),
    ("second chunk, late (S3: a part sent)", 1, 0.93, 0.98),
    ("third chunk, at its start", 2, 0.001, 0.02),
)

KILLED_UPLOAD = """
import os, signal, sys
from customerkey.config import load_settings
from customerkey.runtime import Runtime
from customerkey.vault.models import OPERATOR

site, path, chunk, segment, kill_at = sys.argv[1:6]
chunk, segment, kill_at = int(chunk), int(segment), int(kill_at)
rt = Runtime.open(load_settings())
rt.files.chunk_size = chunk
rt.files.segment_size = segment
if hasattr(rt.files.blobs, "part_size"):
    rt.files.blobs.part_size = 5 * 1024 * 1024  # S3's smallest


class Source:
    given = 0

    def read(self, size=-1):
        size = 65536 if size < 0 else min(size, 65536)
        if self.given + size > kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
        self.given += size
        return bytes([self.given % 251]) * size


rt.files.upload(OPERATOR, site, path, Source())
raise SystemExit("the upload finished: it should have been killed")
"""


def _listing(rt: Runtime, site_id: str) -> dict[str, int]:
    """Every object under the site's folder (local staging files too) and its size."""
    return {
        info.name: info.size for info in rt.files.blobs.iter_blobs(f"files/{site_id}", staging=True)
    }


def _incomplete_uploads(rt: Runtime, site_id: str) -> int:
    far = datetime.now(UTC) + timedelta(days=1)
    return len(rt.files.blobs.abort_stale_uploads(f"files/{site_id}", far, dry_run=True))


def test_kill_9_during_uploads_leaves_nothing_visible_and_the_sweep_cleans_up(
    crash_runtime: Runtime,
    harness: CrashHarness,
    tmp_path: Path,
    crash_store: str,
    db_url: str,
) -> None:
    rt = crash_runtime
    setup_tenant_and_vaults(rt)
    register(rt)
    rt.files.chunk_size = CHUNK
    rt.files.segment_size = SEGMENT
    site = rt.files.create_site(OPERATOR, SITE)
    kept = generated_bytes(CHUNK + 1000, seed=3)  # one whole chunk and a short one
    rt.files.upload(OPERATOR, SITE, KEPT, io.BytesIO(kept))
    referenced = _listing(rt, site.id)
    whole_chunk = max(referenced.values())  # the sealed size of a whole chunk

    script = tmp_path / "killed_upload.py"
    script.write_text(KILLED_UPLOAD)
    draw = random.Random(harness.seed)
    context = f"{crash_store} blobs, seed {harness.seed} (CUSTOMERKEY_CRASH_SEED replays it)"
    for label, chunk, low, high in KILL_POINTS:
        kill_at = chunk * CHUNK + int(draw.uniform(low, high) * CHUNK)
        child = subprocess.run(
            [sys.executable, str(script), SITE, UPLOAD, str(CHUNK), str(SEGMENT), str(kill_at)],
            env=harness.env(),
            capture_output=True,
            timeout=120,
        )
        assert child.returncode == -signal.SIGKILL, (
            f"{label}: {child.returncode} {child.stderr.decode(errors='replace')[-2000:]}\n"
            f"{context}"
        )
        context += f"\n  killed {label} at byte {kill_at:,}"

    with pytest.raises(Exception, match="No file"):
        rt.files.versions(OPERATOR, SITE, UPLOAD)
    assert [f.path for f in rt.files.list_files(OPERATOR, SITE)] == [KEPT], context
    after = _listing(rt, site.id)
    left = {name: size for name, size in after.items() if name not in referenced}
    assert referenced.items() <= after.items(), context
    chunks_left = {n: s for n, s in left.items() if not n.rsplit("/", 1)[1].startswith(".")}
    # The kill in the third chunk came after two whole chunks were stored; no partial blob.
    assert len(chunks_left) >= 2 and set(chunks_left.values()) == {whole_chunk}, (
        f"what killed uploads left: {left}\n{context}"
    )
    uploads = _incomplete_uploads(rt, site.id)
    if crash_store == "s3":
        assert uploads >= 1, f"no multipart upload was left open by a kill\n{context}"
        assert len(left) == len(chunks_left), context  # S3 has no staging files
    else:
        assert uploads == 0

    # The sweep, once the grace has passed (a runtime on a clock set past it).
    later = FrozenClock()
    later.set(datetime.now(UTC) + rt.blob_sweeper.grace + timedelta(minutes=10))
    sweeper_rt = Runtime.open(Settings(home=rt.home.path, database_url=db_url), clock=later)
    try:
        report = sweeper_rt.blob_sweeper.sweep(OPERATOR)
    finally:
        sweeper_rt.close()
    assert report.orphans == len(chunks_left), f"{report}\n{context}"
    assert set(report.removed) >= set(left), f"{report}\n{context}"
    assert _listing(rt, site.id) == referenced, context
    assert _incomplete_uploads(rt, site.id) == 0, context

    # Nothing was harmed: the kept file reads back, the killed path uploads afresh.
    out = io.BytesIO()
    rt.files.download(OPERATOR, SITE, KEPT, out)
    assert out.getvalue() == kept
    again = generated_bytes(2 * CHUNK + 77, seed=4)
    rt.files.upload(OPERATOR, SITE, UPLOAD, io.BytesIO(again))
    out = io.BytesIO()
    rt.files.download(OPERATOR, SITE, UPLOAD, out)
    assert out.getvalue() == again
    verify_audit(rt, context)
