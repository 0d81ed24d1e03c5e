"""The web console: server-rendered pages for operators, tenant admins and purge approvers at
``https://<host>:8443/console/`` (``/`` redirects there), served by ``customerkey serve`` on
the bare host.

- ``sessions``: the sealed session cookie and the CSRF token bound to it;
- ``web``: the request pipeline (session re-check, CSRF, errors as pages), sign-in and
  sign-out; ``vault_pages``, ``service_pages`` and ``files_pages``: the pages and actions,
  each calling the same service methods as the admin API and the CLI as the signed-in
  principal (the decisions are ``identity.authorize``'s, the audit records the services');
- ``templates/``: Jinja2 templates; ``static/``: the stylesheet and the vendored htmx and
  Swagger UI (``static/VENDORED.md``), so nothing is fetched from a CDN and users need no Node.

``mount_console`` adds it all to the app; ``add_docs_route`` serves ``/docs`` with the
vendored Swagger UI (only when the OpenAPI document is public).
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse
from starlette.staticfiles import StaticFiles

from customerkey.api.deps import ApiContext
from customerkey.console.sessions import ConsoleSessions

STATIC = Path(__file__).parent / "static"
STATIC_URL = "/console/static"


def mount_console(app: FastAPI, context: ApiContext) -> None:
    # The page modules register their routes on web's router when imported.
    from customerkey.console import files_pages, service_pages, vault_pages  # noqa: F401
    from customerkey.console.web import router

    settings = context.runtime.settings
    # The session key is derived from the master key (never stored), so every server process
    # opens every other's cookies.
    app.state.console_sessions = ConsoleSessions(
        context.runtime.master_key,
        rng=context.runtime.rng,
        lifetime=settings.console_session_seconds,
        idle=settings.console_idle_seconds,
    )
    app.include_router(router)
    app.mount(STATIC_URL, StaticFiles(directory=STATIC), name="console-static")


def add_docs_route(app: FastAPI) -> None:
    """``/docs``: Swagger UI from the package's own copy (FastAPI's default loads a CDN)."""

    @app.get("/docs", include_in_schema=False)
    def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=app.openapi_url or "/openapi.json",
            title=f"{app.title} - Swagger UI",
            swagger_js_url=f"{STATIC_URL}/swagger-ui/swagger-ui-bundle.js",
            swagger_css_url=f"{STATIC_URL}/swagger-ui/swagger-ui.css",
            swagger_favicon_url=f"{STATIC_URL}/swagger-ui/favicon-32x32.png",
        )
