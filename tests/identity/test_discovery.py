"""The sign-in discovery documents, client authentication at the token endpoint and the
api-version check, without a server (``customerkey.api.routers.discovery``, ``auth``,
``customerkey.api.deps``)."""

from __future__ import annotations

import asyncio
import base64
import json
from urllib.parse import quote_plus

import pytest
from fastapi.responses import JSONResponse
from starlette.requests import Request

from customerkey.api.deps import LATEST_API_VERSION, SUPPORTED_API_VERSIONS, check_api_version
from customerkey.api.routers.auth import client_credentials
from customerkey.api.routers.discovery import instance_discovery, openid_configuration
from customerkey.errors import BadParameter

AUTHORITY = "https://localhost:8443"


# ------------------------------------------------------------------ OpenID configuration


def test_v2_document_names_the_tenants_endpoints_and_issuer() -> None:
    doc = openid_configuration(AUTHORITY, "contoso")
    assert doc["issuer"] == "https://localhost:8443/contoso/v2.0"
    assert doc["authorization_endpoint"] == "https://localhost:8443/contoso/oauth2/v2.0/authorize"
    assert doc["token_endpoint"] == "https://localhost:8443/contoso/oauth2/v2.0/token"
    assert doc["jwks_uri"] == "https://localhost:8443/contoso/discovery/v2.0/keys"
    assert set(doc["token_endpoint_auth_methods_supported"]) == {
        "client_secret_post",
        "client_secret_basic",
    }
    assert doc["grant_types_supported"] == ["client_credentials"]
    # What msal-node requires before it uses a document at all.
    assert {"authorization_endpoint", "token_endpoint", "issuer", "jwks_uri"} <= set(doc)
    assert {"tid", "oid", "appid", "azp", "aud", "iss"} <= set(doc["claims_supported"])


def test_v1_document_points_at_the_v1_endpoints() -> None:
    doc = openid_configuration(AUTHORITY, "contoso", v1=True)
    assert doc["issuer"] == "https://localhost:8443/contoso/"
    assert doc["token_endpoint"] == "https://localhost:8443/contoso/oauth2/token"
    assert doc["authorization_endpoint"] == "https://localhost:8443/contoso/oauth2/authorize"
    assert doc["jwks_uri"] == "https://localhost:8443/contoso/discovery/keys"


@pytest.mark.parametrize("tenant", ["common", "organizations", "Common"])
def test_multi_tenant_documents_carry_the_issuer_placeholder(tenant: str) -> None:
    doc = openid_configuration(AUTHORITY, tenant)
    assert doc["issuer"] == "https://localhost:8443/{tenantid}/v2.0"
    assert doc["token_endpoint"] == f"https://localhost:8443/{tenant}/oauth2/v2.0/token"


# ------------------------------------------------------------------ instance discovery


def test_instance_discovery_answers_for_this_host_and_names_the_tenant() -> None:
    # MSAL Python leaves the port out of the authorization endpoint it asks about.
    for asked in (
        "https://localhost/contoso/oauth2/v2.0/authorize",
        "https://LOCALHOST:8443/contoso/oauth2/v2.0/authorize",
    ):
        body = instance_discovery(AUTHORITY, asked)
        assert body["tenant_discovery_endpoint"] == (
            "https://localhost:8443/contoso/v2.0/.well-known/openid-configuration"
        )
        assert body["metadata"] == [
            {
                "preferred_network": "localhost:8443",
                "preferred_cache": "localhost:8443",
                "aliases": ["localhost:8443"],
            }
        ]
    assert "/common/v2.0/" in instance_discovery(AUTHORITY, None)["tenant_discovery_endpoint"]


@pytest.mark.parametrize(
    "asked",
    [
        "https://login.microsoftonline.com/contoso/oauth2/v2.0/authorize",
        "http://localhost:8443/contoso/oauth2/v2.0/authorize",
        "https://localhost:8443/",
        "https://localhost:8443/%2e%2e/oauth2/v2.0/authorize",
        "not a url",
    ],
)
def test_instance_discovery_refuses_other_instances(asked: str) -> None:
    body = instance_discovery(AUTHORITY, asked)
    assert body["error"] == "invalid_instance"
    assert "tenant_discovery_endpoint" not in body


# ------------------------------------------------------------------ client authentication


def _basic(user: str, password: str) -> str:
    raw = f"{quote_plus(user)}:{quote_plus(password)}".encode()
    return "Basic " + base64.b64encode(raw).decode()


def _error(result: object) -> str:
    assert isinstance(result, JSONResponse)
    assert result.status_code == 400
    error: str = json.loads(bytes(result.body))["error"]
    return error


def test_secrets_come_from_the_form_or_a_basic_header() -> None:
    assert client_credentials({"client_id": "a", "client_secret": "s"}, None) == ("a", "s")
    # RFC 6749 2.3.1: each part is form-urlencoded before base64.
    header = _basic("app@contoso.com", "p:a ss+/=")
    assert client_credentials({}, header) == ("app@contoso.com", "p:a ss+/=")
    assert client_credentials({"client_id": "app@contoso.com"}, header) == (
        "app@contoso.com",
        "p:a ss+/=",
    )


@pytest.mark.parametrize(
    ("form", "header"),
    [
        ({}, None),
        ({"client_id": "a"}, None),
        ({"client_secret": "s"}, None),
        ({"client_secret": "s"}, _basic("a", "s")),  # two methods at once
        ({"client_id": "b"}, _basic("a", "s")),  # two different ids
        ({}, "Bearer abc"),
        ({}, "Basic !!!"),
        ({}, "Basic " + base64.b64encode(b"no-colon").decode()),
        ({}, "Basic " + base64.b64encode(b":secret").decode()),
        ({}, "Basic " + base64.b64encode(b"id:").decode()),
        ({}, "Basic " + base64.b64encode(b"\xff:\xfe").decode()),
    ],
)
def test_incomplete_or_ambiguous_client_authentication_is_refused(
    form: dict[str, str], header: str | None
) -> None:
    assert _error(client_credentials(form, header)) == "invalid_request"


# ------------------------------------------------------------------ api-versions


def _check(query: bytes) -> str:
    scope = {"type": "http", "method": "GET", "path": "/keys", "query_string": query}
    return asyncio.run(check_api_version(Request(scope)))


@pytest.mark.parametrize(
    "version",
    [
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
    ],
)
def test_every_keys_api_version_is_accepted(version: str) -> None:
    assert _check(b"api-version=" + version.encode()) == version


def test_the_sdks_versions_are_all_accepted() -> None:
    from azure.keyvault.keys import ApiVersion

    assert {v.value for v in ApiVersion} <= set(SUPPORTED_API_VERSIONS)
    assert LATEST_API_VERSION in SUPPORTED_API_VERSIONS


@pytest.mark.parametrize(
    "version", ["1.0", "", "7.5-preview", "7.7", "7.6-preview.3", "2025-07-01 ", "7.6.0"]
)
def test_unknown_versions_get_key_vaults_error(version: str) -> None:
    with pytest.raises(BadParameter) as refused:
        _check(b"api-version=" + quote_plus(version).encode())
    assert f"({version})" in refused.value.message
    assert LATEST_API_VERSION in refused.value.message


def test_a_missing_version_is_refused() -> None:
    with pytest.raises(BadParameter):
        _check(b"")
