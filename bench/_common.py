"""What every benchmark shares: result rows, timing helpers, machine facts, a fresh platform.

A benchmark module exposes ``NAME`` (what ``--only`` takes), ``TITLE`` and
``run(quick: bool) -> list[Row]``. Each ``Row`` puts one figure of ours next to a baseline
measured in the same run on the same data, with the ratio and the target (if the issue set
one). Nothing here asserts a timing: a missed target is reported, never raised.
"""

from __future__ import annotations

import gc
import os
import platform
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from customerkey.config import Settings
from customerkey.identity.workload_principals import EXCHANGE
from customerkey.runtime import Runtime
from customerkey.vault.models import OPERATOR

TENANT = "contoso"
MAIL_DOMAIN = "contoso.com"
VAULT_A = "Contoso-O365EX-NA-VaultA1"
VAULT_B = "Contoso-O365EX-NA-VaultA2"
KEY_A = "Contoso-O365EX-NA-VaultA1-Key001"
KEY_B = "Contoso-O365EX-NA-VaultA2-Key001"
URI_A = f"https://{VAULT_A.lower()}.vault.azure.net/keys/{KEY_A}"
URI_B = f"https://{VAULT_B.lower()}.vault.azure.net/keys/{KEY_B}"
DEP_NAME = "NA-DEP"

KIB = 1024
MIB = 1024 * 1024


@dataclass
class Row:
    """One figure of ours next to its baseline from the same run."""

    benchmark: str
    case: str
    metric: str  # what ``value`` measures, with its unit, e.g. "seal MB/s"
    value: float
    baseline: str = ""  # the baseline's name, "" when there is none
    baseline_value: float | None = None
    ratio: float | None = None  # value / baseline_value, or as ``ratio_note`` says
    target: str = ""
    met: bool | None = None  # None: no target, or not measurable here
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def ratio(ours: float, baseline: float | None) -> float | None:
    if baseline is None or baseline == 0:
        return None
    return ours / baseline


def rate(fn: Callable[[], object], *, min_time: float, repeats: int, batch: int = 1) -> float:
    """Best-of-``repeats`` calls per second of ``fn``; each repeat runs ``fn`` (``batch`` calls
    at a time) until at least ``min_time`` seconds have passed. GC is paused while timing."""
    best = 0.0
    fn()  # warm-up: caches, allocator, lazy imports
    for _ in range(repeats):
        calls = 0
        gc_was = gc.isenabled()
        gc.disable()
        try:
            start = time.perf_counter()
            deadline = start + min_time
            while True:
                for _ in range(batch):
                    fn()
                calls += batch
                now = time.perf_counter()
                if now >= deadline:
                    break
        finally:
            if gc_was:
                gc.enable()
        best = max(best, calls / (now - start))
    return best


def interleaved_rates(
    fns: dict[str, Callable[[], object]], *, min_time: float, repeats: int
) -> dict[str, float]:
    """Best-of-``repeats`` calls per second of each function, the functions taking turns in
    every repeat so that a noisy moment on the shared machine hits them alike."""
    best = dict.fromkeys(fns, 0.0)
    for _ in range(repeats):
        for name, fn in fns.items():
            best[name] = max(best[name], rate(fn, min_time=min_time, repeats=1))
    return best


def best_time(fn: Callable[[], object], *, repeats: int) -> float:
    """Shortest wall time of ``repeats`` calls of ``fn`` (no warm-up: ``fn`` may be stateful)."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def percentile(values: list[float], pct: float) -> float:
    """The ``pct`` percentile (0..100) of ``values`` by the nearest-rank method."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(pct / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def machine() -> dict[str, Any]:
    """The facts bench/README.md records next to the results."""
    import cryptography

    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = os.getloadavg() if hasattr(os, "getloadavg") else (0.0, 0.0, 0.0)
    info: dict[str, Any] = {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "python": platform.python_version(),
        "cryptography": cryptography.__version__,
        "platform": platform.platform(),
        "loadavg_at_start": [round(x, 2) for x in load],
    }
    try:
        import aws_encryption_sdk

        info["aws_encryption_sdk"] = aws_encryption_sdk.__version__
    except ImportError:
        info["aws_encryption_sdk"] = None
    return info


@contextmanager
def temp_dir(prefix: str) -> Iterator[Path]:
    """A temporary folder (under $TMPDIR) removed afterwards, whatever happened."""
    path = Path(tempfile.mkdtemp(prefix=f"ckbench-{prefix}-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def open_runtime(home: Path, **settings: Any) -> Runtime:
    """A platform on its own home folder, always on SQLite in that folder (whatever
    CUSTOMERKEY_DATABASE_URL says), as ``customerkey serve`` would build it."""
    return Runtime.open(
        Settings(home=home, database_url=f"sqlite:///{home / 'customerkey.db'}", **settings)
    )


def setup_dep(rt: Runtime) -> tuple[str, str]:
    """Tenant, two vaults with an RSA-2048 root key each granted to the mail workload, and a
    DEP over both; returns (policy id, current generation id)."""
    rt.tenants.create(OPERATOR, TENANT, mail_domain=MAIL_DOMAIN)
    for vault, region, key in ((VAULT_A, "eastus", KEY_A), (VAULT_B, "westus", KEY_B)):
        rt.vault.create_vault(
            OPERATOR,
            vault,
            subscription="contoso-sub",
            region=region,
            tenant=TENANT,
            purge_protection=True,
        )
        rt.vault.create_key(OPERATOR, vault, key, kty="RSA-HSM", key_ops=["wrapKey", "unwrapKey"])
        rt.vault.set_access_policy(
            OPERATOR, vault, EXCHANGE.app_id, ["wrapKey", "unwrapKey", "get"]
        )
    policy = rt.policies.create(OPERATOR, TENANT, DEP_NAME, [URI_A, URI_B], description="bench")
    assert policy.current_generation_id is not None
    return policy.id, policy.current_generation_id


def fmt_number(value: float | None) -> str:
    if value is None:
        return "-"
    if value != value:  # NaN
        return "n/a"
    magnitude = abs(value)
    if magnitude >= 1000:
        return f"{value:,.0f}"
    if magnitude >= 100:
        return f"{value:.0f}"
    if magnitude >= 10:
        return f"{value:.1f}"
    if magnitude >= 1:
        return f"{value:.2f}"
    return f"{value:.3f}"
