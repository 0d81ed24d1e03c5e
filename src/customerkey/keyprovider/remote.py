"""A remote Key-Vault-compatible vault over HTTPS, through the official ``azure-keyvault-keys``
SDK: it works against another customerkey server and against real Azure Key Vault alike.

Failures are classified for the availability rules: 401/403/404 (and a disabled, expired or
deleted key, which Key Vault answers with 403 or 404) and a token endpoint refusing the
service principal (4xx) are ``KeyAccessDenied``; connection errors, timeouts, 429 and 5xx
(from the vault or the token endpoint) are ``KeyProviderUnavailable``. Retries are few and
timeouts short, so an unreachable vault is noticed in seconds and the other root key is tried.

Every operation goes to the vault, wrapping too: the SDK's local public-key wrap is turned
off, so the vault checks wrapKey permission and key state and audits each wrap.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, TypeVar

from azure.core.credentials import TokenCredential
from azure.core.exceptions import (
    AzureError,
    ClientAuthenticationError,
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
            if status in (400, 401, 403, 404, 409):
                raise KeyAccessDenied(f"{uri}: {exc.message}") from None
            raise KeyProviderUnavailable(f"{uri}: HTTP {status}: {exc.message}") from None
        except (ServiceRequestError, ServiceResponseError) as exc:
            raise KeyProviderUnavailable(f"{uri}: vault unreachable ({exc.message})") from None
        except AzureError as exc:
            raise KeyProviderUnavailable(f"{uri}: {exc.message}") from None
        except (OSError, ValueError) as exc:
            raise KeyProviderUnavailable(f"{uri}: {exc}") from None

    def wrap(self, uri: KeyUri, key: bytes) -> WrapResult:
        target = uri if uri.version else self.properties(uri).uri
        result = self._call(
            target, lambda: self._crypto_client(target).wrap_key(KeyWrapAlgorithm.rsa_oaep_256, key)
        )
        return WrapResult(target, result.encrypted_key)

    def unwrap(self, uri: KeyUri, wrapped: bytes) -> bytes:
        if uri.version is None:
            raise ValueError("unwrap needs a versioned key URI")
        result = self._call(
            uri,
            lambda: self._crypto_client(uri).unwrap_key(KeyWrapAlgorithm.rsa_oaep_256, wrapped),
        )
        return bytes(result.key)

    def properties(self, uri: KeyUri) -> RootKeyProperties:
        key = self._call(uri, lambda: self._key_client(uri).get_key(uri.name, uri.version))
        props = key.properties
        version = props.version or ""
        return RootKeyProperties(
            uri=uri.with_version(version),
            kty=_text(key.key_type),
            key_size=len(getattr(key.key, "n", None) or b"") * 8,
            enabled=bool(props.enabled),
            not_before=props.not_before,
            expires=props.expires_on,
            key_ops=tuple(_text(op) for op in (key.key_operations or ())),
            recovery_level=_text(props.recovery_level),
        )

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
