"""Running an ASGI app over HTTPS with uvicorn.

Owns how customerkey serves: HTTPS only (one TLS listener, no plain-HTTP port), HTTP/1.1
keep-alive on, no ``server`` header, no uvicorn access log (``AccessLogMiddleware`` writes one),
no trust in ``X-Forwarded-*`` headers, and a graceful shutdown on SIGTERM or SIGINT: stop
accepting, let in-flight requests finish for up to ``graceful_timeout`` seconds, run the app's
lifespan shutdown, then return normally.

Connections that are idle when the shutdown starts are closed at once. Over TLS a close waits
for the client's ``close_notify``, which a client idling in its keep-alive pool never sends, so
left to uvicorn every idle client would hold the shutdown for the whole ``graceful_timeout``;
after ``IDLE_CLOSE_GRACE`` seconds such connections are dropped.

Slow and silent clients are bounded (``ConnectionLimits``): a connection gets
``header_timeout`` seconds for its TLS handshake and, from its start or from the first byte of
each later request, for the whole request head (h11 has no such timeout: a client sending a
header byte now and then would hold its connection for ever); a partial head then gets
408 and the connection is closed (dropped ``IDLE_CLOSE_GRACE`` seconds later if the client does
not finish the TLS close). An idle keep-alive connection is closed after ``keep_alive_timeout``
seconds. A process holds ``max_connections``; a connection beyond that is answered 503
``ServiceUnavailable`` (with ``Retry-After``) and closed.
"""

from __future__ import annotations

import asyncio
import functools
import json
import signal
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from types import FrameType
from typing import Any

import h11
import uvicorn
from starlette.types import ASGIApp, Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol

from customerkey.server.tls import TlsFiles

ASGIApplication = ASGIApp

# ECDHE only, AEAD only, for TLS 1.2; TLS 1.3 suites are not affected by this string.
TLS12_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20"
# How long an idle connection gets to finish its TLS close during a shutdown before it is dropped.
IDLE_CLOSE_GRACE = 0.5


_TIMEOUT_408 = (
    b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json; charset=utf-8\r\n"
    b"connection: close\r\ncontent-length: %d\r\n\r\n%s"
)


@dataclass(frozen=True)
class ConnectionLimits:
    """How long a client may take and how many connections a server process holds."""

    header_timeout: float = 10.0
    keep_alive_timeout: int = 5
    max_connections: int = 1000


def _error_body(code: str, message: str) -> bytes:
    return json.dumps({"error": {"code": code, "message": message}}).encode()


async def _overloaded(scope: Scope, receive: Receive, send: Send) -> None:
    body = _error_body(
        "ServiceUnavailable", "The server holds as many connections as it may; retry shortly."
    )
    await send(
        {
            "type": "http.response.start",
            "status": 503,
            "headers": [
                (b"content-type", b"application/json; charset=utf-8"),
                (b"content-length", str(len(body)).encode()),
                (b"retry-after", b"1"),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class _Config(uvicorn.Config):
    limits = ConnectionLimits()


class _BoundedH11(H11Protocol):
    """uvicorn's h11 protocol with a request-head timeout and a connection cap."""

    _head_timer: asyncio.TimerHandle | None = None

    @property
    def _limits(self) -> ConnectionLimits:
        limits = getattr(self.config, "limits", None)
        return limits if isinstance(limits, ConnectionLimits) else ConnectionLimits()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        over = len(self.connections) >= self._limits.max_connections
        super().connection_made(transport)
        if over:
            self.app = _overloaded  # answers this connection's request, then closes it
        self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._head_timer is None and self.conn.their_state is h11.IDLE:
            self._arm_head_timer()  # the first bytes of a request after a keep-alive pause
        super().data_received(data)
        if self.conn.their_state is not h11.IDLE:
            self._cancel_head_timer()

    def _arm_head_timer(self) -> None:
        self._cancel_head_timer()
        self._head_timer = self.loop.call_later(self._limits.header_timeout, self._head_late)

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_late(self) -> None:
        self._head_timer = None
        if self.transport.is_closing() or self.conn.their_state is not h11.IDLE:
            return
        if self.cycle is not None and not self.cycle.response_complete:
            return  # still answering the previous request
        if self.conn.trailing_data[0]:
            body = _error_body("RequestTimeout", "The request head took too long to arrive.")
            self.transport.write(_TIMEOUT_408 % (len(body), body))
        self.conn.send(h11.ConnectionClosed())
        self.transport.close()
        self.loop.call_later(IDLE_CLOSE_GRACE, self._drop)

    def _drop(self) -> None:
        if self in self.connections:
            self.transport.abort()


class _Server(uvicorn.Server):
    def __init__(
        self,
        config: _Config,
        *,
        on_started: Callable[[], None] | None,
        shutdown: threading.Event | None,
    ) -> None:
        super().__init__(config)
        self._on_started = on_started
        self._shutdown = shutdown
        self._handshake_timeout = config.limits.header_timeout

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        # uvicorn has no setting for the TLS handshake timeout (asyncio's default is 60 s, for
        # a client that connects and sends nothing); its listeners are made here.
        loop = asyncio.get_running_loop()
        create = functools.partial(
            loop.create_server, ssl_handshake_timeout=self._handshake_timeout
        )
        setattr(loop, "create_server", create)  # noqa: B010 (mypy refuses assigning a method)
        try:
            await super().startup(sockets=sockets)
        finally:
            delattr(loop, "create_server")
        if self.started and self._on_started is not None:
            self._on_started()

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        # uvicorn asks idle connections to close as its shutdown begins; those are the ones to
        # drop if their TLS close is still waiting on the client after the grace period.
        idle = [c for c in self.server_state.connections if _is_idle(c)]
        reaper = asyncio.ensure_future(self._drop_after_grace(idle))
        try:
            await super().shutdown(sockets=sockets)
        finally:
            reaper.cancel()

    async def _drop_after_grace(self, connections: list[Any]) -> None:
        await asyncio.sleep(IDLE_CLOSE_GRACE)
        for connection in connections:
            transport = getattr(connection, "transport", None)
            if connection in self.server_state.connections and transport is not None:
                transport.abort()

    async def on_tick(self, counter: int) -> bool:
        if self._shutdown is not None and self._shutdown.is_set():
            self.should_exit = True
        result: bool = await super().on_tick(counter)
        return result


def _is_idle(connection: Any) -> bool:
    """Whether a uvicorn HTTP connection is between requests (no response being produced)."""
    cycle = getattr(connection, "cycle", None)
    return cycle is None or bool(getattr(cycle, "response_complete", False))


def run_https(
    app: ASGIApplication,
    *,
    host: str,
    port: int,
    tls: TlsFiles,
    log_config: dict[str, Any] | str | None = None,
    on_started: Callable[[], None] | None = None,
    shutdown: threading.Event | None = None,
    graceful_timeout: int = 10,
    keep_alive_timeout: int | None = None,
    limits: ConnectionLimits | None = None,
    sockets: list[socket.socket] | None = None,
) -> None:
    """Serve ``app`` on ``https://host:port`` with ``tls.cert`` / ``tls.key`` until told to stop.

    Blocks until SIGTERM or SIGINT (signals are only caught when called on the main thread) or,
    from any thread, until ``shutdown`` is set. ``on_started`` runs on the server's event loop
    once the socket is listening, so it must be quick. ``log_config`` is handed to uvicorn;
    ``None`` leaves logging as the caller configured it. ``sockets``, when given, are bound
    sockets to listen on instead of binding ``host:port`` (see ``bind_listener``). Raises
    ``RuntimeError`` when the server cannot start (port taken, app startup failed).
    ``limits`` bounds slow and silent clients (``keep_alive_timeout``, when given, overrides
    its keep-alive timeout).
    """
    limits = limits or ConnectionLimits()
    if keep_alive_timeout is not None:
        limits = ConnectionLimits(limits.header_timeout, keep_alive_timeout, limits.max_connections)
    config = _Config(
        app,
        host=host,
        port=port,
        ssl_certfile=str(tls.cert),
        ssl_keyfile=str(tls.key),
        ssl_ciphers=TLS12_CIPHERS,
        log_config=log_config,
        access_log=False,
        server_header=False,
        proxy_headers=False,
        http=_BoundedH11,
        loop="asyncio",
        timeout_keep_alive=limits.keep_alive_timeout,
        timeout_graceful_shutdown=graceful_timeout,
    )
    config.limits = limits
    server = _Server(config, on_started=on_started, shutdown=shutdown)
    try:
        with _quiet_signal_reraise(server):
            server.run(sockets=sockets)
    except SystemExit as exc:
        if server.started:
            raise
        raise RuntimeError(
            f"the HTTPS server on {host}:{port} did not start; see the uvicorn error log"
        ) from exc


def bind_listener(host: str, port: int, *, reuse_port: bool = False) -> socket.socket:
    """A TCP socket bound to ``host:port`` (not yet listening), as uvicorn would bind it.

    With ``reuse_port`` (Linux, BSD) several processes each bind their own socket to the same
    port and the kernel spreads new connections across them, which a single shared socket
    does not do evenly. Raises ``OSError`` when the address is taken.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP named: asyncio sets TCP_NODELAY on accepted connections only for a socket
    # whose proto says TCP, and without it each answer's last TLS record waits for the
    # client's delayed ACK (~40 ms a request).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
    except BaseException:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


@contextmanager
def _quiet_signal_reraise(server: uvicorn.Server) -> Iterator[None]:
    # After its graceful shutdown uvicorn re-raises the signal it caught against the handler
    # that was installed before it; with the defaults that kills the process (SIGTERM) or raises
    # KeyboardInterrupt (SIGINT) before the caller can clean up. Our handler only asks for a
    # shutdown, which also covers a signal arriving before uvicorn installs its own.
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def request_exit(signum: int, frame: FrameType | None) -> None:
        server.should_exit = True

    handled = (signal.SIGINT, signal.SIGTERM)
    previous = {sig: signal.signal(sig, request_exit) for sig in handled}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
