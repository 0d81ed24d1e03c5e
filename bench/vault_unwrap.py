"""vault unwrap: unwrapKey with an RSA-2048 key over HTTPS against a real ``customerkey serve``.

Set-up (in-process, on the server's home folder before it starts): a tenant, a vault, an
RSA-2048 key allowing wrapKey/unwrapKey, a user principal with a client secret and the
unwrapKey permission, and one 32-byte key wrapped (RSA-OAEP-256) under the key.

Then ``python -m customerkey.cli.main --home H serve --port P`` runs as a subprocess (its own
CA under H/tls/ca.pem, verified by the clients), the bench gets a bearer token from the token
endpoint, and 1, 4 and 16 client threads, each with its own keep-alive ``httpx.Client``, POST
``/keys/{name}/{version}/unwrapkey?api-version=7.5`` as fast as the answers come for a fixed
time. Every answer is checked (status 200; the first answer of each client decoded and
compared). Reported: ops/s over the measured window and p50/p99 latency as seen by the
client. The clients run on the same 2 cores as the server, so they take part of its CPU.

Then the same server is driven the way HTTP servers are measured, by wrk (the C load
generator, ``bench/_wrk.py`` + ``bench/wrk/unwrap.lua``): one wrk thread, 1, 16 and 64
keep-alive HTTPS connections to ``127.0.0.1:port`` with the Host header naming the vault
(``{vault}.vault.localhost:port``, which the server checks), ``POST
/keys/{name}/{version}/unwrapkey?api-version=7.4`` with a fixed RSA-OAEP-256 ciphertext and
the bearer token, for a fixed time (10 s; quick 2 s). Every answer is checked by the script
(status 200 and the expected plaintext in the body); only good answers count in ops/s, and a
run with any failed answer or socket error says so in the row's note (never hidden). p50/p99
are wrk's (``--latency``). Server CPU per request is the user + system CPU of the server's
process tree (/proc/<pid>/stat of the supervisor and its workers) across the wrk run divided by
the answers (TLS handshakes of the run's connections included); wrk's own CPU is in ``extra``.
The wrk runs are interleaved with the rounds of ``httpx`` runs (one wrk case after each round),
and the load average at each wrk run is in its note. Without wrk on PATH the wrk rows say
"skipped" (``apt-get install wrk``; ``.ci/run`` installs it).

Baseline: raw RSA-OAEP-256 private-key operations per second in this process (pyca), on one
thread and on ``nproc`` threads (cryptography releases the GIL around the RSA operation),
measured before each server block (best of the blocks); its CPU time per operation on one
thread (``time.thread_time``) is the baseline of the server-CPU-per-request rows.
With ``--workers`` available, the server is measured with 1 worker and with ``nproc``.
"""

from __future__ import annotations

import base64
import inspect
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from bench._common import (
    TENANT,
    Row,
    median,
    open_runtime,
    percentile,
    rate,
    temp_dir,
)
from bench._wrk import WrkResult, run_wrk, wrk_binary
from customerkey.azure.localdns import install_loopback_resolver, uninstall_loopback_resolver
from customerkey.vault.models import OPERATOR

NAME = "vault_unwrap"
TITLE = "unwrapKey RSA-2048 over HTTPS against customerkey serve"

DOMAIN = "vault.localhost"
VAULT = "bench-vault"
KEY = "bench-key"
CLIENT = "bench-app@contoso.com"
CONCURRENCY = (1, 4, 16)
WRK_CONNECTIONS = (1, 16, 64)
WRK_SECONDS = 10.0
WRK_QUICK_SECONDS = 2.0
WRK_API_VERSION = "7.4"
OPS_TARGET = 1000.0
P99_TARGET_MS = 20.0
START_TIMEOUT = 60.0


@dataclass
class Prepared:
    version: str
    wrapped: bytes
    plain: bytes
    secret: str


def _prepare(home: Path) -> Prepared:
    rt = open_runtime(home)
    try:
        rt.tenants.create(OPERATOR, TENANT, mail_domain="contoso.com")
        rt.vault.create_vault(
            OPERATOR, VAULT, subscription="contoso-sub", region="eastus", tenant=TENANT
        )
        bundle = rt.vault.create_key(
            OPERATOR, VAULT, KEY, kty="RSA", size=2048, key_ops=["wrapKey", "unwrapKey"]
        )
        _, secret = rt.principals.create(OPERATOR, CLIENT, kind="user", tenant=TENANT)
        assert secret is not None
        rt.vault.set_access_policy(OPERATOR, VAULT, CLIENT, ["unwrapKey"])
        plain = os.urandom(32)
        wrapped = rt.vault.wrap_key(
            OPERATOR, VAULT, KEY, bundle.id.version, "RSA-OAEP-256", plain
        ).value
        return Prepared(bundle.id.version, wrapped, plain, secret)
    finally:
        rt.close()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def workers_supported() -> bool:
    from customerkey.cli import serve_command

    return "workers" in inspect.signature(serve_command.serve).parameters


class Server:
    def __init__(self, home: Path, workers: int | None) -> None:
        self.home = home
        self.port = _free_port()
        self.log_path = home.parent / f"serve-{self.port}.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith("CUSTOMERKEY_")}
        env["PYTHONUNBUFFERED"] = "1"
        command = [
            sys.executable,
            "-m",
            "customerkey.cli.main",
            "--home",
            str(home),
            "serve",
            "--port",
            str(self.port),
            "--scheduler-interval",
            "3600",
        ]
        if workers is not None:
            command += ["--workers", str(workers)]
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
        self.ca = home / "tls" / "ca.pem"
        self._wait()

    def ssl_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca))

    def _wait(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"customerkey serve exited:\n{self.log()[-3000:]}")
            if self.ca.exists():
                try:
                    answer = httpx.get(
                        f"https://localhost:{self.port}/healthz", verify=self.ssl_context()
                    )
                    if answer.status_code == 200:
                        return
                except (httpx.HTTPError, ssl.SSLError, OSError):
                    pass
            time.sleep(0.05)  # polling /healthz while the server starts
        self.stop()
        raise RuntimeError(f"customerkey serve did not start:\n{self.log()[-3000:]}")

    def token(self, client_id: str, secret: str) -> str:
        answer = httpx.post(
            f"https://localhost:{self.port}/{TENANT}/oauth2/v2.0/token",
            data={
                "grant_type": "client_credentials",
                "client_id": client_id,
                "client_secret": secret,
                "scope": f"https://{DOMAIN}:{self.port}/.default",
            },
            verify=self.ssl_context(),
        )
        answer.raise_for_status()
        token: str = answer.json()["access_token"]
        return token

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


@dataclass
class LoadResult:
    ops: float
    p50_ms: float
    p99_ms: float
    errors: int
    requests: int
    server_cpu_ms: float  # CPU time of the server's processes per measured request
    client_cpu_ms: float  # CPU time of this process (the clients) per measured request


_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of ``pid`` and its live children (Linux /proc)."""
    total = 0.0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        # fields[0] is the state (field 3); ppid is field 4, utime 14, stime 15.
        if int(entry.name) == pid or int(fields[1]) == pid:
            total += (int(fields[11]) + int(fields[12])) / _TICK
    return total


def _load(
    server: Server, prepared: Prepared, token: str, clients: int, seconds: float
) -> LoadResult:
    url = (
        f"https://{VAULT}.{DOMAIN}:{server.port}/keys/{KEY}/{prepared.version}"
        "/unwrapkey?api-version=7.5"
    )
    body = json.dumps(
        {
            "alg": "RSA-OAEP-256",
            "value": base64.urlsafe_b64encode(prepared.wrapped).rstrip(b"=").decode(),
        }
    ).encode()
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    context = server.ssl_context()
    ready = threading.Barrier(clients + 1)
    start_at: list[float] = []
    stop = threading.Event()
    latencies: list[list[float]] = [[] for _ in range(clients)]
    errors = [0] * clients

    def client(index: int) -> None:
        with httpx.Client(verify=context, timeout=30) as http:
            first = http.post(url, content=body, headers=headers)  # connects, warms up
            value = first.json()["value"]
            got = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
            if first.status_code != 200 or got != prepared.plain:
                errors[index] += 1
            ready.wait()
            mine = latencies[index]
            begin = start_at[0]
            while not stop.is_set():
                sent = time.perf_counter()
                answer = http.post(url, content=body, headers=headers)
                done = time.perf_counter()
                if answer.status_code != 200:
                    errors[index] += 1
                elif sent >= begin:
                    mine.append(done - sent)

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(clients)]
    for thread in threads:
        thread.start()
    warm_up = 0.3
    start_at.append(time.perf_counter() + warm_up)
    ready.wait()
    time.sleep(warm_up)
    server_cpu = _cpu_seconds(server.process.pid)
    client_cpu = time.process_time()
    time.sleep(seconds)
    stop.set()
    ended = time.perf_counter()
    server_cpu = _cpu_seconds(server.process.pid) - server_cpu
    client_cpu = time.process_time() - client_cpu
    for thread in threads:
        thread.join(timeout=60)
    flat = [x for mine in latencies for x in mine]
    window = ended - start_at[0]
    count = max(1, len(flat))
    return LoadResult(
        ops=len(flat) / window,
        p50_ms=median(flat) * 1000,
        p99_ms=percentile(flat, 99) * 1000,
        errors=sum(errors),
        requests=len(flat),
        server_cpu_ms=server_cpu * 1000 / count,
        client_cpu_ms=client_cpu * 1000 / count,
    )


def raw_rsa_rates(quick: bool) -> tuple[float, float, float]:
    """(ops/s on one thread, ops/s on nproc threads, CPU ms per op on one thread) of
    RSA-OAEP-256 private decryption. The CPU figure is the thread's own CPU time, so unlike
    1 / rate it does not grow when other work on a shared machine takes the core away."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    oaep = padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None)
    wrapped = key.public_key().encrypt(os.urandom(32), oaep)
    min_time, repeats = (0.2, 2) if quick else (1.0, 3)
    one = rate(lambda: key.decrypt(wrapped, oaep), min_time=min_time, repeats=repeats)
    cpu_ms = float("inf")
    for _ in range(repeats):
        calls, cpu, deadline = 0, time.thread_time(), time.perf_counter() + min_time
        while time.perf_counter() < deadline:
            key.decrypt(wrapped, oaep)
            calls += 1
        cpu_ms = min(cpu_ms, (time.thread_time() - cpu) * 1000 / calls)
    threads = os.cpu_count() or 1
    best = 0.0
    for _ in range(repeats):
        counts = [0] * threads
        stop = threading.Event()

        def spin(index: int, stop: threading.Event = stop, counts: list[int] = counts) -> None:
            while not stop.is_set():
                key.decrypt(wrapped, oaep)
                counts[index] += 1

        pool = [threading.Thread(target=spin, args=(i,)) for i in range(threads)]
        begin = time.perf_counter()
        for thread in pool:
            thread.start()
        time.sleep(min_time)
        stop.set()
        for thread in pool:
            thread.join()
        best = max(best, sum(counts) / (time.perf_counter() - begin))
    return one, best, cpu_ms


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@dataclass
class WrkLoad:
    result: WrkResult
    server_cpu_ms: float  # server CPU per answer over the whole wrk run
    load: float  # 1-minute load average when the run started


def _wrk_load(
    server: Server, prepared: Prepared, token: str, connections: int, seconds: float
) -> WrkLoad:
    env = {
        "UNWRAP_PATH": (f"/keys/{KEY}/{prepared.version}/unwrapkey?api-version={WRK_API_VERSION}"),
        "UNWRAP_HOST": f"{VAULT}.{DOMAIN}:{server.port}",
        "UNWRAP_TOKEN": token,
        "UNWRAP_BODY": json.dumps({"alg": "RSA-OAEP-256", "value": _b64url(prepared.wrapped)}),
        "UNWRAP_EXPECT": _b64url(prepared.plain),
    }
    load = os.getloadavg()[0]
    server_cpu = _cpu_seconds(server.process.pid)
    result = run_wrk(
        "unwrap.lua",
        f"https://127.0.0.1:{server.port}",
        threads=1,
        connections=connections,
        seconds=seconds,
        env=env,
    )
    server_cpu = _cpu_seconds(server.process.pid) - server_cpu
    return WrkLoad(result, server_cpu * 1000 / max(1, result.requests), load)


def _httpx_rows(
    clients: int, workers: int | None, results: list[LoadResult], raw_all: float, raw_cpu_ms: float
) -> list[Row]:
    best = max(results, key=lambda r: r.ops)
    label = f"{clients} clients, {workers or 1} worker(s)"
    extra = {
        "client": "httpx",
        "p50_ms": best.p50_ms,
        "p99_ms": best.p99_ms,
        "requests": best.requests,
        "server_cpu_ms_per_op": best.server_cpu_ms,
        "client_cpu_ms_per_op": best.client_cpu_ms,
        "errors": sum(r.errors for r in results),
        "all_runs_ops": [round(r.ops) for r in results],
    }
    p99_target = clients == 16
    return [
        Row(
            NAME,
            label,
            "ops/s",
            best.ops,
            baseline=f"raw RSA, {os.cpu_count() or 1} threads",
            baseline_value=raw_all,
            ratio=best.ops / raw_all,
            target=f">= {OPS_TARGET:,.0f} ops/s",
            met=best.ops >= OPS_TARGET,
            note=f"{extra['errors']} errors" if extra["errors"] else "",
            extra=extra,
        ),
        *_latency_and_cpu_rows(
            label, best.p50_ms, best.p99_ms, best.server_cpu_ms, raw_cpu_ms, p99_target
        ),
    ]


def _latency_and_cpu_rows(
    label: str, p50: float, p99: float, server_cpu_ms: float, raw_cpu_ms: float, p99_target: bool
) -> list[Row]:
    """The p50, p99 (against the target at 16 clients) and server CPU rows of one case, for
    the Python clients and wrk alike."""
    return [
        Row(NAME, label, "p50 ms", p50),
        Row(
            NAME,
            label,
            "p99 ms",
            p99,
            target=f"<= {P99_TARGET_MS:.0f} ms" if p99_target else "",
            met=p99 <= P99_TARGET_MS if p99_target else None,
        ),
        Row(
            NAME,
            label,
            "server CPU ms/req",
            server_cpu_ms,
            baseline="raw RSA decrypt CPU ms/op",
            baseline_value=raw_cpu_ms,
            ratio=server_cpu_ms / raw_cpu_ms,
        ),
    ]


def _wrk_rows(
    connections: int, workers: int | None, got: WrkLoad, raw_all: float, raw_cpu_ms: float
) -> list[Row]:
    result = got.result
    label = f"wrk {connections} conns, {workers or 1} worker(s)"
    failed = result.failure_note()
    if failed:
        print(f"vault_unwrap: {label}: {failed}", file=sys.stderr, flush=True)
    extra = {
        "client": "wrk",
        "command": " ".join(result.command),
        "seconds": result.duration_s,
        "requests": result.requests,
        "ok": result.ok,
        "failures": result.failures,
        "non_200": result.non_200,
        "statuses": result.statuses,
        "wrong_body": result.wrong_body,
        "socket_errors": result.socket_errors,
        "first_failure": result.first_failure,
        "p50_ms": result.p50_ms,
        "p90_ms": result.p90_ms,
        "p99_ms": result.p99_ms,
        "max_ms": result.max_ms,
        "server_cpu_ms_per_op": got.server_cpu_ms,
        "wrk_cpu_ms_per_op": result.wrk_cpu_s * 1000 / max(1, result.requests),
        "loadavg_1min": round(got.load, 2),
    }
    note = f"load {got.load:.1f}" + (f"; {failed}" if failed else "")
    p99_target = connections == 16
    return [
        Row(
            NAME,
            label,
            "ops/s",
            result.ops,
            baseline=f"raw RSA, {os.cpu_count() or 1} threads",
            baseline_value=raw_all,
            ratio=result.ops / raw_all,
            target=f">= {OPS_TARGET:,.0f} ops/s",
            met=result.ops >= OPS_TARGET and not result.failures,
            note=note,
            extra=extra,
        ),
        *_latency_and_cpu_rows(
            label, result.p50_ms, result.p99_ms, got.server_cpu_ms, raw_cpu_ms, p99_target
        ),
    ]


def run(quick: bool) -> list[Row]:
    seconds, repeats = (1.0, 1) if quick else (4.0, 3)
    wrk_seconds = WRK_QUICK_SECONDS if quick else WRK_SECONDS
    nproc = os.cpu_count() or 1
    worker_counts: list[int | None]
    if workers_supported():
        worker_counts = [nproc] if quick else [1, nproc] if nproc > 1 else [1]
    else:
        worker_counts = [None]
    has_wrk = wrk_binary() is not None
    if not has_wrk:
        print(
            "vault_unwrap: wrk is not installed (apt-get install wrk): wrk rows skipped",
            file=sys.stderr,
            flush=True,
        )
    raw_one = raw_all = 0.0
    raw_cpu_ms = float("inf")
    httpx_results: dict[tuple[int | None, int], list[LoadResult]] = {}
    wrk_results: dict[tuple[int | None, int], WrkLoad] = {}
    install_loopback_resolver(DOMAIN)
    try:
        for workers in worker_counts:
            one, every, cpu_ms = raw_rsa_rates(quick)  # no server running; best of the blocks
            raw_one, raw_all = max(raw_one, one), max(raw_all, every)
            raw_cpu_ms = min(raw_cpu_ms, cpu_ms)
            with temp_dir("unwrap") as tmp:
                home = tmp / "home"
                prepared = _prepare(home)
                server = Server(home, workers)
                try:
                    token = server.token(CLIENT, prepared.secret)
                    # One wrk case after each round of httpx cases (all of them after the
                    # last round when there are fewer rounds than cases), so that a noisy
                    # moment on the shared machine hits both clients alike.
                    pending = list(WRK_CONNECTIONS) if has_wrk else []
                    for round_index in range(repeats):
                        for clients in CONCURRENCY:
                            httpx_results.setdefault((workers, clients), []).append(
                                _load(server, prepared, token, clients, seconds)
                            )
                        take = 1 if round_index < repeats - 1 else len(pending)
                        for connections in pending[:take]:
                            wrk_results[(workers, connections)] = _wrk_load(
                                server, prepared, token, connections, wrk_seconds
                            )
                        del pending[:take]
                finally:
                    status = server.stop()
                    log = server.log()
                if status != 0 or "Traceback (most recent" in log:
                    raise RuntimeError(f"server exited {status}:\n{log[-3000:]}")
    finally:
        uninstall_loopback_resolver(DOMAIN)
    rows = [
        Row(
            NAME, "raw RSA-OAEP-256 decrypt, 1 thread", "ops/s", raw_one, note="in-process baseline"
        ),
        Row(
            NAME,
            f"raw RSA-OAEP-256 decrypt, {nproc} threads",
            "ops/s",
            raw_all,
            note="in-process baseline",
        ),
        Row(
            NAME,
            "raw RSA-OAEP-256 decrypt, 1 thread",
            "CPU ms/op",
            raw_cpu_ms,
            note="thread CPU time; the baseline of the server CPU rows",
        ),
    ]
    for workers in worker_counts:
        for clients in CONCURRENCY:
            rows += _httpx_rows(
                clients, workers, httpx_results[(workers, clients)], raw_all, raw_cpu_ms
            )
    if not has_wrk:
        rows.append(
            Row(
                NAME,
                "wrk (C load generator)",
                "ops/s",
                float("nan"),
                note="skipped: wrk is not installed (apt-get install wrk)",
            )
        )
    for workers in worker_counts:
        for connections in WRK_CONNECTIONS:
            if (workers, connections) in wrk_results:
                rows += _wrk_rows(
                    connections, workers, wrk_results[(workers, connections)], raw_all, raw_cpu_ms
                )
    return rows
