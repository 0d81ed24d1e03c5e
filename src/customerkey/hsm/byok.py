"""BYOK inside a PKCS#11 token: making key exchange keys (KEKs) and unwrapping a transfer blob
(``vault.byok``) straight into the token. ``hsm.pkcs11.Pkcs11Protector`` runs these on one of
its pooled sessions.

A KEK is an RSA key pair whose private key may unwrap and do nothing else (``CKA_UNWRAP``
true; ``CKA_DECRYPT`` and ``CKA_SIGN`` false), so that even a bug above the token cannot use it
to decrypt the ephemeral AES key of a transfer blob into the process.

The unwrap is ``CKM_RSA_AES_KEY_WRAP`` done as its two halves, each a ``C_UnwrapKey`` inside
the token: ``CKM_RSA_PKCS_OAEP`` (SHA-1, MGF1-SHA-1, no label) unwraps the ephemeral AES key as
a session object that may only unwrap, then ``CKM_AES_KEY_WRAP_PAD`` (RFC 5649) unwraps the
target key under it as a ``CKA_TOKEN``, ``CKA_PRIVATE``, ``CKA_SENSITIVE``, non-extractable
object; the session key is destroyed at once. (The one-mechanism form needs a
``CK_RSA_AES_KEY_WRAP_PARAMS`` structure holding a pointer, which python-pkcs11 cannot pass;
the two halves are the same construction and keep every key inside the token.) A blob that
does not open, or whose key is not of the declared type, fails inside the token and is
reported as ``DecryptionFailed()`` with nothing created.

The target key, by type:

- RSA-HSM: PKCS#8, unwrapped as a ``CKK_RSA`` private key; its public key is read back from
  the object (a private RSA object holds n and e).
- EC-HSM: PKCS#8, unwrapped as a ``CKK_EC`` private key. SoftHSM keeps no ``CKA_EC_POINT`` on
  it, so the public point is recovered in the token: ``CKM_ECDH1_DERIVE`` (no KDF) with the
  curve's generator G as the peer's public value gives x(d·G), the public point's x; of the
  two points with that x, the one a token ``CKM_ECDSA`` signature verifies under (pyca) is
  it. The key has ``CKA_DERIVE`` only for that moment: it is switched off (and read back)
  before the key is stored; a token that will not is refused and keeps nothing.
- oct-HSM: the raw AES key, unwrapped as a ``CKK_AES`` secret key that may encrypt, decrypt,
  wrap and unwrap. SoftHSM sets no ``CKA_VALUE_LEN`` on it: the length follows from the
  wrapped length (RFC 5649 pads to 8 bytes: 24, 32 or 40 bytes for 16, 24 or 32) and the
  token must accept the key for AES (``CKM_AES_ECB`` of a zero block, whose output is
  dropped); anything else is a key of another type (``DecryptionFailed()``).
"""

from __future__ import annotations

from contextlib import suppress
from typing import Any

import pkcs11
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa, utils
from pkcs11 import KDF, Attribute, KeyType, Mechanism, MechanismFlag, ObjectClass
from pkcs11 import exceptions as p11
from pkcs11.constants import DEFAULT
from pkcs11.util.ec import encode_named_curve_parameters

from customerkey.crypto.signatures import ecdsa_raw_to_der
from customerkey.errors import BadParameter, DecryptionFailed
from customerkey.hsm import security_domain
from customerkey.hsm.aes import AES_USES
from customerkey.vault.hsm import AesKeySize, PublicKey

__all__ = [
    "UNWRAP_FAILED",
    "generate_kek",
    "import_target",
    "require_byok",
    "rsa_public_of",
]

# What a token answers when a wrapped key does not open or is not the key type declared
# (SoftHSM: CKR_GENERAL_ERROR / CKR_FUNCTION_FAILED): the blob's fault, said as nothing more.
UNWRAP_FAILED = (
    p11.GeneralError,
    p11.FunctionFailed,
    p11.WrappedKeyInvalid,
    p11.WrappedKeyLenRange,
    p11.EncryptedDataInvalid,
    p11.EncryptedDataLenRange,
    p11.TemplateInconsistent,
    p11.AttributeValueInvalid,
)
RSA_SIZES = (2048, 3072, 4096)
# The curves an EC-HSM key may be on: (JWK name, pyca curve), by CKA_EC_PARAMS.
_EC_CURVES: dict[bytes, tuple[str, ec.EllipticCurve]] = {
    encode_named_curve_parameters(oid): (crv, curve)
    for oid, crv, curve in (
        ("secp256r1", "P-256", ec.SECP256R1()),
        ("secp384r1", "P-384", ec.SECP384R1()),
        ("secp521r1", "P-521", ec.SECP521R1()),
        ("secp256k1", "P-256K", ec.SECP256K1()),
    )
}
# RFC 5649: the wrapped length of a 16, 24 or 32-byte AES key.
_AES_BYTES_BY_WRAPPED = {24: 16, 32: 24, 40: 32}
# python-pkcs11 writes every capability attribute; a private key has no CKA_ENCRYPT, VERIFY
# or WRAP (the token refuses the template), so each is left out unless set here.
_NO_CAPABILITIES = {
    attribute: DEFAULT
    for attribute in (
        Attribute.ENCRYPT,
        Attribute.DECRYPT,
        Attribute.WRAP,
        Attribute.UNWRAP,
        Attribute.SIGN,
        Attribute.VERIFY,
        Attribute.DERIVE,
    )
}
_HELD = {
    Attribute.TOKEN: True,
    Attribute.PRIVATE: True,
    Attribute.SENSITIVE: True,
    Attribute.EXTRACTABLE: False,
}


def rsa_public_of(key: Any) -> rsa.RSAPublicKey:
    """The public key of an RSA token object (public or private: both hold n and e)."""
    return rsa.RSAPublicNumbers(
        int.from_bytes(key[Attribute.PUBLIC_EXPONENT], "big"),
        int.from_bytes(key[Attribute.MODULUS], "big"),
    ).public_key()


def generate_kek(session: Any, object_id: bytes, bits: int, label: str) -> rsa.RSAPublicKey:
    """A new KEK pair in the token; its public key."""
    public, _ = session.generate_keypair(
        KeyType.RSA,
        bits,
        id=object_id,
        label=label,
        store=True,
        public_template={Attribute.TOKEN: True, Attribute.PUBLIC_EXPONENT: b"\x01\x00\x01"},
        private_template={
            **_HELD,
            Attribute.UNWRAP: True,
            Attribute.DECRYPT: False,
            Attribute.SIGN: False,
        },
    )
    return rsa_public_of(public)


def unwrap_target(
    session: Any,
    kek_id: bytes,
    encrypted_key: bytes,
    wrapped_key: bytes,
    kty: str,
    *,
    object_id: bytes,
    label: str,
) -> Any:
    """Unwrap ``wrapped_key`` (under the AES key ``encrypted_key`` holds for the KEK) into the
    token as the key of ``kty`` (see the module docstring); the new token object."""
    kek = session.get_key(object_class=ObjectClass.PRIVATE_KEY, id=kek_id)
    try:
        ephemeral = kek.unwrap_key(
            ObjectClass.SECRET_KEY,
            KeyType.AES,
            encrypted_key,
            mechanism=Mechanism.RSA_PKCS_OAEP,
            mechanism_param=(Mechanism.SHA_1, pkcs11.MGF.SHA1, None),
            store=False,
            capabilities=MechanismFlag.UNWRAP,
            template={
                Attribute.TOKEN: False,
                Attribute.SENSITIVE: True,
                Attribute.EXTRACTABLE: False,
            },
        )
    except UNWRAP_FAILED:
        raise DecryptionFailed() from None
    try:
        if ephemeral[Attribute.VALUE_LEN] not in (0, 16, 24, 32):
            raise DecryptionFailed()
        # Backed up like a generated key: wrappable only under the security domain, if any.
        held = {**_HELD, **security_domain.version_attributes(session)}
        template = {**_NO_CAPABILITIES, **held, Attribute.SIGN: True}
        object_class, key_type = ObjectClass.PRIVATE_KEY, KeyType.RSA
        if kty == "RSA-HSM":
            template[Attribute.DECRYPT] = True
        elif kty == "EC-HSM":
            key_type = KeyType.EC
            template[Attribute.DERIVE] = True  # until the public point is recovered
        else:
            object_class, key_type = ObjectClass.SECRET_KEY, KeyType.AES
            template.update(AES_USES)
        try:
            return ephemeral.unwrap_key(
                object_class,
                key_type,
                wrapped_key,
                id=object_id,
                label=label,
                mechanism=Mechanism.AES_KEY_WRAP_PAD,
                store=True,
                template=template,
            )
        except UNWRAP_FAILED:
            raise DecryptionFailed() from None
    finally:
        with suppress(p11.PKCS11Error):
            ephemeral.destroy()


def checked_rsa_target(key: Any) -> rsa.RSAPublicKey:
    """The public key of an unwrapped RSA target; ``BadParameter`` (after destroying it) when
    its size is not one a key vault holds."""
    public = rsa_public_of(key)
    if public.key_size not in RSA_SIZES or public.public_numbers().e not in (3, 65537):
        with suppress(p11.PKCS11Error):
            key.destroy()
        raise BadParameter(
            "The imported RSA key must be 2048, 3072 or 4096 bits with the public exponent "
            "65537 (or 3)."
        )
    return public


def require_byok(mechanisms: frozenset[Mechanism], kty: str | None = None) -> None:
    """``BadParameter`` unless the token has the two mechanisms a BYOK unwrap needs (and, for
    ``kty``, what its target's checks need)."""
    needed = {Mechanism.RSA_PKCS_KEY_PAIR_GEN, Mechanism.RSA_PKCS_OAEP, Mechanism.AES_KEY_WRAP_PAD}
    if not needed <= mechanisms:
        raise BadParameter(
            "The HSM token cannot take BYOK transfer blobs: it lacks CKM_RSA_PKCS_OAEP or "
            "CKM_AES_KEY_WRAP_PAD."
        )
    extra = {
        "EC-HSM": (Mechanism.ECDH1_DERIVE, Mechanism.ECDSA),
        "oct-HSM": (Mechanism.AES_ECB,),
    }.get(kty or "", ())
    missing = [m for m in extra if m not in mechanisms]
    if missing:
        raise BadParameter(
            f"The HSM token cannot import {kty} keys by BYOK: it lacks "
            + ", ".join(f"CKM_{m.name}" for m in missing)
            + "."
        )


def import_target(
    session: Any,
    kek_id: bytes,
    kek_bits: int,
    ciphertext: bytes,
    kty: str,
    object_id: bytes,
    label: str,
    probe: bytes,
) -> PublicKey | AesKeySize:
    """Unwrap a BYOK ciphertext (``RSA-OAEP(K) | AES-KWP(K, key)``) into the token; the new
    key's public key (oct-HSM: its size). ``probe``: a random digest an EC key signs."""
    if kty not in ("RSA-HSM", "EC-HSM", "oct-HSM"):
        raise BadParameter(f"Importing a {kty} key by BYOK is not supported.")
    modulus_bytes = (kek_bits + 7) // 8
    encrypted_key, wrapped_key = ciphertext[:modulus_bytes], ciphertext[modulus_bytes:]
    if len(encrypted_key) != modulus_bytes or len(wrapped_key) < 24 or len(wrapped_key) % 8:
        raise DecryptionFailed()
    key = unwrap_target(
        session, kek_id, encrypted_key, wrapped_key, kty, object_id=object_id, label=label
    )
    if kty == "RSA-HSM":
        return checked_rsa_target(key)
    try:
        if kty == "EC-HSM":
            return recover_ec_public(session, key, probe)
        return AesKeySize(checked_aes_bytes(key, len(wrapped_key)) * 8)
    except BaseException:
        with suppress(p11.PKCS11Error):
            key.destroy()
        raise


def checked_aes_bytes(key: Any, wrapped_length: int) -> int:
    """The length of an unwrapped AES target (see the module docstring); ``DecryptionFailed``
    when it is no AES key."""
    size = _AES_BYTES_BY_WRAPPED.get(wrapped_length)
    if size is None:
        raise DecryptionFailed()
    try:
        key.encrypt(bytes(16), mechanism=Mechanism.AES_ECB)
    except (p11.MechanismInvalid, p11.KeySizeRange, *UNWRAP_FAILED):
        raise DecryptionFailed() from None
    return size


def recover_ec_public(session: Any, key: Any, probe: bytes) -> ec.EllipticCurvePublicKey:
    """The public key of an unwrapped EC target, recovered in the token (see the module
    docstring); its ``CKA_DERIVE`` is off when this returns."""
    found = _EC_CURVES.get(bytes(key[Attribute.EC_PARAMS]))
    if found is None:
        raise BadParameter(
            "The imported EC key is not on a curve a key vault holds (P-256, P-256K, P-384, P-521)."
        )
    crv, curve = found
    generator = (
        ec.derive_private_key(1, curve)
        .public_key()
        .public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
    )
    size = (curve.key_size + 7) // 8
    shared = key.derive_key(
        KeyType.GENERIC_SECRET,
        size * 8,
        mechanism=Mechanism.ECDH1_DERIVE,
        mechanism_param=(KDF.NULL, None, generator),
        store=False,
        template={Attribute.TOKEN: False, Attribute.SENSITIVE: False, Attribute.EXTRACTABLE: True},
    )
    try:
        x = bytes(shared[Attribute.VALUE]).rjust(size, b"\x00")
    finally:
        with suppress(p11.PKCS11Error):
            shared.destroy()
    key[Attribute.DERIVE] = False
    if key[Attribute.DERIVE]:
        raise BadParameter("The HSM token did not take CKA_DERIVE off the imported EC key.")
    signature = ecdsa_raw_to_der(bytes(key.sign(probe, mechanism=Mechanism.ECDSA)), crv)
    for prefix in (b"\x02", b"\x03"):
        candidate = ec.EllipticCurvePublicKey.from_encoded_point(curve, prefix + x)
        try:
            candidate.verify(signature, probe, ec.ECDSA(utils.Prehashed(hashes.SHA256())))
        except InvalidSignature:
            continue
        return candidate
    raise DecryptionFailed()  # no point of that x verifies: not the key it claims to be
