"""Per-vault throttling of the keys API, like Azure Key Vault's service limits: the decision.

Owns the token buckets and the one decision ``VaultThrottle.take``: may this keys-API call run
now, or how many seconds until it may. It does no I/O and reads time from an injected
monotonic clock, so tests move time by hand. The router (``api.routers.keys``) asks once per
request, after the caller is authenticated and before the vault service runs, and answers a
refusal with 429 ``Throttled`` and ``Retry-After``.

Key Vault's limits (transactions per 10 seconds, per vault; HSM key / software key): CREATE
key 10 / 20 for every key type; all other transactions 2,000 / 4,000 for RSA-2048 and every
EC curve, 500 / 1,000 for RSA-3072, 250 / 500 for RSA-4096. Key Vault enforces the weighted
sum of them, and so do we, with two buckets per vault:

- ``create`` (creating key material: create and rotate) holds 20 units; a software key's
  create costs 1, an HSM key's 2.
- ``operations`` (everything else: crypto operations, get, list, update, delete, import,
  backup, restore, rotation policies, random bytes, deleted keys) holds 4,000 units; an
  operation costs 1 on a software RSA-2048 key, 4 on RSA-3072, 8 on RSA-4096, twice that on
  an HSM key. EC keys and oct-HSM keys cost what RSA-2048 keys of the same protection do
  (Key Vault lists every curve with RSA-2048; oct-HSM is Managed HSM's, which has no such
  table). A call naming no key (list, restore, random bytes) costs 1.

A bucket refills continuously (a tenth of its capacity a second) and is keyed by the vault
and the caller's tenant: a vault's own tenant shares one budget per vault, as in Key Vault,
while callers of another tenant (refused by the service anyway) cannot spend it. Limits are
Key Vault's times a factor (``CUSTOMERKEY_THROTTLE=keyvault*F``); a call never costs more than
a full bucket, so a tiny factor slows a class down but never refuses it for ever.

A key's class (protection and size) is learnt from every key bundle the router answers
(create, import, get, update, rotate, restore, recover): the router cannot know it before the
service loads the key, and a second lookup per call would cost what throttling saves. A key
this process has not seen yet (after a restart, in another ``serve`` worker) is charged as a
software RSA-2048 key until one of those answers names it.

Memory is bounded: a full bucket is dropped (it is the same as no bucket), past
``max_buckets`` the least recently used are forgotten (forgiving their debt), and at most
``max_keys`` key classes are kept, least recently used first out (a forgotten key is charged
as software RSA-2048 again). Each server process holds its own buckets, so ``serve --workers
N`` allows up to N times the limits.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

Clock = Callable[[], float]

WINDOW_SECONDS = 10.0
# Key Vault's allowances per WINDOW_SECONDS, in units of a software key's create and of a
# software RSA-2048 key's other transaction.
KEYVAULT_CREATES = 20.0
KEYVAULT_OPERATIONS = 4000.0
MAX_BUCKETS = 10_000
MAX_KEYS = 50_000
SETTING_OFF = "off"
SETTING_KEYVAULT = "keyvault"


@dataclass(frozen=True)
class KeyClass:
    """What a key costs: whether it is an HSM key, and its RSA modulus size (2048 for others)."""

    hsm: bool = False
    bits: int = 2048

    @property
    def create_cost(self) -> float:
        return 2.0 if self.hsm else 1.0

    @property
    def operation_cost(self) -> float:
        size = 8.0 if self.bits > 3072 else 4.0 if self.bits > 2048 else 1.0
        return size * (2.0 if self.hsm else 1.0)


SOFTWARE_RSA_2048 = KeyClass()


def key_class(kty: str, key_size: int | None = None) -> KeyClass:
    """The class of a key of type ``kty`` (``RSA``, ``RSA-HSM``, ``EC-HSM``, ...) and size."""
    upper = kty.upper()
    rsa = upper.startswith("RSA")
    return KeyClass(hsm=upper.endswith("-HSM"), bits=key_size if rsa and key_size else 2048)


@dataclass(frozen=True)
class Limits:
    """Allowances per ``WINDOW_SECONDS``: ``creates`` software-key creates and ``operations``
    software RSA-2048 transactions (the costs above scale the rest)."""

    creates: float = KEYVAULT_CREATES
    operations: float = KEYVAULT_OPERATIONS

    def __post_init__(self) -> None:
        if not (self.creates > 0 and self.operations > 0):
            raise ValueError("throttle allowances must be positive")


def parse_setting(value: str) -> Limits | None:
    """``off`` (None), ``keyvault`` or ``keyvault*F`` (Key Vault's limits times F > 0)."""
    text = value.strip().lower()
    if text == SETTING_OFF:
        return None
    base, star, factor_text = text.partition("*")
    if base.strip() != SETTING_KEYVAULT:
        raise ValueError("the throttle setting is 'off', 'keyvault' or 'keyvault*<factor>'")
    try:
        factor = float(factor_text) if star else 1.0
    except ValueError:
        raise ValueError("the throttle factor after 'keyvault*' must be a number") from None
    if not 0 < factor < float("inf"):
        raise ValueError("the throttle factor must be a positive finite number")
    return Limits(KEYVAULT_CREATES * factor, KEYVAULT_OPERATIONS * factor)


@dataclass(frozen=True)
class Call:
    """One keys-API call as the throttle sees it: the vault, the caller's tenant, whether it
    makes key material (create, rotate), the key its URL names, and for a create the key type
    it asks for."""

    vault: str
    tenant: str
    creates: bool = False
    key: str | None = None
    kty: str | None = None


class VaultThrottle:
    """Token buckets per (vault, tenant, create|operations). ``limits`` None: off."""

    def __init__(
        self,
        limits: Limits | None,
        *,
        clock: Clock = time.monotonic,
        max_buckets: int = MAX_BUCKETS,
        max_keys: int = MAX_KEYS,
    ) -> None:
        if max_buckets < 1 or max_keys < 1:
            raise ValueError("max_buckets and max_keys must be >= 1")
        self.limits = limits
        self.max_buckets = max_buckets
        self.max_keys = max_keys
        self._clock = clock
        # (vault, tenant, create?) -> (units, at)
        self._buckets: OrderedDict[tuple[str, str, bool], tuple[float, float]] = OrderedDict()
        # (vault, key) -> class, only for keys that are not software RSA-2048
        self._classes: OrderedDict[tuple[str, str], KeyClass] = OrderedDict()
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return self.limits is not None

    def __len__(self) -> int:
        return len(self._buckets)

    def learn(self, vault: str, key: str, kty: str, key_size: int | None) -> None:
        """Remember the class of a key the service just described (a key bundle)."""
        if self.limits is None:
            return
        name = (vault.lower(), key.lower())
        found = key_class(kty, key_size)
        with self._lock:
            if found == SOFTWARE_RSA_2048:
                self._classes.pop(name, None)  # the default needs no entry
                return
            self._classes[name] = found
            self._classes.move_to_end(name)
            while len(self._classes) > self.max_keys:
                self._classes.popitem(last=False)

    def class_of(self, vault: str, key: str) -> KeyClass:
        """The class the next call naming this key is charged as."""
        with self._lock:
            return self._classes.get((vault.lower(), key.lower()), SOFTWARE_RSA_2048)

    def units(self, vault: str, tenant: str, *, creates: bool = False) -> float:
        """The units a bucket holds now (its capacity when never used or refilled)."""
        limits = self.limits
        if limits is None:
            return 0.0
        with self._lock:
            return self._level((vault.lower(), tenant.lower(), creates), self._clock(), limits)

    def take(self, call: Call) -> float:
        """The one decision: spend ``call``'s cost and answer 0.0, or answer the seconds until
        its bucket holds the cost (nothing is spent then)."""
        limits = self.limits
        if limits is None:
            return 0.0
        vault = call.vault.lower()
        bucket = (vault, call.tenant.lower(), call.creates)
        capacity = limits.creates if call.creates else limits.operations
        with self._lock:
            if call.kty is not None:
                cls = key_class(call.kty)
            elif call.key is not None:
                cls = self._classes.get((vault, call.key.lower()), SOFTWARE_RSA_2048)
            else:
                cls = SOFTWARE_RSA_2048
            cost = min(cls.create_cost if call.creates else cls.operation_cost, capacity)
            now = self._clock()
            level = self._level(bucket, now, limits)
            if level < cost:
                if bucket in self._buckets:  # still being refused: keep it among the recent
                    self._buckets.move_to_end(bucket)
                return (cost - level) * WINDOW_SECONDS / capacity
            self._store(bucket, level - cost, now, capacity)
            return 0.0

    def _level(self, bucket: tuple[str, str, bool], now: float, limits: Limits) -> float:
        capacity = limits.creates if bucket[2] else limits.operations
        stored = self._buckets.get(bucket)
        if stored is None:
            return capacity
        units, at = stored
        return min(capacity, units + max(0.0, now - at) * capacity / WINDOW_SECONDS)

    def _store(
        self, bucket: tuple[str, str, bool], units: float, now: float, capacity: float
    ) -> None:
        if units >= capacity:  # a full bucket is no bucket
            self._buckets.pop(bucket, None)
            return
        if bucket not in self._buckets and len(self._buckets) >= self.max_buckets:
            self._make_room(now)
        self._buckets[bucket] = (units, now)
        self._buckets.move_to_end(bucket)

    def _make_room(self, now: float) -> None:
        """Drop the buckets that have refilled; if too many remain, the least recently used
        ones, down to 90% of ``max_buckets`` so this scan runs rarely."""
        limits = self.limits
        assert limits is not None
        for bucket in [b for b in self._buckets if self._full(b, now, limits)]:
            del self._buckets[bucket]
        keep = min(self.max_buckets - 1, (self.max_buckets * 9) // 10)
        while len(self._buckets) > keep:
            self._buckets.popitem(last=False)

    def _full(self, bucket: tuple[str, str, bool], now: float, limits: Limits) -> bool:
        capacity = limits.creates if bucket[2] else limits.operations
        return self._level(bucket, now, limits) >= capacity
