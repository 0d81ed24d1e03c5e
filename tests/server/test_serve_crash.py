"""Crash safety of ``customerkey serve``, of the worker during a files roll and of ``file put``.

Real processes and real SIGKILL, at points drawn from ``random.Random(seed)``: the seed is in
every assertion message (replay with ``CUSTOMERKEY_CRASH_SEED=<seed>``).

1. Client threads write through the keys API (key creates and new versions tagged with a unique
   counter, wrapkey/unwrapkey round trips) and the admin API (access policy sets) over verified
   TLS; the server is SIGKILLed mid-traffic, restarted on the same home and port, and every
   write that got a 2xx must be there (``CUSTOMERKEY_SERVE_CRASH_RUNS`` rounds, 10 by default),
   with the audit chain intact.
2. ``customerkey worker`` is SIGKILLed during a files roll (``crash_harness``) and ``customerkey
   file put`` during a 40 MiB upload: nothing is lost, nothing partial is listed.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import random
import signal
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from customerkey.azure.localdns import install_loopback_resolver, uninstall_loopback_resolver
from customerkey.clock import FrozenClock
from customerkey.crypto.rsa import b64url_decode, b64url_encode
from customerkey.jobs.blob_sweep import BlobSweeper
from customerkey.runtime import Runtime
from customerkey.vault.models import OPERATOR
from tests.support.crash_harness import (
    CRASH_SCALE,
    SEED_ENV,
    CrashHarness,
    pick_seed,
    verify_audit,
    verify_jobs_succeeded,
)
from tests.support.filesfixtures import (
    KEY_A,
    KEY_B,
    URI_A,
    URI_B,
    VAULT_A,
    VAULT_B,
    Generated,
    digest_of_generated,
    register,
    setup_tenant_and_vaults,
    site_url,
)
from tests.support.live_servers import (
    ADMIN,
    DOMAIN,
    TENANT,
    LiveServer,
    start_server,
)
from tests.support.servers import clean_env, free_port

pytestmark = pytest.mark.slow

API = "api-version=7.5"
RUNS_ENV = "CUSTOMERKEY_SERVE_CRASH_RUNS"
VAULT = "crash-vault"
WRITERS = 4
PERMISSIONS = ("get", "list", "wrapKey", "unwrapKey", "sign", "verify", "encrypt", "decrypt")


# ---------------------------------------------------------------------- part 1: serve


@dataclass
class Acked:
    """Everything a writer got a 2xx for (and the policy writes it could not know about)."""

    versions: list[tuple[str, str, str]] = field(default_factory=list)  # name, version, n
    wrapped: list[tuple[str, str, str, bytes]] = field(default_factory=list)  # +value, plain
    # principal -> permissions of its last acknowledged set, and the sets sent since then
    # that got no answer (applied or not: either may be what the server kept).
    policies: dict[str, frozenset[str]] = field(default_factory=dict)
    maybe: dict[str, list[frozenset[str]]] = field(default_factory=dict)
    unexpected: list[str] = field(default_factory=list)
    writes: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


class Writer(threading.Thread):
    def __init__(
        self, index: int, server: LiveServer, token: str, acked: Acked, counter: Any, seed: int
    ) -> None:
        super().__init__(daemon=True)
        self.index = index
        self.server = server
        self.token = token
        self.acked = acked
        self.counter = counter
        self.rng = random.Random(seed)
        self.stop = threading.Event()
        self.mine: list[tuple[str, str]] = []  # key versions this writer created

    def _call(self, client: httpx.Client, method: str, url: str, body: Any) -> httpx.Response:
        response = client.request(
            method, url, json=body, headers={"Authorization": f"Bearer {self.token}"}
        )
        if not response.is_success:
            with self.acked.lock:
                self.acked.unexpected.append(f"{method} {url} -> {response.status_code}")
        return response

    def run(self) -> None:
        vault = self.server.vault_url(VAULT)
        with httpx.Client(verify=self.server.ssl_context(), timeout=15) as client:
            while not self.stop.is_set():
                choice = self.rng.random()
                try:
                    if choice < 0.45 or not self.mine:
                        self._create(client, vault)
                    elif choice < 0.8:
                        self._wrap(client, vault)
                    else:
                        self._policy(client)
                except (httpx.TransportError, ssl.SSLError, OSError):
                    if self.stop.is_set():
                        return
                    time.sleep(0.01)  # the server is gone; the main thread restarts it

    def _create(self, client: httpx.Client, vault: str) -> None:
        name = f"w{self.index}-k{self.rng.randrange(3)}"
        n = str(next(self.counter))
        body = {"kty": "RSA", "key_size": 2048, "tags": {"n": n}}
        response = self._call(client, "POST", f"{vault}/keys/{name}/create?{API}", body)
        if response.is_success:
            version = response.json()["key"]["kid"].rsplit("/", 1)[-1]
            self.mine.append((name, version))
            with self.acked.lock:
                self.acked.versions.append((name, version, n))
                self.acked.writes += 1

    def _wrap(self, client: httpx.Client, vault: str) -> None:
        name, version = self.rng.choice(self.mine)
        plain = self.rng.randbytes(32)
        body = {"alg": "RSA-OAEP-256", "value": b64url_encode(plain)}
        url = f"{vault}/keys/{name}/{version}"
        response = self._call(client, "POST", f"{url}/wrapkey?{API}", body)
        if not response.is_success:
            return
        value = response.json()["value"]
        with self.acked.lock:
            self.acked.wrapped.append((name, version, value, plain))
            self.acked.writes += 1
        back = self._call(
            client, "POST", f"{url}/unwrapkey?{API}", {"alg": "RSA-OAEP-256", "value": value}
        )
        if back.is_success and b64url_decode(back.json()["value"]) != plain:
            with self.acked.lock:
                self.acked.unexpected.append(f"{url}: unwrapkey gave other bytes (live)")

    def _policy(self, client: httpx.Client) -> None:
        principal = f"w{self.index}-p{self.rng.randrange(3)}@contoso.com"
        perms = frozenset(self.rng.sample(PERMISSIONS, self.rng.randint(1, 4)))
        with self.acked.lock:
            self.acked.maybe.setdefault(principal, []).append(perms)
        body = {"object_id": principal, "key_permissions": sorted(perms), "replace": True}
        url = f"{self.server.url}/api/v1/vaults/{VAULT}/accessPolicies"
        response = self._call(client, "PUT", url, body)
        if response.is_success:
            with self.acked.lock:
                self.acked.policies[principal] = perms
                self.acked.maybe[principal] = []
                self.acked.writes += 1


def _verify_serve(server: LiveServer, token: str, acked: Acked, context: str) -> None:
    headers = {"Authorization": f"Bearer {token}"}
    vault = server.vault_url(VAULT)
    with acked.lock:
        versions = list(acked.versions)
        wrapped = list(acked.wrapped)
        policies = dict(acked.policies)
        maybe = {k: list(v) for k, v in acked.maybe.items()}
    problems: list[str] = []

    def check_version(client: httpx.Client, item: tuple[str, str, str]) -> None:
        name, version, n = item
        got = client.get(f"{vault}/keys/{name}/{version}?{API}", headers=headers)
        if got.status_code != 200:
            problems.append(f"acknowledged {name}/{version} (n={n}): {got.status_code}")
        elif got.json().get("tags", {}).get("n") != n:
            problems.append(f"{name}/{version}: tags {got.json().get('tags')} want n={n}")

    def check_wrapped(client: httpx.Client, item: tuple[str, str, str, bytes]) -> None:
        name, version, value, plain = item
        body = {"alg": "RSA-OAEP-256", "value": value}
        got = client.post(
            f"{vault}/keys/{name}/{version}/unwrapkey?{API}", json=body, headers=headers
        )
        if got.status_code != 200:
            problems.append(f"unwrap under {name}/{version}: {got.status_code} {got.text[:200]}")
        elif b64url_decode(got.json()["value"]) != plain:
            problems.append(f"unwrap under {name}/{version}: other bytes")

    local = threading.local()

    def client() -> httpx.Client:
        if not hasattr(local, "client"):
            local.client = httpx.Client(verify=server.ssl_context(), timeout=30)
        made: httpx.Client = local.client
        return made

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda v: check_version(client(), v), versions))
        list(pool.map(lambda w: check_wrapped(client(), w), wrapped))

    view = server.admin("GET", f"/vaults/{VAULT}", token=token)
    assert view.status_code == 200, f"{view.text}\n{context}"
    held = {
        p["PrincipalName"]: frozenset(p["PermissionsToKeys"]) for p in view.json()["AccessPolicies"]
    }
    for principal, perms in policies.items():
        allowed = [perms, *maybe.get(principal, [])]
        if held.get(principal) not in allowed:
            problems.append(f"policy of {principal}: {held.get(principal)} want one of {allowed}")
    assert not problems, (
        f"{len(problems)} acknowledged write(s) lost:\n" + "\n".join(problems[:20]) + f"\n{context}"
    )
    audit = server.cli("audit", "verify", check=False)
    assert audit.returncode == 0, f"audit verify: {audit.stdout}{audit.stderr}\n{context}"


@pytest.fixture
def loopback() -> Iterator[None]:
    install_loopback_resolver(DOMAIN)
    try:
        yield
    finally:
        uninstall_loopback_resolver(DOMAIN)


def test_sigkill_serve_during_acknowledged_writes_loses_none(
    tmp_path: Path, loopback: None
) -> None:
    seed = pick_seed()
    rng = random.Random(seed)
    runs = int(os.environ.get(RUNS_ENV, "10"))
    home = tmp_path / "home"
    port = free_port()
    server = start_server(home, port=port, log_path=tmp_path / "serve-000.log")
    kills: list[str] = []
    acked = Acked()
    counter = itertools.count()
    started = time.monotonic()

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
        for w in range(WRITERS):
            for p in range(3):
                server.create_principal(f"w{w}-p{p}@contoso.com")
        for round_no in range(1, runs + 1):
            token = server.token(ADMIN, server.admin_secret)
            writers = [
                Writer(w, server, token, acked, counter, rng.randrange(2**31))
                for w in range(WRITERS)
            ]
            before = acked.writes
            for writer in writers:
                writer.start()
            delay = rng.uniform(0.2, 1.5)
            time.sleep(delay)  # writes in flight; the kill point
            writes_before_kill = acked.writes - before
            os.kill(server.process.pid, signal.SIGKILL)
            server.process.wait(timeout=30)
            for writer in writers:
                writer.stop.set()
            for writer in writers:
                writer.join(timeout=60)
                assert not writer.is_alive(), f"writer hung\n{context()}"
            kills.append(
                f"round {round_no}: +{delay:.3f}s, {writes_before_kill} acked before the kill"
            )
            assert not acked.unexpected, (
                "non-2xx answers before the kill:\n" + "\n".join(acked.unexpected[:10]) + context()
            )
            bugs = server.bugs()
            assert not bugs, "the server logged unhandled errors:\n" + "\n".join(bugs) + context()
            server = start_server(home, port=port, log_path=tmp_path / f"serve-{round_no:03d}.log")
            server.admin_secret = admin_secret
            _verify_serve(server, server.token(ADMIN, server.admin_secret), acked, context())
            bugs = server.bugs()
            assert not bugs, "unhandled errors after restart:\n" + "\n".join(bugs) + context()
        assert len(acked.versions) >= runs and acked.wrapped and acked.policies, (
            f"too few writes acknowledged to prove anything: {len(acked.versions)} versions, "
            f"{len(acked.wrapped)} wraps, {len(acked.policies)} policies\n{context()}"
        )
    finally:
        status = server.stop()
        print(
            f"\nserve crash: {context()}\n  {len(acked.versions)} versions, "
            f"{len(acked.wrapped)} wraps, {len(acked.policies)} policies acknowledged, "
            f"{time.monotonic() - started:.1f}s"
        )
    assert status == 0, f"the restarted server exited {status} on SIGTERM\n{context()}"


# ---------------------------------------------------------------------- part 2: files


def _sha_of_download(rt: Runtime, site: str, path: str, version: int | None = None) -> str:
    class Sink:
        def __init__(self) -> None:
            self.digest = hashlib.sha256()

        def write(self, data: bytes | memoryview) -> int:
            self.digest.update(data)
            return len(data)

    sink = Sink()
    rt.files.download(OPERATOR, site, path, sink, version=version)  # type: ignore[arg-type]
    return sink.digest.hexdigest()


SITES = 24


def test_sigkill_worker_during_files_rolls(
    crash_runtime: Runtime, db_url: str, tmp_path: Path, db_backend: str
) -> None:
    rt = crash_runtime
    setup_tenant_and_vaults(rt)
    register(rt)
    expected: dict[tuple[str, str, int], str] = {}
    for s in range(SITES):
        url = site_url(f"crash{s:02d}")
        rt.files.create_site(OPERATOR, url)
        for f in range(2):
            path = f"Shared Documents/f{f}.bin"
            for v in range(1 + (s + f) % 2):
                seed = s * 100 + f * 10 + v
                size = 1000 + seed * 37
                version = rt.files.upload(OPERATOR, url, path, Generated(size, seed))
                expected[(url, path, version.number)] = digest_of_generated(size, seed)
    harness = CrashHarness(
        rt.home.path, db_url, seed=pick_seed(), log_dir=tmp_path / "worker-logs", refresh_batch=1
    )
    started = time.monotonic()
    try:
        harness.calibrate()
        made = 0
        for label, vault, key, kind, uri in (
            ("roll primary", VAULT_A, KEY_A, "primary", URI_A),
            ("roll secondary", VAULT_B, KEY_B, "secondary", URI_B),
        ):
            rt.vault.rotate_key(OPERATOR, vault, key)
            job = rt.files.roll(OPERATOR, TENANT, kind, uri)
            assert job.progress_total == SITES
            made += len(harness.run_jobs(label, [job.id], kills=6 * CRASH_SCALE))
            context = harness.describe()
            verify_jobs_succeeded(harness, [job.id], context)
            rt.key_cache.clear()
            status = rt.files.status(OPERATOR, TENANT)
            assert status.state == "Registered", f"{status}\n{context}"
            wrong = [k for k, digest in expected.items() if _sha_of_download(rt, *k) != digest]
            assert not wrong, (
                f"{len(wrong)} file version(s) read back wrong: {wrong[:5]}\n{context}"
            )
        assert made >= 6 * CRASH_SCALE, f"only {made} kills landed\n{harness.describe()}"
        verify_audit(rt, harness.describe())
    finally:
        harness.close()
        print(f"\n[{db_backend}] {harness.describe()}\n  {time.monotonic() - started:.1f}s")


UPLOAD_SIZE = 40 << 20
# Kill points of the uploads (a seeded shuffle): during process start-up, while the first chunk
# is written, once 1, 2 or 4 of its 5 chunks (8 MiB each) are stored, and once all are stored
# (before the version is committed).
UPLOAD_DECK: tuple[str | int, ...] = ("startup", "writing", 1, 2, 4, 5)
UPLOAD_KILLS = len(UPLOAD_DECK) * CRASH_SCALE


def test_sigkill_file_put_leaves_no_partial_version(
    crash_runtime: Runtime, db_url: str, tmp_path: Path, db_backend: str
) -> None:
    rt = crash_runtime
    seed = pick_seed()
    rng = random.Random(seed)
    setup_tenant_and_vaults(rt)
    register(rt)
    site = site_url("uploads")
    rt.files.create_site(OPERATOR, site)
    path = "Shared Documents/big.bin"
    env = clean_env()
    env["CUSTOMERKEY_DATABASE_URL"] = db_url
    log: list[str] = []

    def context() -> str:
        return f"seed {seed} (replay: {SEED_ENV}={seed}) [{db_backend}]: " + "; ".join(log)

    def source(attempt: int) -> tuple[Path, str]:
        local = tmp_path / f"src-{attempt}.bin"
        gen = Generated(UPLOAD_SIZE, attempt)
        with local.open("wb") as out:
            while chunk := gen.read(1 << 20):
                out.write(chunk)
        return local, digest_of_generated(UPLOAD_SIZE, attempt)

    def put(local: Path) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "customerkey.cli.main",
                "--home",
                str(rt.home.path),
                "file",
                "put",
                site,
                path,
                str(local),
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )

    def listed() -> dict[int, int]:
        try:
            return {v.number: v.size for v in rt.files.versions(OPERATOR, site, path)}
        except Exception as exc:  # no file yet
            if "No file" in str(exc):
                return {}
            raise

    started = time.monotonic()
    # A first, un-killed put times the whole upload (process start-up included).
    local, digest = source(0)
    t0 = time.monotonic()
    first = put(local)
    _, err = first.communicate(timeout=300)
    duration = time.monotonic() - t0
    assert first.returncode == 0, err.decode(errors="replace")
    digests = {1: digest}
    log.append(f"put 1 took {duration:.2f}s")
    site_blobs = rt.home.blobs_dir / "files" / rt.files.get_site(OPERATOR, site).id
    deck = list(UPLOAD_DECK) * CRASH_SCALE
    rng.shuffle(deck)

    def stored() -> tuple[set[Path], int]:
        """Version folders on disk, and how many chunk blobs (not temporary files) they hold."""
        files = [p for p in site_blobs.rglob("*") if p.is_file()]
        return {p.parent for p in files}, sum(1 for p in files if not p.name.endswith(".tmp"))

    for attempt, point in enumerate(deck, start=1):
        local, digest = source(attempt)
        before = listed()
        old_folders, _ = stored()
        proc = put(local)
        spawned = time.monotonic()
        delay = rng.uniform(0.0, 0.02)
        if point == "startup":
            delay = rng.uniform(0.0, 0.5 * duration)
        else:
            while proc.poll() is None:
                folders, _ = stored()
                chunks = sum(
                    1 for p in (folders - old_folders) for c in p.iterdir() if c.name[0] != "."
                )
                if (point == "writing" and folders - old_folders) or (
                    isinstance(point, int) and chunks >= point
                ):
                    break
                time.sleep(0.002)
        try:
            proc.wait(timeout=delay)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        delay = time.monotonic() - spawned
        after = listed()
        new = sorted(after.keys() - before.keys())
        log.append(
            f"attempt {attempt}: {point} +{delay:.2f}s, exit {proc.returncode}, new versions {new}"
        )
        assert before.items() <= after.items() and len(new) <= 1, context()
        if proc.returncode == 0:
            assert len(new) == 1, f"an acknowledged put is not listed\n{context()}"
        for number in new:
            assert after[number] == UPLOAD_SIZE, f"partial version {number} listed\n{context()}"
            digests[number] = digest
        rt.key_cache.clear()
        wrong = [n for n, d in digests.items() if _sha_of_download(rt, site, path, n) != d]
        assert not wrong, f"versions {wrong} read back wrong\n{context()}"
    # A final put, not killed, succeeds and reads back.
    local, digest = source(UPLOAD_KILLS + 1)
    last = put(local)
    _, err = last.communicate(timeout=300)
    assert last.returncode == 0, err.decode(errors="replace") + context()
    assert _sha_of_download(rt, site, path) == digest, context()
    assert rt.files.get_file(OPERATOR, site, path).size == UPLOAD_SIZE
    verify_audit(rt, context())
    folders, _ = stored()
    versions = len(rt.files.versions(OPERATOR, site, path))
    # The chunks SIGKILLed puts left behind are unlisted; the blob sweep, once they are past
    # its grace (the clock moved on), removes them and leaves every listed version whole.
    later = FrozenClock(datetime.now(UTC) + timedelta(hours=2))
    sweep = BlobSweeper(
        rt.db,
        rt.files.blobs,
        later,
        timedelta(hours=1),
        audit=rt.audit,
        owners=rt.blob_sweeper.owners,
    )
    report = sweep.sweep(OPERATOR)
    kept, _ = stored()
    assert len(kept) == versions, f"{report}\n{context()}"
    rt.key_cache.clear()
    wrong = [n for n, d in digests.items() if _sha_of_download(rt, site, path, n) != d]
    assert not wrong, f"versions {wrong} read back wrong after the sweep\n{context()}"
    verify_audit(rt, context())
    print(
        f"\nfile put crash: {context()}\n  {len(folders)} version folder(s) on disk for "
        f"{versions} listed version(s) before the sweep, {report.orphans} orphaned chunk(s) "
        f"swept, "
        f"{time.monotonic() - started:.1f}s"
    )
