"""RSA-AES key wrap: how a released key travels to the environment that asked for it.

Secure key release (``vault/service/release.py``) wraps the key material for the RSA public
key an attestation token carries, with PKCS#11's ``CKM_RSA_AES_KEY_WRAP`` construction (PKCS#11
v2.40 section 2.1.21, the same one Key Vault's BYOK and release use)::

    wrapped = RSA-OAEP(public key, hash H, MGF1-H, no label)(K)    (modulus-length bytes)
            | AES-KWP(K, key material)                             (RFC 5649, with padding)

where ``K`` is a fresh 256-bit AES key drawn for this one wrap. The three names a release
request may give (``enc``, Key Vault's ``KeyExportEncryptionAlgorithm``) differ only in ``H``:

=========================  ========
enc                        H
=========================  ========
``CKM_RSA_AES_KEY_WRAP``   SHA-1
``RSA_AES_KEY_WRAP_256``   SHA-256
``RSA_AES_KEY_WRAP_384``   SHA-384
=========================  ========

The key material is what a key version seals at rest (``crypto.key_material``): PKCS#8 DER for
RSA and EC keys, the raw AES key for oct-HSM. The receiver splits the blob after the first
modulus-length bytes, decrypts ``K`` with its private key and unwraps the rest.

``K`` is the caller's (the vault draws it from its injected ``Rng``), so a wrap is reproducible
in tests. Unwrapping (used by tests and tools) accepts a ``K`` of 16, 24 or 32 bytes and raises
``DecryptionFailed()`` for anything that does not open, saying nothing more.
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
    "AES_KEY_BYTES",
    "MIN_RSA_BITS",
    "RsaAesWrapAlgorithm",
    "parse_rsa_aes_wrap_algorithm",
    "rsa_aes_unwrap",
    "rsa_aes_wrap",
]

AES_KEY_BYTES = 32  # the temporary AES key of every wrap: AES-256
MIN_RSA_BITS = 2048  # the smallest public key a key is wrapped for


class RsaAesWrapAlgorithm(StrEnum):
    CKM_RSA_AES_KEY_WRAP = "CKM_RSA_AES_KEY_WRAP"
    RSA_AES_KEY_WRAP_256 = "RSA_AES_KEY_WRAP_256"
    RSA_AES_KEY_WRAP_384 = "RSA_AES_KEY_WRAP_384"


_HASHES: dict[RsaAesWrapAlgorithm, type[hashes.HashAlgorithm]] = {
    RsaAesWrapAlgorithm.CKM_RSA_AES_KEY_WRAP: hashes.SHA1,
    RsaAesWrapAlgorithm.RSA_AES_KEY_WRAP_256: hashes.SHA256,
    RsaAesWrapAlgorithm.RSA_AES_KEY_WRAP_384: hashes.SHA384,
}


def parse_rsa_aes_wrap_algorithm(name: object) -> RsaAesWrapAlgorithm:
    """The algorithm named ``name`` (exact spelling); ``ValueError`` naming the supported ones."""
    if isinstance(name, str):
        for algorithm in RsaAesWrapAlgorithm:
            if algorithm.value == name:
                return algorithm
    supported = ", ".join(alg.value for alg in RsaAesWrapAlgorithm)
    raise ValueError(f"unsupported key export algorithm {name!r}; supported: {supported}")


def _oaep(algorithm: RsaAesWrapAlgorithm) -> padding.OAEP:
    digest = _HASHES[algorithm]()
    return padding.OAEP(mgf=padding.MGF1(digest), algorithm=digest, label=None)


def rsa_aes_wrap(
    public_key: RSAPublicKey,
    key_material: bytes,
    algorithm: RsaAesWrapAlgorithm | str,
    aes_key: bytes,
) -> bytes:
    """``RSA-OAEP(aes_key) | AES-KWP(aes_key, key_material)`` (see the module docstring)."""
    alg = parse_rsa_aes_wrap_algorithm(algorithm)
    if len(aes_key) != AES_KEY_BYTES:
        raise ValueError(f"the temporary AES key is {AES_KEY_BYTES} bytes, got {len(aes_key)}")
    if public_key.key_size < MIN_RSA_BITS:
        raise ValueError(
            f"the RSA key to wrap for is {public_key.key_size} bits; at least {MIN_RSA_BITS} "
            "are needed"
        )
    if not key_material:
        raise ValueError("the key material to wrap must not be empty")
    encrypted_key = public_key.encrypt(aes_key, _oaep(alg))
    return encrypted_key + aes_key_wrap_with_padding(aes_key, key_material)


def rsa_aes_unwrap(
    private_key: RSAPrivateKey, wrapped: bytes, algorithm: RsaAesWrapAlgorithm | str
) -> bytes:
    """The key material of an ``rsa_aes_wrap`` blob made for ``private_key``'s public key."""
    alg = parse_rsa_aes_wrap_algorithm(algorithm)
    modulus_bytes = (private_key.key_size + 7) // 8
    if len(wrapped) < modulus_bytes + 16:
        raise DecryptionFailed()
    try:
        aes_key = private_key.decrypt(wrapped[:modulus_bytes], _oaep(alg))
    except ValueError:
        raise DecryptionFailed() from None
    if len(aes_key) not in (16, 24, 32):
        raise DecryptionFailed()
    try:
        return aes_key_unwrap_with_padding(aes_key, wrapped[modulus_bytes:])
    except (InvalidUnwrap, ValueError):
        raise DecryptionFailed() from None
