"""Shared fixtures. Storage-backed tests take ``db_url``, which runs them on SQLite always and
on PostgreSQL too when CUSTOMERKEY_TEST_POSTGRES_URL is set (each test in a schema of its own)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from customerkey.clock import FrozenClock
from customerkey.config import Settings
from customerkey.rng import SystemRng
from customerkey.runtime import Runtime
from customerkey.storage.database import normalize_url
from tests.support.softhsm import SoftHsm, session_token, suite_token

# Fixtures every concept folder may use: real servers (``live_servers``) and crash harnesses.
pytest_plugins = [
    "tests.support.live_servers",
    "tests.support.crash_fixtures",
    "tests.support.console",
]

POSTGRES_URL = os.environ.get("CUSTOMERKEY_TEST_POSTGRES_URL")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    marked = metafunc.definition.get_closest_marker
    if "db_backend" in metafunc.fixturenames:
        backends = ["sqlite"] + (["postgresql"] if POSTGRES_URL else [])
        if "crash_store" in metafunc.fixturenames and marked("blob_stores"):
            # Crash tests marked ``blob_stores`` (tests/support/crash_fixtures.py): the local
            # blob folder on every database, and S3 (SeaweedFS) on PostgreSQL.
            pairs = [(b, "local") for b in backends] + (
                [("postgresql", "s3")] if POSTGRES_URL else []
            )
            metafunc.parametrize(
                ("db_backend", "crash_store"),
                pairs,
                indirect=["crash_store"],
                ids=[f"{b}-{s}" for b, s in pairs],
            )
        else:
            metafunc.parametrize("db_backend", backends)
    # Suites marked ``protectors`` run their ``runtime`` once with every key type protected in
    # software and once with the -HSM key types in SoftHSM2 (the PKCS#11 protector); a test of
    # such a suite about software protection alone is marked ``software_protector``.
    if "protector" in metafunc.fixturenames and marked("protectors"):
        both = marked("software_protector") is None
        metafunc.parametrize(
            "protector", ["software", "softhsm"] if both else ["software"], indirect=True
        )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Slow tests first (in their collected order), so that with ``-n`` the longest ones
    start at once instead of leaving one worker busy long after the others have finished."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


def _with_schema(url: str, schema: str) -> str:
    sep = "&" if "?" in url else "?"
    return f"{url}{sep}options=-csearch_path%3D{schema}"


@pytest.fixture
def db_url(db_backend: str, tmp_path: Path) -> Iterator[str]:
    if db_backend == "sqlite":
        yield f"sqlite:///{tmp_path / 'test.db'}"
        return
    assert POSTGRES_URL
    base = normalize_url(POSTGRES_URL)
    schema = "t_" + uuid.uuid4().hex[:16]
    admin = create_engine(base, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    try:
        yield _with_schema(base, schema)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture(scope="session")
def softhsm(tmp_path_factory: pytest.TempPathFactory) -> SoftHsm:
    """This session's SoftHSM2 token (``tests.support.softhsm``); skips without SoftHSM2."""
    return session_token(tmp_path_factory.mktemp("softhsm"))


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock()


@pytest.fixture(scope="session")
def suite_hsm(softhsm: SoftHsm, tmp_path_factory: pytest.TempPathFactory) -> SoftHsm:
    """The SoftHSM2 token (with a security domain) of the suites run on both protectors."""
    return suite_token(softhsm, tmp_path_factory.mktemp("suite-hsm"))


@pytest.fixture
def protector(request: pytest.FixtureRequest) -> str:
    """Which key protector ``runtime`` uses: "software" unless the suite is marked
    ``protectors`` (then both)."""
    return str(getattr(request, "param", "software"))


@pytest.fixture
def runtime(
    db_url: str, tmp_path: Path, clock: FrozenClock, protector: str, request: pytest.FixtureRequest
) -> Iterator[Runtime]:
    settings = Settings(home=tmp_path / "home", database_url=db_url)
    if protector == "softhsm":
        token: SoftHsm = request.getfixturevalue("suite_hsm")
        settings = Settings(
            home=tmp_path / "home",
            database_url=db_url,
            pkcs11_module=token.module,
            pkcs11_token_label=token.label,
            pkcs11_pin_file=token.pin_file,
        )
    rt = Runtime.open(settings, clock=clock, rng=SystemRng())
    try:
        yield rt
    finally:
        rt.close()
