"""Injected time.

Everything that reads the time takes a ``Clock``. Production uses ``SystemClock``; tests use
``FrozenClock`` and move it with ``advance`` or ``set`` instead of sleeping. All times are
timezone-aware UTC datetimes.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime:
        """The current time, timezone-aware UTC."""
        ...


class SystemClock:
    """The real wall clock."""

    def now(self) -> datetime:
        return datetime.now(UTC)


class FrozenClock:
    """A clock that only moves when told to; safe to share between threads."""

    def __init__(self, start: datetime | None = None) -> None:
        start = start or datetime(2026, 1, 1, tzinfo=UTC)
        if start.tzinfo is None:
            raise ValueError("FrozenClock needs a timezone-aware start time")
        self._now = start.astimezone(UTC)
        self._lock = threading.Lock()

    def now(self) -> datetime:
        with self._lock:
            return self._now

    def advance(self, delta: timedelta | float) -> datetime:
        """Move forward by ``delta`` (a timedelta or seconds) and return the new time."""
        step = delta if isinstance(delta, timedelta) else timedelta(seconds=delta)
        if step < timedelta(0):
            raise ValueError("a clock does not go backwards")
        with self._lock:
            self._now += step
            return self._now

    def set(self, when: datetime) -> None:
        if when.tzinfo is None:
            raise ValueError("FrozenClock needs timezone-aware times")
        with self._lock:
            self._now = when.astimezone(UTC)


def to_unix(when: datetime) -> int:
    """Seconds since the epoch, as Key Vault's attributes carry them."""
    return int(when.timestamp())


def from_unix(seconds: int | float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def ensure_utc(when: datetime) -> datetime:
    """Treat a naive datetime (as SQLite returns them) as UTC."""
    if when.tzinfo is None:
        return when.replace(tzinfo=UTC)
    return when.astimezone(UTC)
