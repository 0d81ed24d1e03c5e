"""``customerkey tls ...``: the local CA and the server certificate ``serve`` made.

``show`` prints both certificates and when they expire; ``renew`` issues a new server
certificate under the same CA (clients that trust ``ca.pem`` go on trusting the server), which
a running server uses from its next start. The work is ``customerkey.server.tls``'s.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import typer

from customerkey.cli.context import NoInstallation, cli_context
from customerkey.cli.output import console, emit_list, emit_object, err_console
from customerkey.clock import SystemClock
from customerkey.errors import BadParameter
from customerkey.home import Home
from customerkey.server.supervisor import tls_hosts
from customerkey.server.tls import (
    CA_CERT_FILE,
    SERVER_CERT_FILE,
    CertificateInfo,
    describe_certificate,
    expiry_warning,
    renew_server_certificate,
)

app = typer.Typer(help="The local CA and server certificate: show, renew.")

COLUMNS = ["Certificate", "NotAfter", "DaysLeft", "Path"]


def _home(ctx: typer.Context) -> tuple[Home, str, list[str]]:
    settings = cli_context(ctx).settings()
    home = Home(settings.home)
    if not home.exists():
        raise NoInstallation(
            f"No installation at {settings.home}; run 'customerkey init' to create one "
            "(or check --home / CUSTOMERKEY_HOME)."
        )
    return home, settings.domain, tls_hosts(settings)


def _view(what: str, info: CertificateInfo, now: datetime) -> dict[str, Any]:
    return {
        "Certificate": what,
        "Subject": info.subject,
        "Issuer": info.issuer,
        "NotBefore": info.not_before.isoformat(timespec="seconds"),
        "NotAfter": info.not_after.isoformat(timespec="seconds"),
        "DaysLeft": (info.not_after - now).days,
        "Names": list(info.names),
        "Path": str(info.path),
    }


@app.command("show")
def show(ctx: typer.Context) -> None:
    """Show the local CA and server certificates and when they expire."""
    c = cli_context(ctx)
    home, _, _ = _home(ctx)
    now = SystemClock().now()
    views = []
    for what, name in (("CA", CA_CERT_FILE), ("Server", SERVER_CERT_FILE)):
        path = home.tls_dir / name
        if not path.exists():
            continue
        try:
            views.append(_view(what, describe_certificate(path), now))
        except ValueError as exc:
            raise BadParameter(str(exc)) from None
    if not views:
        raise BadParameter(f"No certificates in {home.tls_dir}; 'customerkey serve' makes them.")
    if c.as_json:
        emit_list(views, COLUMNS, as_json=True)
        return
    emit_list(views, COLUMNS, as_json=False)
    warning = expiry_warning(home.tls_dir / SERVER_CERT_FILE, now)
    if warning is not None:
        err_console.print(warning, markup=False)


@app.command("renew")
def renew(ctx: typer.Context) -> None:
    """Issue a new server certificate (a year) under the same local CA; restart serve after."""
    c = cli_context(ctx)
    home, domain, hosts = _home(ctx)
    clock = SystemClock()
    try:
        files = renew_server_certificate(home.tls_dir, domain, clock=clock, extra_hosts=hosts)
        view = _view("Server", describe_certificate(files.cert), clock.now())
    except ValueError as exc:
        raise BadParameter(str(exc)) from None
    emit_object(view, as_json=c.as_json)
    if not c.as_json:
        console.print(
            "Restart customerkey serve to use it; clients that trust "
            f"{files.ca_cert} need nothing new."
        )
