"""The public-key tag of a vault key version: its public half bound to the master key.

Each key version stores its public key (``n``, ``e``) in the clear and its private key sealed
under the installation's master key. The sealed half is authenticated (``crypto.aead``); this
module authenticates the clear half, so that someone who can write the database but does not
hold ``master.key`` cannot swap a version's public key for their own (clients that wrap
locally would then wrap their data keys for the attacker).

The tag key is derived from the 32-byte master key with HKDF-SHA256 (RFC 5869)::

    tag_key = HKDF-SHA256(ikm=master_key, salt=b"customerkey/public-key-tag",
                          info=b"customerkey key-version public-key tag key v1", length=32)

The tagged message is a versioned, length-prefixed encoding (integers big-endian)::

    msg = b"CKPT" | format u8 = 1
        | u32 len | vault id     (UTF-8; the vault row's id, as stored)
        | u32 len | key id       (UTF-8; the key row's id, as stored)
        | u32 len | version      (UTF-8; the 32-hex version string, as stored)
        | u32 len | kty          (UTF-8; "RSA" or "RSA-HSM", as stored)
        | u32 len | n            (the modulus: unsigned, minimal big-endian, no leading 0x00)
        | u32 len | e            (the public exponent: same encoding)

and the stored tag is the format byte followed by the full MAC (33 bytes)::

    public_tag = 0x01 | HMAC-SHA256(key=tag_key, msg=msg)

Every field is length-prefixed, so no two different tuples encode to the same message; the ids
bind the tag to one version of one key in one vault (a tag copied onto another row does not
verify). ``n`` and ``e`` are what the JWK members carry (RFC 7518 section 6.3.1: the minimal
big-endian bytes, base64url-encoded), so the tag covers exactly the key a client is served.

Key types other than RSA (EC, oct-HSM) use format 2, which binds named members instead of
``n`` and ``e``::

    msg = b"CKPT" | format u8 = 2
        | u32 len | vault id | u32 len | key id | u32 len | version | u32 len | kty
        | u32 count | (u32 len | member name | u32 len | member value) * count, by name

    public_tag = 0x02 | HMAC-SHA256(key=tag_key, msg=msg)

An EC version binds ``crv`` (UTF-8) and ``x``, ``y`` (the raw fixed-length coordinates); an
oct-HSM version, which serves no public key, binds ``key_size`` (its bits, decimal ASCII), so
its type and size cannot be changed behind the master key's back either.

Like all of ``crypto`` this module imports nothing of ours.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import struct
from collections.abc import Mapping

from cryptography.hazmat.primitives.hashes import SHA256
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

TAG_FORMAT = 1
TAG_MAGIC = b"CKPT"
TAG_KEY_SALT = b"customerkey/public-key-tag"
TAG_KEY_INFO = b"customerkey key-version public-key tag key v1"
TAG_BYTES = 1 + hashlib.sha256().digest_size  # format byte + HMAC-SHA256
_LENGTH = struct.Struct(">I")
_B64URL = re.compile(r"[A-Za-z0-9_-]+")


def derive_tag_key(master_key: bytes) -> bytes:
    """The 32-byte HMAC key of public-key tags, derived from the master key (never stored)."""
    if len(master_key) != 32:
        raise ValueError(f"master key must be 32 bytes, got {len(master_key)}")
    return HKDF(algorithm=SHA256(), length=32, salt=TAG_KEY_SALT, info=TAG_KEY_INFO).derive(
        master_key
    )


def int_to_bytes(value: int) -> bytes:
    """``value`` as unsigned, minimal big-endian bytes (what a JWK member holds)."""
    if value <= 0:
        raise ValueError("RSA public key integers are positive")
    return value.to_bytes((value.bit_length() + 7) // 8, "big")


def jwk_member_to_int(text: str) -> int:
    """The integer a stored JWK member (``n`` or ``e``) holds, accepting only its canonical
    form: unpadded base64url of minimal big-endian bytes. ``ValueError`` for anything else, so
    the text served is exactly the text of the tagged integer."""
    if not isinstance(text, str) or not _B64URL.fullmatch(text) or len(text) % 4 == 1:
        raise ValueError("not canonical base64url")
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise ValueError("not canonical base64url") from None
    if not raw or raw[0] == 0:
        raise ValueError("not a minimal big-endian integer")
    if base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii") != text:
        raise ValueError("not canonical base64url")
    return int.from_bytes(raw, "big")


def _field(data: bytes) -> bytes:
    return _LENGTH.pack(len(data)) + data


def tag_message(*, vault_id: str, key_id: str, version: str, kty: str, n: int, e: int) -> bytes:
    """The exact bytes the tag is computed over (see the module docstring)."""
    return (
        TAG_MAGIC
        + bytes([TAG_FORMAT])
        + _field(vault_id.encode("utf-8"))
        + _field(key_id.encode("utf-8"))
        + _field(version.encode("utf-8"))
        + _field(kty.encode("utf-8"))
        + _field(int_to_bytes(n))
        + _field(int_to_bytes(e))
    )


def public_tag(
    tag_key: bytes, *, vault_id: str, key_id: str, version: str, kty: str, n: int, e: int
) -> bytes:
    """The 33-byte tag binding this public key to this version under ``tag_key``."""
    message = tag_message(vault_id=vault_id, key_id=key_id, version=version, kty=kty, n=n, e=e)
    return bytes([TAG_FORMAT]) + hmac.new(tag_key, message, hashlib.sha256).digest()


TAG_FORMAT_MEMBERS = 2


def tag_message_members(
    *, vault_id: str, key_id: str, version: str, kty: str, members: Mapping[str, bytes]
) -> bytes:
    """The exact bytes a format-2 tag is computed over (see the module docstring)."""
    parts = [
        TAG_MAGIC,
        bytes([TAG_FORMAT_MEMBERS]),
        _field(vault_id.encode("utf-8")),
        _field(key_id.encode("utf-8")),
        _field(version.encode("utf-8")),
        _field(kty.encode("utf-8")),
        _LENGTH.pack(len(members)),
    ]
    for name in sorted(members):
        parts.append(_field(name.encode("utf-8")) + _field(bytes(members[name])))
    return b"".join(parts)


def public_tag_members(
    tag_key: bytes,
    *,
    vault_id: str,
    key_id: str,
    version: str,
    kty: str,
    members: Mapping[str, bytes],
) -> bytes:
    """The 33-byte format-2 tag binding these members to this version under ``tag_key``."""
    message = tag_message_members(
        vault_id=vault_id, key_id=key_id, version=version, kty=kty, members=members
    )
    return bytes([TAG_FORMAT_MEMBERS]) + hmac.new(tag_key, message, hashlib.sha256).digest()


def public_tag_members_match(
    tag_key: bytes,
    tag: bytes,
    *,
    vault_id: str,
    key_id: str,
    version: str,
    kty: str,
    members: Mapping[str, bytes],
) -> bool:
    """Whether ``tag`` is this version's format-2 tag for these members (constant time)."""
    expected = public_tag_members(
        tag_key, vault_id=vault_id, key_id=key_id, version=version, kty=kty, members=members
    )
    return hmac.compare_digest(expected, bytes(tag))


def public_tag_matches(
    tag_key: bytes,
    tag: bytes,
    *,
    vault_id: str,
    key_id: str,
    version: str,
    kty: str,
    n: int,
    e: int,
) -> bool:
    """Whether ``tag`` is this version's tag for this public key (in constant time)."""
    expected = public_tag(
        tag_key, vault_id=vault_id, key_id=key_id, version=version, kty=kty, n=n, e=e
    )
    return hmac.compare_digest(expected, bytes(tag))
