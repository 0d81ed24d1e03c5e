"""The console in a real browser (Debian's Chromium through Playwright) against a real server.

One story, in the order an admin lives it: sign in as a tenant admin, create two vaults and a
root key in each, grant the Exchange Online principal, create a DEP, put a mailbox under it
(the CLI, as the mail service would), rotate a key and watch the DEP refresh reach 100%, see
the key usage, revoke (disable both keys) and see reads fail with the reason shown, then the
two-person purge through two browser sessions (its final report arriving with the last
progress update), and the audit chain verified by the operator. The SharePoint/OneDrive page is
visited and shot on the way.
A screenshot of each main page is saved under pytest's tmp path (``screenshots``); the
key-usage one also refreshes ``docs/images/console-key-usage.png`` when
``CUSTOMERKEY_UPDATE_SCREENSHOTS=1``. Separately: every control on each main page has an
accessible name and Tab reaches it. Browser tests are few: CI has two cores.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
from typing import Any

import pytest

from customerkey.identity.workload_principals import EXCHANGE
from tests.support.console import ConsoleServer, browser_page
from tests.support.live_servers import DOMAIN
from tests.support.mail_cli import write_envelope_mbox

ROOT = Path(__file__).resolve().parents[2]
README_IMAGE = ROOT / "docs" / "images" / "console-key-usage.png"
pytestmark = pytest.mark.slow

# Every control of a page, with whether it has an accessible name (its label, aria-label,
# aria-labelledby, or a button's or link's own text).
_CONTROLS = """() => {
  const nodes = [...document.querySelectorAll(
    'a[href], button, input:not([type=hidden]), select, textarea, [tabindex]:not([tabindex="-1"])')]
    .filter(el => !el.disabled && el.offsetParent !== null);
  return nodes.map((el, i) => {
    el.dataset.ckIndex = String(i);
    const labelled = (el.labels && el.labels.length > 0)
      || !!el.getAttribute('aria-label')
      || !!(el.getAttribute('aria-labelledby') || '').trim()
      || ((el.tagName === 'BUTTON' || el.tagName === 'A') && el.textContent.trim().length > 0);
    return {index: i, tag: el.tagName, id: el.id, name: el.getAttribute('name'), labelled};
  });
}"""


def _save(page: Any, folder: Path, name: str) -> Path:
    path = folder / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def _flash(page: Any) -> str:
    return str(page.locator(".flash").inner_text())


def _vault_with_key(page: Any, url: str, vault: str, key: str) -> None:
    page.goto(f"{url}/console/vaults")
    page.get_by_label("Name (3 to 24 letters, digits and dashes)").fill(vault)
    page.get_by_role("button", name="Create vault").click()
    assert f"Vault '{vault}' created." in _flash(page)
    page.get_by_label("Key name").fill(key)
    page.get_by_role("button", name="Create key").click()
    assert f"Key '{key}' created" in _flash(page)
    page.goto(f"{url}/console/vaults/{vault}")
    page.get_by_label("Principal (sign-in name, application id or object id)").fill(EXCHANGE.app_id)
    page.get_by_role("button", name="Grant", exact=True).click()
    assert "Granted get, wrapKey, unwrapKey" in _flash(page)


def _wait_for_job(page: Any) -> None:
    """On a job page: htmx polls the progress until the job finishes (no reload here)."""
    page.locator(".job-state", has_text=re.compile("succeeded|failed|cancelled")).wait_for(
        timeout=60_000
    )
    assert page.locator(".job-state").inner_text() == "succeeded", page.content()
    assert page.locator(".job-percent").inner_text() == "100.0%"


def test_tenant_admin_story(
    browser: Any, console: ConsoleServer, screenshots: Path, tmp_path: Path
) -> None:
    url, live = console.url, console.live
    page = browser_page(browser, console, console.principals.contoso_admin)
    _save(page, screenshots, "overview")

    # Two vaults, a root key in each, the Exchange principal granted on both.
    _vault_with_key(page, url, "story-a", "root-a")
    _vault_with_key(page, url, "story-b", "root-b")
    _save(page, screenshots, "vault")
    page.goto(f"{url}/console/vaults")
    _save(page, screenshots, "vaults")

    # A DEP over both keys.
    page.goto(f"{url}/console/deps")
    page.get_by_label("Name", exact=True).fill("story-dep")
    page.get_by_label("First root key URI").fill(
        f"https://story-a.{DOMAIN}:{live.port}/keys/root-a"
    )
    page.get_by_label("Second root key URI").fill(
        f"https://story-b.{DOMAIN}:{live.port}/keys/root-b"
    )
    page.get_by_role("button", name="Create policy").click()
    assert "Policy 'story-dep' created." in _flash(page)

    # The mail service keeps a mailbox with three items under it.
    live.cli("mailbox", "create", "alice@contoso.com", "--dep", "story-dep")
    mbox = tmp_path / "alice.mbox"
    write_envelope_mbox(mbox, 3)
    live.cli("mailbox", "import", "alice@contoso.com", str(mbox))
    page.goto(f"{url}/console/mailboxes")
    row = page.get_by_role("row", name=re.compile("alice@contoso.com"))
    assert "story-dep" in row.inner_text() and "True" in row.inner_text()
    _save(page, screenshots, "mailboxes")
    page.get_by_role("link", name="SharePoint and OneDrive").first.click()
    assert "Unregistered" in page.locator(".files-state").inner_text()
    _save(page, screenshots, "files")

    # Rotate root-a, refresh the DEP and watch the job reach 100% (htmx polling).
    page.goto(f"{url}/console/vaults/story-a/keys/root-a")
    page.get_by_role("button", name="Rotate: add a new version").click()
    assert "New version" in _flash(page)
    page.goto(f"{url}/console/deps/story-dep")
    page.get_by_role("button", name="Refresh policy").click()
    assert re.search(r"/console/jobs/[^/]+$", page.url)
    # htmx loads under the CSP (the URL changes at navigation, before the page's scripts run;
    # a script the CSP refused would never define it, and this times out).
    page.wait_for_function("() => typeof window.htmx === 'object'", timeout=15_000)
    _wait_for_job(page)
    _save(page, screenshots, "job")
    page.goto(f"{url}/console/jobs")
    assert "dep-refresh" in page.get_by_role("table").inner_text()
    _save(page, screenshots, "jobs")
    page.goto(f"{url}/console/deps/story-dep")
    generations = page.get_by_role("table").inner_text()
    assert "live" in generations
    _save(page, screenshots, "dep")

    # Key usage: the new version protects the mailbox and its items; the old one nothing.
    page.goto(f"{url}/console/vaults/story-a/keys/root-a/usage")
    rows = page.locator("table.usage tbody tr")
    assert rows.count() == 2
    newest, oldest = rows.nth(0).inner_text(), rows.nth(1).inner_text()
    assert "protects data" in newest and "story-dep" in newest
    assert "may be disabled" in oldest
    shot = _save(page, screenshots, "key-usage")
    if os.environ.get("CUSTOMERKEY_UPDATE_SCREENSHOTS") == "1":
        README_IMAGE.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot, README_IMAGE)

    # Revoke: disable both root keys (they protect data, so it takes "disable anyway").
    for vault, key in (("story-a", "root-a"), ("story-b", "root-b")):
        page.goto(f"{url}/console/vaults/{vault}/keys/{key}")
        page.get_by_role("button", name=re.compile("^Disable")).first.click()
        assert "still protects data" in page.get_by_role("alert").inner_text()
        page.goto(f"{url}/console/vaults/{vault}/keys/{key}")
        page.get_by_label("disable anyway, even if it protects data").first.check()
        page.get_by_role("button", name=re.compile("^Disable")).first.click()
        assert "disabled" in _flash(page)
    _save(page, screenshots, "key")
    page.goto(f"{url}/console/mailboxes/alice@contoso.com")
    page.get_by_role("link", name=re.compile("^Read item")).first.click()
    reason = page.get_by_role("alert").inner_text()
    assert "cannot be read" in reason and "disabled" in reason.lower(), reason

    # The two-person purge: the admin revokes the mail service and requests it, a purge
    # approver of the tenant approves it in a browser session of its own.
    # (An approver must hold the role from before the request.)
    approver = console.add_principal("approver@contoso.com", "contoso", "purge-approver")
    for vault in ("story-a", "story-b"):
        page.goto(f"{url}/console/vaults/{vault}")
        page.get_by_role("button", name=re.compile(f"Revoke access of {EXCHANGE.app_id}")).click()
        assert "Access policy removed." in _flash(page)
    page.goto(f"{url}/console/deps/story-dep")
    page.get_by_label("Reason").fill("Leaving the service")
    page.get_by_label("Contact").fill("admin@contoso.com")
    page.get_by_label("Type the policy's name, story-dep, to request the purge").fill("story-dep")
    page.get_by_role("button", name="Request the purge").click()
    assert "Permanent data purge requested" in _flash(page)
    second = browser_page(browser, console, approver)
    second.goto(f"{url}/console/deps/story-dep")
    second.get_by_label("Type the policy's name, story-dep, to approve").fill("story-dep")
    second.get_by_role("button", name="Approve the purge").click()
    _wait_for_job(second)
    # The report arrives with the last progress swap (no reload). The audit reader gives a
    # purge approver only its own records, so the approver's says so; the operator's is whole.
    assert "you may read" in second.locator("section.report").inner_text()
    operator = browser_page(browser, console, console.principals.operator)
    operator.goto(second.url)
    report = operator.locator("section.report")
    assert "Destroyed for good: 1 mailboxes" in report.inner_text(), report.inner_text()
    assert "alice@contoso.com" in report.get_by_role("table").inner_text()
    _save(operator, screenshots, "purge-job")

    # The audit log shows what happened; the operator verifies the chain.
    page.goto(f"{url}/console/audit?vault=story-a")
    audit = page.get_by_role("table").inner_text()
    assert "VaultPut" in audit and "KeyUpdate" in audit
    _save(page, screenshots, "audit")
    page.get_by_role("link", name=re.compile(r"^\d+$")).first.click()
    assert "Details" in page.content()
    _save(page, screenshots, "audit-record")
    operator.goto(f"{url}/console/audit")
    operator.get_by_role("link", name="Verify the audit chain").click()
    assert "The audit chain is intact" in operator.get_by_role("status").inner_text()
    _save(operator, screenshots, "audit-verify")
    for shot in (
        "overview",
        "vaults",
        "vault",
        "key",
        "key-usage",
        "dep",
        "files",
        "job",
        "purge-job",
        "audit",
    ):
        assert (screenshots / f"{shot}.png").stat().st_size > 5_000


MAIN_PAGES = (
    "/console/",
    "/console/vaults",
    "/console/vaults/keyboard-v",
    "/console/vaults/keyboard-v/keys/kb-key",
    "/console/vaults/keyboard-v/keys/kb-key/usage",
    "/console/deps",
    "/console/mailboxes",
    "/console/files",
    "/console/jobs",
    "/console/audit",
)


def test_every_control_is_named_and_reachable_by_keyboard(
    browser: Any, console: ConsoleServer, screenshots: Path
) -> None:
    client = console.client()
    client.post("/console/vaults", {"name": "keyboard-v", "subscription": "s", "region": "x"})
    client.post("/console/vaults/keyboard-v/keys", {"key_name": "kb-key"})
    page = browser_page(browser, console, console.principals.contoso_admin)
    for path in MAIN_PAGES:
        page.goto(f"{console.url}{path}")
        assert page.locator("a.skip[href='#main']").count() == 1
        assert page.locator("p.error").count() == 0, path  # the page itself, not a refusal
        controls = page.evaluate(_CONTROLS)
        unnamed = [c for c in controls if not c["labelled"]]
        assert not unnamed, (path, unnamed)
        # Tab from the top of the page reaches every control, the skip link first.
        page.locator("body").focus()
        reached: list[str] = []
        for _ in range(4 * len(controls) + 10):
            page.keyboard.press("Tab")
            index = page.evaluate("() => document.activeElement?.dataset?.ckIndex ?? null")
            if reached and index == reached[-1]:
                continue  # the parts of one control (a date-time field's day, month, ...)
            if index is None or index in reached:
                break
            reached.append(index)
        assert reached[:1] == ["0"] and controls[0]["tag"] == "A", path
        missing = {str(c["index"]) for c in controls} - set(reached)
        assert not missing, (path, [controls[int(i)] for i in sorted(missing)])
        tables = page.locator("table")
        for i in range(tables.count()):
            assert tables.nth(i).locator("caption").count() == 1, path
            assert tables.nth(i).locator("th[scope=col]").count() > 0, path
        _save(page, screenshots, "a11y-" + (path.strip("/").replace("/", "-") or "home"))


def test_pages_read_without_javascript(browser: Any, console: ConsoleServer) -> None:
    page = browser_page(browser, console, console.principals.contoso_admin, javascript=False)
    for path in MAIN_PAGES[:2] + MAIN_PAGES[5:]:
        page.goto(f"{console.url}{path}")
        assert page.locator("main h1").count() == 1, path
        assert "Sign in" not in page.title(), path
    # A job started from a form, and its page: a reload link instead of live progress.
    console.live.cli("mailbox", "create", "carol@contoso.com")
    page.goto(f"{console.url}/console/mailboxes/carol@contoso.com")
    page.get_by_role("button", name="New move request").click()
    assert "Move request queued." in _flash(page)
    assert page.get_by_role("link", name="Reload").count() == 1
    assert "% done" in page.locator("#progress").inner_text()
    # Forms work too: create a vault, without a line of script.
    page.goto(f"{console.url}/console/vaults")
    page.get_by_label("Name (3 to 24 letters, digits and dashes)").fill("nojs-vault")
    page.get_by_role("button", name="Create vault").click()
    assert "Vault 'nojs-vault' created." in _flash(page)
