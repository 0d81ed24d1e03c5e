"""Unwrapping a DEP key generation under the availability rules.

1. A cached key is used while its TTL lasts (no vault call).
2. Otherwise one of the two root keys is picked at random and asked to unwrap; if it fails,
   the other is asked.
3. Both failed with *system errors* (unreachable, timeout, 5xx): the availability key
   unwraps the DEP key, and the audit log gets "Fallback to Availability Key" (policy id,
   generation id, request id).
4. Any root key said *access denied*: a user request fails with ``KeyAccessDenied``; a system
   operation (purge, move) may still use the availability key, audited the same way.
   The files workload passes ``allow_availability=False`` and never falls back by itself.

Every key a root key (or the availability key) gives back is checked before it is used or
cached: it must be 32 bytes and, for generations made with one, match the generation's key
check value (``customerkey.crypto.key_check``). A vault that answers with a wrong key is
treated exactly like a vault that failed with a system error: the other root key is asked,
then the availability key; a wrong key is never cached. Generations made before key check
values existed (``key_check`` NULL) get the length check only.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from customerkey.crypto.key_check import DEP_KEY_BYTES, key_check_matches
from customerkey.errors import DecryptionFailed, KeyAccessDenied, KeyProviderUnavailable
from customerkey.keyprovider.base import KeyProvider, KeyUri
from customerkey.keys.cache import DepKeyCache
from customerkey.rng import Rng

FALLBACK_ACTIVITY = "Fallback to Availability Key"


@dataclass(frozen=True)
class WrappedDepKey:
    policy_id: str
    generation_id: str
    uri_1: KeyUri
    wrapped_1: bytes
    uri_2: KeyUri
    wrapped_2: bytes
    wrapped_availability: bytes | None
    key_check: bytes | None  # None for generations made before key check values


def key_mismatch(
    wrapped: WrappedDepKey, key: object, source: str, *, giver: str = "the vault"
) -> str | None:
    """Why ``key`` (as ``source`` unwrapped it) is not the DEP key of ``wrapped``'s
    generation, or None when it is, as far as the generation lets us tell."""
    if not isinstance(key, bytes) or len(key) != DEP_KEY_BYTES:
        size = f"{len(key)} bytes" if isinstance(key, bytes) else type(key).__name__
        return (
            f"{source}: {giver} returned a key that does not match this generation "
            f"({size}, not a {DEP_KEY_BYTES}-byte key)"
        )
    if wrapped.key_check is not None and not key_check_matches(
        key, wrapped.generation_id, wrapped.key_check
    ):
        return f"{source}: {giver} returned a key that does not match this generation"
    return None


@dataclass(frozen=True)
class FallbackEvent:
    policy_id: str
    generation_id: str
    request_id: str | None
    reason: str  # "system-errors" | "system-operation"
    failures: tuple[str, ...]


class DepKeyResolver:
    def __init__(
        self,
        *,
        cache: DepKeyCache,
        rng: Rng,
        unwrap_with_availability: Callable[[WrappedDepKey], bytes | None],
        on_fallback: Callable[[FallbackEvent], None],
    ) -> None:
        self._cache = cache
        self._rng = rng
        self._availability = unwrap_with_availability
        self._on_fallback = on_fallback
        self.vault_calls = 0

    def resolve(
        self,
        provider: KeyProvider,
        wrapped: WrappedDepKey,
        *,
        system: bool = False,
        request_id: str | None = None,
        allow_availability: bool = True,
    ) -> bytes:
        cached = self._cache.get(wrapped.generation_id)
        if cached is not None:
            return cached
        roots = [(wrapped.uri_1, wrapped.wrapped_1), (wrapped.uri_2, wrapped.wrapped_2)]
        if self._rng.randbelow(2):
            roots.reverse()
        denied: list[str] = []
        unavailable: list[str] = []
        for uri, blob in roots:
            self.vault_calls += 1
            try:
                key = provider.unwrap(uri, blob)
            except KeyAccessDenied as refused:
                denied.append(refused.message)
                continue
            except KeyProviderUnavailable as failed:
                unavailable.append(failed.message)
                continue
            wrong = key_mismatch(wrapped, key, str(uri))
            if wrong is not None:
                unavailable.append(wrong)
                continue
            self._cache.put(
                wrapped.generation_id,
                key,
                vaults={wrapped.uri_1.vault, wrapped.uri_2.vault},
                policy_id=wrapped.policy_id,
            )
            return key
        failures = tuple(denied + unavailable)
        may_fall_back = allow_availability and (not denied or system)
        if may_fall_back and wrapped.wrapped_availability is not None:
            try:
                fallback = self._availability(wrapped)
            except DecryptionFailed:
                fallback = None
            if fallback is not None:
                wrong = key_mismatch(
                    wrapped, fallback, f"availability key of {wrapped.policy_id}", giver="it"
                )
                if wrong is not None:
                    failures = (*failures, wrong)
                    fallback = None
            if fallback is not None:
                self._on_fallback(
                    FallbackEvent(
                        policy_id=wrapped.policy_id,
                        generation_id=wrapped.generation_id,
                        request_id=request_id,
                        reason="system-operation" if denied else "system-errors",
                        failures=failures,
                    )
                )
                # Not cached: the next request should try the root keys again.
                return fallback
        if denied:
            raise KeyAccessDenied(
                "The root keys of data encryption policy "
                f"{wrapped.policy_id} refused access, so this content cannot be decrypted: "
                + "; ".join(failures)
            )
        raise KeyProviderUnavailable(
            f"Neither root key of data encryption policy {wrapped.policy_id} could be reached: "
            + "; ".join(failures)
        )
