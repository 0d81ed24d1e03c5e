"""Signatures over a digest, as Azure Key Vault's ``sign`` and ``verify`` define them.

Key Vault signs a digest the caller computed, never the message: ``value`` (sign) and
``digest`` (verify) are the raw hash output, whose length must be the algorithm's hash length.
The algorithms (JWA names, RFC 7518 section 3, plus ES256K from RFC 8812):

=======  ============================================  ========  ==============
alg      scheme                                        hash      digest bytes
=======  ============================================  ========  ==============
RS256    RSASSA-PKCS1-v1_5 (RFC 8017 section 8.2)      SHA-256   32
RS384    RSASSA-PKCS1-v1_5                             SHA-384   48
RS512    RSASSA-PKCS1-v1_5                             SHA-512   64
PS256    RSASSA-PSS, MGF1 with the same hash,          SHA-256   32
PS384    salt length = digest length                   SHA-384   48
PS512    (RFC 8017 section 8.1, RFC 7518 3.5)          SHA-512   64
ES256    ECDSA on P-256                                SHA-256   32
ES256K   ECDSA on secp256k1 (JWK crv "P-256K")         SHA-256   32
ES384    ECDSA on P-384                                SHA-384   48
ES512    ECDSA on P-521                                SHA-512   64
=======  ============================================  ========  ==============

Wire format of a signature: RSA signatures are the modulus-length big-endian integer of RFC
8017. ECDSA signatures are **not DER**: they are ``r || s``, each the curve's coordinate size
(32, 32, 48, 66 bytes), unsigned big-endian with leading zeros kept (RFC 7518 section 3.4), so
64, 64, 96 or 132 bytes. ``verify_digest`` refuses any other length as a bad signature.

pyca/cryptography does the arithmetic, fed through ``Prehashed`` so it does not hash again.
ECDSA and PSS are randomized; RS* is deterministic. Caller mistakes (an unknown algorithm, a
digest of the wrong length, a key of the wrong type or curve) raise ``ValueError``; a
signature that does not verify is ``False``, never an exception.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, utils

from customerkey.crypto.ec import coordinate_size, curve_name

__all__ = [
    "SignatureAlgorithm",
    "SignatureInfo",
    "check_digest",
    "ecdsa_der_to_raw",
    "ecdsa_raw_to_der",
    "parse_signature_algorithm",
    "sign_digest",
    "signature_info",
    "verify_digest",
]


class SignatureAlgorithm(StrEnum):
    RS256 = "RS256"
    RS384 = "RS384"
    RS512 = "RS512"
    PS256 = "PS256"
    PS384 = "PS384"
    PS512 = "PS512"
    ES256 = "ES256"
    ES256K = "ES256K"
    ES384 = "ES384"
    ES512 = "ES512"


@dataclass(frozen=True)
class SignatureInfo:
    scheme: str  # "RSA-PKCS1", "RSA-PSS" or "ECDSA"
    hash_name: str  # "SHA-256", ...
    digest_size: int
    curve: str | None = None  # the JWK curve an ECDSA algorithm requires

    @property
    def key_family(self) -> str:
        return "EC" if self.scheme == "ECDSA" else "RSA"


_INFO = {
    SignatureAlgorithm.RS256: SignatureInfo("RSA-PKCS1", "SHA-256", 32),
    SignatureAlgorithm.RS384: SignatureInfo("RSA-PKCS1", "SHA-384", 48),
    SignatureAlgorithm.RS512: SignatureInfo("RSA-PKCS1", "SHA-512", 64),
    SignatureAlgorithm.PS256: SignatureInfo("RSA-PSS", "SHA-256", 32),
    SignatureAlgorithm.PS384: SignatureInfo("RSA-PSS", "SHA-384", 48),
    SignatureAlgorithm.PS512: SignatureInfo("RSA-PSS", "SHA-512", 64),
    SignatureAlgorithm.ES256: SignatureInfo("ECDSA", "SHA-256", 32, "P-256"),
    SignatureAlgorithm.ES256K: SignatureInfo("ECDSA", "SHA-256", 32, "P-256K"),
    SignatureAlgorithm.ES384: SignatureInfo("ECDSA", "SHA-384", 48, "P-384"),
    SignatureAlgorithm.ES512: SignatureInfo("ECDSA", "SHA-512", 64, "P-521"),
}
_HASHES: dict[str, type[hashes.HashAlgorithm]] = {
    "SHA-256": hashes.SHA256,
    "SHA-384": hashes.SHA384,
    "SHA-512": hashes.SHA512,
}


def parse_signature_algorithm(name: object) -> SignatureAlgorithm:
    """The algorithm named ``name`` (exact, case-sensitive JWA name)."""
    try:
        if not isinstance(name, str):
            raise ValueError(name)
        return SignatureAlgorithm(name)
    except ValueError:
        supported = ", ".join(alg.value for alg in SignatureAlgorithm)
        raise ValueError(
            f"unsupported signature algorithm {name!r}; supported: {supported}"
        ) from None


def signature_info(alg: SignatureAlgorithm | str) -> SignatureInfo:
    return _INFO[parse_signature_algorithm(alg)]


def check_digest(alg: SignatureAlgorithm | str, digest: bytes) -> None:
    """``ValueError`` unless ``digest`` has the length of ``alg``'s hash."""
    info = signature_info(alg)
    if len(digest) != info.digest_size:
        raise ValueError(
            f"{SignatureAlgorithm(alg).value} signs a {info.hash_name} digest of "
            f"{info.digest_size} bytes; the digest given is {len(digest)} bytes"
        )


def sign_digest(
    private_key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey,
    alg: SignatureAlgorithm | str,
    digest: bytes,
) -> bytes:
    """Sign ``digest`` with ``alg``; ECDSA answers ``r || s`` (see the module docstring)."""
    algorithm = parse_signature_algorithm(alg)
    info = _INFO[algorithm]
    check_digest(algorithm, digest)
    prehashed = utils.Prehashed(_HASHES[info.hash_name]())
    if info.scheme == "ECDSA":
        if not isinstance(private_key, ec.EllipticCurvePrivateKey):
            raise ValueError(f"{algorithm.value} needs an EC key")
        _check_curve(algorithm, info, private_key)
        der = private_key.sign(digest, ec.ECDSA(prehashed))
        return ecdsa_der_to_raw(der, curve_name(private_key))
    if not isinstance(private_key, rsa.RSAPrivateKey):
        raise ValueError(f"{algorithm.value} needs an RSA key")
    return private_key.sign(digest, _rsa_padding(info), prehashed)


def verify_digest(
    public_key: rsa.RSAPublicKey | ec.EllipticCurvePublicKey,
    alg: SignatureAlgorithm | str,
    digest: bytes,
    signature: bytes,
) -> bool:
    """Whether ``signature`` is a valid ``alg`` signature of ``digest`` under ``public_key``."""
    algorithm = parse_signature_algorithm(alg)
    info = _INFO[algorithm]
    check_digest(algorithm, digest)
    prehashed = utils.Prehashed(_HASHES[info.hash_name]())
    try:
        if info.scheme == "ECDSA":
            if not isinstance(public_key, ec.EllipticCurvePublicKey):
                raise ValueError(f"{algorithm.value} needs an EC key")
            _check_curve(algorithm, info, public_key)
            crv = curve_name(public_key)
            if len(signature) != 2 * coordinate_size(crv):
                return False
            der = ecdsa_raw_to_der(signature, crv)
            public_key.verify(der, digest, ec.ECDSA(prehashed))
        else:
            if not isinstance(public_key, rsa.RSAPublicKey):
                raise ValueError(f"{algorithm.value} needs an RSA key")
            if len(signature) != (public_key.key_size + 7) // 8:
                return False
            public_key.verify(signature, digest, _rsa_padding(info), prehashed)
    except InvalidSignature:
        return False
    return True


def ecdsa_der_to_raw(der: bytes, crv: str) -> bytes:
    """A DER ``Ecdsa-Sig-Value`` as ``r || s`` at the curve's coordinate size."""
    r, s = utils.decode_dss_signature(der)
    size = coordinate_size(crv)
    return r.to_bytes(size, "big") + s.to_bytes(size, "big")


def ecdsa_raw_to_der(raw: bytes, crv: str) -> bytes:
    """``r || s`` (exactly twice the coordinate size) as a DER ``Ecdsa-Sig-Value``."""
    size = coordinate_size(crv)
    if len(raw) != 2 * size:
        raise ValueError(f"an ECDSA signature on {crv} is {2 * size} bytes, got {len(raw)}")
    return utils.encode_dss_signature(
        int.from_bytes(raw[:size], "big"), int.from_bytes(raw[size:], "big")
    )


def _check_curve(
    algorithm: SignatureAlgorithm,
    info: SignatureInfo,
    key: ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey,
) -> None:
    crv = curve_name(key)
    if crv != info.curve:
        raise ValueError(f"{algorithm.value} needs a key on curve {info.curve}, not {crv}")


def _rsa_padding(info: SignatureInfo) -> padding.AsymmetricPadding:
    if info.scheme == "RSA-PSS":
        return padding.PSS(
            mgf=padding.MGF1(_HASHES[info.hash_name]()), salt_length=info.digest_size
        )
    return padding.PKCS1v15()
