"""The Host header never ends up in a URL the server hands out (issue 17, item 14).

A real ``customerkey serve``: key ids, recovery ids and next links name the configured domain
and port whatever the Host header says; a Host with userinfo (``vault:8443@evil.example``) is
400, one naming another host or port is 404, and neither answer quotes it. A server told its
public port (behind a load balancer) hands out URLs on that port and answers a Host naming it.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.live_servers import DOMAIN, LiveServer, start_server

VAULT = "host-vault"
KEY = "host-key"
CLIENT = "host-app@contoso.com"
API = "api-version=7.5"


@pytest.fixture(scope="module")
def token(live_server: LiveServer) -> str:
    live_server.create_vault(VAULT)
    secret = live_server.create_principal(CLIENT)
    live_server.grant(VAULT, CLIENT, ["get", "list", "create", "delete", "wrapKey"])
    return live_server.token(CLIENT, secret)


def _call(
    live: LiveServer, method: str, path: str, host: str, token: str, **kwargs: Any
) -> httpx.Response:
    """A request to the server's loopback address with ``host`` as the Host header."""
    headers = {"Host": host, "Authorization": f"Bearer {token}"}
    return live.http.request(
        method, f"https://127.0.0.1:{live.port}{path}", headers=headers, **kwargs
    )


def _assert_refused(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] == code
    assert "evil" not in response.text and "9999" not in response.text


def test_key_ids_recovery_ids_and_next_links_name_the_configured_host(
    live: LiveServer, token: str
) -> None:
    vault_url = live.vault_url(VAULT)
    host = f"{VAULT}.{DOMAIN}:{live.port}"
    for name in (KEY, f"{KEY}-2"):
        made = _call(live, "POST", f"/keys/{name}/create?{API}", host, token, json={"kty": "RSA"})
        assert made.status_code == 200, made.text
        assert made.json()["key"]["kid"].startswith(f"{vault_url}/keys/{name}/")
    # Upper case and a trailing dot name the same vault; the URLs are the canonical ones.
    shouted = f"{VAULT.upper()}.{DOMAIN.upper()}.:{live.port}"
    got = _call(live, "GET", f"/keys/{KEY}?{API}", shouted, token)
    assert got.status_code == 200, got.text
    assert got.json()["key"]["kid"].startswith(f"{vault_url}/keys/{KEY}/")
    listed = _call(live, "GET", f"/keys?{API}&maxresults=1", host, token)
    assert listed.status_code == 200, listed.text
    assert listed.json()["nextLink"].startswith(f"{vault_url}/keys?")
    deleted = _call(live, "DELETE", f"/keys/{KEY}-2?{API}", host, token)
    assert deleted.status_code == 200, deleted.text
    assert deleted.json()["recoveryId"] == f"{vault_url}/deletedkeys/{KEY}-2"
    # The sign-in documents name the host the caller used (one this server answers as).
    for bare in (f"localhost:{live.port}", f"127.0.0.1:{live.port}", f"LOCALHOST.:{live.port}"):
        config = _call(live, "GET", "/contoso/v2.0/.well-known/openid-configuration", bare, token)
        assert config.status_code == 200, config.text
        endpoint = f"https://{bare.lower().replace('.:', ':')}/contoso/oauth2/v2.0/token"
        assert config.json()["token_endpoint"] == endpoint


@pytest.mark.parametrize(
    "host",
    [
        "{vault}.{domain}:{port}@evil.example",
        "{vault}.{domain}:{port}/evil.example",
        "{vault}.{domain}:evil",
        "evil.example:{port} x",
    ],
)
def test_a_malformed_host_is_refused_without_a_url(live: LiveServer, token: str, host: str) -> None:
    named = host.format(vault=VAULT, domain=DOMAIN, port=live.port)
    _assert_refused(_call(live, "GET", f"/keys/{KEY}?{API}", named, token), 400, "BadParameter")
    _assert_refused(_call(live, "GET", f"/keys?{API}", named, token), 400, "BadParameter")


@pytest.mark.parametrize(
    ("host", "path"),
    [
        ("{vault}.{domain}:9999", "/keys/{key}?" + API),  # another port
        ("{vault}.{domain}", "/keys/{key}?" + API),  # no port: 443, not ours
        ("evil.example:{port}", "/contoso/v2.0/.well-known/openid-configuration"),
        ("evil.example:{port}", "/api/v1/vaults"),
    ],
)
def test_a_host_or_port_of_another_server_is_not_found(
    live: LiveServer, token: str, host: str, path: str
) -> None:
    named = host.format(vault=VAULT, domain=DOMAIN, port=live.port)
    response = _call(live, "GET", path.format(key=KEY), named, token)
    _assert_refused(response, 404, "NotFound")


@pytest.fixture(scope="module")
def behind_a_balancer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    home: Path = tmp_path_factory.mktemp("balanced") / "home"
    server = start_server(
        home,
        env={
            "CUSTOMERKEY_PUBLIC_PORT": "443",
            "CUSTOMERKEY_PUBLIC_HOSTS": '["keys.contoso.example"]',
        },
    )
    try:
        yield server
    finally:
        assert server.stop() == 0, server.log()[-3000:]


def test_urls_name_the_public_port_behind_a_load_balancer(behind_a_balancer: LiveServer) -> None:
    server = behind_a_balancer
    server.cli("tenant", "create", "contoso", "--mail-domain", "contoso.com")
    secret = server.cli_json("principal", "create", CLIENT, "--tenant", "contoso")["ClientSecret"]
    server.cli(
        "vault", "create", VAULT, "--subscription", "s", "--region", "eastus", "--tenant", "contoso"
    )
    server.cli("vault", "access", "set", VAULT, "--upn", CLIENT, "--key-permissions", "create")
    # The token's audience is the vaults' resource on the public port: no port for 443.
    issued = server.token_response(CLIENT, secret, scope=f"https://{DOMAIN}/.default")
    assert issued.status_code == 200, issued.text
    token = issued.json()["access_token"]
    # The balancer forwards what the client sent: the vault host without a port (443).
    made = _call(
        server, "POST", f"/keys/{KEY}/create?{API}", f"{VAULT}.{DOMAIN}", token, json={"kty": "RSA"}
    )
    assert made.status_code == 200, made.text
    assert made.json()["key"]["kid"].startswith(f"https://{VAULT}.{DOMAIN}/keys/{KEY}/")
    # A public host name of the bare host is answered too, on the public port.
    config = server.http.get(
        f"https://127.0.0.1:{server.port}/contoso/v2.0/.well-known/openid-configuration",
        headers={"Host": "keys.contoso.example"},
    )
    assert config.status_code == 200, config.text
    assert (
        config.json()["token_endpoint"] == "https://keys.contoso.example/contoso/oauth2/v2.0/token"
    )
