"""The FastAPI application factory: routers, error rendering, health and metrics.

Every error leaves in the Key Vault shape ``{"error": {"code", "message"}}`` with the status
its ``CustomerKeyError`` class carries; validation problems are 400 ``BadParameter``; an
unexpected exception is a 500 ``InternalError`` that names the request id and is logged with
its traceback (that is a bug, never a way to reject input). Storage with no room left (a full
disk, from the database or a blob write) is not a bug: 503 ``InsufficientStorage`` with
``Retry-After``, and ``/healthz`` says ``"storage": "full"`` until it takes writes again
(``storage.exhaustion``).

What the app exposes besides the APIs follows the settings: ``/metrics`` (``api.metrics``: a
bearer token by default, or public, or off here when served on a loopback port) and
``/openapi.json`` with ``/docs`` (``openapi``: off by default, or public; there is no
``/redoc``, whose page would load its script from a CDN).
Requests for a host or port this server does not answer as are refused first (``api.hosts``).
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.exceptions import HTTPException as StarletteHTTPException

from customerkey import __version__
from customerkey.api.deps import ApiContext, AuthChallenge, request_id
from customerkey.api.hosts import HostPolicy
from customerkey.api.metrics import MetricsMiddleware, ServerMetrics, read_token, token_matches
from customerkey.api.middleware import (
    AccessLogMiddleware,
    BodySizeLimitMiddleware,
    HostCheckMiddleware,
)
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
from customerkey.api.throttle import VaultThrottle, parse_setting
from customerkey.console import add_docs_route, mount_console
from customerkey.errors import CustomerKeyError, StorageFull, Throttled
from customerkey.storage.blobs import LocalBlobStore
from customerkey.storage.exhaustion import is_storage_full, local_folders, storage_full_error

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


def create_app(context: ApiContext, *, max_request_bytes: int | None = None) -> FastAPI:
    settings = context.runtime.settings
    openapi = settings.openapi == "public"
    app = FastAPI(
        title="customerkey",
        version=__version__,
        description=(
            "Azure-Key-Vault-compatible keys API (on vault hosts), the admin API under /api/v1 "
            "and the OAuth2 token endpoint (on the bare host)."
        ),
        redirect_slashes=False,
        openapi_url="/openapi.json" if openapi else None,
        docs_url=None,  # served below from the package's own Swagger UI (no CDN)
        redoc_url=None,  # ReDoc's page loads a CDN; /docs serves the vendored Swagger UI
    )
    app.state.api = context
    app.state.token_guard = auth.TokenGuard(settings)  # hash pool, limits
    app.state.throttle = VaultThrottle(parse_setting(settings.throttle))  # keys API, per vault
    metrics = ServerMetrics(context.runtime.jobs)
    app.state.metrics = metrics  # a loopback listener serves the same registry
    context.runtime.vault.operation_observer = metrics.key_operation
    context.runtime.key_cache.observer = metrics.cache_lookup

    @app.exception_handler(CustomerKeyError)
    async def _ours(request: Request, exc: CustomerKeyError) -> JSONResponse:
        headers = {}
        if isinstance(exc, AuthChallenge):
            headers["WWW-Authenticate"] = exc.challenge
        if isinstance(exc, (StorageFull, Throttled)):
            headers["Retry-After"] = str(exc.retry_after)
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

    storage = context.runtime.db.storage

    @app.exception_handler(OSError)
    async def _os_error(request: Request, exc: OSError) -> JSONResponse:
        # A blob or spool file written on a full disk: the 503 of a full database (whose
        # errors leave its transactions as StorageFull already).
        if not is_storage_full(exc):
            return await _bug(request, exc)
        storage.record_full()
        return await _ours(request, storage_full_error(storage.retry_after))

    @app.get("/healthz", tags=["operations"])
    def healthz(response: Response) -> dict[str, Any]:
        context.runtime.db.current_revision()  # proves the database answers
        blobs = context.runtime.mail.blobs
        local = isinstance(blobs, LocalBlobStore)  # else S3: probed through the store
        folders = local_folders(
            context.runtime.db.url, context.runtime.home.blobs_dir if local else None
        )
        sqlite = context.runtime.db.dialect == "sqlite"
        if not storage.writable(
            folders,
            settings.storage_probe_bytes,
            probes_database=sqlite,
            stores=() if local else (blobs,),
        ):
            response.status_code = 503
            response.headers["Retry-After"] = str(storage.retry_after)
            return {"status": "degraded", "version": __version__, "storage": "full"}
        return {"status": "ok", "version": __version__, "storage": "ok"}

    if settings.metrics in ("token", "public"):
        # Read once: a new token (delete the file, restart) takes effect at the next start.
        token = read_token(settings) if settings.metrics == "token" else None

        @app.get("/metrics", tags=["operations"], include_in_schema=False)
        def metrics_endpoint(request: Request) -> Response:
            if settings.metrics == "token" and not token_matches(
                token, request.headers.get("authorization")
            ):
                return _error(
                    401,
                    "Unauthorized",
                    "The metrics need the bearer token of the metrics_token_file setting.",
                    **{"WWW-Authenticate": 'Bearer realm="metrics"'},
                )
            return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)

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
    # The web console under /console on the bare host, and its static files (customerkey.console).
    mount_console(app, context)
    if openapi:
        add_docs_route(app)

    app.add_middleware(MetricsMiddleware, metrics=metrics)
    app.add_middleware(
        BodySizeLimitMiddleware,
        max_bytes=max_request_bytes or settings.max_request_bytes,
    )
    app.add_middleware(HostCheckMiddleware, policy=HostPolicy.from_settings(settings))
    app.add_middleware(AccessLogMiddleware, logger=access_log)
    return app
