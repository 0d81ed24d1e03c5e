"""The release tag of a key version: whether it is exportable, and its release policy, bound to
the master key.

A key version's ``exportable`` flag and release policy sit in the clear in ``key_versions``.
Together they decide whether the vault hands the private key out (secure key release), so
someone who can write the database but does not hold ``master.key`` must not be able to make
a key exportable, loosen its policy or clear its ``immutable`` flag. The release tag is an HMAC
over them, under a key derived from the master key like the public-key tag
(``crypto.key_binding``) but with its own salt and info, so neither tag can stand in for the
other::

    tag_key = HKDF-SHA256(ikm=master_key, salt=b"customerkey/release-tag",
                          info=b"customerkey key-version release tag key v1", length=32)

    msg = b"CKRT" | format u8 = 1
        | u32 len | vault id | u32 len | key id | u32 len | version   (UTF-8, as stored)
        | u8 exportable (0 or 1)
        | u8 has policy (0 or 1)
        | u32 len | policy content type (UTF-8; empty without a policy)
        | u32 len | policy data (the policy's bytes as given; empty without a policy)
        | u8 immutable (0 or 1; 0 without a policy)

    release_tag = 0x01 | HMAC-SHA256(key=tag_key, msg=msg)

Every variable field is length-prefixed, so no two different tuples share a message; the ids
bind the tag to one version of one key in one vault. Like all of ``crypto`` this module
imports nothing of ours.
"""

from __future__ import annotations

import hashlib
import hmac
import struct

from cryptography.hazmat.primitives.hashes import SHA256
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

__all__ = [
    "RELEASE_TAG_BYTES",
    "derive_release_tag_key",
    "release_tag",
    "release_tag_matches",
    "release_tag_message",
]

RELEASE_TAG_FORMAT = 1
RELEASE_TAG_MAGIC = b"CKRT"
RELEASE_TAG_SALT = b"customerkey/release-tag"
RELEASE_TAG_INFO = b"customerkey key-version release tag key v1"
RELEASE_TAG_BYTES = 1 + hashlib.sha256().digest_size
_LENGTH = struct.Struct(">I")


def derive_release_tag_key(master_key: bytes) -> bytes:
    """The 32-byte HMAC key of release tags, derived from the master key (never stored)."""
    if len(master_key) != 32:
        raise ValueError(f"master key must be 32 bytes, got {len(master_key)}")
    return HKDF(algorithm=SHA256(), length=32, salt=RELEASE_TAG_SALT, info=RELEASE_TAG_INFO).derive(
        master_key
    )


def _field(data: bytes) -> bytes:
    return _LENGTH.pack(len(data)) + data


def release_tag_message(
    *,
    vault_id: str,
    key_id: str,
    version: str,
    exportable: bool,
    policy: tuple[str, bytes, bool] | None,
) -> bytes:
    """The exact bytes the tag is computed over; ``policy`` is (content type, data,
    immutable) or None."""
    content_type, data, immutable = policy if policy is not None else ("", b"", False)
    return (
        RELEASE_TAG_MAGIC
        + bytes([RELEASE_TAG_FORMAT])
        + _field(vault_id.encode("utf-8"))
        + _field(key_id.encode("utf-8"))
        + _field(version.encode("utf-8"))
        + bytes([int(bool(exportable)), int(policy is not None)])
        + _field(content_type.encode("utf-8"))
        + _field(bytes(data))
        + bytes([int(bool(immutable))])
    )


def release_tag(
    tag_key: bytes,
    *,
    vault_id: str,
    key_id: str,
    version: str,
    exportable: bool,
    policy: tuple[str, bytes, bool] | None,
) -> bytes:
    """The 33-byte tag binding these release settings to this version under ``tag_key``."""
    message = release_tag_message(
        vault_id=vault_id, key_id=key_id, version=version, exportable=exportable, policy=policy
    )
    return bytes([RELEASE_TAG_FORMAT]) + hmac.new(tag_key, message, hashlib.sha256).digest()


def release_tag_matches(
    tag_key: bytes,
    tag: bytes | None,
    *,
    vault_id: str,
    key_id: str,
    version: str,
    exportable: bool,
    policy: tuple[str, bytes, bool] | None,
) -> bool:
    """Whether ``tag`` is this version's tag for these settings (constant time); False for no
    tag."""
    if tag is None:
        return False
    expected = release_tag(
        tag_key,
        vault_id=vault_id,
        key_id=key_id,
        version=version,
        exportable=exportable,
        policy=policy,
    )
    return hmac.compare_digest(expected, bytes(tag))
