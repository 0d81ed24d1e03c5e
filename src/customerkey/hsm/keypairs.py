"""RSA-HSM and EC-HSM key pairs generated in a PKCS#11 token (``hsm.pkcs11.Pkcs11Protector``
runs this on a pooled session), and the public key read back from the token.

The private key is a token, private, sensitive object that decrypts and signs (RSA) or signs
(EC); it is extractable only wrapped under the installation's security domain when the token
holds one (``hsm.security_domain.version_attributes``), never otherwise.
"""

from __future__ import annotations

from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec, rsa
from pkcs11 import Attribute, KeyType
from pkcs11 import exceptions as p11
from pkcs11.util.ec import encode_named_curve_parameters

from customerkey.crypto.ec import coordinate_size
from customerkey.errors import BadParameter, HsmUnavailable
from customerkey.hsm import security_domain
from customerkey.vault.hsm import PublicKey

__all__ = ["generate"]


def generate(
    session: Any,
    kty: str,
    shape: int | str,
    *,
    object_id: bytes,
    label: str,
    curve: tuple[str, ec.EllipticCurve] | None,
) -> PublicKey:
    """A new pair of ``kty`` (``shape``: RSA bits, or the JWK curve name with ``curve`` its
    PKCS#11 name and pyca curve); its public key."""
    private = {
        Attribute.TOKEN: True,
        Attribute.PRIVATE: True,
        Attribute.SENSITIVE: True,
        Attribute.EXTRACTABLE: False,
        **security_domain.version_attributes(session),
    }
    if kty == "RSA-HSM":
        public, _ = session.generate_keypair(
            KeyType.RSA,
            int(shape),
            id=object_id,
            label=label,
            store=True,
            public_template={Attribute.TOKEN: True, Attribute.PUBLIC_EXPONENT: b"\x01\x00\x01"},
            private_template={**private, Attribute.DECRYPT: True, Attribute.SIGN: True},
        )
        return rsa.RSAPublicNumbers(
            int.from_bytes(public[Attribute.PUBLIC_EXPONENT], "big"),
            int.from_bytes(public[Attribute.MODULUS], "big"),
        ).public_key()
    assert curve is not None
    name, pyca_curve = curve
    try:
        params = session.create_domain_parameters(
            KeyType.EC, {Attribute.EC_PARAMS: encode_named_curve_parameters(name)}, local=True
        )
        public, _ = params.generate_keypair(
            id=object_id,
            label=label,
            store=True,
            public_template={Attribute.TOKEN: True},
            private_template={**private, Attribute.SIGN: True},
        )
    except (p11.DomainParamsInvalid, p11.AttributeValueInvalid):
        raise BadParameter(f"The HSM token does not support curve {shape}.") from None
    point = _ec_point(public[Attribute.EC_POINT], coordinate_size(str(shape)))
    return ec.EllipticCurvePublicKey.from_encoded_point(pyca_curve, point)


def _ec_point(value: bytes, size: int) -> bytes:
    """The uncompressed point of ``CKA_EC_POINT``: DER ``OCTET STRING`` as the standard says,
    or the bare point as some tokens give it."""
    value = bytes(value)
    if len(value) == 2 * size + 1 and value[0] == 4:
        return value
    if value[:1] == b"\x04" and len(value) > 2:
        length, offset = value[1], 2
        if length & 0x80:
            count = length & 0x7F
            length, offset = int.from_bytes(value[2 : 2 + count], "big"), 2 + count
        point = value[offset : offset + length]
        if len(point) == 2 * size + 1 and point[0] == 4:
            return point
    raise HsmUnavailable("The HSM answered an EC public key this version cannot read.")
