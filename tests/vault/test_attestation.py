"""Attestation tokens for secure key release (``vault.attestation``): a token is trusted only
when a configured authority issued it, with one of its keys, within its validity period; the
runtime key the released key is wrapped for is picked from ``x-ms-runtime.keys``."""

from __future__ import annotations

import base64
import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from customerkey.clock import to_unix
from customerkey.config import ReleaseAuthority, Settings
from customerkey.crypto.jws import self_signed_certificate
from customerkey.crypto.rsa import b64url_encode, public_jwk_fields
from customerkey.errors import BadParameter, Forbidden, ServiceUnavailable
from customerkey.vault.attestation import (
    CLOCK_SKEW,
    AttestationRejected,
    TrustedAuthorities,
    runtime_encryption_key,
    trusted_authorities,
)

AUTHORITY = "https://attest.contoso.test"
NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def signer() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def runtime_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _jwks(key: rsa.RSAPrivateKey, kid: str = "k1", **extra: Any) -> dict[str, Any]:
    return {"keys": [{"kty": "RSA", "kid": kid, **public_jwk_fields(key.public_key()), **extra}]}


def _trusted(key: rsa.RSAPrivateKey, **extra: Any) -> TrustedAuthorities:
    return TrustedAuthorities([ReleaseAuthority(authority=AUTHORITY, jwks=_jwks(key, **extra))])


def _token(
    key: Any,
    *,
    alg: str = "RS256",
    kid: str | None = "k1",
    headers: dict[str, Any] | None = None,
    **claims: Any,
) -> str:
    body = {"iss": AUTHORITY, "exp": to_unix(NOW) + 600, "nbf": to_unix(NOW) - 60, **claims}
    body = {k: v for k, v in body.items() if v is not None}
    sent = {**({"kid": kid} if kid else {}), **(headers or {})}
    return jwt.encode(body, key, algorithm=alg, headers=sent)


def test_a_token_of_a_trusted_authority_verifies(signer: rsa.RSAPrivateKey) -> None:
    verified = _trusted(signer).verify(_token(signer, tee="sevsnpvm"), NOW)
    assert verified.issuer == AUTHORITY
    assert verified.authority == AUTHORITY
    assert verified.kid == "k1"
    assert verified.claims["tee"] == "sevsnpvm"


def test_issuers_compare_as_urls(signer: rsa.RSAPrivateKey) -> None:
    trusted = TrustedAuthorities(
        [ReleaseAuthority(authority="HTTPS://Attest.Contoso.test/", jwks=_jwks(signer))]
    )
    assert trusted.verify(_token(signer), NOW).authority == "HTTPS://Attest.Contoso.test/"
    assert trusted.names == ("HTTPS://Attest.Contoso.test/",)


@pytest.mark.parametrize(
    ("make", "fragment"),
    [
        (lambda k: _token(k, iss="https://evil.test"), "'https://evil.test' is not a trusted"),
        (lambda k: _token(k, iss=None), "no issuer"),
        (lambda k: _token(k, kid="other"), "key 'other' is not a signing key"),
        (lambda k: _token(k, exp=to_unix(NOW) - 61), "expired"),
        (lambda k: _token(k, exp=None), "no expiry"),
        (lambda k: _token(k, exp="soon"), "no expiry"),
        (lambda k: _token(k, nbf=to_unix(NOW) + 61), "not valid yet"),
        (lambda k: _token(k, nbf="later"), "'nbf' is not a time"),
        (lambda k: _token(k, headers={"crit": ["x-custom"], "x-custom": 1}), "critical"),
        (lambda k: _token(b"secret-secret-secret-secret-1234", alg="HS256"), '"HS256"'),
        (lambda k: _token(None, alg="none"), '"none"'),
    ],
)
def test_untrusted_tokens_are_refused_with_a_reason(
    signer: rsa.RSAPrivateKey, make: Any, fragment: str
) -> None:
    with pytest.raises(AttestationRejected) as caught:
        _trusted(signer).verify(make(signer), NOW)
    assert caught.value.status == 403 and isinstance(caught.value, Forbidden)
    assert caught.value.message.startswith(
        "Target environment attestation statement cannot be verified: "
    )
    assert fragment in caught.value.message


def test_clock_skew_is_tolerated_both_ways(signer: rsa.RSAPrivateKey) -> None:
    skew = int(CLOCK_SKEW.total_seconds())
    trusted = _trusted(signer)
    trusted.verify(_token(signer, exp=to_unix(NOW) - skew + 1), NOW)
    trusted.verify(_token(signer, nbf=to_unix(NOW) + skew), NOW)
    trusted.verify(_token(signer, exp=to_unix(NOW) + 3600), NOW + timedelta(minutes=59))


def test_a_tampered_token_or_another_signer_is_refused(signer: rsa.RSAPrivateKey) -> None:
    token = _token(signer, tee="sgx")
    header, body, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(body + "=="))
    forged = b64url_encode(json.dumps({**claims, "tee": "sevsnpvm"}).encode())
    trusted = _trusted(signer)
    with pytest.raises(AttestationRejected, match="signature does not verify"):
        trusted.verify(f"{header}.{forged}.{signature}", NOW)
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    with pytest.raises(AttestationRejected, match="signature does not verify"):
        trusted.verify(_token(stranger), NOW)
    with pytest.raises(AttestationRejected, match="signature does not verify"):
        trusted.verify(f"{header}.{body}.{b64url_encode(b'x' * 256)}", NOW)


def test_the_key_alg_and_kid_rules(signer: rsa.RSAPrivateKey) -> None:
    with pytest.raises(AttestationRejected, match="signs with RS384, not RS256"):
        _trusted(signer, alg="RS384").verify(_token(signer), NOW)
    _trusted(signer, alg="PS256").verify(_token(signer, alg="PS256"), NOW)
    # No kid: accepted when the authority has exactly one key.
    _trusted(signer).verify(_token(signer, kid=None), NOW)
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    two = {"keys": _jwks(signer)["keys"] + _jwks(other, kid="k2")["keys"]}
    trusted = TrustedAuthorities([ReleaseAuthority(authority=AUTHORITY, jwks=two)])
    trusted.verify(_token(other, kid="k2"), NOW)
    with pytest.raises(AttestationRejected, match="names no key"):
        trusted.verify(_token(signer, kid=None), NOW)


def test_ec_keys_and_x5c_only_jwks(signer: rsa.RSAPrivateKey) -> None:
    ec_key = ec.generate_private_key(ec.SECP256R1())
    numbers = ec_key.public_key().public_numbers()
    ec_jwk = {
        "kty": "EC",
        "kid": "e1",
        "crv": "P-256",
        "x": b64url_encode(numbers.x.to_bytes(32, "big")),
        "y": b64url_encode(numbers.y.to_bytes(32, "big")),
    }
    der = self_signed_certificate(
        signer, common_name="maa", serial=1, not_before=NOW, not_after=NOW + timedelta(days=1)
    )
    x5c_jwk = {"kty": "RSA", "kid": "c1", "x5c": [base64.b64encode(der).decode()]}
    jwks = {"keys": [ec_jwk, x5c_jwk, {"kty": "RSA", "kid": "enc", "use": "enc"}]}
    trusted = TrustedAuthorities([ReleaseAuthority(authority=AUTHORITY, jwks=jwks)])
    trusted.verify(_token(ec_key, alg="ES256", kid="e1"), NOW)
    trusted.verify(_token(signer, kid="c1"), NOW)
    with pytest.raises(AttestationRejected, match="key 'enc' is not a signing key"):
        trusted.verify(_token(signer, kid="enc"), NOW)


@pytest.mark.parametrize("token", ["", "abc", "a.b.c", "x" * (256 * 1024 + 1)])
def test_what_is_not_a_jws_is_a_bad_parameter(signer: rsa.RSAPrivateKey, token: str) -> None:
    with pytest.raises(BadParameter) as caught:
        _trusted(signer).verify(token, NOW)
    assert caught.value.status == 400


def test_jwks_files_are_reread_when_they_change(signer: rsa.RSAPrivateKey, tmp_path: Path) -> None:
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps(_jwks(signer)))
    trusted = TrustedAuthorities([ReleaseAuthority(authority=AUTHORITY, jwks_file=str(path))])
    trusted.verify(_token(signer), NOW)
    rolled = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    path.write_text(json.dumps(_jwks(rolled, kid="k2")))
    os.utime(path, ns=(1, 1))  # a different time, whatever the file system's resolution
    trusted.verify(_token(rolled, kid="k2"), NOW)
    with pytest.raises(AttestationRejected, match="key 'k1' is not a signing key"):
        trusted.verify(_token(signer), NOW)


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        (None, "cannot be read"),
        ("not json", "cannot be read"),
        ('{"nokeys": []}', "has no 'keys' list"),
        ('{"keys": [{"kty": "RSA", "n": "AQAB"}]}', "holds no usable"),
    ],
)
def test_a_broken_jwks_file_is_the_installations_fault(
    signer: rsa.RSAPrivateKey, tmp_path: Path, content: str | None, fragment: str
) -> None:
    path = tmp_path / "jwks.json"
    if content is not None:
        path.write_text(content)
    trusted = TrustedAuthorities([ReleaseAuthority(authority=AUTHORITY, jwks_file=str(path))])
    with pytest.raises(ServiceUnavailable) as caught:
        trusted.verify(_token(signer), NOW)
    assert caught.value.status == 503
    assert fragment in caught.value.message and str(path) in caught.value.message


def test_settings_need_exactly_one_key_source(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(ValueError, match="exactly one of 'jwks_file'"):
        ReleaseAuthority(authority=AUTHORITY)
    with pytest.raises(ValueError, match="exactly one of 'jwks_file'"):
        ReleaseAuthority(authority=AUTHORITY, jwks_file="a", jwks={"keys": []})
    entry = {"authority": AUTHORITY, "jwks_file": str(tmp_path / "j.json")}
    settings = Settings(home=tmp_path, release_authorities=[entry])  # type: ignore[list-item]
    assert settings.release_authorities[0].jwks_file == entry["jwks_file"]
    monkeypatch.setenv("CUSTOMERKEY_RELEASE_AUTHORITIES", json.dumps([entry]))
    assert Settings(home=tmp_path).release_authorities == settings.release_authorities
    first = trusted_authorities(settings.release_authorities)
    assert trusted_authorities(list(settings.release_authorities)) is first


# ---------------------------------------------------------------- the runtime key


def _runtime_jwk(key: rsa.RSAPrivateKey, kid: str, **extra: Any) -> dict[str, Any]:
    return {"kty": "RSA", "kid": kid, **public_jwk_fields(key.public_key()), **extra}


def test_the_runtime_key_is_picked_from_x_ms_runtime(runtime_key: rsa.RSAPrivateKey) -> None:
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    small = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    ec_key = ec.generate_private_key(ec.SECP256R1()).public_key()
    ec_pem = ec_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    keys = [
        {"kty": "EC", "kid": "ec", "pem": ec_pem.decode()},
        _runtime_jwk(small, "small"),
        _runtime_jwk(other, "signing-only", key_ops=["sign"]),
        _runtime_jwk(other, "first", key_ops=["encrypt"]),
        _runtime_jwk(runtime_key, "TpmEphemeralEncryptionKey", key_ops=["encrypt"]),
        "junk",
        {"kty": "RSA", "kid": "broken", "n": "", "e": "AQAB"},
    ]
    chosen = runtime_encryption_key({"x-ms-runtime": {"keys": keys}})
    assert chosen.kid == "TpmEphemeralEncryptionKey"
    assert chosen.public_key == runtime_key.public_key()
    without_preferred = [
        k for k in keys if not (isinstance(k, dict) and k["kid"].startswith("Tpm"))
    ]
    assert runtime_encryption_key({"x-ms-runtime": {"keys": without_preferred}}).kid == "first"
    no_ops = runtime_encryption_key({"x-ms-runtime": {"keys": [_runtime_jwk(other, "plain")]}})
    assert no_ops.kid == "plain"


@pytest.mark.parametrize(
    "claims",
    [
        {},
        {"x-ms-runtime": "keys"},
        {"x-ms-runtime": {"keys": []}},
        {"x-ms-runtime": {"keys": {"kty": "RSA"}}},
        # Only the top level counts: Azure's isolation-TEE key is the attestation key.
        {"x-ms-isolation-tee": {"x-ms-runtime": {"keys": ["placeholder"]}}},
    ],
)
def test_a_token_without_a_runtime_key_is_a_bad_parameter(claims: dict[str, Any]) -> None:
    with pytest.raises(BadParameter, match=r"x-ms-runtime\.keys"):
        runtime_encryption_key(claims)


def test_the_certificate_helper_is_what_x5c_jwks_carry(signer: rsa.RSAPrivateKey) -> None:
    der = self_signed_certificate(
        signer, common_name="maa", serial=7, not_before=NOW, not_after=NOW + timedelta(days=1)
    )
    assert x509.load_der_x509_certificate(der).public_key() == signer.public_key()
