"""Key material imported in plaintext into a PKCS#11 token (``C_CreateObject``), as Key Vault
imports a JWK with ``hsm: true`` or an ``-HSM`` kty: the key arrives in the request over TLS,
and from then on lives only in the token. ``hsm.pkcs11.Pkcs11Protector.import_material`` runs
this on a pooled session; a key brought wrapped (BYOK) goes through ``hsm.byok`` instead.

The object is made as a generated version is: token, private, sensitive, with the usages of
its type (RSA: decrypt and sign; EC: sign; AES: encrypt, decrypt, wrap, unwrap), extractable
only wrapped under the security domain when the token holds one (``version_attributes``).
"""

from __future__ import annotations

from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec, rsa
from pkcs11 import Attribute, KeyType, ObjectClass
from pkcs11.util.ec import encode_named_curve_parameters

from customerkey.crypto.key_material import PrivateMaterial, SymmetricKey
from customerkey.hsm import security_domain
from customerkey.hsm.aes import AES_USES
from customerkey.vault.hsm import AesKeySize, PublicKey

__all__ = ["create_private", "public_of"]


def _int(value: int) -> bytes:
    return value.to_bytes((value.bit_length() + 7) // 8 or 1, "big")


def public_of(material: PrivateMaterial) -> PublicKey | AesKeySize:
    """What the vault keeps of imported material: its public key (an AES key: its size)."""
    if isinstance(material, SymmetricKey):
        return AesKeySize(len(material.key) * 8)
    return material.public_key()


def create_private(
    session: Any, material: PrivateMaterial, *, object_id: bytes, label: str, curve: str | None
) -> None:
    """``material`` as a token object ``object_id``; ``curve`` is the PKCS#11 curve name of an
    EC key."""
    base = {
        Attribute.ID: object_id,
        Attribute.LABEL: label,
        Attribute.TOKEN: True,
        Attribute.PRIVATE: True,
        Attribute.SENSITIVE: True,
        **security_domain.version_attributes(session),
    }
    if isinstance(material, SymmetricKey):
        session.create_object(
            {
                **base,
                Attribute.CLASS: ObjectClass.SECRET_KEY,
                Attribute.KEY_TYPE: KeyType.AES,
                Attribute.VALUE: bytes(material.key),
                **AES_USES,
            }
        )
        return
    if isinstance(material, rsa.RSAPrivateKey):
        numbers = material.private_numbers()
        session.create_object(
            {
                **base,
                Attribute.CLASS: ObjectClass.PRIVATE_KEY,
                Attribute.KEY_TYPE: KeyType.RSA,
                Attribute.MODULUS: _int(numbers.public_numbers.n),
                Attribute.PUBLIC_EXPONENT: _int(numbers.public_numbers.e),
                Attribute.PRIVATE_EXPONENT: _int(numbers.d),
                Attribute.PRIME_1: _int(numbers.p),
                Attribute.PRIME_2: _int(numbers.q),
                Attribute.EXPONENT_1: _int(numbers.dmp1),
                Attribute.EXPONENT_2: _int(numbers.dmq1),
                Attribute.COEFFICIENT: _int(numbers.iqmp),
                Attribute.DECRYPT: True,
                Attribute.SIGN: True,
                Attribute.UNWRAP: False,
                Attribute.DERIVE: False,
            }
        )
        return
    assert isinstance(material, ec.EllipticCurvePrivateKey) and curve is not None
    size = (material.curve.key_size + 7) // 8
    session.create_object(
        {
            **base,
            Attribute.CLASS: ObjectClass.PRIVATE_KEY,
            Attribute.KEY_TYPE: KeyType.EC,
            Attribute.EC_PARAMS: encode_named_curve_parameters(curve),
            Attribute.VALUE: material.private_numbers().private_value.to_bytes(size, "big"),
            Attribute.SIGN: True,
            Attribute.DECRYPT: False,
            Attribute.UNWRAP: False,
            Attribute.DERIVE: False,
        }
    )
