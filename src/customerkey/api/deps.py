"""What every route needs: the platform, which vault the Host header names, the api-version
check, who the caller is (bearer token -> principal -> ``Actor``), and for the keys API the
per-vault throttle's verdict (``throttle_keys_call``; the decision is ``api.throttle``'s).

The vault is chosen by the Host header, as in Key Vault: ``contoso-a1.vault.localhost:8443``
is vault ``contoso-a1`` when the server's domain is ``vault.localhost``. Any other host is the
bare host, where the admin API, the token endpoint, ``/healthz`` and ``/metrics`` live. A Host
naming neither never reaches a route (``api.hosts``); the URLs handed out are built from the
settings (``ApiContext.vault_url``, ``url_for``).
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from fastapi import Depends, Request
from starlette.concurrency import run_in_threadpool

from customerkey.api.rate_limit import retry_after
from customerkey.api.throttle import Call, VaultThrottle
from customerkey.api.tokens import TokenSigner
from customerkey.errors import (
    BadParameter,
    CustomerKeyError,
    Forbidden,
    Throttled,
    Unauthorized,
)
from customerkey.identity import authorize as authz
from customerkey.identity.directory import Principal
from customerkey.runtime import Runtime
from customerkey.vault.models import Actor

# Every Key Vault keys data-plane api-version an Azure SDK has sent (azure-keyvault-keys'
# ``ApiVersion`` for Python, ``KnownVersions`` for JavaScript, and the az CLI's), oldest first.
# They answer alike: what the later versions added to the bodies (``recoverableDays`` in 7.1,
# ``exportable`` in 7.3) is ignored by the clients of the earlier ones, and a request names
# only fields its version defines. Anything else gets Key Vault's 400 BadParameter.
SUPPORTED_API_VERSIONS = (
    "2016-10-01",
    "7.0",
    "7.1",
    "7.2",
    "7.3",
    "7.4",
    "7.5",
    "7.6-preview.1",
    "7.6-preview.2",
    "7.6",
    "2025-07-01",
    "2026-01-01-preview",
    "2026-04-01",
)
# The version the refusal suggests: the default of the current SDKs (Python and JavaScript).
LATEST_API_VERSION = "2025-07-01"
# How long a principal looked up for a request is reused by later requests of this process.
PRINCIPAL_CACHE_SECONDS = 1.0


class PrincipalCache:
    """Principals by id for ``PRINCIPAL_CACHE_SECONDS`` (monotonic time), so a stream of calls
    from one client reads the directory once a second instead of once per request.

    Only principals that exist are kept: one created a moment ago is found at once. Removing a
    principal or one of its roles takes effect within the TTL (in this process at once, for
    whoever calls ``forget``/``clear``; in other server processes within the TTL). The TTL is
    the bound, not the token lifetime: tokens still name a principal that must exist."""

    def __init__(self, ttl: float = PRINCIPAL_CACHE_SECONDS) -> None:
        self.ttl = ttl
        self._items: dict[str, tuple[float, Principal]] = {}
        self._lock = threading.Lock()

    def get(self, principal_id: str) -> Principal | None:
        item = self._items.get(principal_id)
        if item is None or item[0] <= time.monotonic():
            return None
        return item[1]

    def put(self, principal: Principal, key: str) -> None:
        if self.ttl <= 0:
            return
        with self._lock:
            if len(self._items) > 10_000:
                now = time.monotonic()
                self._items = {k: v for k, v in self._items.items() if v[0] > now}
            self._items[key] = (time.monotonic() + self.ttl, principal)

    def forget(self, principal_id: str) -> None:
        """Drop a principal (by sign-in name or object id)."""
        wanted = principal_id.lower()
        with self._lock:
            for key in [k for k, v in self._items.items() if wanted in (v[1].id, v[1].object_id)]:
                del self._items[key]

    def clear(self) -> None:
        with self._lock:
            self._items.clear()


class AuthChallenge(Unauthorized):
    """401 with the Key Vault ``WWW-Authenticate`` challenge the Azure SDK answers."""

    def __init__(self, message: str, challenge: str) -> None:
        super().__init__(message)
        self.challenge = challenge


class NotAVaultHost(CustomerKeyError):
    status = 404
    code = "NotFound"


@dataclass
class ApiContext:
    runtime: Runtime
    signer: TokenSigner
    domain: str
    port: int
    audiences: tuple[str, ...] = field(default=())
    principals: PrincipalCache = field(default_factory=PrincipalCache)

    def __post_init__(self) -> None:
        if not self.audiences:
            self.audiences = (self.resource,)

    @property
    def resource(self) -> str:
        """The token audience. It carries the port unless 443: the Azure SDK checks that the
        vault's host:port ends with the resource's host:port."""
        return f"https://{self.domain}{self._port_suffix}"

    @property
    def authority(self) -> str:
        return f"https://localhost{self._port_suffix}"

    @property
    def _port_suffix(self) -> str:
        return "" if self.port == 443 else f":{self.port}"

    def vault_url(self, vault: str) -> str:
        """``https://<vault>.<domain>[:port]``: built from the settings, never the Host header
        (``port`` is the public port)."""
        return f"https://{vault.lower()}.{self.domain}{self._port_suffix}"

    def url_for(self, host_name: str) -> str:
        """``https://<host_name>[:port]`` for a host name ``api.hosts`` accepted."""
        return f"https://{host_name}{self._port_suffix}"


def api(request: Request) -> ApiContext:
    context = request.app.state.api
    assert isinstance(context, ApiContext)
    return context


def request_id(request: Request) -> str:
    for name in ("x-ms-client-request-id", "x-ms-request-id"):
        value = request.headers.get(name)
        if value and len(value) <= 64:
            return value
    return str(uuid.uuid4())


def host_of(request: Request) -> str:
    return request.headers.get("host", "").strip()


def vault_base_url(request: Request) -> str:
    """The URL of the vault a request on a vault host is addressed to (for key ids, recovery
    ids and next links)."""
    context = api(request)
    return context.vault_url(vault_label(host_of(request), context.domain) or "")


def vault_label(host: str, domain: str) -> str | None:
    """The vault named by a Host header value, or None for the bare host."""
    if host.startswith("["):
        hostname = host.split("]", 1)[0] + "]"
    else:
        hostname = host.split(":", 1)[0]
    hostname = hostname.lower().rstrip(".")
    suffix = "." + domain.lower()
    if not hostname.endswith(suffix):
        return None
    label = hostname[: -len(suffix)]
    if not label or "." in label:
        return None
    return label


async def vault_name(request: Request) -> str:
    """The vault this request is addressed to; refuses requests to the bare host."""
    context = api(request)
    label = vault_label(host_of(request), context.domain)
    if label is None:
        raise NotAVaultHost(
            f"This is not a vault host. Vaults answer at https://<vault>.{context.domain}"
            f"{context._port_suffix}/."
        )
    return label


async def check_api_version(request: Request) -> str:
    version = request.query_params.get("api-version")
    if version is None:
        raise BadParameter("The api-version query parameter is required.")
    if version not in SUPPORTED_API_VERSIONS:
        raise BadParameter(
            f"The specified version ({version}) is not recognized. Consider using the latest "
            f"supported version ({LATEST_API_VERSION}); supported: "
            + ", ".join(SUPPORTED_API_VERSIONS)
            + "."
        )
    return version


def _bearer(request: Request) -> str | None:
    header = request.headers.get("authorization")
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


async def _actor_from_token(request: Request, token: str) -> Actor:
    context = api(request)
    claims = context.signer.verify(token, audience=context.audiences)
    # Roles, state and existence come from the directory, not the token, so disabling or
    # deleting a principal, removing a role or resetting its secret takes effect at once in
    # this process and within PRINCIPAL_CACHE_SECONDS in others. The subject is the object id.
    principal = context.principals.get(claims.subject)
    if principal is None:
        try:
            # A database read: off the event loop (it may wait for a write transaction).
            principal = await run_in_threadpool(context.runtime.principals.get, claims.subject)
        except CustomerKeyError:
            raise Unauthorized("The token's principal no longer exists.") from None
        context.principals.put(principal, claims.subject)
    if principal.object_id != claims.subject or principal.tenant != claims.tenant:
        raise Unauthorized("The token's principal no longer exists.")
    if not principal.enabled:
        raise Unauthorized("The token's principal is disabled.")
    if claims.generation != principal.token_generation:
        raise Unauthorized("The token was revoked; sign in again.")
    return principal.actor(request_id=request_id(request))


# The dependencies below are coroutines on purpose: FastAPI runs a plain ``def`` dependency in
# its thread pool, and those hand-offs (three per keys-API call, plus the endpoint's own) cost
# more CPU than the checks themselves. They only compute, or await the pool for what blocks.


async def vault_actor(request: Request) -> Actor:
    """Authenticate a keys-API call, answering a missing token with the Key Vault challenge."""
    context = api(request)
    token = _bearer(request)
    if token is None:
        tenant = await run_in_threadpool(_vault_tenant, context, request)
        raise AuthChallenge(
            "AKV10000: Request is missing a Bearer or PoP token.",
            f'Bearer authorization="{context.authority}/{tenant}", resource="{context.resource}"',
        )
    try:
        return await _actor_from_token(request, token)
    except AuthChallenge:
        raise
    except Unauthorized as refused:
        tenant = await run_in_threadpool(_vault_tenant, context, request)
        raise AuthChallenge(
            refused.message,
            f'Bearer authorization="{context.authority}/{tenant}", resource="{context.resource}"',
        ) from None


def _vault_tenant(context: ApiContext, request: Request) -> str:
    label = vault_label(host_of(request), context.domain)
    tenant = context.runtime.vault.vault_tenant(label) if label else None
    return tenant or "common"


async def admin_actor(request: Request) -> Actor:
    """Authenticate an admin-API call: a valid token of an operator or a tenant admin."""
    token = _bearer(request)
    if token is None:
        raise Unauthorized(
            "The admin API needs a bearer token (see POST /{tenant}/oauth2/v2.0/token)."
        )
    actor = await _actor_from_token(request, token)
    if not (
        authz.allowed(actor, authz.Action.PLATFORM_OPERATE, authz.Platform())
        or authz.allowed(actor, authz.Action.TENANT_ADMINISTER, authz.Tenant(actor.tenant))
    ):
        raise Forbidden(
            f"'{actor.principal_id}' needs the operator or tenant-admin role for the admin API."
        )
    return actor


# ------------------------------------------------------------------ per-vault throttling

F = TypeVar("F", bound=Callable[..., Any])
# The keys-API routes that make key material (create, rotate): Key Vault's CREATE limit.
_GENERATES_KEY: set[Callable[..., Any]] = set()


def generates_key(endpoint: F) -> F:
    """Mark a keys-API route as one that makes key material (under its route decorator)."""
    _GENERATES_KEY.add(endpoint)
    return endpoint


def vault_throttle(request: Request) -> VaultThrottle:
    throttle = request.app.state.throttle
    assert isinstance(throttle, VaultThrottle)
    return throttle


async def throttle_keys_call(
    request: Request, vault: str = Depends(vault_name), actor: Actor = Depends(vault_actor)
) -> None:
    """Per-vault throttling of a keys-API call (``api.throttle``), decided once per request:
    after the caller is known, so a request without a valid token spends no vault's budget,
    and before the service does any work. Refused: 429 ``Throttled`` with ``Retry-After``."""
    throttle = vault_throttle(request)
    if not throttle.enabled:
        return
    creates = getattr(request.scope.get("route"), "endpoint", None) in _GENERATES_KEY
    name = request.path_params.get("name")
    call = Call(
        vault,
        actor.tenant,
        creates=creates,
        key=name if isinstance(name, str) else None,
        kty=await _requested_kty(request) if creates else None,
    )
    wait = throttle.take(call)
    if wait > 0:
        seconds = retry_after(wait)
        raise Throttled(
            "Request was not processed because too many requests were received for vault "
            f"'{vault}'. Retry after {seconds} seconds.",
            retry_after=seconds,
        )


async def _requested_kty(request: Request) -> str | None:
    """The ``kty`` a create body asks for (FastAPI has read the body already; a malformed one
    is charged as a software key's create, then refused by validation)."""
    try:
        body = json.loads(await request.body() or b"null")
    except ValueError:
        return None
    kty = body.get("kty") if isinstance(body, dict) else None
    return kty if isinstance(kty, str) else None
