"""Fixtures for the web console's tests (``tests/console/``).

``console_server`` (module scope) is a real ``customerkey serve`` (``live_servers``) with two
tenants, contoso and fabrikam, each with a tenant admin, and a platform operator; all hold
client secrets so they can sign in to the console. ``ConsoleClient`` signs in over plain HTTPS
with httpx (the rules: cookies, CSRF, sessions, isolation); ``browser`` is Debian's Chromium
driven by Playwright (never Playwright's own browser download): with
``CUSTOMERKEY_REQUIRE_BROWSER=1`` (CI) a missing Chromium or Playwright fails the tests
instead of skipping them. ``screenshots`` is a folder under pytest's tmp path where browser
tests save each main page.
"""

from __future__ import annotations

import html
import os
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.live_servers import ADMIN, LiveServer, contoso_server

CHROMIUM = os.environ.get("CUSTOMERKEY_CHROMIUM", "/usr/bin/chromium")
REQUIRE_BROWSER = os.environ.get("CUSTOMERKEY_REQUIRE_BROWSER") == "1"
FABRIKAM = "fabrikam"
FABRIKAM_ADMIN = "admin@fabrikam.com"
OPERATOR = "ops@customerkey.example"
_CSRF = re.compile(r'name="csrf" value="([^"]+)"')
_SIGNIN = re.compile(r'name="signin_token" value="([^"]+)"')
_ALERT = re.compile(r'role="alert">([^<]*)<')


@dataclass
class Principals:
    """Who may sign in to ``console_server``: (tenant, client id, secret) each."""

    contoso_admin: tuple[str, str, str]
    fabrikam_admin: tuple[str, str, str]
    operator: tuple[str, str, str]
    extra: dict[str, tuple[str, str, str]] = field(default_factory=dict)


@dataclass
class ConsoleServer:
    live: LiveServer
    principals: Principals
    # Every client handed out, closed before the server stops (an open keep-alive connection
    # would hold its graceful shutdown up).
    clients: list[ConsoleClient] = field(default_factory=list)

    @property
    def url(self) -> str:
        return self.live.url

    def anonymous(self) -> ConsoleClient:
        """An httpx client that has not signed in."""
        client = ConsoleClient(
            httpx.Client(
                base_url=self.live.url,
                verify=self.live.ssl_context(),
                timeout=30,
                follow_redirects=False,
            )
        )
        self.clients.append(client)
        return client

    def client(self, who: tuple[str, str, str] | None = None) -> ConsoleClient:
        """A signed-in httpx client (the contoso admin unless ``who``)."""
        client = self.anonymous()
        client.sign_in(*(who or self.principals.contoso_admin))
        return client

    def add_principal(self, name: str, tenant: str, roles: str) -> tuple[str, str, str]:
        """A principal with a secret, made by the operator's CLI (which may grant any role)."""
        view = self.live.cli_json("principal", "create", name, "--tenant", tenant, "--roles", roles)
        who = (tenant, name, str(view["ClientSecret"]))
        self.principals.extra[name] = who
        return who


class ConsoleClient:
    """httpx against the console, keeping its cookies (redirects are not followed)."""

    def __init__(self, http: httpx.Client) -> None:
        self.http = http
        self.last_signin: httpx.Response | None = None

    def close(self) -> None:
        self.http.close()

    def sign_in(self, tenant: str, client_id: str, secret: str) -> httpx.Response:
        form = self.http.get("/console/signin")
        token = _SIGNIN.search(form.text)
        assert token, form.text
        response = self.http.post(
            "/console/signin",
            data={
                "signin_token": token.group(1),
                "tenant": tenant,
                "client_id": client_id,
                "client_secret": secret,
                "next": "/console/",
            },
        )
        self.last_signin = response
        return response

    def get(self, path: str) -> httpx.Response:
        return self.http.get(path)

    def csrf(self, path: str = "/console/") -> str:
        page = self.http.get(path)
        assert page.status_code == 200, (path, page.status_code, page.text[:500])
        found = _CSRF.search(page.text)
        assert found, page.text
        return found.group(1)

    def post(self, path: str, data: dict[str, Any], *, csrf: str | None = "auto") -> httpx.Response:
        body = dict(data)
        if csrf == "auto":
            body["csrf"] = self.csrf()
        elif csrf is not None:
            body["csrf"] = csrf
        return self.http.post(path, data=body)


def alerts(page: httpx.Response) -> list[str]:
    """The error messages a page shows (``role="alert"``), unescaped."""
    return [html.unescape(m).strip() for m in _ALERT.findall(page.text)]


@pytest.fixture(scope="module")
def console_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ConsoleServer]:
    with contoso_server(tmp_path_factory.mktemp("console") / "home") as live:
        live.cli("tenant", "create", FABRIKAM, "--mail-domain", "fabrikam.com")
        fabrikam = live.cli_json(
            "principal", "create", FABRIKAM_ADMIN, "--tenant", FABRIKAM, "--roles", "tenant-admin"
        )
        operator = live.cli_json(
            "principal", "create", OPERATOR, "--tenant", "customerkey", "--roles", "operator"
        )
        principals = Principals(
            contoso_admin=("contoso", ADMIN, live.admin_secret),
            fabrikam_admin=(FABRIKAM, FABRIKAM_ADMIN, fabrikam["ClientSecret"]),
            operator=("customerkey", OPERATOR, operator["ClientSecret"]),
        )
        server = ConsoleServer(live, principals)
        try:
            yield server
        finally:
            for client in server.clients:
                client.close()


@pytest.fixture
def console(console_server: ConsoleServer) -> Iterator[ConsoleServer]:
    """``console_server``, failing the test if the server logged an unhandled error."""
    start = console_server.live.log_size()
    yield console_server
    bugs = console_server.live.bugs(start)
    assert not bugs, "the server logged unhandled errors:\n" + "\n".join(bugs)


def _browser_missing() -> str | None:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "Playwright for Python is not installed (pip install playwright)"
    if not (Path(CHROMIUM).exists() or shutil.which(CHROMIUM)):
        return f"Chromium is not installed at {CHROMIUM} (apt-get install chromium)"
    return None


@pytest.fixture(scope="module")
def browser(console_server: ConsoleServer) -> Iterator[Any]:
    """Debian's Chromium, headless, through Playwright (one per test module; closed before
    the module's server stops, so that no browser connection holds up its shutdown)."""
    missing = _browser_missing()
    if missing:
        if REQUIRE_BROWSER:
            pytest.fail(f"CUSTOMERKEY_REQUIRE_BROWSER=1 but {missing}")
        pytest.skip(missing)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=CHROMIUM, args=["--headless", "--no-sandbox"]
        )
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture(scope="module")
def screenshots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where browser tests save a screenshot of each main page."""
    return tmp_path_factory.mktemp("console-screenshots")


def browser_page(
    browser: Any, server: ConsoleServer, who: tuple[str, str, str], *, javascript: bool = True
) -> Any:
    """A new browser context (with JavaScript off unless ``javascript``) signed in as
    ``who``; returns its page."""
    context = browser.new_context(
        ignore_https_errors=True,
        viewport={"width": 1280, "height": 900},
        java_script_enabled=javascript,
    )
    context.set_default_timeout(15_000)
    page = context.new_page()
    page.goto(f"{server.url}/console/signin")
    page.get_by_label("Tenant").fill(who[0])
    page.get_by_label("Client id (sign-in name or application id)").fill(who[1])
    page.get_by_label("Client secret").fill(who[2])
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(re.compile(r".*/console/$"))
    return page


@dataclass
class OfflineConsole:
    """The console app in this process, with no job worker: a job it queues stays queued
    (what a test of cancelling a queued job needs; a real server's worker takes jobs at
    once). ``runtime`` is the platform under it, ``contoso_admin`` who signs in."""

    runtime: Any
    app: Any
    contoso_admin: tuple[str, str, str]

    def client(self, who: tuple[str, str, str] | None = None) -> ConsoleClient:
        from fastapi.testclient import TestClient

        http = TestClient(self.app, base_url="https://localhost:8443", follow_redirects=False)
        client = ConsoleClient(http)
        response = client.sign_in(*(who or self.contoso_admin))
        assert response.status_code == 303, response.text
        return client


@pytest.fixture
def offline_console(runtime: Any) -> OfflineConsole:
    """``OfflineConsole`` over the tests' ``runtime`` (SQLite, and PostgreSQL when set): the
    tenant contoso with its DEP (``mailfixtures.setup_policy``) and a tenant admin."""
    from customerkey.api.app import create_app
    from customerkey.api.deps import ApiContext
    from customerkey.api.tokens import TokenSigner
    from customerkey.vault.models import OPERATOR
    from tests.support import mailfixtures

    mailfixtures.setup_policy(runtime)
    _, secret = runtime.principals.create(
        OPERATOR, ADMIN, tenant=mailfixtures.TENANT, roles=["tenant-admin"]
    )
    signer = TokenSigner.open(
        runtime.home.path / "token-keys", clock=runtime.clock, rng=runtime.rng
    )
    context = ApiContext(runtime=runtime, signer=signer, domain="vault.localhost", port=8443)
    return OfflineConsole(runtime, create_app(context), (mailfixtures.TENANT, ADMIN, secret))
