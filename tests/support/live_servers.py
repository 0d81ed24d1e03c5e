"""A real ``customerkey serve`` subprocess per test module, and what tests need to talk to it.

``live_server`` (module scope) starts ``python -m customerkey.cli.main --home DIR serve`` on a
free loopback port with its own home folder (SQLite, a CA made on first start), polls
``/healthz`` until it answers over verified TLS, and creates a tenant admin through the CLI
(``tenant create contoso``, then ``principal create ... --roles tenant-admin --json``) so
modules can set up vaults, principals and access policies through the admin API, which is much
faster than one CLI process each. At teardown it sends SIGTERM and requires a clean exit
(status 0).

``live`` (function scope) hands out the same server and fails the test if the server logged
an unhandled exception while it ran: no request may produce a 500.

Vault hosts (``<vault>.vault.localhost``) resolve to loopback in this process while a server is
up (``customerkey.azure.install_loopback_resolver``).
"""

from __future__ import annotations

import json
import signal
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from customerkey.azure import ClientSecretCredential
from customerkey.azure.localdns import install_loopback_resolver, uninstall_loopback_resolver
from tests.support.servers import clean_env, free_port
from tests.support.softhsm import SoftHsm

DOMAIN = "vault.localhost"
TENANT = "contoso"
ADMIN = "admin@contoso.com"
START_TIMEOUT = 60.0
STOP_TIMEOUT = 20.0
# Lines the server writes only when something went wrong that is not the caller's fault.
BUG_MARKERS = ("unhandled error in", "Exception in ASGI application", "Traceback (most recent")


@dataclass
class LiveServer:
    """One running ``customerkey serve`` and helpers to reach it the way clients do."""

    home: Path
    port: int
    process: subprocess.Popen[bytes]
    log_path: Path
    admin_secret: str = ""
    admin_view: dict[str, Any] = field(default_factory=dict)
    # Settings the server was started with (a database URL, say); its CLI runs get them too.
    env: dict[str, str] = field(default_factory=dict)
    _http: httpx.Client | None = None
    _admin_token: str | None = None

    # ---------------------------------------------------------------- addresses and TLS

    @property
    def url(self) -> str:
        """The bare host: token endpoint, admin API, /healthz, /metrics."""
        return f"https://localhost:{self.port}"

    @property
    def resource(self) -> str:
        return f"https://{DOMAIN}:{self.port}"

    def vault_url(self, vault: str) -> str:
        return f"https://{vault}.{DOMAIN}:{self.port}"

    @property
    def ca(self) -> Path:
        return self.home / "tls" / "ca.pem"

    def ssl_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca))

    @property
    def http(self) -> httpx.Client:
        """An httpx client that verifies the server against the generated CA."""
        if self._http is None:
            self._http = httpx.Client(verify=self.ssl_context(), timeout=30)
        return self._http

    # ---------------------------------------------------------------- the CLI on this home

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [sys.executable, "-m", "customerkey.cli.main", "--home", str(self.home), *args],
            capture_output=True,
            text=True,
            env={**clean_env(), **self.env},
            timeout=60,
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"customerkey {' '.join(args)} exited {result.returncode}:\n{result.stderr}"
            )
        return result

    def cli_json(self, *args: str) -> Any:
        return json.loads(self.cli("--json", *args).stdout)

    def add_contoso(self) -> None:
        """The tenant contoso with its verified mail domain (its admin creates users of that
        domain) and its admin, whose secret ``admin_secret`` keeps."""
        self.cli("tenant", "create", TENANT, "--mail-domain", "contoso.com")
        self.admin_view = self.cli_json(
            "principal", "create", ADMIN, "--tenant", TENANT, "--roles", "tenant-admin"
        )
        self.admin_secret = self.admin_view["ClientSecret"]

    # ---------------------------------------------------------------- tokens and credentials

    def token_response(
        self,
        client_id: str,
        secret: str,
        *,
        tenant: str = TENANT,
        scope: str | None = None,
        grant_type: str = "client_credentials",
    ) -> httpx.Response:
        return self.http.post(
            f"{self.url}/{tenant}/oauth2/v2.0/token",
            data={
                "grant_type": grant_type,
                "client_id": client_id,
                "client_secret": secret,
                "scope": scope if scope is not None else f"{self.resource}/.default",
            },
        )

    def token(self, client_id: str, secret: str, *, tenant: str = TENANT) -> str:
        response = self.token_response(client_id, secret, tenant=tenant)
        assert response.status_code == 200, response.text
        token: str = response.json()["access_token"]
        return token

    def credential(
        self, client_id: str, secret: str, *, tenant: str = TENANT
    ) -> ClientSecretCredential:
        return ClientSecretCredential(
            tenant, client_id, secret, authority=self.url, verify=str(self.ca)
        )

    # ---------------------------------------------------------------- the admin API

    @property
    def admin_token(self) -> str:
        if self._admin_token is None:
            self._admin_token = self.token(ADMIN, self.admin_secret)
        return self._admin_token

    def admin(
        self,
        method: str,
        path: str,
        *,
        token: str | None = None,
        headers: dict[str, str] | None = None,
        **kwargs: Any,
    ) -> httpx.Response:
        """Call ``/api/v1{path}`` as the tenant admin (or with ``token``)."""
        sent = {"Authorization": f"Bearer {token or self.admin_token}", **(headers or {})}
        return self.http.request(method, f"{self.url}/api/v1{path}", headers=sent, **kwargs)

    def create_vault(self, name: str, **options: Any) -> dict[str, Any]:
        body = {"name": name, "subscription": "contoso-sub-1", "region": "eastus", **options}
        response = self.admin("POST", "/vaults", json=body)
        assert response.status_code == 201, response.text
        view: dict[str, Any] = response.json()
        return view

    def create_principal(self, principal_id: str, **options: Any) -> str:
        """Create a principal in the tenant; returns its client secret. A service principal
        with a chosen application id is the operator's to make (the CLI); a tenant admin's
        get one from the platform."""
        if options.get("kind") == "service":
            view = self.cli_json(
                "principal", "create", principal_id, "--service", "--tenant", TENANT
            )
            chosen: str = view["ClientSecret"]
            return chosen
        body = {"id": principal_id, "tenant": TENANT, **options}
        response = self.admin("POST", "/principals", json=body)
        assert response.status_code == 201, response.text
        secret: str = response.json()["ClientSecret"]
        return secret

    def grant(
        self, vault: str, principal_id: str, permissions: list[str], *, replace: bool = False
    ) -> dict[str, Any]:
        body = {"object_id": principal_id, "key_permissions": permissions, "replace": replace}
        response = self.admin("PUT", f"/vaults/{vault}/accessPolicies", json=body)
        assert response.status_code == 200, response.text
        view: dict[str, Any] = response.json()
        return view

    # ---------------------------------------------------------------- the server's log

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def bugs(self, since: int = 0) -> list[str]:
        """Log lines after byte ``since`` that only an unhandled exception writes."""
        with self.log_path.open("rb") as handle:
            handle.seek(since)
            text = handle.read().decode(errors="replace")
        lines = text.splitlines()
        return [line for line in lines if any(marker in line for marker in BUG_MARKERS)] + [
            line for line in lines if '"status":500' in line
        ]

    def log_size(self) -> int:
        return self.log_path.stat().st_size

    def log_after(self, since: int, needle: str, timeout: float = 10.0) -> str:
        """The log after byte ``since`` once it holds ``needle`` (lower-cased match).

        The access line of a request is written after its response is sent, so a test that
        reads the log right after a call may be ahead of the server; this waits a bounded time.
        """
        deadline = time.monotonic() + timeout
        while True:
            text = self.log()[since:]
            if needle.lower() in text.lower() or time.monotonic() >= deadline:
                return text
            time.sleep(0.02)

    # ---------------------------------------------------------------- lifecycle

    def stop(self, sig: int = signal.SIGTERM) -> int:
        """Signal the server and wait for it to exit; returns its exit status."""
        if self._http is not None:
            self._http.close()
            self._http = None
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
                raise AssertionError("the server did not stop within the timeout") from None
        return self.process.returncode


def start_server(
    home: Path,
    *,
    port: int | None = None,
    log_path: Path | None = None,
    env: dict[str, str] | None = None,
    args: Sequence[str] = (),
) -> LiveServer:
    """Start ``customerkey serve`` (on ``port``, or a free one; with ``args`` and ``env``
    added) and return once /healthz answers."""
    port = port or free_port()
    log_path = log_path or home.parent / f"{home.name}-serve.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "customerkey.cli.main",
                "--home",
                str(home),
                "serve",
                "--port",
                str(port),
                "--scheduler-interval",
                "3600",
                *args,
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**clean_env(), **(env or {})},
        )
    server = LiveServer(
        home=home, port=port, process=process, log_path=log_path, env=dict(env or {})
    )
    deadline = time.monotonic() + START_TIMEOUT
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"customerkey serve exited {process.returncode}:\n{server.log()}")
        if server.ca.exists():
            try:
                response = httpx.get(f"{server.url}/healthz", verify=server.ssl_context())
                if response.status_code == 200:
                    return server
            except (httpx.HTTPError, ssl.SSLError, OSError) as exc:
                last_error = exc
        time.sleep(0.05)  # polling /healthz while the server starts
    process.kill()
    process.wait()
    raise AssertionError(
        f"customerkey serve did not answer /healthz ({last_error}):\n{server.log()}"
    )


@pytest.fixture(scope="module")
def live_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with contoso_server(tmp_path_factory.mktemp("serve") / "home") as server:
        yield server


@pytest.fixture(scope="module")
def hsm_server(tmp_path_factory: pytest.TempPathFactory, softhsm: SoftHsm) -> Iterator[LiveServer]:
    """``live_server`` keeping its RSA-HSM and EC-HSM keys in this session's SoftHSM2 token."""
    with contoso_server(tmp_path_factory.mktemp("serve") / "home", env=softhsm.env()) as server:
        yield server


@contextmanager
def contoso_server(home: Path, env: dict[str, str] | None = None) -> Iterator[LiveServer]:
    """A server (``env`` added) with the tenant contoso and its admin, vault names resolving to
    loopback; on the way out it must stop cleanly on SIGTERM, having logged no unhandled error."""
    server = start_server(home, env=env)
    install_loopback_resolver(DOMAIN)
    try:
        server.add_contoso()
        yield server
    finally:
        uninstall_loopback_resolver(DOMAIN)
        status = server.stop()
        bugs = server.bugs()
    assert status == 0, f"customerkey serve exited {status} on SIGTERM:\n{server.log()[-4000:]}"
    assert not bugs, "the server logged unhandled errors:\n" + "\n".join(bugs)


@pytest.fixture
def live(live_server: LiveServer) -> Iterator[LiveServer]:
    start = live_server.log_size()
    yield live_server
    bugs = live_server.bugs(start)
    assert not bugs, "the server logged unhandled errors:\n" + "\n".join(bugs)


@pytest.fixture
def server_factory(tmp_path: Path) -> Iterator[Callable[[], LiveServer]]:
    """Start extra servers (each with its own home) that are stopped after the test."""
    started: list[LiveServer] = []

    def start() -> LiveServer:
        server = start_server(tmp_path / f"home{len(started)}")
        started.append(server)
        return server

    yield start
    for server in started:
        if server.process.poll() is None:
            server.process.kill()
            server.process.wait()
