"""An acknowledged crypto operation is durable: a real ``customerkey serve`` is SIGKILLed while
many clients run unwrapKey, and after a restart every operation that got a 200 has its audit
record (found by the ``x-ms-client-request-id`` the client sent, which the record carries) and
its place in the key version's usage count, and ``audit verify`` passes.

The operations of concurrent requests are written by a group commit (``storage.group_commit``),
so this is what proves a response leaves only after the transaction holding its record has
committed: with a committer that answers before committing, acknowledged records go missing
at the kill. SQLite, and PostgreSQL when ``CUSTOMERKEY_TEST_POSTGRES_URL`` is set; the kill
points come from ``random.Random(seed)`` (replay with ``CUSTOMERKEY_CRASH_SEED``), rounds from
``CUSTOMERKEY_DURABLE_CRASH_RUNS`` (default 4).
"""

from __future__ import annotations

import os
import random
import signal
import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from customerkey.azure.localdns import install_loopback_resolver, uninstall_loopback_resolver
from customerkey.config import Settings
from customerkey.crypto.rsa import b64url_encode
from customerkey.storage.database import Database
from customerkey.storage.models import AuditRow, KeyVersionRow
from tests.support.crash_harness import SEED_ENV, pick_seed
from tests.support.live_servers import ADMIN, DOMAIN, LiveServer, start_server
from tests.support.servers import free_port

pytestmark = [pytest.mark.slow, pytest.mark.storage]

API = "api-version=7.5"
RUNS_ENV = "CUSTOMERKEY_DURABLE_CRASH_RUNS"
VAULT = "durable-vault"
KEY = "durable-key"
CLIENTS = 16
# Acknowledged answers a round waits for before its kill point, so the kill lands mid-traffic.
WARM_ACKS = 50


@pytest.fixture
def loopback() -> Iterator[None]:
    install_loopback_resolver(DOMAIN)
    try:
        yield
    finally:
        uninstall_loopback_resolver(DOMAIN)


class Acks:
    def __init__(self) -> None:
        self.ids: list[str] = []
        self.unexpected: list[str] = []
        self.lock = threading.Lock()


def _client(
    server: LiveServer, token: str, url: str, body: dict[str, str], tag: str, acks: Acks
) -> threading.Thread:
    stop = threading.Event()

    def run() -> None:
        n = 0
        with httpx.Client(verify=server.ssl_context(), timeout=15) as client:
            while not stop.is_set():
                n += 1
                rid = f"{tag}-{n}"
                try:
                    answer = client.post(
                        url,
                        json=body,
                        headers={"Authorization": f"Bearer {token}", "x-ms-client-request-id": rid},
                    )
                except (httpx.TransportError, ssl.SSLError, OSError):
                    return  # the server is gone
                with acks.lock:
                    if answer.status_code == 200:
                        acks.ids.append(rid)
                    else:
                        acks.unexpected.append(f"{rid}: {answer.status_code} {answer.text[:200]}")

    thread = threading.Thread(target=run, daemon=True)
    thread.stop = stop  # type: ignore[attr-defined]
    thread.start()
    return thread


def _durable(url: str, version: str) -> tuple[set[str], int]:
    """The request ids of the unwrapKey records, and the version's usage count."""
    db = Database(url)
    try:
        with db.read() as session:
            ids = set(
                session.scalars(
                    select(AuditRow.request_id).where(AuditRow.operation == "KeyUnwrap")
                )
            )
            count = session.scalar(
                select(KeyVersionRow.operation_count).where(KeyVersionRow.version == version)
            )
        return {i for i in ids if i is not None}, int(count or 0)
    finally:
        db.dispose()


def test_sigkill_during_unwraps_loses_no_acknowledged_record(
    tmp_path: Path, loopback: None, db_url: str
) -> None:
    seed = pick_seed()
    rng = random.Random(seed)
    runs = int(os.environ.get(RUNS_ENV, "4"))
    home = tmp_path / "home"
    env = {} if db_url.startswith("sqlite") else {"CUSTOMERKEY_DATABASE_URL": db_url}
    url = Settings(
        home=home, database_url=env.get("CUSTOMERKEY_DATABASE_URL")
    ).resolved_database_url()
    port = free_port()
    server = start_server(home, port=port, log_path=tmp_path / "serve-000.log", env=env)
    kills: list[str] = []
    acked: set[str] = set()

    def context() -> str:
        return (
            f"seed {seed} (replay: {SEED_ENV}={seed}), {len(kills)} kill(s): "
            + "; ".join(kills)
            + f"\nlogs in {tmp_path}"
        )

    try:
        server.add_contoso()
        admin_secret = server.admin_secret
        server.create_vault(VAULT)
        vault = server.vault_url(VAULT)
        token = server.token(ADMIN, server.admin_secret)
        headers = {"Authorization": f"Bearer {token}"}
        created = server.http.post(
            f"{vault}/keys/{KEY}/create?{API}",
            json={"kty": "RSA", "key_size": 2048},
            headers=headers,
        )
        assert created.status_code == 200, created.text
        version = created.json()["key"]["kid"].rsplit("/", 1)[-1]
        wrapped = server.http.post(
            f"{vault}/keys/{KEY}/{version}/wrapkey?{API}",
            json={"alg": "RSA-OAEP-256", "value": b64url_encode(os.urandom(32))},
            headers=headers,
        )
        assert wrapped.status_code == 200, wrapped.text
        body = {"alg": "RSA-OAEP-256", "value": wrapped.json()["value"]}
        unwrap = f"{vault}/keys/{KEY}/{version}/unwrapkey?{API}"
        for round_no in range(1, runs + 1):
            token = server.token(ADMIN, server.admin_secret)
            acks = Acks()
            clients = [
                _client(server, token, unwrap, body, f"r{round_no}-c{c}", acks)
                for c in range(CLIENTS)
            ]
            deadline = time.monotonic() + 60
            while len(acks.ids) < WARM_ACKS and time.monotonic() < deadline:
                time.sleep(0.01)  # waiting for traffic to flow before the kill point
            delay = rng.uniform(0.05, 0.6)
            time.sleep(delay)
            os.kill(server.process.pid, signal.SIGKILL)
            server.process.wait(timeout=30)
            for thread in clients:
                thread.stop.set()  # type: ignore[attr-defined]
            for thread in clients:
                thread.join(timeout=60)
                assert not thread.is_alive(), f"client hung\n{context()}"
            with acks.lock:
                round_acks = set(acks.ids)
                unexpected = list(acks.unexpected)
            kills.append(f"round {round_no}: +{delay:.3f}s, {len(round_acks)} acked")
            assert len(round_acks) >= WARM_ACKS, f"too little traffic\n{context()}"
            assert not unexpected, "non-200 answers:\n" + "\n".join(unexpected[:10]) + context()
            acked |= round_acks
            server = start_server(
                home, port=port, log_path=tmp_path / f"serve-{round_no:03d}.log", env=env
            )
            server.admin_secret = admin_secret
            recorded, count = _durable(url, version)
            lost = sorted(acked - recorded)
            assert not lost, (
                f"{len(lost)} acknowledged unwrapKey without an audit record: {lost[:10]}\n"
                + context()
            )
            # The set-up wrapKey counts too; answered but unacknowledged ones may have committed.
            assert count >= len(acked) + 1, f"usage count {count} < {len(acked) + 1}\n{context()}"
            audit = server.cli("audit", "verify", check=False)
            assert audit.returncode == 0, f"audit verify: {audit.stdout}{audit.stderr}\n{context()}"
            bugs = server.bugs()
            assert not bugs, "unhandled errors after restart:\n" + "\n".join(bugs) + context()
    finally:
        status = server.stop()
        print(f"\nacknowledged means durable: {context()}\n  {len(acked)} unwraps acknowledged")
    assert status == 0, f"the restarted server exited {status} on SIGTERM\n{context()}"
