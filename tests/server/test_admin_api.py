"""The admin API (``/api/v1`` on ``https://localhost:PORT``), operations endpoints, and shutdown.

The tenant admin ``admin@contoso.com`` is made by the CLI (``principal create ... --roles
tenant-admin --json``, in the ``live_server`` fixture) and signs in at the token endpoint; an
operator is made the same way. Everything else goes through the admin API and is read back
through the API, the keys API or the CLI.
"""

from __future__ import annotations

import json
import signal
import socket
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from customerkey.vault.permissions import KEY_PERMISSIONS

if TYPE_CHECKING:
    from tests.support.live_servers import LiveServer

ADMIN = "admin@contoso.com"
OPERATOR = "ops@platform.example"


@pytest.fixture(scope="module")
def operator_token(live_server: LiveServer) -> str:
    view = live_server.cli_json(
        "principal", "create", OPERATOR, "--tenant", "platform", "--roles", "operator"
    )
    assert view["Roles"] == ["operator"]
    return live_server.token(OPERATOR, view["ClientSecret"], tenant="platform")


@pytest.fixture(scope="module")
def alice(live_server: LiveServer) -> str:
    """A tenant user without roles; returns a token."""
    secret = live_server.create_principal("alice@contoso.com", display_name="Alice")
    return live_server.token("alice@contoso.com", secret)


def kv_error(response: httpx.Response, status: int, code: str) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}, body
    assert body["error"]["code"] == code, body
    message: str = body["error"]["message"]
    return message


def names(response: httpx.Response) -> set[str]:
    assert response.status_code == 200, response.text
    return {v["VaultName"] for v in response.json()["value"]}


def test_the_cli_made_tenant_admin_signs_in(live: LiveServer) -> None:
    view = live.admin_view
    assert view["Id"] == ADMIN
    assert view["Kind"] == "user"
    assert view["Tenant"] == "contoso"
    assert view["Roles"] == ["tenant-admin"]
    assert view["HasSecret"] is True
    assert len(view["ClientSecret"]) >= 32
    response = live.token_response(ADMIN, view["ClientSecret"])
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["token_type"] == "Bearer" and body["expires_in"] == 3600
    listed = live.admin("GET", "/vaults", token=body["access_token"])
    assert listed.status_code == 200, listed.text
    assert isinstance(listed.json()["value"], list)


# ------------------------------------------------------------------ vaults


def test_vault_create_show_list_delete_recover_purge(live: LiveServer) -> None:
    created = live.admin(
        "POST",
        "/vaults",
        json={
            "name": "adm-life",
            "subscription": "contoso-sub-1",
            "region": "EastUS",
            "retention_days": 30,
        },
    )
    assert created.status_code == 201, created.text
    vault = created.json()
    assert vault["VaultName"] == "adm-life"
    assert vault["Location"] == "eastus"
    assert vault["TenantId"] == "contoso"
    assert vault["SubscriptionId"] == "contoso-sub-1"
    assert vault["VaultUri"] == f"{live.vault_url('adm-life')}/"
    assert vault["EnableSoftDelete"] is True
    assert vault["SoftDeleteRetentionInDays"] == 30
    assert vault["EnablePurgeProtection"] is False
    assert vault["CreatedBy"] == ADMIN
    assert vault["AccessPolicies"] == [
        {
            "ObjectId": live.admin_view["ObjectId"],
            "DisplayName": ADMIN,
            "PrincipalName": ADMIN,
            "PermissionsToKeys": list(KEY_PERMISSIONS),
        }
    ]
    assert "DeletionDate" not in vault

    shown = live.admin("GET", "/vaults/adm-life")
    assert shown.status_code == 200 and shown.json() == vault
    assert live.admin("GET", "/vaults/ADM-LIFE").json()["VaultName"] == "adm-life"
    assert "adm-life" in names(live.admin("GET", "/vaults"))
    again = live.admin(
        "POST", "/vaults", json={"name": "adm-life", "subscription": "s", "region": "r"}
    )
    kv_error(again, 409, "Conflict")

    # The vault answers on its own host: the creator can use the keys API at once.
    key = live.http.post(
        f"{live.vault_url('adm-life')}/keys/first/create?api-version=7.5",
        headers={"Authorization": f"Bearer {live.admin_token}"},
        json={"kty": "RSA", "key_size": 2048},
    )
    assert key.status_code == 200, key.text

    deleted = live.admin("DELETE", "/vaults/adm-life")
    assert deleted.status_code == 200, deleted.text
    assert deleted.json()["DeletionDate"] is not None
    assert deleted.json()["ScheduledPurgeDate"] > deleted.json()["DeletionDate"]
    kv_error(live.admin("GET", "/vaults/adm-life"), 404, "VaultNotFound")
    assert "adm-life" not in names(live.admin("GET", "/vaults"))
    assert "adm-life" in names(live.admin("GET", "/vaults", params={"deleted": "true"}))
    kv_error(live.admin("DELETE", "/vaults/adm-life"), 404, "VaultNotFound")
    gone = live.http.get(
        f"{live.vault_url('adm-life')}/keys/first?api-version=7.5",
        headers={"Authorization": f"Bearer {live.admin_token}"},
    )
    kv_error(gone, 404, "VaultNotFound")

    recovered = live.admin("POST", "/vaults/adm-life/recover")
    assert recovered.status_code == 200, recovered.text
    assert "DeletionDate" not in recovered.json()
    assert live.admin("GET", "/vaults/adm-life").status_code == 200
    kv_error(live.admin("POST", "/vaults/adm-life/recover"), 404, "VaultNotFound")
    kv_error(live.admin("POST", "/vaults/adm-life/purge"), 404, "VaultNotFound")  # not deleted
    back = live.http.get(
        f"{live.vault_url('adm-life')}/keys/first?api-version=7.5",
        headers={"Authorization": f"Bearer {live.admin_token}"},
    )
    assert back.json()["key"]["kid"] == key.json()["key"]["kid"]

    assert live.admin("DELETE", "/vaults/adm-life").status_code == 200
    purged = live.admin("POST", "/vaults/adm-life/purge")
    assert purged.status_code == 200, purged.text
    assert "adm-life" not in names(live.admin("GET", "/vaults", params={"deleted": "true"}))
    kv_error(live.admin("POST", "/vaults/adm-life/recover"), 404, "VaultNotFound")
    assert live.create_vault("adm-life")["AccessPolicies"][0]["PrincipalName"] == ADMIN  # free


def test_vault_delete_is_refused_while_its_key_protects_a_mailbox(live: LiveServer) -> None:
    exchange = "00000002-0000-0ff1-ce00-000000000000"
    vaults, key = ("adm-dep-a", "adm-dep-b"), "root"
    for vault in vaults:
        live.create_vault(vault)
        live.cli("key", "create", vault, key, "--protection", "hsm")
        live.cli(
            "vault", "access", "set", vault, "--spn", exchange,
            "--key-permissions", "wrapKey,unwrapKey,get",
        )  # fmt: skip
    uris = [arg for v in vaults for arg in ("--key", f"https://{v}.vault.azure.net/keys/{key}")]
    live.cli("dep", "create", "adm-dep", "--tenant", "contoso", *uris)
    live.cli("mailbox", "create", "adm-dep-box@contoso.com", "--dep", "adm-dep")

    refused = live.admin("DELETE", f"/vaults/{vaults[0]}")
    message = kv_error(refused, 409, "Conflict")
    assert "adm-dep" in message  # names the DEP that keeps data under the vault's key
    assert live.admin("GET", f"/vaults/{vaults[0]}").status_code == 200  # nothing changed

    forced = live.admin("DELETE", f"/vaults/{vaults[0]}", params={"force": "true"})
    assert forced.status_code == 200, forced.text
    assert live.admin("GET", f"/vaults/{vaults[0]}").status_code == 404


def test_purge_protection_refuses_purging_a_vault(live: LiveServer) -> None:
    vault = live.create_vault("adm-guarded", purge_protection=True, retention_days=7)
    assert vault["EnablePurgeProtection"] is True
    assert vault["RecoveryLevel"] == "CustomizedRecoverable"
    assert live.admin("DELETE", "/vaults/adm-guarded").status_code == 200
    message = kv_error(live.admin("POST", "/vaults/adm-guarded/purge"), 403, "Forbidden")
    assert "purge protection" in message
    assert "adm-guarded" in names(live.admin("GET", "/vaults", params={"deleted": "true"}))
    assert live.admin("POST", "/vaults/adm-guarded/recover").status_code == 200


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"name": "x", "subscription": "s", "region": "r"}, 400, "BadParameter"),
        ({"name": "bad_name", "subscription": "s", "region": "r"}, 400, "BadParameter"),
        (
            {"name": "adm-bad", "subscription": "s", "region": "r", "retention_days": 3},
            400,
            "BadParameter",
        ),
        (
            {"name": "adm-bad", "subscription": "s", "region": "r", "retention_days": 91},
            400,
            "BadParameter",
        ),
        (
            {"name": "adm-bad", "subscription": "s", "region": "r", "retention_days": "x"},
            400,
            "BadParameter",
        ),
        ({"name": "adm-bad", "subscription": " ", "region": "r"}, 400, "BadParameter"),
        ({"name": "adm-bad", "region": "r"}, 400, "BadParameter"),
        (
            {"name": "adm-bad", "subscription": "s", "region": "r", "sku": "premium"},
            400,
            "BadParameter",
        ),
        ({"name": "adm-bad", "subscription": "s", "region": "\udc80"}, 400, "BadParameter"),
        (
            {"name": "adm-bad", "subscription": "s", "region": "r", "tenant": "fabrikam"},
            403,
            "Forbidden",
        ),
    ],
)
def test_vault_create_refusals(
    live: LiveServer, body: dict[str, Any], status: int, code: str
) -> None:
    before = names(live.admin("GET", "/vaults"))
    # json.dumps escapes the lone surrogate (\udc80), so the bytes on the wire are valid UTF-8.
    response = live.admin(
        "POST",
        "/vaults",
        content=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    kv_error(response, status, code)
    assert names(live.admin("GET", "/vaults")) == before


# ------------------------------------------------------------------ access policies


def test_access_policies_set_merge_replace_remove(live: LiveServer, alice: str) -> None:
    live.create_vault("adm-access")
    key = live.http.post(
        f"{live.vault_url('adm-access')}/keys/shared/create?api-version=7.5",
        headers={"Authorization": f"Bearer {live.admin_token}"},
        json={"kty": "RSA-HSM", "key_size": 2048, "key_ops": ["wrapKey", "unwrapKey"]},
    )
    assert key.status_code == 200, key.text

    def alice_gets() -> int:
        return live.http.get(
            f"{live.vault_url('adm-access')}/keys/shared?api-version=7.5",
            headers={"Authorization": f"Bearer {alice}"},
        ).status_code

    def policy_of(view: dict[str, Any], who: str) -> list[str] | None:
        found = [
            p["PermissionsToKeys"] for p in view["AccessPolicies"] if p["PrincipalName"] == who
        ]
        return found[0] if found else None

    assert alice_gets() == 403
    view = live.grant("adm-access", "alice@contoso.com", ["get", "wrapKey"])
    assert policy_of(view, "alice@contoso.com") == ["get", "wrapKey"]
    assert [
        p["DisplayName"]
        for p in view["AccessPolicies"]
        if p["PrincipalName"] == "alice@contoso.com"
    ] == ["Alice"]
    assert alice_gets() == 200

    view = live.grant("adm-access", "Alice@Contoso.com", ["unwrapKey", "GET"])
    assert policy_of(view, "alice@contoso.com") == ["get", "unwrapKey", "wrapKey"]
    view = live.grant("adm-access", "alice@contoso.com", ["list"], replace=True)
    assert policy_of(view, "alice@contoso.com") == ["list"]
    assert alice_gets() == 403  # the same token: permissions are read on every request
    view = live.grant("adm-access", "alice@contoso.com", ["get"])
    assert alice_gets() == 200

    def put(body: dict[str, Any]) -> httpx.Response:
        return live.admin("PUT", "/vaults/adm-access/accessPolicies", json=body)

    kv_error(
        put({"object_id": "ghost@contoso.com", "key_permissions": ["get"]}),
        404,
        "PrincipalNotFound",
    )
    kv_error(
        put({"object_id": "alice@contoso.com", "key_permissions": ["fly"]}), 400, "BadParameter"
    )
    kv_error(put({"object_id": "alice@contoso.com", "key_permissions": "get"}), 400, "BadParameter")
    kv_error(put({"object_id": "alice@contoso.com"}), 400, "BadParameter")
    kv_error(
        live.admin(
            "PUT",
            "/vaults/no-such-vault/accessPolicies",
            json={"object_id": "alice@contoso.com", "key_permissions": ["get"]},
        ),
        404,
        "VaultNotFound",
    )
    assert policy_of(live.admin("GET", "/vaults/adm-access").json(), "alice@contoso.com") == [
        "get",
        "list",
    ]

    # The CLI on the same home sees what the admin API set.
    shown = live.cli_json("vault", "show", "adm-access")
    assert {p["PrincipalName"]: p["PermissionsToKeys"] for p in shown["AccessPolicies"]} == {
        ADMIN: list(KEY_PERMISSIONS),
        "alice@contoso.com": ["get", "list"],
    }

    removed = live.admin("DELETE", "/vaults/adm-access/accessPolicies/alice@contoso.com")
    assert removed.status_code == 200, removed.text
    assert policy_of(removed.json(), "alice@contoso.com") is None
    assert alice_gets() == 403  # revoked at once
    kv_error(
        live.admin("DELETE", "/vaults/adm-access/accessPolicies/alice@contoso.com"),
        404,
        "PrincipalNotFound",
    )


# ------------------------------------------------------------------ principals


def test_list_and_create_principals(live: LiveServer, alice: str) -> None:
    created = live.admin(
        "POST",
        "/principals",
        json={"display_name": "mail-svc", "kind": "service", "tenant": "contoso"},
    )
    assert created.status_code == 201, created.text
    assert created.json()["Kind"] == "service" and created.json()["ClientSecret"]
    app_id = created.json()["Id"]  # made by the platform
    assert live.token(app_id, created.json()["ClientSecret"])  # it can sign in

    listed = live.admin("GET", "/principals")
    assert listed.status_code == 200, listed.text
    by_id = {p["Id"]: p for p in listed.json()["value"]}
    assert {ADMIN, "alice@contoso.com", app_id} <= set(by_id)
    assert by_id[ADMIN]["Roles"] == ["tenant-admin"]
    assert by_id["alice@contoso.com"]["DisplayName"] == "Alice"
    assert by_id["alice@contoso.com"]["Roles"] == []
    assert all("ClientSecret" not in p for p in by_id.values())
    assert all(p["Tenant"] == "contoso" for p in by_id.values())  # a tenant admin's view
    assert OPERATOR not in by_id
    same = live.admin("GET", "/principals", params={"tenant": "contoso"})
    assert {p["Id"] for p in same.json()["value"]} == set(by_id)

    def create(body: dict[str, Any]) -> httpx.Response:
        return live.admin("POST", "/principals", json=body)

    kv_error(create({"id": "alice@contoso.com", "tenant": "contoso"}), 409, "Conflict")
    kv_error(
        create({"id": "mail-svc", "kind": "service", "tenant": "contoso"}), 400, "BadParameter"
    )
    kv_error(create({"id": "eve@fabrikam.com", "tenant": "fabrikam"}), 403, "Forbidden")
    kv_error(
        create({"id": "root@contoso.com", "tenant": "contoso", "roles": ["operator"]}),
        403,
        "Forbidden",
    )
    kv_error(
        create({"id": "x@contoso.com", "tenant": "contoso", "roles": ["god"]}), 400, "BadParameter"
    )
    kv_error(create({"id": "not a upn", "tenant": "contoso"}), 400, "BadParameter")
    kv_error(
        create({"id": "x@contoso.com", "kind": "robot", "tenant": "contoso"}), 400, "BadParameter"
    )
    after = {p["Id"] for p in live.admin("GET", "/principals").json()["value"]}
    assert after == set(by_id)


# ------------------------------------------------------------------ audit


def test_audit_records_are_readable_and_filtered(live: LiveServer, operator_token: str) -> None:
    live.create_vault("adm-audited")
    live.grant("adm-audited", ADMIN, ["get"])  # a change, audited
    assert live.admin("DELETE", "/vaults/adm-audited").status_code == 200

    response = live.admin("GET", "/audit", params={"vault": "adm-audited"})
    assert response.status_code == 200, response.text
    records = response.json()["value"]
    assert [r["Operation"] for r in records] == ["VaultPut", "VaultAccessPolicySet", "VaultDelete"]
    assert {r["Principal"] for r in records} == {ADMIN}
    assert {r["Result"] for r in records} == {"success"}
    assert all(len(r["Hash"]) == 64 for r in records)
    seqs = [r["Seq"] for r in records]
    assert seqs == sorted(seqs)

    only = live.admin("GET", "/audit", params={"vault": "adm-audited", "operation": "VaultDelete"})
    assert [r["Seq"] for r in only.json()["value"]] == seqs[-1:]
    later = live.admin("GET", "/audit", params={"vault": "adm-audited", "since": seqs[0]})
    assert [r["Seq"] for r in later.json()["value"]] == seqs[1:]
    one = live.admin("GET", "/audit", params={"vault": "adm-audited", "limit": 1})
    assert [r["Seq"] for r in one.json()["value"]] == seqs[:1]

    for params in ({"limit": 0}, {"limit": 1001}, {"since": -1}, {"limit": "ten"}):
        kv_error(live.admin("GET", "/audit", params=params), 400, "BadParameter")
    message = kv_error(live.admin("GET", "/audit/verify"), 403, "Forbidden")
    assert "operator" in message

    verified = live.admin("GET", "/audit/verify", token=operator_token)
    assert verified.status_code == 200, verified.text
    assert verified.json()["Ok"] is True and verified.json()["Problems"] == []
    assert verified.json()["Records"] >= len(records)
    assert live.admin("POST", "/vaults/adm-audited/recover").status_code == 200


def test_tenant_admins_see_their_own_tenant_only(live: LiveServer, operator_token: str) -> None:
    live.create_vault("adm-paged")
    foreign = live.admin(
        "POST",
        "/vaults",
        token=operator_token,
        json={"name": "fab-vault", "subscription": "fab", "region": "westus", "tenant": "fabrikam"},
    )
    assert foreign.status_code == 201, foreign.text
    assert foreign.json()["TenantId"] == "fabrikam"
    for _ in range(4):  # a busy foreign vault between two contoso records
        busy = live.admin(
            "PUT",
            "/vaults/fab-vault/accessPolicies",
            token=operator_token,
            json={"object_id": OPERATOR, "key_permissions": ["get"]},
        )
        assert busy.status_code == 200, busy.text
    live.grant("adm-paged", ADMIN, ["get"])

    assert "fab-vault" not in names(live.admin("GET", "/vaults"))
    assert "fab-vault" in names(live.admin("GET", "/vaults", token=operator_token))
    for method, path in (
        ("GET", "/vaults/fab-vault"),
        ("DELETE", "/vaults/fab-vault"),
        ("DELETE", f"/vaults/fab-vault/accessPolicies/{OPERATOR}"),
    ):
        kv_error(live.admin(method, path), 403, "Forbidden")
    kv_error(
        live.admin(
            "PUT",
            "/vaults/fab-vault/accessPolicies",
            json={"object_id": ADMIN, "key_permissions": ["all"]},
        ),
        403,
        "Forbidden",
    )
    assert live.admin("GET", "/vaults/fab-vault", token=operator_token).status_code == 200

    assert live.admin("GET", "/audit", params={"vault": "fab-vault"}).json() == {"value": []}
    everything = live.admin("GET", "/audit", params={"limit": 1000}).json()["value"]
    assert everything and all(r["Vault"] != "fab-vault" for r in everything)
    operator_view = live.admin("GET", "/audit", token=operator_token, params={"limit": 1000})
    assert any(r["Vault"] == "fab-vault" for r in operator_view.json()["value"])

    # A page holds ``limit`` visible records even when other tenants' records come first.
    mine = live.admin("GET", "/audit", params={"vault": "adm-paged"}).json()["value"]
    assert [r["Operation"] for r in mine] == ["VaultPut", "VaultAccessPolicySet"]
    created, granted = (r["Seq"] for r in mine)
    assert granted - created > 4
    page = live.admin("GET", "/audit", params={"since": created, "limit": 2}).json()["value"]
    assert [r["Seq"] for r in page] == [granted]


def test_the_admin_api_needs_an_operator_or_tenant_admin(live: LiveServer, alice: str) -> None:
    live.create_vault("adm-roles")
    live.grant("adm-roles", "alice@contoso.com", ["all"])  # vault rights are not admin rights
    for method, path in (
        ("GET", "/vaults"),
        ("POST", "/vaults"),
        ("GET", "/vaults/adm-roles"),
        ("GET", "/principals"),
        ("GET", "/audit"),
        ("DELETE", "/vaults/adm-roles"),
        ("DELETE", "/vaults/adm-roles/accessPolicies/alice@contoso.com"),
    ):
        message = kv_error(live.admin(method, path, token=alice), 403, "Forbidden")
        assert "operator or tenant-admin" in message
        no_token = live.http.request(method, f"{live.url}/api/v1{path}")
        kv_error(no_token, 401, "Unauthorized")
        kv_error(live.admin(method, path, token="not-a-token"), 401, "Unauthorized")
    assert live.admin("GET", "/vaults/adm-roles").status_code == 200  # still there


# ------------------------------------------------------------------ operations


def test_healthz_metrics_and_openapi(live: LiveServer) -> None:
    health = live.http.get(f"{live.url}/healthz")
    assert health.status_code == 200
    assert health.json()["status"] == "ok"

    # /metrics needs the token the server made in its home (test_metrics_exposure.py).
    token = (live.home / "metrics.token").read_text().strip()

    def vault_lists() -> float:
        metrics = live.http.get(f"{live.url}/metrics", headers={"Authorization": f"Bearer {token}"})
        assert metrics.status_code == 200
        assert metrics.headers["content-type"].startswith("text/plain")
        assert "# TYPE customerkey_http_requests_total counter" in metrics.text
        assert "customerkey_http_request_duration_seconds_bucket" in metrics.text
        wanted = 'customerkey_http_requests_total{method="GET",route="/api/v1/vaults",status="200"}'
        for line in metrics.text.splitlines():
            if line.startswith(wanted):
                return float(line.rsplit(" ", 1)[1])
        return 0.0

    before = vault_lists()
    assert live.admin("GET", "/vaults").status_code == 200
    assert live.admin("GET", "/vaults").status_code == 200
    assert vault_lists() == before + 2

    # The OpenAPI documents are off unless CUSTOMERKEY_OPENAPI=public (test_metrics_exposure.py).
    assert live.http.get(f"{live.url}/openapi.json").status_code == 404
    assert live.http.get(f"{live.url}/docs").status_code == 404


def test_sigterm_stops_the_server_cleanly(server_factory: Callable[[], LiveServer]) -> None:
    server = server_factory()
    # An idle keep-alive connection (what SDK clients leave in their pools) must not hold
    # the shutdown up until the graceful timeout.
    client = httpx.Client(verify=server.ssl_context())
    try:
        assert client.get(f"{server.url}/healthz").status_code == 200
        assert server.process.poll() is None
        server.process.send_signal(signal.SIGTERM)
        assert server.process.wait(timeout=30) == 0
    finally:
        client.close()
    log = server.log()
    assert "Application shutdown complete." in log
    assert "graceful shutdown exceeded" not in log
    assert not server.bugs()
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", server.port), timeout=2):
        pass
