"""Key types, key operations and algorithms as Azure Key Vault and Managed HSM define them, and
the cryptographic operation itself on a key version's material.

Key types (``kty``) and what each may do:

==============  =====================  ==========================================  ==========
kty             made as                key_ops allowed (and the default)           algorithms
==============  =====================  ==========================================  ==========
RSA, RSA-HSM    2048/3072/4096 bits    encrypt decrypt sign verify wrapKey         RSA-OAEP-256
                                       unwrapKey                                   RSA-OAEP
                                                                                   RSA1_5, RS*,
                                                                                   PS*
EC, EC-HSM      crv P-256, P-256K,     sign verify                                 ES256,
                P-384, P-521                                                       ES256K,
                                                                                   ES384, ES512
oct-HSM         key_size 128/192/256   encrypt decrypt wrapKey unwrapKey           A*KW, A*GCM,
                                                                                   A*CBC(PAD),
                                                                                   CKM_AES_*
==============  =====================  ==========================================  ==========

Plain ``oct`` (a software symmetric key) is refused, as Key Vault does: only Managed HSM's
``oct-HSM`` exists. An ECDSA algorithm needs its own curve (ES256 P-256, ES256K P-256K, ES384
P-384, ES512 P-521); an AES algorithm naming a size needs a key of that size.

Refusals: a request that is wrong whatever the key (unknown algorithm for the operation, a
digest of the wrong length, an ``iv``/``aad``/``tag`` the algorithm does not take) is a 400
``BadParameter`` before any key is looked up; an algorithm that does not fit the key's type,
curve or size is a 400 ``BadParameter`` naming both; an operation missing from the key's
``key_ops`` is a 403 (``KeyNotUsable``, checked in ``service.operations``).

``RSA1_5`` decrypts and unwraps (what clients wrapped locally with it), and encrypts; a
server-side ``wrapKey`` with it is refused: the vault makes no new RSA1_5 key wraps.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric import ec, rsa

from customerkey.crypto import aes_modes
from customerkey.crypto.aes_modes import AesAlgorithm, aes_info, parse_aes_algorithm
from customerkey.crypto.key_material import (
    EC_KTYS,
    OCT_KTYS,
    RSA_KTYS,
    PrivateMaterial,
    SymmetricKey,
    key_family,
)
from customerkey.crypto.rsa_encryption import (
    RsaEncryptionAlgorithm,
    rsa_decrypt,
    rsa_encrypt,
)
from customerkey.crypto.signatures import (
    SignatureAlgorithm,
    check_digest,
    sign_digest,
    signature_info,
    verify_digest,
)
from customerkey.errors import BadParameter
from customerkey.rng import Rng

KEY_TYPES = RSA_KTYS + EC_KTYS + OCT_KTYS
ALL_KEY_OPS = ("encrypt", "decrypt", "sign", "verify", "wrapKey", "unwrapKey")
KEY_OPS_BY_FAMILY: dict[str, tuple[str, ...]] = {
    "RSA": ALL_KEY_OPS,
    "EC": ("sign", "verify"),
    "oct": ("encrypt", "decrypt", "wrapKey", "unwrapKey"),
}
_FAMILY_WORDS = {"RSA": "an RSA key", "EC": "an EC key", "oct": "an oct-HSM key"}
_KTY_BY_LOWER = {kty.lower(): kty for kty in KEY_TYPES}
CRYPTO_OPERATIONS = ("encrypt", "decrypt", "wrapKey", "unwrapKey", "sign", "verify")
_RSA_ENCRYPTION = tuple(alg.value for alg in RsaEncryptionAlgorithm)
_AES_WRAP = tuple(alg.value for alg in AesAlgorithm if aes_info(alg).wraps)
_AES_ENCRYPTION = tuple(alg.value for alg in AesAlgorithm if not aes_info(alg).wraps)
# Every algorithm name each operation takes (for some key type).
ALGORITHMS: dict[str, tuple[str, ...]] = {
    "encrypt": _RSA_ENCRYPTION + _AES_ENCRYPTION,
    "decrypt": _RSA_ENCRYPTION + _AES_ENCRYPTION,
    "wrapKey": _RSA_ENCRYPTION + _AES_WRAP,
    "unwrapKey": _RSA_ENCRYPTION + _AES_WRAP,
    "sign": tuple(alg.value for alg in SignatureAlgorithm),
    "verify": tuple(alg.value for alg in SignatureAlgorithm),
}


def normalize_kty(kty: str) -> str:
    """The canonical key type for ``kty`` (case-insensitive); ``BadParameter`` otherwise."""
    canonical = _KTY_BY_LOWER.get(kty.lower()) if isinstance(kty, str) else None
    if canonical is not None:
        return canonical
    if isinstance(kty, str) and kty.lower() == "oct":
        raise BadParameter(
            "Key type 'oct' (a software symmetric key) is not supported in a key vault; "
            "symmetric keys are 'oct-HSM' (key_size 128, 192 or 256)."
        )
    raise BadParameter(f"Key type '{kty}' is not supported; use one of: {', '.join(KEY_TYPES)}.")


def family_of(kty: str) -> str:
    return key_family(normalize_kty(kty))


def key_ops_for(family: str, key_ops: Sequence[str] | None) -> tuple[str, ...]:
    """The key's operations: Azure's default for its family, or ``key_ops`` checked against
    what the family can do (canonical spelling, duplicates dropped)."""
    allowed = KEY_OPS_BY_FAMILY[family]
    if key_ops is None:
        return allowed
    by_lower = {op.lower(): op for op in ALL_KEY_OPS}
    ops: list[str] = []
    for op in key_ops:
        canonical = by_lower.get(op.lower()) if isinstance(op, str) else None
        if canonical is None or canonical not in allowed:
            raise BadParameter(
                f"Key operation '{op}' is not valid for {_FAMILY_WORDS[family]}; use: "
                + ", ".join(allowed)
                + "."
            )
        if canonical not in ops:
            ops.append(canonical)
    return tuple(ops)


def known_key_ops(key_ops: Sequence[str]) -> None:
    """``BadParameter`` unless every name is a key operation of some key type."""
    names = {op.lower() for op in ALL_KEY_OPS}
    for op in key_ops:
        if not isinstance(op, str) or op.lower() not in names:
            raise BadParameter(
                f"Key operation '{op}' is not valid; use: " + ", ".join(ALL_KEY_OPS) + "."
            )


@dataclass(frozen=True)
class CryptoRequest:
    """One crypto call's inputs. ``value``: the plaintext, ciphertext or key to (un)wrap; for
    sign and verify, the digest. ``signature``: what verify checks."""

    operation: str
    algorithm: str
    value: bytes
    iv: bytes | None = None
    aad: bytes | None = None
    tag: bytes | None = None
    signature: bytes | None = None


@dataclass(frozen=True)
class CryptoOutput:
    value: bytes = b""
    iv: bytes | None = None
    tag: bytes | None = None
    aad: bytes | None = None
    verified: bool | None = None


def check_request(request: CryptoRequest) -> None:
    """What is wrong with the request whatever the key (see the module docstring)."""
    operation, alg = request.operation, request.algorithm
    if operation not in CRYPTO_OPERATIONS:
        raise BadParameter(f"Unknown key operation '{operation}'.")
    if alg not in ALGORITHMS[operation]:
        raise BadParameter(
            f"Algorithm '{alg}' is not supported for {operation}; use one of: "
            + ", ".join(ALGORITHMS[operation])
            + "."
        )
    if operation in ("sign", "verify"):
        try:
            check_digest(alg, request.value)
        except ValueError as exc:
            raise BadParameter(f"Cannot {operation}: {exc}.") from None
        _no_extras(request, alg)
        return
    if alg in _AES_ENCRYPTION:
        _check_aes_fields(request, aes_info(alg).mode)
    else:
        _no_extras(request, alg)


def check_key(request: CryptoRequest, kty: str, crv: str | None, key_size: int) -> None:
    """``BadParameter`` unless the algorithm fits this key's type, curve and size."""
    family = key_family(kty)
    alg = request.algorithm
    if request.operation in ("sign", "verify"):
        info = signature_info(alg)
        if info.key_family != family or (info.curve is not None and info.curve != crv):
            needs = f"an EC key on curve {info.curve}" if info.curve else "an RSA key"
            have = f"{kty} key" + (f" on curve {crv}" if crv else "")
            raise BadParameter(
                f"Algorithm '{alg}' cannot be used with this {have}: {alg} needs {needs}."
            )
        return
    if family == "EC":
        raise BadParameter(
            f"Operation {request.operation} is not supported by an EC key ({kty}); EC keys "
            "only sign and verify."
        )
    if family == "RSA" and alg not in _RSA_ENCRYPTION:
        raise BadParameter(
            f"Algorithm '{alg}' cannot be used with an RSA key; use one of: "
            + ", ".join(a for a in ALGORITHMS[request.operation] if a in _RSA_ENCRYPTION)
            + "."
        )
    if family == "oct":
        if alg in _RSA_ENCRYPTION:
            raise BadParameter(
                f"Algorithm '{alg}' cannot be used with an oct-HSM key; use one of: "
                + ", ".join(a for a in ALGORITHMS[request.operation] if a not in _RSA_ENCRYPTION)
                + "."
            )
        bits = aes_info(alg).key_bits
        if bits is not None and bits != key_size:
            raise BadParameter(
                f"Algorithm '{alg}' needs a {bits}-bit AES key; this oct-HSM key is "
                f"{key_size} bits."
            )


def perform(request: CryptoRequest, material: PrivateMaterial, rng: Rng) -> CryptoOutput:
    """Run the checked request on ``material``. Raises ``ValueError`` for input the algorithm
    cannot take (too long, not whole blocks) and ``DecryptionFailed`` for what does not open."""
    operation, alg, value = request.operation, request.algorithm, request.value
    if operation == "sign":
        if isinstance(material, SymmetricKey):
            raise ValueError("an oct-HSM key does not sign")
        return CryptoOutput(value=sign_digest(material, alg, value))
    if operation == "verify":
        if isinstance(material, SymmetricKey):
            raise ValueError("an oct-HSM key does not verify")
        public = material.public_key()
        assert request.signature is not None
        return CryptoOutput(verified=verify_digest(public, alg, value, request.signature))
    if isinstance(material, rsa.RSAPrivateKey):
        if operation in ("encrypt", "wrapKey"):
            return CryptoOutput(value=rsa_encrypt(material.public_key(), value, alg))
        return CryptoOutput(value=rsa_decrypt(material, value, alg))
    if isinstance(material, ec.EllipticCurvePrivateKey):
        raise ValueError(f"an EC key does not {operation}")
    return _aes(request, material.key, rng)


def _aes(request: CryptoRequest, key: bytes, rng: Rng) -> CryptoOutput:
    operation, value = request.operation, request.value
    algorithm = parse_aes_algorithm(request.algorithm)
    mode = aes_info(algorithm).mode
    if mode == "KW":
        if operation == "wrapKey":
            return CryptoOutput(value=aes_modes.aes_kw_wrap(key, value))
        return CryptoOutput(value=aes_modes.aes_kw_unwrap(key, value))
    if mode == "KWP":
        if operation == "wrapKey":
            return CryptoOutput(value=aes_modes.aes_kwp_wrap_any(key, value))
        return CryptoOutput(value=aes_modes.aes_kwp_unwrap_any(key, value))
    if mode == "GCM":
        if operation == "encrypt":
            iv = request.iv or rng.token_bytes(aes_modes.GCM_IV_SIZE)
            ciphertext, tag = aes_modes.aes_gcm_encrypt(key, value, iv, request.aad)
            return CryptoOutput(value=ciphertext, iv=iv, tag=tag, aad=request.aad)
        assert request.iv is not None and request.tag is not None
        plaintext = aes_modes.aes_gcm_decrypt(key, value, request.iv, request.tag, request.aad)
        return CryptoOutput(value=plaintext)
    pad = mode == "CBCPAD"
    if operation == "encrypt":
        iv = request.iv or rng.token_bytes(aes_modes.CBC_IV_SIZE)
        return CryptoOutput(value=aes_modes.aes_cbc_encrypt(key, value, iv, pad=pad), iv=iv)
    assert request.iv is not None
    return CryptoOutput(value=aes_modes.aes_cbc_decrypt(key, value, request.iv, pad=pad))


def _no_extras(request: CryptoRequest, alg: str) -> None:
    for name, given in (("iv", request.iv), ("aad", request.aad), ("tag", request.tag)):
        if given is not None:
            raise BadParameter(
                f"'{name}' is not a parameter of {alg}; only AES algorithms take it."
            )


def _check_aes_fields(request: CryptoRequest, mode: str) -> None:
    alg, encrypting = request.algorithm, request.operation == "encrypt"
    if mode == "GCM":
        if request.iv is not None and len(request.iv) != aes_modes.GCM_IV_SIZE:
            raise BadParameter(f"The 'iv' of {alg} is 12 bytes; got {len(request.iv)}.")
        if encrypting and request.tag is not None:
            raise BadParameter(f"'tag' is not a parameter of {alg} encrypt; it is returned.")
        if not encrypting and (request.iv is None or request.tag is None):
            raise BadParameter(f"{alg} decrypt needs the 'iv' and 'tag' the encryption returned.")
        if request.tag is not None and len(request.tag) != aes_modes.GCM_TAG_SIZE:
            raise BadParameter(f"The 'tag' of {alg} is 16 bytes; got {len(request.tag)}.")
        return
    if request.aad is not None or request.tag is not None:
        raise BadParameter(f"{alg} takes no 'aad' or 'tag' (only AES-GCM does).")
    if request.iv is not None and len(request.iv) != aes_modes.CBC_IV_SIZE:
        raise BadParameter(f"The 'iv' of {alg} is 16 bytes; got {len(request.iv)}.")
    if not encrypting and request.iv is None:
        raise BadParameter(f"{alg} decrypt needs the 'iv' the encryption used.")
