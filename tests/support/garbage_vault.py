"""A vault that answers with garbage: a TLS-terminating reverse proxy in front of a real cloud.

``GarbageVault`` listens on ``127.0.0.1:<port>`` of a ``remote_vaults.Cloud`` whose
``customerkey serve`` listens on ``UPSTREAM_HOST`` (``127.0.0.2``) at the same port. Every name
the platform uses for that cloud (``<vault>.vault.localhost:<port>`` through the in-process
loopback resolver, the token endpoint ``localhost:<port>``) so reaches the proxy, while the
key URIs, the token audience and the Key Vault challenge stay exactly those of the cloud: the
proxy passes the Host header through, and it presents the cloud's own server certificate
(``<home>/tls/server.pem``), which the platform already trusts through the cloud's CA. Towards
the cloud it verifies that certificate too (as ``localhost``, a name it carries).

Requests are relayed unchanged; what comes back depends on ``mode``, applied to successful
(200) answers of unwrapKey requests, or of every ``/keys/`` request with ``scope="keys"``:

==================  ==========================================================================
``pass``            the cloud's answer as it is
``invalid-json``    a JSON body cut off mid-object (correct Content-Length)
``wrong-shape``     valid JSON of the wrong shape, in turn: no ``value``, ``value`` a number,
                    an object, a list, ``null``, a JSON array, a JSON string
``bad-base64``      ``value`` that is not base64url
``html-200``        an HTML page with status 200
``truncated``       Content-Length of the whole answer, half of it sent, the connection closed
``random-key-32``   a well-formed answer holding 32 random bytes (a wrong key of the right size)
``random-key-short``  the same with 16 random bytes
``huge``            a well-formed answer holding 3 MiB of random bytes (a 4 MiB body)
==================  ==========================================================================

When the cloud is down the proxy answers 502, as a load balancer in front of a dead vault
would. It counts what it relayed and corrupted, and records any error of its own (``errors``),
which a test should find empty. Random bytes come from the ``random.Random`` it is given.
"""

from __future__ import annotations

import base64
import http.client
import json
import random
import socket
import ssl
import threading
import time
import traceback
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from tests.support.remote_vaults import Cloud

UPSTREAM_HOST = "127.0.0.2"
MODES = (
    "pass",
    "invalid-json",
    "wrong-shape",
    "bad-base64",
    "html-200",
    "truncated",
    "random-key-32",
    "random-key-short",
    "huge",
)
GARBAGE_MODES = MODES[1:]
CERT_TIMEOUT = 60.0
UPSTREAM_TIMEOUT = 30.0
HUGE_KEY_BYTES = 3 * 1024 * 1024
_HOP_HEADERS = {"connection", "keep-alive", "transfer-encoding", "content-length", "upgrade"}
_WRONG_SHAPES: tuple[Any, ...] = (
    {"kid": "{kid}"},
    {"kid": "{kid}", "value": 12},
    {"kid": "{kid}", "value": {"key": "AAAA"}},
    {"kid": "{kid}", "value": [1, 2, 3]},
    {"kid": "{kid}", "value": None},
    ["{kid}", "AAAA"],
    "unwrapped",
)


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


class _Upstream(http.client.HTTPSConnection):
    """A connection to the cloud at ``UPSTREAM_HOST``, verifying its certificate as the
    ``localhost`` it names (the certificate does not carry ``127.0.0.2``)."""

    def __init__(self, port: int, context: ssl.SSLContext) -> None:
        super().__init__(UPSTREAM_HOST, port, timeout=UPSTREAM_TIMEOUT, context=context)
        self._tls = context

    def connect(self) -> None:
        raw = socket.create_connection((UPSTREAM_HOST, self.port), self.timeout)
        self.sock = self._tls.wrap_socket(raw, server_hostname="localhost")


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, proxy: GarbageVault, context: ssl.SSLContext) -> None:
        self.proxy = proxy
        self.tls = context
        super().__init__(("127.0.0.1", proxy.cloud.port), _Handler)

    def finish_request(self, request: Any, client_address: Any) -> None:
        # The TLS handshake happens here, in the request's own thread, not in accept().
        try:
            tls = self.tls.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError):
            return  # a client that gave up mid-handshake (readiness polls do)
        try:
            self.RequestHandlerClass(tls, client_address, self)
        finally:
            tls.close()

    def handle_error(self, request: Any, client_address: Any) -> None:
        self.proxy.errors.append(traceback.format_exc())


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass  # the proxy counts what it did; access lines would only be noise

    def do_GET(self) -> None:
        self._relay()

    def do_POST(self) -> None:
        self._relay()

    def do_PUT(self) -> None:
        self._relay()

    def do_PATCH(self) -> None:
        self._relay()

    def do_DELETE(self) -> None:
        self._relay()

    def _relay(self) -> None:
        proxy = self.server.proxy
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_HEADERS}
        try:
            status, reason, answer_headers, answer = proxy.forward(
                self.command, self.path, headers, body
            )
        except (OSError, http.client.HTTPException) as exc:
            proxy.count("upstream-down")
            message = {"error": {"code": "BadGateway", "message": f"upstream: {exc}"}}
            self._send(502, "Bad Gateway", [("Content-Type", "application/json")], message)
            return
        mode = proxy.mode
        if mode != "pass" and status == 200 and proxy.targets(self.command, self.path):
            proxy.count(mode)
            self._corrupt(mode, answer_headers, answer)
            return
        proxy.count("relayed")
        self._send(status, reason, answer_headers, answer)

    def _send(
        self, status: int, reason: str, headers: list[tuple[str, str]], body: bytes | Any
    ) -> None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(status, reason)
        for name, value in headers:
            if name.lower() not in _HOP_HEADERS:
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _corrupt(self, mode: str, headers: list[tuple[str, str]], answer: bytes) -> None:
        proxy = self.server.proxy
        kept = [(k, v) for k, v in headers if k.lower() != "content-type"]
        as_json = [*kept, ("Content-Type", "application/json; charset=utf-8")]
        kid = _kid(answer)
        if mode == "invalid-json":
            self._send(200, "OK", as_json, f'{{"kid": "{kid}", "value": "AAAA'.encode())
        elif mode == "wrong-shape":
            shape = _WRONG_SHAPES[proxy.next_shape()]
            self._send(200, "OK", as_json, _with_kid(shape, kid))
        elif mode == "bad-base64":
            self._send(200, "OK", as_json, {"kid": kid, "value": "!!not*base64url~~"})
        elif mode == "html-200":
            page = b"<!DOCTYPE html><html><body><h1>Service temporarily moved</h1></body></html>"
            self._send(200, "OK", [*kept, ("Content-Type", "text/html")], page)
        elif mode == "truncated":
            self.send_response(200, "OK")
            for name, value in as_json:
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer[: len(answer) // 2])
            self.wfile.flush()
            self.close_connection = True
        elif mode in ("random-key-32", "random-key-short", "huge"):
            size = {"random-key-32": 32, "random-key-short": 16, "huge": HUGE_KEY_BYTES}[mode]
            self._send(200, "OK", as_json, {"kid": kid, "value": _b64url(proxy.random_bytes(size))})
        else:
            raise AssertionError(f"unknown mode {mode!r}")


def _kid(answer: bytes) -> str:
    try:
        kid = json.loads(answer).get("kid")
    except (ValueError, AttributeError):
        return ""
    return kid if isinstance(kid, str) else ""


def _with_kid(shape: Any, kid: str) -> Any:
    if isinstance(shape, dict):
        return {k: (kid if v == "{kid}" else v) for k, v in shape.items()}
    if isinstance(shape, list):
        return [kid if v == "{kid}" else v for v in shape]
    return shape


class GarbageVault:
    """The proxy in front of ``cloud`` (which must listen on ``UPSTREAM_HOST``)."""

    def __init__(self, cloud: Cloud, *, rng: random.Random, scope: str = "unwrap") -> None:
        assert cloud.listen_host == UPSTREAM_HOST, "the cloud must listen behind the proxy"
        self.cloud = cloud
        self.mode = "pass"
        self.scope = scope  # "unwrap" or "keys"
        self.counts: Counter[str] = Counter()
        self.errors: list[str] = []
        self._rng = rng
        self._shape = 0
        self._lock = threading.Lock()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # ---------------------------------------------------------------- switches

    def set(self, mode: str, *, scope: str = "unwrap") -> None:
        assert mode in MODES, mode
        assert scope in ("unwrap", "keys"), scope
        with self._lock:
            self.mode, self.scope = mode, scope

    def targets(self, method: str, path: str) -> bool:
        route = path.split("?", 1)[0].lower().rstrip("/")
        if self.scope == "keys":
            return "/keys/" in route
        return method == "POST" and route.endswith("/unwrapkey")

    def corrupted(self) -> int:
        with self._lock:
            return sum(n for what, n in self.counts.items() if what in GARBAGE_MODES)

    def count(self, what: str) -> None:
        with self._lock:
            self.counts[what] += 1

    def next_shape(self) -> int:
        with self._lock:
            self._shape = (self._shape + 1) % len(_WRONG_SHAPES)
            return self._shape

    def random_bytes(self, n: int) -> bytes:
        with self._lock:
            return self._rng.randbytes(n)

    # ---------------------------------------------------------------- relaying

    def _upstream_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.cloud.ca))

    def forward(
        self, method: str, path: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, str, list[tuple[str, str]], bytes]:
        connection = _Upstream(self.cloud.port, self._upstream_context())
        try:
            connection.request(method, path, body=body or None, headers=headers)
            response = connection.getresponse()
            return response.status, response.reason, response.getheaders(), response.read()
        finally:
            connection.close()

    # ---------------------------------------------------------------- lifecycle

    @property
    def tls_files(self) -> tuple[Path, Path]:
        tls = self.cloud.home / "tls"
        return tls / "server.pem", tls / "server-key.pem"

    def start(self) -> None:
        """Listen once the cloud has made its certificate (on its first start)."""
        assert self._server is None, "already listening"
        cert, key = self.tls_files
        deadline = time.monotonic() + CERT_TIMEOUT
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        while True:
            try:
                context.load_cert_chain(str(cert), str(key))
                break
            except (OSError, ssl.SSLError):
                if time.monotonic() > deadline:
                    raise AssertionError(
                        f"cloud {self.cloud.name} made no certificate:\n{self.cloud.log()[-4000:]}"
                    ) from None
                time.sleep(0.05)  # polling for the cloud's first start to write it
        self._server = _Server(self, context)
        self._thread = threading.Thread(
            target=self._server.serve_forever, name=f"garbage-vault-{self.cloud.name}"
        )
        self._thread.daemon = True
        self._thread.start()

    def stop(self) -> None:
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._server = None
        self._thread = None
