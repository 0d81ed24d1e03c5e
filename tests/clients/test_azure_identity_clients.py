"""The stock sign-in clients against a real ``customerkey serve``: azure-identity (Python, sync)
with ``azure-keyvault-keys``, MSAL Python's instance discovery, and the JavaScript SDK
(``@azure/identity`` + ``@azure/keyvault-keys``, installed with npm into pytest's cache folder
on first use; node and npm must be on PATH, nothing here is skipped without them): the scripts
in ``tests/clients/js/``, one over the RSA key life cycle, one over EC and RSA signatures, RSA
encryption, random bytes and oct-HSM keys.

No customerkey client code is involved: the credentials read the tenant's OpenID configuration
(``discovery``) and sign in at the token endpoint it names. Vault hosts resolve to loopback
in this process through ``live_server``'s resolver; the Node script does the same for itself.
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import shutil
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import msal
import pytest
from azure.core.credentials import TokenCredential
from azure.core.exceptions import ResourceNotFoundError
from azure.identity import ClientSecretCredential, DefaultAzureCredential
from azure.keyvault.keys import ApiVersion, KeyClient
from azure.keyvault.keys.crypto import CryptographyClient, EncryptionAlgorithm, KeyWrapAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from tests.support.live_servers import DOMAIN, TENANT, start_server
from tests.support.servers import clean_env

if TYPE_CHECKING:
    from tests.support.live_servers import LiveServer

VAULT = "ident-main"
APP, CRYPTO = "ident-app@contoso.com", "ident-crypto"
JS_DIR = Path(__file__).parent / "js"
# What the Node test installs (major versions pinned: a new major may change the API).
JS_PACKAGES = {"@azure/identity": "^4.13.0", "@azure/keyvault-keys": "^4.10.0"}
NPM_TIMEOUT = 600


@dataclass
class Principals:
    server: LiveServer
    app_secret: str
    crypto_secret: str

    def credential(self, who: str = APP) -> ClientSecretCredential:
        """The stock azure-identity credential, signing in to this server."""
        secret = self.app_secret if who == APP else self.crypto_secret
        return ClientSecretCredential(
            TENANT,
            who,
            secret,
            authority=self.server.url,
            disable_instance_discovery=True,
            connection_verify=str(self.server.ca),
        )


@pytest.fixture(scope="module")
def principals(live_server: LiveServer) -> Principals:
    live_server.create_vault(VAULT)
    app_secret = live_server.create_principal(APP)
    crypto_secret = live_server.create_principal(CRYPTO, kind="service")
    live_server.grant(VAULT, APP, ["all"])
    # No "get": the SDK cannot do public-key operations locally, so they reach the server.
    live_server.grant(VAULT, CRYPTO, ["wrapKey", "unwrapKey", "encrypt", "decrypt"])
    return Principals(live_server, app_secret, crypto_secret)


def _keys(principals: Principals, credential: TokenCredential, **options: str) -> KeyClient:
    return KeyClient(
        principals.server.vault_url(VAULT),
        credential,
        connection_verify=str(principals.server.ca),
        **options,
    )


def _crypto(principals: Principals, key_id: str, who: str) -> CryptographyClient:
    return CryptographyClient(
        key_id, principals.credential(who), connection_verify=str(principals.server.ca)
    )


# ------------------------------------------------------------------ Python: azure-identity


def test_stock_client_secret_credential_drives_every_rsa_operation(
    principals: Principals, live: LiveServer
) -> None:
    credential = principals.credential()
    client = _keys(principals, credential)
    name = "stock-" + uuid.uuid4().hex[:8]
    created = client.create_rsa_key(name, size=2048, tags={"from": "azure-identity"})
    assert created.key_type == "RSA" and created.key.n is not None and len(created.key.n) == 256
    assert client.get_key(name).id == created.id
    assert name in {p.name for p in client.list_properties_of_keys()}
    assert [p.version for p in client.list_properties_of_key_versions(name)] == [
        created.properties.version
    ]
    secret = os.urandom(32)
    assert created.id is not None
    for who in (APP, CRYPTO):
        crypto = _crypto(principals, created.id, who)
        for wrap in (KeyWrapAlgorithm.rsa_oaep_256, KeyWrapAlgorithm.rsa_oaep):
            wrapped = crypto.wrap_key(wrap, secret)
            assert crypto.unwrap_key(wrap, wrapped.encrypted_key).key == secret
        for algorithm in (EncryptionAlgorithm.rsa_oaep_256, EncryptionAlgorithm.rsa_oaep):
            encrypted = crypto.encrypt(algorithm, secret)
            assert crypto.decrypt(algorithm, encrypted.ciphertext).plaintext == secret
    kept = _crypto(principals, created.id, CRYPTO).wrap_key(KeyWrapAlgorithm.rsa_oaep_256, secret)

    backup = client.backup_key(name)
    deleted = client.begin_delete_key(name).result()
    assert deleted.recovery_id is not None and deleted.recovery_id.endswith(f"/{name}")
    assert name in {d.name for d in client.list_deleted_keys()}
    with pytest.raises(ResourceNotFoundError):
        client.get_key(name)
    assert client.begin_recover_deleted_key(name).result().id == created.id
    client.begin_delete_key(name).result()
    client.purge_deleted_key(name)
    with pytest.raises(ResourceNotFoundError):
        client.get_deleted_key(name)
    restored = client.restore_key_backup(backup)
    assert restored.id == created.id
    unwrapped = _crypto(principals, created.id, CRYPTO).unwrap_key(
        KeyWrapAlgorithm.rsa_oaep_256, kept.encrypted_key
    )
    assert unwrapped.key == secret
    credential.close()
    # The credential found the token endpoint through the tenant's OpenID configuration.
    assert f'"path":"/{TENANT}/v2.0/.well-known/openid-configuration"' in live.log()


def test_default_azure_credential_signs_in_through_the_environment(
    principals: Principals, live: LiveServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AZURE_CLIENT_ID", APP)
    monkeypatch.setenv("AZURE_CLIENT_SECRET", principals.app_secret)
    monkeypatch.setenv("AZURE_TENANT_ID", TENANT)
    monkeypatch.setenv("AZURE_AUTHORITY_HOST", live.url)
    credential = DefaultAzureCredential(
        disable_instance_discovery=True, connection_verify=str(live.ca)
    )
    client = _keys(principals, credential)
    name = "dac-" + uuid.uuid4().hex[:8]
    created = client.create_rsa_key(name, size=2048)
    assert created.id is not None
    secret = os.urandom(32)
    crypto = CryptographyClient(created.id, credential, connection_verify=str(live.ca))
    wrapped = crypto.wrap_key(KeyWrapAlgorithm.rsa_oaep_256, secret)
    assert crypto.unwrap_key(KeyWrapAlgorithm.rsa_oaep_256, wrapped.encrypted_key).key == secret
    client.begin_delete_key(name).result()
    client.purge_deleted_key(name)
    credential.close()


def test_msal_uses_this_servers_instance_discovery(
    principals: Principals, live: LiveServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # requests lets these override the session's CA file; the test trusts only the server's.
    for name in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):
        monkeypatch.delenv(name, raising=False)
    start = live.log_size()
    app = msal.ConfidentialClientApplication(
        APP,
        client_credential=principals.app_secret,
        authority=f"{live.url}/{TENANT}",
        instance_discovery=f"{live.url}/common/discovery/instance",
        verify=str(live.ca),
    )
    result = app.acquire_token_for_client([f"{live.resource}/.default"])
    assert result.get("token_type") == "Bearer", result
    assert app.authority.token_endpoint == f"{live.url}/{TENANT}/oauth2/v2.0/token"
    log = live.log()[start:]
    assert '"path":"/common/discovery/instance"' in log
    assert f'"path":"/{TENANT}/v2.0/.well-known/openid-configuration"' in log


@pytest.mark.parametrize("version", [v.value for v in ApiVersion])
def test_every_sdk_api_version_answers(principals: Principals, version: str) -> None:
    client = _keys(principals, principals.credential(), api_version=version)
    name = "ver-" + version.replace(".", "-")
    created = client.create_rsa_key(name, size=2048)
    assert client.get_key(name).id == created.id
    assert name in {p.name for p in client.list_properties_of_keys()}
    client.begin_delete_key(name).result()
    client.purge_deleted_key(name)


# ------------------------------------------------------------------ raw token requests


def _claims(token: str) -> dict[str, object]:
    payload = token.split(".")[1]
    claims: dict[str, object] = json.loads(base64.urlsafe_b64decode(payload + "=" * 4))
    return claims


def test_client_secret_basic_and_the_v1_endpoint_issue_working_tokens(
    principals: Principals, live: LiveServer
) -> None:
    basic = live.http.post(
        f"{live.url}/{TENANT}/oauth2/v2.0/token",
        auth=(APP, principals.app_secret),
        data={"grant_type": "client_credentials", "scope": f"{live.resource}/.default"},
    )
    assert basic.status_code == 200, basic.text
    v1 = live.http.post(
        f"{live.url}/{TENANT}/oauth2/token",
        data={
            "grant_type": "client_credentials",
            "client_id": APP,
            "client_secret": principals.app_secret,
            "resource": live.resource,
        },
    )
    assert v1.status_code == 200, v1.text
    body = v1.json()
    assert body["resource"] == live.resource and body["token_type"] == "Bearer"
    assert int(body["expires_on"]) - int(body["not_before"]) == int(body["expires_in"])
    principal = live.admin("GET", f"/principals/{APP}").json()
    documents = {
        "v2": live.http.get(f"{live.url}/{TENANT}/v2.0/.well-known/openid-configuration").json(),
        "v1": live.http.get(f"{live.url}/{TENANT}/.well-known/openid-configuration").json(),
    }
    for endpoint, token in (("v2", basic.json()["access_token"]), ("v1", body["access_token"])):
        claims = _claims(token)
        # Each token's issuer is the one its endpoint's OpenID configuration names.
        assert claims["iss"] == documents[endpoint]["issuer"]
        assert claims["tid"] == TENANT and claims["appid"] == APP and claims["azp"] == APP
        assert claims["oid"] == claims["sub"] == principal["ObjectId"]
        assert claims["aud"] == live.resource
        keys = live.http.get(
            f"{live.vault_url(VAULT)}/keys?api-version=7.6",
            headers={"Authorization": f"Bearer {token}"},
        )
        assert keys.status_code == 200, keys.text
    # The v1 endpoint wants resource=, the v2.0 one scope=; a wrong Basic secret is refused.
    no_resource = live.http.post(
        f"{live.url}/{TENANT}/oauth2/token",
        auth=(APP, principals.app_secret),
        data={"grant_type": "client_credentials", "scope": f"{live.resource}/.default"},
    )
    assert no_resource.status_code == 400 and no_resource.json()["error"] == "invalid_resource"
    wrong = live.http.post(
        f"{live.url}/{TENANT}/oauth2/token",
        auth=(APP, "wrong-secret"),
        data={"grant_type": "client_credentials", "resource": live.resource},
    )
    assert wrong.status_code == 401 and wrong.json()["error"] == "invalid_client"


def test_failed_sign_ins_are_throttled_on_the_basic_and_v1_paths(tmp_path: Path) -> None:
    server = start_server(
        tmp_path / "home",
        env={
            "CUSTOMERKEY_TOKEN_SOURCE_FAILURE_BURST": "0",
            "CUSTOMERKEY_TOKEN_CLIENT_FAILURE_BURST": "2",
            "CUSTOMERKEY_TOKEN_CLIENT_FAILURES_PER_MINUTE": "0.001",
        },
    )
    try:
        v1 = f"{server.url}/{TENANT}/oauth2/token"
        form = {"grant_type": "client_credentials", "resource": server.resource}
        for _ in range(2):
            refused = server.http.post(v1, auth=("guess@contoso.com", "wrong"), data=form)
            assert refused.status_code == 401, refused.text
        throttled = server.http.post(v1, auth=("guess@contoso.com", "wrong"), data=form)
        assert throttled.status_code == 429 and "retry-after" in throttled.headers
        posted = server.http.post(
            f"{server.url}/{TENANT}/oauth2/v2.0/token",
            data={
                "grant_type": "client_credentials",
                "client_id": "guess@contoso.com",
                "client_secret": "wrong",
                "scope": f"{server.resource}/.default",
            },
        )
        assert posted.status_code == 429
    finally:
        assert server.stop() == 0
    assert not server.bugs()


def test_discovery_documents_name_this_server(live: LiveServer) -> None:
    v2 = live.http.get(f"{live.url}/{TENANT}/v2.0/.well-known/openid-configuration").json()
    assert v2["issuer"] == f"{live.url}/{TENANT}/v2.0"
    assert v2["token_endpoint"] == f"{live.url}/{TENANT}/oauth2/v2.0/token"
    jwks = live.http.get(v2["jwks_uri"])
    assert jwks.status_code == 200 and jwks.json()["keys"]
    v1 = live.http.get(f"{live.url}/{TENANT}/.well-known/openid-configuration").json()
    assert v1["token_endpoint"] == f"{live.url}/{TENANT}/oauth2/token"
    assert live.http.get(v1["jwks_uri"]).json() == jwks.json()
    common = live.http.get(f"{live.url}/common/v2.0/.well-known/openid-configuration").json()
    assert common["issuer"] == f"{live.url}/{{tenantid}}/v2.0"
    foreign = live.http.get(
        f"{live.url}/common/discovery/instance",
        params={
            "authorization_endpoint": "https://login.microsoftonline.com/x/oauth2/v2.0/authorize"
        },
    )
    assert foreign.status_code == 400 and foreign.json()["error"] == "invalid_instance"
    # On a vault host the keys API keeps its paths: a key named "discovery" is a key.
    shadow = live.http.get(f"{live.vault_url(VAULT)}/keys/discovery/keys?api-version=7.6")
    assert shadow.status_code == 401


# ------------------------------------------------------------------ JavaScript


@pytest.fixture(scope="session")
def node_modules(request: pytest.FixtureRequest) -> Path:
    """A folder with the JS packages installed (pytest's cache; installed once, under a lock
    so that xdist workers wait for one another)."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.fail("node and npm must be installed for the JavaScript SDK test (Node 18+)")
    folder = request.config.cache.mkdir("customerkey-js-sdk")
    manifest = {"name": "customerkey-js-tests", "private": True, "dependencies": JS_PACKAGES}
    wanted = json.dumps(manifest, indent=2, sort_keys=True)
    with (folder / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        stamp = folder / ".installed"
        if not stamp.exists() or stamp.read_text() != wanted:
            (folder / "package.json").write_text(wanted)
            result = subprocess.run(
                [npm, "install", "--no-audit", "--no-fund", "--loglevel=error"],
                cwd=folder,
                capture_output=True,
                text=True,
                timeout=NPM_TIMEOUT,
                env=clean_env(),
            )
            assert result.returncode == 0, f"npm install failed:\n{result.stderr[-4000:]}"
            stamp.write_text(wanted)
    for script in JS_DIR.glob("*.mjs"):
        shutil.copyfile(script, folder / script.name)
    return folder


def test_javascript_sdk_drives_every_rsa_operation(
    principals: Principals, live: LiveServer, node_modules: Path
) -> None:
    node = shutil.which("node")
    assert node is not None
    name = "js-" + uuid.uuid4().hex[:8]
    env = {
        **clean_env(),
        "CK_AUTHORITY": live.url,
        "CK_TENANT": TENANT,
        "CK_CLIENT_ID": APP,
        "CK_CLIENT_SECRET": principals.app_secret,
        "CK_CRYPTO_ID": CRYPTO,
        "CK_CRYPTO_SECRET": principals.crypto_secret,
        "CK_VAULT_URL": live.vault_url(VAULT),
        "CK_DOMAIN": DOMAIN,
        "CK_KEY": name,
        "NODE_EXTRA_CA_CERTS": str(live.ca),
    }
    result = subprocess.run(
        [node, str(node_modules / "keyvault_roundtrip.mjs")],
        cwd=node_modules,
        capture_output=True,
        text=True,
        timeout=180,
        env=env,
    )
    assert result.returncode == 0, f"{result.stdout}\n{result.stderr}"
    seen = json.loads(result.stdout.strip().splitlines()[-1])
    prefix = f"{live.vault_url(VAULT)}/keys/{name}/"
    assert seen["created"].startswith(prefix) and seen["restored"] == seen["created"]
    assert seen["crypto_app"] and seen["crypto_crypto"]


SIGNER = "ident-signer"


@pytest.fixture(scope="module")
def signer(principals: Principals) -> str:
    """A service principal with the six crypto permissions but not ``get``: the JS SDK cannot
    read its keys, so every operation it asks goes to the server. Its secret."""
    secret = principals.server.create_principal(SIGNER, kind="service")
    principals.server.grant(
        VAULT, SIGNER, ["sign", "verify", "encrypt", "decrypt", "wrapKey", "unwrapKey"]
    )
    return secret


def _jwk_int(value: str) -> int:
    return int.from_bytes(base64.b64decode(value))


def test_javascript_sdk_drives_ec_rsa_signatures_rng_and_oct_hsm_keys(
    principals: Principals, signer: str, live: LiveServer, node_modules: Path
) -> None:
    node = shutil.which("node")
    assert node is not None
    prefix = "jskt-" + uuid.uuid4().hex[:8]
    env = {
        **clean_env(),
        "CK_AUTHORITY": live.url,
        "CK_TENANT": TENANT,
        "CK_CLIENT_ID": APP,
        "CK_CLIENT_SECRET": principals.app_secret,
        "CK_SIGNER_ID": SIGNER,
        "CK_SIGNER_SECRET": signer,
        "CK_VAULT_URL": live.vault_url(VAULT),
        "CK_DOMAIN": DOMAIN,
        "CK_PREFIX": prefix,
        "NODE_EXTRA_CA_CERTS": str(live.ca),
    }
    result = subprocess.run(
        [node, str(node_modules / "keyvault_key_types.mjs")],
        cwd=node_modules,
        capture_output=True,
        text=True,
        timeout=180,
        env=env,
    )
    assert result.returncode == 0, f"{result.stdout}\n{result.stderr}"
    seen = json.loads(result.stdout.strip().splitlines()[-1])
    message = base64.b64decode(seen["message"])
    prefix_url = f"{live.vault_url(VAULT)}/keys/{prefix}-"

    # ES256 and ES384 (EC and EC-HSM): each signature the vault made checks out here too.
    curves = {
        "P-256": (ec.SECP256R1(), hashes.SHA256(), 32),
        "P-384": (ec.SECP384R1(), hashes.SHA384(), 48),
    }
    assert [(k["kty"], k["crv"], k["algorithm"]) for k in seen["ec"]] == [
        ("EC", "P-256", "ES256"),
        ("EC", "P-384", "ES384"),
        ("EC-HSM", "P-256", "ES256"),
    ]
    for key in seen["ec"]:
        assert key["kid"].startswith(prefix_url)
        curve, digest, size = curves[key["crv"]]
        public = ec.EllipticCurvePublicNumbers(
            _jwk_int(key["x"]), _jwk_int(key["y"]), curve
        ).public_key()
        assert len(key["signatures"]) == 2
        for signature in map(base64.b64decode, key["signatures"]):
            assert len(signature) == 2 * size
            r, s = int.from_bytes(signature[:size]), int.from_bytes(signature[size:])
            public.verify(encode_dss_signature(r, s), message, ec.ECDSA(digest))

    # PS256 and RS256 with the RSA key's public numbers.
    rsa_key = seen["rsa"]
    assert rsa_key["kid"].startswith(prefix_url) and rsa_key["crypto"] is True
    public_rsa = rsa.RSAPublicNumbers(_jwk_int(rsa_key["e"]), _jwk_int(rsa_key["n"])).public_key()
    pads = {
        "PS256": padding.PSS(padding.MGF1(hashes.SHA256()), 32),
        "RS256": padding.PKCS1v15(),
    }
    assert set(rsa_key["signatures"]) == set(pads)
    for algorithm, pad in pads.items():
        for signature in rsa_key["signatures"][algorithm]:
            public_rsa.verify(base64.b64decode(signature), message, pad, hashes.SHA256())
    # RS256 is deterministic: the app's and the signer's signatures are the same bytes.
    assert len(set(rsa_key["signatures"]["RS256"])) == 1

    # getRandomBytes: three different 32-byte values.
    random = [base64.b64decode(value) for value in seen["random"]]
    assert len(random) == 3 and len(set(random)) == 3
    assert all(len(value) == 32 for value in random)

    # The oct-HSM key sealed with a fresh 12-byte IV and a 16-byte tag each time.
    aes = seen["aes"]
    assert aes["kid"].startswith(prefix_url)
    ivs = {base64.b64decode(aes[who]["iv"]) for who in ("app", "signer")}
    assert len(ivs) == 2 and all(len(iv) == 12 for iv in ivs)
    assert all(len(base64.b64decode(aes[who]["tag"])) == 16 for who in ("app", "signer"))
    created = _keys(principals, principals.credential()).get_key(f"{prefix}-aes")
    assert created.key_type == "oct-HSM" and created.key.k is None
