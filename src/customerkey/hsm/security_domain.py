"""The security domain: the token-resident AES-256 key an installation's HSM key versions can be
wrapped under, and under nothing else (docs/HSM.md).

What SoftHSM 2.6.1 enforces, and the design that follows from it:

- ``CKA_TRUSTED`` can only be set by the Security Officer, and only when an object is made; the
  SO cannot make or see ``CKA_PRIVATE`` objects; a public object's value is stored in the
  clear in the token folder. So the domain key is made (or unwrapped) as a *session* object
  while the SO is logged in, then copied, with the user logged in, into a private token object
  (``_promote``): its value never reaches the disk unencrypted. The SO PIN
  (``pkcs11_so_pin_file``) is read only by these commands.
- Key versions made while a domain exists are ``CKA_EXTRACTABLE`` with
  ``CKA_WRAP_WITH_TRUSTED``: ``C_WrapKey`` under any key but a trusted one is refused
  (``CKR_KEY_NOT_WRAPPABLE``), so a user-PIN holder cannot wrap them under a key of their own.
  Versions made before are non-extractable and cannot be backed up at all.
- Wrapping a version under the domain and unwrapping it again as a non-sensitive key would
  hand out its value; the domain key's ``CKA_UNWRAP_TEMPLATE`` (enforced by SoftHSM) makes
  every key it unwraps private, sensitive and wrappable only under trusted keys again. It is
  limited to ``CKM_AES_KEY_WRAP_PAD`` (``CKA_ALLOWED_MECHANISMS``) and is not modifiable, so
  it cannot be given ``CKA_DECRYPT`` (AES-ECB would undo the wrap), nor copied with it.
- Its public identifier is its key check value (``CKA_CHECK_VALUE``, computed by the token).

Sharing a domain: the recipient makes a transfer key pair (``request``); the source's SO trusts
the recipient's public key as a session object and the user wraps the domain key to it with
``CKM_RSA_PKCS_OAEP`` (SHA-1: the only OAEP hash SoftHSM 2.6 wraps with; the token has no
``CKM_RSA_AES_KEY_WRAP``); the recipient unwraps it and promotes it as at creation.

python-pkcs11 has no handler for array attributes, so ``ArrayMapper`` packs
``CKA_UNWRAP_TEMPLATE`` (a ``CK_ATTRIBUTE`` array pointing at buffers it keeps alive) and
``CKA_ALLOWED_MECHANISMS``.
"""

from __future__ import annotations

import ctypes
import hashlib
import struct
from contextlib import suppress
from typing import Any

import pkcs11
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa, utils
from pkcs11 import Attribute, KeyType, Mechanism, ObjectClass
from pkcs11 import exceptions as p11
from pkcs11.attributes import AttributeMapper

from customerkey.crypto.ec import curve_name
from customerkey.crypto.signatures import ecdsa_raw_to_der
from customerkey.errors import (
    DecryptionFailed,
    HsmNotReady,
    KeyNotBackupable,
    SecurityDomainMismatch,
)
from customerkey.hsm.aes import AES_USES
from customerkey.vault.hsm import AesKeySize, PublicKey, SealedBackup

__all__ = [
    "destroy_objects",
    "domain_id",
    "find_domain",
    "open_backup",
    "seal_backup",
    "unwrap_version",
    "version_attributes",
    "wrap_version",
]

DOMAIN_LABEL = "customerkey security domain"
TRANSFER_LABEL = "customerkey security domain transfer"
WRAP = Mechanism.AES_KEY_WRAP_PAD
OAEP_SHA1 = (Mechanism.SHA_1, pkcs11.MGF.SHA1, None)
# Every key unwrapped under the domain must be made so (CKA_UNWRAP_TEMPLATE).
PROTECTED = {
    Attribute.PRIVATE: True,
    Attribute.SENSITIVE: True,
    Attribute.EXTRACTABLE: True,
    Attribute.WRAP_WITH_TRUSTED: True,
}
NO_USE = {
    Attribute.ENCRYPT: False,
    Attribute.DECRYPT: False,
    Attribute.SIGN: False,
    Attribute.VERIFY: False,
    Attribute.DERIVE: False,
}
# Session-only attributes python-pkcs11 adds that a private key does not take.
_NOT_PRIVATE = {
    Attribute.ENCRYPT: pkcs11.DEFAULT,
    Attribute.VERIFY: pkcs11.DEFAULT,
    Attribute.WRAP: pkcs11.DEFAULT,
}


class _Attr(ctypes.Structure):
    _fields_ = [
        ("type", ctypes.c_ulong),
        ("pValue", ctypes.c_void_p),
        ("ulValueLen", ctypes.c_ulong),
    ]


class ArrayMapper(AttributeMapper):
    """python-pkcs11's mapper, plus the two array attributes the domain key is made with."""

    def __init__(self) -> None:
        super().__init__()
        self._alive: list[Any] = []
        self.register_handler(
            Attribute.ALLOWED_MECHANISMS,
            lambda v: b"".join(struct.pack("L", int(m)) for m in v),
            lambda b: [m for (m,) in struct.iter_unpack("L", b)],
        )
        self.register_handler(Attribute.UNWRAP_TEMPLATE, self._template, bytes)

    def _template(self, template: dict[Attribute, Any]) -> bytes:
        array = (_Attr * len(template))()
        for i, (attribute, value) in enumerate(template.items()):
            raw = self.pack_attribute(attribute, value)
            buffer = ctypes.create_string_buffer(raw, len(raw))
            self._alive.append(buffer)
            array[i].type = int(attribute)
            array[i].pValue = ctypes.cast(buffer, ctypes.c_void_p).value
            array[i].ulValueLen = len(raw)
        self._alive.append(array)
        return bytes(memoryview(array).cast("B"))


def domain_template() -> dict[Attribute, Any]:
    return {
        Attribute.SENSITIVE: True,
        Attribute.EXTRACTABLE: True,  # only to a trusted transfer key: see ``export``
        Attribute.WRAP_WITH_TRUSTED: True,
        Attribute.WRAP: True,
        Attribute.UNWRAP: True,
        **NO_USE,
        Attribute.UNWRAP_TEMPLATE: PROTECTED,
        Attribute.ALLOWED_MECHANISMS: [WRAP],
    }


# ---------------------------------------------------------------- in a logged-in user session


def find_domain(session: Any) -> Any | None:
    """The token's security-domain key, or None; more than one is refused."""
    found = [
        key
        for key in session.get_objects(
            {Attribute.CLASS: ObjectClass.SECRET_KEY, Attribute.LABEL: DOMAIN_LABEL}
        )
        if key[Attribute.TRUSTED]
    ]
    if len(found) > 1:
        raise HsmNotReady(
            f"The token holds {len(found)} security-domain keys labelled {DOMAIN_LABEL!r}; "
            "keep exactly one."
        )
    return found[0] if found else None


def domain_id(session: Any, key: Any) -> str:
    """The domain's public identifier: SHA-256 of a fixed key wrapped under it in the token
    (AES-KWP is deterministic), first 8 bytes, hex. SoftHSM leaves ``CKA_CHECK_VALUE`` empty
    on unwrapped keys, so an imported domain has no check value of its own."""
    probe = session.create_object(
        {
            Attribute.CLASS: ObjectClass.SECRET_KEY,
            Attribute.KEY_TYPE: KeyType.AES,
            Attribute.TOKEN: False,
            Attribute.PRIVATE: True,
            Attribute.SENSITIVE: False,
            Attribute.EXTRACTABLE: True,
            Attribute.VALUE: hashlib.sha256(b"customerkey security domain id").digest(),
        }
    )
    try:
        wrapped = bytes(key.wrap_key(probe, mechanism=WRAP))
    finally:
        probe.destroy()
    return hashlib.sha256(wrapped).hexdigest()[:16]


def version_attributes(session: Any) -> dict[Attribute, Any]:
    """How a new key version's private key is made: wrappable only under the security domain
    when the token holds one, else never extractable."""
    if find_domain(session) is None:
        return {Attribute.EXTRACTABLE: False}
    return {Attribute.EXTRACTABLE: True, Attribute.WRAP_WITH_TRUSTED: True}


def _require_domain(session: Any, what: str) -> Any:
    key = find_domain(session)
    if key is None:
        raise KeyNotBackupable(
            f"The HSM token holds no security domain, so {what}; an operator creates one "
            "(or imports a shared one) first."
        )
    return key


def wrap_version(session: Any, object_id: bytes, name: str) -> bytes:
    domain = _require_domain(session, f"key version {name} cannot be backed up")
    held = [
        key
        for key in session.get_objects({Attribute.ID: object_id})
        if key.object_class in (ObjectClass.PRIVATE_KEY, ObjectClass.SECRET_KEY)
    ]
    if len(held) != 1:
        raise p11.NoSuchKey()  # the token lost it: a token failure (HsmUnavailable)
    key = held[0]
    if not key[Attribute.EXTRACTABLE] or not key[Attribute.WRAP_WITH_TRUSTED]:
        raise KeyNotBackupable(
            f"Key version {name} is held in the HSM as non-extractable: it was made before "
            "the token held a security domain (or is a key exchange key), so it can never "
            "leave the token, not even wrapped. Back up keys made after the security domain "
            "(rotate the key to get one)."
        )
    return bytes(domain.wrap_key(key, mechanism=WRAP))


def unwrap_version(
    session: Any,
    wrapped: bytes,
    kty: str,
    public: PublicKey | AesKeySize,
    object_id: bytes,
    label: str,
) -> Any:
    domain = _require_domain(session, "no backup of HSM keys can be restored")
    if isinstance(public, AesKeySize):
        return _unwrap_secret(domain, wrapped, public, object_id, label)
    uses = (
        {Attribute.DECRYPT: True, Attribute.SIGN: True, Attribute.UNWRAP: False}
        if kty == "RSA-HSM"
        else {Attribute.SIGN: True, Attribute.DECRYPT: pkcs11.DEFAULT}
    )
    try:
        key = domain.unwrap_key(
            ObjectClass.PRIVATE_KEY,
            KeyType.RSA if kty == "RSA-HSM" else KeyType.EC,
            wrapped,
            id=object_id,
            label=label,
            store=True,
            mechanism=WRAP,
            capabilities=0,
            template={
                **PROTECTED,
                **_NOT_PRIVATE,
                Attribute.UNWRAP: pkcs11.DEFAULT,
                Attribute.DERIVE: pkcs11.DEFAULT,
                **uses,
            },
        )
    except (p11.GeneralError, p11.WrappedKeyInvalid, p11.WrappedKeyLenRange):
        raise DecryptionFailed() from None
    if not _matches(key, public):
        key.destroy()
        raise DecryptionFailed()
    return key


def _unwrap_secret(
    domain: Any, wrapped: bytes, size: AesKeySize, object_id: bytes, label: str
) -> Any:
    """An oct-HSM version, made again as ``hsm.aes`` makes one, and checked by its size (by
    the wrapped length: a token may record no ``CKA_VALUE_LEN`` on an unwrapped key)."""
    if len(wrapped) != size.bits // 8 + 8:  # RFC 5649: a whole number of 8-byte blocks + 8
        raise DecryptionFailed()
    try:
        key = domain.unwrap_key(
            ObjectClass.SECRET_KEY,
            KeyType.AES,
            wrapped,
            id=object_id,
            label=label,
            store=True,
            mechanism=WRAP,
            capabilities=0,
            template={
                **PROTECTED,
                **AES_USES,
            },
        )
    except (p11.GeneralError, p11.WrappedKeyInvalid, p11.WrappedKeyLenRange):
        raise DecryptionFailed() from None
    return key


def _matches(key: Any, public: PublicKey) -> bool:
    """Whether the unwrapped private key is the one of ``public``."""
    if isinstance(public, rsa.RSAPublicKey):
        modulus = int.from_bytes(bytes(key[Attribute.MODULUS]), "big")
        return modulus == public.public_numbers().n
    digest = hashlib.sha256(b"customerkey restore check").digest()
    raw = bytes(key.sign(digest, mechanism=Mechanism.ECDSA))
    try:
        signature = ecdsa_raw_to_der(raw, curve_name(public))
        public.verify(signature, digest, ec.ECDSA(utils.Prehashed(hashes.SHA256())))
    except (ValueError, InvalidSignature):
        return False
    return True


def seal_backup(session: Any, plaintext: bytes, aad: bytes, nonce: bytes) -> SealedBackup:
    from pkcs11.mechanisms import GCMParams

    domain = _require_domain(session, "keys held in it cannot be backed up")
    key = session.generate_key(KeyType.AES, 256, store=False, capabilities=0, template=_BACKUP_KEY)
    try:
        wrapped = bytes(domain.wrap_key(key, mechanism=WRAP))
        ciphertext = bytes(
            key.encrypt(
                plaintext, mechanism=Mechanism.AES_GCM, mechanism_param=GCMParams(nonce, aad)
            )
        )
    finally:
        key.destroy()
    return SealedBackup(
        domain=domain_id(session, domain), key=wrapped, nonce=nonce, ciphertext=ciphertext
    )


_BACKUP_KEY = {
    Attribute.TOKEN: False,
    **PROTECTED,
    **NO_USE,
    Attribute.ENCRYPT: True,
    Attribute.DECRYPT: True,
    Attribute.WRAP: False,
    Attribute.UNWRAP: False,
}


def open_backup(session: Any, sealed: SealedBackup, aad: bytes) -> bytes:
    from pkcs11.mechanisms import GCMParams

    domain = find_domain(session)
    if domain is None or domain_id(session, domain) != sealed.domain:
        raise SecurityDomainMismatch(
            f"This backup was made under security domain {sealed.domain}, and this "
            "installation's HSM token holds "
            + (f"security domain {domain_id(session, domain)}" if domain is not None else "none")
            + ": it restores only where that security domain was shared to (docs/HSM.md)."
        )
    try:
        key = domain.unwrap_key(
            ObjectClass.SECRET_KEY,
            KeyType.AES,
            sealed.key,
            mechanism=WRAP,
            capabilities=0,
            template=_BACKUP_KEY,
        )
    except (p11.GeneralError, p11.WrappedKeyInvalid, p11.WrappedKeyLenRange):
        raise DecryptionFailed() from None
    try:
        return bytes(
            key.decrypt(
                sealed.ciphertext,
                mechanism=Mechanism.AES_GCM,
                mechanism_param=GCMParams(sealed.nonce, aad),
            )
        )
    except (p11.GeneralError, p11.EncryptedDataInvalid, p11.EncryptedDataLenRange):
        raise DecryptionFailed() from None
    finally:
        key.destroy()


def destroy_objects(session: Any, object_id: bytes) -> int:
    count = 0
    for found in list(session.get_objects({Attribute.ID: object_id})):
        with suppress(p11.ObjectHandleInvalid):
            found.destroy()
            count += 1
    return count
