"""Running the platform server: one process, or a supervisor forking N server processes.

``serve`` runs the HTTPS app (keys API, admin API, token endpoint) with its scheduler and an
in-process job worker in the background. With ``workers`` > 1 (POSIX) it runs N HTTP server
processes instead of one, so requests are not limited to one core by the GIL: the calling
process becomes a supervisor without threads. It has opened the platform (migrations, TLS
files, token keys, all shared on disk); it forks the workers, restarts one that dies, and on
SIGTERM/SIGINT passes SIGTERM on and waits for their graceful shutdown. Each worker binds its
own socket to the port (``SO_REUSEPORT``), so the kernel spreads connections evenly, and builds
its own app from the platform it inherited (a fresh connection pool). The scheduler and the job
worker run in worker 0 only.

Caches are per process. A revocation made through the vault (access removed, key disabled
or deleted) clears the DEP-key cache of the process that made it at once, and is written to
the revocation log in the database in the same transaction; every server process (the one
process, or each worker) follows that log (``storage.revocations``, every
``runtime.revocations.poll_seconds``, default 0.25), so a revocation made by any process on the
same database (another worker, the CLI, the cmdlet shell, ``customerkey worker``, a server on
another host) clears its cache within a poll interval. The principal cache of ``api.deps`` is
bounded by its TTL in each process.

What the operator is told goes through ``say`` (one line or block of text); the front end
decides where it is printed (``server.logs``: the same stream and format as every log line).
On the first start of a new home the banner adds the next steps (back up the master key,
trust the CA, create a tenant, an admin and a vault).

An HSM (``hsm.pkcs11``): PKCS#11 state must not cross ``fork()``, so the supervisor closes its
sessions and finalises the module before it forks, and each worker initialises the module, logs
in and opens a session pool of its own before it serves, one worker at a time (a file lock in
``<home>/run``), and a worker that cannot is restarted like one that died. Token objects live in
the HSM, so a key made through one worker is used by every other. With several workers, each
access line names its ``worker`` and ``pid``.

Metrics (``api.metrics``): with ``--workers`` > 1 the supervisor switches prometheus_client to
its multiprocess mode (a folder ``<home>/run/metrics``, emptied at each start) before it forks,
so a scrape answered by any worker sums them all. The ``loopback`` listener runs in the one
process, or in worker 0.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from customerkey.api import metrics as api_metrics
from customerkey.api.app import create_app
from customerkey.api.deps import ApiContext
from customerkey.api.tokens import TokenSigner
from customerkey.config import Settings
from customerkey.errors import BadParameter, StorageFull
from customerkey.jobs.blob_sweep import SweepReport
from customerkey.runtime import Runtime
from customerkey.server.https import ConnectionLimits, bind_listener, run_https
from customerkey.server.logs import ACCESS_FIELDS
from customerkey.server.tls import (
    CA_CERT_FILE,
    TlsFiles,
    ensure_server_certificate,
    expiry_warning,
    load_operator_certificate,
)
from customerkey.vault.models import OPERATOR

Say = Callable[[str], None]

SCHEDULER_INTERVAL_SECONDS = 60.0
MAX_WORKERS = 64
# A worker that dies sooner than this after its start is restarted only after this long.
RESTART_BACKOFF_SECONDS = 1.0
_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def open_tls(
    runtime: Runtime, settings: Settings, operator: tuple[Path, Path] | None, *, say: Say
) -> TlsFiles:
    """The operator's certificate and key when given, else the local CA's server certificate
    (the CA made on first start; the certificate reissued when its names or expiry call for it).
    """
    if operator is not None:
        try:
            tls = load_operator_certificate(*operator)
        except ValueError as exc:
            raise BadParameter(str(exc)) from None
    else:
        had_ca = (runtime.home.tls_dir / CA_CERT_FILE).exists()
        tls, created = ensure_server_certificate(
            runtime.home.tls_dir,
            settings.domain,
            clock=runtime.clock,
            extra_hosts=tls_hosts(settings),
        )
        if created and not had_ca:
            say(f"Created a local CA and server certificate in {tls.ca_cert.parent}")
        elif created:
            say(f"Issued a new server certificate (same CA): {tls.cert}")
    warning = expiry_warning(tls.cert, runtime.clock.now())
    if warning is not None:
        logging.getLogger("customerkey.serve").warning(warning)
    return tls


def tls_hosts(settings: Settings) -> list[str]:
    """The names the server certificate covers besides localhost and the domain."""
    hosts = list(settings.public_hosts)
    if settings.host.strip() not in ("0.0.0.0", "::", ""):
        hosts.append(settings.host)
    return hosts


def limits(settings: Settings) -> ConnectionLimits:
    return ConnectionLimits(
        header_timeout=settings.header_timeout_seconds,
        keep_alive_timeout=settings.keep_alive_seconds,
        max_connections=settings.max_connections,
    )


def api_context(runtime: Runtime, settings: Settings, signer: TokenSigner) -> ApiContext:
    # URLs handed out name the public port (a load balancer's), not the one listened on.
    port = settings.public_port or settings.port
    return ApiContext(runtime=runtime, signer=signer, domain=settings.domain, port=port)


def prepare_metrics(runtime: Runtime, settings: Settings, workers: int) -> None:
    """Before any app exists: the metrics token file, and multiprocess mode for workers."""
    if settings.metrics == "token":
        api_metrics.ensure_token(settings, runtime.rng)
    if workers > 1:
        api_metrics.enable_multiprocess(runtime.home.path / "run" / "metrics")


def start_loopback_metrics(
    settings: Settings, metrics: api_metrics.ServerMetrics
) -> api_metrics.LoopbackListener | None:
    if settings.metrics != "loopback":
        return None
    try:
        return api_metrics.LoopbackListener(metrics, settings.metrics_port)
    except OSError as exc:
        raise BadParameter(str(exc)) from None


def open_signer(runtime: Runtime, settings: Settings) -> TokenSigner:
    return TokenSigner.open(
        runtime.home.token_keys_dir,
        clock=runtime.clock,
        rng=runtime.rng,
        issuer=f"https://localhost:{settings.port}",
    )


def serve(
    runtime: Runtime,
    settings: Settings,
    tls: TlsFiles,
    signer: TokenSigner,
    *,
    workers: int,
    scheduler_interval: float,
    say: Say,
    first_start: bool = False,
) -> int:
    """Serve until SIGTERM/SIGINT; returns the exit status (1 when a worker process failed).
    ``first_start``: the home was made by this start (the banner then adds the next steps)."""
    prepare_metrics(runtime, settings, workers)
    if workers > 1:
        return supervise(
            runtime,
            settings,
            tls,
            signer,
            workers,
            scheduler_interval,
            say=say,
            first_start=first_start,
        )
    app = create_app(api_context(runtime, settings, signer))
    stop = threading.Event()

    def started() -> None:
        say(started_banner(settings, tls, home=runtime.home.path, first_start=first_start))

    listener = start_loopback_metrics(settings, app.state.metrics)
    runtime.revocations.start()  # before the first request can fill the cache
    worker_thread = start_background(runtime, stop, scheduler_interval, tls)
    try:
        run_https(
            app,
            host=settings.host,
            port=settings.port,
            tls=tls,
            on_started=started,
            limits=limits(settings),
        )
    except RuntimeError as exc:
        raise BadParameter(str(exc)) from None
    finally:
        stop.set()
        worker_thread.join(timeout=30)
        runtime.revocations.stop()
        if listener is not None:
            listener.close()
    return 0


def started_banner(
    settings: Settings,
    tls: TlsFiles,
    workers: int = 1,
    *,
    home: Path | None = None,
    first_start: bool = False,
) -> str:
    port = settings.public_port or settings.port
    suffix = "" if port == 443 else f":{port}"
    listen = "" if settings.port == 443 else f":{settings.port}"
    processes = f" ({workers} worker processes)" if workers > 1 else ""
    openapi = " (OpenAPI at /docs)" if settings.openapi == "public" else ""
    metrics = {
        "token": f"https://localhost{suffix}/metrics (bearer token in the metrics token file)",
        "loopback": f"http://127.0.0.1:{settings.metrics_port}/metrics (this machine only)",
        "public": f"https://localhost{suffix}/metrics",
        "off": "off",
    }[settings.metrics]
    banner = (
        f"customerkey listening on https://{settings.host}{listen}{processes}\n"
        f"  vaults:    https://<vault>.{settings.domain}{suffix}/\n"
        f"  admin API: https://localhost{suffix}/api/v1{openapi}\n"
        f"  token:     https://localhost{suffix}/<tenant>/oauth2/v2.0/token\n"
        f"  metrics:   {metrics}\n"
        f"  CA file:   {tls.ca_cert}  (trust it: REQUESTS_CA_BUNDLE / SSL_CERT_FILE)"
    )
    if first_start and home is not None:
        banner += "\n" + next_steps(home, tls)
    return banner


def next_steps(home: Path, tls: TlsFiles) -> str:
    """What to do after the first start of a new installation."""
    cli = f"customerkey --home {home}"
    return (
        "This is a new installation. Next steps:\n"
        f"  1. Back up {home / 'master.key'} now, and keep it apart from the data: every key "
        "in every vault is sealed under it; without it nothing can be recovered.\n"
        f"  2. Trust the CA on each client: export REQUESTS_CA_BUNDLE={tls.ca_cert}\n"
        "  3. Create a tenant and its admin (the admin's client secret is printed once):\n"
        f"       {cli} tenant create contoso --mail-domain contoso.com\n"
        f"       {cli} principal create admin@contoso.com --tenant contoso "
        "--roles tenant-admin\n"
        "  4. Create a vault and a key:\n"
        f"       {cli} vault create contoso-vault-1 --subscription contoso-sub "
        "--region eastus --tenant contoso\n"
        f"       {cli} key create contoso-vault-1 root-key-1"
    )


def scheduler_loop(
    runtime: Runtime, stop: threading.Event, interval: float, tls: TlsFiles | None = None
) -> None:
    log = logging.getLogger("customerkey.scheduler")
    warned_on: object = None
    while not stop.wait(interval):
        if tls is not None:
            # The certificate served was loaded at start: say so once a day as it nears expiry.
            now = runtime.clock.now()
            warning = expiry_warning(tls.cert, now)
            if warning is not None and warned_on != now.date():
                warned_on = now.date()
                log.warning(warning)
        try:
            report = runtime.vault.tick(OPERATOR)
            if any((report.purged_keys, report.purged_vaults, report.rotated_keys)):
                log.info("scheduler: %s", report)
        except StorageFull:
            pass  # logged once by the database; the next tick retries
        except Exception:  # keep ticking; the next tick retries
            log.exception("scheduler tick failed")


def startup_sweep(runtime: Runtime) -> SweepReport | None:
    """Sweep the blob store once as a worker starts (``customerkey worker``, the job worker of
    ``customerkey serve``). Never raises: a failed sweep is logged and the worker runs on (the
    next start sweeps again)."""
    log = logging.getLogger("customerkey.sweep")
    try:
        report = runtime.blob_sweeper.sweep(OPERATOR)
    except Exception:
        log.exception("blob sweep at worker start failed; the worker runs on")
        return None
    if report.orphans or report.temp_files:
        log.info(
            "blob sweep: removed %d orphaned blob(s) and %d staging file(s), %d bytes",
            report.orphans,
            report.temp_files,
            report.bytes_reclaimed,
        )
    return report


def start_background(
    runtime: Runtime, stop: threading.Event, scheduler_interval: float, tls: TlsFiles | None = None
) -> threading.Thread:
    """Start the scheduler and the job worker threads; returns the job worker's thread."""
    ticker = threading.Thread(
        target=scheduler_loop,
        args=(runtime, stop, scheduler_interval, tls),
        daemon=True,
        name="customerkey-scheduler",
    )
    worker = runtime.worker()

    def work() -> None:
        startup_sweep(runtime)  # in this thread: the server does not wait for it
        worker.run_forever(stop)

    worker_thread = threading.Thread(target=work, daemon=True, name="customerkey-worker")
    ticker.start()
    worker_thread.start()
    return worker_thread


def supervise(
    runtime: Runtime,
    settings: Settings,
    tls: TlsFiles,
    signer: TokenSigner,
    workers: int,
    scheduler_interval: float,
    *,
    say: Say,
    first_start: bool = False,
) -> int:
    """Fork ``workers`` HTTP server processes, keep them running, stop them on a signal.

    Returns 1 when a worker exited with a failure during the shutdown, else 0."""
    if not hasattr(os, "fork") or not hasattr(socket, "SO_REUSEPORT"):
        raise BadParameter("--workers needs a POSIX system with SO_REUSEPORT.")
    log = logging.getLogger("customerkey.serve")
    try:
        # Held (bound, never listening) for as long as we run: a port taken by another
        # program fails here, before any worker starts.
        reserved = bind_listener(settings.host, settings.port, reuse_port=True)
    except OSError as exc:
        raise BadParameter(f"cannot listen on {settings.host}:{settings.port}: {exc}") from None
    if settings.metrics == "loopback":
        try:  # taken by another program: fail here, not in worker 0
            bind_listener("127.0.0.1", settings.metrics_port).close()
        except OSError as exc:
            reserved.close()
            raise BadParameter(
                f"cannot serve metrics on 127.0.0.1:{settings.metrics_port}: {exc}"
            ) from None
    runtime.db.dispose()  # no connection may be shared with the children
    runtime.release_hsm_before_fork()  # nor any PKCS#11 session
    children: dict[int, tuple[int, float]] = {}  # pid -> (worker index, start time)
    stopping = False

    def spawn(index: int) -> None:
        # Signals stay blocked across fork so the child never runs the supervisor's handler.
        signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)
        try:
            pid = os.fork()
            if pid == 0:
                code = 1
                try:
                    for sig in _STOP_SIGNALS:
                        signal.signal(sig, signal.SIG_DFL)
                    signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOP_SIGNALS)
                    reserved.close()
                    code = worker_process(
                        index, runtime, settings, tls, signer, scheduler_interval, say=say
                    )
                except BaseException:
                    log.exception("worker %d failed", index)
                finally:
                    sys.stdout.flush()
                    sys.stderr.flush()
                    os._exit(code)
            children[pid] = (index, time.monotonic())
        finally:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOP_SIGNALS)

    def stop_children(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        for pid in list(children):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)

    previous = {sig: signal.signal(sig, stop_children) for sig in _STOP_SIGNALS}
    failed = False
    try:
        for index in range(workers):
            spawn(index)
        say(started_banner(settings, tls, workers, home=runtime.home.path, first_start=first_start))
        while children:
            try:
                pid, status = os.wait()
            except ChildProcessError:
                break
            index, started = children.pop(pid, (-1, 0.0))
            if index < 0:
                continue
            code = os.waitstatus_to_exitcode(status)
            if stopping:
                failed = failed or code != 0
                continue
            log.warning("worker %d (pid %d) exited with status %d; restarting it", index, pid, code)
            if time.monotonic() - started < RESTART_BACKOFF_SECONDS:
                time.sleep(RESTART_BACKOFF_SECONDS)
            if not stopping:
                spawn(index)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        reserved.close()
    return 1 if failed else 0


def worker_process(
    index: int,
    runtime: Runtime,
    settings: Settings,
    tls: TlsFiles,
    signer: TokenSigner,
    scheduler_interval: float,
    *,
    say: Say,
) -> int:
    """One forked HTTP server process; returns its exit status."""
    runtime.db.engine.dispose(close=False)  # the parent's pool, if any, is not ours
    with _one_at_a_time(runtime.home.path / "run" / "pkcs11.lock"):
        runtime.reopen_hsm_after_fork()
    if runtime.hsm is not None:
        logging.getLogger("customerkey.serve").info(
            "worker %d (pid %d): PKCS#11 module initialised and logged in by this process",
            index,
            os.getpid(),
        )
    logging.getLogger("customerkey.access").addFilter(_WorkerTag(index))
    app = create_app(api_context(runtime, settings, signer))
    stop = threading.Event()
    runtime.revocations.start()  # this process's own follower, before any request
    threads = []
    listener = None
    if index == 0:
        threads.append(start_background(runtime, stop, scheduler_interval, tls))
        try:
            listener = start_loopback_metrics(settings, app.state.metrics)
        except BadParameter as exc:  # the port was taken after the supervisor's check
            logging.getLogger("customerkey.serve").error("worker 0: %s", exc.message)
    sock = bind_listener(settings.host, settings.port, reuse_port=True)
    try:
        run_https(
            app,
            host=settings.host,
            port=settings.port,
            tls=tls,
            sockets=[sock],
            limits=limits(settings),
        )
    except RuntimeError as exc:
        say(f"worker {index}: {exc}")
        return 1
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=30)
        if listener is not None:
            listener.close()
        sock.close()
        runtime.close()  # stops the revocation relay too
    return 0


@contextlib.contextmanager
def _one_at_a_time(lock_file: Path) -> Iterator[None]:
    """Workers open the HSM one after the other: SoftHSM rewrites its token file at each login,
    and a process initialising the module meanwhile may not find the token at all."""
    lock_file.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    with lock_file.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


class _WorkerTag(logging.Filter):
    """Adds ``worker`` and ``pid`` to the access lines of a worker process."""

    def __init__(self, index: int) -> None:
        super().__init__()
        self.index = index

    def filter(self, record: logging.LogRecord) -> bool:
        fields = getattr(record, ACCESS_FIELDS, None)
        if isinstance(fields, dict):
            setattr(record, ACCESS_FIELDS, {**fields, "worker": self.index, "pid": os.getpid()})
        return True
