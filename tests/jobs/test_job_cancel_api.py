"""``POST /api/v1/jobs/{id}/cancel``: the admin API's cancel, with the CLI's rules (who may,
which kinds, a finished job refused) in the Key Vault error shape."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from tests.support.mail_cli import wait_until, write_envelope_mbox

if TYPE_CHECKING:
    from tests.support.live_servers import LiveServer

ADMIN = "admin@contoso.com"
UPN = "cancel-api@contoso.com"


def test_cancel_through_the_admin_api(live: LiveServer, tmp_path: Path) -> None:
    live.cli("--as", ADMIN, "mailbox", "create", UPN)
    store = tmp_path / "a.mbox"
    write_envelope_mbox(store, 3)
    queued = live.cli_json("--as", ADMIN, "mailbox", "import", UPN, str(store), "--no-wait")
    job_id = queued["JobId"]

    def finished() -> bool:
        state = live.admin("GET", f"/jobs/{job_id}").json()["State"]
        return bool(state in ("succeeded", "cancelled"))

    wait_until(finished, "the server's worker ends the import")
    refused = live.admin("POST", f"/jobs/{job_id}/cancel")
    assert refused.status_code == 409, refused.text
    assert refused.json()["error"]["code"] == "JobNotCancellable"

    missing = live.admin("POST", "/jobs/00000000-0000-0000-0000-00000000abcd/cancel")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "JobNotFound"

    # a job someone else started: the tenant admin may neither see nor cancel it
    other = live.cli_json("mailbox", "import", UPN, str(store), "--again", "--no-wait")
    forbidden = live.admin("POST", f"/jobs/{other['JobId']}/cancel")
    assert forbidden.status_code == 403, forbidden.text
