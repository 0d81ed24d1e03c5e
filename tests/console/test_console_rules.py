"""The console's rules over plain HTTPS (httpx against a real server): sign-in, the session
cookie, server-side revocation, CSRF, tenant isolation, and the vendored assets."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

from customerkey.console.sessions import COOKIE, ConsoleSessions
from customerkey.rng import SystemRng
from tests.support.console import ConsoleServer, alerts
from tests.support.live_servers import start_server
from tests.support.mail_cli import wait_until, write_envelope_mbox

ROOT = Path(__file__).resolve().parents[2]
CONSOLE = ROOT / "src" / "customerkey" / "console"


# ------------------------------------------------------------------ the cookie, in isolation


def test_session_cookie_is_sealed_and_bounded() -> None:
    sessions = ConsoleSessions(b"k" * 32, rng=SystemRng(), lifetime=3600, idle=600)
    session = sessions.new("oid-1", 4, now=1000)
    sealed = sessions.seal(session)
    assert "oid-1" not in sealed  # opaque
    assert sessions.open(sealed, 1100) == session
    assert sessions.open(sealed, 1000 + 600) is None  # idle too long
    touched = sessions.touched(session, 1500)
    assert touched is not None and sessions.open(sessions.seal(touched), 2000) == touched
    assert sessions.open(sessions.seal(touched), 1000 + 3600) is None  # absolute end
    # Another installation's key, or one flipped character, opens nothing.
    assert (
        ConsoleSessions(b"x" * 32, rng=SystemRng(), lifetime=3600, idle=600).open(sealed, 1100)
        is None
    )
    flipped = sealed[:-3] + ("A" if sealed[-3] != "A" else "B") + sealed[-2:]
    assert sessions.open(flipped, 1100) is None
    assert sessions.open("garbage", 1100) is None
    assert sessions.csrf_ok(session, sessions.csrf_token(session))
    assert not sessions.csrf_ok(session, None)
    assert not sessions.csrf_ok(session, sessions.csrf_token(sessions.new("oid-1", 4, 1000)))


# ------------------------------------------------------------------ sign-in


def test_sign_in_sets_a_strict_session_cookie(console: ConsoleServer) -> None:
    client = console.anonymous()
    response = client.sign_in(*console.principals.contoso_admin)
    assert response.status_code == 303
    cookie = next(c for c in response.headers.get_list("set-cookie") if c.startswith(f"{COOKIE}="))
    flags = {part.strip().lower() for part in cookie.split(";")[1:]}
    assert {"httponly", "secure", "path=/", "samesite=strict"} <= flags
    assert not any(f.startswith("domain=") for f in flags)
    page = client.get("/console/vaults")
    assert page.status_code == 200
    assert page.headers["cache-control"] == "no-store"
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]


def test_wrong_credentials_say_nothing_about_which_part(console: ConsoleServer) -> None:
    tenant, client_id, secret = console.principals.contoso_admin
    answers = set()
    for attempt in (
        (tenant, client_id, secret + "x"),  # wrong secret
        (tenant, "nobody@contoso.com", secret),  # unknown client id
        ("fabrikam", client_id, secret),  # wrong tenant
    ):
        client = console.anonymous()
        response = client.sign_in(*attempt)
        assert response.status_code == 401
        assert COOKIE not in response.headers.get("set-cookie", "")
        answers.add(tuple(alerts(response)))
    assert answers == {("Sign-in failed: the credentials were not accepted.",)}


def test_sign_in_form_needs_its_own_token(console: ConsoleServer) -> None:
    client = console.anonymous()
    tenant, client_id, secret = console.principals.contoso_admin
    response = client.http.post(
        "/console/signin",
        data={"tenant": tenant, "client_id": client_id, "client_secret": secret},
    )
    assert response.status_code == 403
    assert COOKIE not in response.headers.get("set-cookie", "")


def test_pages_need_a_session(console: ConsoleServer) -> None:
    client = console.anonymous()
    response = client.get("/console/vaults")
    assert response.status_code == 303
    assert response.headers["location"].startswith("/console/signin?next=")
    forged = console.anonymous()
    forged.http.cookies.set(COOKIE, "AAAA" * 30, domain="localhost")
    assert forged.get("/console/vaults").status_code == 303


def test_sign_out_ends_the_session_in_this_browser(console: ConsoleServer) -> None:
    client = console.client()
    response = client.post("/console/signout", {})
    assert response.status_code == 303
    assert f'{COOKIE}=""' in response.headers["set-cookie"]
    assert client.get("/console/vaults").status_code == 303


# ------------------------------------------------------------------ server-side revocation


@pytest.mark.parametrize("change", ["disable", "reset-secret"])
def test_session_ends_when_the_principal_changes(console: ConsoleServer, change: str) -> None:
    name = f"{change}-admin@contoso.com"
    who = console.add_principal(name, "contoso", "tenant-admin")
    client = console.client(who)
    assert client.get("/console/vaults").status_code == 200
    csrf = client.csrf()
    console.live.cli("principal", change, name)
    assert client.get("/console/vaults").status_code == 303  # back to the sign-in page
    refused = client.post(
        "/console/vaults",
        {"name": f"{change}-vault", "subscription": "s", "region": "eastus"},
        csrf=csrf,
    )
    assert refused.status_code == 403
    assert console.live.admin("GET", f"/vaults/{change}-vault").status_code == 404
    if change == "disable":
        assert client.sign_in(*who).status_code == 401


# ------------------------------------------------------------------ CSRF


@pytest.mark.parametrize("token", [None, "wrong", "other-session"])
def test_a_post_without_the_sessions_token_changes_nothing(
    console: ConsoleServer, token: str | None
) -> None:
    client = console.client()
    if token == "other-session":
        token = console.client().csrf()  # a real token, of another session
    name = {None: "csrf-none", "wrong": "csrf-wrong"}.get(token, "csrf-other")
    before = console.live.admin("GET", "/audit?limit=1000").json()["value"]
    response = client.post(
        "/console/vaults", {"name": name, "subscription": "s", "region": "eastus"}, csrf=token
    )
    assert response.status_code == 403
    assert any("CSRF" in a for a in alerts(response))
    assert console.live.admin("GET", f"/vaults/{name}").status_code == 404
    after = console.live.admin("GET", "/audit?limit=1000").json()["value"]
    assert len(after) == len(before)  # not even a refusal was audited: nothing ran


def test_actions_go_through_the_services_and_are_audited(console: ConsoleServer) -> None:
    client = console.client()
    response = client.post(
        "/console/vaults", {"name": "rules-audited", "subscription": "s", "region": "eastus"}
    )
    assert response.status_code == 303, alerts(response)
    records = console.live.admin("GET", "/audit?vault=rules-audited").json()["value"]
    assert [r["Operation"] for r in records][:1] == ["VaultPut"]
    assert records[0]["Principal"].startswith("admin@contoso.com")


def test_typed_confirmation_must_match(console: ConsoleServer) -> None:
    client = console.client()
    client.post("/console/vaults", {"name": "rules-typed", "subscription": "s", "region": "x"})
    assert client.post("/console/vaults/rules-typed/keys", {"key_name": "k1"}).status_code == 303
    refused = client.post("/console/vaults/rules-typed/keys/k1/delete", {"confirm": "k"})
    assert refused.status_code == 400
    assert client.get("/console/vaults/rules-typed/keys/k1").status_code == 200
    done = client.post("/console/vaults/rules-typed/keys/k1/delete", {"confirm": "k1"})
    assert done.status_code == 303
    assert client.get("/console/vaults/rules-typed/keys/k1").status_code == 404


def test_a_vault_is_deleted_recovered_and_purged_with_typed_names(
    console: ConsoleServer,
) -> None:
    client = console.client()
    client.post("/console/vaults", {"name": "rules-gone", "subscription": "s", "region": "x"})
    assert client.post("/console/vaults/rules-gone/keys", {"key_name": "k"}).status_code == 303
    policy = {"rotate_after": "P90D", "expires_after": "P2Y"}
    saved = client.post("/console/vaults/rules-gone/keys/k/rotation-policy", policy)
    assert saved.status_code == 303
    assert (
        "Rotate P90D after creation; new versions expire after P2Y."
        in client.get("/console/vaults/rules-gone/keys/k").text
    )
    backup = client.post("/console/vaults/rules-gone/keys/k/backup", {})
    assert backup.status_code == 200
    assert backup.headers["content-disposition"] == 'attachment; filename="rules-gone-k.keybackup"'
    assert len(backup.content) > 100
    assert client.post("/console/vaults/rules-gone/delete", {"confirm": "rules"}).status_code == 400
    assert (
        client.post("/console/vaults/rules-gone/delete", {"confirm": "rules-gone"}).status_code
        == 303
    )
    assert client.get("/console/vaults/rules-gone").status_code == 404
    assert '<th scope="row">rules-gone</th>' in client.get("/console/vaults?deleted=1").text
    assert client.post("/console/vaults/rules-gone/recover", {}).status_code == 303
    assert client.get("/console/vaults/rules-gone").status_code == 200
    client.post("/console/vaults/rules-gone/delete", {"confirm": "rules-gone"})
    assert client.post("/console/vaults/rules-gone/purge", {"confirm": "nope"}).status_code == 400
    assert (
        client.post("/console/vaults/rules-gone/purge", {"confirm": "rules-gone"}).status_code
        == 303
    )
    assert '<th scope="row">rules-gone</th>' not in client.get("/console/vaults?deleted=1").text
    operations = [
        r["Operation"] for r in console.live.admin("GET", "/audit?limit=1000").json()["value"]
    ]
    wanted = {"KeyRotationPolicySet", "KeyBackup", "VaultDelete", "VaultRecover", "VaultPurge"}
    assert wanted <= set(operations)


def test_a_move_request_re_keys_a_mailbox(console: ConsoleServer, tmp_path: Path) -> None:
    console.live.cli("mailbox", "create", "bob@contoso.com")
    write_envelope_mbox(tmp_path / "bob.mbox", 2)
    console.live.cli("mailbox", "import", "bob@contoso.com", str(tmp_path / "bob.mbox"))
    client = console.client()
    page = client.get("/console/mailboxes/bob@contoso.com")
    assert page.status_code == 200 and "Read item" in page.text
    moved = client.post("/console/mailboxes/bob@contoso.com/move", {})
    assert moved.status_code == 303 and moved.headers["location"].startswith("/console/jobs/")
    job = moved.headers["location"]
    wait_until(lambda: "succeeded" in client.get(f"{job}/progress").text, "the move finished")
    page = client.get("/console/mailboxes/bob@contoso.com").text
    assert "Last move: Completed, 100.0% (2 of 2 items)" in page
    for item in re.findall(r'/items/([^"]+)"', page):
        assert client.get(f"/console/mailboxes/bob@contoso.com/items/{item}").status_code == 200
    unassigned = client.post("/console/mailboxes/bob@contoso.com/policy", {"policy": ""})
    assert unassigned.status_code == 303


# ------------------------------------------------------------------ tenant isolation


def test_another_tenants_objects_look_missing(console: ConsoleServer) -> None:
    contoso = console.client()
    assert (
        contoso.post(
            "/console/vaults", {"name": "iso-theirs", "subscription": "s", "region": "eastus"}
        ).status_code
        == 303
    )
    assert (
        contoso.post("/console/vaults/iso-theirs/keys", {"key_name": "secretkey"}).status_code
        == 303
    )
    record = console.live.admin("GET", "/audit?vault=iso-theirs").json()["value"][0]["Seq"]

    fabrikam = console.client(console.principals.fabrikam_admin)
    listed = fabrikam.get("/console/vaults").text
    assert "iso-theirs" not in listed
    assert "iso-theirs" not in fabrikam.get("/console/audit").text
    for theirs, missing in (
        ("/console/vaults/iso-theirs", "/console/vaults/iso-nothing"),
        ("/console/vaults/iso-theirs/keys/secretkey", "/console/vaults/iso-nothing/keys/secretkey"),
        (
            "/console/vaults/iso-theirs/keys/secretkey/usage",
            "/console/vaults/iso-nothing/keys/secretkey/usage",
        ),
        (f"/console/audit/{record}", "/console/audit/99999999"),
        ("/console/deps?tenant=contoso", "/console/deps?tenant=nosuchtenant"),
        ("/console/mailboxes?tenant=contoso", "/console/mailboxes?tenant=nosuchtenant"),
    ):
        a, b = fabrikam.get(theirs), fabrikam.get(missing)
        assert a.status_code == b.status_code == 404, (theirs, a.status_code, b.status_code)
        words = [re.sub(r"'[^']*'", "'X'", m) for m in alerts(a)]
        assert words == [re.sub(r"'[^']*'", "'X'", m) for m in alerts(b)], theirs
    # Actions on them are refused the same way, and change nothing.
    for path, body in (
        ("/console/vaults/iso-theirs/keys", {"key_name": "planted"}),
        (
            "/console/vaults/iso-theirs/access",
            {"principal": "admin@fabrikam.com", "permissions": "get"},
        ),
        ("/console/vaults/iso-theirs/keys/secretkey/disable", {"force": "on"}),
        ("/console/vaults/iso-theirs/keys/secretkey/delete", {"confirm": "secretkey"}),
    ):
        response = fabrikam.post(path, body)
        assert response.status_code == 404, (path, response.status_code)
    key = contoso.get("/console/vaults/iso-theirs/keys/secretkey")
    assert key.status_code == 200 and "yes" in key.text
    assert "planted" not in contoso.get("/console/vaults/iso-theirs").text


# ------------------------------------------------------------------ packaging and /docs


def test_templates_and_static_files_are_package_data() -> None:
    globs = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"][
        "package-data"
    ]["customerkey"]
    package = CONSOLE.parent
    covered = {p for pattern in globs for p in package.glob(pattern)}
    files = {p for p in CONSOLE.rglob("*") if p.is_file() and p.suffix != ".py"}
    files = {p for p in files if "__pycache__" not in p.parts}
    assert files and files <= covered, sorted(str(p) for p in files - covered)
    versions = (CONSOLE / "static" / "VENDORED.md").read_text()
    for vendored in ("htmx/htmx.min.js", "swagger-ui/swagger-ui-bundle.js"):
        assert (CONSOLE / "static" / vendored).stat().st_size > 10_000
    assert "2.0.11" in versions and "5.36.0" in versions


def test_docs_load_swagger_from_the_package(tmp_path: Path) -> None:
    server = start_server(tmp_path / "docs-home", env={"CUSTOMERKEY_OPENAPI": "public"})
    try:
        page = server.http.get(f"{server.url}/docs")
        assert page.status_code == 200
        assert "cdn.jsdelivr.net" not in page.text and "tiangolo" not in page.text
        for asset in re.findall(r'(?:src|href)="(/console/static/[^"]+)"', page.text):
            assert server.http.get(f"{server.url}{asset}").status_code == 200, asset
        assert "/console/static/swagger-ui/swagger-ui-bundle.js" in page.text
        # ReDoc's page would load its script from a CDN: there is none.
        assert server.http.get(f"{server.url}/redoc").status_code == 404
    finally:
        assert server.stop() == 0
