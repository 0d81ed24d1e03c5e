"""A database belongs to one master key (``storage.installation``), on SQLite and PostgreSQL: the
first runtime records its key's id; a runtime with the same key opens it; one whose home made a
key of its own (a second host started with an empty home against a shared database) stops
before writing anything, naming both key ids; two runtimes recording at once are judged
against the winner."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from sqlalchemy import func, select

from customerkey.clock import FrozenClock
from customerkey.config import Settings
from customerkey.errors import MasterKeyMismatch
from customerkey.home import Home
from customerkey.rng import SystemRng
from customerkey.runtime import Runtime
from customerkey.storage import installation
from customerkey.storage.database import Database
from customerkey.storage.models import AuditRow, InstallationRow, PrincipalRow, VaultRow
from customerkey.vault.models import OPERATOR

pytestmark = pytest.mark.storage


def _open(home: Path, db_url: str, clock: FrozenClock) -> Runtime:
    return Runtime.open(Settings(home=home, database_url=db_url), clock=clock, rng=SystemRng())


def _counts(db_url: str) -> tuple[int, ...]:
    db = Database(db_url)
    try:
        with db.read() as session:
            return tuple(
                session.scalar(select(func.count()).select_from(table)) or 0
                for table in (AuditRow, PrincipalRow, VaultRow, InstallationRow)
            )
    finally:
        db.dispose()


def test_the_first_runtime_records_its_key_and_the_same_key_opens_again(
    db_url: str, tmp_path: Path, clock: FrozenClock
) -> None:
    first = _open(tmp_path / "a", db_url, clock)
    try:
        first.vault.create_vault(OPERATOR, "shared", subscription="sub-1", region="eastus")
        with first.db.read() as session:
            row = session.get(InstallationRow, 1)
            assert row is not None
            assert row.master_key_id == Home(tmp_path / "a").master_key_id()
    finally:
        first.close()
    # A second host with the installation's master key copied to it.
    (tmp_path / "b").mkdir(mode=0o700)
    shutil.copy2(tmp_path / "a" / "master.key", tmp_path / "b" / "master.key")
    second = _open(tmp_path / "b", db_url, clock)
    try:
        assert [v.name for v in second.vault.list_vaults(OPERATOR)] == ["shared"]
    finally:
        second.close()


def test_a_host_with_a_master_key_of_its_own_stops_before_writing(
    db_url: str, tmp_path: Path, clock: FrozenClock
) -> None:
    first = _open(tmp_path / "a", db_url, clock)
    try:
        first.vault.create_vault(OPERATOR, "shared", subscription="sub-1", region="eastus")
    finally:
        first.close()
    before = _counts(db_url)
    with pytest.raises(MasterKeyMismatch) as refused:
        _open(tmp_path / "stranger", db_url, clock)
    theirs = Home(tmp_path / "a").master_key_id()
    mine = Home(tmp_path / "stranger").master_key_id()
    assert theirs != mine
    assert theirs in refused.value.message and mine in refused.value.message
    assert refused.value.status == 503 and refused.value.code == "MasterKeyMismatch"
    assert _counts(db_url) == before  # no audit record, principal, vault or row of its own


def test_a_runtime_that_loses_the_race_to_record_is_judged_against_the_winner(
    db_url: str, tmp_path: Path, clock: FrozenClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = _open(tmp_path / "a", db_url, clock)
    first.close()
    # The stranger read "no key recorded" just before the first runtime wrote its row: its own
    # insert then fails on the primary key, and it reads the winner's row again.
    reads: list[str | None] = []
    real = installation._recorded

    def first_read_missed(db: Database) -> str | None:
        reads.append(None if not reads else real(db))
        return reads[-1]

    monkeypatch.setattr(installation, "_recorded", first_read_missed)
    with pytest.raises(MasterKeyMismatch):
        _open(tmp_path / "stranger", db_url, clock)
    assert reads == [None, Home(tmp_path / "a").master_key_id()]
    assert _counts(db_url)[3] == 1
