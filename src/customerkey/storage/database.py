"""The database: engine set-up for SQLite and PostgreSQL, transactions, and migrations.

SQLite runs in WAL mode with foreign keys on, and every transaction starts with
``BEGIN IMMEDIATE`` so two writers never both read a stale head (the audit chain depends on
that). PostgreSQL is used through ``postgresql+psycopg://`` URLs. Transactions begin and end
in the service layer through ``Database.transaction()``; repositories only use the session.

On SQLite, ``transaction()`` first passes a write gate: the threads of a process queue on a
lock, and processes on an ``flock`` of ``<database>-writer.lock`` beside the database file.
SQLite lets one writer in at a time anyway, but a writer that finds it busy polls with sleeps
of 1, 2, 5, 10, 15, 20, 25, ... ms, so under concurrent requests most time went into those
sleeps (one uvicorn process with 16 clients: p99 of 0.9 s); queued on the gate a writer is
woken as soon as the one before it commits. Writers of other programs on the same file still
meet SQLite's busy timeout as before. ``read()`` is a read-only transaction that takes no write
lock at all (a deferred ``BEGIN``: WAL readers neither wait for writers nor block them), for
hot paths that only read. ``first(read, params)`` runs one prepared statement outside any
transaction (``storage.prepared_read``), for the one read on every key operation.

``commit_together(work)`` is the group commit of small writes a caller must see durable before
it answers (``storage.group_commit``): the units of work of concurrent callers run in one
``transaction()`` and share its commit, and each caller returns once the transaction holding
its unit committed (or raises what failed it).
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine, create_engine, event, inspect, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import NullPool

from customerkey.storage.exhaustion import StorageStatus
from customerkey.storage.group_commit import GroupCommitter
from customerkey.storage.prepared_read import PreparedRead

if TYPE_CHECKING:
    from alembic.config import Config

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: threads are still gated, processes not
    fcntl = None  # type: ignore[assignment]

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
_VERSION_TABLE = "alembic_version"  # Alembic's default; env.py does not rename it
logging.getLogger("alembic").setLevel(logging.WARNING)
# Execution option marking the connections of ``Database.read()`` sessions.
_READ_ONLY = "customerkey_read_only"
# How long a thread waits at the SQLite write gate; SQLite's own busy timeout is the same.
GATE_TIMEOUT_SECONDS = 30.0


def normalize_url(url: str) -> str:
    """Accept plain ``postgresql://`` URLs and use the psycopg 3 driver for them."""
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


def _private_database_file(path: Path) -> None:
    """Create the SQLite file 0600 before SQLite opens it (its -wal and -shm files take the
    database file's mode), and bring an older, wider file and its companions back to 0600."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    # Only a file that does not exist yet is opened here: closing any descriptor of a database
    # file drops the POSIX locks every SQLite connection of this process holds on it.
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    for companion in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        with contextlib.suppress(FileNotFoundError):
            os.chmod(companion, 0o600)


def create_db_engine(url: str, **kwargs: Any) -> Engine:
    url = normalize_url(url)
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            _private_database_file(Path(parsed.database))
        if "poolclass" not in kwargs and parsed.database and parsed.database != ":memory:":
            # Read transactions run side by side (WAL), one per request thread: a pool smaller
            # than the server's concurrency closes and reopens connections (each open runs
            # the PRAGMAs below) on every burst.
            kwargs.setdefault("pool_size", 20)
            kwargs.setdefault("max_overflow", 20)
        engine = create_engine(
            url, connect_args={"timeout": 30, "check_same_thread": False}, **kwargs
        )
        _configure_sqlite(engine)
        return engine
    kwargs.setdefault("pool_pre_ping", True)
    if kwargs.get("poolclass") is not NullPool:
        kwargs.setdefault("pool_size", 10)
    return create_engine(url, **kwargs)


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # we issue BEGIN ourselves
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        read_only = connection.get_execution_options().get(_READ_ONLY, False)
        connection.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")


class _WriteGate:
    """Lets one SQLite write transaction of this installation in at a time (see the module
    docstring): a re-entrant thread lock, then an exclusive ``flock`` held by the outermost
    holder. flock locks belong to an open file description, so a forked child opens its own
    (sharing its parent's would let both in at once); the kernel drops the lock of a process
    that dies, so a killed writer never leaves it held."""

    def __init__(self, path: Path | None) -> None:
        self._path = path
        self._pid = os.getpid()
        self._lock = threading.RLock()
        self._depth = 0
        self._fd: int | None = None

    @contextmanager
    def hold(self) -> Iterator[None]:
        if self._pid != os.getpid():
            self._after_fork()
        if not self._lock.acquire(timeout=GATE_TIMEOUT_SECONDS):
            raise TimeoutError(
                f"waited {GATE_TIMEOUT_SECONDS:.0f} s for the database write lock; a write "
                "transaction of this process is still running"
            )
        try:
            self._depth += 1
            fd = self._file() if self._depth == 1 else None
            if fd is not None:
                fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                yield
            finally:
                if fd is not None:
                    fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            self._depth -= 1
            self._lock.release()

    def _file(self) -> int | None:
        if self._path is None or fcntl is None:
            return None
        if self._fd is None:
            self._fd = os.open(self._path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        return self._fd

    def close(self) -> None:
        """Close the lock file (a ``Database`` that is disposed of keeps no descriptor)."""
        with self._lock:
            if self._fd is not None and self._pid == os.getpid():
                with contextlib.suppress(OSError):
                    os.close(self._fd)
            self._fd = None

    def _after_fork(self) -> None:
        # The child starts with one thread; whatever the parent's threads held is not ours.
        self._pid = os.getpid()
        self._lock = threading.RLock()
        self._depth = 0
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None


def _write_gate_path(url: str) -> Path | None:
    """``<database>-writer.lock`` for a SQLite file; None for memory or another database."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return None
    if not parsed.database or parsed.database == ":memory:" or parsed.database.startswith("file:"):
        return None
    return Path(parsed.database).with_name(Path(parsed.database).name + "-writer.lock")


def _refuse_writes(session: Session, _context: Any, _instances: Any) -> None:
    if session.new or session.dirty or session.deleted:
        raise RuntimeError("Database.read() sessions are read-only; use transaction() to write")


class Database:
    """An engine plus a session factory; the unit that services receive."""

    def __init__(self, url: str, **engine_kwargs: Any) -> None:
        self.url = normalize_url(url)
        self.engine = create_db_engine(self.url, **engine_kwargs)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        self._read_sessions = sessionmaker(
            self.engine.execution_options(**{_READ_ONLY: True}), expire_on_commit=False
        )
        event.listen(self._read_sessions, "before_flush", _refuse_writes)
        # Disk full: StorageFull out of every transaction, and whether the last write got in.
        self.storage = StorageStatus()
        self.storage.watch(self._sessions)
        self._gate: _WriteGate | None = None
        if self.engine.dialect.name == "sqlite":
            self._gate = _WriteGate(_write_gate_path(self.url))
        self._group: GroupCommitter[Callable[[Session], None]] = GroupCommitter(self._run_group)

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """One transaction: commits when the block ends normally, rolls back on any error."""
        gate = self._gate.hold() if self._gate is not None else contextlib.nullcontext()
        with self.storage.guard() as used, gate, self._sessions() as session, session.begin():
            used(session)
            yield session

    def commit_together(self, work: Callable[[Session], None]) -> None:
        """Run ``work`` in a write transaction shared with the units of other threads that
        arrive meanwhile, and return once that transaction has committed (raise what failed
        it: then none of its units was written). ``work`` only writes: whatever may refuse
        the operation is checked before, since any error aborts the whole batch. Never call
        it inside a transaction of this database."""
        self._group.submit(work)

    def _run_group(self, units: Sequence[Callable[[Session], None]]) -> None:
        with self.transaction() as session:
            for work in units:
                work(session)

    @contextmanager
    def read(self) -> Iterator[Session]:
        """A read-only transaction (a consistent snapshot) that takes no write lock: on SQLite a
        deferred ``BEGIN``, so it neither waits for writers nor holds them up. Flushing a
        change in it raises ``RuntimeError``; use ``transaction()`` for anything that writes,
        and for reads whose result a write in the same transaction depends on."""
        with self.storage.guard(), self._read_sessions() as session, session.begin():
            yield session

    def first(self, read: PreparedRead, params: Mapping[str, Any]) -> tuple[Any, ...] | None:
        """The first row of ``read`` (None when there is none): one statement, its own
        snapshot, with no session and no transaction around it."""
        with self.storage.guard():
            return read.first(self.engine, params)

    def migrate(self) -> list[str]:
        """Run pending Alembic migrations; returns the revisions applied. A database already at
        the newest revision is left alone without loading Alembic (a CLI command starts faster)."""
        before = self.current_revision()
        if before == head_revision():
            return []
        from alembic import command
        from alembic.script import ScriptDirectory

        with self.engine.begin() as connection:
            config = alembic_config(self.url)
            config.attributes["connection"] = connection
            command.upgrade(config, "head")
        script = ScriptDirectory.from_config(alembic_config(self.url))
        applied: list[str] = []
        for rev in script.walk_revisions("base", "head"):
            if rev.revision == before:
                break
            applied.append(rev.revision)
        return list(reversed(applied))

    def current_revision(self) -> str | None:
        """The revision Alembic recorded (its ``alembic_version`` table), None before any."""
        with self.engine.connect() as connection:
            if not inspect(connection).has_table(_VERSION_TABLE):
                return None
            found = connection.execute(text(f"SELECT version_num FROM {_VERSION_TABLE}"))
            revision: str | None = found.scalar()
            return revision

    def pending_migrations(self) -> bool:
        return self.current_revision() != head_revision()

    def dispose(self) -> None:
        self.engine.dispose()
        if self._gate is not None:
            self._gate.close()


def head_revision() -> str:
    """The newest migration's revision. Each file in ``migrations/versions`` is named for its
    revision (``0010_what.py`` holds revision "0010"); a test holds this to Alembic's head."""
    names = (MIGRATIONS_DIR / "versions").glob("[0-9][0-9][0-9][0-9]_*.py")
    return max(path.name[:4] for path in names)


def alembic_config(url: str) -> Config:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config
