"""Pure ASGI middlewares wrapped around every customerkey app.

Owns two cross-cutting behaviours, written against the raw ASGI interface (not Starlette's
``BaseHTTPMiddleware``) so request and response bodies stream through untouched:

- ``BodySizeLimitMiddleware`` answers 413 with a Key Vault error body
  (``{"error": {"code": "RequestTooLarge", "message": ...}}``) when a request declares a
  ``Content-Length`` above the limit, without reading it, and when a body sent without one
  (chunked) grows past the limit while the app reads it.
- ``AccessLogMiddleware`` writes one JSON line per request (its fields also in the record's
  ``access`` attribute) and adds an ``x-ms-request-id``
  response header (a uuid4) when the app did not set one. Query values are logged only for
  parameters known to be harmless; every other value is replaced by ``***``.

- ``HostCheckMiddleware`` refuses a request whose Host header does not name this server
  (``api.hosts``), before any route can build a URL from it.

Put ``AccessLogMiddleware`` outermost so requests refused by the size limit are logged too.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl, quote

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from customerkey.api.hosts import HostPolicy
from customerkey.clock import Clock, SystemClock
from customerkey.errors import PayloadTooLarge
from customerkey.rng import Rng, SystemRng

REQUEST_ID_HEADER = b"x-ms-request-id"
CLIENT_REQUEST_ID_HEADER = b"x-ms-client-request-id"
# Query parameters whose values never carry anything secret and help reading a log.
LOGGED_QUERY_VALUES = frozenset({"api-version", "maxresults"})


class _BodyTooLarge(Exception):
    """Raised into the app from ``receive`` once the body passes the limit."""


class BodySizeLimitMiddleware:
    """Refuse request bodies larger than ``max_bytes`` with 413 ``RequestTooLarge``."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        if max_bytes < 0:
            raise ValueError("max_bytes must not be negative")
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_bytes:
            await self._refuse(send)
            return

        received = 0
        exceeded = False
        started = False

        async def limited_receive() -> Message:
            nonlocal received, exceeded
            if exceeded:
                raise _BodyTooLarge()
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    exceeded = True
                    raise _BodyTooLarge()
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            # Once over the limit, whatever the app answers (often a 500 from its error
            # handler reacting to _BodyTooLarge) is dropped in favour of our 413.
            if exceeded and not started:
                return
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except Exception:
            if not exceeded or started:
                raise
        if exceeded and not started:
            await self._refuse(send)

    async def _refuse(self, send: Send) -> None:
        error = PayloadTooLarge(
            f"The request body is larger than the limit of {self.max_bytes} bytes."
        )
        body = json.dumps(error.to_body()).encode()
        await send(
            {
                "type": "http.response.start",
                "status": error.status,
                "headers": [
                    (b"content-type", b"application/json; charset=utf-8"),
                    (b"content-length", str(len(body)).encode()),
                    # The rest of the body is never read, so the connection cannot be reused.
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


# Answered whatever the Host header says: a load balancer's probe names the backend's address.
HOST_CHECK_EXEMPT = frozenset({"/healthz"})


class HostCheckMiddleware:
    """Answer 400/404 in the Key Vault error shape to a request for another host or port."""

    def __init__(self, app: ASGIApp, policy: HostPolicy) -> None:
        self.app = app
        self.policy = policy

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("path") in HOST_CHECK_EXEMPT:
            await self.app(scope, receive, send)
            return
        headers: list[tuple[bytes, bytes]] = list(scope.get("headers", []))
        hosts = [value for key, value in headers if key.lower() == b"host"]
        refusal = self.policy.refusal(hosts[0].decode("latin-1") if len(hosts) == 1 else None)
        if refusal is None:
            await self.app(scope, receive, send)
            return
        status, code, message = refusal
        body = json.dumps({"error": {"code": code, "message": message}}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/json; charset=utf-8"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


class AccessLogMiddleware:
    """Log one JSON line per HTTP request to ``logger`` at INFO, and set ``x-ms-request-id``.

    The generated request id is also put in ``scope["state"]["request_id"]`` (Starlette's
    ``request.state.request_id``) so handlers can quote it.
    """

    def __init__(
        self,
        app: ASGIApp,
        logger: logging.Logger,
        *,
        clock: Clock | None = None,
        rng: Rng | None = None,
        timer: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.app = app
        self.logger = logger
        self._clock: Clock = clock or SystemClock()
        self._rng: Rng = rng or SystemRng()
        self._timer = timer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        when = self._clock.now()
        started = self._timer()
        generated = str(uuid.UUID(bytes=self._rng.token_bytes(16), version=4))
        scope.setdefault("state", {})["request_id"] = generated
        status: int | None = None
        request_id = generated
        bytes_in = 0
        bytes_out = 0

        async def counting_receive() -> Message:
            nonlocal bytes_in
            message = await receive()
            if message["type"] == "http.request":
                bytes_in += len(message.get("body", b""))
            return message

        async def logging_send(message: Message) -> None:
            nonlocal status, request_id, bytes_out
            if message["type"] == "http.response.start":
                status = int(message["status"])
                headers = list(message.get("headers", []))
                existing = _find_header(headers, REQUEST_ID_HEADER)
                if existing is None:
                    headers.append((REQUEST_ID_HEADER, generated.encode("ascii")))
                    message = {**message, "headers": headers}
                else:
                    request_id = existing
            elif message["type"] == "http.response.body":
                bytes_out += len(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, counting_receive, logging_send)
        except Exception:
            if status is None:
                status = 500
            raise
        finally:
            record = self._record(
                scope,
                when=when.isoformat(timespec="milliseconds"),
                status=status,
                duration_ms=round((self._timer() - started) * 1000, 3),
                bytes_in=bytes_in,
                bytes_out=bytes_out,
                request_id=request_id,
            )
            # The fields go along too, so a log format can lay them out (``server.logs``).
            self.logger.info(json.dumps(record, separators=(",", ":")), extra={"access": record})

    @staticmethod
    def _record(
        scope: Scope,
        *,
        when: str,
        status: int | None,
        duration_ms: float,
        bytes_in: int,
        bytes_out: int,
        request_id: str,
    ) -> dict[str, Any]:
        headers: list[tuple[bytes, bytes]] = list(scope.get("headers", []))
        client = scope.get("client")
        record: dict[str, Any] = {
            "time": when,
            "method": scope.get("method"),
            "path": scope.get("path"),
        }
        query = _redacted_query(scope.get("query_string", b""))
        if query:
            record["query"] = query
        record.update(
            {
                "status": status,
                "duration_ms": duration_ms,
                "bytes_in": bytes_in,
                "bytes_out": bytes_out,
                "client_ip": client[0] if client else None,
                "host": _find_header(headers, b"host"),
                "request_id": request_id,
            }
        )
        client_request_id = _find_header(headers, CLIENT_REQUEST_ID_HEADER)
        if client_request_id is not None:
            record["client_request_id"] = client_request_id
        user_agent = _find_header(headers, b"user-agent")
        if user_agent is not None:
            record["user_agent"] = user_agent
        return record


def _content_length(scope: Scope) -> int | None:
    value = _find_header(list(scope.get("headers", [])), b"content-length")
    if value is None or not value.strip().isdigit():
        return None
    return int(value)


def _find_header(headers: list[tuple[bytes, bytes]], name: bytes) -> str | None:
    for key, value in headers:
        if key.lower() == name:
            return value.decode("latin-1")
    return None


def _redacted_query(query_string: bytes) -> str:
    if not query_string:
        return ""
    pairs = parse_qsl(query_string.decode("latin-1"), keep_blank_values=True)
    return "&".join(
        f"{quote(key)}={quote(value) if key.lower() in LOGGED_QUERY_VALUES else '***'}"
        for key, value in pairs
    )
