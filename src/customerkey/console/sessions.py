"""Console sessions: a sealed cookie naming a principal, re-checked against the directory on
every request, and the CSRF token bound to it.

The cookie (``__Host-ck_session``: ``HttpOnly``, ``Secure``, ``SameSite=Strict``, ``Path=/``)
is ``base64url(nonce || AES-256-GCM(key, nonce, payload, aad))``; the payload is JSON with the
principal's object id (``oid``), its credential generation when it signed in (``gen``, as an
access token's ``ck_gen``), a random session id (``sid``), the sign-in time (``iat``), the
absolute end (``exp``) and the last request's time (``seen``, for the idle limit). The AEAD key
is derived from the installation's master key (HKDF-SHA256, its own salt and info), so every
server process opens every other's cookies and nothing is stored: a session lives in its cookie
and in the principal's state, which ``ConsoleSessions`` callers re-read on every request (so
disabling the principal, deleting it, removing a role or resetting its secret, which bump its
generation, end every session at once).

The CSRF token of a session is ``HMAC-SHA256(csrf_key, sid)`` (a second derived key): a form
carries it, a POST without it or with another is refused before anything changes.
"""

from __future__ import annotations

import base64
import hmac
import json
from dataclasses import dataclass
from hashlib import sha256

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.hashes import SHA256
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from customerkey.rng import Rng

COOKIE = "__Host-ck_session"
# The sign-in form's own double-submit token (there is no session yet to bind one to).
SIGNIN_COOKIE = "__Host-ck_signin"
_SALT = b"customerkey/console-session/v1"
_AAD = b"customerkey console session v1"
# A cookie's ``seen`` is rewritten at most this often (not on every poll of a job page).
TOUCH_SECONDS = 60


def _derive(master_key: bytes, info: bytes) -> bytes:
    return HKDF(algorithm=SHA256(), length=32, salt=_SALT, info=info).derive(master_key)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(frozen=True)
class Session:
    object_id: str
    generation: int
    sid: str
    issued_at: int  # unix seconds
    expires_at: int
    seen: int


class ConsoleSessions:
    """Seals and opens session cookies; computes and checks CSRF tokens. Thread-safe."""

    def __init__(self, master_key: bytes, *, rng: Rng, lifetime: int, idle: int) -> None:
        self._rng = rng
        self._aead = AESGCM(_derive(master_key, b"seal"))
        self._csrf_key = _derive(master_key, b"csrf")
        self.lifetime = lifetime
        self.idle = idle

    def new(self, object_id: str, generation: int, now: int) -> Session:
        return Session(
            object_id=object_id,
            generation=generation,
            sid=_b64(self._rng.token_bytes(16)),
            issued_at=now,
            expires_at=now + self.lifetime,
            seen=now,
        )

    def seal(self, session: Session) -> str:
        payload = json.dumps(
            {
                "oid": session.object_id,
                "gen": session.generation,
                "sid": session.sid,
                "iat": session.issued_at,
                "exp": session.expires_at,
                "seen": session.seen,
            },
            separators=(",", ":"),
        ).encode()
        nonce = self._rng.token_bytes(12)
        return _b64(nonce + self._aead.encrypt(nonce, payload, _AAD))

    def open(self, value: str | None, now: int) -> Session | None:
        """The session a cookie carries, or None: missing, forged, expired or idle too long."""
        if not value or len(value) > 1024:
            return None
        try:
            raw = _unb64(value)
            payload = json.loads(self._aead.decrypt(raw[:12], raw[12:], _AAD))
            session = Session(
                object_id=str(payload["oid"]),
                generation=int(payload["gen"]),
                sid=str(payload["sid"]),
                issued_at=int(payload["iat"]),
                expires_at=int(payload["exp"]),
                seen=int(payload["seen"]),
            )
        except (ValueError, KeyError, TypeError, InvalidTag):
            return None
        if now >= session.expires_at or now >= session.seen + self.idle:
            return None
        if session.issued_at > now + 60:  # from the future: a clock gone wrong, refuse
            return None
        return session

    def touched(self, session: Session, now: int) -> Session | None:
        """The session with ``seen`` moved to now, or None when the cookie is fresh enough."""
        if now - session.seen < TOUCH_SECONDS:
            return None
        return Session(
            session.object_id,
            session.generation,
            session.sid,
            session.issued_at,
            session.expires_at,
            now,
        )

    def csrf_token(self, session: Session) -> str:
        return _b64(hmac.new(self._csrf_key, session.sid.encode(), sha256).digest())

    def csrf_ok(self, session: Session, token: str | None) -> bool:
        return bool(token) and hmac.compare_digest(self.csrf_token(session), token or "")

    def signin_token(self) -> str:
        """A fresh token for the sign-in form's double submit."""
        return _b64(self._rng.token_bytes(24))


def signin_token_ok(cookie: str | None, field: str | None) -> bool:
    return bool(cookie) and bool(field) and hmac.compare_digest(cookie or "", field or "")
