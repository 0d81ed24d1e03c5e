"""Per-vault throttling of the keys API: Key Vault's weighted limits on a frozen clock.

The throttle's clock is injected, so every refill is exact arithmetic on a time the test sets;
nothing sleeps. Small allowances are chosen so rates are exact in binary floating point
(40 units per 10 s: 4 a second).
"""

from __future__ import annotations

import threading

import pytest

from customerkey.api.throttle import (
    SOFTWARE_RSA_2048,
    Call,
    KeyClass,
    Limits,
    VaultThrottle,
    key_class,
    parse_setting,
)
from customerkey.config import BadSettings, load_settings
from customerkey.errors import CustomerKeyError, Throttled

SMALL = Limits(creates=20.0, operations=40.0)  # 2 creates and 4 operations a second


class FrozenClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def throttle(limits: Limits | None = SMALL, **options: int) -> tuple[VaultThrottle, FrozenClock]:
    clock = FrozenClock()
    return VaultThrottle(limits, clock=clock, **options), clock


def op(vault: str = "v1", tenant: str = "contoso", key: str | None = "k") -> Call:
    return Call(vault, tenant, key=key)


def allowed(limiter: VaultThrottle, call: Call, times: int) -> int:
    """How many of ``times`` identical calls in a row are allowed (time does not move)."""
    return sum(limiter.take(call) == 0.0 for _ in range(times))


# ------------------------------------------------------------------ Key Vault's table


@pytest.mark.parametrize(
    ("kty", "size", "per_window"),
    [
        ("RSA", 2048, 4000),
        ("RSA-HSM", 2048, 2000),
        ("RSA", 3072, 1000),
        ("RSA-HSM", 3072, 500),
        ("RSA", 4096, 500),
        ("RSA-HSM", 4096, 250),
        ("EC", 256, 4000),
        ("EC-HSM", 521, 2000),
        ("oct-HSM", 256, 2000),
    ],
)
def test_other_transactions_per_ten_seconds_are_key_vaults(
    kty: str, size: int, per_window: int
) -> None:
    limiter, _ = throttle(Limits())
    limiter.learn("v1", "k", kty, size)
    assert allowed(limiter, op(), per_window) == per_window
    assert limiter.take(op()) > 0.0  # the next one, at the same instant, is refused


@pytest.mark.parametrize(("kty", "per_window"), [("RSA", 20), ("EC", 20), ("RSA-HSM", 10)])
def test_creates_per_ten_seconds_are_key_vaults(kty: str, per_window: int) -> None:
    limiter, _ = throttle(Limits())
    create = Call("v1", "contoso", creates=True, key="new", kty=kty)
    assert allowed(limiter, create, per_window) == per_window
    assert limiter.take(create) > 0.0


def test_the_weighted_sum_is_enforced_as_key_vault_documents_it() -> None:
    # Key Vault: "248 RSA 4,096-bit HSM-key GET transactions and 16 RSA 2,048-bit HSM-key GET
    # transactions" fill a 10-second interval.
    limiter, _ = throttle(Limits())
    limiter.learn("v1", "big", "RSA-HSM", 4096)
    limiter.learn("v1", "small", "RSA-HSM", 2048)
    assert allowed(limiter, op(key="big"), 248) == 248
    assert allowed(limiter, op(key="small"), 16) == 16
    assert limiter.units("v1", "contoso") == 0.0
    assert limiter.take(op(key="small")) == 0.005  # 2 units at 400 units a second
    assert limiter.take(op(key="unknown")) == 0.0025  # software RSA-2048: 1 unit


def test_calls_naming_no_key_cost_one_unit() -> None:
    limiter, _ = throttle()
    assert allowed(limiter, op(key=None), 40) == 40
    assert limiter.take(op(key=None)) == 0.25


# ------------------------------------------------------------------ refill and waits


def test_a_refused_call_says_how_long_and_spends_nothing() -> None:
    limiter, clock = throttle()
    limiter.learn("v1", "k", "RSA-HSM", 4096)  # 16 units a call
    assert [limiter.take(op()) for _ in range(2)] == [0.0, 0.0]
    assert limiter.units("v1", "contoso") == 8.0
    assert limiter.take(op()) == 2.0  # 8 units short at 4 a second
    assert limiter.take(op()) == 2.0  # the refusal spent nothing
    clock.advance(1.75)
    assert limiter.take(op()) == 0.25
    clock.advance(0.25)
    assert limiter.take(op()) == 0.0
    assert limiter.units("v1", "contoso") == 0.0


def test_refill_is_continuous_and_capped_at_the_ten_second_allowance() -> None:
    limiter, clock = throttle()
    assert allowed(limiter, op(), 40) == 40
    clock.advance(0.25)
    assert limiter.units("v1", "contoso") == 1.0
    assert limiter.take(op()) == 0.0
    assert limiter.take(op()) == 0.25
    clock.advance(1_000_000)
    assert limiter.units("v1", "contoso") == 40.0
    assert allowed(limiter, op(), 41) == 40


def test_a_call_never_costs_more_than_a_full_bucket() -> None:
    # keyvault*0.01: 0.2 creates per 10 s; a create (1 unit) would otherwise never pass.
    limits = parse_setting("keyvault*0.01")
    assert limits == Limits(creates=0.2, operations=40.0)
    limiter, clock = throttle(limits)
    create = Call("v1", "contoso", creates=True, kty="RSA-HSM")
    assert limiter.take(create) == 0.0
    assert limiter.take(create) == 10.0
    clock.advance(5)
    assert limiter.take(create) == 5.0
    clock.advance(5)
    assert limiter.take(create) == 0.0


# ------------------------------------------------------------------ what shares a budget


def test_vaults_tenants_and_the_two_classes_have_separate_buckets() -> None:
    limiter, _ = throttle()
    assert allowed(limiter, op(), 40) == 40
    assert limiter.take(op()) == 0.25
    assert limiter.take(op(vault="v2")) == 0.0  # another vault
    assert limiter.take(op(tenant="fabrikam")) == 0.0  # another tenant calling the same vault
    assert limiter.take(Call("v1", "contoso", creates=True, key="k")) == 0.0  # creates
    # Names are case-insensitive: the same vault and tenant, the same (spent) bucket.
    assert limiter.take(op(vault="V1", tenant="Contoso")) == 0.25


def test_a_learnt_class_prices_the_calls_naming_that_key() -> None:
    limiter, _ = throttle()
    assert limiter.class_of("v1", "k") == SOFTWARE_RSA_2048  # first sight
    limiter.learn("V1", "K", "RSA-HSM", 4096)
    assert limiter.class_of("v1", "k") == KeyClass(hsm=True, bits=4096)
    assert limiter.class_of("v2", "k") == SOFTWARE_RSA_2048  # keys are per vault
    assert [limiter.take(op()) for _ in range(3)] == [0.0, 0.0, 2.0]
    # Rotating (a create naming the key) is charged as an HSM key's create: 2 units of 20.
    rotate = Call("v1", "contoso", creates=True, key="k")
    assert allowed(limiter, rotate, 11) == 10
    # Learning that a key is software RSA-2048 again drops its entry.
    limiter.learn("v1", "k", "RSA", 2048)
    assert limiter.class_of("v1", "k") == SOFTWARE_RSA_2048


def test_key_classes() -> None:
    assert key_class("RSA", 2048) == KeyClass(hsm=False, bits=2048)
    assert key_class("rsa-hsm", 3072) == KeyClass(hsm=True, bits=3072)
    assert key_class("EC", 384) == KeyClass(hsm=False, bits=2048)
    assert key_class("EC-HSM", 521) == KeyClass(hsm=True, bits=2048)
    assert key_class("oct-HSM", 256) == KeyClass(hsm=True, bits=2048)
    assert key_class("RSA-HSM") == KeyClass(hsm=True, bits=2048)
    costs = [
        (key_class(kty, size).operation_cost, key_class(kty, size).create_cost)
        for kty, size in [("RSA", 2048), ("RSA", 3072), ("RSA", 4096), ("RSA-HSM", 4096)]
    ]
    assert costs == [(1.0, 1.0), (4.0, 1.0), (8.0, 1.0), (16.0, 2.0)]


# ------------------------------------------------------------------ memory and threads


def test_buckets_are_bounded_least_recently_used_first_out() -> None:
    limiter, clock = throttle(max_buckets=3)
    for vault in ("a", "b", "c"):
        assert limiter.take(op(vault=vault)) == 0.0
    assert len(limiter) == 3
    assert limiter.take(op(vault="a")) == 0.0  # "a" is now the most recent
    assert limiter.take(op(vault="d")) == 0.0  # room made: down to 2, then "d"
    assert len(limiter) == 3
    assert limiter.units("b", "contoso") == 40.0  # forgotten: its debt forgiven
    assert limiter.units("a", "contoso") == 38.0
    clock.advance(10)  # every bucket refills: the next one in makes room by dropping them
    assert limiter.take(op(vault="e")) == 0.0
    assert len(limiter) == 1


def test_key_classes_are_bounded() -> None:
    limiter, _ = throttle(max_keys=2)
    for key in ("k1", "k2", "k3"):
        limiter.learn("v1", key, "RSA-HSM", 2048)
    assert limiter.class_of("v1", "k1") == SOFTWARE_RSA_2048
    assert limiter.class_of("v1", "k3") == KeyClass(hsm=True, bits=2048)


def test_takes_from_many_threads_never_overspend() -> None:
    limiter, _ = throttle(Limits())
    results: list[int] = []

    def spend() -> None:
        results.append(allowed(limiter, op(), 1000))

    threads = [threading.Thread(target=spend) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(results) == 4000


def test_off_allows_everything_and_keeps_nothing() -> None:
    limiter, _ = throttle(None)
    assert not limiter.enabled
    limiter.learn("v1", "k", "RSA-HSM", 4096)
    assert allowed(limiter, op(), 10_000) == 10_000
    assert len(limiter) == 0
    assert limiter.class_of("v1", "k") == SOFTWARE_RSA_2048


# ------------------------------------------------------------------ the setting and the error


def test_the_setting() -> None:
    assert parse_setting("off") is None
    assert parse_setting("keyvault") == Limits(creates=20.0, operations=4000.0)
    assert parse_setting("keyvault*10") == Limits(creates=200.0, operations=40000.0)
    assert parse_setting("keyvault*0.5") == Limits(creates=10.0, operations=2000.0)
    for bad in ("on", "keyvault*0", "keyvault*-1", "keyvault*x", "keyvault*inf", "keyvault*nan"):
        with pytest.raises(ValueError):
            parse_setting(bad)
    assert load_settings().throttle == "off"
    assert load_settings(throttle="keyvault*2.5").throttle == "keyvault*2.5"
    for bad in ("keyvault*0", "keyvault*0.0", "keyvault*", "KEYVAULT", "keyvault*1e3", "on"):
        with pytest.raises(BadSettings, match="throttle"):
            load_settings(throttle=bad)


def test_throttled_is_key_vaults_429() -> None:
    error = Throttled("Too many requests.", retry_after=3)
    assert isinstance(error, CustomerKeyError)
    assert (error.status, error.code, error.retry_after) == (429, "Throttled", 3)
    assert error.to_body() == {"error": {"code": "Throttled", "message": "Too many requests."}}
