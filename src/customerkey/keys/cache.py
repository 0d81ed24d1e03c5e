"""The process-local cache of unwrapped DEP keys (and files TIKs), with a TTL.

Entries are keyed by generation id and remember which vaults hold their root keys, so a
change in one of those vaults (an access policy removed, a key disabled or deleted through
our own vault) drops them at once. Time comes from the injected clock.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from customerkey.clock import Clock


@dataclass
class _Entry:
    key: bytes
    vaults: frozenset[str]
    policy_id: str
    expires: datetime


class DepKeyCache:
    def __init__(self, clock: Clock, ttl: timedelta) -> None:
        self._clock = clock
        self._ttl = ttl
        self._entries: dict[str, _Entry] = {}
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0
        # Told True for each hit and False for each miss: the server counts them.
        self.observer: Callable[[bool], None] | None = None

    def get(self, generation_id: str) -> bytes | None:
        now = self._clock.now()
        with self._lock:
            entry = self._entries.get(generation_id)
            if entry is None or entry.expires <= now:
                if entry is not None:
                    del self._entries[generation_id]
                self.misses += 1
                key = None
            else:
                self.hits += 1
                key = entry.key
        if self.observer is not None:
            self.observer(key is not None)
        return key

    def peek(self, generation_id: str) -> bytes | None:
        """Like ``get``, but a miss is not counted (for a caller that goes on to a lookup that
        counts it); a hit is."""
        now = self._clock.now()
        with self._lock:
            entry = self._entries.get(generation_id)
            if entry is None or entry.expires <= now:
                return None
            self.hits += 1
        if self.observer is not None:
            self.observer(True)
        return entry.key

    def put(self, generation_id: str, key: bytes, *, vaults: set[str], policy_id: str) -> None:
        if self._ttl <= timedelta(0):
            return
        with self._lock:
            self._entries[generation_id] = _Entry(
                key, frozenset(v.lower() for v in vaults), policy_id, self._clock.now() + self._ttl
            )

    def invalidate_vault(self, vault: str) -> int:
        vault = vault.lower()
        with self._lock:
            gone = [g for g, e in self._entries.items() if vault in e.vaults]
            for g in gone:
                del self._entries[g]
            return len(gone)

    def invalidate_policy(self, policy_id: str) -> None:
        with self._lock:
            for g in [g for g, e in self._entries.items() if e.policy_id == policy_id]:
                del self._entries[g]

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)
