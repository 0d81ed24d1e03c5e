"""Schemathesis against the served OpenAPI schema (keys API and admin API): thousands of
generated requests, zero 5xx, every rejection in the Key Vault error shape.

The app runs in-process (ASGI) on a real SQLite database and home folder; requests carry an
operator token so they reach the deepest code paths, and the keys API is addressed through
the Host header of a real vault. Schemathesis 4 runs its examples, coverage (the boundary
values of every declared bound) and fuzzing phases, positive and negative, by default; values
past the declared bounds of unbounded integers are ``test_numeric_edges.py``'s.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from customerkey.api.app import create_app
from customerkey.api.deps import ApiContext
from customerkey.api.tokens import TokenSigner
from customerkey.config import Settings
from customerkey.runtime import Runtime
from customerkey.vault.models import OPERATOR

DOMAIN = "vault.localhost"
PORT = 8443
VAULT = "fuzz-vault"
STATE: dict[str, Any] = {}
EXAMPLES = int(os.environ.get("CUSTOMERKEY_FUZZ_EXAMPLES", "40"))


@pytest.fixture(scope="module")
def api_schema(tmp_path_factory: pytest.TempPathFactory) -> Any:
    home: Path = tmp_path_factory.mktemp("fuzz") / "home"
    runtime = Runtime.open(Settings(home=home, openapi="public"))
    runtime.tenants.create(OPERATOR, "contoso", mail_domain="contoso.com")
    runtime.vault.create_vault(OPERATOR, VAULT, subscription="s", region="eastus", tenant="contoso")
    runtime.vault.create_key(OPERATOR, VAULT, "target")
    principal, _ = runtime.principals.create(
        OPERATOR, "ops@platform.example", tenant="platform", roles=["operator"]
    )
    signer = TokenSigner.open(home / "token-keys", clock=runtime.clock, rng=runtime.rng)
    context = ApiContext(runtime=runtime, signer=signer, domain=DOMAIN, port=PORT)
    STATE["token"] = signer.issue(
        subject=principal.object_id,
        tenant="platform",
        audience=context.resource,
        roles=["operator"],
    ).access_token
    STATE["runtime"] = runtime
    return schemathesis.openapi.from_asgi(
        "/openapi.json", create_app(context), headers={"Host": f"localhost:{PORT}"}
    )


schema = schemathesis.pytest.from_fixture("api_schema")


def _host(path: str) -> str:
    if path.startswith(("/keys", "/deletedkeys")):
        return f"{VAULT}.{DOMAIN}:{PORT}"
    return f"localhost:{PORT}"


@schema.parametrize()
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)
def test_no_server_errors_and_key_vault_shaped_rejections(case: Any) -> None:
    headers = {"Host": _host(case.path), "Authorization": f"Bearer {STATE['token']}"}
    response = case.call(headers=headers)
    assert response.status_code < 500, (case.method, case.path, response.text[:500])
    # The OAuth2 and OpenID discovery endpoints answer errors in the OAuth2 shape, as Entra ID.
    oauth = any(part in case.path for part in ("/oauth2/", "/.well-known/", "/discovery/"))
    if response.status_code >= 400 and not oauth:
        body = response.json()
        assert set(body) == {"error"}, body
        assert isinstance(body["error"].get("code"), str), body
        assert isinstance(body["error"].get("message"), str), body
