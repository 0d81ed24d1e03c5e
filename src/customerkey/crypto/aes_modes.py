"""AES under an ``oct-HSM`` key, with the algorithms and field names of Managed HSM.

=============================  =========================================================
alg                            what it is (key size must match: A128* needs 16 bytes, ...)
=============================  =========================================================
A128KW, A192KW, A256KW         AES key wrap, RFC 3394 (no padding; the wrapped key is a
                               multiple of 8 bytes, at least 16; output is 8 bytes longer)
A128GCM, A192GCM, A256GCM      AES-GCM (NIST SP 800-38D): 12-byte ``iv``, 16-byte ``tag``
                               returned apart from the ciphertext, optional ``aad``
A128CBC, A192CBC, A256CBC      AES-CBC (SP 800-38A), no padding: plaintext a multiple of
                               16 bytes; 16-byte ``iv``
A128CBCPAD, ..., A256CBCPAD    AES-CBC with PKCS#7 padding (RFC 5652 section 6.3)
CKM_AES_KEY_WRAP               RFC 3394 under a key of any of the three sizes (PKCS#11 name)
CKM_AES_KEY_WRAP_PAD           AES key wrap with padding, RFC 5649, any key size; wraps a key
                               of any length from 1 byte
=============================  =========================================================

On the wire (keys.json ``KeyOperationsParameters`` / ``KeyOperationResult``) every byte field
is base64url: ``value`` (plaintext or ciphertext, without the tag), ``iv``, ``aad`` (the
additional authenticated data; the SDKs call it ``additional_authenticated_data``) and ``tag``.
This module takes and returns raw bytes; the IV is the caller's (the vault draws it from its
injected ``Rng`` when the request carries none).

A ciphertext that does not open (wrong key, tampered ciphertext, tag, IV or AAD, bad PKCS#7
padding, a KW integrity check that fails) raises ``DecryptionFailed()`` and says nothing
more. Caller mistakes (wrong key length for the algorithm, IV of the wrong length, a CBC
plaintext that is not whole blocks) raise ``ValueError``.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import padding as sym_padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.keywrap import (
    InvalidUnwrap,
    aes_key_unwrap,
    aes_key_unwrap_with_padding,
    aes_key_wrap,
    aes_key_wrap_with_padding,
)

from customerkey.errors import DecryptionFailed

__all__ = [
    "AES_KEY_SIZES",
    "CBC_IV_SIZE",
    "GCM_IV_SIZE",
    "GCM_TAG_SIZE",
    "AesAlgorithm",
    "AesInfo",
    "aes_cbc_decrypt",
    "aes_cbc_encrypt",
    "aes_gcm_decrypt",
    "aes_gcm_encrypt",
    "aes_info",
    "aes_kw_unwrap",
    "aes_kw_wrap",
    "aes_kwp_unwrap_any",
    "aes_kwp_wrap_any",
    "parse_aes_algorithm",
]

AES_KEY_SIZES = (128, 192, 256)  # bits, as ``key_size`` names them
GCM_IV_SIZE = 12
GCM_TAG_SIZE = 16
CBC_IV_SIZE = 16
_BLOCK = 16


class AesAlgorithm(StrEnum):
    A128KW = "A128KW"
    A192KW = "A192KW"
    A256KW = "A256KW"
    A128GCM = "A128GCM"
    A192GCM = "A192GCM"
    A256GCM = "A256GCM"
    A128CBC = "A128CBC"
    A192CBC = "A192CBC"
    A256CBC = "A256CBC"
    A128CBCPAD = "A128CBCPAD"
    A192CBCPAD = "A192CBCPAD"
    A256CBCPAD = "A256CBCPAD"
    CKM_AES_KEY_WRAP = "CKM_AES_KEY_WRAP"
    CKM_AES_KEY_WRAP_PAD = "CKM_AES_KEY_WRAP_PAD"


@dataclass(frozen=True)
class AesInfo:
    mode: str  # "KW", "KWP", "GCM", "CBC" or "CBCPAD"
    key_bits: int | None  # None: any AES key size (the CKM_* algorithms)

    @property
    def wraps(self) -> bool:
        """KW and KWP are for wrapKey/unwrapKey; the others for encrypt/decrypt."""
        return self.mode in ("KW", "KWP")


def aes_info(alg: AesAlgorithm | str) -> AesInfo:
    algorithm = parse_aes_algorithm(alg)
    if algorithm is AesAlgorithm.CKM_AES_KEY_WRAP:
        return AesInfo(mode="KW", key_bits=None)
    if algorithm is AesAlgorithm.CKM_AES_KEY_WRAP_PAD:
        return AesInfo(mode="KWP", key_bits=None)
    name = algorithm.value
    return AesInfo(mode=name[4:], key_bits=int(name[1:4]))


def parse_aes_algorithm(name: object) -> AesAlgorithm:
    """The algorithm named ``name`` (exact, case-sensitive)."""
    try:
        if not isinstance(name, str):
            raise ValueError(name)
        return AesAlgorithm(name)
    except ValueError:
        supported = ", ".join(alg.value for alg in AesAlgorithm)
        raise ValueError(f"unsupported AES algorithm {name!r}; supported: {supported}") from None


def aes_kw_wrap(key: bytes, plaintext_key: bytes) -> bytes:
    """RFC 3394 wrap of ``plaintext_key`` (16 bytes or more, whole 8-byte blocks)."""
    _check_key(key)
    if len(plaintext_key) < 16 or len(plaintext_key) % 8:
        raise ValueError(
            "AES key wrap (RFC 3394) wraps a key of 16 bytes or more in whole 8-byte blocks; "
            f"the key given is {len(plaintext_key)} bytes"
        )
    return aes_key_wrap(key, plaintext_key)


def aes_kw_unwrap(key: bytes, wrapped: bytes) -> bytes:
    """RFC 3394 unwrap; ``DecryptionFailed`` when the integrity check fails."""
    _check_key(key)
    try:
        return aes_key_unwrap(key, wrapped)
    except (InvalidUnwrap, ValueError):
        raise DecryptionFailed() from None


def aes_kwp_wrap_any(key: bytes, plaintext_key: bytes) -> bytes:
    """RFC 5649 wrap (with padding) of a key of 1 byte or more, under an AES key of any size."""
    _check_key(key)
    if not plaintext_key:
        raise ValueError("the key to wrap must not be empty")
    return aes_key_wrap_with_padding(key, plaintext_key)


def aes_kwp_unwrap_any(key: bytes, wrapped: bytes) -> bytes:
    """RFC 5649 unwrap; ``DecryptionFailed`` when the integrity check fails."""
    _check_key(key)
    try:
        return aes_key_unwrap_with_padding(key, wrapped)
    except (InvalidUnwrap, ValueError):
        raise DecryptionFailed() from None


def aes_gcm_encrypt(
    key: bytes, plaintext: bytes, iv: bytes, aad: bytes | None = None
) -> tuple[bytes, bytes]:
    """(ciphertext, 16-byte tag) of ``plaintext`` under ``key`` with a 12-byte ``iv``."""
    _check_key(key)
    _check_iv(iv, GCM_IV_SIZE, "GCM")
    sealed = AESGCM(key).encrypt(iv, plaintext, aad or None)
    return sealed[:-GCM_TAG_SIZE], sealed[-GCM_TAG_SIZE:]


def aes_gcm_decrypt(
    key: bytes, ciphertext: bytes, iv: bytes, tag: bytes, aad: bytes | None = None
) -> bytes:
    """The plaintext, or ``DecryptionFailed`` when the tag does not authenticate."""
    _check_key(key)
    _check_iv(iv, GCM_IV_SIZE, "GCM")
    if len(tag) != GCM_TAG_SIZE:
        raise ValueError(f"the AES-GCM tag is {GCM_TAG_SIZE} bytes, got {len(tag)}")
    try:
        return AESGCM(key).decrypt(iv, ciphertext + tag, aad or None)
    except InvalidTag:
        raise DecryptionFailed() from None


def aes_cbc_encrypt(key: bytes, plaintext: bytes, iv: bytes, *, pad: bool) -> bytes:
    """AES-CBC under ``key`` with a 16-byte ``iv``; PKCS#7 padding when ``pad``."""
    _check_key(key)
    _check_iv(iv, CBC_IV_SIZE, "CBC")
    if pad:
        padder = sym_padding.PKCS7(128).padder()
        plaintext = padder.update(plaintext) + padder.finalize()
    elif not plaintext or len(plaintext) % _BLOCK:
        raise ValueError(
            "AES-CBC without padding encrypts whole 16-byte blocks (one or more); the plaintext is "
            f"{len(plaintext)} bytes (use the CBCPAD algorithm for other lengths)"
        )
    encryptor = Cipher(algorithms.AES(key), modes.CBC(iv)).encryptor()
    return encryptor.update(plaintext) + encryptor.finalize()


def aes_cbc_decrypt(key: bytes, ciphertext: bytes, iv: bytes, *, pad: bool) -> bytes:
    """The plaintext of an AES-CBC ciphertext; with ``pad``, PKCS#7 padding is removed."""
    _check_key(key)
    _check_iv(iv, CBC_IV_SIZE, "CBC")
    if not ciphertext or len(ciphertext) % _BLOCK:
        raise DecryptionFailed()
    decryptor = Cipher(algorithms.AES(key), modes.CBC(iv)).decryptor()
    plaintext = decryptor.update(ciphertext) + decryptor.finalize()
    if not pad:
        return plaintext
    unpadder = sym_padding.PKCS7(128).unpadder()
    try:
        return unpadder.update(plaintext) + unpadder.finalize()
    except ValueError:
        raise DecryptionFailed() from None


def _check_key(key: bytes) -> None:
    if not isinstance(key, bytes | bytearray):
        raise TypeError(f"key must be bytes, got {type(key).__name__}")
    if len(key) * 8 not in AES_KEY_SIZES:
        raise ValueError(f"an AES key is 16, 24 or 32 bytes, got {len(key)}")


def _check_iv(iv: bytes, size: int, mode: str) -> None:
    if len(iv) != size:
        raise ValueError(f"the AES-{mode} iv is {size} bytes, got {len(iv)}")
