"""A stand-in attestation authority for the secure key release tests, and what a released key's
receiver does with the result.

``Authority`` is an RSA signing key, its JWK Set (written to a file for a server's setting
``release_authorities``, or used inline) and a token factory: ``token(claims, runtime_key)``
issues an attestation token whose ``x-ms-runtime.keys`` carries the runtime key's public half,
as Microsoft Azure Attestation does. ``open_release`` plays the attested environment: it checks
the release result's JWS signature with the certificate its header names, unwraps
``key_hsm`` with the runtime private key and returns the payload and the key material.

Used by ``tests/vault/test_key_release_service.py`` and
``tests/vault/test_key_release_sdk.py``.
"""

from __future__ import annotations

import base64
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa

from customerkey.config import ReleaseAuthority
from customerkey.crypto.rsa import b64url_decode, public_jwk_fields
from customerkey.crypto.rsa_aes_wrap import rsa_aes_unwrap

AUTHORITY = "https://attest.contoso.test"
RUNTIME_KID = "TpmEphemeralEncryptionKey"
# A release policy in Azure's confidential VM form, for AUTHORITY.
CVM_POLICY: dict[str, Any] = {
    "version": "1.0.0",
    "anyOf": [
        {
            "authority": AUTHORITY,
            "allOf": [
                {"claim": "x-ms-isolation-tee.x-ms-attestation-type", "equals": "sevsnpvm"},
                {
                    "claim": "x-ms-isolation-tee.x-ms-compliance-status",
                    "equals": "azure-compliant-cvm",
                },
            ],
        }
    ],
}
CVM_CLAIMS: dict[str, Any] = {
    "x-ms-isolation-tee": {
        "x-ms-attestation-type": "sevsnpvm",
        "x-ms-compliance-status": "azure-compliant-cvm",
    }
}


def policy_bytes(policy: dict[str, Any] | None = None) -> bytes:
    return json.dumps(policy if policy is not None else CVM_POLICY).encode()


def new_rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@dataclass
class Authority:
    issuer: str = AUTHORITY
    kid: str = "attest-key-1"
    key: rsa.RSAPrivateKey = field(default_factory=new_rsa_key)

    @property
    def jwks(self) -> dict[str, Any]:
        public = public_jwk_fields(self.key.public_key())
        return {"keys": [{"kty": "RSA", "kid": self.kid, "use": "sig", "alg": "RS256", **public}]}

    def write_jwks(self, path: Path) -> Path:
        path.write_text(json.dumps(self.jwks))
        return path

    def setting(self, jwks_file: Path | None = None) -> ReleaseAuthority:
        if jwks_file is not None:
            return ReleaseAuthority(authority=self.issuer, jwks_file=str(jwks_file))
        return ReleaseAuthority(authority=self.issuer, jwks=self.jwks)

    def token(
        self,
        claims: dict[str, Any] | None = None,
        runtime_key: rsa.RSAPrivateKey | None = None,
        *,
        now: float | None = None,
        lifetime: int = 600,
        signing_key: rsa.RSAPrivateKey | None = None,
        issuer: str | None = None,
    ) -> str:
        issued = int(now if now is not None else time.time())
        body: dict[str, Any] = {
            "iss": issuer or self.issuer,
            "iat": issued,
            "nbf": issued,
            "exp": issued + lifetime,
            **(CVM_CLAIMS if claims is None else claims),
        }
        if runtime_key is not None:
            public = public_jwk_fields(runtime_key.public_key())
            body["x-ms-runtime"] = {
                "keys": [{"kty": "RSA", "kid": RUNTIME_KID, "key_ops": ["encrypt"], **public}]
            }
        return jwt.encode(
            body, signing_key or self.key, algorithm="RS256", headers={"kid": self.kid}
        )


@dataclass(frozen=True)
class Opened:
    header: dict[str, Any]
    payload: dict[str, Any]
    transfer: dict[str, Any]  # the decoded key_hsm
    material: bytes  # PKCS#8 DER (RSA, EC) or the raw AES key (oct-HSM)
    certificate: x509.Certificate


def open_release(value: str, runtime_key: rsa.RSAPrivateKey) -> Opened:
    """Check a release result's signature against the certificate it names, then unwrap its
    key with ``runtime_key`` (what the attested environment does)."""
    header = jwt.get_unverified_header(value)
    assert header["alg"] == "RS256", header
    certificate = x509.load_der_x509_certificate(base64.b64decode(header["x5c"][0]))
    payload = jwt.decode(value, certificate.public_key(), algorithms=["RS256"])  # type: ignore[arg-type]
    key = payload["response"]["key"]["key"]
    transfer = json.loads(b64url_decode(key["key_hsm"]))
    assert transfer["schema_version"] == "1.0"
    assert transfer["header"]["alg"] == "dir"
    material = rsa_aes_unwrap(
        runtime_key, b64url_decode(transfer["ciphertext"]), transfer["header"]["enc"]
    )
    return Opened(header, payload, transfer, material, certificate)
