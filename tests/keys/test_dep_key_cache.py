"""``DepKeyCache``, the process-local cache of unwrapped DEP keys: TTL to the exact instant,
hit and miss counts, and every way an entry is dropped before its TTL ends.

Time comes from a ``FrozenClock``. A cached DEP key keeps content readable after a customer
revokes access, so each invalidation is checked to drop exactly its entries and no others.
"""

from __future__ import annotations

from datetime import timedelta

from customerkey.clock import FrozenClock
from customerkey.keys.cache import DepKeyCache

TTL = timedelta(minutes=15)
KEY_A = bytes(range(32))
KEY_B = bytes(range(1, 33))
KEY_C = bytes(range(2, 34))
TICK = timedelta(microseconds=1)


def _cache(ttl: timedelta = TTL) -> tuple[FrozenClock, DepKeyCache]:
    clock = FrozenClock()
    return clock, DepKeyCache(clock, ttl)


def _filled() -> tuple[FrozenClock, DepKeyCache]:
    """Three generations: two of policy-1 (vault-a + vault-b, vault-c), one of policy-2."""
    clock, cache = _cache()
    cache.put("gen-a", KEY_A, vaults={"Vault-A", "vault-b"}, policy_id="policy-1")
    cache.put("gen-b", KEY_B, vaults={"vault-c"}, policy_id="policy-1")
    cache.put("gen-c", KEY_C, vaults={"VAULT-B"}, policy_id="policy-2")
    return clock, cache


def test_an_entry_lives_until_its_ttl_ends_exactly() -> None:
    clock, cache = _cache()
    assert cache.get("gen-a") is None
    cache.put("gen-a", KEY_A, vaults={"vault-a"}, policy_id="policy-1")
    assert cache.get("gen-a") == KEY_A
    clock.advance(TTL - TICK)
    assert cache.get("gen-a") == KEY_A
    assert cache.peek("gen-a") == KEY_A
    clock.advance(TICK)
    assert cache.peek("gen-a") is None
    assert cache.get("gen-a") is None
    assert (cache.hits, cache.misses) == (3, 2)


def test_get_drops_an_expired_entry_and_peek_leaves_it() -> None:
    clock, cache = _cache()
    cache.put("gen-a", KEY_A, vaults={"vault-a"}, policy_id="policy-1")
    clock.advance(TTL)
    assert cache.peek("gen-a") is None
    assert len(cache) == 1
    assert cache.get("gen-a") is None
    assert len(cache) == 0


def test_hits_and_misses_are_counted() -> None:
    _, cache = _cache()
    assert (cache.hits, cache.misses) == (0, 0)
    assert cache.get("nothing") is None
    assert (cache.hits, cache.misses) == (0, 1)
    assert cache.peek("nothing") is None  # a peek's miss is counted by the lookup after it
    assert (cache.hits, cache.misses) == (0, 1)
    cache.put("gen-a", KEY_A, vaults={"vault-a"}, policy_id="policy-1")
    assert cache.get("gen-a") == KEY_A
    assert cache.peek("gen-a") == KEY_A
    assert (cache.hits, cache.misses) == (2, 1)


def test_the_observer_is_told_each_hit_and_miss_as_counted() -> None:
    _, cache = _cache()
    told: list[bool] = []
    cache.observer = told.append
    cache.get("nothing")
    cache.peek("nothing")  # not counted, so not told
    cache.put("gen-a", KEY_A, vaults={"vault-a"}, policy_id="policy-1")
    cache.get("gen-a")
    cache.peek("gen-a")
    assert told == [False, True, True]
    assert (cache.hits, cache.misses) == (told.count(True), told.count(False))


def test_put_again_replaces_the_key_and_restarts_the_ttl() -> None:
    clock, cache = _cache()
    cache.put("gen-a", KEY_A, vaults={"vault-a"}, policy_id="policy-1")
    clock.advance(TTL - TICK)
    cache.put("gen-a", KEY_B, vaults={"vault-b"}, policy_id="policy-2")
    clock.advance(TTL - TICK)
    assert cache.get("gen-a") == KEY_B
    assert len(cache) == 1
    # The second put's vaults and policy are the ones remembered.
    assert cache.invalidate_vault("vault-a") == 0
    cache.invalidate_policy("policy-1")
    assert cache.get("gen-a") == KEY_B
    cache.invalidate_policy("policy-2")
    assert cache.get("gen-a") is None


def test_a_zero_or_negative_ttl_caches_nothing() -> None:
    for ttl in (timedelta(0), timedelta(seconds=-1)):
        _, cache = _cache(ttl)
        cache.put("gen-a", KEY_A, vaults={"vault-a"}, policy_id="policy-1")
        assert len(cache) == 0
        assert cache.get("gen-a") is None
    _, tiny = _cache(TICK)
    tiny.put("gen-a", KEY_A, vaults={"vault-a"}, policy_id="policy-1")
    assert tiny.get("gen-a") == KEY_A


def test_invalidate_vault_drops_every_entry_naming_it_in_any_case() -> None:
    _, cache = _filled()
    assert cache.invalidate_vault("VAULT-b") == 2
    assert len(cache) == 1
    assert cache.get("gen-a") is None
    assert cache.get("gen-c") is None
    assert cache.get("gen-b") == KEY_B
    assert cache.invalidate_vault("vault-b") == 0
    assert cache.invalidate_vault("vault") == 0  # a vault name, not a prefix
    assert cache.invalidate_vault("Vault-C") == 1
    assert len(cache) == 0


def test_invalidate_policy_drops_that_policys_generations_only() -> None:
    _, cache = _filled()
    cache.invalidate_policy("policy-1")
    assert len(cache) == 1
    assert cache.get("gen-a") is None
    assert cache.get("gen-b") is None
    assert cache.get("gen-c") == KEY_C
    cache.invalidate_policy("Policy-2")  # policy ids are compared exactly
    assert cache.get("gen-c") == KEY_C
    cache.invalidate_policy("policy-3")
    assert len(cache) == 1


def test_clear_drops_everything() -> None:
    _, cache = _filled()
    assert len(cache) == 3
    cache.clear()
    assert len(cache) == 0
    for generation in ("gen-a", "gen-b", "gen-c"):
        assert cache.get(generation) is None
