"""Key versions held in an HSM: the ``HsmProtector`` seam and the operations on such a key.

Software keys are sealed under the master key (``vault.protection``). With an HSM configured
(``customerkey.hsm`` implements this over PKCS#11), the key types it ``serves`` (RSA-HSM,
EC-HSM, oct-HSM) are made inside it instead, as sensitive, non-extractable token objects: the key
version row then names its token object (``hsm_object_id``, the object's ``CKA_ID`` in hex),
keeps its public key as any version does, and holds no sealed private key (an empty
``sealed_private_key``). Public operations (encrypt, wrapKey, verify) run in software on the
public key; every private one (decrypt, unwrapKey, sign) runs in the token (``perform``).
An oct-HSM version has no public key: the row keeps its size only, and every operation
(AES key wrap, GCM, CBC) runs in the token (``TokenSecretKey``).

Failure contract, for every method of a protector and of its keys:

- ``HsmUnavailable`` (503, a *system* error, as a vault outage is): the token failed or did
  not answer. Nothing is done in software instead, ever.
- ``DecryptionFailed()``: a ciphertext that does not open (says nothing about why).
- ``BadParameter``: something this token cannot do (a curve, a size, an algorithm it lacks).

Opening a protector (``customerkey.hsm.open_protector``) raises ``HsmNotReady`` naming the
setting at fault (never the PIN).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from cryptography.hazmat.primitives.asymmetric import ec, rsa

from customerkey.crypto.ec import curve_bits, curve_name, ec_public_jwk_fields
from customerkey.crypto.key_material import PrivateMaterial
from customerkey.crypto.rsa import public_jwk_fields
from customerkey.crypto.rsa_encryption import rsa_encrypt
from customerkey.crypto.signatures import verify_digest

__all__ = [
    "AesKeySize",
    "GeneratedKey",
    "HsmProtector",
    "PublicKey",
    "SealedBackup",
    "TokenKey",
    "TokenSecretKey",
    "perform",
    "public_fields",
]

PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey


@runtime_checkable
class TokenKey(Protocol):
    """A key version's private key inside the token."""

    @property
    def object_id(self) -> str: ...  # CKA_ID, hex

    def public_key(self) -> PublicKey: ...

    def decrypt(self, ciphertext: bytes, alg: str) -> bytes:
        """RSA-OAEP-256, RSA-OAEP or RSA1_5 (``vault.key_types``' names)."""
        ...

    def sign(self, digest: bytes, alg: str) -> bytes:
        """A Key Vault signature of ``digest`` (RSA: the modulus-length integer; ECDSA:
        ``r || s``, ``crypto.signatures``)."""
        ...


@runtime_checkable
class TokenSecretKey(TokenKey, Protocol):
    """An oct-HSM version's AES key inside the token (``public_key``, ``decrypt`` and ``sign``
    of ``TokenKey`` refuse: it has no public half)."""

    @property
    def key_size(self) -> int: ...  # bits

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
        """A checked AES request (``vault.key_types``' names) run by the token; an encrypt's
        ``iv`` is the caller's (drawn from the injected ``Rng``)."""
        ...


@dataclass(frozen=True)
class AesKeySize:
    """What the vault knows of an oct-HSM token key: its size (there is no public key)."""

    bits: int


@dataclass(frozen=True)
class GeneratedKey:
    object_id: str  # CKA_ID, hex
    public: PublicKey | AesKeySize


class HsmProtector(Protocol):
    @property
    def serves(self) -> tuple[str, ...]:
        """The key types made and used inside the token."""
        ...

    def describe(self) -> list[str]:
        """Lines saying which token this is and how each operation is done (mechanisms)."""
        ...

    def generate(self, kty: str, shape: int | str, *, label: str) -> GeneratedKey:
        """A new key pair inside the token: ``shape`` is the RSA size in bits or the EC curve
        (JWK name); ``label`` becomes its ``CKA_LABEL``."""
        ...

    def key(self, object_id: str, kty: str, public: PublicKey) -> TokenKey:
        """The token key ``object_id`` of type ``kty``, whose public key is ``public`` (as the
        vault stored and bound it)."""
        ...

    def secret_key(self, object_id: str, bits: int) -> TokenSecretKey:
        """The oct-HSM token key ``object_id`` of ``bits`` (as the vault stored and bound it)."""
        ...

    def import_material(self, kty: str, material: PrivateMaterial, *, label: str) -> GeneratedKey:
        """Key material a JWK import carried in plaintext, made a token object as a generated
        version of ``kty`` is (Key Vault's import with ``hsm: true``)."""
        ...

    def generate_kek(self, bits: int, *, label: str) -> GeneratedKey:
        """A BYOK key exchange key: an RSA pair whose private key only unwraps (``vault.byok``);
        ``BadParameter`` when the token lacks what a BYOK unwrap needs."""
        ...

    def import_wrapped(
        self, kek_object_id: str, kek_bits: int, ciphertext: bytes, kty: str, *, label: str
    ) -> GeneratedKey:
        """Unwrap a BYOK ciphertext (``CKM_RSA_AES_KEY_WRAP`` to the KEK ``kek_object_id``)
        straight into the token as a key of ``kty`` (RSA-HSM, EC-HSM: its public key is read or
        recovered in the token; oct-HSM: a raw AES key); ``DecryptionFailed()`` when it does not
        open or holds another type of key (nothing is then left in the token)."""
        ...

    # -------------------------------------------------- the security domain (hsm.security_domain)

    def security_domain(self) -> str | None:
        """The token's security domain identifier (its key check value, hex), or None."""
        ...

    def export_version(self, object_id: str) -> bytes:
        """The private key of ``object_id`` wrapped under the security domain, in the token
        (``KeyNotBackupable`` when it cannot be)."""
        ...

    def import_version(
        self, wrapped: bytes, kty: str, public: PublicKey | AesKeySize, *, label: str
    ) -> str:
        """A token object (its new ``CKA_ID``, hex) unwrapped from ``export_version``'s output
        under the security domain, checked against ``public`` (an oct-HSM key: its size);
        ``DecryptionFailed`` otherwise."""
        ...

    def seal_backup(self, plaintext: bytes, aad: bytes) -> SealedBackup:
        """``plaintext`` sealed in the token under a fresh key wrapped by the security domain."""
        ...

    def open_backup(self, sealed: SealedBackup, aad: bytes) -> bytes:
        """The inverse of ``seal_backup``: ``SecurityDomainMismatch`` for another domain,
        ``DecryptionFailed`` when it does not open."""
        ...

    def destroy(self, object_id: str) -> None:
        """Destroy every token object with ``CKA_ID`` ``object_id`` (none left is no error)."""
        ...

    def release_before_fork(self) -> None:
        """Before ``os.fork()``: close every session and finalise the module, since no HSM
        state may cross a fork (``reopen_after_fork`` in the child)."""
        ...

    def reopen_after_fork(self) -> None:
        """In a forked process: initialise the module, log in and open sessions of its own."""
        ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class SealedBackup:
    """A backup payload sealed under the security domain ``domain``: ``key`` is the backup's
    AES-256 key wrapped under it (CKM_AES_KEY_WRAP_PAD), ``ciphertext`` AES-GCM under that key
    (tag appended) with ``nonce``."""

    domain: str
    key: bytes
    nonce: bytes
    ciphertext: bytes


@dataclass(frozen=True)
class TokenOutput:
    value: bytes = b""
    verified: bool | None = None
    iv: bytes | None = None  # AES encryption: what Key Vault answers with the ciphertext
    tag: bytes | None = None
    aad: bytes | None = None


def perform(
    operation: str, alg: str, value: bytes, signature: bytes | None, key: TokenKey
) -> TokenOutput:
    """A checked request (``vault.key_types.check_request``/``check_key``) on a token key."""
    if operation == "sign":
        return TokenOutput(value=key.sign(value, alg))
    public = key.public_key()
    if operation == "verify":
        assert signature is not None
        return TokenOutput(verified=verify_digest(public, alg, value, signature))
    if not isinstance(public, rsa.RSAPublicKey):
        raise ValueError(f"an EC key does not {operation}")
    if operation in ("encrypt", "wrapKey"):
        return TokenOutput(value=rsa_encrypt(public, value, alg))
    return TokenOutput(value=key.decrypt(value, alg))


def public_fields(public: PublicKey | AesKeySize) -> tuple[dict[str, str], int]:
    """(the public JWK members a version row stores, its key size in bits) of a token key."""
    if isinstance(public, AesKeySize):
        return {}, public.bits
    if isinstance(public, rsa.RSAPublicKey):
        return public_jwk_fields(public), public.key_size
    return ec_public_jwk_fields(public), curve_bits(curve_name(public))
