"""``customerkey serve``: the platform server (HTTPS keys API, admin API, token endpoint) with
its scheduler and an in-process job worker running in the background."""

from __future__ import annotations

import logging
import sys
import threading
from pathlib import Path

import typer

from customerkey.api.app import create_app
from customerkey.api.deps import ApiContext
from customerkey.api.server import run_https
from customerkey.api.tls import TlsFiles, ensure_server_certificate, load_operator_certificate
from customerkey.api.tokens import TokenSigner
from customerkey.cli.context import cli_context
from customerkey.cli.output import err_console
from customerkey.config import Settings
from customerkey.errors import BadParameter
from customerkey.runtime import Runtime
from customerkey.vault.models import OPERATOR

SCHEDULER_INTERVAL_SECONDS = 60.0


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
    context = ApiContext(runtime=runtime, signer=signer, domain=settings.domain, port=settings.port)
    app = create_app(context)
    stop = threading.Event()
    ticker = threading.Thread(
        target=_scheduler,
        args=(runtime, stop, scheduler_interval),
        daemon=True,
        name="customerkey-scheduler",
    )

    def started() -> None:
        suffix = "" if settings.port == 443 else f":{settings.port}"
        err_console.print(
            f"customerkey listening on https://{settings.host}{suffix}\n"
            f"  vaults:    https://<vault>.{settings.domain}{suffix}/\n"
            f"  admin API: https://localhost{suffix}/api/v1 (OpenAPI at /docs)\n"
            f"  token:     https://localhost{suffix}/<tenant>/oauth2/v2.0/token\n"
            f"  CA file:   {tls.ca_cert}  (trust it: REQUESTS_CA_BUNDLE / SSL_CERT_FILE)",
            markup=False,
        )

    worker = runtime.worker()
    worker_thread = threading.Thread(
        target=worker.run_forever, args=(stop,), daemon=True, name="customerkey-worker"
    )
    ticker.start()
    worker_thread.start()
    try:
        run_https(app, host=settings.host, port=settings.port, tls=tls, on_started=started)
    except RuntimeError as exc:
        raise BadParameter(str(exc)) from None
    finally:
        stop.set()
        worker_thread.join(timeout=30)
