"""Attestation tokens for secure key release: which authorities are trusted, how a token is
verified, and which key in it the released key is wrapped for.

The trusted authorities are a setting (``config.ReleaseAuthority``): each is an issuer URL and
its signing keys, a JWK Set inline or in a local file (re-read when the file changes; nothing is
fetched from the network, and a token's ``jku``, ``x5u`` or ``x5c`` header is never followed).
A JWK is an RSA or EC public key given by its members (``n``/``e``, ``crv``/``x``/``y``) or by
its first ``x5c`` certificate; one whose ``use`` is not ``sig`` is left out.

``TrustedAuthorities.verify`` accepts a token only when all of this holds, and says which
failed otherwise:

1. it is a JWS in compact serialization (else 400 ``BadParameter``), carries no ``crit``
   header and is signed with RS256/384/512, PS256/384/512 or ES256/384/512 (never ``none`` or
   an HMAC);
2. its ``iss`` is one of the trusted authorities (compared as ``release_policy`` compares
   authorities);
3. its ``kid`` names one of that authority's keys (a token without ``kid`` is accepted only
   when the authority has exactly one key), whose ``alg``, if it names one, is the token's, and
   the signature verifies with that key;
4. it has an ``exp``, which has not passed, and its ``nbf``, if any, has come, both judged by
   the vault's clock with ``CLOCK_SKEW`` of tolerance.

Failures of 2-4 are 403 ``Forbidden`` (``AttestationRejected``): the statement about the target
environment cannot be trusted. A trusted authority whose key file cannot be read or holds no
usable key is the installation's fault: 503 ``ServiceUnavailable``, naming the file.

``runtime_encryption_key`` picks the key the released key is wrapped for: an RSA key (2048 bits
or more) of the token's top-level ``x-ms-runtime.keys``, whose ``key_ops``, if given, include
``encrypt``; Azure's ``TpmEphemeralEncryptionKey`` when several qualify, else the first.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import jwt
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from customerkey.clock import to_unix
from customerkey.config import ReleaseAuthority
from customerkey.crypto.rsa import b64url_decode, public_key_from_jwk
from customerkey.crypto.rsa_aes_wrap import MIN_RSA_BITS
from customerkey.errors import BadParameter, Forbidden, ServiceUnavailable
from customerkey.vault.release_policy import normalize_authority

__all__ = [
    "ALGORITHMS",
    "CLOCK_SKEW",
    "MAX_TOKEN_LENGTH",
    "PREFERRED_RUNTIME_KID",
    "AttestationRejected",
    "RuntimeKey",
    "TrustedAuthorities",
    "VerifiedToken",
    "runtime_encryption_key",
    "trusted_authorities",
]

ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512")
CLOCK_SKEW = timedelta(seconds=60)
MAX_TOKEN_LENGTH = 256 * 1024
PREFERRED_RUNTIME_KID = "TpmEphemeralEncryptionKey"
PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey


class AttestationRejected(Forbidden):
    """The attestation token cannot be trusted: untrusted issuer, unknown key, bad signature,
    expired or not yet valid."""

    def __init__(self, detail: str) -> None:
        super().__init__(f"Target environment attestation statement cannot be verified: {detail}.")


@dataclass(frozen=True)
class VerifiedToken:
    issuer: str  # the token's ``iss``, as written
    authority: str  # the trusted authority it matched, as configured
    kid: str | None
    claims: Mapping[str, Any]


@dataclass(frozen=True)
class RuntimeKey:
    kid: str | None
    public_key: rsa.RSAPublicKey


@dataclass(frozen=True)
class _Jwk:
    kid: str | None
    alg: str | None
    key: PublicKey


def _public_key(jwk: Mapping[str, Any]) -> PublicKey:
    chain = jwk.get("x5c")
    if isinstance(chain, list) and chain and not ({"n", "x"} & set(jwk)):
        try:
            der = base64.b64decode(str(chain[0]), validate=True)
            key = x509.load_der_x509_certificate(der).public_key()
        except (binascii.Error, ValueError) as exc:
            raise ValueError(f"unreadable x5c certificate: {exc}") from None
        if not isinstance(key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey):
            raise ValueError("x5c certificate holds neither an RSA nor an EC key")
        return key
    if jwk.get("kty") == "RSA":
        return public_key_from_jwk(jwk)
    try:
        key = jwt.PyJWK(dict(jwk)).key
    except jwt.PyJWTError as exc:
        raise ValueError(str(exc)) from None
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise ValueError("not an RSA or EC public key")
    return key


def _parse_jwks(document: Any, source: str) -> tuple[_Jwk, ...]:
    keys = document.get("keys") if isinstance(document, dict) else None
    if not isinstance(keys, list):
        raise ServiceUnavailable(
            f"The JWK Set of release authority {source} has no 'keys' list; fix the setting "
            "release_authorities."
        )
    found: list[_Jwk] = []
    for item in keys:
        if not isinstance(item, dict) or item.get("use", "sig") != "sig":
            continue
        try:
            key = _public_key(item)
        except ValueError:
            continue
        kid, alg = item.get("kid"), item.get("alg")
        found.append(
            _Jwk(kid if isinstance(kid, str) else None, alg if isinstance(alg, str) else None, key)
        )
    if not found:
        raise ServiceUnavailable(
            f"The JWK Set of release authority {source} holds no usable RSA or EC signing key; "
            "fix the setting release_authorities."
        )
    return tuple(found)


def _unverified_parts(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(header, claims) of a compact JWS, unverified; ``BadParameter`` when it is not one."""
    parts = token.split(".")
    try:
        if len(parts) != 3:
            raise ValueError("not three parts")
        header, claims = (json.loads(b64url_decode(part)) for part in parts[:2])
        b64url_decode(parts[2])
    except (ValueError, UnicodeDecodeError):
        header = claims = None
    if not isinstance(header, dict) or not isinstance(claims, dict):
        raise BadParameter(
            "The target attestation token is not a JWS in compact serialization "
            "(header.payload.signature, base64url JSON objects)."
        )
    return header, claims


class _Authority:
    """One trusted authority and its keys (a file's re-read when its size or time changes)."""

    def __init__(self, entry: ReleaseAuthority) -> None:
        self.name = entry.authority
        self.normalized = normalize_authority(entry.authority)
        self._file = Path(entry.jwks_file) if entry.jwks_file is not None else None
        self._inline = entry.jwks
        self._lock = threading.Lock()
        self._stamp: tuple[int, int] | None = None
        self._keys: tuple[_Jwk, ...] | None = None

    def keys(self) -> tuple[_Jwk, ...]:
        if self._file is None:
            if self._keys is None:
                self._keys = _parse_jwks(self._inline, f"'{self.name}'")
            return self._keys
        source = f"'{self.name}' (file {self._file})"
        with self._lock:
            try:
                status = os.stat(self._file)
                stamp = (status.st_mtime_ns, status.st_size)
                if self._keys is not None and stamp == self._stamp:
                    return self._keys
                document = json.loads(self._file.read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError, ValueError) as exc:
                raise ServiceUnavailable(
                    f"The JWK Set of release authority {source} cannot be read: {exc}"
                ) from None
            self._keys = _parse_jwks(document, source)
            self._stamp = stamp
            return self._keys


class TrustedAuthorities:
    """The attestation authorities secure key release trusts (see the module docstring)."""

    def __init__(self, entries: Sequence[ReleaseAuthority]) -> None:
        self._authorities = tuple(_Authority(entry) for entry in entries)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(a.name for a in self._authorities)

    def _authority(self, issuer: str) -> _Authority | None:
        wanted = normalize_authority(issuer)
        return next((a for a in self._authorities if a.normalized == wanted), None)

    def verify(self, token: str, now: datetime) -> VerifiedToken:
        if not isinstance(token, str) or len(token) > MAX_TOKEN_LENGTH:
            raise BadParameter(
                f"The target attestation token must be a JWS of at most {MAX_TOKEN_LENGTH} "
                "characters."
            )
        header, unverified = _unverified_parts(token)
        alg = header.get("alg")
        if alg not in ALGORITHMS:
            raise AttestationRejected(
                f"it is signed with {json.dumps(alg)}; accepted: {', '.join(ALGORITHMS)}"
            )
        if "crit" in header:
            raise AttestationRejected("it names critical header extensions ('crit')")
        issuer = unverified.get("iss")
        if not isinstance(issuer, str) or not issuer:
            raise AttestationRejected("it has no issuer ('iss')")
        authority = self._authority(issuer)
        if authority is None:
            raise AttestationRejected(f"issuer '{issuer}' is not a trusted attestation authority")
        kid = header.get("kid")
        key = self._key(authority, kid if isinstance(kid, str) else None, str(alg))
        try:
            claims = jwt.decode(
                token,
                key=key.key,
                algorithms=[str(alg)],
                options={
                    "verify_exp": False,
                    "verify_nbf": False,
                    "verify_iat": False,
                    "verify_aud": False,
                    "verify_iss": False,
                },
            )
        except jwt.InvalidSignatureError:
            raise AttestationRejected("its signature does not verify") from None
        except jwt.PyJWTError as exc:
            raise AttestationRejected(f"its signature cannot be checked ({exc})") from None
        self._check_times(claims, now)
        return VerifiedToken(issuer, authority.name, key.kid, claims)

    @staticmethod
    def _key(authority: _Authority, kid: str | None, alg: str) -> _Jwk:
        keys = authority.keys()
        if kid is None:
            if len(keys) != 1:
                raise AttestationRejected(
                    f"it names no key ('kid') and authority '{authority.name}' has {len(keys)}"
                )
            chosen = keys[0]
        else:
            found = next((k for k in keys if k.kid == kid), None)
            if found is None:
                raise AttestationRejected(
                    f"key '{kid}' is not a signing key of authority '{authority.name}'"
                )
            chosen = found
        if chosen.alg is not None and chosen.alg != alg:
            raise AttestationRejected(f"key '{kid}' signs with {chosen.alg}, not {alg}")
        return chosen

    @staticmethod
    def _check_times(claims: Mapping[str, Any], now: datetime) -> None:
        current = to_unix(now)
        skew = CLOCK_SKEW.total_seconds()
        exp, nbf = claims.get("exp"), claims.get("nbf")
        if isinstance(exp, bool) or not isinstance(exp, int | float):
            raise AttestationRejected("it has no expiry time ('exp')")
        if current >= exp + skew:
            raise AttestationRejected("it has expired")
        if nbf is not None:
            if isinstance(nbf, bool) or not isinstance(nbf, int | float):
                raise AttestationRejected("its 'nbf' is not a time")
            if current + skew < nbf:
                raise AttestationRejected("it is not valid yet ('nbf')")


def runtime_encryption_key(claims: Mapping[str, Any]) -> RuntimeKey:
    """The RSA key of ``x-ms-runtime.keys`` to wrap the released key for (module docstring);
    ``BadParameter`` when the token carries none."""
    runtime = claims.get("x-ms-runtime")
    keys = runtime.get("keys") if isinstance(runtime, Mapping) else None
    candidates: list[RuntimeKey] = []
    for item in keys if isinstance(keys, list) else []:
        if not isinstance(item, Mapping) or item.get("kty") != "RSA":
            continue
        ops = item.get("key_ops")
        if ops is not None and (not isinstance(ops, list) or "encrypt" not in ops):
            continue
        try:
            public_key = public_key_from_jwk(item)
        except ValueError:
            continue
        if public_key.key_size < MIN_RSA_BITS:
            continue
        kid = item.get("kid")
        candidates.append(RuntimeKey(kid if isinstance(kid, str) else None, public_key))
    if not candidates:
        raise BadParameter(
            "The attestation token carries no RSA public key (2048 bits or more, for encrypt) "
            "in 'x-ms-runtime.keys' to wrap the released key for."
        )
    preferred = [c for c in candidates if c.kid == PREFERRED_RUNTIME_KID]
    return (preferred or candidates)[0]


_CACHE_LOCK = threading.Lock()
_CACHE: dict[str, TrustedAuthorities] = {}


def trusted_authorities(entries: Sequence[ReleaseAuthority]) -> TrustedAuthorities:
    """The ``TrustedAuthorities`` of these settings, made once per distinct setting in this
    process (so a key file is read only when it changes)."""
    fingerprint = json.dumps([e.model_dump() for e in entries], sort_keys=True)
    with _CACHE_LOCK:
        found = _CACHE.get(fingerprint)
        if found is None:
            if len(_CACHE) > 16:
                _CACHE.clear()
            found = _CACHE[fingerprint] = TrustedAuthorities(entries)
        return found
