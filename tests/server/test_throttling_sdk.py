"""Per-vault throttling (``api.throttle``) through a real ``customerkey serve``.

The server runs with ``CUSTOMERKEY_THROTTLE=keyvault*0.01``: 40 units of "other transactions"
per vault and tenant (a software RSA-2048 call costs 1, an RSA-HSM 4096 one 16), refilling at
4 a second, and one create per 10 seconds. Each test uses vaults of its own, so the order of
the tests does not matter. The checks:

- a burst through plain httpx: the first 40 calls pass, then 429 with ``Retry-After`` and Key
  Vault's ``{"error": {"code": "Throttled", ...}}``; requests without a valid token spend
  nothing; an RSA-HSM 4096 key, learnt from its create answer, costs 16;
- the unmodified Azure SDK (``KeyClient``, ``CryptographyClient``) completes a burst larger
  than the budget, retrying on the 429s after ``Retry-After`` (counted in the access log);
- one tenant's throttled vault does not hold back another tenant's vault, and a principal of
  another tenant calling a vault cannot spend that vault's budget.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from azure.keyvault.keys import KeyClient
from azure.keyvault.keys.crypto import CryptographyClient, KeyWrapAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from tests.support.live_servers import TENANT, contoso_server

if TYPE_CHECKING:
    from tests.support.live_servers import LiveServer

API = "7.5"
APP = "app@contoso.com"
FABRIKAM = "fabrikam"
FABRIKAM_ADMIN = "admin@fabrikam.com"
FABRIKAM_APP = "app@fabrikam.com"
BUDGET = 40  # keyvault*0.01: 4,000 * 0.01 software RSA-2048 calls per 10 seconds


@dataclass
class Throttled:
    server: LiveServer
    secrets: dict[str, str]

    def token(self, client_id: str, tenant: str = TENANT) -> str:
        return self.server.token(client_id, self.secrets[client_id], tenant=tenant)

    def call(
        self, vault: str, method: str, path: str, token: str | None, **kwargs: Any
    ) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return self.server.http.request(
            method,
            f"{self.server.vault_url(vault)}{path}",
            params={"api-version": API},
            headers=headers,
            **kwargs,
        )

    def create_key(self, vault: str, name: str, token: str, **body: Any) -> dict[str, Any]:
        sent = {"kty": "RSA", "key_size": 2048, **body}
        response = self.call(vault, "POST", f"/keys/{name}/create", token, json=sent)
        assert response.status_code == 200, response.text
        created: dict[str, Any] = response.json()
        return created

    def statuses(self, vault: str, path: str, token: str | None, times: int) -> list[int]:
        return [self.call(vault, "GET", path, token).status_code for _ in range(times)]

    def first_refusal(
        self, vault: str, method: str, path: str, token: str, **kwargs: Any
    ) -> httpx.Response:
        """The first 429 of up to ``BUDGET`` calls. The bucket refills while they run (4 units
        a second), so the call right after the budget is spent may still pass."""
        for _ in range(BUDGET):
            response = self.call(vault, method, path, token, **kwargs)
            if response.status_code == 429:
                return response
            assert response.status_code == 200, response.text
        raise AssertionError(f"{method} {path} was never throttled")

    def vault(
        self, name: str, *, admin_token: str | None = None, grant: str = APP, sub: str = "c-sub"
    ) -> None:
        body = {"name": name, "subscription": sub, "region": "eastus"}
        created = self.server.admin("POST", "/vaults", token=admin_token, json=body)
        assert created.status_code == 201, created.text
        policy = {"object_id": grant, "key_permissions": ["all"]}
        granted = self.server.admin(
            "PUT", f"/vaults/{name}/accessPolicies", token=admin_token, json=policy
        )
        assert granted.status_code == 200, granted.text


@pytest.fixture(scope="module")
def throttled(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Throttled]:
    home = tmp_path_factory.mktemp("throttle") / "home"
    with contoso_server(home, env={"CUSTOMERKEY_THROTTLE": "keyvault*0.01"}) as server:
        secrets = {APP: server.create_principal(APP)}
        server.cli("tenant", "create", FABRIKAM, "--mail-domain", "fabrikam.com")
        for upn, roles in ((FABRIKAM_ADMIN, ["--roles", "tenant-admin"]), (FABRIKAM_APP, [])):
            view = server.cli_json("principal", "create", upn, "--tenant", FABRIKAM, *roles)
            secrets[upn] = view["ClientSecret"]
        yield Throttled(server, secrets)


@pytest.fixture
def world(throttled: Throttled, live: LiveServer) -> Throttled:
    """The set-up, checked for server-side errors after each test."""
    return throttled


def _throttled_vaults(server: LiveServer, since: int, vault: str) -> int:
    """429 answers the access log holds after byte ``since`` for requests to ``vault``."""
    count = 0
    for line in server.log()[since:].splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        host = str(record.get("host") or "")
        if record.get("status") == 429 and host.startswith(f"{vault}."):
            count += 1
    return count


def test_a_burst_is_answered_429_with_retry_after_and_key_vaults_body(world: Throttled) -> None:
    token = world.token(APP)
    world.vault("thr-burst")
    world.create_key("thr-burst", "k", token)
    # Requests without a valid token are refused before the throttle and spend nothing.
    assert set(world.statuses("thr-burst", "/keys/k", None, 2 * BUDGET)) == {401}
    assert set(world.statuses("thr-burst", "/keys/k", "not-a-token", BUDGET)) == {401}

    assert world.statuses("thr-burst", "/keys/k", token, BUDGET) == [200] * BUDGET
    refused = world.first_refusal("thr-burst", "GET", "/keys/k", token)
    assert refused.headers["retry-after"] == "1"  # under 1 unit short at 4 a second
    assert refused.json() == {
        "error": {
            "code": "Throttled",
            "message": "Request was not processed because too many requests were received "
            "for vault 'thr-burst'. Retry after 1 seconds.",
        }
    }
    # Every keys-API route is counted: a crypto operation and a listing are refused too.
    value = {"alg": "RSA-OAEP-256", "value": "AAAA"}
    wrap = world.first_refusal("thr-burst", "POST", "/keys/k//wrapkey", token, json=value)
    assert wrap.json()["error"]["code"] == "Throttled"
    assert world.first_refusal("thr-burst", "GET", "/keys", token).json()["error"]["code"] == (
        "Throttled"
    )
    # The admin API and the token endpoint are not.
    assert world.server.admin("GET", "/vaults/thr-burst").status_code == 200
    assert world.token(APP)


def test_an_rsa_hsm_4096_key_costs_sixteen_units(world: Throttled) -> None:
    token = world.token(APP)
    world.vault("thr-weight")
    created = world.create_key("thr-weight", "big", token, kty="RSA-HSM", key_size=4096)
    assert created["key"]["kty"] == "RSA-HSM"
    # The create answer taught the throttle the key's class: 40 units pay for two calls.
    assert world.statuses("thr-weight", "/keys/big", token, 2) == [200, 200]
    refused = world.call("thr-weight", "GET", "/keys/big", token)
    assert refused.status_code == 429
    assert refused.headers["retry-after"] == "2"  # 8 units short at 4 a second
    # A second create within 10 seconds waits for the create budget (0.2 creates a second).
    again = world.call("thr-weight", "POST", "/keys/other/create", token, json={"kty": "RSA"})
    assert again.status_code == 429
    # 10 seconds after the first create began, less the time its 4096-bit key took to make.
    assert 5 <= int(again.headers["retry-after"]) <= 10


def test_the_azure_sdk_completes_a_burst_by_retrying_after_429(world: Throttled) -> None:
    world.vault("thr-sdk")
    credential = world.server.credential(APP, world.secrets[APP])
    ca = str(world.server.ca)
    since = world.server.log_size()
    try:
        keys = KeyClient(world.server.vault_url("thr-sdk"), credential, connection_verify=ca)
        key = keys.create_rsa_key("sdk-key", size=2048)
        assert key.key.n is not None and key.key.e is not None
        public = rsa.RSAPublicNumbers(
            int.from_bytes(key.key.e, "big"), int.from_bytes(key.key.n, "big")
        ).public_key()
        oaep = padding.OAEP(
            mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None
        )
        secrets = [os.urandom(32) for _ in range(BUDGET + 20)]
        crypto = CryptographyClient(key, credential, connection_verify=ca)
        unwrapped = [
            crypto.unwrap_key(KeyWrapAlgorithm.rsa_oaep_256, public.encrypt(secret, oaep)).key
            for secret in secrets
        ]
        assert unwrapped == secrets
        assert len({k.name for k in keys.list_properties_of_keys()}) == 1
    finally:
        credential.close()
    # Every call succeeded for the SDK, yet the server refused some of them first.
    assert _throttled_vaults(world.server, since, "thr-sdk") >= 1


def test_one_tenants_throttled_vault_does_not_hold_back_another_tenants(world: Throttled) -> None:
    contoso = world.token(APP)
    fabrikam_admin = world.token(FABRIKAM_ADMIN, FABRIKAM)
    fabrikam = world.token(FABRIKAM_APP, FABRIKAM)
    world.vault("thr-busy")
    world.vault("thr-quiet", admin_token=fabrikam_admin, grant=FABRIKAM_APP, sub="f-sub")
    world.create_key("thr-busy", "k", contoso)
    world.create_key("thr-quiet", "k", fabrikam)

    # A fabrikam principal hammering contoso's vault is refused (it has no access) and then
    # throttled in a budget of its own: contoso's is untouched.
    foreign = world.statuses("thr-busy", "/keys/k", fabrikam, 2 * BUDGET)
    assert foreign[:BUDGET] == [403] * BUDGET and 429 in foreign[BUDGET:]
    assert world.statuses("thr-busy", "/keys/k", contoso, BUDGET) == [200] * BUDGET

    # contoso's vault is now throttled; fabrikam's vault answers every call meanwhile.
    busy, quiet = [], []
    for _ in range(BUDGET):
        busy.append(world.call("thr-busy", "GET", "/keys/k", contoso).status_code)
        quiet.append(world.call("thr-quiet", "GET", "/keys/k", fabrikam).status_code)
    assert quiet == [200] * BUDGET
    assert busy.count(429) >= BUDGET // 2
