"""Tenant isolation, tried as an attacker would: the admin of a second tenant (fabrikam), or a
principal of the victim's own tenant (contoso), against a real ``customerkey serve`` holding
contoso's vaults, a DEP and a mailbox, on SQLite and on PostgreSQL.

One test per finding of the isolation issue that these front ends reach (1 name squatting,
2 reading another tenant's mail, 3 backups across tenants, 6 DEPs on another tenant's keys,
7 a sock-puppet purge approval, 8 principal lifecycle, 9 audit leaks). Finding 4 (the token
endpoint) is ``test_token_endpoint_limits.py``, 5 (revocation from every front end)
``integration/test_revocation_relay.py``, 10 (public keys bound to the master key)
``test_public_key_binding_sdk.py``. Each test fails on a platform that compares names.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from sqlalchemy import create_engine, text

from customerkey.actor import OPERATOR
from customerkey.azure.localdns import install_loopback_resolver, uninstall_loopback_resolver
from customerkey.config import Settings
from customerkey.identity.workload_principals import EXCHANGE
from customerkey.runtime import Runtime
from customerkey.storage.database import normalize_url

if TYPE_CHECKING:
    from tests.support.live_servers import LiveServer

from tests.support.live_servers import DOMAIN, start_server

POSTGRES_URL = os.environ.get("CUSTOMERKEY_TEST_POSTGRES_URL")
BACKENDS = ["sqlite"] + (["postgresql"] if POSTGRES_URL else [])
API = "7.5"
C_SUB, F_SUB = "contoso-sub", "fabrikam-sub"
VAULTS = ("cv-a1", "cv-a2")
PURGE_VAULTS = ("cv-p1", "cv-p2")
KEY = "root"
MESSAGE = b"Subject: q4\n\nnumbers\n"


@dataclass
class World:
    server: LiveServer
    secrets: dict[str, str] = field(default_factory=dict)

    def token(self, client_id: str, tenant: str) -> str:
        return self.server.token(client_id, self.secrets[client_id], tenant=tenant)

    def admin_api(self, token: str, method: str, path: str, **kwargs: Any) -> httpx.Response:
        return self.server.admin(method, path, token=token, **kwargs)

    def keys_api(
        self, token: str, vault: str, method: str, path: str, **kwargs: Any
    ) -> httpx.Response:
        return self.server.http.request(
            method,
            f"{self.server.vault_url(vault)}{path}",
            params={"api-version": API},
            headers={"Authorization": f"Bearer {token}"},
            **kwargs,
        )

    def cli_as(self, principal: str, *args: str, check: bool = True) -> Any:
        return self.server.cli("--as", principal, *args, check=check)


def _key_uri(vault: str) -> str:
    return f"https://{vault}.vault.azure.net/keys/{KEY}"


@pytest.fixture(scope="module", params=BACKENDS, name="w")
def world(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[World]:
    schema = None
    admin_engine = None
    home = tmp_path_factory.mktemp(f"isolation-{request.param}") / "home"
    url = f"sqlite:///{home.parent / 'customerkey.db'}"
    if request.param == "postgresql":
        assert POSTGRES_URL
        base = normalize_url(POSTGRES_URL)
        schema = "iso_" + uuid.uuid4().hex[:12]
        admin_engine = create_engine(base, isolation_level="AUTOCOMMIT")
        with admin_engine.connect() as conn:
            conn.execute(text(f'CREATE SCHEMA "{schema}"'))
        url = f"{base}?options=-csearch_path%3D{schema}"
    secrets = _populate(home, url)
    env = {
        "CUSTOMERKEY_DATABASE_URL": url,
        # No limit on failed sign-ins from loopback: these tests fail sign-ins on purpose.
        "CUSTOMERKEY_TOKEN_SOURCE_FAILURE_BURST": "0",
        "CUSTOMERKEY_TOKEN_CLIENT_FAILURE_BURST": "0",
    }
    server = start_server(home, env=env)
    install_loopback_resolver(DOMAIN)
    try:
        w = World(server, secrets)
        fabrikam = w.token("admin@fabrikam.com", "fabrikam")
        body = {"name": "fv-1", "subscription": F_SUB, "region": "eastus"}
        created = w.admin_api(fabrikam, "POST", "/vaults", json=body)
        assert created.status_code == 201, created.text
        yield w
    finally:
        uninstall_loopback_resolver(DOMAIN)
        server.stop()
        if admin_engine is not None:
            with admin_engine.connect() as conn:
                conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
            admin_engine.dispose()


def _populate(home: Path, url: str) -> dict[str, str]:
    """Two tenants; contoso with four vaults granted to Exchange, two DEPs and a mailbox
    holding one message (set up in-process, before the server starts, for speed)."""
    secrets: dict[str, str] = {}
    rt = Runtime.open(Settings(home=home, database_url=url))
    try:
        rt.tenants.create(OPERATOR, "contoso", mail_domain="contoso.com")
        rt.tenants.create(OPERATOR, "fabrikam", mail_domain="fabrikam.com")
        for upn, tenant, roles in (
            ("admin@contoso.com", "contoso", ["tenant-admin"]),
            ("admin@fabrikam.com", "fabrikam", ["tenant-admin"]),
            ("approver@contoso.com", "contoso", ["purge-approver"]),
            ("alice@contoso.com", "contoso", []),
            ("bob@fabrikam.com", "fabrikam", []),
        ):
            _, secret = rt.principals.create(OPERATOR, upn, tenant=tenant, roles=roles)
            assert secret is not None
            secrets[upn] = secret
        regions = ("eastus", "westus", "eastus", "westus")
        for region, vault in zip(regions, VAULTS + PURGE_VAULTS, strict=True):
            rt.vault.create_vault(
                OPERATOR, vault, subscription=C_SUB, region=region, tenant="contoso"
            )
            rt.vault.create_key(
                OPERATOR, vault, KEY, kty="RSA-HSM", key_ops=["wrapKey", "unwrapKey"]
            )
            rt.vault.set_access_policy(
                OPERATOR, vault, EXCHANGE.app_id, ["wrapKey", "unwrapKey", "get"]
            )
        for name, pair in (("C-DEP", VAULTS), ("P-DEP", PURGE_VAULTS)):
            rt.policies.create(OPERATOR, "contoso", name, [_key_uri(v) for v in pair])
        rt.mail.create_mailbox(OPERATOR, "contoso", "alice@contoso.com", policy="C-DEP")
        rt.mail.add_message(OPERATOR, "alice@contoso.com", MESSAGE)
    finally:
        rt.close()
    return secrets


# -------------------------------------------------------------------- 1. name squatting


def test_a_tenant_admin_cannot_take_platform_names_or_choose_application_ids(w: World) -> None:
    fabrikam = w.token("admin@fabrikam.com", "fabrikam")
    for squatted in ("operator", "customerkey-service", EXCHANGE.app_id):
        refused = w.admin_api(
            fabrikam,
            "POST",
            "/principals",
            json={
                "id": squatted,
                "kind": "service",
                "tenant": "fabrikam",
                "roles": ["tenant-admin"],
            },
        )
        assert refused.status_code == 400, refused.text
        assert "made by the platform" in refused.json()["error"]["message"]
    # The operator cannot take a reserved name either.
    result = w.server.cli("principal", "create", "operator", "--service", check=False)
    assert result.returncode != 0 and "reserved" in result.stderr

    made = w.admin_api(
        fabrikam,
        "POST",
        "/principals",
        json={
            "kind": "service",
            "display_name": "operator",
            "tenant": "fabrikam",
            "roles": ["tenant-admin"],
        },
    )
    assert made.status_code == 201, made.text
    app = made.json()
    assert str(uuid.UUID(app["Id"])) == app["Id"] and app["Id"] != app["ObjectId"]
    assert app["DisplayName"] == "operator" and app["Tenant"] == "fabrikam"
    squatter = w.server.token(app["Id"], app["ClientSecret"], tenant="fabrikam")

    listed = w.admin_api(squatter, "GET", "/vaults").json()["value"]
    assert [v["VaultName"] for v in listed] == ["fv-1"]
    grant = {"object_id": app["Id"], "key_permissions": ["all"]}
    assert (
        w.admin_api(squatter, "PUT", f"/vaults/{VAULTS[0]}/accessPolicies", json=grant).status_code
        == 403
    )
    assert w.admin_api(squatter, "DELETE", f"/vaults/{VAULTS[0]}").status_code == 403
    removed = w.admin_api(
        squatter, "DELETE", f"/vaults/{VAULTS[0]}/accessPolicies/{EXCHANGE.app_id}"
    )
    assert removed.status_code == 403
    assert w.keys_api(squatter, VAULTS[0], "POST", f"/keys/{KEY}/backup").status_code == 403
    # Exchange still holds its grant; the refusals are audited under the squatter's own id.
    policies = w.server.cli_json("vault", "show", VAULTS[0])["AccessPolicies"]
    assert any(p["PrincipalName"] == EXCHANGE.app_id for p in policies)
    records = w.server.cli_json("audit", "show", "--limit", "100000")
    denied = [r for r in records if r["Result"] == "denied" and r["Vault"] == VAULTS[0]]
    assert denied and {r["Principal"] for r in denied} == {app["Id"]}


# -------------------------------------------------------------------- 2. another tenant's mail


def test_no_principal_of_another_tenant_can_open_a_mailbox(w: World) -> None:
    fabrikam = w.token("admin@fabrikam.com", "fabrikam")
    for tenant, status in (("fabrikam", 400), ("contoso", 403)):
        refused = w.admin_api(
            fabrikam, "POST", "/principals", json={"id": "alice2@contoso.com", "tenant": tenant}
        )
        assert refused.status_code == status, refused.text
    # Not even the operator puts a contoso UPN into fabrikam: contoso verified that domain.
    result = w.server.cli(
        "principal", "create", "carol@contoso.com", "--tenant", "fabrikam", check=False
    )
    assert result.returncode != 0 and "not a verified domain" in result.stderr

    # The owner opens its mailbox (as itself, through the operator's --as); a principal of
    # another tenant, admin or not, does not, and cannot tell it from a missing one (issue
    # 17.17: a 403 here and a 404 for a missing mailbox told which ones exist elsewhere).
    stats = w.cli_as("alice@contoso.com", "--json", "mailbox", "stats", "alice@contoso.com")
    assert json.loads(stats.stdout)["ItemCount"] == 1
    for intruder in ("bob@fabrikam.com", "admin@fabrikam.com"):
        for probe in ("alice@contoso.com", "nobody@contoso.com"):
            refused = w.cli_as(intruder, "mailbox", "stats", probe, check=False)
            assert refused.returncode != 0 and "MailboxNotFound" in refused.stderr
    fabrikam = w.token("admin@fabrikam.com", "fabrikam")
    answers = {
        probe: w.admin_api(fabrikam, "GET", f"/mailboxes/{probe}/items")
        for probe in ("alice@contoso.com", "nobody@contoso.com")
    }
    assert {p: r.status_code for p, r in answers.items()} == {p: 404 for p in answers}
    codes = {r.json()["error"]["code"] for r in answers.values()}
    assert codes == {"MailboxNotFound"}
    # nor can an alias of another tenant's mailbox be used to reach it, even when unique
    alias = w.admin_api(fabrikam, "GET", "/mailboxes/alice/items")
    assert alias.status_code == 404 and alias.json()["error"]["code"] == "MailboxNotFound"
    # while the owner reaches it by that alias
    owner = w.cli_as("alice@contoso.com", "--json", "mailbox", "stats", "alice")
    assert json.loads(owner.stdout)["ItemCount"] == 1


# -------------------------------------------------------------------- 3. backups across tenants


def test_a_backup_restores_only_into_its_own_tenant(w: World) -> None:
    fabrikam = w.token("admin@fabrikam.com", "fabrikam")
    claimed = w.admin_api(
        fabrikam,
        "POST",
        "/vaults",
        json={"name": "fv-squat", "subscription": C_SUB, "region": "eastus"},
    )
    assert claimed.status_code == 403, claimed.text
    assert "belongs to another tenant" in claimed.json()["error"]["message"]

    blob = _backup(w)
    restored = w.keys_api(fabrikam, "fv-1", "POST", "/keys/restore", json={"value": blob})
    assert restored.status_code == 403, restored.text
    assert "belongs to another tenant" in restored.json()["error"]["message"]
    assert w.keys_api(fabrikam, "fv-1", "GET", f"/keys/{KEY}").status_code == 404


def _backup(w: World) -> str:
    admin = w.token("admin@contoso.com", "contoso")
    w.admin_api(
        admin,
        "PUT",
        f"/vaults/{VAULTS[0]}/accessPolicies",
        json={"object_id": "admin@contoso.com", "key_permissions": ["backup"]},
    )
    backup = w.keys_api(admin, VAULTS[0], "POST", f"/keys/{KEY}/backup")
    assert backup.status_code == 200, backup.text
    value: str = backup.json()["value"]
    return value


# -------------------------------------------------------------------- 6. DEPs on foreign keys


def test_a_dep_cannot_name_another_tenants_keys_nor_learn_they_exist(w: World) -> None:
    fabrikam = w.token("admin@fabrikam.com", "fabrikam")

    def create(name: str, vaults: tuple[str, str]) -> str:
        body = {"name": name, "AzureKeyIDs": [_key_uri(v) for v in vaults]}
        refused = w.admin_api(fabrikam, "POST", "/tenants/fabrikam/policies", json=body)
        assert refused.status_code == 400, refused.text
        message: str = refused.json()["error"]["message"]
        for vault in vaults:
            message = message.replace(vault, "<vault>")
        return message

    foreign = create("F-DEP", VAULTS)
    missing = create("F-DEP", ("nowhere-1", "nowhere-2"))
    assert foreign == missing
    # The files workload's policy follows the same rule.
    register = w.admin_api(
        fabrikam,
        "POST",
        "/tenants/fabrikam/files/policy",
        json={"primary": _key_uri(VAULTS[0]), "secondary": _key_uri(VAULTS[1])},
    )
    assert register.status_code == 400 and "No vault named" in register.json()["error"]["message"]


# -------------------------------------------------------------------- 7. sock-puppet purge


def test_a_purge_needs_an_approver_the_operator_registered_before_the_request(w: World) -> None:
    admin = w.token("admin@contoso.com", "contoso")
    puppet = {"id": "puppet@contoso.com", "tenant": "contoso"}
    refused = w.admin_api(
        admin, "POST", "/principals", json={**puppet, "roles": ["tenant-admin", "purge-approver"]}
    )
    assert refused.status_code == 403, refused.text
    made = w.admin_api(admin, "POST", "/principals", json={**puppet, "roles": ["tenant-admin"]})
    assert made.status_code == 201, made.text
    grant = w.admin_api(
        admin, "POST", "/principals/puppet@contoso.com/roles", json={"add": ["purge-approver"]}
    )
    assert grant.status_code == 403, grant.text

    for vault in PURGE_VAULTS:
        w.server.cli("vault", "access", "remove", vault, "--spn", EXCHANGE.app_id)
    w.cli_as(
        "admin@contoso.com",
        "dep",
        "purge-request",
        "P-DEP",
        "--reason",
        "leaving",
        "--contact",
        "sec@contoso.com",
    )

    def approve(principal: str) -> Any:
        return w.cli_as(
            principal,
            "dep",
            "purge-approve",
            "--yes",
            "P-DEP",
            "--approver",
            principal,
            "--no-wait",
            check=False,
        )

    assert "purge-approver role" in approve("puppet@contoso.com").stderr
    assert "different principal" in approve("admin@contoso.com").stderr
    # A role granted after the request does not count.
    w.server.cli("principal", "roles", "puppet@contoso.com", "--add", "purge-approver")
    assert "since before the request" in approve("puppet@contoso.com").stderr
    # The operator signs only as a named approver.
    alone = w.server.cli(
        "dep",
        "purge-approve",
        "--yes",
        "P-DEP",
        "--tenant",
        "contoso",
        "--approver",
        "admin@contoso.com",
        "--no-wait",
        check=False,
    )
    assert alone.returncode != 0 and "different principal" in alone.stderr
    ok = approve("approver@contoso.com")
    assert ok.returncode == 0, ok.stderr
    records = w.server.cli_json("audit", "show", "--operation", "DataEncryptionPolicyPurgeApproved")
    assert [r["Principal"] for r in records] == ["operator as approver@contoso.com"]


# -------------------------------------------------------------------- 8. principal lifecycle


def _grant_get(w: World, principal: str) -> None:
    w.server.cli(
        "vault", "access", "set", VAULTS[1], "--upn", principal, "--key-permissions", "get"
    )


def test_disable_delete_role_removal_and_secret_reset_end_tokens_at_once(w: World) -> None:
    admin = w.token("admin@contoso.com", "contoso")
    made = w.admin_api(
        admin, "POST", "/principals", json={"id": "temp@contoso.com", "tenant": "contoso"}
    )
    assert made.status_code == 201, made.text
    secret = made.json()["ClientSecret"]
    _grant_get(w, "temp@contoso.com")
    first = w.server.token("temp@contoso.com", secret)
    assert w.keys_api(first, VAULTS[1], "GET", f"/keys/{KEY}").status_code == 200

    assert w.admin_api(admin, "POST", "/principals/temp@contoso.com/disable").status_code == 200
    assert w.keys_api(first, VAULTS[1], "GET", f"/keys/{KEY}").status_code == 401
    assert w.server.token_response("temp@contoso.com", secret).status_code == 401
    assert w.admin_api(admin, "POST", "/principals/temp@contoso.com/enable").status_code == 200
    assert w.keys_api(first, VAULTS[1], "GET", f"/keys/{KEY}").status_code == 401  # still ended
    second = w.server.token("temp@contoso.com", secret)
    assert w.keys_api(second, VAULTS[1], "GET", f"/keys/{KEY}").status_code == 200

    reset = w.admin_api(admin, "POST", "/principals/temp@contoso.com/resetSecret")
    assert reset.status_code == 200
    assert w.keys_api(second, VAULTS[1], "GET", f"/keys/{KEY}").status_code == 401
    assert w.server.token_response("temp@contoso.com", secret).status_code == 401
    third = w.server.token("temp@contoso.com", reset.json()["ClientSecret"])
    assert w.keys_api(third, VAULTS[1], "GET", f"/keys/{KEY}").status_code == 200

    # A change made by another process (the CLI) reaches the running server within a second.
    w.server.cli("principal", "disable", "temp@contoso.com")
    deadline = time.monotonic() + 10
    while w.keys_api(third, VAULTS[1], "GET", f"/keys/{KEY}").status_code == 200:
        assert time.monotonic() < deadline, "the disabled principal's token still works"
        time.sleep(0.1)

    deleted = w.admin_api(admin, "DELETE", "/principals/temp@contoso.com")
    assert deleted.status_code == 200
    names = [
        p["PrincipalName"] for p in w.server.cli_json("vault", "show", VAULTS[1])["AccessPolicies"]
    ]
    assert "temp@contoso.com" not in names
    # The name can be created again: the new principal inherits nothing.
    again = w.admin_api(
        admin, "POST", "/principals", json={"id": "temp@contoso.com", "tenant": "contoso"}
    )
    assert again.status_code == 201 and again.json()["ObjectId"] != made.json()["ObjectId"]
    fresh = w.server.token("temp@contoso.com", again.json()["ClientSecret"])
    assert w.keys_api(fresh, VAULTS[1], "GET", f"/keys/{KEY}").status_code == 403

    made = w.admin_api(
        admin,
        "POST",
        "/principals",
        json={"id": "admin3@contoso.com", "tenant": "contoso", "roles": ["tenant-admin"]},
    )
    admin3 = w.server.token("admin3@contoso.com", made.json()["ClientSecret"])
    assert w.admin_api(admin3, "GET", "/vaults").status_code == 200
    removed = w.admin_api(
        admin, "POST", "/principals/admin3@contoso.com/roles", json={"remove": ["tenant-admin"]}
    )
    assert removed.status_code == 200 and removed.json()["Roles"] == []
    assert w.admin_api(admin3, "GET", "/vaults").status_code == 401
    # Another tenant's admin cannot see, let alone manage, contoso's principals.
    fabrikam = w.token("admin@fabrikam.com", "fabrikam")
    assert w.admin_api(fabrikam, "POST", "/principals/admin@contoso.com/disable").status_code == 404
    assert w.admin_api(fabrikam, "GET", "/principals/admin@contoso.com").status_code == 404


# -------------------------------------------------------------------- 9. audit leaks


def test_audit_records_are_scoped_to_tenant_and_grant(w: World) -> None:
    made = w.server.cli_json("principal", "create", "grantee@contoso.com", "--tenant", "contoso")
    _grant_get(w, "grantee@contoso.com")
    token = w.server.token("grantee@contoso.com", made["ClientSecret"])
    assert w.keys_api(token, VAULTS[1], "GET", f"/keys/{KEY}").status_code == 200
    # A refused call is audited; so is one on a vault it holds no grant on (not for it to see).
    assert w.keys_api(token, VAULTS[1], "POST", f"/keys/{KEY}/backup").status_code == 403
    assert w.keys_api(token, VAULTS[0], "POST", f"/keys/{KEY}/backup").status_code == 403
    seen = w.cli_as("grantee@contoso.com", "--json", "audit", "show", "--limit", "100000")
    records = json.loads(seen.stdout)
    assert {r["Operation"] for r in records} >= {"KeyBackup", "VaultAccessPolicySet"}
    assert [r["Vault"] for r in records if r["Operation"] == "KeyBackup"] == [VAULTS[1]]
    everything = w.server.cli_json("audit", "show", "--limit", "100000")
    assert len(everything) > len(records) + 20  # the operator sees all the rest
    for record in records:
        own_call = record["Principal"] == "grantee@contoso.com"
        own_grant = record["Details"].get("object_id") == made["ObjectId"]
        assert own_call or own_grant, record
    # Another tenant's admin sees none of contoso's records.
    fabrikam = w.token("admin@fabrikam.com", "fabrikam")
    others = w.admin_api(fabrikam, "GET", "/audit", params={"limit": 1000}).json()["value"]
    assert others and not [r for r in others if r["Vault"] in VAULTS + PURGE_VAULTS]
    assert all(r["Vault"] in (None, "fv-1") for r in others)


def test_a_vault_name_reused_after_a_purge_starts_with_an_empty_history(w: World) -> None:
    s = w.server
    s.cli(
        "vault",
        "create",
        "reused-name",
        "--subscription",
        C_SUB,
        "--region",
        "eastus",
        "--tenant",
        "contoso",
    )
    s.cli("key", "create", "reused-name", "secret-plans")
    s.cli("vault", "delete", "reused-name", "--yes")
    s.cli("vault", "purge", "reused-name", "--yes")
    fabrikam = w.token("admin@fabrikam.com", "fabrikam")
    body = {"name": "reused-name", "subscription": F_SUB, "region": "eastus"}
    assert w.admin_api(fabrikam, "POST", "/vaults", json=body).status_code == 201
    history = w.admin_api(fabrikam, "GET", "/audit", params={"vault": "reused-name"}).json()
    assert [r["Operation"] for r in history["value"]] == ["VaultPut"]
    assert history["value"][0]["Principal"] == "admin@fabrikam.com"
