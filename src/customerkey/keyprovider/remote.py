"""A remote Key-Vault-compatible vault over HTTPS, through the official ``azure-keyvault-keys``
SDK: it works against another customerkey server and against real Azure Key Vault alike.

Failures are classified for the availability rules: 401/403/404 (and a disabled, expired or
deleted key, which Key Vault answers with 403 or 404) and a token endpoint refusing the
service principal (4xx) are ``KeyAccessDenied``; connection errors, timeouts, 429 and 5xx
(from the vault or the token endpoint) are ``KeyProviderUnavailable``. Retries are few and
timeouts short, so an unreachable vault is noticed in seconds and the other root key is tried.

A vault that answers with garbage is a system failure too, never a refusal: a body that is not
JSON (HTML with 200, a body cut short), JSON of the wrong shape or with wrong types, a ``value``
that is not valid base64url. The SDK parses lazily and is lenient (``{"value": 12}`` comes back
as the number 12, which ``bytes()`` makes twelve zero bytes; an undecodable string as the
string itself), so every answer is read and checked inside the classification: a wrap or
unwrap result must be non-empty bytes, a key's version 32 hex digits, its dates dates.
Whatever the SDK raises while parsing (``TypeError``, ``KeyError``, ``AttributeError``,
``DecodeError``, ``binascii.Error``, ...) becomes ``KeyProviderUnavailable`` naming the key
URI. A refusal's status (403, ...) with an unreadable body stays a refusal. Whether an
unwrapped key is the right one is the resolver's check (``service.dep_keys``), since only the
generation knows.

Every operation goes to the vault, wrapping too: the SDK's local public-key wrap is turned
off, so the vault checks wrapKey permission and key state and audits each wrap.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from datetime import datetime
from typing import Any, TypeVar

from azure.core.credentials import TokenCredential
from azure.core.exceptions import (
    AzureError,
    ClientAuthenticationError,
    DecodeError,
    HttpResponseError,
    ServiceRequestError,
    ServiceResponseError,
)
from azure.keyvault.keys import KeyClient
from azure.keyvault.keys.crypto import CryptographyClient, KeyWrapAlgorithm

from customerkey.errors import KeyAccessDenied, KeyProviderUnavailable
from customerkey.keyprovider.base import KeyUri, RootKeyProperties, WrapResult

T = TypeVar("T")
CONNECTION_TIMEOUT = 3.0  # seconds
READ_TIMEOUT = 10.0
_VERSION = re.compile(r"^[0-9a-fA-F]{32}$")
_REFUSALS = (400, 401, 403, 404, 409)
# What the SDK (its JSON parsing, lazy model deserialization, base64url decoding) and our
# reading of its results raise on an answer that is not what Key Vault sends. ValueError covers
# json.JSONDecodeError, binascii.Error, UnicodeDecodeError and azure's DeserializationError.
_GARBAGE = (TypeError, KeyError, AttributeError, IndexError, ValueError, RecursionError)


class _BadAnswer(Exception):
    """The vault's answer was read but is not usable (raised inside ``_call`` only)."""


def _key_bytes(value: object, what: str) -> bytes:
    """A wrap or unwrap result as bytes; the SDK hands back whatever the JSON held."""
    if not isinstance(value, bytes | bytearray) or not value:
        shown = "empty" if isinstance(value, bytes | bytearray) else type(value).__name__
        raise _BadAnswer(f"the vault's {what} answer holds no key ({shown})")
    return bytes(value)


def _short(what: object, limit: int = 200) -> str:
    text = str(what)
    return text if len(text) <= limit else text[:limit] + "..."


def _text(value: object) -> str:
    """The wire value of an SDK enum (``str(KeyType.rsa_hsm)`` is "KeyType.rsa_hsm")."""
    if value is None:
        return ""
    return str(getattr(value, "value", value))


class RemoteKeyProvider:
    def __init__(
        self,
        credential: TokenCredential,
        *,
        verify: str | bool = True,
        connection_timeout: float = CONNECTION_TIMEOUT,
        read_timeout: float = READ_TIMEOUT,
        retries: int = 1,
    ) -> None:
        self._credential = credential
        self._options: dict[str, Any] = {
            "connection_verify": verify,
            "connection_timeout": connection_timeout,
            "read_timeout": read_timeout,
            "retry_total": retries,
            "retry_backoff_factor": 0.2,
        }
        self._key_clients: dict[str, KeyClient] = {}
        self._crypto_clients: dict[str, CryptographyClient] = {}
        self._lock = threading.Lock()

    def _key_client(self, uri: KeyUri) -> KeyClient:
        with self._lock:
            client = self._key_clients.get(uri.vault_url)
            if client is None:
                client = KeyClient(uri.vault_url, self._credential, **self._options)
                self._key_clients[uri.vault_url] = client
            return client

    def _crypto_client(self, uri: KeyUri) -> CryptographyClient:
        key = str(uri)
        with self._lock:
            client = self._crypto_clients.get(key)
            if client is None:
                client = CryptographyClient(key, self._credential, **self._options)
                # Left alone the SDK downloads the public key and wraps locally, so wrapKey
                # permission, key state and the vault's audit would never see a wrap (and
                # ``holds`` could not tell a missing wrapKey). The SDK's own switch for "may
                # not get the key" sends every operation to the vault.
                client._keys_get_forbidden = True
                self._crypto_clients[key] = client
            return client

    @staticmethod
    def _call(uri: KeyUri, fn: Callable[[], T]) -> T:
        try:
            return fn()
        except DecodeError as exc:
            # The body did not parse or was cut short. A refusal's status line still counts as
            # a refusal (treating it as an outage would let the availability key answer against
            # the customer's will); a 200 whose body is unreadable is no answer at all.
            refused = exc.status_code or 0
            if refused in _REFUSALS:
                raise KeyAccessDenied(f"{uri}: HTTP {refused}: {_short(exc.message)}") from None
            raise KeyProviderUnavailable(
                f"{uri}: the vault's answer could not be read ({_short(exc.message)})"
            ) from None
        except ClientAuthenticationError as exc:
            # From the vault (401/403 after the challenge) or from the token endpoint: a 4xx is
            # the customer's side refusing (a removed principal, a reset secret); no answer, a
            # 5xx or throttling means the system failed.
            status = getattr(exc, "status_code", None)
            if status is None or status >= 500 or status == 429:
                raise KeyProviderUnavailable(f"{uri}: {exc.message}") from None
            raise KeyAccessDenied(f"{uri}: {exc.message}") from None
        except HttpResponseError as exc:
            status = exc.status_code or 0
            if status in _REFUSALS:
                raise KeyAccessDenied(f"{uri}: {exc.message}") from None
            raise KeyProviderUnavailable(f"{uri}: HTTP {status}: {exc.message}") from None
        except (ServiceRequestError, ServiceResponseError) as exc:
            raise KeyProviderUnavailable(f"{uri}: vault unreachable ({exc.message})") from None
        except AzureError as exc:
            raise KeyProviderUnavailable(f"{uri}: {exc.message}") from None
        except _BadAnswer as exc:
            raise KeyProviderUnavailable(f"{uri}: {exc}") from None
        except OSError as exc:
            raise KeyProviderUnavailable(f"{uri}: {exc}") from None
        except _GARBAGE as exc:
            raise KeyProviderUnavailable(
                f"{uri}: the vault's answer could not be read ({type(exc).__name__}: {_short(exc)})"
            ) from None

    def wrap(self, uri: KeyUri, key: bytes) -> WrapResult:
        target = uri if uri.version else self.properties(uri).uri

        def call() -> bytes:
            result = self._crypto_client(target).wrap_key(KeyWrapAlgorithm.rsa_oaep_256, key)
            return _key_bytes(result.encrypted_key, "wrapKey")

        return WrapResult(target, self._call(target, call))

    def unwrap(self, uri: KeyUri, wrapped: bytes) -> bytes:
        if uri.version is None:
            raise ValueError("unwrap needs a versioned key URI")

        def call() -> bytes:
            result = self._crypto_client(uri).unwrap_key(KeyWrapAlgorithm.rsa_oaep_256, wrapped)
            return _key_bytes(result.key, "unwrapKey")

        return self._call(uri, call)

    def properties(self, uri: KeyUri) -> RootKeyProperties:
        def call() -> RootKeyProperties:
            key = self._key_client(uri).get_key(uri.name, uri.version)
            props = key.properties
            version = props.version
            if not isinstance(version, str) or not _VERSION.match(version):
                raise _BadAnswer("the vault's answer names no key version")
            modulus = getattr(key.key, "n", None) or b""
            if not isinstance(modulus, bytes | bytearray):
                raise _BadAnswer("the vault's answer holds no RSA modulus")
            not_before, expires = props.not_before, props.expires_on
            if not all(isinstance(t, datetime | None) for t in (not_before, expires)):
                raise _BadAnswer("the vault's answer holds dates that are not dates")
            return RootKeyProperties(
                uri=uri.with_version(version),
                kty=_text(key.key_type),
                key_size=len(modulus) * 8,
                enabled=props.enabled is True,
                not_before=not_before,
                expires=expires,
                key_ops=tuple(_text(op) for op in (key.key_operations or ())),
                recovery_level=_text(props.recovery_level),
            )

        return self._call(uri, call)

    def holds(self, uri: KeyUri, permissions: tuple[str, ...]) -> dict[str, bool]:
        """Probe: get, then wrap and unwrap a random key. A refusal at a step means the
        permission for it is missing (or the key refuses; either way it cannot be used)."""
        import secrets

        held = dict.fromkeys(permissions, False)
        try:
            props = self.properties(uri)
            held["get"] = True
            probe = secrets.token_bytes(32)
            result = self.wrap(props.uri, probe)
            held["wrapKey"] = True
            held["unwrapKey"] = self.unwrap(result.uri, result.wrapped) == probe
        except KeyAccessDenied:
            pass
        return {p: held.get(p, False) for p in permissions}
