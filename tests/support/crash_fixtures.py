"""Fixtures of the crash tests: a runtime on the system clock (the killed processes run on
real time) and a ``CrashHarness`` on its home folder, whose kills are printed at the end.

``crash_store`` is the blob store the runtime and every process the harness starts use:
"local" (the blob folder), unless the test is marked ``blob_stores``; such a test runs on the
local folder on every configured database and, on PostgreSQL, on S3 as well (a SeaweedFS
server per session, ``tests.support.seaweedfs``; each test under a key prefix of its own, its
settings in the environment, where ``CrashHarness.env`` passes them on)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from customerkey.config import Settings
from customerkey.runtime import Runtime
from tests.support.crash_harness import CrashHarness, pick_seed
from tests.support.seaweedfs import SeaweedFs, start_seaweedfs


@pytest.fixture(scope="session")
def seaweedfs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedFs]:
    """This session's SeaweedFS server (skips without ``weed``; CI requires it)."""
    server = start_seaweedfs(tmp_path_factory.mktemp("seaweedfs"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def crash_store(request: pytest.FixtureRequest) -> str:
    """Which blob store the crash runtime uses: "local", or "s3" (``blob_stores`` tests)."""
    return str(getattr(request, "param", "local"))


@pytest.fixture
def crash_runtime(
    db_url: str,
    tmp_path: Path,
    crash_store: str,
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Runtime]:
    if crash_store == "s3":
        server: SeaweedFs = request.getfixturevalue("seaweedfs")
        for name, value in server.env(server.new_prefix()).items():
            monkeypatch.setenv(name, value)
    settings = Settings(home=tmp_path / "home", database_url=db_url)
    assert settings.blob_store == crash_store
    rt = Runtime.open(settings)
    try:
        yield rt
    finally:
        rt.close()


@pytest.fixture
def harness(
    crash_runtime: Runtime, db_url: str, tmp_path: Path, db_backend: str, crash_store: str
) -> Iterator[CrashHarness]:
    h = CrashHarness(
        crash_runtime.home.path,
        db_url,
        seed=pick_seed(),
        log_dir=tmp_path / "worker-logs",
    )
    try:
        yield h
    finally:
        h.close()
        print(f"\n[{db_backend}, {crash_store} blobs] {h.describe()}")
