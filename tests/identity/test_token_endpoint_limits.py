"""The token endpoint cannot be used to stall the server or to guess secrets at speed.

Each test starts its own ``customerkey serve`` with the admission-control settings it needs
(``CUSTOMERKEY_TOKEN_*``): failed sign-ins are limited per client id and per source address
(429 with ``Retry-After`` and the OAuth2 error shape, decided before any hashing), and the
secret check runs on a dedicated pool, so ``/healthz`` answers while many wrong-secret requests
wait for it. Nothing here asserts a duration: the stall test compares the order in which
responses arrive.
"""

from __future__ import annotations

import http.client
import selectors
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlencode

import httpx
import pytest

from tests.support.live_servers import TENANT, LiveServer, start_server

Serve = Callable[[dict[str, str]], LiveServer]
# Failure limits that no test here reaches unless it sets its own.
NO_LIMITS = {
    "CUSTOMERKEY_TOKEN_CLIENT_FAILURE_BURST": "0",
    "CUSTOMERKEY_TOKEN_SOURCE_FAILURE_BURST": "0",
}
# One token in ~1000 minutes: once spent, a limit stays spent for the whole test.
NEVER_REFILLS = "0.001"


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Serve]:
    started: list[LiveServer] = []

    def start(env: dict[str, str]) -> LiveServer:
        server = start_server(tmp_path / f"home{len(started)}", env=env)
        started.append(server)
        return server

    yield start
    for server in started:
        status = server.stop()
        assert status == 0, server.log()[-4000:]
        assert not server.bugs(), server.log()[-4000:]


def principal(server: LiveServer, upn: str) -> tuple[str, str]:
    """Create a principal through the CLI; its client id and secret."""
    view = server.cli_json("principal", "create", upn, "--tenant", TENANT)
    return str(view["Id"]), str(view["ClientSecret"])


def assert_throttled(response: httpx.Response, *, mentions: str) -> int:
    """A 429 in the OAuth2 error shape with a whole-seconds Retry-After; returns it."""
    assert response.status_code == 429, response.text
    body = response.json()
    assert set(body) == {"error", "error_description"}
    assert body["error"] == "temporarily_unavailable"
    assert mentions in body["error_description"]
    assert response.headers["cache-control"] == "no-store"
    seconds = response.headers["retry-after"]
    assert seconds.isdigit() and int(seconds) >= 1
    assert f"Retry after {seconds} seconds" in body["error_description"]
    return int(seconds)


def assert_refused(response: httpx.Response) -> None:
    assert response.status_code == 401, response.text
    assert response.json()["error"] == "invalid_client"


def test_wrong_secrets_for_one_client_id_are_throttled_while_another_signs_in(
    serve: Serve,
) -> None:
    server = serve(
        {
            **NO_LIMITS,
            "CUSTOMERKEY_TOKEN_CLIENT_FAILURE_BURST": "3",
            "CUSTOMERKEY_TOKEN_CLIENT_FAILURES_PER_MINUTE": NEVER_REFILLS,
        }
    )
    alice, alice_secret = principal(server, "alice@contoso.com")
    bob, bob_secret = principal(server, "bob@contoso.com")
    for _ in range(3):
        assert_refused(server.token_response(alice, "wrong-secret"))
    wait = assert_throttled(server.token_response(alice, "wrong-secret"), mentions="client id")
    assert 59_000 < wait <= 60_000  # the whole debt: one token per 60000 s
    # While throttled even the right secret is not checked; the case of the id does not help.
    assert_throttled(server.token_response(alice, alice_secret), mentions="client id")
    assert_throttled(server.token_response(alice.upper(), alice_secret), mentions="client id")
    # Another client id from the same address is not affected.
    assert server.token_response(bob, bob_secret).status_code == 200
    assert server.token_response(bob, bob_secret).status_code == 200
    # An id that does not exist is counted the same way (no hint that alice exists).
    for _ in range(3):
        assert_refused(server.token_response("nobody@contoso.com", "wrong-secret"))
    assert_throttled(
        server.token_response("nobody@contoso.com", "wrong-secret"), mentions="client id"
    )


def test_failures_from_one_address_are_throttled_for_every_client_id(serve: Serve) -> None:
    server = serve(
        {
            **NO_LIMITS,
            "CUSTOMERKEY_TOKEN_SOURCE_FAILURE_BURST": "3",
            "CUSTOMERKEY_TOKEN_SOURCE_FAILURES_PER_MINUTE": NEVER_REFILLS,
        }
    )
    bob, bob_secret = principal(server, "bob@contoso.com")
    # Signing in successfully costs nothing, however often.
    for _ in range(5):
        assert server.token_response(bob, bob_secret).status_code == 200
    for guess in ("eve@contoso.com", "mallory@contoso.com", bob):
        assert_refused(server.token_response(guess, "wrong-secret"))
    assert_throttled(server.token_response("trent@contoso.com", "wrong-secret"), mentions="address")
    assert_throttled(server.token_response(bob, bob_secret), mentions="address")
    # Another address (loopback has the whole 127/8) still signs in.
    other = httpx.Client(
        transport=httpx.HTTPTransport(verify=server.ssl_context(), local_address="127.0.0.2"),
        timeout=30,
    )
    with other:
        response = other.post(
            f"https://127.0.0.1:{server.port}/{TENANT}/oauth2/v2.0/token",
            headers={"Host": f"localhost:{server.port}"},
            data={
                "grant_type": "client_credentials",
                "client_id": bob,
                "client_secret": bob_secret,
                "scope": f"{server.resource}/.default",
            },
            extensions={"sni_hostname": "localhost"},
        )
    assert response.status_code == 200, response.text


def _connection(server: LiveServer) -> http.client.HTTPSConnection:
    """A kept-alive connection with its TLS handshake done (one /healthz on it)."""
    connection = http.client.HTTPSConnection(
        "localhost", server.port, context=server.ssl_context(), timeout=60
    )
    connection.request("GET", "/healthz")
    response = connection.getresponse()
    response.read()
    assert response.status == 200
    return connection


def test_healthz_answers_while_wrong_secret_requests_wait_for_the_hash(serve: Serve) -> None:
    in_flight = 12
    server = serve(
        {
            **NO_LIMITS,  # every request below is hashed
            "CUSTOMERKEY_TOKEN_HASH_THREADS": "1",
            "CUSTOMERKEY_TOKEN_HASH_QUEUE": str(in_flight),
        }
    )
    alice, _ = principal(server, "alice@contoso.com")
    body = urlencode(
        {
            "grant_type": "client_credentials",
            "client_id": alice,
            "client_secret": "wrong-secret",
            "scope": f"{server.resource}/.default",
        }
    )
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    tokens = [_connection(server) for _ in range(in_flight)]
    health = _connection(server)
    # Every token request is on the wire before /healthz is sent.
    for connection in tokens:
        connection.request("POST", f"/{TENANT}/oauth2/v2.0/token", body=body, headers=form)
    health.request("GET", "/healthz")

    names = {id(c): f"token-{i}" for i, c in enumerate(tokens)} | {id(health): "healthz"}
    arrived: list[str] = []
    statuses: dict[str, int] = {}
    with selectors.DefaultSelector() as selector:
        for connection in [*tokens, health]:
            assert connection.sock is not None
            selector.register(connection.sock, selectors.EVENT_READ, connection)
        while len(arrived) < in_flight + 1:
            for key, _ in selector.select(timeout=60):
                connection = key.data
                response = connection.getresponse()
                response.read()
                selector.unregister(key.fileobj)
                arrived.append(names[id(connection)])
                statuses[names[id(connection)]] = response.status
    for connection in [*tokens, health]:
        connection.close()

    assert statuses.pop("healthz") == 200
    assert set(statuses.values()) == {401}
    # With the hash on the event loop, /healthz was read only after every token request had
    # been hashed, one after another; now it overtakes most of them.
    still_waiting = len(arrived) - 1 - arrived.index("healthz")
    assert still_waiting >= in_flight // 2, arrived


def test_a_full_hash_queue_answers_429_at_once(serve: Serve) -> None:
    server = serve(
        {
            **NO_LIMITS,
            "CUSTOMERKEY_TOKEN_HASH_THREADS": "1",
            "CUSTOMERKEY_TOKEN_HASH_QUEUE": "1",
        }
    )
    alice, _ = principal(server, "alice@contoso.com")
    body = urlencode(
        {
            "grant_type": "client_credentials",
            "client_id": alice,
            "client_secret": "wrong-secret",
            "scope": f"{server.resource}/.default",
        }
    )
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    connections = [_connection(server) for _ in range(8)]
    for connection in connections:
        connection.request("POST", f"/{TENANT}/oauth2/v2.0/token", body=body, headers=form)
    answers = []
    for connection in connections:
        response = connection.getresponse()
        answers.append((response.status, response.getheader("Retry-After"), response.read()))
        connection.close()
    statuses = [status for status, _, _ in answers]
    assert 401 in statuses and 429 in statuses, statuses
    for status, retry, text in answers:
        if status == 429:
            assert retry == "1"
            assert b'"temporarily_unavailable"' in text and b"busy" in text


def test_a_correct_secret_works_once_the_throttle_has_expired(serve: Serve) -> None:
    server = serve(
        {
            **NO_LIMITS,
            "CUSTOMERKEY_TOKEN_CLIENT_FAILURE_BURST": "1",
            "CUSTOMERKEY_TOKEN_CLIENT_FAILURES_PER_MINUTE": "200",  # one back every 0.3 s
        }
    )
    alice, alice_secret = principal(server, "alice@contoso.com")
    throttled = None
    for _ in range(20):  # two failures in a row less than 0.3 s apart
        response = server.token_response(alice, "wrong-secret")
        if response.status_code == 429:
            throttled = response
            break
        assert_refused(response)
    assert throttled is not None, "never throttled"
    assert assert_throttled(throttled, mentions="client id") == 1
    time.sleep(0.4)  # the refill of one token (0.3 s), which Retry-After rounds up to 1 s
    assert server.token_response(alice, alice_secret).status_code == 200
    # A success is not charged: the next wrong secret is a plain 401 again.
    assert_refused(server.token_response(alice, "wrong-secret"))
