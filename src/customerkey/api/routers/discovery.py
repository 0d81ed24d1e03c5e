"""The sign-in discovery documents Entra ID publishes and the stock MSAL clients read.

The stock credentials (``azure.identity.ClientSecretCredential`` with
``authority="https://localhost:8443"`` and ``disable_instance_discovery=True``, msal-node's
``ClientSecretCredential({authorityHost, disableInstanceDiscovery: true})``) read the tenant's
OpenID configuration before their first token request, take the token endpoint from it and
(msal-node) check that the issuer is on the authority's scheme, host and port.

==========================================================  ==================================
``GET /{tenant}/v2.0/.well-known/openid-configuration``     v2.0 document (``/oauth2/v2.0/...``)
``GET /{tenant}/.well-known/openid-configuration``          v1 document (``/oauth2/token``)
``GET /common/discovery/instance``                          instance discovery (api-version 1.x)
``GET /{tenant}/discovery/keys``                            the signing keys (v1 path; the v2.0
                                                            path is in ``auth``)
``GET /{tenant}/oauth2[/v2.0]/authorize``                   an OAuth2 error: only client
                                                            credentials are supported
==========================================================  ==================================

The documents name this server as the caller reached it (``https://`` + the host name of the
Host header, which ``api.hosts`` checked, and the configured public port). The issuer is
``https://<host>/<tenant>/v2.0`` (v1: ``https://<host>/<tenant>/``); for ``common`` and
``organizations`` it is ``https://<host>/{tenantid}/v2.0`` with the literal placeholder, as
Entra ID answers. The discovery documents do not say whether a tenant exists (service
principals may ask for a token in any tenant's path); the token endpoint decides who signs in.
Instance discovery answers only for this server's own host name (``invalid_instance``
otherwise; the port is not compared, as MSAL Python leaves it out), with
``tenant_discovery_endpoint`` naming the tenant of the ``authorization_endpoint`` it was asked
about, on this server's authority.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from customerkey.api.deps import api, host_of
from customerkey.api.hosts import parse_host

router = APIRouter(tags=["auth"])

# A tenant path segment: a name or GUID (what Entra ID accepts, and what is safe to echo).
TENANT_SEGMENT = re.compile(r"^[0-9A-Za-z][0-9A-Za-z._-]{0,99}$")
# Tenants whose documents carry the issuer placeholder instead of their own name.
MULTI_TENANT = ("common", "organizations", "consumers")
ISSUER_PLACEHOLDER = "{tenantid}"
INSTANCE_DISCOVERY_VERSION = "1.1"
# What an access token says (``TokenSigner.issue`` and the token endpoint's extra claims).
CLAIMS = ("iss", "sub", "aud", "exp", "nbf", "iat", "tid", "oid", "appid", "azp", "roles")
# Cached by clients for a day, as Entra ID's documents are.
_CACHE = {"Cache-Control": "max-age=86400, private"}


def authority_of(request: Request) -> str:
    """``https://host[:port]`` of this server as the caller addressed it: the host name the
    caller used (one ``api.hosts`` accepts), the configured public port."""
    parsed = parse_host(host_of(request))
    if parsed is None:
        return api(request).authority
    return api(request).url_for(parsed.name)


def openid_configuration(authority: str, tenant: str, *, v1: bool = False) -> dict[str, Any]:
    """The OpenID configuration of ``tenant`` at ``authority`` (``https://host[:port]``)."""
    base = f"{authority}/{tenant}"
    issued_for = ISSUER_PLACEHOLDER if tenant.lower() in MULTI_TENANT else tenant
    oauth = f"{base}/oauth2" if v1 else f"{base}/oauth2/v2.0"
    return {
        "issuer": f"{authority}/{issued_for}/" if v1 else f"{authority}/{issued_for}/v2.0",
        "authorization_endpoint": f"{oauth}/authorize",
        "token_endpoint": f"{oauth}/token",
        "jwks_uri": f"{base}/discovery/keys" if v1 else f"{base}/discovery/v2.0/keys",
        "token_endpoint_auth_methods_supported": ["client_secret_post", "client_secret_basic"],
        "grant_types_supported": ["client_credentials"],
        "response_types_supported": ["token"],
        "response_modes_supported": ["query", "fragment", "form_post"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["ES256"],
        "claims_supported": list(CLAIMS),
        "request_uri_parameter_supported": False,
    }


def instance_discovery(authority: str, authorization_endpoint: str | None) -> dict[str, Any]:
    """The instance discovery answer for ``authorization_endpoint`` (the client's
    ``https://host/tenant/oauth2/v2.0/authorize``), or the ``invalid_instance`` error body
    when it names another host or no tenant."""
    ours = urlsplit(authority)
    tenant = "common"
    if authorization_endpoint:
        asked = urlsplit(authorization_endpoint)
        segments = [s for s in asked.path.split("/") if s]
        if (
            asked.scheme.lower() != "https"
            # The host only: MSAL Python sends the authority's host without its port.
            or (asked.hostname or "").lower() != (ours.hostname or "").lower()
            or not segments
            or not TENANT_SEGMENT.match(segments[0])
        ):
            return {
                "error": "invalid_instance",
                "error_description": (
                    f"AADSTS50049: Unknown or invalid instance. This server answers for "
                    f"{authority} only."
                ),
            }
        tenant = segments[0]
    host = ours.netloc
    return {
        "tenant_discovery_endpoint": f"{authority}/{tenant}/v2.0/.well-known/openid-configuration",
        "api-version": INSTANCE_DISCOVERY_VERSION,
        "metadata": [{"preferred_network": host, "preferred_cache": host, "aliases": [host]}],
    }


def _tenant_error(tenant: str) -> JSONResponse:
    return JSONResponse(
        {
            "error": "invalid_tenant",
            "error_description": f"AADSTS90002: Tenant '{tenant[:100]}' is not a valid tenant.",
        },
        status_code=400,
    )


# The fixed paths first: /common/discovery/instance must not be read as /{tenant}/....


@router.get("/common/discovery/instance", response_model=None)
def discovery_instance(request: Request) -> JSONResponse:
    asked = request.query_params.get("authorization_endpoint")
    body = instance_discovery(authority_of(request), asked)
    return JSONResponse(body, status_code=400 if "error" in body else 200, headers=_CACHE)


@router.get("/{tenant}/v2.0/.well-known/openid-configuration", response_model=None)
def openid_configuration_v2(tenant: str, request: Request) -> JSONResponse:
    if not TENANT_SEGMENT.match(tenant):
        return _tenant_error(tenant)
    return JSONResponse(openid_configuration(authority_of(request), tenant), headers=_CACHE)


@router.get("/{tenant}/.well-known/openid-configuration", response_model=None)
def openid_configuration_v1(tenant: str, request: Request) -> JSONResponse:
    if not TENANT_SEGMENT.match(tenant):
        return _tenant_error(tenant)
    body = openid_configuration(authority_of(request), tenant, v1=True)
    return JSONResponse(body, headers=_CACHE)


@router.get("/{tenant}/discovery/keys")
def jwks_v1(tenant: str, request: Request) -> dict[str, Any]:
    return dict(api(request).signer.jwks())


def _no_authorize() -> JSONResponse:
    return JSONResponse(
        {
            "error": "unsupported_response_type",
            "error_description": (
                "This server signs in applications with the client_credentials grant at the "
                "token endpoint only; there is no interactive sign-in."
            ),
        },
        status_code=400,
        headers={"Cache-Control": "no-store"},
    )


@router.get("/{tenant}/oauth2/v2.0/authorize", response_model=None)
def authorize(tenant: str) -> JSONResponse:
    return _no_authorize()


@router.get("/{tenant}/oauth2/authorize", response_model=None)
def authorize_v1(tenant: str) -> JSONResponse:
    return _no_authorize()
