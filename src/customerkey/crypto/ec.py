"""Elliptic-curve keys: generation, PKCS#8 serialization and JSON Web Key (JWK) fields.

The curves are the four Azure Key Vault and Managed HSM name (``JsonWebKeyCurveName``):

=========  ====================  =====================  ==========================
``crv``    curve                 coordinate / ``d``     signature (``r || s``)
=========  ====================  =====================  ==========================
P-256      NIST P-256 secp256r1  32 bytes               64 bytes (ES256)
P-256K     SECG secp256k1        32 bytes               64 bytes (ES256K)
P-384      NIST P-384 secp384r1  48 bytes               96 bytes (ES384)
P-521      NIST P-521 secp521r1  66 bytes               132 bytes (ES512)
=========  ====================  =====================  ==========================

JWK members follow RFC 7518 section 6.2: ``x``, ``y`` and ``d`` are unsigned big-endian
integers, base64url without padding, each exactly the curve's coordinate size (leading zero
bytes kept). Imports also accept shorter members (some encoders strip leading zeros) and pad
them; longer ones are refused. Private keys are serialized as unencrypted PKCS#8 DER, which
the caller seals before it touches storage, exactly like RSA keys (``crypto.rsa``).
"""

from __future__ import annotations

from collections.abc import Mapping

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from customerkey.crypto.rsa import b64url_decode, b64url_encode

__all__ = [
    "EC_CURVES",
    "coordinate_size",
    "curve_bits",
    "curve_name",
    "ec_private_jwk_fields",
    "ec_private_key_from_der",
    "ec_private_key_from_jwk",
    "ec_private_key_to_der",
    "ec_public_jwk_fields",
    "ec_public_key_from_jwk",
    "generate_ec_key",
    "parse_curve",
]

_CURVES: dict[str, type[ec.EllipticCurve]] = {
    "P-256": ec.SECP256R1,
    "P-256K": ec.SECP256K1,
    "P-384": ec.SECP384R1,
    "P-521": ec.SECP521R1,
}
EC_CURVES: tuple[str, ...] = tuple(_CURVES)
_BITS = {"P-256": 256, "P-256K": 256, "P-384": 384, "P-521": 521}
_BY_OPENSSL_NAME = {
    "secp256r1": "P-256",
    "secp256k1": "P-256K",
    "secp384r1": "P-384",
    "secp521r1": "P-521",
}
_KTYS = ("EC", "EC-HSM")


def parse_curve(name: object) -> str:
    """The canonical JWK curve name for ``name`` (exact, case-sensitive, as Key Vault)."""
    if not isinstance(name, str) or name not in _CURVES:
        raise ValueError(f"unsupported curve {name!r}; supported: {', '.join(EC_CURVES)}")
    return name


def curve_bits(crv: str) -> int:
    """The curve's size in bits (256, 256, 384, 521)."""
    return _BITS[parse_curve(crv)]


def coordinate_size(crv: str) -> int:
    """Bytes in one coordinate, in ``d`` and in half an ``r || s`` signature."""
    return (curve_bits(crv) + 7) // 8


def curve_name(key: ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey) -> str:
    """The JWK curve name of ``key``; ``ValueError`` for a curve Key Vault does not name."""
    name = _BY_OPENSSL_NAME.get(key.curve.name)
    if name is None:
        raise ValueError(f"EC curve {key.curve.name!r} is not supported")
    return name


def generate_ec_key(crv: str) -> ec.EllipticCurvePrivateKey:
    """A new private key on curve ``crv`` (P-256, P-256K, P-384 or P-521)."""
    return ec.generate_private_key(_CURVES[parse_curve(crv)]())


def ec_private_key_to_der(key: ec.EllipticCurvePrivateKey) -> bytes:
    """Unencrypted PKCS#8 DER; seal it with the envelope before storing it."""
    return key.private_bytes(
        encoding=serialization.Encoding.DER,
        format=serialization.PrivateFormat.PKCS8,
        encryption_algorithm=serialization.NoEncryption(),
    )


def ec_private_key_from_der(data: bytes) -> ec.EllipticCurvePrivateKey:
    """Load an unencrypted PKCS#8 DER EC private key on one of the supported curves."""
    try:
        key = serialization.load_der_private_key(data, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise ValueError("not a valid unencrypted DER private key") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ValueError("DER private key is not an EC key")
    curve_name(key)
    return key


def ec_public_jwk_fields(public_key: ec.EllipticCurvePublicKey) -> dict[str, str]:
    """The public JWK members ``{"crv", "x", "y"}`` (coordinates at full length)."""
    crv = curve_name(public_key)
    size = coordinate_size(crv)
    numbers = public_key.public_numbers()
    return {
        "crv": crv,
        "x": b64url_encode(numbers.x.to_bytes(size, "big")),
        "y": b64url_encode(numbers.y.to_bytes(size, "big")),
    }


def ec_private_jwk_fields(private_key: ec.EllipticCurvePrivateKey) -> dict[str, str]:
    """All JWK members of ``private_key``: crv, x, y and d."""
    fields = ec_public_jwk_fields(private_key.public_key())
    size = coordinate_size(fields["crv"])
    fields["d"] = b64url_encode(private_key.private_numbers().private_value.to_bytes(size, "big"))
    return fields


def ec_public_key_from_jwk(jwk: Mapping[str, object]) -> ec.EllipticCurvePublicKey:
    """An EC public key from JWK members crv, x and y (checked to be on the curve)."""
    _check_kty(jwk)
    crv = _jwk_curve(jwk)
    x = _member(jwk, "x", crv)
    y = _member(jwk, "y", crv)
    try:
        return ec.EllipticCurvePublicNumbers(x, y, _CURVES[crv]()).public_key()
    except ValueError:
        raise ValueError(f"invalid EC public key: the point is not on curve {crv}") from None


def ec_private_key_from_jwk(jwk: Mapping[str, object]) -> ec.EllipticCurvePrivateKey:
    """An EC private key from JWK members crv and d; x and y, when given, must be its public
    point."""
    _check_kty(jwk)
    crv = _jwk_curve(jwk)
    if "d" not in jwk:
        raise ValueError("EC private JWK is missing required member 'd'")
    d = _member(jwk, "d", crv)
    try:
        key = ec.derive_private_key(d, _CURVES[crv]())
    except ValueError:
        raise ValueError(f"invalid EC private key: d is out of range for {crv}") from None
    if "x" in jwk or "y" in jwk:
        public = key.public_key().public_numbers()
        if (_member(jwk, "x", crv), _member(jwk, "y", crv)) != (public.x, public.y):
            raise ValueError("invalid EC private key: x and y are not the public point of d")
    return key


def _check_kty(jwk: Mapping[str, object]) -> None:
    kty = jwk.get("kty")
    if kty is not None and kty not in _KTYS:
        raise ValueError(f"JWK kty must be EC or EC-HSM, got {kty!r}")


def _jwk_curve(jwk: Mapping[str, object]) -> str:
    if "crv" not in jwk or jwk["crv"] is None:
        raise ValueError("EC JWK is missing required member 'crv'")
    return parse_curve(jwk["crv"])


def _member(jwk: Mapping[str, object], name: str, crv: str) -> int:
    value = jwk.get(name)
    if not isinstance(value, str):
        raise ValueError(f"EC JWK member {name!r} must be a base64url string")
    try:
        raw = b64url_decode(value)
    except ValueError:
        raise ValueError(f"EC JWK member {name!r} is not valid base64url") from None
    size = coordinate_size(crv)
    if not raw or len(raw) > size:
        raise ValueError(f"EC JWK member {name!r} must be {size} bytes for {crv}, got {len(raw)}")
    return int.from_bytes(raw, "big")
