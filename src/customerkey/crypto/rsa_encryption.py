"""RSA encryption with the three algorithms Azure Key Vault names for encrypt, decrypt, wrapKey
and unwrapKey: ``RSA-OAEP-256`` (OAEP, SHA-256 and MGF1-SHA-256), ``RSA-OAEP`` (OAEP, SHA-1 and
MGF1-SHA-1) and ``RSA1_5`` (RSAES-PKCS1-v1_5, RFC 8017 section 7.2).

The OAEP variants are ``crypto.wrap``'s. ``RSA1_5`` is here for clients that still use it (the
SDKs wrap locally with whichever algorithm the caller names and then ask the vault to unwrap):
it encrypts at most ``k - 11`` bytes under a ``k``-byte modulus. Its decryption is done by
pyca/cryptography, whose OpenSSL uses implicit rejection: a ciphertext with bad padding
decrypts to bytes derived from the key and ciphertext instead of failing, so the answer gives
no padding oracle (a ciphertext that is not the modulus length still fails). Either way a
ciphertext that does not decrypt raises ``DecryptionFailed()``.
"""

from __future__ import annotations

from enum import StrEnum

from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey, RSAPublicKey

from customerkey.crypto.wrap import (
    RsaOaepAlgorithm,
    rsa_oaep_max_key_length,
    rsa_oaep_unwrap,
    rsa_oaep_wrap,
)
from customerkey.errors import DecryptionFailed

__all__ = [
    "RsaEncryptionAlgorithm",
    "parse_rsa_encryption_algorithm",
    "rsa_decrypt",
    "rsa_encrypt",
    "rsa_max_plaintext",
]


class RsaEncryptionAlgorithm(StrEnum):
    RSA_OAEP_256 = "RSA-OAEP-256"
    RSA_OAEP = "RSA-OAEP"
    RSA1_5 = "RSA1_5"


def parse_rsa_encryption_algorithm(name: object) -> RsaEncryptionAlgorithm:
    """The algorithm named ``name`` (exact, case-sensitive JWA name)."""
    try:
        if not isinstance(name, str):
            raise ValueError(name)
        return RsaEncryptionAlgorithm(name)
    except ValueError:
        supported = ", ".join(alg.value for alg in RsaEncryptionAlgorithm)
        raise ValueError(f"unsupported algorithm {name!r}; supported: {supported}") from None


def rsa_max_plaintext(key_size_bits: int, alg: RsaEncryptionAlgorithm | str) -> int:
    """The longest plaintext ``alg`` encrypts under a modulus of ``key_size_bits``."""
    algorithm = parse_rsa_encryption_algorithm(alg)
    if algorithm is RsaEncryptionAlgorithm.RSA1_5:
        return (key_size_bits + 7) // 8 - 11
    return rsa_oaep_max_key_length(key_size_bits, RsaOaepAlgorithm(algorithm.value))


def rsa_encrypt(
    public_key: RSAPublicKey, plaintext: bytes, alg: RsaEncryptionAlgorithm | str
) -> bytes:
    """Encrypt ``plaintext`` under ``public_key`` with ``alg``."""
    algorithm = parse_rsa_encryption_algorithm(alg)
    if algorithm is not RsaEncryptionAlgorithm.RSA1_5:
        return rsa_oaep_wrap(public_key, plaintext, algorithm.value)
    if not isinstance(public_key, RSAPublicKey):
        raise TypeError(f"public_key must be an RSAPublicKey, got {type(public_key).__name__}")
    limit = rsa_max_plaintext(public_key.key_size, algorithm)
    if len(plaintext) > limit:
        raise ValueError(
            f"key is {len(plaintext)} bytes; RSA1_5 with a {public_key.key_size}-bit RSA key"
            f" encrypts at most {limit} bytes"
        )
    return public_key.encrypt(bytes(plaintext), padding.PKCS1v15())


def rsa_decrypt(
    private_key: RSAPrivateKey, ciphertext: bytes, alg: RsaEncryptionAlgorithm | str
) -> bytes:
    """Decrypt ``ciphertext`` with ``private_key`` and ``alg``."""
    algorithm = parse_rsa_encryption_algorithm(alg)
    if algorithm is not RsaEncryptionAlgorithm.RSA1_5:
        return rsa_oaep_unwrap(private_key, ciphertext, algorithm.value)
    if not isinstance(private_key, RSAPrivateKey):
        raise TypeError(f"private_key must be an RSAPrivateKey, got {type(private_key).__name__}")
    if len(ciphertext) != (private_key.key_size + 7) // 8:
        raise DecryptionFailed()
    try:
        return private_key.decrypt(bytes(ciphertext), padding.PKCS1v15())
    except ValueError:
        raise DecryptionFailed() from None
