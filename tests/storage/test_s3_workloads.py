"""The workloads end to end on S3: a Runtime whose settings choose the S3 blob store, on a real
SeaweedFS server. Files upload and download (several chunks) and mail import and export give
every byte back; no marker of the content is in the bucket; the blob sweep removes an orphan
object and aborts a stale multipart upload and leaves referenced blobs alone."""

from __future__ import annotations

import io
import mailbox
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from customerkey.clock import FrozenClock
from customerkey.config import Settings
from customerkey.rng import SystemRng
from customerkey.runtime import Runtime
from customerkey.storage.s3_blobs import S3BlobStore
from customerkey.vault.models import OPERATOR
from tests.support import filesfixtures as files_fx
from tests.support import mailfixtures as mail_fx
from tests.support.seaweedfs import SeaweedFs

MARKER = b"MARKER-s3-plaintext-7c9e1f"
CHUNK = 64 * 1024


@pytest.fixture
def prefix(seaweedfs: SeaweedFs) -> str:
    return seaweedfs.new_prefix()


@pytest.fixture
def rt(
    seaweedfs: SeaweedFs,
    prefix: str,
    tmp_path: Path,
    clock: FrozenClock,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Runtime]:
    for name, value in seaweedfs.env(prefix).items():
        monkeypatch.setenv(name, value)
    clock.set(datetime.now(UTC))  # S3 stamps LastModified with the server's own clock
    settings = Settings(home=tmp_path / "home")
    assert settings.blob_store == "s3" and settings.s3_prefix == prefix
    runtime = Runtime.open(settings, clock=clock, rng=SystemRng())
    runtime.files.chunk_size = CHUNK
    try:
        yield runtime
    finally:
        runtime.close()


def bucket_contents(seaweedfs: SeaweedFs, prefix: str) -> dict[str, bytes]:
    client = seaweedfs.client()
    return {
        key: client.get_object(Bucket=seaweedfs.bucket, Key=key)["Body"].read()
        for key in seaweedfs.keys(prefix)
    }


def test_files_upload_and_download_through_s3(
    rt: Runtime, seaweedfs: SeaweedFs, prefix: str
) -> None:
    assert isinstance(rt.files.blobs, S3BlobStore) and rt.files.blobs is rt.mail.blobs
    files_fx.setup_tenant_and_vaults(rt)
    rt.files.create_site(OPERATOR, files_fx.FINANCE)
    contents = {
        f"Shared Documents/{size}.bin": (MARKER * (size // len(MARKER) + 1))[:size]
        for size in (0, 1, CHUNK, CHUNK + 1, 5 * CHUNK + 123)
    }
    for path, data in contents.items():
        rt.files.upload(OPERATOR, files_fx.FINANCE, path, io.BytesIO(data))
    for path, data in contents.items():
        out = io.BytesIO()
        rt.files.download(OPERATOR, files_fx.FINANCE, path, out)
        assert out.getvalue() == data, path

    stored = bucket_contents(seaweedfs, prefix)
    assert len(stored) >= 1 + 1 + 1 + 2 + 6  # one object per chunk
    assert all(key.startswith(f"{prefix}/files/") for key in stored)
    assert not any(MARKER in body or MARKER[:12] in body for body in stored.values())
    assert not (rt.home.blobs_dir / "files").exists()  # nothing went to the local folder


def test_mail_import_and_export_through_s3(
    rt: Runtime, seaweedfs: SeaweedFs, prefix: str, tmp_path: Path
) -> None:
    mail_fx.setup_policy(rt)
    rt.mail.create_mailbox(OPERATOR, mail_fx.TENANT, "alice@contoso.com", policy="NA-DEP")
    originals = mail_fx.write_mbox(tmp_path / "alice.mbox", 12, big=True)
    assert rt.mail.import_messages(OPERATOR, "alice@contoso.com", tmp_path / "alice.mbox").imported
    rt.mail.export_messages(OPERATOR, "alice@contoso.com", tmp_path / "out.mbox", fmt="mbox")
    box = mailbox.mbox(str(tmp_path / "out.mbox"), create=False)
    assert [box.get_bytes(k) for k in box.iterkeys()] == originals

    stored = bucket_contents(seaweedfs, prefix)
    assert len(stored) == 12 and all(k.startswith(f"{prefix}/mail/") for k in stored)
    needles = [mail_fx.canary(i).encode() for i in range(12)] + [b"From the finance team"]
    for body in stored.values():
        assert not any(needle in body for needle in needles)


def test_the_sweep_removes_orphans_and_aborts_stale_uploads_on_s3(
    rt: Runtime, seaweedfs: SeaweedFs, prefix: str, clock: FrozenClock
) -> None:
    files_fx.setup_tenant_and_vaults(rt)
    site = rt.files.create_site(OPERATOR, files_fx.FINANCE)
    rt.files.upload(OPERATOR, files_fx.FINANCE, "kept.bin", io.BytesIO(MARKER * 10_000))
    referenced = set(seaweedfs.keys(prefix))
    store = rt.files.blobs
    # What a killed upload leaves: an orphan chunk, and a multipart upload never completed.
    orphan = f"files/{site.id}/orphan-file/orphan-version/000000"
    store.put_bytes(orphan, b"x" * 100)
    client = seaweedfs.client()
    killed_key = f"{prefix}/files/{site.id}/killed-file/killed-version/000000"
    upload = client.create_multipart_upload(Bucket=seaweedfs.bucket, Key=killed_key)
    client.upload_part(
        Bucket=seaweedfs.bucket,
        Key=killed_key,
        UploadId=upload["UploadId"],
        PartNumber=1,
        Body=b"y" * 1000,
    )

    early = rt.blob_sweeper.sweep(OPERATOR)  # within the grace: nothing goes
    assert early.orphans == 0 and early.temp_files == 0
    assert len(seaweedfs.uploads(prefix)) == 1

    clock.advance(rt.blob_sweeper.grace + timedelta(minutes=10))
    dry = rt.blob_sweeper.sweep(OPERATOR, dry_run=True)
    assert dry.orphans == 1 and dry.temp_files == 1 and len(seaweedfs.uploads(prefix)) == 1
    report = rt.blob_sweeper.sweep(OPERATOR)
    assert report.orphans == 1 and report.orphan_bytes == 100
    assert report.temp_files == 1 and report.temp_bytes == 1000
    assert set(report.removed) == {orphan, killed_key.removeprefix(prefix + "/")}
    assert seaweedfs.uploads(prefix) == []
    assert set(seaweedfs.keys(prefix)) == referenced
    out = io.BytesIO()
    rt.files.download(OPERATOR, files_fx.FINANCE, "kept.bin", out)
    assert out.getvalue() == MARKER * 10_000
