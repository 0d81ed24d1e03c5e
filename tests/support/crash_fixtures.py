"""Fixtures of the crash tests: a runtime on the system clock (the killed processes run on
real time) and a ``CrashHarness`` on its home folder, whose kills are printed at the end."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from customerkey.config import Settings
from customerkey.runtime import Runtime
from tests.support.crash_harness import CrashHarness, pick_seed


@pytest.fixture
def crash_runtime(db_url: str, tmp_path: Path) -> Iterator[Runtime]:
    rt = Runtime.open(Settings(home=tmp_path / "home", database_url=db_url))
    try:
        yield rt
    finally:
        rt.close()


@pytest.fixture
def harness(
    crash_runtime: Runtime, db_url: str, tmp_path: Path, db_backend: str
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
        print(f"\n[{db_backend}] {h.describe()}")
