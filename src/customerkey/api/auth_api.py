"""The OAuth2 token endpoint (client credentials) and the public signing keys.

``POST /{tenant}/oauth2/v2.0/token`` with a form body ``grant_type=client_credentials``,
``client_id``, ``client_secret`` and ``scope`` (``<resource>/.default``) answers as Entra ID
does: ``{"token_type": "Bearer", "expires_in", "ext_expires_in", "access_token"}``, and OAuth2
errors as ``{"error", "error_description"}``.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any
from urllib.parse import parse_qs

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from customerkey.api.deps import api
from customerkey.errors import CustomerKeyError

router = APIRouter(tags=["auth"])


def _oauth_error(status: int, error: str, description: str) -> JSONResponse:
    return JSONResponse(
        {"error": error, "error_description": description},
        status_code=status,
        headers={"Cache-Control": "no-store"},
    )


@router.post("/{tenant}/oauth2/v2.0/token", response_model=None)
async def token(tenant: str, request: Request) -> JSONResponse | dict[str, Any]:
    context = api(request)
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
    client_id, secret = form.get("client_id"), form.get("client_secret")
    if not client_id or not secret:
        return _oauth_error(400, "invalid_request", "client_id and client_secret are required.")
    scopes = form.get("scope", "").split()
    audiences = {a.rstrip("/") for a in context.audiences}
    resources = [s[: -len("/.default")] for s in scopes if s.endswith("/.default")]
    if len(resources) != 1 or resources[0].rstrip("/") not in audiences:
        return _oauth_error(
            400,
            "invalid_scope",
            f"The scope must be '{context.resource}/.default'.",
        )
    try:
        principal = context.runtime.principals.authenticate(client_id, secret, tenant=tenant)
    except CustomerKeyError:
        return _oauth_error(401, "invalid_client", "Invalid client credentials.")
    lifetime = timedelta(seconds=context.runtime.settings.token_lifetime_seconds)
    lifetime = min(lifetime, context.signer.max_lifetime)
    issued = context.signer.issue(
        subject=principal.id,
        tenant=principal.tenant,
        audience=context.resource,
        roles=principal.roles,
        lifetime=lifetime,
    )
    seconds = int(lifetime.total_seconds())
    return {
        "token_type": "Bearer",
        "expires_in": seconds,
        "ext_expires_in": seconds,
        "access_token": issued.access_token,
    }


@router.get("/{tenant}/discovery/v2.0/keys")
def jwks(tenant: str, request: Request) -> dict[str, Any]:
    return dict(api(request).signer.jwks())
