"""``customerkey serve --workers 2``: several HTTP processes behind one port.

The home folder is prepared in-process (a vault, an RSA key, a principal allowed to unwrap),
then the server runs as a subprocess with two workers. Fresh connections (each may land on
either worker) all get correct unwrapKey answers; the usage counter and the audit chain stay
consistent across the processes (one record per operation, a valid chain); SIGTERM stops the
supervisor and its workers with status 0.
"""

from __future__ import annotations

import base64
import os
import signal
import subprocess
from pathlib import Path

import httpx

from customerkey.azure.localdns import install_loopback_resolver, uninstall_loopback_resolver
from customerkey.config import Settings
from customerkey.runtime import Runtime
from customerkey.vault.models import OPERATOR
from tests.support.live_servers import DOMAIN, start_server

VAULT = "workers-vault"
KEY = "workers-key"
CLIENT = "app@contoso.com"


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.append(int(entry.name))
    return found


def test_two_workers_serve_one_port_and_stop_cleanly(tmp_path: Path) -> None:
    home = tmp_path / "home"
    rt = Runtime.open(Settings(home=home, database_url=f"sqlite:///{home / 'customerkey.db'}"))
    try:
        rt.tenants.create(OPERATOR, "contoso", mail_domain="contoso.com")
        rt.vault.create_vault(
            OPERATOR, VAULT, subscription="contoso-sub", region="eastus", tenant="contoso"
        )
        bundle = rt.vault.create_key(
            OPERATOR, VAULT, KEY, kty="RSA", key_ops=["wrapKey", "unwrapKey"]
        )
        _, secret = rt.principals.create(OPERATOR, CLIENT, kind="user", tenant="contoso")
        rt.vault.set_access_policy(OPERATOR, VAULT, CLIENT, ["unwrapKey"])
        plain = os.urandom(32)
        wrapped = rt.vault.wrap_key(
            OPERATOR, VAULT, KEY, bundle.id.version, "RSA-OAEP-256", plain
        ).value
    finally:
        rt.close()
    log_path = tmp_path / "serve.log"
    server = start_server(home, log_path=log_path, args=("--workers", "2"))
    process, port, verify = server.process, server.port, server.ssl_context()
    install_loopback_resolver(DOMAIN)
    try:
        assert len(_children(process.pid)) == 2
        token = httpx.post(
            f"https://localhost:{port}/contoso/oauth2/v2.0/token",
            data={
                "grant_type": "client_credentials",
                "client_id": CLIENT,
                "client_secret": secret,
                "scope": f"https://{DOMAIN}:{port}/.default",
            },
            verify=verify,
        ).json()["access_token"]
        url = (
            f"https://{VAULT}.{DOMAIN}:{port}/keys/{KEY}/{bundle.id.version}"
            "/unwrapkey?api-version=7.5"
        )
        encoded = base64.urlsafe_b64encode(wrapped).rstrip(b"=").decode()
        body = {"alg": "RSA-OAEP-256", "value": encoded}
        calls = 12
        for _ in range(calls):  # a new connection each time
            answer = httpx.post(
                url, json=body, headers={"Authorization": f"Bearer {token}"}, verify=verify
            )
            assert answer.status_code == 200, answer.text
            value = answer.json()["value"]
            assert base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)) == plain
    finally:
        uninstall_loopback_resolver(DOMAIN)
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        try:
            status = process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            raise
    assert status == 0, log_path.read_text()[-3000:]
    assert not _children(process.pid)
    text = log_path.read_text()
    assert "Traceback (most recent" not in text, text[-3000:]
    rt = Runtime.open(Settings(home=home, database_url=f"sqlite:///{home / 'customerkey.db'}"))
    try:
        usage = rt.vault.key_usage(OPERATOR, VAULT, KEY)
        # the wrap made in-process, then one count per unwrap whichever worker served it
        assert usage[0].operation_count == calls + 1
        with rt.db.transaction() as session:
            verification = rt.audit.verify(session)
            unwraps = [r for r in rt.audit.records(session) if r.operation == "KeyUnwrap"]
        assert verification.ok, verification.problems
        assert len(unwraps) == calls
    finally:
        rt.close()
