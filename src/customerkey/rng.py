"""Injected randomness.

Key material, salts, nonces and version ids come from an ``Rng``. Production uses
``SystemRng`` (the OS CSPRNG); tests may pass ``SeededRng`` to make ids and choices
repeatable. ``SeededRng`` is not secure and exists only for tests.
"""

from __future__ import annotations

import random
import secrets
from typing import Protocol


class Rng(Protocol):
    def token_bytes(self, n: int) -> bytes: ...

    def randbelow(self, n: int) -> int: ...


class SystemRng:
    def token_bytes(self, n: int) -> bytes:
        return secrets.token_bytes(n)

    def randbelow(self, n: int) -> int:
        return secrets.randbelow(n)


class SeededRng:
    """Deterministic bytes for tests. Never use for real keys."""

    def __init__(self, seed: int) -> None:
        self._random = random.Random(seed)

    def token_bytes(self, n: int) -> bytes:
        return self._random.randbytes(n)

    def randbelow(self, n: int) -> int:
        return self._random.randrange(n)


def new_hex_id(rng: Rng) -> str:
    """A 32-hex-character id, the shape of a Key Vault key version."""
    return rng.token_bytes(16).hex()
