"""oct-HSM keys inside a PKCS#11 token: AES keys made there, and every Managed HSM AES
algorithm (``crypto.aes_modes`` names them) run by the token, never in software.
``hsm.pkcs11.Pkcs11Protector`` runs these on one of its pooled sessions.

A version's key is made with ``CKM_AES_KEY_GEN`` as a ``CKA_TOKEN``, ``CKA_PRIVATE``,
``CKA_SENSITIVE``, never-extractable secret key with a random 16-byte ``CKA_ID`` (the version
row's ``hsm_object_id``) that may encrypt, decrypt, wrap and unwrap, and nothing else.

==============================  ====================================================
alg                             mechanism
==============================  ====================================================
A*KW, CKM_AES_KEY_WRAP          ``CKM_AES_KEY_WRAP`` (RFC 3394)
CKM_AES_KEY_WRAP_PAD            ``CKM_AES_KEY_WRAP_PAD`` (RFC 5649)
A*GCM                           ``CKM_AES_GCM``, 96-bit IV, the caller's AAD, 128-bit tag
A*CBC, A*CBCPAD                 ``CKM_AES_CBC``, ``CKM_AES_CBC_PAD`` (PKCS#7)
==============================  ====================================================

PKCS#11 wraps key *objects*, while Key Vault's wrapKey takes the key's bytes: the bytes become
a short-lived session ``CKK_GENERIC_SECRET`` object that the token wraps, and an unwrap gives
such an object whose value is read and which is destroyed at once (the caller sent, or is
owed, those bytes anyway; the version's key never leaves the token).

SoftHSM 2.6.1 pads a ``CKM_AES_KEY_WRAP`` input that is not whole 8-byte blocks, which RFC
3394 does not allow, and answers a bad GCM tag or PKCS#7 padding with ``CKR_GENERAL_ERROR``:
lengths are checked here first, as ``crypto.aes_modes`` checks them (a caller's mistake is a
``ValueError``), and every failure to open is ``DecryptionFailed()`` with nothing more. A
token without one of these mechanisms refuses that algorithm (``BadParameter``).

SoftHSM 2.6.1's ``CKM_AES_KEY_WRAP_PAD`` wraps as RFC 5649 only keys of whole 8-byte blocks:
it zero-pads any other key before wrapping (the message length indicator then says the padded
length); its unwrap follows the RFC. So a wrap of another length runs in the token only when
the token passes a known-answer probe (a 9-byte key under a throw-away session key, against
pyca/cryptography), and is otherwise refused with ``BadParameter`` naming the limit, never
done in software.
"""

from __future__ import annotations

from contextlib import suppress
from typing import Any, Protocol

from cryptography.hazmat.primitives.keywrap import aes_key_wrap_with_padding
from pkcs11 import Attribute, KeyType, Mechanism, ObjectClass
from pkcs11 import exceptions as p11
from pkcs11.mechanisms import GCMParams

from customerkey.crypto.aes_modes import GCM_TAG_SIZE, aes_info
from customerkey.errors import BadParameter, DecryptionFailed
from customerkey.vault.hsm import PublicKey, TokenOutput

__all__ = [
    "MECHANISMS",
    "OPEN_FAILED",
    "TokenAesKey",
    "describe",
    "generate",
    "mechanism_for",
    "run",
]

MECHANISMS = {
    "KW": Mechanism.AES_KEY_WRAP,
    "KWP": Mechanism.AES_KEY_WRAP_PAD,
    "GCM": Mechanism.AES_GCM,
    "CBC": Mechanism.AES_CBC,
    "CBCPAD": Mechanism.AES_CBC_PAD,
}
# What SoftHSM answers when a ciphertext or wrapped key does not open (see the docstring).
OPEN_FAILED = (
    p11.GeneralError,
    p11.FunctionFailed,
    p11.EncryptedDataInvalid,
    p11.EncryptedDataLenRange,
    p11.WrappedKeyInvalid,
    p11.WrappedKeyLenRange,
)
_BLOCK = 16
# What an oct-HSM version may do, however it came into the token (generated, imported,
# brought by BYOK, restored from a backup).
AES_USES = {
    Attribute.ENCRYPT: True,
    Attribute.DECRYPT: True,
    Attribute.WRAP: True,
    Attribute.UNWRAP: True,
    Attribute.SIGN: False,
    Attribute.VERIFY: False,
    Attribute.DERIVE: False,
}
_HELD = {
    Attribute.TOKEN: True,
    Attribute.PRIVATE: True,
    Attribute.SENSITIVE: True,
    Attribute.EXTRACTABLE: False,
    **AES_USES,
}
# The short-lived object holding the bytes a wrapKey wraps or an unwrapKey gives back.
_CARRIER = {
    Attribute.CLASS: ObjectClass.SECRET_KEY,
    Attribute.KEY_TYPE: KeyType.GENERIC_SECRET,
    Attribute.TOKEN: False,
    Attribute.SENSITIVE: False,
    Attribute.EXTRACTABLE: True,
}


class _Runner(Protocol):
    def aes(
        self,
        object_id: str,
        operation: str,
        alg: str,
        value: bytes,
        iv: bytes | None,
        aad: bytes | None,
        tag: bytes | None,
    ) -> TokenOutput: ...


class TokenAesKey:
    """An oct-HSM version's key in the token (``vault.hsm.TokenSecretKey``)."""

    def __init__(self, runner: _Runner, object_id: str, bits: int) -> None:
        self._runner = runner
        self._object_id = object_id
        self._bits = bits

    @property
    def object_id(self) -> str:
        return self._object_id

    @property
    def key_size(self) -> int:
        return self._bits

    def public_key(self) -> PublicKey:
        raise BadParameter("An oct-HSM key has no public key.")

    def decrypt(self, ciphertext: bytes, alg: str) -> bytes:
        raise BadParameter(f"An oct-HSM key does not decrypt with {alg}.")

    def sign(self, digest: bytes, alg: str) -> bytes:
        raise BadParameter("An oct-HSM key does not sign.")

    def aes(
        self,
        operation: str,
        alg: str,
        value: bytes,
        *,
        iv: bytes | None = None,
        aad: bytes | None = None,
        tag: bytes | None = None,
    ) -> TokenOutput:
        return self._runner.aes(self._object_id, operation, alg, bytes(value), iv, aad, tag)


def mechanism_for(alg: str, mechanisms: frozenset[Mechanism]) -> Mechanism:
    """The token mechanism of ``alg``; ``BadParameter`` when the token lacks it."""
    mechanism = MECHANISMS[aes_info(alg).mode]
    if mechanism not in mechanisms:
        raise BadParameter(
            f"The HSM token offers no mechanism for {alg} (it lacks CKM_{mechanism.name})."
        )
    return mechanism


def describe(mechanisms: frozenset[Mechanism]) -> str:
    """The serve banner's line for oct-HSM keys."""
    names = {
        "KW": "A*KW",
        "KWP": "CKM_AES_KEY_WRAP_PAD",
        "GCM": "A*GCM",
        "CBC": "A*CBC",
        "CBCPAD": "A*CBCPAD",
    }
    parts = [
        f"{names[mode]}: CKM_{mechanism.name}"
        if mechanism in mechanisms
        else f"{names[mode]}: refused (no mechanism)"
        for mode, mechanism in MECHANISMS.items()
    ]
    return "  oct-HSM (CKM_AES_KEY_GEN): " + ", ".join(parts)


def generate(
    session: Any, object_id: bytes, bits: int, label: str, extra: dict[Attribute, Any]
) -> None:
    """A new AES key of ``bits`` in the token (``extra``: attributes the caller adds)."""
    session.generate_key(
        KeyType.AES,
        bits,
        id=object_id,
        label=label,
        store=True,
        template={**_HELD, **extra},
    )


def run(
    session: Any,
    object_id: bytes,
    operation: str,
    alg: str,
    mechanism: Mechanism,
    value: bytes,
    iv: bytes | None,
    aad: bytes | None,
    tag: bytes | None,
) -> TokenOutput:
    """One checked AES request under the token key ``object_id``."""
    mode = aes_info(alg).mode
    _check_lengths(operation, mode, value)
    key = session.get_key(object_class=ObjectClass.SECRET_KEY, id=object_id)
    if operation == "wrapKey":
        if mode == "KWP" and len(value) % 8 and not _kwp_conforms(session):
            raise BadParameter(_KWP_LIMIT + f"; the key given is {len(value)} bytes.")
        return TokenOutput(value=_wrap(session, key, mechanism, value))
    if operation == "unwrapKey":
        try:
            carrier = key.unwrap_key(
                ObjectClass.SECRET_KEY,
                KeyType.GENERIC_SECRET,
                value,
                mechanism=mechanism,
                store=False,
                template={**_CARRIER},
            )
        except OPEN_FAILED:
            raise DecryptionFailed() from None
        try:
            return TokenOutput(value=bytes(carrier[Attribute.VALUE]))
        finally:
            with suppress(p11.PKCS11Error):
                carrier.destroy()
    assert iv is not None  # drawn by the service for an encrypt, required for a decrypt
    param: Any = GCMParams(iv, aad or b"", GCM_TAG_SIZE * 8) if mode == "GCM" else iv
    if operation == "encrypt":
        sealed = bytes(key.encrypt(value, mechanism=mechanism, mechanism_param=param))
        if mode != "GCM":
            return TokenOutput(value=sealed, iv=iv)
        return TokenOutput(value=sealed[:-GCM_TAG_SIZE], iv=iv, tag=sealed[-GCM_TAG_SIZE:], aad=aad)
    data = value + (tag or b"") if mode == "GCM" else value
    try:
        return TokenOutput(
            value=bytes(key.decrypt(data, mechanism=mechanism, mechanism_param=param))
        )
    except OPEN_FAILED:
        raise DecryptionFailed() from None


_KWP_LIMIT = (
    "This HSM token's CKM_AES_KEY_WRAP_PAD follows RFC 5649 only for keys of whole 8-byte blocks"
)
_KWP_PROBE_KEY = bytes(range(9))


def _wrap(session: Any, key: Any, mechanism: Mechanism, value: bytes) -> bytes:
    """``value`` wrapped under the token key ``key`` (as a short-lived carrier object)."""
    carrier = session.create_object({**_CARRIER, Attribute.VALUE: value})
    try:
        return bytes(key.wrap_key(carrier, mechanism=mechanism))
    finally:
        with suppress(p11.PKCS11Error):
            carrier.destroy()


def _kwp_conforms(session: Any) -> bool:
    """Whether the token's CKM_AES_KEY_WRAP_PAD wraps a 9-byte key as RFC 5649 does."""
    probe = session.generate_key(
        KeyType.AES,
        128,
        store=False,
        template={
            Attribute.TOKEN: False,
            Attribute.SENSITIVE: False,
            Attribute.EXTRACTABLE: True,
            Attribute.WRAP: True,
        },
    )
    try:
        answer = _wrap(session, probe, Mechanism.AES_KEY_WRAP_PAD, _KWP_PROBE_KEY)
        return answer == aes_key_wrap_with_padding(bytes(probe[Attribute.VALUE]), _KWP_PROBE_KEY)
    finally:
        with suppress(p11.PKCS11Error):
            probe.destroy()


def _check_lengths(operation: str, mode: str, value: bytes) -> None:
    """What ``crypto.aes_modes`` refuses, refused before the token sees it (see the docstring)."""
    size = len(value)
    if operation == "wrapKey" and mode == "KW" and (size < 16 or size % 8):
        raise ValueError(
            "AES key wrap (RFC 3394) wraps a key of 16 bytes or more in whole 8-byte blocks; "
            f"the key given is {size} bytes"
        )
    if operation == "wrapKey" and mode == "KWP" and not size:
        raise ValueError("the key to wrap must not be empty")
    if operation == "unwrapKey" and (size < (24 if mode == "KW" else 16) or size % 8):
        raise DecryptionFailed()
    if operation == "encrypt" and mode == "CBC" and (not size or size % _BLOCK):
        raise ValueError(
            "AES-CBC without padding encrypts whole 16-byte blocks (one or more); the plaintext is "
            f"{size} bytes (use the CBCPAD algorithm for other lengths)"
        )
    if operation == "decrypt" and mode in ("CBC", "CBCPAD") and (not size or size % _BLOCK):
        raise DecryptionFailed()
