"""Fixtures of the blob-store tests: ``store``, which runs a test once on each ``BlobStore``
(the local folder, and S3 on the session's SeaweedFS from ``tests.support.crash_fixtures``),
each S3 test under a key prefix of its own."""

from __future__ import annotations

from pathlib import Path

import pytest

from customerkey.storage.blob_store import BlobStore
from customerkey.storage.blobs import LocalBlobStore
from customerkey.storage.s3_blobs import S3BlobStore
from tests.support.seaweedfs import SeaweedFs


@pytest.fixture(params=["local", "s3"])
def store_kind(request: pytest.FixtureRequest) -> str:
    kind: str = request.param
    return kind


@pytest.fixture
def store(store_kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> BlobStore:
    if store_kind == "local":
        return LocalBlobStore(tmp_path / "blobs")
    server: SeaweedFs = request.getfixturevalue("seaweedfs")
    return server.store()


@pytest.fixture
def s3_store(seaweedfs: SeaweedFs) -> S3BlobStore:
    """The S3 store alone, for what only it has (parts, conditional deletes)."""
    return seaweedfs.store()
