"""Slow and silent clients are bounded (issue 17, item 15), with real sockets on a real server.

The server runs with a 1-second head timeout. Clients that connect and never start TLS,
clients that finish TLS and send nothing, and a slowloris that sends its request head a byte at
a time are all disconnected by the server, and a normal client is served meanwhile. A server
holding its ``max_connections`` answers one more connection 503, and serves again once they go.
Every wait polls a socket or the server with a deadline; nothing here measures time.
"""

from __future__ import annotations

import select
import socket
import ssl
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.live_servers import LiveServer, start_server

# Generous: each is only how long a test waits before it calls the server wrong.
DEADLINE = 30.0


@pytest.fixture(scope="module")
def strict(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    home: Path = tmp_path_factory.mktemp("strict") / "home"
    server = start_server(
        home,
        env={"CUSTOMERKEY_HEADER_TIMEOUT_SECONDS": "1", "CUSTOMERKEY_KEEP_ALIVE_SECONDS": "1"},
    )
    try:
        yield server
    finally:
        assert server.stop() == 0, server.log()[-3000:]


def _tcp(server: LiveServer) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    sock.settimeout(0)
    return sock


def _tls(server: LiveServer) -> ssl.SSLSocket:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    wrapped = server.ssl_context().wrap_socket(sock, server_hostname="localhost")
    wrapped.settimeout(0)  # reads never wait: what arrives is polled with select
    return wrapped


def _read(sock: socket.socket) -> bytes | None:
    """What the server sent (b"" once it closed the connection, by end of stream or reset), or
    None when nothing for the application came (TLS 1.3 session tickets arrive unasked)."""
    try:
        return sock.recv(65536)
    except (ssl.SSLWantReadError, BlockingIOError):
        return None
    except (ConnectionError, ssl.SSLError, OSError):
        return b""


def _readable(socks: list[socket.socket], wait: float) -> list[socket.socket]:
    """Those of ``socks`` with something to read within ``wait`` seconds (``poll``: unlike
    ``select``, it takes descriptors above 1023, which a long test session reaches)."""
    poller = select.poll()
    by_fd = {sock.fileno(): sock for sock in socks}
    for fd in by_fd:
        poller.register(fd, select.POLLIN)
    return [by_fd[fd] for fd, _ in poller.poll(wait * 1000)]


def _wait_read(sock: socket.socket, wait: float) -> bytes | None:
    pending = isinstance(sock, ssl.SSLSocket) and sock.pending()
    if pending or _readable([sock], wait):
        return _read(sock)
    return None


def _all_closed(socks: list[socket.socket]) -> bool:
    """Whether the server closes every one of ``socks`` before the deadline."""
    deadline = time.monotonic() + DEADLINE
    left = list(socks)
    while left and time.monotonic() < deadline:
        for sock in _readable(left, 0.5):
            if _read(sock) == b"":
                left.remove(sock)
    return not left


def _slowloris(sock: ssl.SSLSocket, head: bytes) -> bytes:
    """Send ``head`` then one more header byte whenever the server stays silent for a moment,
    never ending the head; returns what the server sent once it closed the connection."""
    received = b""
    sock.sendall(head)
    deadline = time.monotonic() + DEADLINE
    while time.monotonic() < deadline:
        try:
            sock.sendall(b"a")
        except (ConnectionError, ssl.SSLError, OSError):
            return received
        chunk = _wait_read(sock, 0.3)
        if chunk == b"":
            return received
        received += chunk or b""
    raise AssertionError("the server kept a connection whose request head never ended")


def _response(sock: ssl.SSLSocket) -> bytes:
    """A whole small response (its head and a JSON body) read from ``sock``."""
    received = b""
    deadline = time.monotonic() + DEADLINE
    while not received.endswith(b"}") and time.monotonic() < deadline:
        chunk = _wait_read(sock, 0.5)
        assert chunk != b"", received
        received += chunk or b""
    return received


def _healthy(server: LiveServer) -> bool:
    return httpx.get(f"{server.url}/healthz", verify=server.ssl_context()).status_code == 200


@pytest.mark.parametrize(
    "connect", [_tcp, _tls], ids=["clients that never start TLS", "clients that send no request"]
)
def test_silent_clients_are_disconnected(
    strict: LiveServer, connect: Callable[[LiveServer], socket.socket]
) -> None:
    silent = [connect(strict) for _ in range(30)]
    try:
        assert _healthy(strict)
        assert _all_closed(silent)
    finally:
        for sock in silent:
            sock.close()
    assert _healthy(strict)


def test_a_slowloris_is_disconnected_with_408(strict: LiveServer) -> None:
    head = f"GET /healthz HTTP/1.1\r\nHost: localhost:{strict.port}\r\nX-Slow: ".encode()
    with _tls(strict) as sock:
        received = _slowloris(sock, head)
    if received:  # a reset may beat the answer to the client
        assert received.startswith(b"HTTP/1.1 408"), received[:200]
    assert _healthy(strict)


def test_a_slowloris_after_a_first_request_is_disconnected(strict: LiveServer) -> None:
    request = f"GET /healthz HTTP/1.1\r\nHost: localhost:{strict.port}\r\n\r\n".encode()
    with _tls(strict) as sock:
        sock.sendall(request)
        assert _response(sock).startswith(b"HTTP/1.1 200")
        # The next request on the kept-alive connection never ends its head.
        received = _slowloris(sock, request[: request.index(b"\r\n\r\n") + 2] + b"X-Slow: ")
    assert not received or received.startswith(b"HTTP/1.1 408"), received[:200]
    assert _healthy(strict)


def test_connections_beyond_the_limit_get_503_until_some_go(tmp_path: Path) -> None:
    server = start_server(
        tmp_path / "home",
        env={"CUSTOMERKEY_MAX_CONNECTIONS": "3", "CUSTOMERKEY_HEADER_TIMEOUT_SECONDS": "120"},
    )
    held: list[ssl.SSLSocket] = []
    try:
        held = [_tls(server) for _ in range(3)]
        statuses = []
        deadline = time.monotonic() + DEADLINE
        while time.monotonic() < deadline:
            response = httpx.get(f"{server.url}/healthz", verify=server.ssl_context())
            statuses.append(response.status_code)
            if response.status_code == 503:
                assert response.json()["error"]["code"] == "ServiceUnavailable"
                assert response.headers["retry-after"] == "1"
                break
        assert statuses[-1] == 503, statuses
        for sock in held:
            sock.close()
        deadline = time.monotonic() + DEADLINE
        while time.monotonic() < deadline and not _healthy(server):
            pass
        assert _healthy(server)
    finally:
        for sock in held:
            sock.close()
        assert server.stop() == 0, server.log()[-3000:]
