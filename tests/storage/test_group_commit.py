"""The group committer's batching rule, without a database (``storage.group_commit``).

``run_batch`` is a fake that records batches and can be held open (an Event) or made to fail,
so the tests can line callers up behind a batch being "committed" and check who returns when.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

import pytest

from customerkey.errors import StorageFull
from customerkey.storage.group_commit import GroupCommitter, take


def test_take_is_everything_queued_up_to_the_cap() -> None:
    assert take(0, 8) == 0
    assert take(3, 8) == 3
    assert take(30, 8) == 8
    with pytest.raises(ValueError):
        take(1, 0)


class FakeBatches:
    """Records each batch; ``hold`` keeps the next batch "committing" until released."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.committed: set[int] = set()
        self.entered = threading.Event()
        self.release = threading.Event()
        self.release.set()
        self.fail_when: set[int] = set()
        self.lock = threading.Lock()

    def __call__(self, items: Sequence[int]) -> None:
        self.entered.set()
        self.release.wait(30)
        with self.lock:
            self.batches.append(list(items))
        if self.fail_when & set(items):
            raise StorageFull("no room", retry_after=7)
        with self.lock:
            self.committed.update(items)


def _submit_in_thread(committer: GroupCommitter[int], item: int, out: dict[int, object]):
    def run() -> None:
        try:
            committer.submit(item)
            out[item] = "ok"
        except StorageFull as exc:
            out[item] = exc

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def _wait_queued(committer: GroupCommitter[int], n: int) -> None:
    for _ in range(3000):
        with committer._lock:
            if len(committer._queue) >= n:
                return
        threading.Event().wait(0.001)  # polling the fake's queue, bounded
    raise AssertionError(f"{n} units never queued")


def test_a_lone_caller_is_its_own_batch_and_returns_after_it() -> None:
    fake = FakeBatches()
    committer: GroupCommitter[int] = GroupCommitter(fake)
    committer.submit(1)
    assert fake.batches == [[1]]
    assert fake.committed == {1}


def test_callers_arriving_during_a_commit_share_the_next_batch_in_order() -> None:
    fake = FakeBatches()
    sizes: list[int] = []
    committer: GroupCommitter[int] = GroupCommitter(fake, observe=sizes.append)
    out: dict[int, object] = {}
    fake.release.clear()
    first = _submit_in_thread(committer, 0, out)
    assert fake.entered.wait(10)
    # While batch [0] is held open, ten more callers queue up behind it.
    threads = []
    for item in range(1, 11):
        threads.append(_submit_in_thread(committer, item, out))
        _wait_queued(committer, item)
    assert out == {}  # nobody has returned: batch [0] has not committed yet
    fake.release.set()
    for thread in [first, *threads]:
        thread.join(10)
    assert fake.batches == [[0], list(range(1, 11))]
    assert sizes == [1, 10]
    assert out == {item: "ok" for item in range(11)}


def test_nobody_returns_before_the_batch_holding_its_unit_committed() -> None:
    fake = FakeBatches()
    committer: GroupCommitter[int] = GroupCommitter(fake)
    seen_committed: dict[int, bool] = {}

    def run(item: int) -> None:
        committer.submit(item)
        with fake.lock:
            seen_committed[item] = item in fake.committed

    threads = [threading.Thread(target=run, args=(i,)) for i in range(64)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert seen_committed == {i: True for i in range(64)}
    assert sorted(i for batch in fake.batches for i in batch) == list(range(64))


def test_a_failed_batch_fails_every_unit_of_it_and_the_next_starts_clean() -> None:
    fake = FakeBatches()
    committer: GroupCommitter[int] = GroupCommitter(fake)
    out: dict[int, object] = {}
    fake.release.clear()
    first = _submit_in_thread(committer, 0, out)
    assert fake.entered.wait(10)
    fake.fail_when = {2}
    threads = []
    for item in (1, 2, 3):
        threads.append(_submit_in_thread(committer, item, out))
        _wait_queued(committer, item)
    fake.release.set()
    for thread in [first, *threads]:
        thread.join(10)
    assert fake.batches == [[0], [1, 2, 3]]
    assert out[0] == "ok"
    errors = [out[1], out[2], out[3]]
    assert all(isinstance(e, StorageFull) and e.retry_after == 7 for e in errors)
    assert len({id(e) for e in errors}) == 3  # each caller raises its own copy
    fake.fail_when = set()
    committer.submit(4)
    assert fake.batches[-1] == [4]
    assert 4 in fake.committed and not {1, 2, 3} & fake.committed


def test_a_batch_is_capped_and_the_rest_forms_the_next() -> None:
    fake = FakeBatches()
    committer: GroupCommitter[int] = GroupCommitter(fake, max_batch=3)
    out: dict[int, object] = {}
    fake.release.clear()
    first = _submit_in_thread(committer, 0, out)
    assert fake.entered.wait(10)
    threads = []
    for item in range(1, 8):
        threads.append(_submit_in_thread(committer, item, out))
        _wait_queued(committer, item)
    fake.release.set()
    for thread in [first, *threads]:
        thread.join(10)
    assert fake.batches == [[0], [1, 2, 3], [4, 5, 6], [7]]
    assert len(out) == 8
