"""Key wrapping: AES key wrap with padding (RFC 5649) and RSA-OAEP.

This module owns the two ways one key protects another in the key hierarchy: AES-KWP under a
32-byte key-encryption key (DEP key generations under the availability key, container keys
under a DEP key) and RSA-OAEP under a vault root key, with the algorithm names the Azure Key
Vault wrapKey/unwrapKey API uses. Wrapped keys carry no header of their own; the record that
stores one names the wrapping key and algorithm.

A wrapped key that fails to unwrap (wrong key, tampered, malformed) raises ``DecryptionFailed()``
and says nothing about why. Caller mistakes (a KEK of the wrong length, an unknown algorithm, a
key too long for the RSA modulus) raise ``ValueError``.
"""

from __future__ import annotations

from enum import StrEnum

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey, RSAPublicKey
from cryptography.hazmat.primitives.keywrap import (
    InvalidUnwrap,
    aes_key_unwrap_with_padding,
    aes_key_wrap_with_padding,
)

from customerkey.errors import DecryptionFailed

__all__ = [
    "KEK_SIZE",
    "RsaOaepAlgorithm",
    "aes_kwp_unwrap",
    "aes_kwp_wrap",
    "parse_rsa_algorithm",
    "rsa_oaep_max_key_length",
    "rsa_oaep_unwrap",
    "rsa_oaep_wrap",
]

KEK_SIZE = 32


class RsaOaepAlgorithm(StrEnum):
    """RSA-OAEP variants, named as in Azure Key Vault (JWA names)."""

    RSA_OAEP_256 = "RSA-OAEP-256"
    """OAEP with SHA-256 and MGF1-SHA-256; the default for new wraps."""
    RSA_OAEP = "RSA-OAEP"
    """OAEP with SHA-1 and MGF1-SHA-1; accepted for Key Vault clients that still use it."""


def parse_rsa_algorithm(name: str) -> RsaOaepAlgorithm:
    """The algorithm named ``name`` (exact, case-sensitive JWA name)."""
    try:
        return RsaOaepAlgorithm(name)
    except ValueError:
        supported = ", ".join(alg.value for alg in RsaOaepAlgorithm)
        raise ValueError(f"unsupported algorithm {name!r}; supported: {supported}") from None


def aes_kwp_wrap(kek: bytes, key: bytes) -> bytes:
    """Wrap ``key`` (1 byte or more) under the 32-byte ``kek`` with RFC 5649."""
    _check_kek(kek)
    return _kwp_wrap(kek, key)


def aes_kwp_unwrap(kek: bytes, wrapped: bytes) -> bytes:
    """Unwrap an RFC 5649 ``wrapped`` key under the 32-byte ``kek``."""
    _check_kek(kek)
    return _kwp_unwrap(kek, wrapped)


def rsa_oaep_max_key_length(key_size_bits: int, alg: RsaOaepAlgorithm | str) -> int:
    """The longest key RSA-OAEP can wrap under a modulus of ``key_size_bits``."""
    return (key_size_bits + 7) // 8 - 2 * _hash_for(alg).digest_size - 2


def rsa_oaep_wrap(public_key: RSAPublicKey, key: bytes, alg: RsaOaepAlgorithm | str) -> bytes:
    """Wrap ``key`` under ``public_key`` with RSA-OAEP ``alg``."""
    algorithm = parse_rsa_algorithm(alg)
    if not isinstance(public_key, RSAPublicKey):
        raise TypeError(f"public_key must be an RSAPublicKey, got {type(public_key).__name__}")
    _check_bytes("key", key)
    limit = rsa_oaep_max_key_length(public_key.key_size, algorithm)
    if len(key) > limit:
        raise ValueError(
            f"key is {len(key)} bytes; {algorithm.value} with a {public_key.key_size}-bit"
            f" RSA key wraps at most {limit} bytes"
        )
    return public_key.encrypt(key, _oaep(algorithm))


def rsa_oaep_unwrap(
    private_key: RSAPrivateKey, wrapped: bytes, alg: RsaOaepAlgorithm | str
) -> bytes:
    """Unwrap ``wrapped`` with ``private_key`` and RSA-OAEP ``alg``."""
    algorithm = parse_rsa_algorithm(alg)
    if not isinstance(private_key, RSAPrivateKey):
        raise TypeError(f"private_key must be an RSAPrivateKey, got {type(private_key).__name__}")
    _check_bytes("wrapped", wrapped)
    try:
        return private_key.decrypt(wrapped, _oaep(algorithm))
    except ValueError:
        # Wrong key, bad padding and a ciphertext of the wrong length all land here alike.
        raise DecryptionFailed() from None


def _kwp_wrap(kek: bytes, key: bytes) -> bytes:
    """RFC 5649 wrap under an AES key of any size (the public API insists on 32 bytes)."""
    _check_bytes("key", key)
    if not key:
        raise ValueError("key must not be empty")
    return aes_key_wrap_with_padding(kek, key)


def _kwp_unwrap(kek: bytes, wrapped: bytes) -> bytes:
    """RFC 5649 unwrap under an AES key of any size (the public API insists on 32 bytes)."""
    _check_bytes("wrapped", wrapped)
    try:
        return aes_key_unwrap_with_padding(kek, wrapped)
    except (InvalidUnwrap, ValueError):
        # ValueError covers wrapped lengths RFC 5649 cannot produce; that is tampering too.
        raise DecryptionFailed() from None


def _hash_for(alg: RsaOaepAlgorithm | str) -> hashes.HashAlgorithm:
    if parse_rsa_algorithm(alg) is RsaOaepAlgorithm.RSA_OAEP_256:
        return hashes.SHA256()
    return hashes.SHA1()


def _oaep(alg: RsaOaepAlgorithm) -> padding.OAEP:
    algorithm = _hash_for(alg)
    return padding.OAEP(mgf=padding.MGF1(algorithm=algorithm), algorithm=algorithm, label=None)


def _check_kek(kek: bytes) -> None:
    _check_bytes("kek", kek)
    if len(kek) != KEK_SIZE:
        raise ValueError(f"kek must be {KEK_SIZE} bytes, got {len(kek)}")


def _check_bytes(name: str, value: bytes) -> None:
    if not isinstance(value, bytes | bytearray):
        raise TypeError(f"{name} must be bytes, got {type(value).__name__}")
