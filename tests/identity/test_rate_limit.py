"""The token endpoint's admission control: token buckets on a frozen clock, and the hash pool.

The limiter's clock is injected, so every refill here is exact arithmetic on a time the test
sets; nothing sleeps. Rates are chosen so the numbers are exact in binary floating point.
"""

from __future__ import annotations

import asyncio
import threading

import pytest

from customerkey.api.rate_limit import (
    HashPool,
    PoolFull,
    RateLimiter,
    bucket_key,
    retry_after,
    source_key,
)


class FrozenClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def limiter(burst: int, per_minute: float, clock: FrozenClock, **options: int) -> RateLimiter:
    return RateLimiter(burst, per_minute, clock=clock, **options)


def test_a_burst_is_allowed_then_the_next_take_says_how_long_to_wait() -> None:
    clock = FrozenClock()
    limits = limiter(3, 60, clock)  # one token a second
    assert [limits.take("a") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limits.tokens("a") == 0.0
    assert limits.take("a") == 1.0
    assert limits.take("a") == 1.0  # a refused take spends nothing
    clock.advance(0.25)
    assert limits.take("a") == 0.75
    clock.advance(0.75)
    assert limits.take("a") == 0.0
    assert limits.take("a") == 1.0


def test_refill_is_exact_and_capped_at_the_burst() -> None:
    clock = FrozenClock()
    limits = limiter(5, 30, clock)  # half a token a second
    for _ in range(5):
        assert limits.take("k") == 0.0
    clock.advance(3)
    assert limits.tokens("k") == 1.5
    assert limits.take("k") == 0.0
    assert limits.tokens("k") == 0.5
    assert limits.take("k") == 1.0  # half a token short at half a token a second
    clock.advance(1)
    assert limits.take("k") == 0.0
    clock.advance(1_000_000)
    assert limits.tokens("k") == 5.0
    assert [limits.take("k") for _ in range(6)] == [0.0] * 5 + [2.0]


def test_retry_after_is_whole_seconds_rounded_up_and_at_least_one() -> None:
    assert retry_after(0.0001) == 1
    assert retry_after(0.5) == 1
    assert retry_after(1.0) == 1
    assert retry_after(1.0 + 1e-12) == 1  # float noise does not add a second
    assert retry_after(1.5) == 2
    assert retry_after(59.2) == 60
    clock = FrozenClock()
    limits = limiter(1, 1, clock)  # one token a minute
    assert limits.take("x") == 0.0
    assert retry_after(limits.take("x")) == 60
    clock.advance(59.5)
    assert retry_after(limits.take("x")) == 1
    clock.advance(0.5)
    assert limits.take("x") == 0.0


def test_keys_are_independent() -> None:
    clock = FrozenClock()
    limits = limiter(2, 6, clock)
    assert limits.take("alice") == limits.take("alice") == 0.0
    assert limits.take("alice") == 10.0
    assert limits.take("bob") == 0.0
    assert limits.take("bob") == 0.0
    assert limits.take("bob") == 10.0
    clock.advance(10)
    assert limits.tokens("alice") == limits.tokens("bob") == 1.0
    assert limits.tokens("carol") == 2.0  # never seen: a full bucket


def test_give_back_undoes_a_take_and_never_exceeds_the_burst() -> None:
    clock = FrozenClock()
    limits = limiter(2, 60, clock)
    assert limits.take("k") == 0.0
    assert limits.tokens("k") == 1.0
    limits.give_back("k")
    assert limits.tokens("k") == 2.0
    assert len(limits) == 0  # a full bucket is not kept
    limits.give_back("k")
    assert limits.tokens("k") == 2.0
    assert len(limits) == 0


def test_a_burst_of_zero_turns_the_limiter_off() -> None:
    limits = limiter(0, 60, FrozenClock())
    assert not limits.enabled
    assert all(limits.take("k") == 0.0 for _ in range(1000))
    limits.give_back("k")
    assert len(limits) == 0


def test_bad_parameters_are_refused() -> None:
    with pytest.raises(ValueError):
        RateLimiter(-1, 60)
    with pytest.raises(ValueError):
        RateLimiter(1, 0)
    with pytest.raises(ValueError):
        RateLimiter(1, 60, max_keys=0)


def test_memory_is_bounded_for_many_distinct_keys() -> None:
    clock = FrozenClock()
    limits = limiter(1, 1, clock, max_keys=100)
    for i in range(20_000):
        assert limits.take(f"client-{i}") == 0.0
        assert len(limits) <= 100
    # The most recent keys are still remembered (and refused).
    assert limits.take("client-19999") == 60.0


def test_refilled_buckets_go_first_and_a_key_still_being_refused_is_kept() -> None:
    clock = FrozenClock()
    limits = limiter(1, 60, clock, max_keys=10)
    assert limits.take("hot") == 0.0
    for i in range(5):
        limits.take(f"old-{i}")
    clock.advance(5)  # the old ones and "hot" have refilled: none is worth keeping
    assert limits.take("hot") == 0.0
    for i in range(1000):
        limits.take(f"spray-{i}")
        # Being refused again and again keeps "hot" among the recently used.
        assert limits.take("hot") == 1.0
        assert len(limits) <= 10


def test_successful_attempts_leave_no_state() -> None:
    """The endpoint charges before checking a secret and gives back on success."""
    limits = limiter(10, 10, FrozenClock(), max_keys=5)
    for i in range(1000):
        assert limits.take(f"ok-{i}") == 0.0
        limits.give_back(f"ok-{i}")
    assert len(limits) == 0


def test_client_id_keys_fold_case_and_have_a_bounded_size() -> None:
    assert bucket_key("Alice@Contoso.COM") == bucket_key("alice@contoso.com")
    long_a, long_b = "a" * 1_000_000, "a" * 999_999 + "b"
    assert len(bucket_key(long_a)) < 100
    assert bucket_key(long_a) != bucket_key(long_b)
    assert bucket_key(long_a.upper()) == bucket_key(long_a)


def test_source_keys_group_an_ipv6_slash_64() -> None:
    assert source_key("127.0.0.1") == "127.0.0.1"
    assert source_key("2001:db8:1:2:aaaa::1") == source_key("2001:db8:1:2:bbbb::2")
    assert source_key("2001:db8:1:2::1") != source_key("2001:db8:1:3::1")
    assert source_key("::ffff:192.0.2.7") == "192.0.2.7"
    assert source_key(None) == source_key("") == "unknown"
    assert source_key("not-an-address") == "not-an-address"


def test_the_hash_pool_runs_off_the_calling_thread_and_refuses_past_its_queue() -> None:
    release = threading.Event()
    started = threading.Semaphore(0)

    def blocking() -> int:
        started.release()
        release.wait()
        return threading.get_ident()

    async def scenario() -> None:
        pool = HashPool(1, 2)  # one thread, two waiting
        loop_thread = threading.get_ident()
        calls = [asyncio.ensure_future(pool.run(blocking)) for _ in range(3)]
        await asyncio.sleep(0)  # let the three calls be admitted
        assert pool.admitted == 3
        with pytest.raises(PoolFull):
            await pool.run(blocking)
        assert pool.admitted == 3  # a refused call takes no place
        await asyncio.to_thread(started.acquire)  # the first call is on the pool's thread
        release.set()
        idents = await asyncio.gather(*calls)
        assert len(set(idents)) == 1 and loop_thread not in idents
        assert pool.admitted == 0
        assert await pool.run(lambda: 7) == 7
        pool.close()

    asyncio.run(scenario())


def test_a_failing_call_frees_its_place() -> None:
    def boom() -> None:
        raise RuntimeError("boom")

    async def scenario() -> None:
        pool = HashPool(1, 0)
        for _ in range(3):
            with pytest.raises(RuntimeError):
                await pool.run(boom)
        assert pool.admitted == 0
        pool.close()

    asyncio.run(scenario())


def test_bad_pool_sizes_are_refused() -> None:
    with pytest.raises(ValueError):
        HashPool(0, 1)
    with pytest.raises(ValueError):
        HashPool(1, -1)
