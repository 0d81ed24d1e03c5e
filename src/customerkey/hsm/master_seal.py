"""The installation's master key sealed by the HSM (auto-unseal): the format of
``master.key.sealed``, unsealing it as a process starts, and the crash-safe moves between
``master.key`` and ``master.key.sealed`` (``customerkey master-key seal`` / ``unseal``).

The seal key is an AES-256 token object labelled ``customerkey-master-seal`` (made on the first
seal: private, sensitive, never extractable, encrypt/decrypt only); the 32-byte master key is
encrypted inside the token with ``CKM_AES_GCM``, so it never exists on disk once sealed.

``master.key.sealed`` (0600, written atomically), all lengths in bytes::

    magic        8   b"CKMKSEAL"
    version      1   1
    id length    1   n (16)
    CKA_ID       n   the seal key's object id
    label length 1   m
    CKA_LABEL    m   UTF-8
    key id       8   the first 8 bytes of the master key's fingerprint (``home.master_key_id_of``)
    nonce       12   random, one per seal
    ciphertext  48   AES-GCM of the master key, 16-byte tag last

The GCM additional data is every byte before the nonce, so the header cannot be altered
either; after opening, the key id must match the key. A file that does not open raises
``MasterKeyNotUnsealed`` (never saying why); a token without the seal key, or no token,
``HsmNotReady`` naming the setting. Nothing ever falls back to anything else.

Moves (``seal_home``, ``unseal_home``) write the new form, fsync it and the folder, read it
back and check it against the key in memory, and only then remove the old form: a crash at any
step (``step`` names each one, for tests) leaves a home that opens, with master.key, the
sealed file, or both (master.key is then used; rerunning the move finishes it).
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from customerkey.actor import Actor
from customerkey.audit.log import AuditLog
from customerkey.config import Settings
from customerkey.errors import DecryptionFailed, HsmNotReady, MasterKeyNotUnsealed
from customerkey.home import MASTER_KEY_BYTES, Home, master_key_id_of, write_private_file
from customerkey.rng import Rng

if TYPE_CHECKING:
    from customerkey.hsm.pkcs11 import Pkcs11Protector
    from customerkey.storage.database import Database

__all__ = [
    "SEAL_KEY_LABEL",
    "SealToken",
    "SealedMasterKey",
    "open_seal_token",
    "record_move",
    "seal_home",
    "unseal_home",
    "unseal_master_key",
]

MAGIC = b"CKMKSEAL"
VERSION = 1
SEAL_KEY_LABEL = "customerkey-master-seal"
NONCE_BYTES = 12
TAG_BYTES = 16
KEY_ID_BYTES = 8

Step = Callable[[str], None]


@runtime_checkable
class SealToken(Protocol):
    """What sealing needs of a token (``hsm.pkcs11.Pkcs11Protector`` has it)."""

    def seal_key(self, label: str, *, create: bool) -> bytes | None: ...

    def seal_encrypt(
        self, object_id: bytes, plaintext: bytes, nonce: bytes, aad: bytes
    ) -> bytes: ...

    def seal_decrypt(
        self, object_id: bytes, ciphertext: bytes, nonce: bytes, aad: bytes
    ) -> bytes: ...


@dataclass(frozen=True)
class SealedMasterKey:
    object_id: bytes
    label: str
    key_id: bytes
    nonce: bytes
    ciphertext: bytes

    def header(self) -> bytes:
        label = self.label.encode()
        return b"".join(
            (
                MAGIC,
                bytes([VERSION, len(self.object_id)]),
                self.object_id,
                bytes([len(label)]),
                label,
                self.key_id,
            )
        )

    def to_bytes(self) -> bytes:
        return self.header() + self.nonce + self.ciphertext

    @classmethod
    def from_bytes(cls, data: bytes) -> SealedMasterKey:
        """The parsed file; ``MasterKeyNotUnsealed`` for anything that is not one."""
        try:
            if data[:8] != MAGIC or data[8] != VERSION:
                raise ValueError
            n = data[9]
            object_id = data[10 : 10 + n]
            at = 10 + n
            m = data[at]
            label = data[at + 1 : at + 1 + m].decode()
            at += 1 + m
            key_id = data[at : at + KEY_ID_BYTES]
            nonce = data[at + KEY_ID_BYTES : at + KEY_ID_BYTES + NONCE_BYTES]
            ciphertext = data[at + KEY_ID_BYTES + NONCE_BYTES :]
        except (IndexError, ValueError):
            raise MasterKeyNotUnsealed() from None
        if (
            len(object_id) != n
            or len(key_id) != KEY_ID_BYTES
            or len(nonce) != NONCE_BYTES
            or len(ciphertext) != MASTER_KEY_BYTES + TAG_BYTES
        ):
            raise MasterKeyNotUnsealed()
        return cls(object_id, label, key_id, nonce, ciphertext)


def _key_id(master_key: bytes) -> bytes:
    return bytes.fromhex(master_key_id_of(master_key))[:KEY_ID_BYTES]


def seal(token: SealToken, master_key: bytes, rng: Rng) -> SealedMasterKey:
    """``master_key`` encrypted under the token's seal key (made on first use)."""
    object_id = token.seal_key(SEAL_KEY_LABEL, create=True)
    assert object_id is not None  # made when missing
    draft = SealedMasterKey(
        object_id, SEAL_KEY_LABEL, _key_id(master_key), rng.token_bytes(NONCE_BYTES), b""
    )
    ciphertext = token.seal_encrypt(object_id, master_key, draft.nonce, draft.header())
    return SealedMasterKey(draft.object_id, draft.label, draft.key_id, draft.nonce, ciphertext)


def unseal(token: SealToken, data: bytes, *, token_label: str | None) -> bytes:
    """The master key in ``data`` (the bytes of master.key.sealed)."""
    sealed = SealedMasterKey.from_bytes(data)
    held = token.seal_key(SEAL_KEY_LABEL, create=False)
    if held is None:
        raise HsmNotReady(
            f"The PKCS#11 token {token_label!r} holds no seal key ({SEAL_KEY_LABEL!r}), so it "
            "cannot unseal this home's master key: check CUSTOMERKEY_PKCS11_TOKEN_LABEL names "
            "the token that sealed it."
        )
    # The file's label and CKA_ID are authenticated with the rest: another id is an altered
    # file (or another token's), and says no more than any other failure to open.
    if not hmac.compare_digest(held, sealed.object_id):
        raise MasterKeyNotUnsealed()
    try:
        master_key = token.seal_decrypt(
            sealed.object_id, sealed.ciphertext, sealed.nonce, sealed.header()
        )
    except DecryptionFailed:
        raise MasterKeyNotUnsealed() from None
    if len(master_key) != MASTER_KEY_BYTES or not hmac.compare_digest(
        _key_id(master_key), sealed.key_id
    ):
        raise MasterKeyNotUnsealed()
    return master_key


def open_seal_token(settings: Settings, rng: Rng) -> Pkcs11Protector:
    """The token named by the PKCS#11 settings, for sealing; ``HsmNotReady`` naming the
    setting at fault."""
    if not settings.pkcs11_module:
        raise HsmNotReady(
            "This home's master key is sealed by an HSM (master.key.sealed) and "
            "CUSTOMERKEY_PKCS11_MODULE is not set: set it, CUSTOMERKEY_PKCS11_TOKEN_LABEL and "
            "the PIN (CUSTOMERKEY_PKCS11_PIN_FILE) of the token that sealed it."
        )
    from customerkey.hsm import open_token

    # This protector only seals and unseals: RSA1_5's rejection secret (derived from the
    # master key, which it is about to unseal) is never used by it.
    return open_token(settings, rejection_key=bytes(32), rng=rng)


def unseal_master_key(settings: Settings, home: Home, rng: Rng) -> bytes:
    """The master key of a sealed home, unsealed by the token of ``settings``."""
    data = home.sealed_master_key()
    token = open_seal_token(settings, rng)
    try:
        return unseal(token, data, token_label=settings.pkcs11_token_label)
    finally:
        token.close()


def _noop(_name: str) -> None:
    return None


def seal_home(
    home: Home, token: SealToken, rng: Rng, *, token_label: str | None, step: Step = _noop
) -> SealedMasterKey:
    """Replace master.key by master.key.sealed; returns what was written."""
    master_key = home.master_key()
    sealed = seal(token, master_key, rng)
    write_private_file(home.sealed_master_key_file, sealed.to_bytes())
    step("sealed-written")
    home.sync()
    step("folder-synced")
    reread = home.sealed_master_key()
    if unseal(token, reread, token_label=token_label) != master_key:
        raise MasterKeyNotUnsealed("The sealed master key did not read back; nothing removed.")
    step("verified")
    home.master_key_file.unlink()
    step("master-key-removed")
    home.sync()
    return sealed


def unseal_home(
    home: Home, token: SealToken, *, token_label: str | None, step: Step = _noop
) -> SealedMasterKey:
    """Replace master.key.sealed by master.key (the same 32 bytes); returns what was there."""
    data = home.sealed_master_key()
    master_key = unseal(token, data, token_label=token_label)
    if home.master_key_file.exists():
        if home.master_key() != master_key:  # both forms present and different: never guess
            raise MasterKeyNotUnsealed(
                "master.key and master.key.sealed hold different keys; nothing changed."
            )
    else:
        write_private_file(home.master_key_file, master_key)
        step("master-key-written")
    home.sync()
    step("folder-synced")
    if home.master_key() != master_key:
        raise MasterKeyNotUnsealed("master.key did not read back; nothing removed.")
    step("verified")
    home.sealed_master_key_file.unlink()
    step("sealed-removed")
    home.sync()
    return SealedMasterKey.from_bytes(data)


def record_move(
    db: Database, audit: AuditLog, actor: Actor, operation: str, sealed: SealedMasterKey
) -> None:
    """The audit record of a finished move (``MasterKeySeal`` or ``MasterKeyUnseal``)."""
    with db.transaction() as session:
        audit.append(
            session,
            principal=actor.audit_name,
            operation=operation,
            actor_id=actor.object_id or None,
            details={"sealKeyLabel": sealed.label, "sealKeyId": sealed.object_id.hex()},
        )
