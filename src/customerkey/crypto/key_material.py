"""A vault key version's private material, whatever its type, and its bytes at rest.

Key Vault key types (``kty``) fall into three families:

==================  ==========================  =============================================
kty                 material                    bytes sealed at rest (``vault.protection``)
==================  ==========================  =============================================
RSA, RSA-HSM        ``RSAPrivateKey``           unencrypted PKCS#8 DER
EC, EC-HSM          ``EllipticCurvePrivateKey``  unencrypted PKCS#8 DER
oct-HSM             ``SymmetricKey``            the raw AES key (16, 24 or 32 bytes)
==================  ==========================  =============================================

The public members a key bundle serves are ``n``/``e`` (RSA), ``crv``/``x``/``y`` (EC) and
none for ``oct-HSM``, whose key never leaves. Plain ``oct`` is a software symmetric key, which
Key Vault refuses (only Managed HSM's ``oct-HSM`` exists); it has no family here.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from cryptography.hazmat.primitives.asymmetric import ec, rsa

from customerkey.crypto.ec import (
    curve_bits,
    curve_name,
    ec_private_key_from_der,
    ec_private_key_to_der,
    ec_public_jwk_fields,
)
from customerkey.crypto.rsa import private_key_from_der, private_key_to_der, public_jwk_fields

__all__ = [
    "EC_KTYS",
    "OCT_KTYS",
    "RSA_KTYS",
    "PrivateMaterial",
    "SymmetricKey",
    "key_family",
    "key_size_of",
    "material_from_bytes",
    "material_to_bytes",
    "public_members",
]

RSA_KTYS = ("RSA", "RSA-HSM")
EC_KTYS = ("EC", "EC-HSM")
OCT_KTYS = ("oct-HSM",)


@dataclass(frozen=True)
class SymmetricKey:
    """An AES key of an ``oct-HSM`` key version (its bytes never appear in a repr)."""

    key: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if len(self.key) not in (16, 24, 32):
            raise ValueError(f"an oct-HSM key is 16, 24 or 32 bytes, got {len(self.key)}")

    @property
    def key_size(self) -> int:
        return len(self.key) * 8


PrivateMaterial = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | SymmetricKey


def key_family(kty: str) -> str:
    """ "RSA", "EC" or "oct" for a stored ``kty``; ``ValueError`` for anything else."""
    if kty in RSA_KTYS:
        return "RSA"
    if kty in EC_KTYS:
        return "EC"
    if kty in OCT_KTYS:
        return "oct"
    raise ValueError(f"unknown key type {kty!r}")


def material_to_bytes(material: PrivateMaterial) -> bytes:
    """What is sealed at rest (see the module docstring)."""
    if isinstance(material, SymmetricKey):
        return bytes(material.key)
    if isinstance(material, ec.EllipticCurvePrivateKey):
        return ec_private_key_to_der(material)
    return private_key_to_der(material)


def material_from_bytes(kty: str, data: bytes) -> PrivateMaterial:
    """The material of a ``kty`` version from its opened bytes; ``ValueError`` if they are not
    a key of that family."""
    family = key_family(kty)
    if family == "oct":
        return SymmetricKey(bytes(data))
    if family == "EC":
        return ec_private_key_from_der(data)
    return private_key_from_der(data)


def public_members(material: PrivateMaterial) -> dict[str, str]:
    """The public JWK members a bundle serves: n/e, crv/x/y, or none."""
    if isinstance(material, SymmetricKey):
        return {}
    if isinstance(material, ec.EllipticCurvePrivateKey):
        return ec_public_jwk_fields(material.public_key())
    return public_jwk_fields(material.public_key())


def key_size_of(material: PrivateMaterial) -> int:
    """Bits: the modulus, the curve, or the AES key."""
    if isinstance(material, SymmetricKey):
        return material.key_size
    if isinstance(material, ec.EllipticCurvePrivateKey):
        return curve_bits(curve_name(material))
    return int(material.key_size)
