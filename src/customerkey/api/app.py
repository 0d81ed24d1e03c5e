"""The FastAPI application factory: routers, error rendering, health and metrics.

Every error leaves in the Key Vault shape ``{"error": {"code", "message"}}`` with the status
its ``CustomerKeyError`` class carries; validation problems are 400 ``BadParameter``; an
unexpected exception is a 500 ``InternalError`` that names the request id and is logged with
its traceback (that is a bug, never a way to reject input).
"""

from __future__ import annotations

import logging
import time
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from customerkey import __version__
from customerkey.api.deps import ApiContext, AuthChallenge, request_id
from customerkey.api.middleware import AccessLogMiddleware, BodySizeLimitMiddleware
from customerkey.api.routers import (
    arm,
    audit,
    auth,
    discovery,
    files,
    jobs,
    keys,
    mailboxes,
    policies,
    principals,
    tenants,
    vaults,
)
from customerkey.errors import CustomerKeyError

log = logging.getLogger("customerkey.api")
access_log = logging.getLogger("customerkey.access")

_HTTP_CODES = {404: "NotFound", 405: "MethodNotAllowed", 415: "UnsupportedMediaType"}


def _error(status: int, code: str, message: str, **headers: str) -> JSONResponse:
    # A message may quote caller input; whatever it holds, the error must still render as UTF-8.
    message = message.encode("utf-8", "backslashreplace").decode("utf-8")
    return JSONResponse({"error": {"code": code, "message": message}}, status, headers=headers)


def _validation_message(exc: RequestValidationError) -> str:
    problems = []
    for error in exc.errors()[:3]:
        where = ".".join(str(p) for p in error.get("loc", ()) if p != "body") or "body"
        problems.append(f"{where}: {error.get('msg', 'invalid')}")
    return "The request is invalid: " + "; ".join(problems) + "."


class MetricsMiddleware:
    """Counts requests and their latency by route template (not raw path, to bound labels)."""

    def __init__(self, app: ASGIApp, registry: CollectorRegistry) -> None:
        self.app = app
        self.requests = Counter(
            "customerkey_http_requests",
            "HTTP requests",
            ["method", "route", "status"],
            registry=registry,
        )
        self.latency = Histogram(
            "customerkey_http_request_duration_seconds",
            "HTTP request latency",
            ["route"],
            registry=registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10),
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = scope.get("route")
            label = getattr(route, "path", "unmatched")
            self.requests.labels(scope.get("method", ""), label, str(status)).inc()
            self.latency.labels(label).observe(time.perf_counter() - start)


def create_app(context: ApiContext, *, max_request_bytes: int | None = None) -> FastAPI:
    app = FastAPI(
        title="customerkey",
        version=__version__,
        description=(
            "Azure-Key-Vault-compatible keys API (on vault hosts), the admin API under /api/v1 "
            "and the OAuth2 token endpoint (on the bare host)."
        ),
        redirect_slashes=False,
    )
    app.state.api = context
    app.state.token_guard = auth.TokenGuard(context.runtime.settings)  # hash pool, limits
    registry = CollectorRegistry()

    @app.exception_handler(CustomerKeyError)
    async def _ours(request: Request, exc: CustomerKeyError) -> JSONResponse:
        headers = {}
        if isinstance(exc, AuthChallenge):
            headers["WWW-Authenticate"] = exc.challenge
        return _error(exc.status, exc.code, exc.message, **headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return _error(400, "BadParameter", _validation_message(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _HTTP_CODES.get(
            exc.status_code, "BadParameter" if exc.status_code < 500 else "InternalError"
        )
        return _error(exc.status_code, code, str(exc.detail))

    @app.exception_handler(Exception)
    async def _bug(request: Request, exc: Exception) -> JSONResponse:
        rid = request_id(request)
        log.exception(
            "unhandled error in %s %s (request %s)", request.method, request.url.path, rid
        )
        return _error(500, "InternalError", f"An unexpected error occurred (request id {rid}).")

    @app.get("/healthz", tags=["operations"])
    def healthz() -> dict[str, Any]:
        context.runtime.db.current_revision()  # proves the database answers
        return {"status": "ok", "version": __version__}

    @app.get("/metrics", tags=["operations"], include_in_schema=False)
    def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    app.include_router(auth.router)
    # The keys API right after the token endpoint: routes are tried in order, and the keys
    # API takes most of the calls (matching the ~100 /api/v1 routes first cost ~0.3 ms per
    # call). Its paths begin with /keys or /deletedkeys, so no /api/v1 route can shadow them.
    app.include_router(keys.router)
    # After the keys API: "/{tenant}/discovery/keys" would otherwise answer GET
    # /keys/discovery/keys (a key named "discovery") on a vault host.
    app.include_router(discovery.router)
    # The ARM routes the az CLI signs in with (cloud metadata, subscriptions), bare host only.
    app.include_router(arm.router)
    # The admin API under /api/v1, in the order its routes were always tried.
    for admin in (vaults, principals, audit, tenants, policies, mailboxes, jobs, files):
        app.include_router(admin.router)

    app.add_middleware(MetricsMiddleware, registry=registry)
    app.add_middleware(
        BodySizeLimitMiddleware,
        max_bytes=max_request_bytes or context.runtime.settings.max_request_bytes,
    )
    app.add_middleware(AccessLogMiddleware, logger=access_log)
    return app
