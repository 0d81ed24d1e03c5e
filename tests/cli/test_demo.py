"""``customerkey demo`` through the CLI entry point: the seed document's story in a fresh home
folder, each step checking its documented effect, and a failing effect failing the demo."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from customerkey.cli.main import main
from customerkey.workloads.mail.service import MailService

STEPS = [
    "Onboard the tenant (not a cmdlet)",
    "Two vaults in two regions",
    "HSM root keys for wrapKey/unwrapKey only",
    "Back up both keys",
    "Grant Exchange Online and SharePoint Online",
    "A mailbox DEP over both root keys",
    "Assign the DEP before migration",
    "Migrate the mailbox (not a cmdlet)",
    "Is the mailbox encrypted, under which DEP?",
    "Register the files DEP",
    "Roll the key (a new version, -NotBefore)",
    "Use the new key: refresh the DEP",
    "Use the new key in SharePoint: a key roll",
    "Restore a lost key from its backup",
    "Revoke Exchange Online's access",
    "Give the access back",
]
ROW = re.compile(r"^│ (\d+)\. (.+?) +│.*│ (ok|FAIL) +│$")


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(["demo", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def summary(out: str) -> dict[str, str]:
    """Step title -> ok | FAIL, from the summary table's rows."""
    rows = {}
    for line in out.splitlines():
        match = ROW.match(line)
        if match:
            rows[match[2]] = match[3]
    return rows


def test_demo_plays_the_document_and_every_step_behaves(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    home = tmp_path / "demo-home"
    code, out, err = run(capsys, "--home", str(home))
    assert code == 0, out + err
    assert summary(out) == dict.fromkeys(STEPS, "ok")
    assert f"All {len(STEPS)} steps behaved as the document says." in out
    assert f"The demo's home folder is {home}" in out
    assert (home / "customerkey.db").is_file() and (home / "master.key").is_file()
    # The lines it ran, and their output, are on the screen.
    assert "PS> Add-AzKeyVaultKey -VaultName Contoso-O365EX-NA-VaultA1 -Name " in out
    assert '-NotBefore (Get-Date -Date "12/27/2016 12:01 AM")' in out
    assert "Not Before     : 12/27/2016 12:01:00 AM" in out
    assert "PS> Set-DataEncryptionPolicy ContosoMailboxDEP -Refresh" in out
    assert "PS2> Get-SPODataEncryptionPolicy -Identity https://contoso-admin.sharepoint.com" in out
    assert re.search(r"^State +: Rolling$", out, re.M)
    assert re.search(r"^PercentComplete +: 25$", out, re.M)
    assert "Update-SPODataEncryptionPolicy : A key roll is already in progress" in out
    assert "Error (KeyAccessDenied: The root keys of data encryption policy" in out
    assert "Traceback" not in out + err

    # A used home is refused; --force wipes a customerkey home (only) and starts again.
    code, _, err = run(capsys, "--home", str(home))
    assert code == 1 and "is not empty; the demo needs a fresh home" in err
    other = tmp_path / "not-a-home"
    other.mkdir()
    (other / "notes.txt").write_text("keep me", encoding="utf-8")
    code, _, err = run(capsys, "--home", str(other), "--force")
    assert code == 1 and "--force wipes only a customerkey home" in err
    assert (other / "notes.txt").read_text(encoding="utf-8") == "keep me"
    code, out, err = run(capsys, "--home", str(home), "--force")
    assert code == 0, out + err
    assert summary(out) == dict.fromkeys(STEPS, "ok")


def test_demo_fails_when_an_effect_is_not_as_documented(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A refresh that does nothing: Set-DataEncryptionPolicy -Refresh still "runs", but the
    mailbox's DataEncryptionPolicyID does not change, so that step (and only that one) fails,
    and so does the demo."""
    monkeypatch.setattr(MailService, "refresh", lambda self, *args, **kwargs: None)
    code, out, err = run(capsys, "--home", str(tmp_path / "demo-home"))
    assert code == 1 and "Traceback" not in err
    rows = summary(out)
    assert set(rows) == set(STEPS)
    assert [step for step, ok in rows.items() if ok == "FAIL"] == [
        "Use the new key: refresh the DEP"
    ]
    assert f"1 of {len(STEPS)} steps did not behave as the document says." in out
    assert "NOT as documented: DataEncryptionPolicyID" in out and "(UNCHANGED;" in out
