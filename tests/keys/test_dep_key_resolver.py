"""``DepKeyResolver``: every branch of the availability rules, with in-test fake vaults.

A ``FakeVaults`` provider answers per root-key URI with the key, a refusal, an outage or a
wrong key (random bytes of the right length, or of a wrong one) and records the order it was
asked in. A wrong key is caught by the generation's key check value (or, for a generation
made before those existed, by its length) and counts as a system error from that vault.
Which root key is asked first comes from the injected ``SeededRng``; ``seed_first(n)`` picks
a seed whose first coin is ``n`` so both orders run.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from datetime import timedelta
from typing import cast

import pytest

from customerkey.clock import FrozenClock
from customerkey.crypto.key_check import key_check_value
from customerkey.errors import DecryptionFailed, KeyAccessDenied, KeyProviderUnavailable
from customerkey.keyprovider.base import KeyUri, RootKeyProperties, WrapResult
from customerkey.keys.cache import DepKeyCache
from customerkey.keys.resolver import DepKeyResolver, FallbackEvent, WrappedDepKey
from customerkey.rng import SeededRng

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
    key_check=key_check_value(DEP_KEY, "generation-1"),
)
# The same generation as stored before key check values existed.
LEGACY = dataclasses.replace(WRAPPED, key_check=None)
TTL = timedelta(minutes=15)
OK, DENIED, DOWN = "ok", "denied", "down"
WRONG, SHORT = "wrong", "short"  # a random key of 32 bytes, of 16 bytes
JUNK = "junk"  # not bytes at all: FakeVaults.junk
WRONG_KEY = bytes(range(100, 132))
SHORT_KEY = bytes(range(16))


class FakeVaults:
    """Answers unwrap for the two root keys as told: "ok", "denied", "down", "wrong", "short"
    or "junk" (``junk``, a value that is not bytes)."""

    def __init__(self, first: str, second: str, junk: object = None) -> None:
        self.behaviour = {str(URI_1): first, str(URI_2): second}
        self.calls: list[str] = []
        self.junk = junk

    def unwrap(self, uri: KeyUri, wrapped: bytes) -> bytes:
        self.calls.append(uri.vault)
        assert wrapped == {str(URI_1): WRAPPED.wrapped_1, str(URI_2): WRAPPED.wrapped_2}[str(uri)]
        outcome = self.behaviour[str(uri)]
        if outcome == DENIED:
            raise KeyAccessDenied(f"{uri}: 403 Forbidden")
        if outcome == DOWN:
            raise KeyProviderUnavailable(f"{uri}: vault unreachable")
        if outcome == WRONG:
            return WRONG_KEY
        if outcome == SHORT:
            return SHORT_KEY
        if outcome == JUNK:
            return cast(bytes, self.junk)
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
        assert wrapped.generation_id == WRAPPED.generation_id
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
    with pytest.raises(KeyAccessDenied) as refused:
        h.resolver.resolve(vaults, WRAPPED, system=False)
    first, second = (URI_1, URI_2) if coin == 0 else (URI_2, URI_1)
    assert refused.value.message == (
        "The root keys of data encryption policy policy-1 refused access, so this content "
        f"cannot be decrypted: {first}: 403 Forbidden; {second}: 403 Forbidden"
    )
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
        key_check=WRAPPED.key_check,
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
    h = make(availability=missing)  # root key 1 is asked first
    with pytest.raises(KeyProviderUnavailable) as failed:
        h.resolver.resolve(FakeVaults(DOWN, DOWN), WRAPPED)
    assert failed.value.message == (
        "Neither root key of data encryption policy policy-1 could be reached: "
        f"{URI_1}: vault unreachable; {URI_2}: vault unreachable"
    )
    refused = "The root keys of data encryption policy policy-1 refused access, so this content "
    with pytest.raises(KeyAccessDenied) as denied:
        h.resolver.resolve(FakeVaults(DENIED, DENIED), WRAPPED, system=True)
    assert denied.value.message == (
        refused + f"cannot be decrypted: {URI_1}: 403 Forbidden; {URI_2}: 403 Forbidden"
    )
    with pytest.raises(KeyAccessDenied) as denied:
        h.resolver.resolve(FakeVaults(DOWN, DENIED), WRAPPED, system=True)
    # The refusals come first, then the outages.
    assert denied.value.message == (
        refused + f"cannot be decrypted: {URI_2}: 403 Forbidden; {URI_1}: vault unreachable"
    )
    assert h.availability_calls == 3
    assert h.events == []  # nothing was unwrapped, so nothing is audited as a fallback
    assert len(h.cache) == 0


# ---------------------------------------------------------------- a vault returns a wrong key


@pytest.mark.parametrize("wrong", [WRONG, SHORT])
@pytest.mark.parametrize("allow_availability", [True, False])
def test_a_wrong_key_from_root_key_1_the_other_root_key_answers(
    wrong: str, allow_availability: bool
) -> None:
    """Also for the files workload, which never falls back to the availability key."""
    h = make(first_coin=0)  # root key 1 first
    vaults = FakeVaults(wrong, OK)
    key = h.resolver.resolve(vaults, WRAPPED, allow_availability=allow_availability)
    assert key == DEP_KEY
    assert vaults.calls == ["vault-one", "vault-two"]
    assert h.events == [] and h.availability_calls == 0
    assert h.cache.get(WRAPPED.generation_id) == DEP_KEY
    assert len(h.cache) == 1


@pytest.mark.parametrize("coin", [0, 1])
@pytest.mark.parametrize(
    "behaviour", [(WRONG, WRONG), (SHORT, WRONG), (WRONG, DOWN), (DOWN, SHORT)]
)
@pytest.mark.parametrize("system", [False, True])
def test_wrong_keys_from_both_root_keys_fall_back_to_the_availability_key(
    coin: int, behaviour: tuple[str, str], system: bool
) -> None:
    h = make(first_coin=coin)
    vaults = FakeVaults(*behaviour)
    assert h.resolver.resolve(vaults, WRAPPED, system=system, request_id="req-7") == DEP_KEY
    assert sorted(vaults.calls) == ["vault-one", "vault-two"]
    (event,) = h.events
    assert event.reason == "system-errors"
    assert event.request_id == "req-7"
    assert len(event.failures) == 2
    for uri, outcome in zip((URI_1, URI_2), behaviour, strict=True):
        (failure,) = [f for f in event.failures if f.startswith(str(uri))]
        if outcome == DOWN:
            assert "unreachable" in failure
        else:
            assert "the vault returned a key that does not match this generation" in failure
    assert len(h.cache) == 0  # neither the wrong keys nor the fallback are cached
    # The next request asks the root keys again.
    h.resolver.resolve(vaults, WRAPPED)
    assert len(vaults.calls) == 4
    assert len(h.events) == 2


def test_a_wrong_key_and_a_refusal_fails_a_user_request() -> None:
    h = make()
    with pytest.raises(KeyAccessDenied, match="refused access") as refused:
        h.resolver.resolve(FakeVaults(WRONG, DENIED), WRAPPED)
    assert "does not match this generation" in refused.value.message
    assert h.availability_calls == 0 and len(h.cache) == 0


@pytest.mark.parametrize("wrong", [WRONG, SHORT])
def test_without_allow_availability_wrong_keys_from_both_are_unavailable(wrong: str) -> None:
    h = make()
    with pytest.raises(KeyProviderUnavailable, match="does not match this generation"):
        h.resolver.resolve(FakeVaults(wrong, wrong), WRAPPED, allow_availability=False)
    assert h.availability_calls == 0 and h.events == [] and len(h.cache) == 0


@pytest.mark.parametrize("availability", [WRONG_KEY, SHORT_KEY, b""])
@pytest.mark.parametrize("roots", [(WRONG, WRONG), (DOWN, DOWN), (DOWN, SHORT)])
def test_a_wrong_key_from_the_availability_key_is_an_error(
    availability: bytes, roots: tuple[str, str]
) -> None:
    h = make(availability=availability)
    with pytest.raises(KeyProviderUnavailable, match="could be reached") as failed:
        h.resolver.resolve(FakeVaults(*roots), WRAPPED)
    assert f"availability key of {WRAPPED.policy_id}: it returned a key that does not match" in (
        failed.value.message
    )
    with pytest.raises(KeyAccessDenied, match="refused access"):
        h.resolver.resolve(FakeVaults(DENIED, DENIED), WRAPPED, system=True)
    assert h.availability_calls == 2
    assert h.events == []  # nothing usable was unwrapped, so no fallback is audited
    assert len(h.cache) == 0


def test_a_generation_without_a_key_check_gets_the_length_check_only() -> None:
    h = make(first_coin=0)
    # A 32-byte wrong key cannot be told from the right one without a check value...
    assert h.resolver.resolve(FakeVaults(WRONG, OK), LEGACY) == WRONG_KEY
    h.cache.clear()
    # ...but a key of the wrong length can, from either root key and from the availability key.
    vaults = FakeVaults(SHORT, OK)
    assert h.resolver.resolve(vaults, LEGACY) == DEP_KEY
    assert vaults.calls == ["vault-one", "vault-two"]
    h.cache.clear()
    assert h.resolver.resolve(FakeVaults(SHORT, SHORT), LEGACY) == DEP_KEY
    assert len(h.events) == 1 and len(h.cache) == 0
    short = make(availability=SHORT_KEY)
    with pytest.raises(KeyProviderUnavailable, match="16 bytes, not a 32-byte key"):
        short.resolver.resolve(FakeVaults(DOWN, SHORT), LEGACY)


def test_the_check_binds_the_generation() -> None:
    """The right key offered for another generation (same key, other id) does not pass."""
    h = make(first_coin=0)
    other = dataclasses.replace(WRAPPED, generation_id="generation-2")
    vaults = FakeVaults(OK, OK)
    with pytest.raises(KeyProviderUnavailable, match="does not match this generation"):
        h.resolver.resolve(vaults, other, allow_availability=False)
    assert len(h.cache) == 0


# ---------------------------------------------------------------- a vault returns a non-key

NOT_BYTES = [
    pytest.param(None, "NoneType", id="none"),
    pytest.param(DEP_KEY.hex()[:32], "str", id="str"),
    pytest.param(bytearray(DEP_KEY), "bytearray", id="bytearray"),
    pytest.param(memoryview(DEP_KEY), "memoryview", id="memoryview"),
    pytest.param(32, "int", id="int"),
]


def _junk_failure(uri: KeyUri, type_name: str) -> str:
    return (
        f"{uri}: the vault returned a key that does not match this generation "
        f"({type_name}, not a 32-byte key)"
    )


@pytest.mark.parametrize("junk,type_name", NOT_BYTES)
def test_a_non_bytes_answer_from_one_root_key_falls_over_to_the_other(
    junk: object, type_name: str
) -> None:
    h = make(first_coin=0)
    vaults = FakeVaults(JUNK, OK, junk)
    assert h.resolver.resolve(vaults, WRAPPED, allow_availability=False) == DEP_KEY
    assert vaults.calls == ["vault-one", "vault-two"]
    assert h.cache.get(WRAPPED.generation_id) == DEP_KEY
    assert h.events == [] and h.availability_calls == 0


@pytest.mark.parametrize("junk,type_name", NOT_BYTES)
def test_non_bytes_answers_from_both_root_keys_fall_back_to_the_availability_key(
    junk: object, type_name: str
) -> None:
    h = make(first_coin=1)
    vaults = FakeVaults(JUNK, JUNK, junk)
    assert h.resolver.resolve(vaults, WRAPPED, request_id="req-9") == DEP_KEY
    assert vaults.calls == ["vault-two", "vault-one"]
    (event,) = h.events
    assert event.reason == "system-errors"
    assert event.request_id == "req-9"
    assert event.failures == (_junk_failure(URI_2, type_name), _junk_failure(URI_1, type_name))
    assert len(h.cache) == 0
    with pytest.raises(KeyProviderUnavailable) as failed:
        h.resolver.resolve(vaults, WRAPPED, allow_availability=False)
    assert failed.value.message == (
        "Neither root key of data encryption policy policy-1 could be reached: "
        + "; ".join(event.failures)
    )


@pytest.mark.parametrize("junk,type_name", NOT_BYTES[1:])
def test_a_non_bytes_answer_from_the_availability_key_is_an_error(
    junk: object, type_name: str
) -> None:
    h = make(first_coin=0, availability=cast(bytes, junk))
    with pytest.raises(KeyProviderUnavailable) as failed:
        h.resolver.resolve(FakeVaults(DOWN, JUNK, junk), WRAPPED)
    assert failed.value.message == (
        "Neither root key of data encryption policy policy-1 could be reached: "
        f"{URI_1}: vault unreachable; {_junk_failure(URI_2, type_name)}; "
        "availability key of policy-1: it returned a key that does not match this generation "
        f"({type_name}, not a 32-byte key)"
    )
    assert h.availability_calls == 1
    assert h.events == [] and len(h.cache) == 0


# ---------------------------------------------------------------- what the cache remembers


def test_a_resolved_key_is_cached_under_its_policy_and_both_vaults() -> None:
    """``invalidate_policy`` (a generation retired or purged) and ``invalidate_vault`` (access
    revoked in either vault) must find the entry the resolver made."""
    h = make()
    vaults = FakeVaults(OK, OK)
    h.resolver.resolve(vaults, WRAPPED)
    h.cache.invalidate_policy("policy-2")
    assert h.resolver.resolve(vaults, WRAPPED) == DEP_KEY
    assert len(vaults.calls) == 1
    h.cache.invalidate_policy("policy-1")
    assert len(h.cache) == 0
    h.resolver.resolve(vaults, WRAPPED)
    assert len(vaults.calls) == 2
    for vault in ("VAULT-ONE", "vault-two"):
        assert h.cache.invalidate_vault(vault) == 1
        h.resolver.resolve(vaults, WRAPPED)
    assert len(vaults.calls) == 4
    assert h.cache.invalidate_vault("vault-three") == 0
