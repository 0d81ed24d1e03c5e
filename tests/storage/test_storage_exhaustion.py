"""Recognising a full storage, and ``Database`` transactions under one: a real SQLite database
told to stop growing (``PRAGMA max_page_count``, which fails with ``SQLITE_FULL`` as a full disk
does), real files, and the errors PostgreSQL and the OS raise."""

from __future__ import annotations

import errno
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Column, LargeBinary, MetaData, Table, event, insert, text

from customerkey.errors import StorageFull
from customerkey.storage.database import Database
from customerkey.storage.exhaustion import is_storage_full, local_folders

ROWS = Table("t", MetaData(), Column("v", LargeBinary))


class _PostgresError(Exception):
    def __init__(self, sqlstate: str) -> None:
        super().__init__(sqlstate)
        self.sqlstate = sqlstate


@pytest.mark.parametrize(
    ("error", "full"),
    [
        (OSError(errno.ENOSPC, "No space left on device"), True),
        (OSError(errno.EDQUOT, "Disk quota exceeded"), True),
        (OSError(errno.EFBIG, "File too large"), True),
        (OSError(errno.EACCES, "Permission denied"), False),
        (sqlite3.OperationalError("database or disk is full"), True),
        (sqlite3.OperationalError("database is locked"), False),
        (_PostgresError("53100"), True),
        (_PostgresError("23505"), False),
        (ValueError("no"), False),
    ],
)
def test_what_counts_as_full(error: Exception, full: bool) -> None:
    assert is_storage_full(error) is full
    try:
        try:
            raise error
        except Exception as inner:
            raise RuntimeError("wrapped") from inner
    except RuntimeError as outer:
        assert is_storage_full(outer) is full


def _capped(path: Path) -> Database:
    db = Database(f"sqlite:///{path}")

    @event.listens_for(db.engine, "connect")
    def _cap(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.execute("PRAGMA max_page_count = 20")

    ROWS.metadata.create_all(db.engine)
    return db


def test_a_full_database_is_storage_full_and_rolls_back(tmp_path: Path) -> None:
    db = _capped(tmp_path / "capped.db")
    db.storage.retry_after = 9
    with pytest.raises(StorageFull) as caught, db.transaction() as session:
        session.execute(insert(ROWS).values(v=b"\0" * 200_000))
    assert caught.value.status == 503
    assert caught.value.code == "InsufficientStorage"
    assert caught.value.retry_after == 9
    assert db.storage.full

    # A transaction that only reads says nothing about space; one that writes does.
    with db.transaction() as session:
        assert session.execute(text("SELECT count(*) FROM t")).scalar() == 0
    with db.read() as session:
        session.execute(text("SELECT 1"))
    assert db.storage.full
    with db.transaction() as session:
        session.execute(insert(ROWS).values(v=b"small"))
    assert not db.storage.full


def test_the_health_probe_writes_to_each_folder(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'db' / 'x.db'}")
    blobs = tmp_path / "blobs"
    blobs.mkdir()
    folders = local_folders(db.url, blobs)
    assert folders == [tmp_path / "db", blobs]
    assert local_folders("postgresql+psycopg://u@h/db", blobs) == [blobs]

    assert db.storage.writable(folders, 1 << 16, probes_database=True)  # not full: no probe
    db.storage.record_full()
    assert db.storage.writable(folders, 1 << 16, probes_database=True)  # the probe gets in
    assert not db.storage.full
    assert sorted(p.name for p in blobs.iterdir()) == []  # and leaves nothing behind

    # A full PostgreSQL database: the local folders say nothing about its disk.
    db.storage.record_full(database=True)
    assert not db.storage.writable([blobs], 1 << 16, probes_database=False)
    assert db.storage.full
