"""What ``/metrics`` shows, who may read it, and how several server processes add up.

Counted in each process:

- ``customerkey_http_requests_total{method,route,status}`` and
  ``customerkey_http_request_duration_seconds{route}`` (route templates, not raw paths);
- ``customerkey_key_operations_total{operation,result}``: every encrypt, decrypt, wrapKey,
  unwrapKey, sign and verify of the vault, through the keys API or the service's own key
  provider; ``result`` is ``success``, ``denied``, ``not_found``, ``bad_request`` or ``error``;
- ``customerkey_dep_key_cache_lookups_total{result}``: ``hit`` or ``miss`` in the DEP-key cache.

Read from the database at each scrape (so the same whichever process answers):
``customerkey_jobs{kind,state}`` (the queue depth is ``state="queued"``) and
``customerkey_job_progress_done`` / ``customerkey_job_progress_total{kind,state}``, the summed
progress of those jobs.

Several server processes (``serve --workers N``) use prometheus_client's multiprocess mode:
before it forks, the supervisor points ``PROMETHEUS_MULTIPROC_DIR`` at a fresh folder
(``enable_multiprocess``); each process writes its counters to memory-mapped files there, and
a scrape, whichever process answers it, sums every process's files, those of workers that died
and were restarted included, so counters never go back. One process keeps its counters in
memory.

Exposure (setting ``metrics``): ``token`` (the default: ``Authorization: Bearer <token>``, the
token read from ``metrics_token_file``, default ``<home>/metrics.token``, made 0600 on first
start), ``loopback`` (plain HTTP on ``127.0.0.1:<metrics_port>`` only, not on the HTTPS port),
``public`` or ``off``.
"""

from __future__ import annotations

import hmac
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest, values
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from customerkey.config import Settings
from customerkey.errors import CustomerKeyError
from customerkey.home import write_private_file
from customerkey.jobs.queue import JobQueue
from customerkey.rng import Rng

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
TOKEN_FILE = "metrics.token"
_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10)


def enable_multiprocess(folder: Path) -> None:
    """Make every metric created from now on, in this process and the processes it forks,
    write to ``folder`` (emptied first: counts of an earlier run must not be added)."""
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    for stale in folder.glob("*.db"):
        stale.unlink()
    os.environ[MULTIPROC_ENV] = str(folder)
    values.ValueClass = values.MultiProcessValue()  # type: ignore[no-untyped-call]


def _multiprocess_folder() -> str | None:
    return os.environ.get(MULTIPROC_ENV) or None


def token_path(settings: Settings) -> Path:
    return settings.metrics_token_file or settings.home / TOKEN_FILE


def ensure_token(settings: Settings, rng: Rng) -> Path:
    """The metrics token file, made (0600, 32 random bytes, hex) if it does not exist."""
    path = token_path(settings)
    if not path.exists():
        write_private_file(path, (rng.token_bytes(32).hex() + "\n").encode())
    return path


def read_token(settings: Settings) -> str | None:
    """The metrics token, or None when there is none to read (then no scrape is let in)."""
    try:
        token = token_path(settings).read_text().strip()
    except OSError:
        return None
    return token or None


def token_matches(expected: str | None, authorization: str | None) -> bool:
    if not expected or not authorization:
        return False
    scheme, _, given = authorization.partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(given.strip().encode(), expected.encode())


class _JobsCollector(Collector):
    """Job counts and progress by kind and state, read from the database at each scrape."""

    def __init__(self, jobs: JobQueue) -> None:
        self.jobs = jobs

    def collect(self) -> Iterator[Metric]:
        count = GaugeMetricFamily(
            "customerkey_jobs", "Jobs by kind and state", labels=["kind", "state"]
        )
        done = GaugeMetricFamily(
            "customerkey_job_progress_done",
            "Work done by the jobs of a kind and state (items, keys, messages)",
            labels=["kind", "state"],
        )
        total = GaugeMetricFamily(
            "customerkey_job_progress_total",
            "Work to do by the jobs of a kind and state",
            labels=["kind", "state"],
        )
        for kind, state, jobs, progress_done, progress_total in self.jobs.counts():
            count.add_metric([kind, state], jobs)
            done.add_metric([kind, state], progress_done)
            total.add_metric([kind, state], progress_total)
        yield from (count, done, total)


def _result(error: BaseException | None) -> str:
    if error is None:
        return "success"
    status = error.status if isinstance(error, CustomerKeyError) else 500
    if status in (401, 403):
        return "denied"
    if status == 404:
        return "not_found"
    return "bad_request" if 400 <= status < 500 else "error"


class ServerMetrics:
    """The metrics of one server process and the registry a scrape reads."""

    def __init__(self, jobs: JobQueue) -> None:
        folder = _multiprocess_folder()
        # With several processes the metrics live in the shared folder; a private registry
        # keeps them out of the scrape registry, which sums the folder instead.
        own = CollectorRegistry()
        self.requests = Counter(
            "customerkey_http_requests",
            "HTTP requests",
            ["method", "route", "status"],
            registry=own,
        )
        self.latency = Histogram(
            "customerkey_http_request_duration_seconds",
            "HTTP request latency",
            ["route"],
            registry=own,
            buckets=_LATENCY_BUCKETS,
        )
        self.key_operations = Counter(
            "customerkey_key_operations",
            "Key operations (encrypt, decrypt, wrapKey, unwrapKey, sign, verify) by result",
            ["operation", "result"],
            registry=own,
        )
        self.cache_lookups = Counter(
            "customerkey_dep_key_cache_lookups",
            "DEP-key cache lookups by result (hit, miss)",
            ["result"],
            registry=own,
        )
        if folder is None:
            self.registry = own
        else:
            self.registry = CollectorRegistry()
            MultiProcessCollector(self.registry, path=folder)  # type: ignore[no-untyped-call]
        self.registry.register(_JobsCollector(jobs))

    def key_operation(self, operation: str, error: BaseException | None) -> None:
        self.key_operations.labels(operation, _result(error)).inc()

    def cache_lookup(self, hit: bool) -> None:
        self.cache_lookups.labels("hit" if hit else "miss").inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)


class MetricsMiddleware:
    """Counts requests and their latency by route template (not raw path, to bound labels)."""

    def __init__(self, app: ASGIApp, metrics: ServerMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = scope.get("route")
            label = getattr(route, "path", "unmatched")
            self.metrics.requests.labels(scope.get("method", ""), label, str(status)).inc()
            self.metrics.latency.labels(label).observe(time.perf_counter() - start)


class LoopbackListener:
    """Plain HTTP on ``127.0.0.1:port`` answering every path with the metrics."""

    def __init__(self, metrics: ServerMetrics, port: int) -> None:
        from prometheus_client import start_http_server

        self._server: Any
        self._thread: threading.Thread
        try:
            self._server, self._thread = start_http_server(
                port, addr="127.0.0.1", registry=metrics.registry
            )
        except OSError as exc:
            raise OSError(f"cannot serve metrics on 127.0.0.1:{port}: {exc}") from None

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
