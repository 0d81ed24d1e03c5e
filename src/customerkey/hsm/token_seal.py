"""The master-key seal's operations inside a PKCS#11 token (``hsm.master_seal`` owns the sealed
file and when to seal; ``hsm.pkcs11.Pkcs11Protector`` runs these on a pooled session).

The seal key is an AES-256 token object, private, sensitive and never extractable, that may
encrypt and decrypt and nothing else; the master key is sealed with ``CKM_AES_GCM`` (96-bit
nonce, 128-bit tag) with the sealed file's header as additional data.
"""

from __future__ import annotations

from typing import Any

from pkcs11 import Attribute, KeyType, Mechanism, ObjectClass
from pkcs11 import exceptions as p11
from pkcs11.mechanisms import GCMParams

from customerkey.errors import DecryptionFailed

__all__ = ["decrypt", "encrypt", "seal_key"]

# SoftHSM answers a wrong GCM tag with CKR_GENERAL_ERROR.
_DOES_NOT_OPEN = (
    p11.GeneralError,
    p11.DataLenRange,
    p11.EncryptedDataInvalid,
    p11.EncryptedDataLenRange,
)


def seal_key(session: Any, label: str, object_id: bytes, *, create: bool) -> bytes | None:
    """The ``CKA_ID`` of the seal key labelled ``label``; with ``create``, one is made under
    ``object_id`` when the token has none. None: no such key and not ``create``."""
    template = {Attribute.CLASS: ObjectClass.SECRET_KEY, Attribute.LABEL: label}
    found = list(session.get_objects(template))
    if found:
        return bytes(found[0][Attribute.ID])
    if not create:
        return None
    session.generate_key(
        KeyType.AES,
        256,
        id=object_id,
        label=label,
        store=True,
        template={
            Attribute.TOKEN: True,
            Attribute.PRIVATE: True,
            Attribute.SENSITIVE: True,
            Attribute.EXTRACTABLE: False,
            Attribute.ENCRYPT: True,
            Attribute.DECRYPT: True,
            Attribute.WRAP: False,
            Attribute.UNWRAP: False,
        },
    )
    return object_id


def _key(session: Any, object_id: bytes) -> Any:
    return session.get_key(object_class=ObjectClass.SECRET_KEY, id=object_id)


def encrypt(session: Any, object_id: bytes, plaintext: bytes, nonce: bytes, aad: bytes) -> bytes:
    mechanism_param = GCMParams(nonce, aad)
    return bytes(
        _key(session, object_id).encrypt(
            plaintext, mechanism=Mechanism.AES_GCM, mechanism_param=mechanism_param
        )
    )


def decrypt(session: Any, object_id: bytes, ciphertext: bytes, nonce: bytes, aad: bytes) -> bytes:
    key = _key(session, object_id)
    try:
        return bytes(
            key.decrypt(
                ciphertext, mechanism=Mechanism.AES_GCM, mechanism_param=GCMParams(nonce, aad)
            )
        )
    except _DOES_NOT_OPEN:
        raise DecryptionFailed() from None
