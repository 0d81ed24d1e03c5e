"""The console's service pages over plain HTTPS (httpx): the SharePoint/OneDrive files policy
(register, roll, sites, what each root key version protects), the audit log filtered by tenant,
the final report of a two-person purge, and cancelling jobs where their kind allows it (on an
in-process console with no job worker, so that a queued job stays queued)."""

from __future__ import annotations

import html
import re
from pathlib import Path

from customerkey.identity.workload_principals import EXCHANGE, SHAREPOINT
from customerkey.jobs.queue import Job
from customerkey.vault.models import OPERATOR
from tests.support import mailfixtures
from tests.support.console import ConsoleClient, ConsoleServer, OfflineConsole, alerts
from tests.support.live_servers import DOMAIN
from tests.support.mail_cli import wait_until, write_envelope_mbox

SITE = "https://contoso.sharepoint.local/sites/finance"
_FLASH = re.compile(r'class="flash" role="status">([^<]*)<')


def _flash(page: str) -> str:
    found = _FLASH.search(page)
    return html.unescape(found.group(1)) if found else ""


def _text(page: str) -> str:
    """A page's text without its tags (for reading table rows)."""
    return html.unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", page)))


def _uri(console: ConsoleServer, vault: str, key: str) -> str:
    return f"https://{vault}.{DOMAIN}:{console.live.port}/keys/{key}"


def _vault_with_key(client: ConsoleClient, vault: str, key: str, workload: str) -> None:
    made = client.post("/console/vaults", {"name": vault, "subscription": "s", "region": "x"})
    assert made.status_code == 303, alerts(made)
    assert client.post(f"/console/vaults/{vault}/keys", {"key_name": key}).status_code == 303
    granted = client.post(
        f"/console/vaults/{vault}/access",
        {"principal": workload, "permissions": "get,wrapKey,unwrapKey"},
    )
    assert granted.status_code == 303, alerts(granted)


def _finish(client: ConsoleClient, job_page: str) -> str:
    """Poll a job's progress fragment (bounded) until it ends; its state."""
    assert job_page.startswith("/console/jobs/"), job_page
    wait_until(
        lambda: (
            re.search(r"succeeded|failed|cancelled", client.get(f"{job_page}/progress").text)
            is not None
        ),
        f"job {job_page} ends",
    )
    state = re.search(r'class="job-state">([^<]+)<', client.get(job_page).text)
    assert state, job_page
    return state.group(1)


# ------------------------------------------------------------------ the files policy


def test_files_policy_is_registered_and_rolled_from_the_console(
    console: ConsoleServer, tmp_path: Path
) -> None:
    live = console.live
    client = console.client()
    _vault_with_key(client, "files-a", "tik-a", SHAREPOINT.app_id)
    _vault_with_key(client, "files-b", "tik-b", SHAREPOINT.app_id)
    live.cli("site", "create", SITE)
    (tmp_path / "q4.txt").write_text("quarterly numbers")
    live.cli("file", "put", SITE, "Shared Documents/q4.txt", str(tmp_path / "q4.txt"))

    page = client.get("/console/files")
    assert page.status_code == 200
    assert "Unregistered" in page.text and SITE in page.text
    assert 'href="/console/files"' in page.text  # in the navigation
    registered = client.post(
        "/console/files/register",
        {
            "tenant": "contoso",
            "primary": _uri(console, "files-a", "tik-a"),
            "secondary": _uri(console, "files-b", "tik-b"),
        },
    )
    assert registered.status_code == 303, alerts(registered)
    assert _finish(client, registered.headers["location"]) == "succeeded"
    text = _text(client.get("/console/files?tenant=contoso").text)
    assert "State Registered" in text and "100.0% (1 of 1 sites)" in text
    assert f"{SITE} finance STS 1 CustomerKey" in text

    # Key usage shows the site and file each version of a root key protects.
    usage = client.get("/console/vaults/files-a/keys/tik-a/usage").text
    assert '<th scope="col">Sites</th>' in usage and '<th scope="col">Files</th>' in usage
    assert "Sites under version" in usage and "Files policy" in usage

    # Roll the primary key onto a new version: a job, followed on its page.
    rotated = client.post("/console/vaults/files-a/keys/tik-a/rotate", {})
    assert rotated.status_code == 303, alerts(rotated)
    rolled = client.post(
        "/console/files/roll",
        {"tenant": "contoso", "key_type": "primary", "key": _uri(console, "files-a", "tik-a")},
    )
    assert rolled.status_code == 303, alerts(rolled)
    job = rolled.headers["location"]
    assert "Roll of the primary key" in _flash(client.get(job).text)
    assert _finish(client, job) == "succeeded"
    text = _text(client.get("/console/files").text)
    assert "State Registered" in text and "(2 in all)" in text
    assert "retired" in text and "live" in text  # the old generation retired, the new one live
    # A second roll onto the same version is refused with the service's reason.
    again = client.post(
        "/console/files/roll",
        {"tenant": "contoso", "key_type": "primary", "key": _uri(console, "files-a", "tik-a")},
    )
    assert again.status_code == 409 and "nothing to roll" in " ".join(alerts(again))
    operations = {r["Operation"] for r in live.admin("GET", "/audit?limit=1000").json()["value"]}
    assert {"SPODataEncryptionPolicyRegister", "SPODataEncryptionPolicyUpdate"} <= operations

    # Another tenant's files policy is the same 404 as a missing tenant's, and refuses actions.
    fabrikam = console.client(console.principals.fabrikam_admin)
    theirs, missing = (
        fabrikam.get("/console/files?tenant=contoso"),
        fabrikam.get("/console/files?tenant=nosuchtenant"),
    )
    assert theirs.status_code == missing.status_code == 404
    assert [re.sub(r"'[^']*'", "'X'", m) for m in alerts(theirs)] == [
        re.sub(r"'[^']*'", "'X'", m) for m in alerts(missing)
    ]
    for action, body in (
        ("register", {"primary": "x", "secondary": "y"}),
        ("roll", {"key_type": "primary", "key": _uri(console, "files-a", "tik-a")}),
    ):
        refused = fabrikam.post(f"/console/files/{action}", {"tenant": "contoso", **body})
        assert refused.status_code == 404, (action, refused.status_code)
    assert "(2 in all)" in _text(client.get("/console/files").text)


# ------------------------------------------------------------------ audit by tenant


def test_audit_log_filters_by_tenant(console: ConsoleServer) -> None:
    contoso = console.client()
    made = contoso.post(
        "/console/vaults", {"name": "aud-contoso", "subscription": "s", "region": "x"}
    )
    assert made.status_code == 303
    fabrikam = console.client(console.principals.fabrikam_admin)
    made = fabrikam.post(
        "/console/vaults", {"name": "aud-fabrikam", "subscription": "fab-sub", "region": "x"}
    )
    assert made.status_code == 303, alerts(made)

    operator = console.client(console.principals.operator)
    everything = operator.get("/console/audit").text
    assert "aud-contoso" in everything and "aud-fabrikam" in everything
    only_fabrikam = operator.get("/console/audit?tenant=fabrikam").text
    assert "aud-fabrikam" in only_fabrikam and "aud-contoso" not in only_fabrikam
    assert 'name="tenant" value="fabrikam"' in only_fabrikam
    assert "aud-contoso" in operator.get("/console/audit?tenant=Contoso").text

    # A tenant admin naming another tenant gets nothing of it: the reader decides.
    peeking = fabrikam.get("/console/audit?tenant=contoso")
    assert peeking.status_code == 200
    assert "aud-contoso" not in peeking.text and "admin@contoso.com" not in peeking.text
    assert "No records." in peeking.text
    assert "aud-fabrikam" in fabrikam.get("/console/audit?tenant=fabrikam").text


# ------------------------------------------------------------------ the purge's report


def test_a_finished_purge_shows_its_report(console: ConsoleServer, tmp_path: Path) -> None:
    live = console.live
    client = console.client()
    _vault_with_key(client, "purge-a", "root-a", EXCHANGE.app_id)
    _vault_with_key(client, "purge-b", "root-b", EXCHANGE.app_id)
    created = client.post(
        "/console/deps",
        {
            "tenant": "contoso",
            "name": "purge-dep",
            "key1": _uri(console, "purge-a", "root-a"),
            "key2": _uri(console, "purge-b", "root-b"),
        },
    )
    assert created.status_code == 303, alerts(created)
    for upn in ("p1@contoso.com", "p2@contoso.com"):
        live.cli("mailbox", "create", upn, "--dep", "purge-dep")
    write_envelope_mbox(tmp_path / "p1.mbox", 2)
    live.cli("mailbox", "import", "p1@contoso.com", str(tmp_path / "p1.mbox"))
    approver = console.add_principal("purger@contoso.com", "contoso", "purge-approver")
    for vault in ("purge-a", "purge-b"):
        page = client.get(f"/console/vaults/{vault}").text
        object_id = re.findall(
            r'name="object_id" value="([^"]+)">\s*<button type="submit">Revoke'
            rf'<span class="vh"> access of {EXCHANGE.app_id}<',
            page,
        )
        assert len(object_id) == 1, page
        revoked = client.post(f"/console/vaults/{vault}/access/revoke", {"object_id": object_id[0]})
        assert revoked.status_code == 303
    requested = client.post(
        "/console/deps/purge-dep/purge-request",
        {
            "tenant": "contoso",
            "reason": "Leaving",
            "contact": "it@contoso.com",
            "confirm": "purge-dep",
        },
    )
    assert requested.status_code == 303, alerts(requested)
    second = console.client(approver)
    approved = second.post(
        "/console/deps/purge-dep/purge-approve", {"tenant": "contoso", "confirm": "purge-dep"}
    )
    assert approved.status_code == 303, alerts(approved)
    job = approved.headers["location"]
    assert _finish(second, job) == "succeeded"

    # The approver started the job, but the audit reader gives a purge approver only its own
    # records: its page says so instead of a report it may not read.
    mine = _text(second.get(job).text)
    assert "Purge report" in mine and "Approved by purger@contoso.com" in mine
    assert "not among the audit records you may read" in mine
    assert "p1@contoso.com" not in mine
    # The operator reads the whole report.
    operator = console.client(console.principals.operator)
    page = operator.get(job).text
    text = _text(page)
    assert "Purge report" in text
    assert "Destroyed for good: 2 mailboxes" in text and "1 key generation(s)" in text
    assert "the availability key (destroyed)" in text
    assert "Requested by admin@contoso.com: Leaving (it@contoso.com)" in text
    assert "Approved by purger@contoso.com" in text
    assert "p1@contoso.com" in text and "p2@contoso.com" in text
    # Every record it names is the audit log's, and says what the report says.
    seqs = sorted({int(s) for s in re.findall(r'href="/console/audit/(\d+)"', page)})
    assert len(seqs) == 5  # request, approval, two mailboxes, the policy
    log = {r["Seq"]: r for r in live.admin("GET", "/audit?limit=1000").json()["value"]}
    assert sorted(log[s]["Operation"] for s in seqs) == [
        "DataEncryptionPolicyPurgeApproved",
        "DataEncryptionPolicyPurgeRequested",
        "DataEncryptionPolicyPurged",
        "MailboxPurged",
        "MailboxPurged",
    ]
    # The progress fragment (what htmx swaps in as the job ends) carries the report too.
    assert "Destroyed for good" in operator.get(f"{job}/progress").text


# ------------------------------------------------------------------ cancel where safe


def _queued_import(offline: OfflineConsole, tmp_path: Path) -> Job:
    rt = offline.runtime
    rt.mail.create_mailbox(OPERATOR, mailfixtures.TENANT, "queued@contoso.com")
    write_envelope_mbox(tmp_path / "queued.mbox", 3)
    admin = rt.principals.get(offline.contoso_admin[1]).actor()
    job: Job = rt.mail.start_import(admin, "queued@contoso.com", tmp_path / "queued.mbox")
    return job


def test_a_queued_import_is_cancelled_from_the_jobs_page(
    offline_console: OfflineConsole, tmp_path: Path
) -> None:
    job = _queued_import(offline_console, tmp_path)
    client = offline_console.client()
    listed = client.get("/console/jobs").text
    assert f'aria-label="Cancel job {job.id}"' in listed
    assert f'action="/console/jobs/{job.id}/cancel"' in listed
    refused = client.post(f"/console/jobs/{job.id}/cancel", {"back": "list"}, csrf="wrong")
    assert refused.status_code == 403
    assert offline_console.runtime.jobs.get(job.id).state == "queued"
    done = client.post(f"/console/jobs/{job.id}/cancel", {"back": "list"})
    assert done.status_code == 303 and done.headers["location"] == "/console/jobs"
    listed = client.get("/console/jobs").text
    assert f"Job {job.id} cancelled." in _flash(listed)
    assert f'aria-label="Cancel job {job.id}"' not in listed  # finished: nothing to cancel
    assert offline_console.runtime.jobs.get(job.id).state == "cancelled"
    operations = [r.operation for r in offline_console.runtime.audit_log.newest(OPERATOR, limit=5)]
    assert "JobCancel" in operations


def test_a_refresh_cannot_be_cancelled_and_says_why(offline_console: OfflineConsole) -> None:
    rt = offline_console.runtime
    rt.vault.create_key(
        OPERATOR,
        mailfixtures.VAULT_A,
        mailfixtures.KEY_A,
        kty="RSA-HSM",
        key_ops=["wrapKey", "unwrapKey"],
    )
    admin = rt.principals.get(offline_console.contoso_admin[1]).actor()
    job = rt.mail.refresh(admin, mailfixtures.TENANT, "NA-DEP")
    assert job is not None
    client = offline_console.client()
    listed = client.get("/console/jobs").text
    assert job.id in listed and f'aria-label="Cancel job {job.id}"' not in listed
    page = client.get(f"/console/jobs/{job.id}").text
    assert "Cancel the job" not in page and "cannot be cancelled" in page
    refused = client.post(f"/console/jobs/{job.id}/cancel", {})
    assert refused.status_code == 409
    assert any("cannot be cancelled" in a and "dep-refresh" in a for a in alerts(refused))
    assert rt.jobs.get(job.id).state == "queued"
