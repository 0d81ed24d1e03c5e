"""The key check value of a DEP key generation.

Owns how the service tells, after a vault has unwrapped a DEP key, whether the bytes it got
back are the generation's key: a vault that answers with a well-formed but wrong key (a
different key, a bug, a hostile or broken proxy) must be caught before the key is cached and
used, not after every read has failed to decrypt. The value is::

    key_check = HMAC-SHA256(key=dep_key, msg=b"customerkey dep-key check v1" || generation_id)[:16]

with ``generation_id`` the generation's GUID as UTF-8 text (lower-case, with dashes, as stored).
It is stored next to the wrapped copies of the generation. Binding the generation id means a
key of another generation does not pass, and 128 bits leave no room for a random key to match.
HMAC is a PRF, so the value reveals nothing about the key. Like all of ``crypto`` it imports
nothing of ours.
"""

from __future__ import annotations

import hashlib
import hmac

KEY_CHECK_LABEL = b"customerkey dep-key check v1"
KEY_CHECK_BYTES = 16
DEP_KEY_BYTES = 32


def key_check_value(dep_key: bytes, generation_id: str) -> bytes:
    """The 16-byte check value of ``dep_key`` as the key of generation ``generation_id``."""
    mac = hmac.new(dep_key, KEY_CHECK_LABEL + generation_id.encode("utf-8"), hashlib.sha256)
    return mac.digest()[:KEY_CHECK_BYTES]


def key_check_matches(dep_key: bytes, generation_id: str, expected: bytes) -> bool:
    """Whether ``dep_key`` has the check value ``expected`` (in constant time)."""
    return hmac.compare_digest(key_check_value(dep_key, generation_id), expected)
