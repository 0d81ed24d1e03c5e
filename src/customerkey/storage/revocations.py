"""The revocation log: how a narrowing of vault access reaches the DEP-key cache of every
running process on the same database, whichever front end made it.

This module owns the ``revocations`` table (``storage.models.RevocationRow``) and everything
that reads or writes it:

- ``append`` adds a row (vault name lower-cased, key name or "", the kind of change, the time)
  inside the caller's transaction. The vault service calls it in the very transaction that
  narrows access (an access policy set or removed, a key disabled, updated or deleted, a vault
  deleted), so the row exists exactly when the change committed: the CLI, the cmdlet shell,
  the admin and keys APIs, another ``customerkey serve`` process or host and
  ``customerkey worker`` all write it, and a change that rolls back writes none.
- ``RevocationRelay`` follows the log in a long-running process (each ``customerkey serve``
  worker process, ``customerkey worker``): a thread that every ``poll_seconds`` (default
  0.25 s) runs one query on the primary key for the rows above the last sequence number it
  has seen and hands each to its callback (the runtime drops the vault's DEP keys and TIKs
  from its cache). So a grant removed anywhere clears every running process's cache within
  a poll interval plus one query. It starts from the log's current maximum (a process that
  starts has an empty cache). A database error is logged and the next round tries again;
  nothing is lost meanwhile, the rows stay. Each relay also prunes rows older than ``keep``
  (an hour, and never less than the DEP-key cache TTL, so a cache entry cannot outlive the
  row that revokes it) every ``prune_every``, on its injected clock.

Order matters, because the relay reads ``seq > last``: a row must never become visible after
a row with a higher number. SQLite lets one writer in at a time, so numbers are handed out in
commit order; ``AUTOINCREMENT`` makes sure a number is never reused after pruning. PostgreSQL
hands out sequence values at insert time, not at commit: two transactions could commit in
the other order and the lower number would be skipped. So on PostgreSQL ``append`` first takes
``LOCK TABLE revocations IN EXCLUSIVE MODE``, which blocks no reader but makes every other
appender wait until this transaction ends; narrowing changes are rare and append is the last
thing their transaction does, so the wait is short. (LISTEN/NOTIFY would shorten the delay
further on PostgreSQL; the poll is enough for the one-second promise.)
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, func, insert, select, text
from sqlalchemy.orm import Session

from customerkey.clock import Clock
from customerkey.storage.database import Database
from customerkey.storage.models import RevocationRow

log = logging.getLogger("customerkey.revocations")

POLL_SECONDS = 0.25
KEEP = timedelta(hours=1)
PRUNE_EVERY = timedelta(minutes=5)
BATCH = 1000


@dataclass(frozen=True)
class Revocation:
    seq: int
    vault: str  # lower-cased
    key: str  # "" when the change concerns the whole vault
    change: str
    at: datetime


def append(session: Session, *, vault: str, key: str = "", change: str, at: datetime) -> None:
    """Record a narrowing of access in the caller's transaction (it commits or rolls back
    with the change)."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("LOCK TABLE revocations IN EXCLUSIVE MODE"))
    session.execute(
        insert(RevocationRow).values(vault=vault.lower(), key=key, change=change, created_at=at)
    )


def latest(session: Session) -> int:
    """The highest sequence number in the log (0 when it is empty)."""
    return int(session.scalar(select(func.coalesce(func.max(RevocationRow.seq), 0))) or 0)


def since(session: Session, after: int, limit: int = BATCH) -> list[Revocation]:
    """The rows numbered above ``after``, oldest first, at most ``limit``."""
    rows = session.execute(
        select(
            RevocationRow.seq,
            RevocationRow.vault,
            RevocationRow.key,
            RevocationRow.change,
            RevocationRow.created_at,
        )
        .where(RevocationRow.seq > after)
        .order_by(RevocationRow.seq)
        .limit(limit)
    )
    return [Revocation(int(r[0]), r[1], r[2], r[3], r[4]) for r in rows]


def prune(session: Session, before: datetime) -> int:
    """Delete the rows written before ``before``; returns how many."""
    result = session.execute(delete(RevocationRow).where(RevocationRow.created_at < before))
    return int(getattr(result, "rowcount", 0) or 0)


class RevocationRelay:
    """Follows the log in a thread and hands every new row to ``on_revoked``.

    ``start``/``stop`` (or ``with relay.running():``) are counted, so the serve command and
    the job worker it runs in the same process can both ask for it: one thread runs while
    anyone needs it. ``poll_once`` is one round, for tests and for the thread."""

    def __init__(
        self,
        db: Database,
        on_revoked: Callable[[Revocation], None],
        *,
        clock: Clock,
        poll_seconds: float = POLL_SECONDS,
        keep: timedelta = KEEP,
        prune_every: timedelta = PRUNE_EVERY,
        batch: int = BATCH,
    ) -> None:
        if poll_seconds <= 0:
            raise ValueError("poll_seconds must be positive")
        self._db = db
        self._on_revoked = on_revoked
        self._clock = clock
        self.poll_seconds = poll_seconds
        self.keep = keep
        self.prune_every = prune_every
        self._batch = batch
        self.last_seen: int | None = None  # None: not started
        self.delivered = 0
        self.failures = 0
        self._failing = False
        self._next_prune: datetime | None = None
        self._users = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def running_thread(self) -> threading.Thread | None:
        return self._thread

    def start(self) -> None:
        """Begin at the log's current end and poll in a thread (a second start only counts)."""
        with self._lock:
            self._users += 1
            if self._users > 1:
                return
            self.sync()
            self._stop = threading.Event()
            self._thread = threading.Thread(
                target=self._loop, args=(self._stop,), daemon=True, name="customerkey-revocations"
            )
            self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Undo one ``start``; the last one stops the thread."""
        with self._lock:
            if self._users == 0:
                return
            self._users -= 1
            if self._users:
                return
            stop, thread, self._thread = self._stop, self._thread, None
        stop.set()
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def close(self) -> None:
        """Stop the thread whoever started it."""
        with self._lock:
            self._users = min(self._users, 1)
        self.stop()

    @contextmanager
    def running(self) -> Iterator[RevocationRelay]:
        self.start()
        try:
            yield self
        finally:
            self.stop()

    def sync(self) -> None:
        """Skip to the log's current end: what was revoked before is not in our cache. If the
        end cannot be read, start from the beginning of what the log holds (replaying a
        revocation only drops cache entries, which is always safe)."""
        try:
            with self._db.read() as session:
                self.last_seen = latest(session)
        except Exception:
            log.exception("could not read the revocation log; replaying what it holds")
            self.last_seen = 0

    def poll_once(self) -> int:
        """Deliver the rows written since the last round (and prune when it is time); returns
        how many were delivered. Database errors propagate (the thread logs them)."""
        if self.last_seen is None:
            self.sync()
        delivered = 0
        while True:
            with self._db.read() as session:
                rows = since(session, self.last_seen or 0, self._batch)
            for row in rows:
                try:
                    self._on_revoked(row)
                except Exception:
                    log.exception("dropping cached keys of vault %s failed", row.vault)
                self.last_seen = row.seq
            delivered += len(rows)
            if len(rows) < self._batch:
                break
        self.delivered += delivered
        now = self._clock.now()
        if self._next_prune is None or now >= self._next_prune:
            self._next_prune = now + self.prune_every
            self.prune()
        return delivered

    def prune(self) -> int:
        """Delete rows older than ``keep``; returns how many."""
        with self._db.transaction() as session:
            return prune(session, self._clock.now() - self.keep)

    def _loop(self, stop: threading.Event) -> None:
        while not stop.wait(self.poll_seconds):
            try:
                self.poll_once()
            except Exception:
                self.failures += 1
                if not self._failing:
                    log.exception("could not read the revocation log; retrying")
                self._failing = True
            else:
                if self._failing:
                    log.warning("revocation log readable again; caught up to %s", self.last_seen)
                self._failing = False
