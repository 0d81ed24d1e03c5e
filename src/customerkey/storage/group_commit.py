"""Group commit: the small durable writes of many threads in one transaction, one commit.

This module owns ``GroupCommitter``, the batching of units of work that each caller must see
committed before it answers (a crypto operation's usage count and audit record). It is
generic: what a batch is (one transaction running every unit in order) is the
``run_batch`` callable it is given, so the batching rule is tested without a database.

Leader and followers, no thread of its own (so nothing to restart after ``fork``): a caller
queues its unit; if no batch is being written it becomes the leader, takes the queue
(``take``: everything queued, at most ``max_batch``), runs it, and then, before it returns,
hands the lead to the oldest unit still queued (its thread is waiting anyway). Every other
caller waits until the batch holding its unit has finished: it returns when that batch
committed and raises what the batch raised when it failed, so a failed commit fails every
unit of that batch and no caller answers as if its write were durable. The next batch
starts on a clean transaction. A batch forms while the one before it commits; nothing ever
waits for more units to arrive, so a lone caller pays no added latency.

Order: units run in the order they were queued, and batches in the order they formed, so
whatever a unit appends (an audit record and its place in the hash chain) follows that order.

A caller must not hold a write transaction of the same database when it submits: the leader
of its batch may be another thread that would wait for it.
"""

from __future__ import annotations

import copy
import os
import threading
import weakref
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any, Generic, TypeVar

T = TypeVar("T")

DEFAULT_MAX_BATCH = 256


def take(queued: int, max_batch: int) -> int:
    """How many queued units the next batch takes: all of them, at most ``max_batch``."""
    if max_batch < 1:
        raise ValueError("max_batch must be at least 1")
    return min(queued, max_batch)


class _Unit(Generic[T]):
    __slots__ = ("done", "error", "finished", "item", "lead")

    def __init__(self, item: T) -> None:
        self.item = item
        # Set once: when the unit's batch has finished, or when its thread is to lead.
        self.done = threading.Event()
        self.finished = False
        self.lead = False
        self.error: BaseException | None = None


class GroupCommitter(Generic[T]):
    """Runs queued units in batches through ``run_batch`` (see the module docstring).

    ``observe``, if given, is told the size of every batch (for metrics and tests)."""

    def __init__(
        self,
        run_batch: Callable[[Sequence[T]], None],
        *,
        max_batch: int = DEFAULT_MAX_BATCH,
        observe: Callable[[int], None] | None = None,
    ) -> None:
        take(0, max_batch)  # validates max_batch
        self._run_batch = run_batch
        self._max_batch = max_batch
        self._observe = observe
        self._lock = threading.Lock()
        self._queue: deque[_Unit[T]] = deque()
        self._leading = False
        _ALL.add(self)

    def submit(self, item: T) -> None:
        """Queue ``item`` and return once the batch holding it has committed; raise what that
        batch raised otherwise."""
        unit = _Unit(item)
        with self._lock:
            self._queue.append(unit)
            if not self._leading:
                self._leading = True
                unit.lead = True
        if not unit.lead:
            unit.done.wait()
        if not unit.finished:
            self._lead()
        if unit.error is not None:
            raise _copy(unit.error)

    def _lead(self) -> None:
        with self._lock:
            batch = [self._queue.popleft() for _ in range(take(len(self._queue), self._max_batch))]
        error: BaseException | None = None
        try:
            self._run_batch([unit.item for unit in batch])
        except BaseException as exc:
            error = exc
        finally:
            for unit in batch:
                unit.error = error
                unit.finished = True
                unit.done.set()
            with self._lock:
                if self._queue:
                    successor = self._queue[0]
                    successor.lead = True
                    successor.done.set()
                else:
                    self._leading = False
        if self._observe is not None:
            self._observe(len(batch))

    def _after_fork(self) -> None:
        # A forked child has one thread; the parent's queued callers and lock are not its own.
        self._lock = threading.Lock()
        self._queue = deque()
        self._leading = False


def _copy(error: BaseException) -> BaseException:
    """Each waiter raises its own copy, so tracebacks of several threads do not mix."""
    try:
        clone = copy.copy(error)
    except Exception:  # an exception type copy cannot rebuild: share the instance
        return error
    clone.__cause__ = error
    return clone


_ALL: weakref.WeakSet[GroupCommitter[Any]] = weakref.WeakSet()


def _reset_after_fork() -> None:
    for committer in list(_ALL):
        committer._after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_after_fork)
