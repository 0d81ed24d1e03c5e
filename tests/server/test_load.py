"""A bounded mixed load against a real ``customerkey serve`` on loopback, over verified TLS.

Threads run side by side for ``CUSTOMERKEY_LOAD_SECONDS`` (default 24; each loop is also
bounded by a count): keys-API unwraps and key gets as the mail workload, admin-API reads
(vault, DEPs, mailbox statistics and item lists, files policy, audit) and mailbox item reads
checked byte for byte as the tenant admin, file uploads and downloads through the files API,
and mail writes in this process (the admin API has no endpoint that adds a message) through a
``Runtime`` opened on the server's home folder and SQLite database. A third of the way in, a
root key gets a new version and both rolls start while the load goes on: ``customerkey dep
refresh --no-wait`` (the CLI, handing the re-wrap to the server's worker) and a files roll
through the admin API. The test requires:

- zero errors: every response is the status its request expects (all 2xx here: the load makes
  no request that should be refused);
- both jobs succeed before the load ends, and what they re-wrapped reads back;
- memory is stable: the server's RSS (``VmRSS`` from ``/proc/<pid>/status``, sampled every
  second) averaged over the last third of the run after a warm-up is at most 30% above the
  average of the first third.

It prints the throughput per kind of operation and the RSS figures (visible with ``-s``). The
full ten-minute form, documented in docs/SECURITY.md::

    CUSTOMERKEY_LOAD_SECONDS=600 pytest tests/server/test_load.py -s
"""

from __future__ import annotations

import email.message
import os
import random
import threading
import time
import traceback
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from customerkey.config import Settings
from customerkey.crypto.rsa import b64url_decode, b64url_encode
from customerkey.identity.workload_principals import EXCHANGE, SHAREPOINT
from customerkey.runtime import Runtime
from customerkey.vault.models import OPERATOR
from customerkey.workloads.files.jobs import ROLL_JOB
from customerkey.workloads.mail.jobs import REFRESH_JOB

if TYPE_CHECKING:
    from tests.support.live_servers import LiveServer

LOAD_SECONDS = float(os.environ.get("CUSTOMERKEY_LOAD_SECONDS", "24"))
MAX_OPS = 2_000_000  # per thread: every loop is bounded by a count as well as by time
WARMUP = min(6.0, LOAD_SECONDS / 4)
RSS_GROWTH = 1.30
VAULT_A, VAULT_B = "load-vault-a", "load-vault-b"
KEY_A, KEY_B = "load-key-a", "load-key-b"
URI_A = f"https://{VAULT_A}.vault.azure.net/keys/{KEY_A}"
URI_B = f"https://{VAULT_B}.vault.azure.net/keys/{KEY_B}"
READS, WRITES = "reads@contoso.com", "writes@contoso.com"
SITE = "https://contoso.sharepoint.local/sites/load"
API = "7.5"


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for pid {pid}")


def message(n: int, upn: str) -> bytes:
    msg = email.message.EmailMessage()
    msg["From"] = f"sender{n}@fabrikam.com"
    msg["To"] = upn
    msg["Subject"] = f"load message {n}"
    msg.set_content(f"body of message {n}\n" + "some words of mail " * (20 + n % 50))
    return bytes(msg)


class UnexpectedResponse(AssertionError):
    pass


def expect(response: httpx.Response, *statuses: int) -> httpx.Response:
    if response.status_code not in statuses:
        raise UnexpectedResponse(
            f"{response.request.method} {response.request.url.path} -> "
            f"{response.status_code}: {response.text[:300]}"
        )
    return response


@dataclass
class Load:
    live: LiveServer
    stop_at: float
    ops: Counter[str] = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    written: deque[tuple[str, bytes]] = field(default_factory=lambda: deque(maxlen=200))

    def client(self) -> httpx.Client:
        return httpx.Client(verify=self.live.ssl_context(), timeout=60)

    def run(self, name: str, step: Callable[[int], None], *, per_second: float = 0.0) -> None:
        """Call ``step`` until the deadline (or MAX_OPS), paced to ``per_second`` if given."""
        started = time.monotonic()
        for n in range(MAX_OPS):
            if time.monotonic() >= self.stop_at:
                return
            try:
                step(n)
            except Exception as exc:  # every failure is counted and reported
                detail = "".join(traceback.format_exception_only(type(exc), exc)).strip()
                with self.lock:
                    self.errors.append(f"{name}: {detail}")
                    if len(self.errors) > 50:
                        return
            else:
                with self.lock:
                    self.ops[name] += 1
            if per_second:
                pause = started + (n + 1) / per_second - time.monotonic()
                if pause > 0:
                    time.sleep(min(pause, max(self.stop_at - time.monotonic(), 0)))  # pacing


@dataclass
class World:
    tokens: dict[str, str]
    versions: dict[str, str]
    wrapped: list[tuple[str, bytes]]
    items: dict[str, bytes]
    site_id: str
    files: dict[str, bytes]


def _headers(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def setup_world(live: LiveServer, rt: Runtime) -> World:
    _, secret = rt.principals.create(
        OPERATOR, "ops@platform.example", tenant="platform", roles=["operator"]
    )
    assert secret is not None
    operator = live.token("ops@platform.example", secret, tenant="platform")
    workload = live.token(
        EXCHANGE.app_id, rt.principals.reset_secret(OPERATOR, EXCHANGE.app_id), tenant="contoso"
    )
    expect(
        live.admin(
            "POST",
            "/tenants",
            token=operator,
            json={"name": "northwind", "mail_domain": "northwind.com"},
        ),
        201,
    )  # (contoso itself was made with the server)
    versions = {}
    for vault, key, region in ((VAULT_A, KEY_A, "eastus"), (VAULT_B, KEY_B, "westus")):
        live.create_vault(vault, region=region)
        created = live.http.post(
            f"{live.vault_url(vault)}/keys/{key}/create?api-version={API}",
            json={"kty": "RSA-HSM", "key_size": 2048, "key_ops": ["wrapKey", "unwrapKey"]},
            headers=_headers(operator),
        )
        versions[key] = expect(created, 200).json()["key"]["kid"].rsplit("/", 1)[1]
        for workload_principal in (EXCHANGE, SHAREPOINT):
            live.grant(vault, workload_principal.app_id, ["wrapKey", "unwrapKey", "get"])
    expect(
        live.admin(
            "POST",
            "/tenants/contoso/policies",
            json={"name": "NA-DEP", "AzureKeyIDs": [URI_A, URI_B]},
        ),
        201,
    )
    for upn in (READS, WRITES):
        body = {"upn": upn, "data_encryption_policy": "NA-DEP"}
        expect(live.admin("POST", "/tenants/contoso/mailboxes", json=body), 201)
    items = {}
    for n in range(20):
        data = message(n, READS)
        items[rt.mail.add_message(OPERATOR, READS, data).id] = data
    site = expect(live.admin("POST", "/tenants/contoso/sites", json={"Url": SITE}), 201).json()
    registered = live.admin(
        "POST",
        "/tenants/contoso/files/policy",
        json={"PrimaryKeyId": URI_A, "SecondaryKeyId": URI_B},
    )
    wait_job(live, operator, expect(registered, 202).json()["job"]["Id"], timeout=60)
    files = {}
    for n in range(4):
        path, data = f"Shared Documents/load-{n}.bin", os.urandom(16 << 10)
        put = live.admin("PUT", f"/sites/{site['SiteId']}/files/{path}", content=data)
        expect(put, 201)
        files[path] = data
    wrapped = []
    for _ in range(8):
        value = os.urandom(32)
        response = live.http.post(
            f"{live.vault_url(VAULT_A)}/keys/{KEY_A}/{versions[KEY_A]}/wrapkey?api-version={API}",
            json={"alg": "RSA-OAEP-256", "value": b64url_encode(value)},
            headers=_headers(workload),
        )
        wrapped.append((expect(response, 200).json()["value"], value))
    tokens = {"operator": operator, "workload": workload, "admin": live.admin_token}
    return World(tokens, versions, wrapped, items, site["SiteId"], files)


def wait_job(live: LiveServer, token: str, job_id: str, *, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job: dict[str, Any] = expect(live.admin("GET", f"/jobs/{job_id}", token=token), 200).json()
        if job["State"] in ("succeeded", "failed"):
            assert job["State"] == "succeeded", job
            return job
        time.sleep(0.2)  # polling the job that the server's worker runs
    raise AssertionError(f"job {job_id} did not finish within {timeout} s")


def test_mixed_load_zero_errors_jobs_finish_memory_stable(live: LiveServer) -> None:
    rt = Runtime.open(Settings(home=live.home))  # the server's home and SQLite database
    try:
        world = setup_world(live, rt)
        run_load(live, rt, world)
    finally:
        rt.close()


def run_load(live: LiveServer, rt: Runtime, world: World) -> None:
    pid = live.process.pid
    started = time.monotonic()
    load = Load(live, stop_at=started + LOAD_SECONDS)
    rng = random.Random(7)
    samples: list[tuple[float, int]] = []
    sampling = threading.Event()

    def sample() -> None:
        while not sampling.wait(1.0):  # pacing: one sample a second
            samples.append((time.monotonic() - started, rss_kib(pid)))

    def keys_url(vault: str, key: str) -> str:
        return f"{live.vault_url(vault)}/keys/{key}"

    def unwrapper() -> Callable[[int], None]:
        http = load.client()
        url = f"{keys_url(VAULT_A, KEY_A)}/{world.versions[KEY_A]}/unwrapkey?api-version={API}"

        def step(n: int) -> None:
            wrapped, value = world.wrapped[n % len(world.wrapped)]
            response = http.post(
                url,
                json={"alg": "RSA-OAEP-256", "value": wrapped},
                headers=_headers(world.tokens["workload"]),
            )
            assert b64url_decode(expect(response, 200).json()["value"]) == value

        return step

    def key_getter() -> Callable[[int], None]:
        http = load.client()

        def step(n: int) -> None:
            vault, key = ((VAULT_A, KEY_A), (VAULT_B, KEY_B))[n % 2]
            response = http.get(
                f"{keys_url(vault, key)}?api-version={API}",
                headers=_headers(world.tokens["workload"]),
            )
            assert expect(response, 200).json()["key"]["kid"].startswith(live.vault_url(vault))

        return step

    def admin_reader() -> Callable[[int], None]:
        http = load.client()
        paths = [
            f"/vaults/{VAULT_A}",
            "/tenants/contoso/policies",
            f"/mailboxes/{READS}/statistics",
            f"/mailboxes/{READS}/items",
            "/tenants/contoso/files/policy",
            f"/sites/{world.site_id}/files",
            "/audit?limit=20",
        ]

        def step(n: int) -> None:
            path = paths[n % len(paths)]
            response = http.get(f"{live.url}/api/v1{path}", headers=_headers(world.tokens["admin"]))
            expect(response, 200)
            if path.endswith("/items"):
                assert {i["Id"] for i in response.json()["value"]} == set(world.items)

        return step

    def mail_reader() -> Callable[[int], None]:
        http = load.client()
        ids = sorted(world.items)

        def step(n: int) -> None:
            if n % 4 == 3 and load.written:
                item_id, data = load.written[rng.randrange(len(load.written))]
                upn = WRITES
            else:
                item_id, upn = ids[n % len(ids)], READS
                data = world.items[item_id]
            response = http.get(
                f"{live.url}/api/v1/mailboxes/{upn}/items/{item_id}",
                headers=_headers(world.tokens["admin"]),
            )
            assert expect(response, 200).content == data

        return step

    def mail_writer(n: int) -> None:
        data = message(1000 + n, WRITES)
        item = rt.mail.add_message(OPERATOR, WRITES, data)
        load.written.append((item.id, data))

    def file_io() -> Callable[[int], None]:
        http = load.client()
        base = f"{live.url}/api/v1/sites/{world.site_id}/files"

        def step(n: int) -> None:
            path = f"Shared Documents/load-{n % len(world.files)}.bin"
            if n % 2 == 0:
                data = os.urandom(16 << 10)
                response = http.put(
                    f"{base}/{path}", content=data, headers=_headers(world.tokens["admin"])
                )
                expect(response, 201)
                world.files[path] = data
            else:
                response = http.get(f"{base}/{path}", headers=_headers(world.tokens["admin"]))
                assert expect(response, 200).content == world.files[path]

        return step

    threads = [
        threading.Thread(target=sample, name="rss", daemon=True),
        *(
            threading.Thread(target=load.run, args=(name, step), kwargs=pace, name=name)
            for name, step, pace in (
                ("unwrap", unwrapper(), {}),
                ("unwrap", unwrapper(), {}),
                ("get key", key_getter(), {}),
                ("admin read", admin_reader(), {}),
                ("mail read", mail_reader(), {}),
                ("mail write (in-process)", mail_writer, {"per_second": 10.0}),
                ("file put/get", file_io(), {"per_second": 6.0}),
            )
        ),
    ]
    for thread in threads:
        thread.start()
    try:
        jobs = roll_in_the_middle(live, world, started)
    finally:
        for thread in threads[1:]:
            thread.join(timeout=LOAD_SECONDS + 120)
        sampling.set()
        threads[0].join(timeout=5)
    elapsed = time.monotonic() - started
    assert not any(t.is_alive() for t in threads), "a load thread did not stop"
    assert not load.errors, f"{len(load.errors)} errors:\n" + "\n".join(load.errors[:20])

    # the rolls did what they say: the mailboxes moved to the new generation, files too
    admin = world.tokens["admin"]
    policy = expect(live.admin("GET", "/tenants/contoso/policies/NA-DEP", token=admin), 200)
    current = policy.json()["CurrentKeyGenerationId"]
    for upn in (READS, WRITES):
        stats = expect(live.admin("GET", f"/mailboxes/{upn}/statistics", token=admin), 200)
        assert stats.json()["DataEncryptionPolicyID"] == current
    files_policy = expect(live.admin("GET", "/tenants/contoso/files/policy", token=admin), 200)
    assert files_policy.json()["State"] == "Registered"
    assert files_policy.json()["KeyGenerations"] == 2
    assert files_policy.json()["SecondaryKeyVersion"] == jobs["new version"]

    total = sum(load.ops.values())
    kinds = {"unwrap", "get key", "admin read", "mail read", "mail write (in-process)"}
    assert kinds | {"file put/get"} <= set(load.ops), load.ops
    warm = [kib for t, kib in samples if t >= WARMUP]
    assert len(warm) >= 6, f"only {len(warm)} RSS samples after the warm-up"
    third = len(warm) // 3
    first, last = sum(warm[:third]) / third, sum(warm[-third:]) / third
    lines = [f"load: {elapsed:.1f} s, {total} operations, {total / elapsed:.0f} ops/s, 0 errors"]
    lines += [f"  {k:24s} {n:7d} {n / elapsed:8.1f}/s" for k, n in sorted(load.ops.items())]
    lines.append(f"  refresh job {jobs['refresh s']:.1f} s, files roll {jobs['roll s']:.1f} s")
    mib = [kib / 1024 for kib in (samples[0][1], first, last, samples[-1][1])]
    lines.append(
        "  server RSS MiB: start {:.1f}, first third {:.1f}, last third {:.1f}, end {:.1f}, "
        "peak {:.1f}".format(*mib, max(kib for _, kib in samples) / 1024)
    )
    print("\n" + "\n".join(lines))
    assert last <= first * RSS_GROWTH, (
        f"server RSS grew from {first / 1024:.1f} MiB to {last / 1024:.1f} MiB "
        f"(more than {RSS_GROWTH - 1:.0%})"
    )


def roll_in_the_middle(live: LiveServer, world: World, started: float) -> dict[str, Any]:
    """A third of the way in: a new version of root key B, then ``dep refresh`` through the
    CLI and a files roll through the admin API; both must finish while the load runs."""
    while time.monotonic() < started + LOAD_SECONDS / 3:
        time.sleep(0.1)  # pacing: wait for the middle of the run
    operator = world.tokens["operator"]
    created = live.http.post(
        f"{live.vault_url(VAULT_B)}/keys/{KEY_B}/create?api-version={API}",
        json={"kty": "RSA-HSM", "key_size": 2048, "key_ops": ["wrapKey", "unwrapKey"]},
        headers=_headers(operator),
    )
    new_version = expect(created, 200).json()["key"]["kid"].rsplit("/", 1)[1]
    begun = time.monotonic()
    live.cli("dep", "refresh", "NA-DEP", "--tenant", "contoso", "--no-wait")
    rolled = live.admin(
        "POST",
        "/tenants/contoso/files/policy/roll",
        json={"KeyType": "Secondary", "KeyId": URI_B},
    )
    roll_id = expect(rolled, 202).json()["job"]["Id"]
    listed = expect(live.admin("GET", "/jobs", token=operator), 200).json()["value"]
    (refresh_id,) = [j["Id"] for j in listed if j["Kind"] == REFRESH_JOB]
    assert {j["Kind"] for j in listed if j["Id"] == roll_id} == {ROLL_JOB}
    left = max(started + LOAD_SECONDS - time.monotonic(), 5.0)
    wait_job(live, operator, refresh_id, timeout=left)
    refresh_seconds = time.monotonic() - begun
    wait_job(live, operator, roll_id, timeout=max(started + LOAD_SECONDS - time.monotonic(), 5.0))
    roll_seconds = time.monotonic() - begun
    assert time.monotonic() < started + LOAD_SECONDS, "the jobs finished only after the load"
    return {"refresh s": refresh_seconds, "roll s": roll_seconds, "new version": new_version}


@pytest.fixture(autouse=True)
def _no_customerkey_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """The in-process runtime must open the server's SQLite database, whatever is set."""
    for name in list(os.environ):
        if name.startswith("CUSTOMERKEY_") and name != "CUSTOMERKEY_LOAD_SECONDS":
            monkeypatch.delenv(name)
