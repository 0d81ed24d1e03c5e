"""Running out of storage: recognising it, and remembering it until storage takes writes again.

"Database or disk is full" reaches the platform in several forms, all of which
``is_storage_full`` recognises through the chain of causes (SQLAlchemy keeps the driver's
error in ``orig``):

- SQLite's ``SQLITE_FULL`` (``sqlite3.OperationalError: database or disk is full``), which it
  reports when the filesystem answers ENOSPC while it writes the WAL or the database file;
- PostgreSQL's SQLSTATE ``53100`` ``disk_full``;
- ``OSError`` ENOSPC (no space), EDQUOT (quota) and EFBIG (file size limit) from a blob or a
  spool file.

``StorageStatus`` is one process's memory of it. ``guard()`` wraps every transaction of a
``Database``: a storage-full error leaves it as ``StorageFull`` (503 with ``Retry-After``; the
transaction has rolled back, so nothing was changed) and marks the storage full; a transaction
that wrote and committed marks it writable again. Front ends that meet a storage-full error
outside a transaction (a blob write) call ``record_full``. ``/healthz`` asks ``writable``,
which while the storage is marked full writes a probe file into each local storage folder (and
a probe blob into a blob store that is not a local folder: an S3 bucket, whose quota errors
are storage full too, ``storage.s3_blobs.BlobStoreFull``), so an operator who frees space
sees the health recover without waiting for a client's write (a PostgreSQL database's disk is
not ours to probe: there, the next committed write tells).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import sqlite3
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import ORMExecuteState, Session, sessionmaker

from customerkey.errors import CustomerKeyError, StorageFull

if TYPE_CHECKING:
    from customerkey.storage.blob_store import BlobStore

log = logging.getLogger("customerkey.storage")

FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})
POSTGRES_DISK_FULL = "53100"
# The session.info key a flush or a DML statement sets: this transaction wrote something.
_WROTE = "customerkey_wrote"
PROBE_NAME = ".customerkey-space-probe"
# Where a blob store's probe blob goes: a folder no workload owns, so the sweep never looks.
PROBE_FOLDER = "health"


def is_storage_full(exc: BaseException) -> bool:
    """Whether ``exc`` (or an error it was raised from) says the storage has no room."""
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        current = todo.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        if _says_full(current):
            return True
        orig = getattr(current, "orig", None)
        todo += [orig if isinstance(orig, BaseException) else None]
        todo += [current.__cause__, current.__context__]
    return False


def _says_full(exc: BaseException) -> bool:
    if isinstance(exc, StorageFull):
        return True
    if isinstance(exc, OSError):
        return exc.errno in FULL_ERRNOS
    if isinstance(exc, sqlite3.Error):
        return getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL or (
            "database or disk is full" in str(exc)
        )
    return getattr(exc, "sqlstate", None) == POSTGRES_DISK_FULL


def storage_full_error(retry_after: int) -> StorageFull:
    return StorageFull(
        "The service is out of storage space, so nothing was changed. Retry after "
        f"{retry_after} seconds.",
        retry_after=retry_after,
    )


class StorageStatus:
    """Whether this process last saw the storage full (see the module docstring)."""

    def __init__(self, *, retry_after: int = 30) -> None:
        self.retry_after = retry_after
        self._full = False
        self._database_full = False  # the database itself refused, not a file
        self._lock = threading.Lock()

    @property
    def full(self) -> bool:
        return self._full

    def record_full(self, *, database: bool = False) -> None:
        if not self._full:
            log.warning("storage is full: writes are refused with 503 until space is freed")
        self._full = True
        self._database_full = self._database_full or database

    def record_write(self) -> None:
        if self._full:
            log.warning("storage takes writes again")
        self._full = False
        self._database_full = False

    def watch(self, sessions: sessionmaker[Session]) -> None:
        """Mark the sessions of ``sessions`` that write (ORM flushes and DML statements)."""

        def flushed(session: Session, _context: Any) -> None:
            session.info[_WROTE] = True

        def executed(state: ORMExecuteState) -> None:
            if state.is_insert or state.is_update or state.is_delete:
                state.session.info[_WROTE] = True

        event.listen(sessions, "after_flush", flushed)
        event.listen(sessions, "do_orm_execute", executed)

    @contextmanager
    def guard(self) -> Iterator[Callable[[Session], None]]:
        """Around one transaction; call what it yields with the transaction's session."""
        used: list[Session] = []
        try:
            yield used.append
        except CustomerKeyError:
            raise
        except Exception as exc:
            if not is_storage_full(exc):
                raise
            self.record_full(database=True)
            raise storage_full_error(self.retry_after) from exc
        if self._full and any(s.info.get(_WROTE) for s in used):
            self.record_write()

    def writable(
        self,
        folders: Iterable[Path],
        probe_bytes: int,
        *,
        probes_database: bool,
        stores: Iterable[BlobStore] = (),
    ) -> bool:
        """False while the storage is marked full and a ``probe_bytes`` file cannot be written
        in each of ``folders`` (or a probe blob into each of ``stores``: blob stores that are
        not a local folder); a probe that succeeds marks it writable again. When the folders
        do not hold the database (``probes_database`` false: PostgreSQL), a full database
        stays marked until one of its write transactions commits."""
        if not self._full:
            return True
        with self._lock:  # one probe at a time, however many health checks come in
            if not self._full:
                return True
            if self._database_full and not probes_database:
                return False
            for folder in folders:
                if not _probe(folder, probe_bytes):
                    return False
            for store in stores:
                if not _probe_store(store, probe_bytes):
                    return False
            self.record_write()
            return True


def _probe(folder: Path, size: int) -> bool:
    path = folder / f"{PROBE_NAME}.{os.getpid()}"
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            chunk = b"\0" * min(size, 1 << 16)
            left = size
            while left > 0:
                left -= os.write(fd, chunk[:left])
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as exc:
        if exc.errno in FULL_ERRNOS:
            return False
        raise
    finally:
        with contextlib.suppress(OSError):
            path.unlink()
    return True


def _probe_store(store: BlobStore, size: int) -> bool:
    """Write and remove a ``size``-byte probe blob; False when the store says it is full."""
    name = f"{PROBE_FOLDER}/space-probe-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        store.put_bytes(name, b"\0" * size)
    except OSError as exc:
        if is_storage_full(exc):
            return False
        raise
    store.delete(name)
    return True


def local_folders(database_url: str, blobs: Path | None) -> list[Path]:
    """The folders this process writes to: the SQLite database's folder (none for another
    database: its server watches its own disk) and the blob folder (none when the blobs are
    not in a local folder: ``writable`` probes such a store itself)."""
    folders = [blobs] if blobs is not None else []
    parsed = make_url(database_url)
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        folders.insert(0, Path(parsed.database).parent)
    return [f for f in folders if f.is_dir()]
