"""A client-secret credential for the Azure SDK that signs in to customerkey instead of Entra ID.

Owns the client side of customerkey's OAuth2 client-credentials flow: it implements
``azure.core.credentials.TokenCredential`` and ``SupportsTokenInfo``, so any Azure SDK client
(``azure.keyvault.keys.KeyClient`` above all) takes it where it would take
``azure.identity.ClientSecretCredential``. It POSTs ``grant_type=client_credentials`` to
``{authority}/{tenant}/oauth2/v2.0/token`` and caches each token per tenant and scopes until five
minutes before it expires.

How the Key Vault SDK (azure-keyvault-keys 4.11) calls it: ``ChallengeAuthPolicy`` prefers
``get_token_info(scope, options={"enable_cae": True, "tenant_id": <from the challenge>})`` when
the credential has it, and otherwise ``get_token(scope, tenant_id=..., enable_cae=True)``. The
tenant is the first path segment of the challenge's ``authorization`` URL; the scope is the
challenge's ``resource`` plus ``/.default``. Only that tenant is taken from the challenge: the
secret always goes to the configured ``authority``, never to a URL a server named.

A failed sign-in raises ``ClientAuthenticationError``; its ``status_code`` is the token
endpoint's HTTP status when it answered (401 for a refused secret), ``None`` when it could not
be reached or answered with something unreadable.
"""

from __future__ import annotations

import re
import ssl
import threading
from collections.abc import Sequence
from datetime import timedelta
from types import TracebackType
from typing import Any
from urllib.parse import quote, urlsplit

import httpx
from azure.core.credentials import AccessToken, AccessTokenInfo, TokenRequestOptions
from azure.core.exceptions import ClientAuthenticationError

from customerkey.clock import Clock, SystemClock, to_unix

DEFAULT_AUTHORITY = "https://localhost:8443"
REFRESH_BEFORE = timedelta(minutes=5)
_TENANT = re.compile(r"^[0-9A-Za-z._-]+$")


class ClientSecretCredential:
    """Authenticates a service principal to customerkey with its client id and secret.

    ``verify`` is the file of CA certificates to trust (typically the ``ca.pem`` that
    ``customerkey serve`` writes under its home folder), ``True`` for the system trust store, or
    ``False`` to skip TLS verification (tests only).
    """

    def __init__(
        self,
        tenant_id: str,
        client_id: str,
        client_secret: str,
        *,
        authority: str = DEFAULT_AUTHORITY,
        verify: str | bool = True,
        timeout: float = 30.0,
        clock: Clock | None = None,
    ) -> None:
        _check_tenant(tenant_id)
        if not client_id:
            raise ValueError("client_id must not be empty")
        if not client_secret:
            raise ValueError("client_secret must not be empty")
        parts = urlsplit(authority)
        if parts.scheme != "https" or not parts.netloc or parts.query or parts.fragment:
            raise ValueError(f"authority must be an https URL such as {DEFAULT_AUTHORITY}")
        self._tenant_id = tenant_id
        self._client_id = client_id
        self._client_secret = client_secret
        self._authority = authority.rstrip("/")
        self._verify: ssl.SSLContext | bool
        if isinstance(verify, str):
            try:
                self._verify = ssl.create_default_context(cafile=verify)
            except (OSError, ssl.SSLError) as exc:
                raise ValueError(f"cannot load CA certificates from {verify}: {exc}") from exc
        elif verify:
            self._verify = ssl.create_default_context()
        else:
            self._verify = False
        self._timeout = timeout
        self._clock: Clock = clock or SystemClock()
        self._lock = threading.Lock()
        self._client: httpx.Client | None = None
        self._cache: dict[tuple[str, tuple[str, ...]], AccessTokenInfo] = {}

    def get_token(
        self,
        *scopes: str,
        claims: str | None = None,
        tenant_id: str | None = None,
        enable_cae: bool = False,
        **kwargs: Any,
    ) -> AccessToken:
        """An access token for ``scopes``, from the cache when it is still fresh.

        ``tenant_id`` (which the Key Vault SDK passes from the server's challenge) replaces the
        configured tenant for this request. ``claims`` forces a new token. ``enable_cae`` is
        accepted and ignored: customerkey has no continuous access evaluation.
        """
        info = self._acquire(scopes, claims=claims, tenant_id=tenant_id)
        return AccessToken(info.token, info.expires_on)

    def get_token_info(
        self, *scopes: str, options: TokenRequestOptions | None = None
    ) -> AccessTokenInfo:
        """Like ``get_token``, taking ``claims`` and ``tenant_id`` from ``options``."""
        options = options or {}
        return self._acquire(
            scopes, claims=options.get("claims"), tenant_id=options.get("tenant_id")
        )

    def close(self) -> None:
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None

    def __enter__(self) -> ClientSecretCredential:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def _acquire(
        self, scopes: Sequence[str], *, claims: str | None, tenant_id: str | None
    ) -> AccessTokenInfo:
        if not scopes or not all(scopes):
            raise ValueError("get_token needs at least one non-empty scope")
        tenant = tenant_id or self._tenant_id
        _check_tenant(tenant)
        key = (tenant, tuple(sorted(set(scopes))))
        with self._lock:
            cached = self._cache.get(key)
            now = to_unix(self._clock.now())
            refresh_window = int(REFRESH_BEFORE.total_seconds())
            if cached is not None and not claims and now < cached.expires_on - refresh_window:
                return cached
            info = self._request(tenant, key[1])
            self._cache[key] = info
            return info

    def _request(self, tenant: str, scopes: tuple[str, ...]) -> AccessTokenInfo:
        url = f"{self._authority}/{quote(tenant, safe='')}/oauth2/v2.0/token"
        form = {
            "grant_type": "client_credentials",
            "client_id": self._client_id,
            "client_secret": self._client_secret,
            "scope": " ".join(scopes),
        }
        started = to_unix(self._clock.now())
        try:
            response = self._http().post(url, data=form, headers={"Accept": "application/json"})
        except httpx.HTTPError as exc:
            raise ClientAuthenticationError(
                message=f"customerkey token request to {url} failed: {exc}"
            ) from exc
        if response.status_code != 200:
            refused = ClientAuthenticationError(
                message=(
                    f"customerkey token request to {url} failed ({response.status_code}): "
                    f"{_error_message(response)}"
                )
            )
            # The endpoint answered: callers tell a refusal (4xx) from an outage by this.
            refused.status_code = response.status_code
            raise refused
        try:
            body = response.json()
            token = body["access_token"]
            expires_in = int(body["expires_in"])
            token_type = body.get("token_type", "Bearer")
        except (ValueError, KeyError, TypeError) as exc:
            raise ClientAuthenticationError(
                message=f"customerkey token endpoint {url} returned an unreadable response"
            ) from exc
        if not isinstance(token, str) or not token or not isinstance(token_type, str):
            raise ClientAuthenticationError(
                message=f"customerkey token endpoint {url} returned no access token"
            )
        if token_type.lower() != "bearer":
            raise ClientAuthenticationError(
                message=f"customerkey token endpoint {url} returned a non-Bearer token"
            )
        return AccessTokenInfo(token, started + expires_in, token_type="Bearer")

    def _http(self) -> httpx.Client:
        if self._client is None:
            self._client = httpx.Client(verify=self._verify, timeout=self._timeout)
        return self._client


def _check_tenant(tenant: str) -> None:
    # The tenant becomes a URL path segment and may come from a server's challenge.
    if not _TENANT.match(tenant):
        raise ValueError(f"invalid tenant id {tenant[:100]!r}: use letters, digits, '.', '-', '_'")


def _error_message(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:500] or response.reason_phrase
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            return str(error["message"])
        description = body.get("error_description")
        if isinstance(description, str):
            return description if not isinstance(error, str) else f"{error}: {description}"
        if isinstance(error, str):
            return error
    return response.text[:500]
