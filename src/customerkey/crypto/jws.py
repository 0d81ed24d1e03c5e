"""Compact JWS (RFC 7515) signed with RS256, and the self-signed certificate that names the
signing key in the JWS header (``x5c``, ``x5t#S256``).

Secure key release answers with such a JWS: Key Vault's release result is
``BASE64URL(header) "." BASE64URL(payload) "." BASE64URL(signature)`` with the header
``{"alg": "RS256", "kid", "x5t#S256", "x5c": [certificate]}``, the signature
RSASSA-PKCS1-v1_5 with SHA-256 (RFC 7518 section 3.3) over the first two parts. Receivers
check the signature with the public key of the first ``x5c`` certificate (standard base64 of
its DER, RFC 7515 section 4.1.6); ``x5t#S256`` is the base64url SHA-256 of that DER.

Header and payload are serialised as compact UTF-8 JSON with sorted keys, so a signature is
reproducible. Like the rest of ``crypto`` this module is pure: the caller passes the times.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey, RSAPublicKey
from cryptography.x509.oid import NameOID

from customerkey.crypto.rsa import b64url_encode

__all__ = [
    "certificate_thumbprint",
    "self_signed_certificate",
    "sign_rs256",
    "x5c_entry",
]


def _json(value: Mapping[str, Any]) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def sign_rs256(
    private_key: RSAPrivateKey, header: Mapping[str, Any], payload: Mapping[str, Any]
) -> str:
    """The compact JWS of the JSON object ``payload``, with ``header`` plus ``"alg": "RS256"``."""
    protected = b64url_encode(_json({**header, "alg": "RS256"}))
    body = b64url_encode(_json(payload))
    signing_input = f"{protected}.{body}".encode("ascii")
    signature = private_key.sign(signing_input, padding.PKCS1v15(), hashes.SHA256())
    return f"{protected}.{body}.{b64url_encode(signature)}"


def self_signed_certificate(
    private_key: RSAPrivateKey,
    *,
    common_name: str,
    serial: int,
    not_before: datetime,
    not_after: datetime,
) -> bytes:
    """A DER X.509 v3 certificate for ``private_key``'s public key, signed by itself (SHA-256),
    for digital signatures only."""
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    public_key: RSAPublicKey = private_key.public_key()
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public_key)
        .serial_number(serial)
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .sign(private_key, hashes.SHA256())
    )
    return certificate.public_bytes(serialization.Encoding.DER)


def certificate_thumbprint(der: bytes) -> str:
    """``x5t#S256``: base64url SHA-256 of the certificate's DER."""
    return b64url_encode(hashlib.sha256(der).digest())


def x5c_entry(der: bytes) -> str:
    """One ``x5c`` member: standard base64 (with padding) of the certificate's DER."""
    return base64.b64encode(der).decode("ascii")
