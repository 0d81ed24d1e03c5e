"""``customerkey serve``: the platform server (HTTPS keys API, admin API, token endpoint) with
its scheduler and an in-process job worker running in the background.

The command reads its options and opens the platform; running it (one process, or a supervisor
forking ``--workers`` server processes) is ``customerkey.server.supervisor``'s, which also says
how revocations reach every process's caches. Everything the server writes goes through
``server.logs`` in one format (``log_format``), the banner and next steps included.
"""

from __future__ import annotations

import logging
from pathlib import Path

import typer

from customerkey.cli.context import cli_context
from customerkey.config import load_settings
from customerkey.errors import BadParameter
from customerkey.home import Home
from customerkey.runtime import Runtime
from customerkey.server import supervisor
from customerkey.server.logs import configure_logging
from customerkey.storage.revocations import POLL_SECONDS
from customerkey.vault.key_types import KEY_TYPES


def _say(text: str) -> None:
    logging.getLogger("customerkey.serve").info(text)


def _protection(runtime: Runtime) -> list[str]:
    """Which protector keeps which key types (and, for an HSM, by which mechanisms)."""
    held = runtime.hsm.serves if runtime.hsm is not None else ()
    software = ", ".join(kty for kty in KEY_TYPES if kty not in held)
    lines = [f"Key protection: {software} in software, sealed under the master key"]
    if runtime.hsm is not None:
        first, *rest = runtime.hsm.describe()
        lines += [f"Key protection: {first}", *rest]
    return lines


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
        supervisor.SCHEDULER_INTERVAL_SECONDS,
        "--scheduler-interval",
        help="Seconds between ticks.",
    ),
    workers: int = typer.Option(
        1,
        "--workers",
        min=1,
        max=supervisor.MAX_WORKERS,
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
    settings = load_settings(**{**base.model_dump(), **overrides})
    if (cert is None) != (key is None):
        raise BadParameter("Give both --cert and --key, or neither.")
    configure_logging(settings.log_format)
    first_start = not Home(settings.home).exists()
    runtime = Runtime.open(settings)
    c._runtime = runtime  # closed with the CLI context
    for line in _protection(runtime):
        _say(line)
    runtime.revocations.poll_seconds = revocation_poll
    operator = (cert, key) if cert is not None and key is not None else None
    tls = supervisor.open_tls(runtime, settings, operator, say=_say)
    signer = supervisor.open_signer(runtime, settings)
    code = supervisor.serve(
        runtime,
        settings,
        tls,
        signer,
        workers=workers,
        scheduler_interval=scheduler_interval,
        say=_say,
        first_start=first_start,
    )
    if code:
        raise typer.Exit(code)
