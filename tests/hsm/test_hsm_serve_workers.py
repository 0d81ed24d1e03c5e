"""``customerkey serve --workers 2`` with this session's SoftHSM2 token: each worker opens the
module, logs in and keeps sessions of its own after the fork. An RSA-HSM key made through one
request (one worker) is used over many new connections (each may land on either worker):
every unwrapKey and sign answers correctly, the access lines name both worker pids (children
of the supervisor) among those that answered, and SIGTERM stops everything with status 0."""

from __future__ import annotations

import base64
import hashlib
import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa, utils

from customerkey.azure.localdns import install_loopback_resolver, uninstall_loopback_resolver
from tests.support.live_servers import DOMAIN, start_server
from tests.support.softhsm import SoftHsm

VAULT = "hsm-workers"
KEY = "shared-root"
APP = "workers-app@contoso.com"
CALLS = 24


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _children(pid: int) -> set[int]:
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.add(int(entry.name))
    return found


def test_two_workers_share_the_tokens_keys(softhsm: SoftHsm, tmp_path: Path) -> None:
    server = start_server(tmp_path / "home", env=softhsm.env(), args=("--workers", "2"))
    install_loopback_resolver(DOMAIN)
    try:
        workers = _children(server.process.pid)
        assert len(workers) == 2
        for pid in workers:  # each its own PKCS#11 initialisation and login after the fork
            line = f"(pid {pid}): PKCS#11 module initialised and logged in by this process"
            assert line in server.log_after(0, line), server.log()
        server.add_contoso()
        server.create_vault(VAULT)
        secret = server.create_principal(APP)
        server.grant(VAULT, APP, ["all"])
        token = server.token(APP, secret)
        auth = {"Authorization": f"Bearer {token}"}
        base = f"{server.vault_url(VAULT)}/keys/{KEY}"
        made = server.http.post(
            f"{base}/create?api-version=7.5",
            json={"kty": "RSA-HSM", "key_size": 2048},
            headers=auth,
        )
        assert made.status_code == 200, made.text
        jwk = made.json()["key"]
        assert jwk["kty"] == "RSA-HSM"
        public = rsa.RSAPublicNumbers(
            int.from_bytes(_unb64(jwk["e"]), "big"), int.from_bytes(_unb64(jwk["n"]), "big")
        ).public_key()
        oaep = padding.OAEP(padding.MGF1(hashes.SHA256()), hashes.SHA256(), None)
        since = server.log_size()
        for i in range(CALLS):
            secret_key = os.urandom(32)
            digest = hashlib.sha256(b"call %d" % i).digest()
            with httpx.Client(verify=server.ssl_context(), timeout=30) as fresh:  # new connection
                unwrapped = fresh.post(
                    f"{jwk['kid']}/unwrapkey?api-version=7.5",
                    json={"alg": "RSA-OAEP-256", "value": _b64(public.encrypt(secret_key, oaep))},
                    headers=auth,
                )
            assert unwrapped.status_code == 200, unwrapped.text
            assert _unb64(unwrapped.json()["value"]) == secret_key
            with httpx.Client(verify=server.ssl_context(), timeout=30) as fresh:
                signed = fresh.post(
                    f"{jwk['kid']}/sign?api-version=7.5",
                    json={"alg": "RS256", "value": _b64(digest)},
                    headers=auth,
                )
            assert signed.status_code == 200, signed.text
            public.verify(
                _unb64(signed.json()["value"]),
                digest,
                padding.PKCS1v15(),
                utils.Prehashed(hashes.SHA256()),
            )

        # Concurrent requests inside each worker: its PKCS#11 calls take turns (one lock per
        # process), so none fails and no worker dies.
        def hammer(_: int) -> list[int]:
            codes = []
            with httpx.Client(verify=server.ssl_context(), timeout=60) as client:
                for i in range(12):
                    digest = hashlib.sha256(b"concurrent %d" % i).digest()
                    answer = client.post(
                        f"{jwk['kid']}/sign?api-version=7.5",
                        json={"alg": "RS256", "value": _b64(digest)},
                        headers=auth,
                    )
                    codes.append(answer.status_code)
            return codes

        with ThreadPoolExecutor(8) as pool:
            codes = [code for got in pool.map(hammer, range(8)) for code in got]
        assert codes == [200] * len(codes)
        server.log_after(since, "/sign")
        answered: dict[str, set[int]] = {"unwrapkey": set(), "sign": set()}
        text = server.log()[since:]
        for line in text.splitlines():
            if not line.startswith("{"):
                continue
            entry = json.loads(line)
            path = str(entry.get("path", ""))
            operation = path.rsplit("/", 1)[-1]
            if entry.get("logger") == "customerkey.access" and operation in answered:
                assert entry["status"] == 200, entry
                answered[operation].add(int(entry["pid"]))
        assert answered["unwrapkey"] | answered["sign"] == workers, (answered, workers)
    finally:
        uninstall_loopback_resolver(DOMAIN)
        status = server.stop()
    assert status == 0, server.log()[-3000:]
    assert not _children(server.process.pid)
    assert not server.bugs(), server.bugs()
    assert "exited with status" not in server.log(), server.log()[-3000:]  # no worker restarted


def test_threads_of_one_process_take_turns_at_the_token(softhsm: SoftHsm, tmp_path: Path) -> None:
    """What each worker's request threads do at once, in-process: every call answers right
    (unserialised, SoftHSM corrupts its heap and the process dies)."""
    from customerkey.config import Settings
    from customerkey.runtime import Runtime
    from customerkey.vault.models import OPERATOR

    home = tmp_path / "home"
    rt = Runtime.open(
        Settings(
            home=home,
            database_url=f"sqlite:///{home / 'customerkey.db'}",
            pkcs11_module=softhsm.module,
            pkcs11_token_label=softhsm.label,
            pkcs11_pin_file=softhsm.pin_file,
        )
    )
    try:
        rt.vault.create_vault(OPERATOR, VAULT, subscription="sub-1", region="eastus")
        version = rt.vault.create_key(OPERATOR, VAULT, KEY, kty="RSA-HSM").id.version
        plain = os.urandom(32)
        wrapped = rt.vault.wrap_key(OPERATOR, VAULT, KEY, version, "RSA-OAEP-256", plain).value

        def unwrap(_: int) -> bool:
            return all(
                rt.vault.unwrap_key(OPERATOR, VAULT, KEY, version, "RSA-OAEP-256", wrapped).value
                == plain
                for _ in range(40)
            )

        with ThreadPoolExecutor(4) as pool:
            assert all(pool.map(unwrap, range(4)))
    finally:
        rt.close()
