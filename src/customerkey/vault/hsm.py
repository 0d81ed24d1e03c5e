"""Key versions held in an HSM: the ``HsmProtector`` seam and the operations on such a key.

Software keys are sealed under the master key (``vault.protection``). With an HSM configured
(``customerkey.hsm`` implements this over PKCS#11), the key types it ``serves`` (RSA-HSM,
EC-HSM) are made inside it instead, as sensitive, non-extractable token objects: the key
version row then names its token object (``hsm_object_id``, the object's ``CKA_ID`` in hex),
keeps its public key as any version does, and holds no sealed private key (an empty
``sealed_private_key``). Public operations (encrypt, wrapKey, verify) run in software on the
public key; every private one (decrypt, unwrapKey, sign) runs in the token (``perform``).

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
from customerkey.crypto.rsa import public_jwk_fields
from customerkey.crypto.rsa_encryption import rsa_encrypt
from customerkey.crypto.signatures import verify_digest

__all__ = ["GeneratedKey", "HsmProtector", "PublicKey", "TokenKey", "perform", "public_fields"]

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


@dataclass(frozen=True)
class GeneratedKey:
    object_id: str  # CKA_ID, hex
    public: PublicKey


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

    def close(self) -> None: ...


@dataclass(frozen=True)
class TokenOutput:
    value: bytes = b""
    verified: bool | None = None


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


def public_fields(public: PublicKey) -> tuple[dict[str, str], int]:
    """(the public JWK members a version row stores, its key size in bits) of a token key."""
    if isinstance(public, rsa.RSAPublicKey):
        return public_jwk_fields(public), public.key_size
    return ec_public_jwk_fields(public), curve_bits(curve_name(public))
