"""The console's pages: server-rendered HTML under ``/console`` on the bare host.

Every page runs as the signed-in principal (``Actor``) and calls the same service methods as
the admin API and the CLI, which ask ``identity.authorize`` and write the audit records; this
module decides nothing about who may see or do what. What it adds is presentation: an object
the service will not show (missing, or another tenant's) is one 404 with the same words either
way, so a URL typed by hand tells nobody whether something exists.

Requests are handled on the thread pool (the services block). A POST is checked for its
session's CSRF token before anything else runs; a refused one is a 403 that changed nothing.
Pages read without JavaScript; htmx only refreshes a running job's progress in place.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlencode

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.concurrency import run_in_threadpool

from customerkey import __version__
from customerkey.api.deps import ApiContext, api, host_of, request_id, vault_label
from customerkey.api.rate_limit import source_key
from customerkey.api.routers.auth import authenticate_client, token_guard
from customerkey.console.sessions import (
    COOKIE,
    SIGNIN_COOKIE,
    ConsoleSessions,
    Session,
    signin_token_ok,
)
from customerkey.errors import (
    BadParameter,
    CustomerKeyError,
)
from customerkey.identity import authorize as authz
from customerkey.identity.directory import Principal
from customerkey.runtime import Runtime
from customerkey.vault.models import Actor

router = APIRouter(include_in_schema=False)
FLASH_COOKIE = "__Host-ck_flash"
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
        "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}

_templates = Environment(
    loader=PackageLoader("customerkey.console", "templates"),
    autoescape=select_autoescape(default=True, default_for_string=True),
    trim_blocks=True,
    lstrip_blocks=True,
)


def _fmt_time(value: Any) -> str:
    if not value:
        return ""
    text = str(value)
    return text.replace("T", " ").replace("Z", " UTC")[:23] if "T" in text else text


_templates.filters["when"] = _fmt_time
_templates.filters["tojson_pretty"] = lambda v: json.dumps(v, indent=2, sort_keys=True)


class Missing(CustomerKeyError):
    """An object this principal may not see, or that does not exist: the same 404."""

    status = 404
    code = "NotFound"

    def __init__(self, kind: str, name: str) -> None:
        super().__init__(f"{kind} '{name}' was not found.")


class Refused(CustomerKeyError):
    status = 403
    code = "Forbidden"


@dataclass
class Ctx:
    """One console request: who asks, through which session, with which form."""

    request: Request
    context: ApiContext
    actor: Actor
    principal: Principal
    session: Session
    sessions: ConsoleSessions
    form: Mapping[str, str] = field(default_factory=dict)
    flash: str | None = None

    @property
    def runtime(self) -> Runtime:
        return self.context.runtime

    @property
    def path(self) -> Mapping[str, str]:
        return self.request.path_params

    def query(self, name: str) -> str | None:
        value = self.request.query_params.get(name)
        return value.strip() if value and value.strip() else None

    def field(self, name: str) -> str:
        return self.form.get(name, "").strip()

    def tenant(self) -> str:
        """The tenant a page is about: the one asked for, else the principal's own (which
        tenants it may read is the services' decision, not this one's)."""
        return (self.query("tenant") or self.field("tenant") or self.actor.tenant).lower()

    @property
    def is_operator(self) -> bool:
        return authz.allowed(self.actor, authz.Action.PLATFORM_OPERATE, authz.Platform())

    def render(self, template: str, status: int = 200, **values: Any) -> HTMLResponse:
        return _render(
            template,
            status,
            request=self.request,
            me=self.principal,
            csrf=self.sessions.csrf_token(self.session),
            flash=self.flash,
            is_operator=self.is_operator,
            **values,
        )

    def done(self, where: str, message: str) -> Response:
        """After an action: back to a page (303), with a one-time message."""
        response = RedirectResponse(where, status_code=303)
        response.set_cookie(
            FLASH_COOKIE,
            quote(message),
            max_age=60,
            httponly=True,
            secure=True,
            samesite="strict",
            path="/",
        )
        return response


def _render(template: str, status: int = 200, **values: Any) -> HTMLResponse:
    html = _templates.get_template(template).render(version=__version__, **values)
    return HTMLResponse(html, status_code=status, headers=SECURITY_HEADERS)


def _sessions(request: Request) -> ConsoleSessions:
    sessions = getattr(request.app.state, "console_sessions", None)
    assert isinstance(sessions, ConsoleSessions)
    return sessions


def _now(request: Request) -> int:
    return int(api(request).runtime.clock.now().timestamp())


def _cookie(response: Response, name: str, value: str, max_age: int | None) -> None:
    response.set_cookie(
        name, value, max_age=max_age, httponly=True, secure=True, samesite="strict", path="/"
    )


def _on_vault_host(request: Request) -> bool:
    return vault_label(host_of(request), api(request).domain) is not None


async def _form(request: Request) -> dict[str, str]:
    """An urlencoded form body (the console's forms send nothing else)."""
    content_type = request.headers.get("content-type", "")
    if not content_type.startswith("application/x-www-form-urlencoded"):
        return {}
    raw = (await request.body()).decode("utf-8", errors="replace")
    form: dict[str, str] = {}
    for name, values in parse_qs(raw, keep_blank_values=True).items():
        form[name] = ",".join(values) if name == "permissions" else values[0]
    return form


def _signed_in(request: Request, sessions: ConsoleSessions) -> tuple[Session, Principal] | None:
    """The session and its principal, re-read from the directory: None when the cookie is
    missing or bad, or the principal is gone, disabled, or its credentials changed since."""
    session = sessions.open(request.cookies.get(COOKIE), _now(request))
    if session is None:
        return None
    try:
        principal = api(request).runtime.principals.get(session.object_id)
    except CustomerKeyError:
        return None
    if (
        principal.object_id != session.object_id
        or not principal.enabled
        or principal.token_generation != session.generation
    ):
        return None
    return session, principal


Handler = Callable[[Ctx], Response]


def page(path: str, *, methods: tuple[str, ...] = ("GET",)) -> Callable[[Handler], Handler]:
    """Register a signed-in page (GET) or action (POST)."""

    def register(handler: Handler) -> Handler:
        async def endpoint(request: Request) -> Response:
            form = await _form(request) if request.method == "POST" else {}
            return await run_in_threadpool(_run, handler, request, form)

        endpoint.__name__ = handler.__name__
        router.add_api_route(path, endpoint, methods=list(methods), response_model=None)
        return handler

    return register


def _run(handler: Handler, request: Request, form: Mapping[str, str]) -> Response:
    if _on_vault_host(request):
        return _render("error.html", 404, title="Not found", message="Not found.")
    sessions = _sessions(request)
    found = _signed_in(request, sessions)
    if found is None:
        if request.method != "GET":
            response: Response = _render(
                "error.html",
                403,
                title="Signed out",
                message="Your session has ended; sign in again. Nothing was changed.",
            )
        else:
            target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            response = RedirectResponse(
                "/console/signin?" + urlencode({"next": target}), status_code=303
            )
        response.delete_cookie(COOKIE, path="/", secure=True, httponly=True, samesite="strict")
        return response
    session, principal = found
    ctx = Ctx(
        request=request,
        context=api(request),
        actor=principal.actor(request_id=request_id(request)),
        principal=principal,
        session=session,
        sessions=sessions,
        form=form,
    )
    if request.method == "POST" and not sessions.csrf_ok(session, form.get("csrf")):
        return ctx.render(
            "error.html",
            403,
            title="Refused",
            message="The form's security token is missing or wrong (CSRF). Nothing was changed.",
        )
    flash = request.cookies.get(FLASH_COOKIE)
    if flash and request.method == "GET":
        ctx.flash = unquote(flash)[:500]
    try:
        response = handler(ctx)
    except CustomerKeyError as error:
        response = ctx.render(
            "error.html",
            error.status if 400 <= error.status < 600 else 500,
            title=_TITLES.get(error.status, "Refused"),
            message=error.message,
        )
    if ctx.flash:
        response.delete_cookie(FLASH_COOKIE, path="/", secure=True, httponly=True)
    touched = sessions.touched(session, _now(request))
    if touched is not None:
        _cookie(response, COOKIE, sessions.seal(touched), None)
    return response


_TITLES = {400: "Not done", 404: "Not found", 409: "Not done", 403: "Refused"}


# ------------------------------------------------------------------ sign-in and sign-out


def _safe_next(value: str | None) -> str:
    if value and value.startswith("/console/") and not value.startswith("//"):
        return value
    return "/console/"


@router.get("/", response_model=None)
def root(request: Request) -> Response:
    if _on_vault_host(request):
        return _render("error.html", 404, title="Not found", message="Not found.")
    return RedirectResponse("/console/", status_code=303)


def _signin_page(
    request: Request, status: int = 200, error: str | None = None, client_id: str = ""
) -> Response:
    token = _sessions(request).signin_token()
    response = _render(
        "signin.html",
        status,
        request=request,
        me=None,
        signin_token=token,
        error=error,
        next=_safe_next(request.query_params.get("next")),
        tenant=request.query_params.get("tenant", ""),
        client_id=client_id,
    )
    _cookie(response, SIGNIN_COOKIE, token, 600)
    return response


@router.get("/console/signin", response_model=None)
def signin_form(request: Request) -> Response:
    if _on_vault_host(request):
        return _render("error.html", 404, title="Not found", message="Not found.")
    return _signin_page(request)


@router.post("/console/signin", response_model=None)
async def signin(request: Request) -> Response:
    """The token endpoint's credential check (its hash pool and failure limits), then a
    session cookie. A refusal never says which part was wrong."""
    if _on_vault_host(request):
        return _render("error.html", 404, title="Not found", message="Not found.")
    form = await _form(request)
    if not signin_token_ok(request.cookies.get(SIGNIN_COOKIE), form.get("signin_token")):
        return _signin_page(
            request, 403, "The sign-in form expired or was not sent from this page; try again."
        )
    tenant = form.get("tenant", "").strip()
    client_id = form.get("client_id", "").strip()
    secret = form.get("client_secret", "")
    if not tenant or not client_id or not secret:
        return _signin_page(request, 400, "Enter the tenant, client id and secret.", client_id)
    guard = token_guard(request)
    source = source_key(request.client.host if request.client else None)
    wait = guard.source_requests.take(source)
    if wait:
        return _signin_page(request, 429, "Too many sign-in attempts; wait and try again.")
    result = await authenticate_client(request, guard, source, client_id, secret, tenant)
    if not isinstance(result, Principal):
        if result.status_code == 429:
            return _signin_page(request, 429, "Too many sign-in attempts; wait and try again.")
        return _signin_page(request, 401, "Sign-in failed: the credentials were not accepted.")
    sessions = _sessions(request)
    session = sessions.new(result.object_id, result.token_generation, _now(request))
    response = RedirectResponse(_safe_next(form.get("next")), status_code=303)
    _cookie(response, COOKIE, sessions.seal(session), None)
    response.delete_cookie(SIGNIN_COOKIE, path="/", secure=True, httponly=True)
    return response


@page("/console/signout", methods=("POST",))
def signout(ctx: Ctx) -> Response:
    response = RedirectResponse("/console/signin", status_code=303)
    response.delete_cookie(COOKIE, path="/", secure=True, httponly=True, samesite="strict")
    return response


# ------------------------------------------------------------------ home


@page("/console/")
def home(ctx: Ctx) -> Response:
    return ctx.render("home.html", title="Overview")


def typed_confirmation(ctx: Ctx, name: str) -> None:
    if ctx.field("confirm") != name:
        raise BadParameter(f"Type the name '{name}' exactly to confirm. Nothing was changed.")
