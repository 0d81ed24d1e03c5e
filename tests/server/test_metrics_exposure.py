"""Who may read /metrics and /openapi.json, and what the metrics count (issue 17, item 16).

Real servers: by default /metrics needs the bearer token of ``<home>/metrics.token`` and the
OpenAPI documents are off; ``metrics=loopback`` serves the metrics on a plain-HTTP loopback
port only, and ``openapi=public`` publishes the documents. The metrics count key operations by
result, DEP-key cache lookups and the jobs by kind and state; with two server processes every
scrape, whichever process answers it, shows the requests of both.
"""

from __future__ import annotations

import base64
import re
from pathlib import Path

import httpx
import pytest

from customerkey.identity.workload_principals import EXCHANGE
from tests.support.live_servers import LiveServer, start_server
from tests.support.servers import free_port

API = "api-version=7.5"


def _token(server: LiveServer) -> str:
    return (server.home / "metrics.token").read_text().strip()


def _scrape(server: LiveServer) -> str:
    response = server.http.get(
        f"{server.url}/metrics", headers={"Authorization": f"Bearer {_token(server)}"}
    )
    assert response.status_code == 200, response.text
    return response.text


def _value(text: str, name: str, **labels: str) -> float:
    """The sum of the samples of ``name`` whose labels include ``labels``."""
    total = 0.0
    for line in text.splitlines():
        match = re.match(r"^([a-z_]+)(?:\{(.*)\})? (\S+)$", line)
        if match is None or match[1] != name:
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', match[2] or ""))
        if all(found.get(k) == v for k, v in labels.items()):
            total += float(match[3])
    return total


def test_metrics_need_the_token_of_the_home(live: LiveServer) -> None:
    token_file = live.home / "metrics.token"
    assert token_file.stat().st_mode & 0o777 == 0o600
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": _token(live)}):
        refused = live.http.get(f"{live.url}/metrics", headers=headers)
        assert refused.status_code == 401, refused.text
        assert refused.json()["error"]["code"] == "Unauthorized"
        assert "customerkey_" not in refused.text
    assert "# TYPE customerkey_http_requests_total counter" in _scrape(live)


def test_openapi_documents_are_off_by_default(live: LiveServer) -> None:
    for path in ("/openapi.json", "/docs", "/redoc"):
        assert live.http.get(f"{live.url}{path}").status_code == 404, path


def test_metrics_count_key_operations_cache_lookups_and_jobs(live: LiveServer) -> None:
    before = _scrape(live)
    # Two root keys the mail workload may use, a DEP over them and a mailbox under it.
    uris = []
    for vault in ("metrics-a", "metrics-b"):
        live.create_vault(vault, tenant="contoso")
        live.cli("key", "create", vault, "root", "--ops", "wrapKey,unwrapKey")
        live.grant(vault, EXCHANGE.app_id, ["wrapKey", "unwrapKey", "get"])
        uris.append(f"https://{vault}.vault.azure.net/keys/root")
    body = {"name": "METRICS-DEP", "AzureKeyIDs": uris}
    assert live.admin("POST", "/tenants/contoso/policies", json=body).status_code == 201
    box = {"upn": "metrics@contoso.com", "display_name": "Metrics"}
    assert live.admin("POST", "/tenants/contoso/mailboxes", json=box).status_code == 201
    assigned = live.admin(
        "PUT",
        "/mailboxes/metrics@contoso.com/dataEncryptionPolicy",
        json={"data_encryption_policy": "METRICS-DEP"},
    )
    assert assigned.status_code == 202, assigned.text
    # A client of the keys API: one wrap it may do, one it may not.
    secret = live.create_principal("metrics-app@contoso.com")
    live.grant("metrics-a", "metrics-app@contoso.com", ["wrapKey"])
    token = live.token("metrics-app@contoso.com", secret)
    value = base64.urlsafe_b64encode(b"k" * 32).rstrip(b"=").decode()
    for vault, status in (("metrics-a", 200), ("metrics-b", 403)):
        wrapped = live.http.post(
            f"{live.vault_url(vault)}/keys/root//wrapkey?{API}",
            json={"alg": "RSA-OAEP-256", "value": value},
            headers={"Authorization": f"Bearer {token}"},
        )
        assert wrapped.status_code == status, wrapped.text
    # A job: the DEP's re-wrap after a key roll (queued by the CLI, run by the server's worker).
    live.cli("key", "rotate", "metrics-a", "root")
    live.cli("dep", "refresh", "METRICS-DEP", "--tenant", "contoso", "--no-wait")

    after = _scrape(live)

    def grew(name: str, **labels: str) -> float:
        return _value(after, name, **labels) - _value(before, name, **labels)

    ops = "customerkey_key_operations_total"
    # The DEP's key wrapped by both root keys, and the client's wrap.
    assert grew(ops, operation="wrapKey", result="success") >= 3, after
    assert grew(ops, operation="wrapKey", result="denied") == 1, after
    lookups = "customerkey_dep_key_cache_lookups_total"
    assert grew(lookups, result="hit") + grew(lookups, result="miss") >= 1, after
    assert _value(after, "customerkey_jobs") >= 1, after
    assert "# TYPE customerkey_jobs gauge" in after
    assert "# TYPE customerkey_job_progress_done gauge" in after
    assert "# TYPE customerkey_job_progress_total gauge" in after


def test_loopback_metrics_and_public_openapi(tmp_path: Path) -> None:
    port = free_port()
    server = start_server(
        tmp_path / "home",
        env={
            "CUSTOMERKEY_METRICS": "loopback",
            "CUSTOMERKEY_METRICS_PORT": str(port),
            "CUSTOMERKEY_OPENAPI": "public",
        },
    )
    try:
        assert server.http.get(f"{server.url}/healthz").status_code == 200
        # Plain HTTP on loopback only; not on the HTTPS port, with or without a token.
        scraped = httpx.get(f"http://127.0.0.1:{port}/metrics")
        assert scraped.status_code == 200
        assert _value(scraped.text, "customerkey_http_requests_total", route="/healthz") >= 1
        assert server.http.get(f"{server.url}/metrics").status_code == 404
        assert not (server.home / "metrics.token").exists()
        spec = server.http.get(f"{server.url}/openapi.json")
        assert spec.status_code == 200
        paths = spec.json()["paths"]
        for path in (
            "/api/v1/vaults",
            "/api/v1/vaults/{name}/accessPolicies",
            "/api/v1/audit",
            "/keys/{name}/create",
            "/{tenant}/oauth2/v2.0/token",
            "/healthz",
        ):
            assert path in paths, path
        assert "swagger" in server.http.get(f"{server.url}/docs").text.lower()
    finally:
        assert server.stop() == 0, server.log()[-3000:]


@pytest.mark.parametrize("workers", [2])
def test_every_scrape_sums_all_server_processes(tmp_path: Path, workers: int) -> None:
    server = start_server(
        tmp_path / "home",
        env={"CUSTOMERKEY_METRICS": "public"},
        args=("--workers", str(workers)),
    )
    try:
        verify = server.ssl_context()
        calls = 20
        for _ in range(calls):  # a new connection each: the kernel spreads them over workers
            assert httpx.get(f"{server.url}/healthz", verify=verify).status_code == 200
        seen = set()
        for _ in range(8):
            text = httpx.get(f"{server.url}/metrics", verify=verify).text
            seen.add(_value(text, "customerkey_http_requests_total", route="/healthz"))
        assert len(seen) == 1, seen
        assert seen.pop() >= calls
    finally:
        assert server.stop() == 0, server.log()[-3000:]
