"""The az CLI, unmodified, against a real ``customerkey serve``: ``az cloud register`` from the
server's ARM metadata, ``az login --service-principal``, ``az account show`` and the
``az keyvault key`` command group, each step checked on az's own output.

Where az comes from: ``$CUSTOMERKEY_AZ`` (a path; ``.ci/run`` installs azure-cli into its own
venv and sets it), else ``az`` on PATH. Without either the tests skip, unless
``CUSTOMERKEY_REQUIRE_AZ=1`` (set by ``.ci/run``), which turns the skip into a failure: CI
always runs them.

Each az process gets a fresh ``AZURE_CONFIG_DIR`` (per signed-in identity),
``REQUESTS_CA_BUNDLE`` = the server's CA, and ``HTTPS_PROXY`` = a CONNECT proxy in this
process that sends ``localhost`` and ``*.vault.localhost`` on the server's port to loopback
(what ``live_server``'s in-process resolver does for the SDK tests; az is another process,
and the system resolver here does not resolve ``*.localhost``). The proxy refuses every other
destination and records it: az reaches nothing but customerkey (and, on its first run in a
config folder, its own version check, which it does without). MSAL's instance discovery
asks login.microsoftonline.com about unknown authorities; az's documented switch for private
clouds, ``az config set core.instance_discovery=false``, turns that off.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed, encode_dss_signature

from tests.support.az_cli import (
    AZ_VERSION_CHECK,
    CLOUD,
    Az,
    LoopbackProxy,
    loopback_proxy,
    require_az,
)
from tests.support.live_servers import DOMAIN, TENANT

if TYPE_CHECKING:
    from tests.support.live_servers import LiveServer

VAULT = "az-main"
SUBSCRIPTION = "contoso-sub-1"  # the subscription LiveServer.create_vault names
OTHER_TENANT, OTHER_APP, OTHER_VAULT = "fabrikam", "fab-app", "fab-v"
OTHER_SUB = "5b7e0c4e-2f1a-4c39-9d55-0f6a8e3c1b27"  # a GUID, as az's --subscription may need
EMPTY_TENANT, EMPTY_APP = "northwind", "nw-app"  # a tenant that owns no subscription


@dataclass
class Directory:
    """The tenants, principals and vaults the tests sign in with (no az needed)."""

    server: LiveServer
    app: str  # contoso's service principal (an application id): all permissions on VAULT
    secrets: dict[str, str]


@dataclass
class World(Directory):
    executable: str = ""
    proxy: LoopbackProxy | None = None
    root: Path = Path()

    def az(self) -> Az:
        assert self.proxy is not None
        folder = self.root / uuid.uuid4().hex[:8]
        folder.mkdir()
        return Az(self.executable, self.server, self.proxy, folder)


@pytest.fixture(scope="module")
def directory(live_server: LiveServer) -> Directory:
    server = live_server
    server.create_vault(VAULT)
    # As the README does it: a service principal with an application id the platform chose.
    app = server.cli_json("principal", "create", "--service", "--tenant", TENANT)
    secrets = {app["Id"]: app["ClientSecret"]}
    server.cli("vault", "access", "set", VAULT, "--spn", app["Id"], "--key-permissions", "all")
    for tenant, client in ((OTHER_TENANT, OTHER_APP), (EMPTY_TENANT, EMPTY_APP)):
        server.cli("tenant", "create", tenant, "--mail-domain", f"{tenant}.com")
        view = server.cli_json("principal", "create", client, "--service", "--tenant", tenant)
        secrets[client] = view["ClientSecret"]
    server.cli(
        "vault", "create", OTHER_VAULT, "--subscription", OTHER_SUB, "--region", "eastus",
        "--tenant", OTHER_TENANT,
    )  # fmt: skip
    return Directory(server, app["Id"], secrets)


@pytest.fixture(scope="module")
def world(directory: Directory, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    executable = require_az()
    with loopback_proxy(directory.server.port) as proxy:
        yield World(
            directory.server,
            directory.app,
            directory.secrets,
            executable=executable,
            proxy=proxy,
            root=tmp_path_factory.mktemp("az"),
        )
    # Sign-in, ARM and the vaults never left for Microsoft's hosts; the only other destination
    # is az's own version check on the first run in a config folder (it carries on without).
    elsewhere = {line.split()[1] for line in proxy.refused}
    assert elsewhere <= {AZ_VERSION_CHECK}, f"az tried to reach other hosts: {proxy.refused}"


@pytest.fixture(scope="module")
def az(world: World) -> Az:
    """az signed in as ``World.app`` in contoso, on the customerkey cloud."""
    signed_in = world.az()
    signed_in.register_cloud()
    signed_in.login(world.app, world.secrets[world.app], TENANT)
    return signed_in


# ------------------------------------------------------------------ cloud and sign-in


def test_cloud_register_reads_the_metadata_and_login_lists_the_tenants_subscriptions(
    world: World, live: LiveServer
) -> None:
    az = world.az()
    az.register_cloud()
    cloud = az.json("cloud", "show", "--name", CLOUD)
    assert cloud["isActive"] is True
    assert cloud["endpoints"]["resourceManager"] == f"{live.url}/"
    assert cloud["endpoints"]["activeDirectory"] == live.url
    assert cloud["endpoints"]["activeDirectoryResourceId"] == f"{live.url}/"
    assert cloud["suffixes"]["keyvaultDns"] == f".{DOMAIN}:{live.port}"

    accounts = az.login(world.app, world.secrets[world.app], TENANT)
    assert [(a["id"], a["name"], a["tenantId"], a["state"]) for a in accounts] == [
        (SUBSCRIPTION, SUBSCRIPTION, TENANT, "Enabled")
    ]
    assert accounts[0]["user"] == {"name": world.app, "type": "servicePrincipal"}
    assert accounts[0]["cloudName"] == CLOUD and accounts[0]["homeTenantId"] == TENANT
    shown = az.json("account", "show")
    assert shown["id"] == SUBSCRIPTION and shown["isDefault"] is True
    assert shown["tenantId"] == TENANT and shown["environmentName"] == CLOUD
    # The same, asking for tenant-level access too: the subscription is still listed.
    again = az.login(world.app, world.secrets[world.app], TENANT, "--allow-no-subscriptions")
    assert [a["id"] for a in again] == [SUBSCRIPTION]
    # A wrong secret is refused by the token endpoint (in a fresh config folder: MSAL would
    # answer from the token it cached above without asking the server).
    fresh = world.az()
    fresh.register_cloud()
    assert "Invalid client credentials" in fresh.fails(
        "login", "--service-principal", "-u", world.app, "-p", "wrong", "--tenant", TENANT
    )


def test_a_tenant_without_subscriptions_needs_allow_no_subscriptions(world: World) -> None:
    az = world.az()
    az.register_cloud()
    secret = world.secrets[EMPTY_APP]
    refused = az.fails(
        "login",
        "--service-principal",
        "-u",
        EMPTY_APP,
        f"--password={secret}",
        "--tenant",
        EMPTY_TENANT,
    )
    assert "No subscriptions found" in refused
    accounts = az.login(EMPTY_APP, secret, EMPTY_TENANT, "--allow-no-subscriptions")
    assert [(a["id"], a["name"], a["tenantId"]) for a in accounts] == [
        (EMPTY_TENANT, "N/A(tenant level account)", EMPTY_TENANT)
    ]
    assert az.json("account", "show")["tenantId"] == EMPTY_TENANT


def test_another_tenants_principal_sees_only_its_own_subscription(world: World) -> None:
    az = world.az()
    az.register_cloud()
    accounts = az.login(OTHER_APP, world.secrets[OTHER_APP], OTHER_TENANT)
    assert [(a["id"], a["homeTenantId"]) for a in accounts] == [(OTHER_SUB, OTHER_TENANT)]
    # Service principals are multi-tenant here (the token endpoint signs them in at any
    # tenant's path, with their own tenant in the token): signing in at contoso's path still
    # shows fabrikam's principal fabrikam's subscription, and none of contoso's.
    elsewhere = az.login(OTHER_APP, world.secrets[OTHER_APP], TENANT)
    assert [(a["id"], a["homeTenantId"]) for a in elsewhere] == [(OTHER_SUB, OTHER_TENANT)]
    assert SUBSCRIPTION not in {a["id"] for a in az.json("account", "list", "--all")}
    assert "doesn't exist" in az.fails("account", "set", "--subscription", SUBSCRIPTION)
    # One subscription by id, without listing (GET /subscriptions/{id}); contoso's principal
    # asking for fabrikam's by id gets nothing.
    direct = az.login(
        OTHER_APP, world.secrets[OTHER_APP], OTHER_TENANT, "--skip-subscription-discovery",
        "--subscription", OTHER_SUB,
    )  # fmt: skip
    assert [(a["id"], a["homeTenantId"]) for a in direct] == [(OTHER_SUB, OTHER_TENANT)]
    intruder = world.az()
    intruder.register_cloud()
    foreign = intruder.fails(
        "login", "--service-principal", "-u", world.app, f"--password={world.secrets[world.app]}",
        "--tenant", TENANT, "--skip-subscription-discovery", "--subscription", OTHER_SUB,
    )  # fmt: skip
    assert f"The subscription '{OTHER_SUB}' could not be retrieved" in foreign


# ------------------------------------------------------------------ ARM, directly


def _token(live: LiveServer, client: str, secret: str, tenant: str, resource: str) -> str:
    response = live.token_response(client, secret, tenant=tenant, scope=f"{resource}/.default")
    assert response.status_code == 200, response.text
    token: str = response.json()["access_token"]
    return token


def _get(live: LiveServer, url: str, token: str | None = None, **params: str) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return live.http.get(url, params=params, headers=headers)


def test_arm_isolates_tenants_and_audiences(directory: Directory, live: LiveServer) -> None:
    world = directory
    arm_resource = f"{live.url}/"
    version = {"api-version": "2022-12-01"}
    ours = _token(live, world.app, world.secrets[world.app], TENANT, arm_resource)
    theirs = _token(live, OTHER_APP, world.secrets[OTHER_APP], OTHER_TENANT, arm_resource)
    listed = _get(live, f"{live.url}/subscriptions", ours, **version)
    assert listed.status_code == 200, listed.text
    assert [s["subscriptionId"] for s in listed.json()["value"]] == [SUBSCRIPTION]
    assert listed.json()["value"][0]["id"] == f"/subscriptions/{SUBSCRIPTION}"
    # The attack: fabrikam's principal asks for contoso's subscriptions, by list and by id.
    seen = _get(live, f"{live.url}/subscriptions", theirs, **version).json()["value"]
    assert [s["subscriptionId"] for s in seen] == [OTHER_SUB]
    assert all(s["tenantId"] == OTHER_TENANT for s in seen)
    probe = _get(live, f"{live.url}/subscriptions/{SUBSCRIPTION}", theirs, **version)
    assert probe.status_code == 404 and probe.json()["error"]["code"] == "SubscriptionNotFound"
    own = _get(live, f"{live.url}/subscriptions/{OTHER_SUB}", theirs, **version)
    assert own.status_code == 200 and own.json()["tenantId"] == OTHER_TENANT
    # A vault token is no ARM token, and an ARM token opens no vault and no admin API.
    vault_token = live.token(world.app, world.secrets[world.app])
    refused = _get(live, f"{live.url}/subscriptions", vault_token, **version)
    assert refused.status_code == 401
    assert refused.json()["error"]["code"] == "InvalidAuthenticationToken"
    assert "www-authenticate" in refused.headers
    keys = _get(live, f"{live.vault_url(VAULT)}/keys", ours, **{"api-version": "7.6"})
    assert keys.status_code == 401
    assert live.admin("GET", "/vaults", token=ours).status_code == 401
    missing = _get(live, f"{live.url}/subscriptions", None, **version)
    assert missing.status_code == 401
    assert missing.json()["error"]["code"] == "AuthenticationFailed"
    # ARM's own refusals, and the bare host only.
    no_version = _get(live, f"{live.url}/subscriptions", ours)
    assert no_version.json()["error"]["code"] == "MissingApiVersionParameter"
    bad = _get(live, f"{live.url}/subscriptions", ours, **{"api-version": "1999-01-01"})
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "InvalidApiVersionParameter"
    on_vault = _get(live, f"{live.vault_url(VAULT)}/subscriptions", ours, **version)
    assert on_vault.status_code == 404


def test_arm_tokens_follow_the_directory(directory: Directory, live: LiveServer) -> None:
    """The v1 endpoint issues ARM tokens too; a disabled principal's stop working."""
    view = live.cli_json("principal", "create", "--service", "--tenant", TENANT)
    v1 = live.http.post(
        f"{live.url}/{TENANT}/oauth2/token",
        data={
            "grant_type": "client_credentials",
            "client_id": view["Id"],
            "client_secret": view["ClientSecret"],
            "resource": f"{live.url}/",
        },
    )
    assert v1.status_code == 200, v1.text
    assert v1.json()["resource"] == f"{live.url}/"
    token = v1.json()["access_token"]
    version = {"api-version": "2022-12-01"}
    listed = _get(live, f"{live.url}/subscriptions", token, **version)
    assert [s["subscriptionId"] for s in listed.json()["value"]] == [SUBSCRIPTION]
    live.cli("principal", "disable", view["Id"])
    deadline = time.monotonic() + 10  # the server rereads a principal within a second
    while (answer := _get(live, f"{live.url}/subscriptions", token, **version)).status_code == 200:
        assert time.monotonic() < deadline, "a disabled principal's ARM token still works"
        time.sleep(0.2)  # the principal cache's TTL
    assert answer.status_code == 401


def test_metadata_document_shapes(live: LiveServer) -> None:
    document = _get(live, f"{live.url}/metadata/endpoints", **{"api-version": "2022-09-01"})
    assert document.status_code == 200, document.text
    body = document.json()
    assert body["name"] == CLOUD and body["resourceManager"] == f"{live.url}/"
    assert body["authentication"]["loginEndpoint"] == live.url
    assert body["authentication"]["audiences"] == [f"{live.url}/"]
    assert body["suffixes"]["keyVaultDns"] == f"{DOMAIN}:{live.port}"
    listed = _get(live, f"{live.url}/metadata/endpoints", **{"api-version": "2019-05-01"})
    assert listed.json() == [body]
    unknown = _get(live, f"{live.url}/metadata/endpoints", **{"api-version": "2030-01-01"})
    assert unknown.status_code == 400


# ------------------------------------------------------------------ az keyvault key


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def _in_vault(*args: str) -> tuple[str, ...]:
    return (*args, "--vault-name", VAULT)


def test_create_show_list_and_set_attributes(az: Az, live: LiveServer) -> None:
    name = _name("azk")
    created = az.json(
        "keyvault", "key", "create", *_in_vault("--name", name), "--kty", "RSA", "--size", "2048",
        "--ops", "encrypt", "decrypt", "wrapKey", "unwrapKey", "--tags", "from=az",
    )  # fmt: skip
    kid = created["key"]["kid"]
    assert kid.startswith(f"{live.vault_url(VAULT)}/keys/{name}/")
    assert created["key"]["kty"] == "RSA" and created["attributes"]["enabled"] is True
    assert len(base64.b64decode(created["key"]["n"])) == 256
    assert sorted(created["key"]["keyOps"]) == ["decrypt", "encrypt", "unwrapKey", "wrapKey"]
    assert created["tags"] == {"from": "az"}

    shown = az.json("keyvault", "key", "show", *_in_vault("--name", name))
    assert shown["key"]["kid"] == kid and shown["key"]["n"] == created["key"]["n"]
    by_id = az.json("keyvault", "key", "show", "--id", kid)
    assert by_id["key"]["kid"] == kid

    listed = az.json("keyvault", "key", "list", "--vault-name", VAULT)
    assert name in {k["name"] for k in listed}

    updated = az.json(
        "keyvault", "key", "set-attributes", *_in_vault("--name", name), "--enabled", "false",
        "--tags", "stage=2",
    )  # fmt: skip
    assert updated["attributes"]["enabled"] is False and updated["tags"] == {"stage": "2"}
    assert az.json("keyvault", "key", "show", "--id", kid)["attributes"]["enabled"] is False
    versions = az.json("keyvault", "key", "list-versions", *_in_vault("--name", name))
    assert [v["kid"] for v in versions] == [kid]


def test_encrypt_and_decrypt_with_rsa_oaep_256(az: Az) -> None:
    name = _name("aze")
    az.json("keyvault", "key", "create", *_in_vault("--name", name), "--kty", "RSA")
    secret = os.urandom(32)
    encrypted = az.json(
        "keyvault", "key", "encrypt", *_in_vault("--name", name), "--algorithm", "RSA-OAEP-256",
        "--value", base64.b64encode(secret).decode(), "--data-type", "base64",
    )  # fmt: skip
    assert encrypted["algorithm"] == "RSA-OAEP-256"
    ciphertext = encrypted["result"]
    assert len(base64.b64decode(ciphertext)) == 256
    decrypted = az.json(
        "keyvault", "key", "decrypt", *_in_vault("--name", name), "--algorithm", "RSA-OAEP-256",
        "--value", ciphertext, "--data-type", "base64",
    )  # fmt: skip
    assert base64.b64decode(decrypted["result"]) == secret
    assert decrypted["kid"] == encrypted["kid"]


def test_backup_delete_recover_purge_and_restore(az: Az, tmp_path: Path) -> None:
    name = _name("azb")
    created = az.json("keyvault", "key", "create", *_in_vault("--name", name), "--kty", "RSA")
    backup = tmp_path / "key.backup"
    az.run("keyvault", "key", "backup", *_in_vault("--name", name), "--file", str(backup))
    assert backup.stat().st_size > 0

    deleted = az.json("keyvault", "key", "delete", *_in_vault("--name", name))
    assert deleted["key"]["kid"] == created["key"]["kid"]
    assert deleted["recoveryId"].endswith(f"/deletedkeys/{name}")
    listed = az.json("keyvault", "key", "list-deleted", "--vault-name", VAULT)
    assert name in {k["name"] for k in listed}
    assert "KeyNotFound" in az.fails("keyvault", "key", "show", *_in_vault("--name", name))

    recovered = az.json("keyvault", "key", "recover", *_in_vault("--name", name))
    assert recovered["key"]["kid"] == created["key"]["kid"]
    az.json("keyvault", "key", "delete", *_in_vault("--name", name))
    az.run("keyvault", "key", "purge", *_in_vault("--name", name))
    gone = az.fails("keyvault", "key", "show-deleted", *_in_vault("--name", name))
    assert "not found" in gone.lower()

    restored = az.json("keyvault", "key", "restore", "--vault-name", VAULT, "--file", str(backup))
    assert restored["key"]["kid"] == created["key"]["kid"]
    assert restored["key"]["n"] == created["key"]["n"]


def test_rotate_and_rotation_policy(az: Az, tmp_path: Path) -> None:
    name = _name("azr")
    first = az.json("keyvault", "key", "create", *_in_vault("--name", name), "--kty", "RSA")
    rotated = az.json("keyvault", "key", "rotate", *_in_vault("--name", name))
    assert rotated["key"]["kid"] != first["key"]["kid"]
    assert rotated["key"]["n"] != first["key"]["n"]
    assert az.json("keyvault", "key", "show", *_in_vault("--name", name)) == rotated

    policy = az.json("keyvault", "key", "rotation-policy", "show", *_in_vault("--name", name))
    assert policy["id"].endswith(f"/keys/{name}/rotationpolicy")
    wanted = {
        "lifetimeActions": [
            {"trigger": {"timeAfterCreate": "P90D"}, "action": {"type": "Rotate"}},
            {"trigger": {"timeBeforeExpiry": "P30D"}, "action": {"type": "Notify"}},
        ],
        "attributes": {"expiryTime": "P1Y"},
    }
    file = tmp_path / "policy.json"
    file.write_text(json.dumps(wanted))
    updated = az.json(
        "keyvault", "key", "rotation-policy", "update", *_in_vault("--name", name),
        "--value", str(file),
    )  # fmt: skip
    assert updated["expiresIn"] == "P1Y"
    actions = {
        (a["action"], a["timeAfterCreate"], a["timeBeforeExpiry"])
        for a in updated["lifetimeActions"]
    }
    assert actions == {("Rotate", "P90D", None), ("Notify", None, "P30D")}
    shown = az.json("keyvault", "key", "rotation-policy", "show", *_in_vault("--name", name))
    assert shown["lifetimeActions"] == updated["lifetimeActions"]
    assert shown["expiresIn"] == "P1Y"


def test_ec_and_rsa_keys_sign_and_verify(az: Az) -> None:
    message = b"signed by az"
    digest = hashlib.sha256(message).digest()
    encoded = base64.b64encode(digest).decode()

    ec_name = _name("azec")
    created = az.json(
        "keyvault", "key", "create", *_in_vault("--name", ec_name), "--kty", "EC",
        "--curve", "P-256",
    )  # fmt: skip
    jwk = created["key"]
    assert (jwk["kty"], jwk["crv"]) == ("EC", "P-256")
    assert sorted(jwk["keyOps"]) == ["sign", "verify"]
    signed = az.json(
        "keyvault", "key", "sign", *_in_vault("--name", ec_name), "--algorithm", "ES256",
        "--digest", encoded,
    )  # fmt: skip
    assert signed["algorithm"] == "ES256" and signed["keyId"] == jwk["kid"]
    raw = base64.b64decode(signed["signature"])
    assert len(raw) == 64
    # The signature checks out against the public key az showed, outside customerkey.
    public = ec.EllipticCurvePublicNumbers(
        _int(jwk["x"]), _int(jwk["y"]), ec.SECP256R1()
    ).public_key()
    der = encode_dss_signature(int.from_bytes(raw[:32]), int.from_bytes(raw[32:]))
    public.verify(der, digest, ec.ECDSA(Prehashed(hashes.SHA256())))
    verified = az.json(
        "keyvault", "key", "verify", *_in_vault("--name", ec_name), "--algorithm", "ES256",
        "--digest", encoded, "--signature", signed["signature"],
    )  # fmt: skip
    assert verified["isValid"] is True
    other = base64.b64encode(hashlib.sha256(b"something else").digest()).decode()
    mismatch = az.json(
        "keyvault", "key", "verify", *_in_vault("--name", ec_name), "--algorithm", "ES256",
        "--digest", other, "--signature", signed["signature"],
    )  # fmt: skip
    assert mismatch["isValid"] is False

    rsa_name = _name("azrs")
    key = az.json("keyvault", "key", "create", *_in_vault("--name", rsa_name), "--kty", "RSA")
    for algorithm, pad in (
        ("RS256", padding.PKCS1v15()),
        ("PS256", padding.PSS(padding.MGF1(hashes.SHA256()), 32)),
    ):
        signed = az.json(
            "keyvault", "key", "sign", *_in_vault("--name", rsa_name), "--algorithm", algorithm,
            "--digest", encoded,
        )  # fmt: skip
        signature = base64.b64decode(signed["signature"])
        rsa.RSAPublicNumbers(_int(key["key"]["e"]), _int(key["key"]["n"])).public_key().verify(
            signature, digest, pad, Prehashed(hashes.SHA256())
        )
        verified = az.json(
            "keyvault", "key", "verify", *_in_vault("--name", rsa_name), "--algorithm",
            algorithm, "--digest", encoded, "--signature", signed["signature"],
        )  # fmt: skip
        assert verified["isValid"] is True, algorithm


def _int(value: str) -> int:
    """A JWK number as az prints it (standard base64)."""
    return int.from_bytes(base64.b64decode(value))
