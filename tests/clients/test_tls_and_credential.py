"""TLS material, the HTTPS runner, the middlewares and the client credential, over real HTTPS.

One uvicorn server (``run_https`` in a thread) listens on a free loopback port with a
certificate from ``ensure_server_certificate``. Its app has a token endpoint backed by a real
``TokenSigner`` and scrypt-hashed client secrets, an echo route behind the body-size limit, and a
minimal Key Vault ``GET /keys/{name}`` that answers the 401 challenge, so the unmodified
``azure-keyvault-keys`` client runs its whole challenge flow against it.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import signal
import socket
import ssl
import stat
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import httpx
import pytest
import requests
from azure.core.credentials import SupportsTokenInfo, TokenCredential
from azure.core.exceptions import ClientAuthenticationError
from azure.keyvault.keys import KeyClient
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

import customerkey
from customerkey.api.middleware import AccessLogMiddleware, BodySizeLimitMiddleware
from customerkey.api.tokens import TokenSigner
from customerkey.azure import ClientSecretCredential, resolve_to_loopback
from customerkey.clock import FrozenClock, SystemClock
from customerkey.crypto.secret_hash import hash_secret, new_client_secret, verify_secret
from customerkey.errors import Unauthorized
from customerkey.rng import SystemRng
from customerkey.server.https import run_https
from customerkey.server.tls import (
    SERVER_KEY_FILE,
    TlsFiles,
    ensure_server_certificate,
    load_operator_certificate,
)

DOMAIN = "vault.localhost"
TENANT = "contoso"
CLIENT_ID = "mail-workload"
BODY_LIMIT = 1024


class _Records(logging.Handler):
    """Collects log lines; the server thread writes them after the response has gone out."""

    def __init__(self) -> None:
        super().__init__()
        self.lines: list[dict[str, Any]] = []
        self._changed = threading.Condition()

    def emit(self, record: logging.LogRecord) -> None:
        with self._changed:
            self.lines.append(json.loads(record.getMessage()))
            self._changed.notify_all()

    def wait_for(self, request_id: str) -> dict[str, Any]:
        def find() -> dict[str, Any] | None:
            return next((line for line in self.lines if line["request_id"] == request_id), None)

        with self._changed:
            assert self._changed.wait_for(lambda: find() is not None, timeout=10), request_id
            line = find()
            assert line is not None
            return line


@dataclass
class Server:
    port: int
    tls: TlsFiles
    signer: TokenSigner
    secret: str
    log: _Records
    token_calls: list[tuple[str, str]] = field(default_factory=list)
    key_paths: list[str] = field(default_factory=list)

    def url(self, host: str = "localhost") -> str:
        return f"https://{host}:{self.port}"

    def context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.tls.ca_cert))


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _b64url(number: int) -> str:
    data = number.to_bytes((number.bit_length() + 7) // 8, "big")
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _build_app(server: Server) -> FastAPI:
    app = FastAPI()
    secrets = {CLIENT_ID: hash_secret(server.secret, rng=SystemRng())}
    vault_key = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key()

    @app.post("/{tenant}/oauth2/v2.0/token")
    async def token(tenant: str, request: Request) -> JSONResponse:
        form = dict(parse_qsl((await request.body()).decode()))
        server.token_calls.append((tenant, form.get("scope", "")))
        stored = secrets.get(form.get("client_id", ""))
        if (
            form.get("grant_type") != "client_credentials"
            or stored is None
            or not verify_secret(form.get("client_secret", ""), stored)
        ):
            return JSONResponse(
                {"error": "invalid_client", "error_description": "Invalid client secret."},
                status_code=401,
            )
        issued = server.signer.issue(
            subject=form["client_id"],
            tenant=tenant,
            audience=form["scope"].removesuffix("/.default"),
        )
        lifetime = int(server.signer.max_lifetime.total_seconds())
        return JSONResponse(
            {
                "token_type": "Bearer",
                "access_token": issued.access_token,
                "expires_in": lifetime,
                "ext_expires_in": lifetime,
            }
        )

    @app.get("/hello")
    async def hello(request: Request) -> dict[str, str]:
        return {"host": request.headers["host"], "request_id": request.state.request_id}

    @app.post("/echo")
    async def echo(request: Request) -> dict[str, int]:
        return {"received": len(await request.body())}

    # KeyClient.get_key(name) with no version asks for "/keys/{name}/" (empty version segment).
    @app.get("/keys/{name}")
    @app.get("/keys/{name}/")
    async def get_key(name: str, request: Request) -> JSONResponse:
        server.key_paths.append(request.url.path)
        host = request.headers["host"]
        vault = host.split(".", 1)[0]
        # The "noport" vault names its resource without the port, as a naive server would.
        resource = f"https://{DOMAIN}" if vault == "noport" else f"https://{DOMAIN}:{server.port}"
        authorization = request.headers.get("authorization", "")
        if not authorization.startswith("Bearer "):
            challenge = f'Bearer authorization="{server.url()}/{TENANT}", resource="{resource}"'
            return JSONResponse(
                Unauthorized("AKV10000: Request is missing a Bearer token.").to_body(),
                status_code=401,
                headers={"WWW-Authenticate": challenge},
            )
        claims = server.signer.verify(authorization.removeprefix("Bearer "), audience=resource)
        numbers = vault_key.public_numbers()
        return JSONResponse(
            {
                "key": {
                    "kid": f"https://{host}/keys/{name}/{'0' * 31}1",
                    "kty": "RSA",
                    "key_ops": ["wrapKey", "unwrapKey"],
                    "n": _b64url(numbers.n),
                    "e": _b64url(numbers.e),
                },
                "attributes": {
                    "enabled": True,
                    "created": 1767225600,
                    "updated": 1767225600,
                    "recoveryLevel": "Recoverable+Purgeable",
                    "recoverableDays": 90,
                },
                "tags": {"caller": claims.subject, "tenant": claims.tenant},
            }
        )

    return app


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    home = tmp_path_factory.mktemp("home")
    # Real time, frozen: the certificate must be valid for the real TLS handshakes.
    tls, created = ensure_server_certificate(
        home / "tls", DOMAIN, clock=FrozenClock(datetime.now(UTC))
    )
    assert created
    logger = logging.getLogger("customerkey.test.access")
    logger.setLevel(logging.INFO)
    logger.propagate = False
    records = _Records()
    logger.addHandler(records)
    state = Server(
        port=_free_port(),
        tls=tls,
        signer=TokenSigner.open(home / "token-keys", clock=SystemClock(), rng=SystemRng()),
        secret=new_client_secret(SystemRng()),
        log=records,
    )
    app = AccessLogMiddleware(BodySizeLimitMiddleware(_build_app(state), BODY_LIMIT), logger)
    started = threading.Event()
    shutdown = threading.Event()
    thread = threading.Thread(
        target=run_https,
        kwargs={
            "app": app,
            "host": "127.0.0.1",
            "port": state.port,
            "tls": tls,
            "on_started": started.set,
            "shutdown": shutdown,
        },
        daemon=True,
    )
    thread.start()
    assert started.wait(15), "the HTTPS server did not start"
    try:
        yield state
    finally:
        shutdown.set()
        thread.join(15)
        logger.removeHandler(records)
        assert not thread.is_alive()


# --- TLS verification ------------------------------------------------------------------------


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1"])
def test_generated_ca_verifies_the_server(server: Server, host: str) -> None:
    response = httpx.get(server.url(host) + "/hello", verify=server.context())
    assert response.status_code == 200
    assert response.json()["host"] == f"{host}:{server.port}"


def test_any_vault_name_verifies_with_the_loopback_resolver(server: Server) -> None:
    with resolve_to_loopback(DOMAIN):
        url = server.url("anyname.vault.localhost") + "/hello"
        assert httpx.get(url, verify=server.context()).json()["host"].startswith("anyname.")
        # requests is the Azure SDK's default transport.
        assert requests.get(url, verify=str(server.tls.ca_cert), timeout=10).status_code == 200


def test_a_different_ca_is_refused(server: Server, tmp_path: Path) -> None:
    other, _ = ensure_server_certificate(tmp_path / "other", DOMAIN, clock=SystemClock())
    context = ssl.create_default_context(cafile=str(other.ca_cert))
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        httpx.get(server.url() + "/hello", verify=context)
    with pytest.raises(requests.exceptions.SSLError):
        requests.get(server.url() + "/hello", verify=str(other.ca_cert), timeout=10)


def test_no_server_header_and_a_request_id(server: Server) -> None:
    response = httpx.get(server.url() + "/hello", verify=server.context())
    assert "server" not in response.headers
    assert response.headers["x-ms-request-id"] == response.json()["request_id"]


# --- the client credential -------------------------------------------------------------------


def test_credential_gets_caches_and_refreshes_tokens(server: Server) -> None:
    clock = FrozenClock(datetime.now(UTC))
    scope = f"https://{DOMAIN}:{server.port}/.default"
    with ClientSecretCredential(
        TENANT,
        CLIENT_ID,
        server.secret,
        authority=server.url(),
        verify=str(server.tls.ca_cert),
        clock=clock,
    ) as credential:
        before = len(server.token_calls)
        token = credential.get_token(scope)
        claims = server.signer.verify(token.token, audience=f"https://{DOMAIN}:{server.port}")
        assert (claims.subject, claims.tenant) == (CLIENT_ID, TENANT)
        assert token.expires_on == int(clock.now().timestamp()) + 3600
        assert server.token_calls[before:] == [(TENANT, scope)]

        assert credential.get_token(scope) == token
        assert credential.get_token_info(scope).token == token.token
        assert len(server.token_calls) == before + 1

        clock.advance(timedelta(minutes=54))
        assert credential.get_token(scope) == token
        clock.advance(timedelta(minutes=1, seconds=1))
        refreshed = credential.get_token(scope)
        assert len(server.token_calls) == before + 2
        assert refreshed.token != token.token

        credential.get_token(scope, tenant_id="fabrikam")
        info = credential.get_token_info(scope, options={"tenant_id": "northwind"})
        assert server.signer.verify(info.token, audience=scope[: -len("/.default")]).tenant == (
            "northwind"
        )
        assert [call[0] for call in server.token_calls[before + 2 :]] == ["fabrikam", "northwind"]


def test_credential_reports_a_refused_secret(server: Server) -> None:
    credential = ClientSecretCredential(
        TENANT, CLIENT_ID, "wrong", authority=server.url(), verify=str(server.tls.ca_cert)
    )
    with pytest.raises(ClientAuthenticationError, match=r"\(401\).*Invalid client secret"):
        credential.get_token(f"https://{DOMAIN}/.default")
    credential.close()


def test_credential_refuses_an_untrusted_server(server: Server, tmp_path: Path) -> None:
    other, _ = ensure_server_certificate(tmp_path / "other", DOMAIN, clock=SystemClock())
    credential = ClientSecretCredential(
        TENANT, CLIENT_ID, server.secret, authority=server.url(), verify=str(other.ca_cert)
    )
    with pytest.raises(ClientAuthenticationError, match="CERTIFICATE_VERIFY_FAILED"):
        credential.get_token(f"https://{DOMAIN}/.default")


def test_credential_checks_its_arguments() -> None:
    with pytest.raises(ValueError, match="https"):
        ClientSecretCredential(TENANT, CLIENT_ID, "s", authority="http://localhost:8443")
    with pytest.raises(ValueError, match="tenant"):
        ClientSecretCredential("../admin", CLIENT_ID, "s")
    with pytest.raises(ValueError, match="CA certificates"):
        ClientSecretCredential(TENANT, CLIENT_ID, "s", verify="/nonexistent/ca.pem")
    credential = ClientSecretCredential(TENANT, CLIENT_ID, "s")
    assert isinstance(credential, TokenCredential)
    assert isinstance(credential, SupportsTokenInfo)
    with pytest.raises(ValueError, match="scope"):
        credential.get_token()
    with pytest.raises(ValueError, match="tenant"):
        credential.get_token("https://vault.localhost/.default", tenant_id="a/b")


def test_key_client_runs_the_challenge_flow(server: Server) -> None:
    credential = ClientSecretCredential(
        "ignored-home-tenant",
        CLIENT_ID,
        server.secret,
        authority=server.url(),
        verify=str(server.tls.ca_cert),
    )
    with resolve_to_loopback(DOMAIN):
        client = KeyClient(
            f"https://contoso.{DOMAIN}:{server.port}",
            credential,
            connection_verify=str(server.tls.ca_cert),
        )
        before = len(server.token_calls)
        paths_before = len(server.key_paths)
        key = client.get_key("root-a")
        client.get_key("root-b")
    assert key.name == "root-a" and key.key_type == "RSA"
    assert key.properties.tags == {"caller": CLIENT_ID, "tenant": TENANT}
    # The tenant comes from the challenge, and the token is reused for the second call.
    assert server.token_calls[before:] == [(TENANT, f"https://{DOMAIN}:{server.port}/.default")]
    # First a bare request to provoke the challenge, then the authorized one; then one more.
    assert server.key_paths[paths_before:] == ["/keys/root-a/", "/keys/root-a/", "/keys/root-b/"]


def test_challenge_resource_must_carry_the_port(server: Server) -> None:
    credential = ClientSecretCredential(
        TENANT, CLIENT_ID, server.secret, authority=server.url(), verify=str(server.tls.ca_cert)
    )
    with resolve_to_loopback(DOMAIN):
        client = KeyClient(
            f"https://noport.{DOMAIN}:{server.port}",
            credential,
            connection_verify=str(server.tls.ca_cert),
        )
        with pytest.raises(ValueError, match="does not match the requested domain"):
            client.get_key("root-a")


# --- middlewares -----------------------------------------------------------------------------


def _assert_too_large(response: httpx.Response) -> None:
    assert response.status_code == 413
    body = response.json()
    assert body["error"]["code"] == "RequestTooLarge"
    assert str(BODY_LIMIT) in body["error"]["message"]
    assert response.headers["content-type"].startswith("application/json")


def test_bodies_within_the_limit_pass(server: Server) -> None:
    with httpx.Client(verify=server.context()) as client:
        sized = client.post(server.url() + "/echo", content=b"x" * BODY_LIMIT)
        chunked = client.post(server.url() + "/echo", content=iter([b"x" * 100, b"y" * 100]))
    assert sized.json() == {"received": BODY_LIMIT}
    assert chunked.json() == {"received": 200}


def test_a_large_content_length_gets_413(server: Server) -> None:
    with httpx.Client(verify=server.context()) as client:
        response = client.post(server.url() + "/echo", content=b"x" * (BODY_LIMIT * 4))
    _assert_too_large(response)
    assert response.headers["connection"] == "close"


def test_a_chunked_body_over_the_limit_gets_413(server: Server) -> None:
    chunks = [b"x" * 600, b"y" * 600, b"z" * 600]
    with httpx.Client(verify=server.context()) as client:
        response = client.post(server.url() + "/echo", content=iter(chunks))
    assert "content-length" not in response.request.headers
    _assert_too_large(response)


def test_access_log_writes_one_json_line(server: Server) -> None:
    path = "/hello"
    response = httpx.get(
        server.url() + path + "?api-version=7.4&client_secret=hunter2",
        headers={"x-ms-client-request-id": "abc-123", "user-agent": "test-agent"},
        verify=server.context(),
    )
    line = server.log.wait_for(response.headers["x-ms-request-id"])
    assert line["method"] == "GET"
    assert line["path"] == path
    assert line["status"] == 200
    assert line["query"] == "api-version=7.4&client_secret=***"
    assert "hunter2" not in json.dumps(line)
    assert line["client_ip"] == "127.0.0.1"
    assert line["host"] == f"localhost:{server.port}"
    assert line["client_request_id"] == "abc-123"
    assert line["user_agent"] == "test-agent"
    assert line["bytes_in"] == 0 and line["bytes_out"] == len(response.content)
    assert line["duration_ms"] >= 0
    assert datetime.fromisoformat(line["time"]).tzinfo is not None


def test_refused_requests_are_logged_too(server: Server) -> None:
    response = httpx.post(
        server.url() + "/echo", content=b"x" * (BODY_LIMIT + 1), verify=server.context()
    )
    _assert_too_large(response)
    line = server.log.wait_for(response.headers["x-ms-request-id"])
    assert (line["path"], line["status"], line["bytes_in"]) == ("/echo", 413, 0)


# --- certificate lifecycle -------------------------------------------------------------------


def _san(cert_path: Path) -> list[str]:
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return [str(getattr(name, "value", name)) for name in names]


def test_certificates_are_created_once_and_reused(tmp_path: Path) -> None:
    clock = FrozenClock(datetime(2026, 3, 1, tzinfo=UTC))
    files, created = ensure_server_certificate(tmp_path / "tls", DOMAIN, clock=clock)
    assert created
    assert stat.S_IMODE((tmp_path / "tls").stat().st_mode) == 0o700
    assert stat.S_IMODE(files.key.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "tls" / "ca-key.pem").stat().st_mode) == 0o600
    assert _san(files.cert) == [DOMAIN, f"*.{DOMAIN}", "localhost", "127.0.0.1", "::1"]

    ca = x509.load_pem_x509_certificate(files.ca_cert.read_bytes())
    constraints = ca.extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.critical and constraints.value.ca and constraints.value.path_length == 0
    assert ca.not_valid_after_utc - clock.now() >= timedelta(days=3649)
    leaf = x509.load_pem_x509_certificate(files.cert.read_bytes())
    leaf.verify_directly_issued_by(ca)
    assert timedelta(days=364) <= leaf.not_valid_after_utc - clock.now() <= timedelta(days=366)

    snapshot = {path.name: path.read_bytes() for path in (tmp_path / "tls").glob("*.pem")}
    clock.advance(timedelta(days=100))
    again, created = ensure_server_certificate(tmp_path / "tls", DOMAIN, clock=clock)
    assert (again, created) == (files, False)
    assert snapshot == {path.name: path.read_bytes() for path in (tmp_path / "tls").glob("*.pem")}


def test_changed_names_reissue_under_the_same_ca(tmp_path: Path) -> None:
    clock = FrozenClock(datetime(2026, 3, 1, tzinfo=UTC))
    files, _ = ensure_server_certificate(tmp_path, DOMAIN, clock=clock)
    ca_before = files.ca_cert.read_bytes()
    leaf_before = files.cert.read_bytes()

    _, created = ensure_server_certificate(
        tmp_path, DOMAIN, clock=clock, extra_hosts=["kv.example.test", "10.1.2.3"]
    )
    assert created
    assert _san(files.cert)[-2:] == ["kv.example.test", "10.1.2.3"]
    _, created = ensure_server_certificate(tmp_path, "keys.internal", clock=clock)
    assert created
    assert _san(files.cert)[:2] == ["keys.internal", "*.keys.internal"]
    assert files.ca_cert.read_bytes() == ca_before
    assert files.cert.read_bytes() != leaf_before


def test_a_certificate_near_expiry_is_reissued(tmp_path: Path) -> None:
    clock = FrozenClock(datetime(2026, 3, 1, tzinfo=UTC))
    files, _ = ensure_server_certificate(tmp_path, DOMAIN, clock=clock)
    ca_before = files.ca_cert.read_bytes()
    leaf_before = files.cert.read_bytes()
    clock.advance(timedelta(days=330))
    assert ensure_server_certificate(tmp_path, DOMAIN, clock=clock)[1] is False
    clock.advance(timedelta(days=6))
    assert ensure_server_certificate(tmp_path, DOMAIN, clock=clock)[1] is True
    assert files.cert.read_bytes() != leaf_before
    assert files.ca_cert.read_bytes() == ca_before
    leaf = x509.load_pem_x509_certificate(files.cert.read_bytes())
    assert leaf.not_valid_after_utc - clock.now() >= timedelta(days=364)


def test_a_damaged_server_key_is_replaced(tmp_path: Path) -> None:
    clock = SystemClock()
    files, _ = ensure_server_certificate(tmp_path, DOMAIN, clock=clock)
    (tmp_path / SERVER_KEY_FILE).write_text("not a key")
    _, created = ensure_server_certificate(tmp_path, DOMAIN, clock=clock)
    assert created
    assert load_operator_certificate(files.cert, files.key).cert == files.cert


def test_bad_domains_are_refused(tmp_path: Path) -> None:
    for domain in ("", "127.0.0.1", "a..b", "bad domain"):
        with pytest.raises(ValueError):
            ensure_server_certificate(tmp_path, domain, clock=SystemClock())


def test_load_operator_certificate(tmp_path: Path) -> None:
    clock = SystemClock()
    mine, _ = ensure_server_certificate(tmp_path / "a", DOMAIN, clock=clock)
    theirs, _ = ensure_server_certificate(tmp_path / "b", DOMAIN, clock=clock)

    loaded = load_operator_certificate(mine.cert, mine.key, ca_cert=mine.ca_cert, clock=clock)
    assert loaded == mine
    assert load_operator_certificate(mine.cert, mine.key).ca_cert == mine.cert

    with pytest.raises(ValueError, match="does not exist"):
        load_operator_certificate(tmp_path / "missing.pem", mine.key)
    with pytest.raises(ValueError, match="does not exist"):
        load_operator_certificate(mine.cert, tmp_path / "missing-key.pem")
    with pytest.raises(ValueError, match="does not belong"):
        load_operator_certificate(mine.cert, theirs.key)
    with pytest.raises(ValueError, match="not a PEM certificate"):
        load_operator_certificate(mine.key, mine.key)
    with pytest.raises(ValueError, match="not a PEM private key"):
        load_operator_certificate(mine.cert, mine.cert)
    late = FrozenClock(datetime.now(UTC) + timedelta(days=400))
    with pytest.raises(ValueError, match="expired"):
        load_operator_certificate(mine.cert, mine.key, clock=late)


# --- graceful shutdown -----------------------------------------------------------------------

_SERVER_SCRIPT = """
import asyncio, pathlib, sys
from customerkey.server.https import run_https
from customerkey.server.tls import TlsFiles

async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            else:
                print("lifespan shutdown", flush=True)
                await send({"type": "lifespan.shutdown.complete"})
                return
    print("handling", flush=True)
    await asyncio.sleep(1)
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"finished"})

tls = TlsFiles(*(pathlib.Path(arg) for arg in sys.argv[1:4]))
run_https(app, host="127.0.0.1", port=int(sys.argv[4]), tls=tls,
          on_started=lambda: print("started", flush=True))
print("returned", flush=True)
"""


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_finishes_in_flight_requests_and_returns(
    tmp_path: Path, signum: signal.Signals
) -> None:
    tls, _ = ensure_server_certificate(tmp_path, DOMAIN, clock=SystemClock())
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": str(Path(customerkey.__file__).parents[1])}
    process = subprocess.Popen(
        [sys.executable, "-c", _SERVER_SCRIPT, *map(str, (tls.ca_cert, tls.cert, tls.key, port))],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert process.stdout is not None
        assert process.stdout.readline().strip() == "started"
        result: dict[str, httpx.Response] = {}
        context = ssl.create_default_context(cafile=str(tls.ca_cert))
        client = threading.Thread(
            target=lambda: result.setdefault(
                "response", httpx.get(f"https://localhost:{port}/slow", verify=context, timeout=20)
            )
        )
        client.start()
        assert process.stdout.readline().strip() == "handling"
        process.send_signal(signum)
        client.join(20)
        out, err = process.communicate(timeout=20)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert result["response"].status_code == 200
    assert result["response"].text == "finished"
    assert process.returncode == 0, err
    assert out.split() == ["lifespan", "shutdown", "returned"]
