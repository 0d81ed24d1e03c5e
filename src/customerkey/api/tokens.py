"""OAuth2 access tokens: signed JWTs issued by the token endpoint and checked on every request.

Owns the signing keys (ES256, one active at a time) kept in a folder (``home/token-keys/``, 0700)
and the JWT shape. Layout of the folder:

================  ====================================================================
``keys.json``     manifest: the active key id, and each key's created / retired time
``<kid>.pem``     one PKCS#8 P-256 private key per key id (0600)
================  ====================================================================

A token carries ``iss, sub, tid, aud, roles, iat, nbf, exp, jti`` and names its key in the
``kid`` header. ``rotate`` makes a new active key; the retired key keeps verifying for
``max_lifetime`` (the longest lifetime a token may be issued with, default one hour), so every
token it signed expires before the key goes; then ``prune`` (also run by ``rotate``) deletes
it. Several processes may share the folder: the manifest is replaced atomically under a lock
and each signer rereads it when it changes. Issuing, the JWKS and a token naming a key this
signer does not know always look (one ``stat`` of the manifest); verifying a token of a known
key looks at most every ``REFRESH_SECONDS`` of the injected monotonic time, so a key retired
by another process is seen within that bound (retirement only ends a key's tokens
``max_lifetime`` later anyway) and the hot path does no file system call. Expiry and
not-before are judged by the injected clock, never by PyJWT's own reading of the wall clock.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import os
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from customerkey.clock import Clock, from_unix, to_unix
from customerkey.errors import Unauthorized
from customerkey.home import write_private_file
from customerkey.rng import Rng, new_hex_id

ALGORITHM = "ES256"
# Tokens whose signature this signer has checked, kept so a client's next calls skip the check.
VERIFIED_CACHE_SIZE = 1024
DEFAULT_ISSUER = "https://localhost:8443"
DEFAULT_LIFETIME = timedelta(hours=1)
MANIFEST_FILE = "keys.json"
_MANIFEST_VERSION = 1
_KID = re.compile(r"^[0-9a-f]{32}$")
_TIME_CLAIMS = ("iat", "nbf", "exp")
_TEXT_CLAIMS = ("iss", "sub", "tid", "aud", "jti")
_Stamp = tuple[int, int, int]
# How long verifying a token of a known key trusts the manifest read last, in seconds.
REFRESH_SECONDS = 1.0


@dataclass(frozen=True)
class IssuedToken:
    """A freshly signed access token."""

    access_token: str
    expires_on: datetime
    kid: str


@dataclass(frozen=True)
class TokenClaims:
    """What a verified access token says."""

    subject: str
    tenant: str
    audience: str
    roles: tuple[str, ...]
    expires_on: datetime
    token_id: str
    # The principal's token generation when the token was issued (claim ``ck_gen``): disabling,
    # deleting, removing a role or resetting the secret bumps it, ending older tokens.
    generation: int = 0


@dataclass(frozen=True)
class _SigningKey:
    kid: str
    private_key: ec.EllipticCurvePrivateKey
    created: datetime
    retired: datetime | None


@dataclass(frozen=True)
class _KeySet:
    active: str | None
    keys: dict[str, _SigningKey]
    stamp: _Stamp | None


class TokenSigner:
    """Issues and verifies access tokens with the keys in one folder. Thread-safe."""

    def __init__(
        self,
        directory: Path,
        *,
        clock: Clock,
        rng: Rng,
        issuer: str,
        max_lifetime: timedelta,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        """Use ``TokenSigner.open``; this only wires the parts together."""
        if max_lifetime <= timedelta(0):
            raise ValueError("max_lifetime must be positive")
        self._directory = directory
        self._clock = clock
        self._rng = rng
        self._issuer = issuer
        self._max_lifetime = max_lifetime
        self._lock = threading.Lock()
        self._set = _KeySet(active=None, keys={}, stamp=None)
        self._monotonic = monotonic
        self._looked: float | None = None  # when the manifest's stamp was last compared
        # token -> (kid, the key that verified its signature, its claims); insertion ordered.
        self._verified: dict[str, tuple[str, _SigningKey, dict[str, Any]]] = {}

    @classmethod
    def open(
        cls,
        directory: Path,
        *,
        clock: Clock,
        rng: Rng,
        issuer: str = DEFAULT_ISSUER,
        max_lifetime: timedelta = DEFAULT_LIFETIME,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> TokenSigner:
        """Load the keys in ``directory``, creating the folder and a first key when there is none.

        Raises ``ValueError`` when the manifest exists but cannot be read.
        """
        signer = cls(
            directory,
            clock=clock,
            rng=rng,
            issuer=issuer,
            max_lifetime=max_lifetime,
            monotonic=monotonic,
        )
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(directory, 0o700)
        with signer._lock, signer._disk_lock():
            signer._set = signer._read_set(strict=True)
            active = signer._set.active
            if active is None or active not in signer._set.keys:
                signer._rotate_locked()
        return signer

    @property
    def issuer(self) -> str:
        return self._issuer

    @property
    def max_lifetime(self) -> timedelta:
        return self._max_lifetime

    @property
    def active_kid(self) -> str:
        with self._lock:
            self._refresh_locked()
            return self._active_key_locked().kid

    def rotate(self) -> str:
        """Make a new active signing key and return its kid; prune keys past their grace period."""
        with self._lock, self._disk_lock():
            self._set = self._read_set(strict=False, fallback=self._set)
            return self._rotate_locked()

    def prune(self) -> list[str]:
        """Delete retired keys whose grace period has passed; return their kids."""
        with self._lock, self._disk_lock():
            self._set = self._read_set(strict=False, fallback=self._set)
            return self._prune_locked()

    def issuer_for(self, tenant: str, *, v1: bool = False) -> str:
        """The ``iss`` of ``tenant``'s tokens: the issuer its OpenID configuration names
        (``api.routers.discovery``), ``<authority>/<tenant>/v2.0`` (v1: ``<authority>/<tenant>/``),
        as Entra ID's tokens carry their tenant's issuer."""
        return f"{self._issuer}/{tenant}/" if v1 else f"{self._issuer}/{tenant}/v2.0"

    def issue(
        self,
        *,
        subject: str,
        tenant: str,
        audience: str,
        roles: Sequence[str] = (),
        lifetime: timedelta = DEFAULT_LIFETIME,
        extra: Mapping[str, str] | None = None,
        generation: int = 0,
        v1: bool = False,
    ) -> IssuedToken:
        """Sign an access token for ``subject`` in ``tenant`` addressed to ``audience``, with
        the tenant's v2.0 issuer (``v1``: the v1 endpoint's).

        ``lifetime`` is whole seconds, at least one and at most ``max_lifetime``.
        """
        for name, value in (("subject", subject), ("tenant", tenant), ("audience", audience)):
            if not value:
                raise ValueError(f"a token needs a non-empty {name}")
        if isinstance(roles, str):
            raise TypeError("roles must be a sequence of strings, not one string")
        seconds = int(lifetime.total_seconds())
        if seconds < 1:
            raise ValueError("a token lifetime must be at least one second")
        if lifetime > self._max_lifetime:
            raise ValueError(
                f"a token lifetime of {lifetime} exceeds this signer's maximum {self._max_lifetime}"
            )
        with self._lock:
            self._refresh_locked()
            key = self._active_key_locked()
        issued_at = to_unix(self._clock.now())
        expires = issued_at + seconds
        claims: dict[str, Any] = {
            "iss": self.issuer_for(tenant, v1=v1),
            "sub": subject,
            "tid": tenant,
            "aud": audience,
            "roles": list(roles),
            "iat": issued_at,
            "nbf": issued_at,
            "exp": expires,
            "jti": new_hex_id(self._rng),
            "ck_gen": generation,
        }
        for name, value in (extra or {}).items():
            claims.setdefault(name, value)
        token = jwt.encode(
            claims, key.private_key, algorithm=ALGORITHM, headers={"kid": key.kid, "typ": "JWT"}
        )
        return IssuedToken(access_token=token, expires_on=from_unix(expires), kid=key.kid)

    def verify(self, token: str, *, audience: str | Sequence[str]) -> TokenClaims:
        """Check ``token`` and return its claims, or raise ``Unauthorized`` saying what is wrong.

        ``audience`` is the audience (or audiences) this caller accepts; a trailing ``/`` is
        ignored on both sides, as Azure AD resources are written either way.
        """
        # A token whose signature was checked before (with the same key object, which a key
        # file change replaces) skips the ECDSA check and the JSON parsing; everything that
        # depends on time or on the caller (key retired?, exp, nbf, audience) is checked anew.
        hit = self._verified.get(token)
        if hit is not None:
            kid = hit[0]
        else:
            try:
                header = jwt.get_unverified_header(token)
            except jwt.PyJWTError as exc:
                raise Unauthorized("The access token is malformed.") from exc
            if header.get("alg") != ALGORITHM:
                raise Unauthorized("The access token is not signed with ES256.")
            named = header.get("kid")
            if not isinstance(named, str) or not named:
                raise Unauthorized("The access token does not name its signing key.")
            kid = named
        now = self._clock.now()
        with self._lock:
            self._refresh_locked(lazy=kid in self._set.keys)
            key = self._verification_key_locked(kid, now)
        if key is None:
            raise Unauthorized("The access token was signed by an unknown or retired key.")
        if hit is not None and hit[1] is key:
            return self._check_claims(hit[2], audience=audience, now=now)
        try:
            claims = jwt.decode(
                token,
                key.private_key.public_key(),
                algorithms=[ALGORITHM],
                options={
                    "verify_signature": True,
                    "verify_exp": False,
                    "verify_nbf": False,
                    "verify_iat": False,
                    "verify_aud": False,
                    "verify_iss": False,
                    "verify_sub": False,
                    "verify_jti": False,
                    "require": [],
                },
            )
        except jwt.InvalidSignatureError as exc:
            raise Unauthorized("The access token signature is invalid.") from exc
        except jwt.PyJWTError as exc:
            raise Unauthorized("The access token is malformed.") from exc
        result = self._check_claims(claims, audience=audience, now=now)
        with self._lock:
            self._verified[token] = (kid, key, claims)
            while len(self._verified) > VERIFIED_CACHE_SIZE:
                self._verified.pop(next(iter(self._verified)))
        return result

    def jwks(self) -> dict[str, list[dict[str, str]]]:
        """The public half of every key that still verifies tokens, as a JWK Set."""
        now = self._clock.now()
        with self._lock:
            self._refresh_locked()
            keys = [
                key
                for key in self._set.keys.values()
                if self._verification_key_locked(key.kid, now) is not None
            ]
        return {"keys": [_public_jwk(key) for key in sorted(keys, key=lambda k: k.created)]}

    def _check_claims(
        self, claims: dict[str, Any], *, audience: str | Sequence[str], now: datetime
    ) -> TokenClaims:
        for name in _TIME_CLAIMS:
            value = claims.get(name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise Unauthorized(f"The access token has no valid '{name}' claim.")
        for name in _TEXT_CLAIMS:
            if not isinstance(claims.get(name), str):
                raise Unauthorized(f"The access token has no valid '{name}' claim.")
        roles = claims.get("roles", [])
        if not isinstance(roles, list) or not all(isinstance(role, str) for role in roles):
            raise Unauthorized("The access token has no valid 'roles' claim.")
        if claims["iss"] not in (
            self.issuer_for(claims["tid"]),
            self.issuer_for(claims["tid"], v1=True),
        ):
            raise Unauthorized("The access token was not issued by this service.")
        moment = now.timestamp()
        expires_on = from_unix(claims["exp"])
        if moment >= claims["exp"]:
            raise Unauthorized(f"The access token expired at {expires_on.isoformat()}.")
        if moment < claims["nbf"]:
            starts = from_unix(claims["nbf"]).isoformat()
            raise Unauthorized(f"The access token is not valid before {starts}.")
        accepted = {audience} if isinstance(audience, str) else set(audience)
        if claims["aud"].rstrip("/") not in {item.rstrip("/") for item in accepted}:
            raise Unauthorized(
                f"The access token's audience '{claims['aud'][:200]}' is not accepted here."
            )
        return TokenClaims(
            subject=claims["sub"],
            tenant=claims["tid"],
            audience=claims["aud"],
            roles=tuple(roles),
            expires_on=expires_on,
            token_id=claims["jti"],
            generation=_generation(claims.get("ck_gen", 0)),
        )

    def _active_key_locked(self) -> _SigningKey:
        active = self._set.active
        if active is None or active not in self._set.keys:
            raise RuntimeError(f"the token key folder {self._directory} has no active key")
        return self._set.keys[active]

    def _verification_key_locked(self, kid: str, now: datetime) -> _SigningKey | None:
        key = self._set.keys.get(kid)
        if key is None:
            return None
        if key.retired is not None and now >= key.retired + self._max_lifetime:
            return None
        return key

    def _rotate_locked(self) -> str:
        now = self._clock.now()
        kid = new_hex_id(self._rng)
        private_key = ec.generate_private_key(ec.SECP256R1())
        write_private_file(self._directory / f"{kid}.pem", _private_pem(private_key))
        keys = {
            old.kid: _SigningKey(
                kid=old.kid,
                private_key=old.private_key,
                created=old.created,
                retired=old.retired if old.retired is not None else now,
            )
            for old in self._set.keys.values()
        }
        keys[kid] = _SigningKey(kid=kid, private_key=private_key, created=now, retired=None)
        self._set = _KeySet(active=kid, keys=keys, stamp=None)
        self._write_manifest_locked()
        self._prune_locked()
        return kid

    def _prune_locked(self) -> list[str]:
        now = self._clock.now()
        gone = sorted(
            kid for kid in self._set.keys if self._verification_key_locked(kid, now) is None
        )
        if gone:
            keys = {kid: key for kid, key in self._set.keys.items() if kid not in gone}
            self._set = _KeySet(active=self._set.active, keys=keys, stamp=None)
            self._write_manifest_locked()
        for path in self._directory.glob("*.pem"):
            # Also sweeps key files a crashed rotate left behind without a manifest entry.
            if _KID.match(path.stem) and path.stem not in self._set.keys:
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
                if path.stem not in gone:
                    gone.append(path.stem)
        return gone

    def _write_manifest_locked(self) -> None:
        document = {
            "version": _MANIFEST_VERSION,
            "active": self._set.active,
            "keys": [
                {
                    "kid": key.kid,
                    "created": to_unix(key.created),
                    "retired": None if key.retired is None else to_unix(key.retired),
                }
                for key in sorted(self._set.keys.values(), key=lambda k: k.created)
            ],
        }
        manifest = self._directory / MANIFEST_FILE
        write_private_file(manifest, (json.dumps(document, indent=2) + "\n").encode())
        self._set = _KeySet(active=self._set.active, keys=self._set.keys, stamp=_stamp(manifest))

    def _refresh_locked(self, *, lazy: bool = False) -> None:
        """Reread the manifest if it changed; ``lazy``: only if the last look is older than
        ``REFRESH_SECONDS``."""
        now = self._monotonic()
        if lazy and self._looked is not None and now - self._looked < REFRESH_SECONDS:
            return
        self._looked = now
        if _stamp(self._directory / MANIFEST_FILE) != self._set.stamp:
            self._set = self._read_set(strict=False, fallback=self._set)

    def _read_set(self, *, strict: bool, fallback: _KeySet | None = None) -> _KeySet:
        manifest = self._directory / MANIFEST_FILE
        stamp = _stamp(manifest)
        if stamp is None:
            return fallback if fallback is not None else _KeySet(active=None, keys={}, stamp=None)
        try:
            document = json.loads(manifest.read_text())
            active = document["active"]
            entries = document["keys"]
            if document.get("version") != _MANIFEST_VERSION or not isinstance(entries, list):
                raise ValueError("unsupported manifest")
            keys: dict[str, _SigningKey] = {}
            for entry in entries:
                kid = entry["kid"]
                if not isinstance(kid, str) or not _KID.match(kid):
                    raise ValueError(f"bad key id {kid!r}")
                private_key = _load_key(self._directory / f"{kid}.pem")
                if private_key is None:
                    continue
                retired = entry.get("retired")
                keys[kid] = _SigningKey(
                    kid=kid,
                    private_key=private_key,
                    created=from_unix(entry["created"]),
                    retired=None if retired is None else from_unix(retired),
                )
        except (OSError, ValueError, KeyError, TypeError) as exc:
            if strict or fallback is None:
                raise ValueError(f"the token key manifest {manifest} is unreadable: {exc}") from exc
            # A damaged manifest written by someone else must not lock every caller out.
            return fallback
        return _KeySet(active=active if isinstance(active, str) else None, keys=keys, stamp=stamp)

    @contextlib.contextmanager
    def _disk_lock(self) -> Iterator[None]:
        fd = os.open(self._directory / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)


def _stamp(path: Path) -> _Stamp | None:
    try:
        info = path.stat()
    except FileNotFoundError:
        return None
    # The inode too: an atomic replace always changes it, even within one mtime tick.
    return (info.st_ino, info.st_mtime_ns, info.st_size)


def _load_key(path: Path) -> ec.EllipticCurvePrivateKey | None:
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError):
        return None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
        return None
    return key


def _private_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _public_jwk(key: _SigningKey) -> dict[str, str]:
    numbers = key.private_key.public_key().public_numbers()
    return {
        "kty": "EC",
        "crv": "P-256",
        "kid": key.kid,
        "use": "sig",
        "alg": ALGORITHM,
        "x": _b64url(numbers.x.to_bytes(32, "big")),
        "y": _b64url(numbers.y.to_bytes(32, "big")),
    }


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _generation(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise Unauthorized("The access token has no valid 'ck_gen' claim.")
    return value
