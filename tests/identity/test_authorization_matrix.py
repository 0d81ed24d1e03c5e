"""The authorization matrix: every keys-API and admin-API action against every kind of caller,
each expected outcome written down, through a real server.

Callers: anonymous, an expired token, another tenant's admin, a user without the permission,
the mail workload's service principal (granted get/wrapKey/unwrapKey as the Customer Key docs
say), a tenant admin (manages the vault but holds no key permission: Key Vault separates the
management plane from key use), and a platform operator (bypasses access policies).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from customerkey.api.tokens import TokenSigner
from customerkey.clock import FrozenClock
from customerkey.crypto.rsa import b64url_encode
from customerkey.identity.workload_principals import EXCHANGE
from customerkey.rng import SystemRng

if TYPE_CHECKING:
    from tests.support.live_servers import LiveServer

VAULT = "matrix-vault"
KEY = "matrix-key"
CALLERS = (
    "anonymous",
    "expired",
    "other_admin",
    "no_permission",
    "workload",
    "tenant_admin",
    "operator",
)


@dataclass
class World:
    server: LiveServer
    tokens: dict[str, str | None]
    version: str
    wrapped: str
    mailbox: str


@pytest.fixture(scope="module")
def world(live_server: LiveServer) -> World:
    s = live_server
    s.cli("tenant", "create", "fabrikam", "--mail-domain", "fabrikam.com")
    s.cli(
        "vault",
        "create",
        VAULT,
        "--subscription",
        "sub",
        "--region",
        "eastus",
        "--tenant",
        "contoso",
    )
    s.cli(
        "vault",
        "create",
        "matrix-vault-2",
        "--subscription",
        "sub",
        "--region",
        "westus",
        "--tenant",
        "contoso",
    )
    bundle = s.cli_json("key", "create", VAULT, KEY, "--protection", "hsm")
    s.cli("key", "create", "matrix-vault-2", KEY, "--protection", "hsm")
    for vault in (VAULT, "matrix-vault-2"):
        s.cli(
            "vault",
            "access",
            "set",
            vault,
            "--spn",
            EXCHANGE.app_id,
            "--key-permissions",
            "wrapKey,unwrapKey,get",
        )
    s.cli(
        "dep",
        "create",
        "M-DEP",
        "--tenant",
        "contoso",
        "--key",
        f"https://{VAULT}.vault.azure.net/keys/{KEY}",
        "--key",
        f"https://matrix-vault-2.vault.azure.net/keys/{KEY}",
    )
    s.cli("mailbox", "create", "dana@contoso.com", "--dep", "M-DEP")

    def principal(upn: str, tenant: str, *extra: str) -> str:
        view = s.cli_json("principal", "create", upn, "--tenant", tenant, *extra)
        return s.token(upn, view["ClientSecret"], tenant=tenant)

    s.cli("principal", "create", "frank@contoso.com", "--tenant", "contoso", "--no-secret")
    workload_secret = s.cli_json("principal", "reset-secret", EXCHANGE.app_id)["ClientSecret"]
    signer = TokenSigner.open(
        s.home / "token-keys",
        clock=FrozenClock(datetime.now(UTC) - timedelta(hours=3)),
        rng=SystemRng(),
        issuer=s.url,
    )
    expired = signer.issue(
        subject="admin@contoso.com",
        tenant="contoso",
        audience=s.resource,
        roles=["tenant-admin"],
        lifetime=timedelta(hours=1),
    ).access_token
    tokens: dict[str, str | None] = {
        "anonymous": None,
        "expired": expired,
        "other_admin": principal("admin@fabrikam.com", "fabrikam", "--roles", "tenant-admin"),
        "no_permission": principal("eve@contoso.com", "contoso"),
        "workload": s.token(EXCHANGE.app_id, workload_secret, tenant="contoso"),
        "tenant_admin": s.admin_token,
        "operator": principal("root@platform.example", "platform", "--roles", "operator"),
    }
    wrapped = s.http.post(
        f"{s.vault_url(VAULT)}/keys/{KEY}/{bundle['Version']}/wrapkey?api-version=7.5",
        json={"alg": "RSA-OAEP-256", "value": b64url_encode(os.urandom(32))},
        headers={"Authorization": f"Bearer {tokens['operator']}"},
    ).json()["value"]
    return World(s, tokens, bundle["Version"], wrapped, "dana@contoso.com")


def _call(world: World, caller: str, method: str, url: str, body: Any = None) -> httpx.Response:
    token = world.tokens[caller]
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return world.server.http.request(method, url, json=body, headers=headers)


def keys_api(path: str) -> Callable[[World], str]:
    return lambda w: f"{w.server.vault_url(VAULT)}{path}?api-version=7.5"


def admin_api(path: str) -> Callable[[World], str]:
    return lambda w: f"{w.server.url}/api/v1{path}"


# action -> (method, url, body, {caller: status})
KEY_ACTIONS: dict[
    str, tuple[str, Callable[[World], str], Callable[[World], Any], dict[str, int]]
] = {
    "get key": (
        "GET",
        keys_api(f"/keys/{KEY}"),
        lambda w: None,
        {
            "other_admin": 403,
            "no_permission": 403,
            "workload": 200,
            "tenant_admin": 403,
            "operator": 200,
        },
    ),
    "list keys": (
        "GET",
        keys_api("/keys"),
        lambda w: None,
        {
            "other_admin": 403,
            "no_permission": 403,
            "workload": 403,
            "tenant_admin": 403,
            "operator": 200,
        },
    ),
    "wrap": (
        "POST",
        lambda w: keys_api(f"/keys/{KEY}/{w.version}/wrapkey")(w),
        lambda w: {"alg": "RSA-OAEP-256", "value": b64url_encode(b"k" * 32)},
        {
            "other_admin": 403,
            "no_permission": 403,
            "workload": 200,
            "tenant_admin": 403,
            "operator": 200,
        },
    ),
    "unwrap": (
        "POST",
        lambda w: keys_api(f"/keys/{KEY}/{w.version}/unwrapkey")(w),
        lambda w: {"alg": "RSA-OAEP-256", "value": w.wrapped},
        {
            "other_admin": 403,
            "no_permission": 403,
            "workload": 200,
            "tenant_admin": 403,
            "operator": 200,
        },
    ),
    "decrypt": (
        "POST",
        lambda w: keys_api(f"/keys/{KEY}/{w.version}/decrypt")(w),
        lambda w: {"alg": "RSA-OAEP-256", "value": w.wrapped},
        {
            "other_admin": 403,
            "no_permission": 403,
            "workload": 403,
            "tenant_admin": 403,
            "operator": 200,
        },
    ),
    "update key": (
        "PATCH",
        lambda w: keys_api(f"/keys/{KEY}/{w.version}")(w),
        lambda w: {"tags": {"touched": "yes"}},
        {
            "other_admin": 403,
            "no_permission": 403,
            "workload": 403,
            "tenant_admin": 403,
            "operator": 200,
        },
    ),
    "backup key": (
        "POST",
        keys_api(f"/keys/{KEY}/backup"),
        lambda w: None,
        {
            "other_admin": 403,
            "no_permission": 403,
            "workload": 403,
            "tenant_admin": 403,
            "operator": 200,
        },
    ),
    "create key": (
        "POST",
        keys_api("/keys/matrix-new/create"),
        lambda w: {"kty": "RSA"},
        {
            "other_admin": 403,
            "no_permission": 403,
            "workload": 403,
            "tenant_admin": 403,
            "operator": 200,
        },
    ),
    "delete unknown key": (
        "DELETE",
        keys_api("/keys/absent"),
        lambda w: None,
        {
            "other_admin": 403,
            "no_permission": 403,
            "workload": 403,
            "tenant_admin": 403,
            "operator": 404,
        },
    ),
}

ADMIN_ACTIONS: dict[
    str, tuple[str, Callable[[World], str], Callable[[World], Any], dict[str, int]]
] = {
    "show vault": (
        "GET",
        admin_api(f"/vaults/{VAULT}"),
        lambda w: None,
        {
            "other_admin": 403,
            "no_permission": 403,
            "workload": 403,
            "tenant_admin": 200,
            "operator": 200,
        },
    ),
    "grant access": (
        "PUT",
        admin_api(f"/vaults/{VAULT}/accessPolicies"),
        lambda w: {"object_id": "frank@contoso.com", "key_permissions": ["list"]},
        {
            "other_admin": 403,
            "no_permission": 403,
            "workload": 403,
            "tenant_admin": 200,
            "operator": 200,
        },
    ),
    "create tenant": (
        "POST",
        admin_api("/tenants"),
        lambda w: {"name": "northwind", "mail_domain": "northwind.com"},
        {
            "other_admin": 403,
            "no_permission": 403,
            "workload": 403,
            "tenant_admin": 403,
            "operator": 201,
        },
    ),
    "list policies": (
        "GET",
        admin_api("/tenants/contoso/policies"),
        lambda w: None,
        {
            "other_admin": 403,
            "no_permission": 403,
            "workload": 403,
            "tenant_admin": 200,
            "operator": 200,
        },
    ),
    "mailbox statistics": (
        "GET",
        admin_api("/mailboxes/dana@contoso.com/statistics"),
        lambda w: None,
        {
            "other_admin": 404,  # not told from a missing mailbox
            "no_permission": 403,
            "workload": 403,
            "tenant_admin": 200,
            "operator": 200,
        },
    ),
    "read mailbox items": (
        "GET",
        admin_api("/mailboxes/dana@contoso.com/items"),
        lambda w: None,
        {
            "other_admin": 404,  # not told from a missing mailbox
            "no_permission": 403,
            "workload": 403,
            "tenant_admin": 200,
            "operator": 200,
        },
    ),
    "verify audit": (
        "GET",
        admin_api("/audit/verify"),
        lambda w: None,
        {
            "other_admin": 403,
            "no_permission": 403,
            "workload": 403,
            "tenant_admin": 403,
            "operator": 200,
        },
    ),
}


def _expected(table: dict[str, int], caller: str) -> int:
    if caller in ("anonymous", "expired"):
        return 401
    return table[caller]


CASES = [(action, caller) for action in (*KEY_ACTIONS, *ADMIN_ACTIONS) for caller in CALLERS]


@pytest.mark.parametrize(("action", "caller"), CASES)
def test_matrix(world: World, action: str, caller: str) -> None:
    method, url, body, table = (KEY_ACTIONS | ADMIN_ACTIONS)[action]
    response = _call(world, caller, method, url(world), body(world))
    expected = _expected(table, caller)
    assert response.status_code == expected, (action, caller, response.text)
    if expected >= 400:
        error = response.json()["error"]
        assert set(error) == {"code", "message"}
        assert error["code"] == {401: "Unauthorized", 403: "Forbidden", 404: "KeyNotFound"}[
            expected
        ] or ((expected, error["code"]) in ((403, "KeyNotUsable"), (404, "MailboxNotFound")))


def test_the_workload_principal_can_only_wrap_unwrap_and_get(world: World) -> None:
    allowed = {a for a, (_, _, _, t) in KEY_ACTIONS.items() if t["workload"] < 400}
    assert allowed == {"get key", "wrap", "unwrap"}
    assert all(t["workload"] >= 400 for _, _, _, t in ADMIN_ACTIONS.values())


def test_nobody_reads_another_tenants_data(world: World) -> None:
    other = world.tokens["other_admin"]
    s = world.server
    headers = {"Authorization": f"Bearer {other}"}
    vaults = s.http.get(f"{s.url}/api/v1/vaults", headers=headers).json()["value"]
    assert VAULT not in {v["VaultName"] for v in vaults}
    audit = s.http.get(f"{s.url}/api/v1/audit?limit=1000", headers=headers).json()["value"]
    assert all(r["Vault"] not in (VAULT, "matrix-vault-2") for r in audit)
    principals = s.http.get(f"{s.url}/api/v1/principals", headers=headers).json()["value"]
    assert all(p["Tenant"] == "fabrikam" for p in principals)
    named = s.http.get(f"{s.url}/api/v1/principals?tenant=contoso", headers=headers)
    assert named.status_code == 403, named.text  # naming the other tenant lists nothing
    item = s.http.get(f"{s.url}/api/v1/mailboxes/dana@contoso.com/items/1", headers=headers)
    assert item.status_code == 404 and item.json()["error"]["code"] == "MailboxNotFound"
