"""``customerkey serve``: the platform server (HTTPS keys API, admin API, token endpoint) with
its scheduler and an in-process job worker running in the background.

``--workers N`` (N > 1, POSIX) runs N HTTP server processes instead of one, so requests are not
limited to one core by the GIL. The command's process becomes a supervisor without threads:
it opens the platform (migrations, TLS files, token keys, all shared on disk), then forks the
workers, restarts one that dies, and on SIGTERM/SIGINT passes SIGTERM on and waits for their
graceful shutdown. Each worker binds its own socket to the port (``SO_REUSEPORT``), so the
kernel spreads connections evenly, and builds its own app from the platform it inherited (a
fresh connection pool). The scheduler and the job worker run in worker 0 only.

Caches are per process. A revocation made through the vault (access removed, key disabled
or deleted) clears the DEP-key cache of the process that made it at once, and is written to
the revocation log in the database in the same transaction; every server process (the one
process, or each worker) follows that log (``storage.revocations``, every
``--revocation-poll`` seconds, default 0.25), so a revocation made by any process on the same
database (another worker, the CLI, the cmdlet shell, ``customerkey worker``, a server on
another host) clears its cache within a poll interval. The principal cache of ``api.deps`` is
bounded by its TTL in each process.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import sys
import threading
import time
import traceback
from pathlib import Path

import typer

from customerkey.api.app import create_app
from customerkey.api.deps import ApiContext
from customerkey.api.server import bind_listener, run_https
from customerkey.api.tls import TlsFiles, ensure_server_certificate, load_operator_certificate
from customerkey.api.tokens import TokenSigner
from customerkey.cli.context import cli_context
from customerkey.cli.output import err_console
from customerkey.cli.storage_commands import startup_sweep
from customerkey.config import Settings
from customerkey.errors import BadParameter
from customerkey.runtime import Runtime
from customerkey.storage.revocations import POLL_SECONDS
from customerkey.vault.models import OPERATOR

SCHEDULER_INTERVAL_SECONDS = 60.0
MAX_WORKERS = 64
# A worker that dies sooner than this after its start is restarted only after this long.
RESTART_BACKOFF_SECONDS = 1.0
_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def _scheduler(runtime: Runtime, stop: threading.Event, interval: float) -> None:
    log = logging.getLogger("customerkey.scheduler")
    while not stop.wait(interval):
        try:
            report = runtime.vault.tick(OPERATOR)
            if any((report.purged_keys, report.purged_vaults, report.rotated_keys)):
                log.info("scheduler: %s", report)
        except Exception:  # keep ticking; the next tick retries
            log.exception("scheduler tick failed")


def serve(
    ctx: typer.Context,
    host: str | None = typer.Option(None, "--host", help="Listen address (default 127.0.0.1)."),
    port: int | None = typer.Option(None, "--port", help="HTTPS port (default 8443)."),
    domain: str | None = typer.Option(
        None, "--domain", help="Vaults answer at https://<vault>.<domain> (vault.localhost)."
    ),
    cert: Path | None = typer.Option(None, "--cert", help="Your own server certificate (PEM)."),
    key: Path | None = typer.Option(None, "--key", help="Its private key (PEM)."),
    scheduler_interval: float = typer.Option(
        SCHEDULER_INTERVAL_SECONDS, "--scheduler-interval", help="Seconds between ticks."
    ),
    workers: int = typer.Option(
        1,
        "--workers",
        min=1,
        max=MAX_WORKERS,
        help="HTTP server processes (POSIX); the scheduler and job worker run in the first.",
    ),
    revocation_poll: float = typer.Option(
        POLL_SECONDS,
        "--revocation-poll",
        min=0.01,
        max=60.0,
        help="Seconds between reads of the revocation log (made by the CLI, other processes).",
    ),
) -> None:
    """Run the platform: HTTPS only, a local CA made on first start unless --cert/--key."""
    c = cli_context(ctx)
    base = c.settings()
    overrides = {
        k: v for k, v in {"host": host, "port": port, "domain": domain}.items() if v is not None
    }
    settings = Settings(**{**base.model_dump(), **overrides})
    if (cert is None) != (key is None):
        raise BadParameter("Give both --cert and --key, or neither.")
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(message)s")
    runtime = Runtime.open(settings)
    c._runtime = runtime  # closed with the CLI context
    runtime.revocations.poll_seconds = revocation_poll
    tls: TlsFiles
    if cert is not None and key is not None:
        try:
            tls = load_operator_certificate(cert, key)
        except ValueError as exc:
            raise BadParameter(str(exc)) from None
    else:
        tls, created = ensure_server_certificate(
            runtime.home.tls_dir, settings.domain, clock=runtime.clock
        )
        if created:
            err_console.print(f"Created a local CA and server certificate in {tls.ca_cert.parent}")
    signer = TokenSigner.open(
        runtime.home.token_keys_dir,
        clock=runtime.clock,
        rng=runtime.rng,
        issuer=f"https://localhost:{settings.port}",
    )
    if workers > 1:
        _supervise(runtime, settings, tls, signer, workers, scheduler_interval)
        return
    context = ApiContext(runtime=runtime, signer=signer, domain=settings.domain, port=settings.port)
    app = create_app(context)
    stop = threading.Event()

    def started() -> None:
        _print_started(settings, tls)

    runtime.revocations.start()  # before the first request can fill the cache
    worker_thread = _start_background(runtime, stop, scheduler_interval)
    try:
        run_https(app, host=settings.host, port=settings.port, tls=tls, on_started=started)
    except RuntimeError as exc:
        raise BadParameter(str(exc)) from None
    finally:
        stop.set()
        worker_thread.join(timeout=30)
        runtime.revocations.stop()


def _print_started(settings: Settings, tls: TlsFiles, workers: int = 1) -> None:
    suffix = "" if settings.port == 443 else f":{settings.port}"
    processes = f" ({workers} worker processes)" if workers > 1 else ""
    err_console.print(
        f"customerkey listening on https://{settings.host}{suffix}{processes}\n"
        f"  vaults:    https://<vault>.{settings.domain}{suffix}/\n"
        f"  admin API: https://localhost{suffix}/api/v1 (OpenAPI at /docs)\n"
        f"  token:     https://localhost{suffix}/<tenant>/oauth2/v2.0/token\n"
        f"  CA file:   {tls.ca_cert}  (trust it: REQUESTS_CA_BUNDLE / SSL_CERT_FILE)",
        markup=False,
    )


def _start_background(
    runtime: Runtime, stop: threading.Event, scheduler_interval: float
) -> threading.Thread:
    """Start the scheduler and the job worker threads; returns the job worker's thread."""
    ticker = threading.Thread(
        target=_scheduler,
        args=(runtime, stop, scheduler_interval),
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


def _supervise(
    runtime: Runtime,
    settings: Settings,
    tls: TlsFiles,
    signer: TokenSigner,
    workers: int,
    scheduler_interval: float,
) -> None:
    """Fork ``workers`` HTTP server processes, keep them running, stop them on a signal."""
    if not hasattr(os, "fork") or not hasattr(socket, "SO_REUSEPORT"):
        raise BadParameter("--workers needs a POSIX system with SO_REUSEPORT.")
    log = logging.getLogger("customerkey.serve")
    try:
        # Held (bound, never listening) for as long as we run: a port taken by another
        # program fails here, before any worker starts.
        reserved = bind_listener(settings.host, settings.port, reuse_port=True)
    except OSError as exc:
        raise BadParameter(f"cannot listen on {settings.host}:{settings.port}: {exc}") from None
    runtime.db.dispose()  # no connection may be shared with the children
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
                    code = _worker_process(
                        index, runtime, settings, tls, signer, scheduler_interval
                    )
                except BaseException:
                    traceback.print_exc()
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
        _print_started(settings, tls, workers)
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
    if failed:
        raise typer.Exit(1)


def _worker_process(
    index: int,
    runtime: Runtime,
    settings: Settings,
    tls: TlsFiles,
    signer: TokenSigner,
    scheduler_interval: float,
) -> int:
    """One forked HTTP server process; returns its exit status."""
    runtime.db.engine.dispose(close=False)  # the parent's pool, if any, is not ours
    context = ApiContext(runtime=runtime, signer=signer, domain=settings.domain, port=settings.port)
    app = create_app(context)
    stop = threading.Event()
    runtime.revocations.start()  # this process's own follower, before any request
    threads = []
    if index == 0:
        threads.append(_start_background(runtime, stop, scheduler_interval))
    sock = bind_listener(settings.host, settings.port, reuse_port=True)
    try:
        run_https(app, host=settings.host, port=settings.port, tls=tls, sockets=[sock])
    except RuntimeError as exc:
        err_console.print(f"worker {index}: {exc}", markup=False)
        return 1
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=30)
        sock.close()
        runtime.close()  # stops the revocation relay too
    return 0
