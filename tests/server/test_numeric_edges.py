"""Numeric edge values against every operation of the served OpenAPI schema, over a real
``customerkey serve``: no value may produce a 5xx, and every rejection has the Key Vault
shape ``{"error": {"code", "message"}}``.

Schemathesis (``test_schema_fuzz.py``) generates from the schema's own bounds, so it never
tries 2**63 for an unbounded integer; this test sends the values that break parsers and
64-bit database columns (the ``GET /api/v1/audit?since=2**63`` class of bug) to:

- every query and path parameter of every operation, whatever its declared type (an item
  reference or a name may be read as a number further down), the others filled with objects
  that exist so the request reaches the code below validation;
- every integer or number field of every JSON request body, nested fields included, the rest
  of the body being the smallest valid one the schema describes.

It walks the schema the server serves, so a new endpoint is covered without touching this file.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from customerkey.azure.localdns import install_loopback_resolver, uninstall_loopback_resolver
from customerkey.config import Settings
from customerkey.runtime import Runtime
from customerkey.vault.models import OPERATOR as OPERATOR_ACTOR
from tests.support.live_servers import DOMAIN, TENANT, LiveServer, start_server

VAULT = "edge-vault"
MAILBOX = "bob@contoso.com"
OPERATOR = "ops@platform.example"
# As text: integer and number query and path parameters (every type travels as a string).
NUMBER_TEXT_EDGES = (
    "0",
    "-1",
    "1",
    str(2**31 - 1),
    str(2**31),
    str(2**53 + 1),
    str(2**63 - 1),
    str(2**63),
    str(2**64),
    str(-(2**63) - 1),
    str(10**100),
    "9" * 5000,  # past Python's int() digit limit
    "1e308",
    "NaN",
    "Infinity",
    "-0",
    "1e5",
    " 1",
    "0x10",
    "\u00b2",  # a digit to str.isdigit(), not to int()
    "",
)
# String parameters that code below may read as numbers (an item's sequence number, say):
# the values that get past a digit check but not int() or a 64-bit column.
STRING_TEXT_EDGES = (str(2**63), str(2**64), "9" * 5000, "\u00b2")
# As JSON: integer and number fields of request bodies (NaN and Infinity go out as the bare
# tokens Python's json module reads back).
JSON_EDGES: tuple[Any, ...] = (
    0,
    -1,
    1,
    2**31 - 1,
    2**31,
    2**53 + 1,
    2**63 - 1,
    2**63,
    2**64,
    -(2**63) - 1,
    10**100,
    1e308,
    float("nan"),
    float("inf"),
    float("-inf"),
    -0.0,
    1e5,
    "NaN",
    "Infinity",
    "-0",
    "1e5",
    " 1",
    "0x10",
    "",
    None,
)
# Example values for required string body fields, by field name.
BODY_STRINGS = {"kty": "RSA", "alg": "RSA-OAEP-256", "value": "AAAA", "target": "x"}


@dataclass
class Edges:
    server: LiveServer
    token: str
    schema: dict[str, Any]
    path_values: dict[str, str]

    def host(self, path: str) -> str:
        if path.startswith(("/keys", "/deletedkeys", "/rng")):
            return self.server.vault_url(VAULT)
        return self.server.url


@pytest.fixture(scope="module")
def edges(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Edges]:
    home: Path = tmp_path_factory.mktemp("edges") / "home"
    # The tenant and an operator made here (a CLI process each costs seconds); the rest is
    # made through the API once the server is up.
    runtime = Runtime.open(Settings(home=home))
    try:
        runtime.tenants.create(OPERATOR_ACTOR, TENANT, mail_domain="contoso.com")
        _, secret = runtime.principals.create(
            OPERATOR_ACTOR, OPERATOR, tenant="platform", roles=["operator"]
        )
    finally:
        runtime.close()
    server = start_server(home, env={"CUSTOMERKEY_OPENAPI": "public"})
    install_loopback_resolver(DOMAIN)
    try:
        yield _populate(server, server.token(OPERATOR, secret, tenant="platform"))
    finally:
        uninstall_loopback_resolver(DOMAIN)
        status = server.stop()
    assert status == 0, server.log()[-4000:]


def _populate(server: LiveServer, token: str) -> Edges:
    """Objects every kind of path parameter can name."""
    auth = {"Authorization": f"Bearer {token}"}
    body = {"name": VAULT, "subscription": "s", "region": "eastus", "tenant": TENANT}
    assert server.admin("POST", "/vaults", token=token, json=body).status_code == 201
    created = server.http.post(
        f"{server.vault_url(VAULT)}/keys/target/create?api-version=7.5",
        json={"kty": "RSA"},
        headers=auth,
    )
    assert created.status_code == 200, created.text
    mailbox = server.admin(
        "POST", f"/tenants/{TENANT}/mailboxes", token=token, json={"upn": MAILBOX}
    )
    assert mailbox.status_code == 201, mailbox.text
    site = server.admin(
        "POST",
        f"/tenants/{TENANT}/sites",
        token=token,
        json={"Url": f"https://{TENANT}.sharepoint.local/sites/edges"},
    )
    assert site.status_code == 201, site.text
    site_id = site.json()["SiteId"]
    put = server.admin("PUT", f"/sites/{site_id}/files/doc.txt", token=token, content=b"hi")
    assert put.status_code == 201, put.text
    schema = server.http.get(f"{server.url}/openapi.json").json()
    values = {
        "tenant": TENANT,
        "identity": MAILBOX,
        "site": site_id,
        "path": "doc.txt",
        "item": "1",
        "version": created.json()["key"]["kid"].rsplit("/", 1)[1],
        "operation": "wrapKey",
        "principal_id": OPERATOR,
        "object_id": OPERATOR,
        "subscription": "s",
    }
    return Edges(server=server, token=token, schema=schema, path_values=values)


def _resolve(schema: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        node = schema["components"]["schemas"][node["$ref"].rsplit("/", 1)[1]]
    return node


def _branches(schema: dict[str, Any], node: dict[str, Any]) -> list[dict[str, Any]]:
    node = _resolve(schema, node)
    options = node.get("anyOf") or node.get("oneOf")
    if options:
        return [b for o in options for b in _branches(schema, o)]
    return [node]


def _minimal(schema: dict[str, Any], node: dict[str, Any], name: str = "") -> Any:
    """The smallest value ``node`` accepts: its required fields only."""
    branch = next((b for b in _branches(schema, node) if b.get("type") != "null"), {"type": "null"})
    kind = branch.get("type")
    if kind == "object" or "properties" in branch:
        props = branch.get("properties", {})
        return {k: _minimal(schema, props[k], k) for k in branch.get("required", []) if k in props}
    if kind == "array":
        return []
    if kind in ("integer", "number"):
        return 1
    if kind == "boolean":
        return False
    if kind == "null":
        return None
    return BODY_STRINGS.get(name, "x")


def _is_numeric(schema: dict[str, Any], node: dict[str, Any]) -> bool:
    return any(b.get("type") in ("integer", "number") for b in _branches(schema, node))


def _numeric_fields(
    schema: dict[str, Any], node: dict[str, Any], at: tuple[str, ...] = ()
) -> list[tuple[str, ...]]:
    """Paths (field names from the root) of every integer or number field under ``node``."""
    found: list[tuple[str, ...]] = []
    for branch in _branches(schema, node):
        if branch.get("type") in ("integer", "number") and at:
            found.append(at)
        for key, sub in branch.get("properties", {}).items():
            found += _numeric_fields(schema, sub, (*at, key))
    return list(dict.fromkeys(found))


def _with_field(
    schema: dict[str, Any], body_schema: dict[str, Any], field: tuple[str, ...], value: Any
) -> Any:
    body = _minimal(schema, body_schema)
    node, where = body, body_schema
    for depth, key in enumerate(field):
        props = next(
            (b["properties"] for b in _branches(schema, where) if key in b.get("properties", {})),
            {},
        )
        if depth == len(field) - 1:
            node[key] = value
        else:
            node = node.setdefault(key, _minimal(schema, props[key]) or {})
            where = props[key]
    return body


@dataclass
class Case:
    method: str
    path: str
    query: dict[str, str]
    body: Any
    has_body: bool
    what: str


def _cases(edges: Edges) -> Iterator[Case]:
    schema = edges.schema
    for template, operations in schema["paths"].items():
        for method, operation in operations.items():
            params = operation.get("parameters", [])
            fixed_path = {
                p["name"]: _path_value(edges, template, p["name"])
                for p in params
                if p["in"] == "path"
            }
            content = operation.get("requestBody", {}).get("content", {})
            body_schema = content.get("application/json", {}).get("schema")
            body = _minimal(schema, body_schema) if body_schema else None
            for param in params:
                if param["in"] not in ("path", "query"):
                    continue
                numeric = _is_numeric(schema, param.get("schema", {}))
                for value in NUMBER_TEXT_EDGES if numeric else STRING_TEXT_EDGES:
                    path_values = dict(fixed_path)
                    query = {}
                    if param["in"] == "path":
                        path_values[param["name"]] = value
                    else:
                        query[param["name"]] = value
                    yield Case(
                        method.upper(),
                        _fill(template, path_values),
                        query,
                        body,
                        body_schema is not None,
                        f"{param['in']} {param['name']}={value[:40]!r}",
                    )
            if body_schema is None:
                continue
            for field in _numeric_fields(schema, body_schema):
                for json_value in JSON_EDGES:
                    yield Case(
                        method.upper(),
                        _fill(template, fixed_path),
                        {},
                        _with_field(schema, body_schema, field, json_value),
                        True,
                        f"body {'.'.join(field)}={json_value!r}",
                    )


def _path_value(edges: Edges, template: str, name: str) -> str:
    if name == "name":
        return "target" if template.startswith(("/keys", "/deletedkeys")) else VAULT
    return edges.path_values.get(name, "x")


def _fill(template: str, values: dict[str, str]) -> str:
    for name, value in values.items():
        template = template.replace("{" + name + "}", quote(value, safe=""))
    return template


def _send(edges: Edges, case: Case) -> str | None:
    """What is wrong with the answer to ``case``, or None."""
    headers = {"Authorization": f"Bearer {edges.token}"}
    content = None
    if case.has_body:
        headers["Content-Type"] = "application/json"
        content = json.dumps(case.body).encode()
    where = f"{case.method} {case.path[:120]} [{case.what}]"
    try:
        response = edges.server.http.request(
            case.method,
            edges.host(case.path) + case.path,
            params={"api-version": "7.5", **case.query},
            content=content,
            headers=headers,
        )
    except httpx.TransportError as exc:
        # After an unhandled error the server closes the connection the next request used.
        return f"{where}: no answer ({exc!r})"
    if response.status_code >= 500:
        return f"{where} -> {response.status_code}: {response.text[:200]}"
    if response.status_code >= 400 and not _oauth(case.path):
        try:
            error = response.json()["error"]
            shaped = isinstance(error["code"], str) and isinstance(error["message"], str)
        except (ValueError, KeyError, TypeError):
            shaped = False
        if not shaped:
            return (
                f"{where} -> {response.status_code}: not a Key Vault error: {response.text[:200]}"
            )
    return None


def test_numeric_edge_values_never_produce_a_server_error(edges: Edges) -> None:
    log_start = edges.server.log_size()
    cases = list(_cases(edges))
    assert len(cases) > 500, f"only {len(cases)} cases: did the schema lose its operations?"
    with ThreadPoolExecutor(max_workers=4) as pool:
        failures = [f for f in pool.map(lambda case: _send(edges, case), cases) if f]
    assert not failures, f"{len(failures)} of {len(cases)} requests failed:\n" + "\n".join(
        failures[:60]
    )
    bugs = edges.server.bugs(log_start)
    assert not bugs, "the server logged unhandled errors:\n" + "\n".join(bugs[:20])


def _oauth(path: str) -> bool:
    # The OAuth2 and OpenID discovery endpoints answer in the OAuth2 error shape, as Entra ID.
    return any(part in path for part in ("/oauth2/", "/.well-known/", "/discovery/"))
