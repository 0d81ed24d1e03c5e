"""Admission control for the token endpoint: token-bucket rate limits and a bounded hash pool.

``RateLimiter`` keeps one token bucket per key (a client id, a source address). A bucket holds
at most ``burst`` tokens and regains ``per_minute`` of them a minute; ``take`` spends one, or
says how long until one is back. Time comes from an injected monotonic clock, so tests move it
by hand. Memory is bounded: a bucket that has refilled completely is the same as no bucket and
is dropped, and past ``max_keys`` buckets the least recently used ones are forgotten (that
forgives their debt, which an attacker can buy only by spreading over ``max_keys`` other keys).

``HashPool`` runs the blocking secret check on a few dedicated threads (never on the event
loop) and admits at most ``threads + queue`` calls at once; past that ``submit`` refuses at once
(``PoolFull``) instead of letting a queue grow without bound.
"""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")

Clock = Callable[[], float]
MAX_KEYS = 10_000
# Keys longer than this are stored as their SHA-256, so a bucket costs the same whatever
# the caller sent as a client id.
_MAX_KEY_CHARS = 128
# Float slack when turning a wait into whole seconds (1.0000000001 s is 1 s, not 2).
_EPSILON = 1e-9


def retry_after(seconds: float) -> int:
    """A wait as a ``Retry-After`` value: whole seconds, rounded up, at least 1."""
    return max(1, math.ceil(seconds - _EPSILON))


def bucket_key(value: str) -> str:
    """A bounded-size, case-insensitive key for a client id."""
    folded = value.casefold()
    if len(folded) <= _MAX_KEY_CHARS:
        return folded
    return "sha256:" + hashlib.sha256(folded.encode("utf-8", "surrogatepass")).hexdigest()


def source_key(host: str | None) -> str:
    """The key for a client address: the address itself, or its /64 for IPv6 (one host
    usually holds a whole /64, so per-address limits would not hold it)."""
    if not host:
        return "unknown"
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return bucket_key(host)
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


class RateLimiter:
    """Token buckets by key. ``burst`` 0 disables the limiter (every ``take`` succeeds)."""

    def __init__(
        self,
        burst: int,
        per_minute: float,
        *,
        clock: Clock = time.monotonic,
        max_keys: int = MAX_KEYS,
    ) -> None:
        if burst < 0 or per_minute <= 0 or max_keys < 1:
            raise ValueError("burst must be >= 0, per_minute > 0 and max_keys >= 1")
        self.burst = float(burst)
        self.rate = per_minute / 60.0  # tokens a second
        self.max_keys = max_keys
        self._clock = clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # tokens, at
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return self.burst > 0

    def __len__(self) -> int:
        return len(self._buckets)

    def tokens(self, key: str) -> float:
        """How many tokens ``key`` holds now (``burst`` for a key never seen)."""
        with self._lock:
            return self._level(key, self._clock())

    def take(self, key: str) -> float:
        """Spend one token of ``key``: 0.0 if it was there, else the seconds until one is
        (nothing is spent then)."""
        if not self.enabled:
            return 0.0
        with self._lock:
            now = self._clock()
            level = self._level(key, now)
            if level < 1.0:
                if key in self._buckets:  # still being refused: keep it among the recent
                    self._buckets.move_to_end(key)
                return (1.0 - level) / self.rate
            self._store(key, level - 1.0, now)
            return 0.0

    def give_back(self, key: str) -> None:
        """Return a token spent by ``take`` (the attempt it paid for did not count)."""
        if not self.enabled:
            return
        with self._lock:
            now = self._clock()
            self._store(key, self._level(key, now) + 1.0, now)

    def _level(self, key: str, now: float) -> float:
        bucket = self._buckets.get(key)
        if bucket is None:
            return self.burst
        tokens, at = bucket
        return min(self.burst, tokens + max(0.0, now - at) * self.rate)

    def _store(self, key: str, tokens: float, now: float) -> None:
        if tokens >= self.burst:  # a full bucket is no bucket
            self._buckets.pop(key, None)
            return
        if key not in self._buckets and len(self._buckets) >= self.max_keys:
            self._make_room(now)
        self._buckets[key] = (tokens, now)
        self._buckets.move_to_end(key)

    def _make_room(self, now: float) -> None:
        """Drop the buckets that have refilled; if too many remain, the least recently used
        ones, down to 90% of ``max_keys`` so this scan runs rarely."""
        for key in [k for k in self._buckets if self._level(k, now) >= self.burst]:
            del self._buckets[key]
        keep = min(self.max_keys - 1, (self.max_keys * 9) // 10)
        while len(self._buckets) > keep:
            self._buckets.popitem(last=False)


class PoolFull(Exception):
    """Every thread of a ``HashPool`` is busy and its queue is full."""


class HashPool:
    """A few dedicated threads for CPU-heavy blocking calls, with a bounded queue."""

    def __init__(self, threads: int, queue: int, *, name: str = "customerkey-hash") -> None:
        if threads < 1 or queue < 0:
            raise ValueError("threads must be >= 1 and queue >= 0")
        self.threads = threads
        self.capacity = threads + queue
        self._name = name
        self._executor: ThreadPoolExecutor | None = None
        self._admitted = 0
        self._lock = threading.Lock()

    @property
    def admitted(self) -> int:
        """Calls running or waiting for a thread."""
        return self._admitted

    def _start(self) -> ThreadPoolExecutor:
        # Made on first use: ``serve --workers`` forks after building nothing but the app.
        if self._executor is None:
            self._executor = ThreadPoolExecutor(self.threads, thread_name_prefix=self._name)
        return self._executor

    async def run(self, function: Callable[[], T]) -> T:
        """Run ``function`` on a pool thread and wait for it without blocking the loop;
        ``PoolFull`` at once when ``threads + queue`` calls are already admitted."""
        with self._lock:
            if self._admitted >= self.capacity:
                raise PoolFull()
            self._admitted += 1
            executor = self._start()
        try:
            future: Future[T] = executor.submit(function)
        except BaseException:
            self._release(None)
            raise
        # Released when the call ends or is cancelled while queued (its caller went away),
        # not when the awaiting coroutine stops waiting.
        future.add_done_callback(self._release)
        return await asyncio.wrap_future(future)

    def _release(self, _future: Future[Any] | None) -> None:
        with self._lock:
            self._admitted -= 1

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None
