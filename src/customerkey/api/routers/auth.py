"""The OAuth2 token endpoint (client credentials) and the public signing keys.

``POST /{tenant}/oauth2/v2.0/token`` with a form body ``grant_type=client_credentials``,
``client_id``, ``client_secret`` and ``scope`` (``<resource>/.default``) answers as Entra ID
does: ``{"token_type": "Bearer", "expires_in", "ext_expires_in", "access_token"}``, and OAuth2
errors as ``{"error", "error_description"}``. The client id and secret may instead come in an
HTTP Basic ``Authorization`` header (``client_secret_basic``). The v1 endpoint
``POST /{tenant}/oauth2/token`` takes ``resource=<resource>`` instead of ``scope`` and answers
as Entra ID's v1 endpoint does (numbers as strings, plus ``expires_on``, ``not_before`` and
``resource``). The discovery documents that point clients here are in ``discovery``. The
resource is the vaults' (``ApiContext.resource``) or, for the az CLI's ARM calls,
``arm.arm_audience``; the token names the one asked for.

Admission control (``TokenGuard``), so that no caller, signed in or not, can stall the server:
the secret check (a scrypt hash and a directory read) runs on ``token_hash_threads`` dedicated
threads, never on the event loop, with at most ``token_hash_queue`` requests waiting; failed
sign-ins are rate-limited per client id and per source address (optionally all requests per
source). A refused request is a 429 with ``Retry-After`` (whole seconds) and the OAuth2 error
shape, decided before any hashing. A failure is charged before the check runs (so concurrent
guesses cannot overrun a limit) and given back when the secret was right; the per-client limit
counts any client id alike, whether it exists or not.
"""

from __future__ import annotations

import base64
import time
from datetime import timedelta
from typing import Any
from urllib.parse import parse_qs, unquote_plus

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from customerkey.api.deps import api
from customerkey.api.rate_limit import (
    Clock,
    HashPool,
    PoolFull,
    RateLimiter,
    bucket_key,
    retry_after,
    source_key,
)
from customerkey.api.routers.arm import arm_audience
from customerkey.clock import to_unix
from customerkey.config import Settings
from customerkey.errors import CustomerKeyError
from customerkey.identity.directory import Principal

router = APIRouter(tags=["auth"])
# What a request refused for a full hash queue is told to wait.
BUSY_RETRY_SECONDS = 1


class TokenGuard:
    """The token endpoint's hash pool and rate limiters (one per server process)."""

    def __init__(self, settings: Settings, *, clock: Clock = time.monotonic) -> None:
        self.pool = HashPool(
            settings.token_hash_threads, settings.token_hash_queue, name="customerkey-token"
        )
        self.client_failures = RateLimiter(
            settings.token_client_failure_burst,
            settings.token_client_failures_per_minute,
            clock=clock,
        )
        self.source_failures = RateLimiter(
            settings.token_source_failure_burst,
            settings.token_source_failures_per_minute,
            clock=clock,
        )
        self.source_requests = RateLimiter(
            settings.token_source_request_burst,
            settings.token_source_requests_per_minute,
            clock=clock,
        )

    def close(self) -> None:
        self.pool.close()


def token_guard(request: Request) -> TokenGuard:
    guard = getattr(request.app.state, "token_guard", None)
    if guard is None:  # an app built without one (create_app makes it)
        guard = request.app.state.token_guard = TokenGuard(api(request).runtime.settings)
    assert isinstance(guard, TokenGuard)
    return guard


def _oauth_error(
    status: int, error: str, description: str, *, retry_seconds: int | None = None
) -> JSONResponse:
    headers = {"Cache-Control": "no-store"}
    if retry_seconds is not None:
        headers["Retry-After"] = str(retry_seconds)
    return JSONResponse(
        {"error": error, "error_description": description},
        status_code=status,
        headers=headers,
    )


def _too_many(description: str, wait: float) -> JSONResponse:
    seconds = retry_after(wait)
    return _oauth_error(
        429,
        "temporarily_unavailable",
        f"{description} Retry after {seconds} seconds.",
        retry_seconds=seconds,
    )


@router.post("/{tenant}/oauth2/v2.0/token", response_model=None)
async def token(tenant: str, request: Request) -> JSONResponse | dict[str, Any]:
    return await _token(tenant, request, v1=False)


@router.post("/{tenant}/oauth2/token", response_model=None)
async def token_v1(tenant: str, request: Request) -> JSONResponse | dict[str, Any]:
    """The v1 endpoint: ``resource=<resource>`` instead of ``scope``; v1's answer (numbers
    as strings, ``expires_on``, ``not_before`` and ``resource``)."""
    return await _token(tenant, request, v1=True)


def client_credentials(
    form: dict[str, str], authorization: str | None
) -> tuple[str, str] | JSONResponse:
    """The client id and secret, posted in the form (``client_secret_post``) or in an HTTP
    Basic ``Authorization`` header (``client_secret_basic``: each part form-urlencoded, then
    base64), or the OAuth2 error to answer. Using both methods at once is refused (RFC 6749
    2.3), and so is a form ``client_id`` that differs from the header's."""
    basic: tuple[str, str] | None = None
    if authorization is not None:
        scheme, _, value = authorization.strip().partition(" ")
        if scheme.lower() != "basic":
            return _oauth_error(
                400, "invalid_request", "Only Basic client authentication is supported."
            )
        try:
            decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
        except (ValueError, UnicodeDecodeError):
            decoded = ""
        user, colon, password = decoded.partition(":")
        if not colon or not user or not password:
            return _oauth_error(
                400, "invalid_request", "The Basic Authorization header is malformed."
            )
        basic = (unquote_plus(user), unquote_plus(password))
    form_id, form_secret = form.get("client_id"), form.get("client_secret")
    if basic is not None:
        if form_secret is not None:
            return _oauth_error(
                400,
                "invalid_request",
                "Send the client secret either in the Authorization header or in the body, "
                "not both.",
            )
        if form_id is not None and form_id != basic[0]:
            return _oauth_error(
                400, "invalid_request", "client_id differs from the Authorization header's."
            )
        return basic
    if not form_id or not form_secret:
        return _oauth_error(400, "invalid_request", "client_id and client_secret are required.")
    return form_id, form_secret


async def _token(tenant: str, request: Request, *, v1: bool) -> JSONResponse | dict[str, Any]:
    context = api(request)
    guard = token_guard(request)
    source = source_key(request.client.host if request.client else None)
    wait = guard.source_requests.take(source)
    if wait:
        return _too_many("Too many token requests from this address.", wait)
    content_type = request.headers.get("content-type", "")
    if not content_type.startswith("application/x-www-form-urlencoded"):
        return _oauth_error(
            400, "invalid_request", "The body must be application/x-www-form-urlencoded."
        )
    raw = (await request.body()).decode("utf-8", errors="replace")
    form = {k: v[0] for k, v in parse_qs(raw, keep_blank_values=True).items()}
    if form.get("grant_type") != "client_credentials":
        return _oauth_error(
            400, "unsupported_grant_type", "Only the client_credentials grant is supported."
        )
    credentials = client_credentials(form, request.headers.get("authorization"))
    if isinstance(credentials, JSONResponse):
        return credentials
    client_id, secret = credentials
    audiences = {a.rstrip("/") for a in context.audiences}
    arm = arm_audience(context)
    if v1:
        asked = form.get("resource", "").rstrip("/")
        if asked not in audiences | {arm.rstrip("/")}:
            return _oauth_error(
                400, "invalid_resource", f"The resource must be '{context.resource}'."
            )
    else:
        scopes = form.get("scope", "").split()
        resources = [s[: -len("/.default")] for s in scopes if s.endswith("/.default")]
        asked = resources[0].rstrip("/") if len(resources) == 1 else ""
        if asked not in audiences | {arm.rstrip("/")}:
            return _oauth_error(
                400,
                "invalid_scope",
                f"The scope must be '{context.resource}/.default'.",
            )
    # A token for the vaults, or (az's sign-in) for the ARM routes; never both at once.
    audience = arm if asked == arm.rstrip("/") else context.resource
    principal = await authenticate_client(request, guard, source, client_id, secret, tenant)
    if isinstance(principal, JSONResponse):
        return principal
    lifetime = timedelta(seconds=context.runtime.settings.token_lifetime_seconds)
    lifetime = min(lifetime, context.signer.max_lifetime)
    issued = context.signer.issue(
        subject=principal.object_id,
        tenant=principal.tenant,
        audience=audience,
        roles=principal.roles,
        lifetime=lifetime,
        extra={"oid": principal.object_id, "appid": principal.id, "azp": principal.id},
        generation=principal.token_generation,
        v1=v1,
    )
    seconds = int(lifetime.total_seconds())
    if v1:
        expires_on = to_unix(issued.expires_on)
        return {
            "token_type": "Bearer",
            "expires_in": str(seconds),
            "ext_expires_in": str(seconds),
            "expires_on": str(expires_on),
            "not_before": str(expires_on - seconds),
            "resource": audience,
            "access_token": issued.access_token,
        }
    return {
        "token_type": "Bearer",
        "expires_in": seconds,
        "ext_expires_in": seconds,
        "access_token": issued.access_token,
    }


async def authenticate_client(
    request: Request, guard: TokenGuard, source: str, client_id: str, secret: str, tenant: str
) -> Principal | JSONResponse:
    """Check the credentials on the hash pool, within the failure limits: the principal, or
    the 401/429 to answer."""
    client = bucket_key(client_id)
    client_wait = guard.client_failures.take(client)
    source_wait = guard.source_failures.take(source)
    if client_wait or source_wait:
        if not client_wait:
            guard.client_failures.give_back(client)
        if not source_wait:
            guard.source_failures.give_back(source)
        which = "for this client id" if client_wait >= source_wait else "from this address"
        return _too_many(f"Too many failed sign-ins {which}.", max(client_wait, source_wait))
    authenticate = api(request).runtime.principals.authenticate
    result: Principal | JSONResponse
    try:
        result = await guard.pool.run(lambda: authenticate(client_id, secret, tenant=tenant))
    except PoolFull:
        result = _too_many("The token endpoint is busy.", BUSY_RETRY_SECONDS)
    except CustomerKeyError:
        return _oauth_error(401, "invalid_client", "Invalid client credentials.")
    # Signed in, or never checked: this attempt was no failure.
    guard.client_failures.give_back(client)
    guard.source_failures.give_back(source)
    return result


@router.get("/{tenant}/discovery/v2.0/keys")
def jwks(tenant: str, request: Request) -> dict[str, Any]:
    return dict(api(request).signer.jwks())
