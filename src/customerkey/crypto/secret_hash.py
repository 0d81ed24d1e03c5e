"""Client-secret hashing for service principals.

Owns how a client secret is stored: never the secret itself, only an scrypt hash (stdlib
``hashlib.scrypt``, n=2**14, r=8, p=1, 16-byte random salt, 32-byte output), encoded as one
ASCII string::

    scrypt$<n>$<r>$<p>$<salt, base64url without padding>$<hash, base64url without padding>

The parameters travel with each hash, so stronger ones can be adopted later while old hashes
still verify. Also owns the shape of new client secrets. Like all of ``crypto`` it imports
nothing of ours at run time (``Rng`` is only a type).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from customerkey.rng import Rng

SCHEME = "scrypt"
N = 2**14
R = 8
P = 1
SALT_BYTES = 16
HASH_BYTES = 32
SECRET_BYTES = 30

# Bounds on parameters read back from storage, so a damaged or hostile record cannot make
# verification burn unbounded memory or time.
_MAX_N = 2**20
_MAX_R = 32
_MAX_P = 16
_MAX_MEMORY = 256 * 1024 * 1024
_B64URL = re.compile(r"^[A-Za-z0-9_-]+$")
_DECIMAL = re.compile(r"^[1-9][0-9]{0,9}$")


def hash_secret(secret: str, *, rng: Rng) -> str:
    """Hash ``secret`` with a fresh salt; the result is what gets stored."""
    salt = rng.token_bytes(SALT_BYTES)
    digest = _scrypt(secret.encode("utf-8"), salt, n=N, r=R, p=P, length=HASH_BYTES)
    return "$".join((SCHEME, str(N), str(R), str(P), _b64(salt), _b64(digest)))


def verify_secret(secret: str, encoded: str) -> bool:
    """Whether ``secret`` matches the stored ``encoded`` hash. False for any malformed record."""
    parts = encoded.split("$")
    if len(parts) != 6 or parts[0] != SCHEME:
        return False
    n_text, r_text, p_text, salt_text, hash_text = parts[1:]
    if not all(_DECIMAL.match(text) for text in (n_text, r_text, p_text)):
        return False
    n, r, p = int(n_text), int(r_text), int(p_text)
    if n < 2 or n & (n - 1) or n > _MAX_N or r > _MAX_R or p > _MAX_P:
        return False
    salt = _unb64(salt_text)
    expected = _unb64(hash_text)
    if salt is None or expected is None or not 16 <= len(expected) <= 64:
        return False
    try:
        actual = _scrypt(secret.encode("utf-8"), salt, n=n, r=r, p=p, length=len(expected))
    except (ValueError, MemoryError):
        return False
    return hmac.compare_digest(actual, expected)


def new_client_secret(rng: Rng) -> str:
    """A new random client secret: 30 bytes from ``rng`` as 40 URL-safe characters."""
    return _b64(rng.token_bytes(SECRET_BYTES))


def _scrypt(secret: bytes, salt: bytes, *, n: int, r: int, p: int, length: int) -> bytes:
    return hashlib.scrypt(secret, salt=salt, n=n, r=r, p=p, maxmem=_MAX_MEMORY, dklen=length)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes | None:
    if not _B64URL.match(text) or len(text) % 4 == 1:
        return None
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        return None
