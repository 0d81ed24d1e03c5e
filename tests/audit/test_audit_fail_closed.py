"""A real ``customerkey serve`` with an audit webhook: it publishes a signed checkpoint as it
starts; while the webhook cannot be written (a checkpoint from any process of the installation
failed), wrapKey over HTTPS fails closed with 503 AuditSinkUnavailable; once a checkpoint gets
through, wrapKey works again, and the checkpoints it published verify against the chain."""

from __future__ import annotations

import base64
import os
import time
from pathlib import Path

import httpx

from customerkey.azure.localdns import install_loopback_resolver, uninstall_loopback_resolver
from customerkey.config import Settings
from customerkey.runtime import Runtime
from customerkey.vault.models import OPERATOR
from tests.support.audit_attacks import Webhook, webhook_server
from tests.support.live_servers import DOMAIN, start_server

VAULT = "audit-sink-vault"
KEY = "audit-sink-key"
CLIENT = "app@contoso.com"


def _first_post(hook: Webhook, timeout: float = 30.0) -> dict[str, object]:
    deadline = time.monotonic() + timeout
    while not hook.bodies:
        assert time.monotonic() < deadline, "the server published no checkpoint as it started"
        time.sleep(0.05)  # polling for the server's first checkpoint
    return hook.bodies[0]


def test_wrap_fails_closed_while_the_webhook_cannot_be_written(tmp_path: Path) -> None:
    home = tmp_path / "home"
    rt = Runtime.open(Settings(home=home, database_url=f"sqlite:///{home / 'customerkey.db'}"))
    try:
        rt.tenants.create(OPERATOR, "contoso", mail_domain="contoso.com")
        rt.vault.create_vault(
            OPERATOR, VAULT, subscription="contoso-sub", region="eastus", tenant="contoso"
        )
        bundle = rt.vault.create_key(OPERATOR, VAULT, KEY, kty="RSA", key_ops=["wrapKey"])
        _, secret = rt.principals.create(OPERATOR, CLIENT, kind="user", tenant="contoso")
        rt.vault.set_access_policy(OPERATOR, VAULT, CLIENT, ["wrapKey"])
    finally:
        rt.close()
    with webhook_server() as hook:
        env = {"CUSTOMERKEY_AUDIT_WEBHOOK_URL": hook.url}
        server = start_server(home, env=env)
        install_loopback_resolver(DOMAIN)
        try:
            started = _first_post(hook)
            token = server.token(CLIENT, secret)
            url = (
                f"{server.vault_url(VAULT)}/keys/{KEY}/{bundle.id.version}/wrapkey?api-version=7.5"
            )
            body = {
                "alg": "RSA-OAEP-256",
                "value": base64.urlsafe_b64encode(os.urandom(32)).decode(),
            }

            def wrap() -> httpx.Response:
                return server.http.post(
                    url, json=body, headers={"Authorization": f"Bearer {token}"}
                )

            assert wrap().status_code == 200
            hook.status = 500
            failed = server.cli("audit", "checkpoint", check=False)
            assert failed.returncode == 1 and "AuditSinkUnavailable" in failed.stderr
            refused = wrap()
            assert refused.status_code == 503, refused.text
            assert refused.json()["error"]["code"] == "AuditSinkUnavailable"
            assert hook.url not in refused.text  # the operator's configuration stays private
            hook.status = 204
            server.cli("audit", "checkpoint")
            assert wrap().status_code == 200
            verified = server.cli_json(
                "audit", "verify", "--checkpoint", str(home / "audit-checkpoints.jsonl")
            )
            assert verified["Ok"] and verified["CheckpointsMatched"] >= 2, verified
        finally:
            uninstall_loopback_resolver(DOMAIN)
            status = server.stop()
        assert status == 0, server.log()[-3000:]
        assert not server.bugs(), server.log()[-3000:]
    assert started["type"] == "customerkey.audit.checkpoint"
