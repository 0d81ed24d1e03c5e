"""RSA keys: generation, PKCS#8 serialization and JSON Web Key (JWK) fields.

This module owns how the vault's RSA keys are made and turned into bytes. Private keys are
serialized as unencrypted PKCS#8 DER; callers seal that with the envelope (``crypto.aead``)
before it touches storage. JWK fields follow RFC 7518 section 6.3 as Azure Key Vault uses
them: each integer is its minimal big-endian bytes, base64url-encoded without padding.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey, RSAPublicKey

__all__ = [
    "RSA_KEY_SIZES",
    "b64url_decode",
    "b64url_encode",
    "generate_rsa_key",
    "private_jwk_fields",
    "private_key_from_der",
    "private_key_from_jwk",
    "private_key_to_der",
    "public_jwk_fields",
    "public_key_from_jwk",
]

RSA_KEY_SIZES = (2048, 3072, 4096)
_PUBLIC_EXPONENTS = (65537, 3)
_B64URL = re.compile(r"[A-Za-z0-9_-]*")
_PRIVATE_REQUIRED = ("n", "e", "d", "p", "q")
_KTYS = ("RSA", "RSA-HSM")


def generate_rsa_key(size: int, public_exponent: int = 65537) -> RSAPrivateKey:
    """A new RSA private key of ``size`` bits (2048, 3072 or 4096)."""
    if size not in RSA_KEY_SIZES:
        raise ValueError(f"RSA key size must be one of 2048, 3072, 4096, got {size!r}")
    if public_exponent not in _PUBLIC_EXPONENTS or isinstance(public_exponent, bool):
        raise ValueError(f"public_exponent must be 65537 or 3, got {public_exponent!r}")
    return rsa.generate_private_key(public_exponent=public_exponent, key_size=size)


def private_key_to_der(key: RSAPrivateKey) -> bytes:
    """Unencrypted PKCS#8 DER; seal it with the envelope before storing it."""
    return key.private_bytes(
        encoding=serialization.Encoding.DER,
        format=serialization.PrivateFormat.PKCS8,
        encryption_algorithm=serialization.NoEncryption(),
    )


def private_key_from_der(data: bytes) -> RSAPrivateKey:
    """Load an unencrypted PKCS#8 (or PKCS#1) DER RSA private key."""
    try:
        key = serialization.load_der_private_key(data, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise ValueError("not a valid unencrypted DER private key") from None
    if not isinstance(key, RSAPrivateKey):
        raise ValueError("DER private key is not an RSA key")
    return key


def b64url_encode(data: bytes) -> str:
    """base64url without padding (RFC 7515 section 2)."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    """Decode base64url, with or without padding; ``ValueError`` if it is not base64url."""
    if not isinstance(text, str):
        raise ValueError(f"base64url value must be a string, got {type(text).__name__}")
    unpadded = text.rstrip("=")
    missing = -len(unpadded) % 4
    padding = len(text) - len(unpadded)
    if missing == 3 or padding not in (0, missing) or not _B64URL.fullmatch(unpadded):
        raise ValueError("invalid base64url value")
    padded = unpadded + "=" * missing
    try:
        return base64.b64decode(padded, altchars=b"-_", validate=True)
    except binascii.Error:
        raise ValueError("invalid base64url value") from None


def public_jwk_fields(public_key: RSAPublicKey) -> dict[str, str]:
    """The public JWK members ``{"n", "e"}`` of ``public_key``."""
    numbers = public_key.public_numbers()
    return {"n": _int_to_b64url(numbers.n), "e": _int_to_b64url(numbers.e)}


def private_jwk_fields(private_key: RSAPrivateKey) -> dict[str, str]:
    """All JWK members of ``private_key``: n, e, d, p, q, dp, dq, qi."""
    numbers = private_key.private_numbers()
    fields = public_jwk_fields(private_key.public_key())
    fields.update(
        d=_int_to_b64url(numbers.d),
        p=_int_to_b64url(numbers.p),
        q=_int_to_b64url(numbers.q),
        dp=_int_to_b64url(numbers.dmp1),
        dq=_int_to_b64url(numbers.dmq1),
        qi=_int_to_b64url(numbers.iqmp),
    )
    return fields


def public_key_from_jwk(jwk: Mapping[str, object]) -> RSAPublicKey:
    """An RSA public key from JWK members ``n`` and ``e`` (other members are ignored)."""
    _check_kty(jwk)
    n = _jwk_int(jwk, "n")
    e = _jwk_int(jwk, "e")
    _check_public(n, e)
    try:
        return rsa.RSAPublicNumbers(e, n).public_key()
    except ValueError as exc:
        raise ValueError(f"invalid RSA public key: {exc}") from None


def private_key_from_jwk(jwk: Mapping[str, object]) -> RSAPrivateKey:
    """An RSA private key from JWK members n, e, d, p, q (dp, dq, qi computed when absent)."""
    _check_kty(jwk)
    for name in _PRIVATE_REQUIRED:
        if name not in jwk:
            raise ValueError(f"RSA private JWK is missing required member {name!r}")
    n, e, d, p, q = (_jwk_int(jwk, name) for name in _PRIVATE_REQUIRED)
    _check_public(n, e)
    if p < 3 or q < 3 or p * q != n:
        raise ValueError("invalid RSA private key: p * q does not equal n")
    if not 1 < d < n:
        raise ValueError("invalid RSA private key: d is out of range")
    dp = _jwk_int(jwk, "dp") if "dp" in jwk else rsa.rsa_crt_dmp1(d, p)
    dq = _jwk_int(jwk, "dq") if "dq" in jwk else rsa.rsa_crt_dmq1(d, q)
    qi = _jwk_int(jwk, "qi") if "qi" in jwk else rsa.rsa_crt_iqmp(p, q)
    if dp != d % (p - 1) or dq != d % (q - 1):
        raise ValueError("invalid RSA private key: dp or dq does not match d")
    if (qi * q) % p != 1:
        raise ValueError("invalid RSA private key: qi is not the inverse of q mod p")
    numbers = rsa.RSAPrivateNumbers(
        p=p, q=q, d=d, dmp1=dp, dmq1=dq, iqmp=qi, public_numbers=rsa.RSAPublicNumbers(e, n)
    )
    try:
        return numbers.private_key()
    except ValueError as exc:
        raise ValueError(f"invalid RSA private key: {exc}") from None


def _int_to_b64url(value: int) -> str:
    return b64url_encode(value.to_bytes(max(1, (value.bit_length() + 7) // 8), "big"))


def _jwk_int(jwk: Mapping[str, object], name: str) -> int:
    if name not in jwk:
        raise ValueError(f"RSA JWK is missing required member {name!r}")
    value = jwk[name]
    if not isinstance(value, str):
        raise ValueError(f"RSA JWK member {name!r} must be a base64url string")
    try:
        raw = b64url_decode(value)
    except ValueError:
        raise ValueError(f"RSA JWK member {name!r} is not valid base64url") from None
    if not raw:
        raise ValueError(f"RSA JWK member {name!r} is empty")
    return int.from_bytes(raw, "big")


def _check_kty(jwk: Mapping[str, object]) -> None:
    kty = jwk.get("kty")
    if kty is not None and kty not in _KTYS:
        raise ValueError(f"JWK kty must be RSA or RSA-HSM, got {kty!r}")


def _check_public(n: int, e: int) -> None:
    if n.bit_length() < 1024:
        raise ValueError(f"invalid RSA public key: modulus is {n.bit_length()} bits, minimum 1024")
    if n % 2 == 0:
        raise ValueError("invalid RSA public key: modulus n is even")
    if e < 3 or e % 2 == 0 or e >= n:
        raise ValueError("invalid RSA public key: exponent e must be odd and 3 <= e < n")
