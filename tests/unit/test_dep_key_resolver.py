"""``DepKeyResolver``: every branch of the availability rules, with in-test fake vaults.

A ``FakeVaults`` provider answers per root-key URI with the key, a refusal or an outage and
records the order it was asked in. Which root key is asked first comes from the injected
``SeededRng``; ``seed_first(n)`` picks a seed whose first coin is ``n`` so both orders run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta

import pytest

from customerkey.clock import FrozenClock
from customerkey.errors import DecryptionFailed, KeyAccessDenied, KeyProviderUnavailable
from customerkey.keyprovider.base import KeyUri, RootKeyProperties, WrapResult
from customerkey.rng import SeededRng
from customerkey.service.dep_keys import DepKeyResolver, FallbackEvent, WrappedDepKey
from customerkey.service.key_cache import DepKeyCache

DEP_KEY = bytes(range(32))
URI_1 = KeyUri.parse("https://vault-one.vault.azure.net/keys/root1/" + "1" * 32)
URI_2 = KeyUri.parse("https://vault-two.vault.azure.net/keys/root2/" + "2" * 32)
WRAPPED = WrappedDepKey(
    policy_id="policy-1",
    generation_id="generation-1",
    uri_1=URI_1,
    wrapped_1=b"wrapped-by-1",
    uri_2=URI_2,
    wrapped_2=b"wrapped-by-2",
    wrapped_availability=b"wrapped-by-availability",
)
TTL = timedelta(minutes=15)
OK, DENIED, DOWN = "ok", "denied", "down"


class FakeVaults:
    """Answers unwrap for the two root keys as told: "ok", "denied" or "down"."""

    def __init__(self, first: str, second: str) -> None:
        self.behaviour = {str(URI_1): first, str(URI_2): second}
        self.calls: list[str] = []

    def unwrap(self, uri: KeyUri, wrapped: bytes) -> bytes:
        self.calls.append(uri.vault)
        assert wrapped == {str(URI_1): WRAPPED.wrapped_1, str(URI_2): WRAPPED.wrapped_2}[str(uri)]
        outcome = self.behaviour[str(uri)]
        if outcome == DENIED:
            raise KeyAccessDenied(f"{uri}: 403 Forbidden")
        if outcome == DOWN:
            raise KeyProviderUnavailable(f"{uri}: vault unreachable")
        return DEP_KEY

    def wrap(self, uri: KeyUri, key: bytes) -> WrapResult:
        raise AssertionError("the resolver never wraps")

    def properties(self, uri: KeyUri) -> RootKeyProperties:
        raise AssertionError("the resolver never reads properties")

    def holds(self, uri: KeyUri, permissions: tuple[str, ...]) -> dict[str, bool]:
        raise AssertionError("the resolver never probes")


@dataclass
class Harness:
    clock: FrozenClock
    cache: DepKeyCache
    resolver: DepKeyResolver
    events: list[FallbackEvent] = field(default_factory=list)
    availability_calls: int = 0


def seed_first(coin: int) -> int:
    """A seed whose first ``randbelow(2)`` is ``coin`` (0: root key 1 first; 1: key 2 first)."""
    return next(s for s in range(1000) if SeededRng(s).randbelow(2) == coin)


def make(
    *,
    first_coin: int = 0,
    availability: bytes | Exception | None = DEP_KEY,
    ttl: timedelta = TTL,
) -> Harness:
    clock = FrozenClock()
    cache = DepKeyCache(clock, ttl)
    events: list[FallbackEvent] = []
    harness: Harness

    def unwrap_with_availability(wrapped: WrappedDepKey) -> bytes | None:
        assert wrapped is WRAPPED or wrapped.generation_id == WRAPPED.generation_id
        harness.availability_calls += 1
        if isinstance(availability, Exception):
            raise availability
        return availability

    resolver = DepKeyResolver(
        cache=cache,
        rng=SeededRng(seed_first(first_coin)),
        unwrap_with_availability=unwrap_with_availability,
        on_fallback=events.append,
    )
    harness = Harness(clock, cache, resolver, events)
    return harness


# ---------------------------------------------------------------- the cache


def test_a_cached_key_makes_no_vault_call() -> None:
    h = make()
    h.cache.put(WRAPPED.generation_id, DEP_KEY, vaults={"vault-one"}, policy_id="policy-1")
    vaults = FakeVaults(DOWN, DOWN)
    for _ in range(3):
        assert h.resolver.resolve(vaults, WRAPPED) == DEP_KEY
    assert vaults.calls == []
    assert h.resolver.vault_calls == 0
    assert h.availability_calls == 0
    assert h.events == []


def test_an_unwrapped_key_is_cached_until_its_ttl_ends() -> None:
    h = make()
    vaults = FakeVaults(OK, OK)
    assert h.resolver.resolve(vaults, WRAPPED) == DEP_KEY
    assert h.resolver.resolve(vaults, WRAPPED) == DEP_KEY
    assert len(vaults.calls) == 1
    h.clock.advance(TTL - timedelta(seconds=1))
    h.resolver.resolve(vaults, WRAPPED)
    assert len(vaults.calls) == 1
    h.clock.advance(timedelta(seconds=1))
    h.resolver.resolve(vaults, WRAPPED)
    assert len(vaults.calls) == 2
    assert h.cache.invalidate_vault("VAULT-TWO") == 1  # both vaults are remembered
    h.resolver.resolve(vaults, WRAPPED)
    assert len(vaults.calls) == 3


def test_a_zero_ttl_caches_nothing() -> None:
    h = make(ttl=timedelta(0))
    vaults = FakeVaults(OK, OK)
    h.resolver.resolve(vaults, WRAPPED)
    h.resolver.resolve(vaults, WRAPPED)
    assert len(vaults.calls) == 2


# ---------------------------------------------------------------- one root key fails


@pytest.mark.parametrize("failure", [DOWN, DENIED])
@pytest.mark.parametrize("system", [False, True])
def test_the_failing_root_key_first_then_the_other_answers(failure: str, system: bool) -> None:
    h = make(first_coin=0)  # root key 1 first
    vaults = FakeVaults(failure, OK)
    assert h.resolver.resolve(vaults, WRAPPED, system=system) == DEP_KEY
    assert vaults.calls == ["vault-one", "vault-two"]
    assert h.resolver.vault_calls == 2
    assert h.events == [] and h.availability_calls == 0
    assert len(h.cache) == 1


@pytest.mark.parametrize("failure", [DOWN, DENIED])
def test_the_working_root_key_asked_first_answers_alone(failure: str) -> None:
    h = make(first_coin=1)  # root key 2 first
    vaults = FakeVaults(failure, OK)
    assert h.resolver.resolve(vaults, WRAPPED) == DEP_KEY
    assert vaults.calls == ["vault-two"]
    assert h.resolver.vault_calls == 1
    assert h.events == []


@pytest.mark.parametrize("coin", [0, 1])
def test_the_coin_picks_which_root_key_is_asked_first(coin: int) -> None:
    h = make(first_coin=coin)
    vaults = FakeVaults(OK, DOWN)
    assert h.resolver.resolve(vaults, WRAPPED) == DEP_KEY
    assert vaults.calls == (["vault-one"] if coin == 0 else ["vault-two", "vault-one"])


def test_both_orders_happen_over_many_uncached_resolutions() -> None:
    h = make()
    vaults = FakeVaults(OK, OK)
    for _ in range(32):
        h.cache.clear()
        h.resolver.resolve(vaults, WRAPPED)
    assert set(vaults.calls) == {"vault-one", "vault-two"}
    assert len(vaults.calls) == 32


# ---------------------------------------------------------------- both root keys fail


@pytest.mark.parametrize("coin", [0, 1])
@pytest.mark.parametrize("system", [False, True])
def test_both_unavailable_falls_back_to_the_availability_key(coin: int, system: bool) -> None:
    h = make(first_coin=coin)
    vaults = FakeVaults(DOWN, DOWN)
    key = h.resolver.resolve(vaults, WRAPPED, system=system, request_id="req-1")
    assert key == DEP_KEY
    assert sorted(vaults.calls) == ["vault-one", "vault-two"]
    (event,) = h.events
    assert event.policy_id == "policy-1"
    assert event.generation_id == "generation-1"
    assert event.request_id == "req-1"
    assert event.reason == "system-errors"
    assert len(event.failures) == 2 and all("unreachable" in f for f in event.failures)
    # Not cached: the next request asks the root keys again, and audits again.
    assert len(h.cache) == 0
    h.resolver.resolve(vaults, WRAPPED, request_id="req-2")
    assert len(vaults.calls) == 4
    assert [e.request_id for e in h.events] == ["req-1", "req-2"]


@pytest.mark.parametrize("coin", [0, 1])
def test_both_denied_fails_a_user_request(coin: int) -> None:
    h = make(first_coin=coin)
    vaults = FakeVaults(DENIED, DENIED)
    with pytest.raises(KeyAccessDenied, match="policy-1 refused access") as refused:
        h.resolver.resolve(vaults, WRAPPED, system=False)
    assert "403" in refused.value.message
    assert h.availability_calls == 0
    assert h.events == []
    assert len(h.cache) == 0


@pytest.mark.parametrize("coin", [0, 1])
def test_both_denied_a_system_operation_uses_the_availability_key(coin: int) -> None:
    h = make(first_coin=coin)
    vaults = FakeVaults(DENIED, DENIED)
    assert h.resolver.resolve(vaults, WRAPPED, system=True, request_id="purge-1") == DEP_KEY
    (event,) = h.events
    assert event.reason == "system-operation"
    assert event.request_id == "purge-1"
    assert len(h.cache) == 0


@pytest.mark.parametrize("coin", [0, 1])
@pytest.mark.parametrize("behaviour", [(DENIED, DOWN), (DOWN, DENIED)])
def test_one_denied_one_unavailable_fails_a_user_request(
    coin: int, behaviour: tuple[str, str]
) -> None:
    h = make(first_coin=coin)
    vaults = FakeVaults(*behaviour)
    with pytest.raises(KeyAccessDenied):
        h.resolver.resolve(vaults, WRAPPED)
    assert len(vaults.calls) == 2
    assert h.availability_calls == 0 and h.events == []


@pytest.mark.parametrize("behaviour", [(DENIED, DOWN), (DOWN, DENIED)])
def test_one_denied_one_unavailable_a_system_operation_falls_back(
    behaviour: tuple[str, str],
) -> None:
    h = make()
    assert h.resolver.resolve(FakeVaults(*behaviour), WRAPPED, system=True) == DEP_KEY
    (event,) = h.events
    assert event.reason == "system-operation"
    assert len(event.failures) == 2


# ---------------------------------------------------------------- no availability key


@pytest.mark.parametrize("system", [False, True])
def test_without_allow_availability_there_is_never_a_fallback(system: bool) -> None:
    h = make()
    with pytest.raises(KeyProviderUnavailable, match="could be reached"):
        h.resolver.resolve(FakeVaults(DOWN, DOWN), WRAPPED, system=system, allow_availability=False)
    with pytest.raises(KeyAccessDenied):
        h.resolver.resolve(
            FakeVaults(DENIED, DENIED), WRAPPED, system=system, allow_availability=False
        )
    assert h.availability_calls == 0
    assert h.events == []


def test_a_generation_without_a_wrapped_availability_copy() -> None:
    h = make()
    bare = WrappedDepKey(
        policy_id=WRAPPED.policy_id,
        generation_id=WRAPPED.generation_id,
        uri_1=URI_1,
        wrapped_1=WRAPPED.wrapped_1,
        uri_2=URI_2,
        wrapped_2=WRAPPED.wrapped_2,
        wrapped_availability=None,
    )
    with pytest.raises(KeyProviderUnavailable):
        h.resolver.resolve(FakeVaults(DOWN, DOWN), bare)
    with pytest.raises(KeyAccessDenied):
        h.resolver.resolve(FakeVaults(DENIED, DENIED), bare, system=True)
    assert h.availability_calls == 0
    assert h.events == []


@pytest.mark.parametrize("missing", [None, DecryptionFailed("x")])
def test_a_destroyed_or_unusable_availability_key_gives_the_root_keys_error(
    missing: Exception | None,
) -> None:
    h = make(availability=missing)
    with pytest.raises(KeyProviderUnavailable, match="could be reached"):
        h.resolver.resolve(FakeVaults(DOWN, DOWN), WRAPPED)
    with pytest.raises(KeyAccessDenied, match="refused access"):
        h.resolver.resolve(FakeVaults(DENIED, DENIED), WRAPPED, system=True)
    with pytest.raises(KeyAccessDenied):
        h.resolver.resolve(FakeVaults(DOWN, DENIED), WRAPPED, system=True)
    assert h.availability_calls == 3
    assert h.events == []  # nothing was unwrapped, so nothing is audited as a fallback
    assert len(h.cache) == 0
