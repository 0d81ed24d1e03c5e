"""The workloads end to end on S3: a Runtime whose settings choose the S3 blob store, on a real
SeaweedFS server, with SQLite and with PostgreSQL (when CUSTOMERKEY_TEST_POSTGRES_URL is set:
PostgreSQL + S3 is what several hosts run). Files upload and download (several chunks) and mail
import and export give every byte back; no marker of the content is in the bucket; the blob
sweep removes an orphan object and aborts a stale multipart upload and leaves referenced blobs
alone. A bucket out of room is storage full (503 InsufficientStorage, /healthz degraded), not
an unreachable store; the demo's checks look at the bucket."""

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
    db_url: str,
) -> Iterator[Runtime]:
    """A runtime on S3, on SQLite and (``db_url``) on PostgreSQL when configured: the
    scale-out pair, PostgreSQL + S3, is what several hosts run."""
    for name, value in seaweedfs.env(prefix).items():
        monkeypatch.setenv(name, value)
    clock.set(datetime.now(UTC))  # S3 stamps LastModified with the server's own clock
    settings = Settings(home=tmp_path / "home", database_url=db_url)
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


# ---------------------------------------------------------------------- a bucket out of room


@pytest.mark.parametrize(
    ("code", "status"),
    [
        ("QuotaExceeded", 403),  # Ceph RGW, most providers
        ("XMinioAdminBucketQuotaExceeded", 400),  # MinIO bucket quota
        ("XMinioStorageFull", 507),  # MinIO drives full
        ("SomethingElse", 507),  # any 507 Insufficient Storage
    ],
)
def test_a_bucket_out_of_room_is_storage_full_not_unavailable(code: str, status: int) -> None:
    """S3's quota answers are storage full (503 InsufficientStorage with Retry-After, and
    /healthz degraded, as a full disk), never BlobStoreUnavailable; other refusals stay
    BlobStoreUnavailable."""
    from botocore.stub import Stubber

    from customerkey.storage.blob_store import BlobStoreUnavailable
    from customerkey.storage.exhaustion import is_storage_full
    from customerkey.storage.s3_blobs import BlobStoreFull, make_client

    client = make_client("http://127.0.0.1:9", "us-east-1")
    store = S3BlobStore(client, "bucket", prefix="p")
    with Stubber(client) as stub:
        stub.add_client_error("put_object", service_error_code=code, http_status_code=status)
        with pytest.raises(BlobStoreFull) as full:
            store.put_bytes("mail/a/b.1", b"x")
        stub.add_client_error("put_object", service_error_code="AccessDenied", http_status_code=403)
        with pytest.raises(BlobStoreUnavailable):
            store.put_bytes("mail/a/b.1", b"x")
    assert is_storage_full(full.value) and isinstance(full.value, OSError)
    assert "bucket 'bucket'" in str(full.value) and "put_object" in str(full.value)


def test_a_full_bucket_is_503_insufficient_storage_and_health_degraded_until_it_takes_writes(
    rt: Runtime, seaweedfs: SeaweedFs, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Through the HTTP API: an upload the bucket refuses for its quota answers 503
    InsufficientStorage with Retry-After; /healthz says degraded and, while it does, probes
    the bucket (not the unused local blob folder) until a write gets in again."""
    from botocore.exceptions import ClientError
    from fastapi.testclient import TestClient

    from customerkey.api.app import create_app
    from customerkey.api.deps import ApiContext
    from customerkey.api.tokens import TokenSigner

    files_fx.setup_tenant_and_vaults(rt)
    site = rt.files.create_site(OPERATOR, files_fx.FINANCE)
    principal, _ = rt.principals.create(
        OPERATOR, "ops@platform.example", tenant="platform", roles=["operator"]
    )
    signer = TokenSigner.open(rt.home.path / "token-keys", clock=rt.clock, rng=rt.rng)
    context = ApiContext(runtime=rt, signer=signer, domain="vault.localhost", port=8443)
    token = signer.issue(
        subject=principal.object_id,
        tenant="platform",
        audience=context.resource,
        roles=["operator"],
    ).access_token
    client = TestClient(create_app(context), base_url="https://localhost:8443")
    headers = {"Host": "localhost:8443", "Authorization": f"Bearer {token}"}
    url = f"/api/v1/sites/{site.id}/files/Shared Documents/q4.bin"

    store = rt.files.blobs
    assert isinstance(store, S3BlobStore)
    real_put = store.client.put_object
    refused: list[str] = []

    def quota_exceeded(**kwargs: object) -> object:
        refused.append(str(kwargs["Key"]))
        raise ClientError(
            {"Error": {"Code": "QuotaExceeded"}, "ResponseMetadata": {"HTTPStatusCode": 403}},
            "PutObject",
        )

    assert client.get("/healthz", headers=headers).json()["storage"] == "ok"
    monkeypatch.setattr(store.client, "put_object", quota_exceeded)
    put = client.put(url, headers=headers, content=MARKER * 100)
    assert put.status_code == 503, put.text
    assert put.json()["error"]["code"] == "InsufficientStorage"
    assert int(put.headers["Retry-After"]) == rt.settings.storage_retry_after_seconds
    health = client.get("/healthz", headers=headers)
    assert health.status_code == 503 and health.json()["storage"] == "full"
    assert any(key.startswith(f"{prefix}/health/") for key in refused)  # it probed the bucket
    # (the unused local folder, which has room, would have said "ok")
    assert not list(rt.home.blobs_dir.rglob("*"))

    monkeypatch.setattr(store.client, "put_object", real_put)  # room again
    health = client.get("/healthz", headers=headers)
    assert health.status_code == 200 and health.json()["storage"] == "ok"
    assert not [k for k in seaweedfs.keys(prefix) if "/health/" in k]  # the probe is gone
    put = client.put(url, headers=headers, content=MARKER * 100)
    assert put.status_code == 201, put.text


def test_the_demo_tells_the_story_on_s3(
    seaweedfs: SeaweedFs,
    prefix: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``customerkey demo`` with the S3 settings: every step's check (no plaintext at rest,
    the files blobs unchanged by a key roll) looks at the bucket, where the blobs are."""
    from customerkey.cli.main import main

    for name, value in seaweedfs.env(prefix).items():
        monkeypatch.setenv(name, value)
    home = tmp_path / "demo-home"
    capsys.readouterr()
    code = main(["demo", "--home", str(home)])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "steps behaved as the document says." in out and "FAIL" not in out
    keys = seaweedfs.keys(prefix)
    assert any(k.startswith(f"{prefix}/mail/") for k in keys)
    assert any(k.startswith(f"{prefix}/files/") for k in keys)
    assert not [p for p in (home / "blobs").rglob("*") if p.is_file()]
