"""``customerkey ps`` and ``customerkey shell`` through the CLI entry point: Microsoft's
Customer Key PowerShell lines, run verbatim against a real home folder.

The centre is ``test_every_code_block_of_the_seed_document``: every code block of
manage-customer-key.md runs as written (placeholders substituted with real names) after a
set-up that creates what the document assumes exists, and each effect the document
describes is checked.
"""

from __future__ import annotations

import io
import re
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from customerkey.config import Settings
from customerkey.identity.workload_principals import SHAREPOINT
from customerkey.jobs.queue import Job
from customerkey.pwsh.cmdlets.registry import Invocation, Registry, cmdlet, default_registry
from customerkey.pwsh.engine.formatting import register_view
from customerkey.pwsh.engine.repl import ShellCompleter, completion_context, needs_more, run_repl
from customerkey.pwsh.engine.session import Session
from customerkey.pwsh.language.binding import Param
from customerkey.pwsh.language.values import PSObject
from customerkey.runtime import Runtime
from customerkey.vault.models import OPERATOR
from tests.support.mailfixtures import write_mbox

if TYPE_CHECKING:
    from tests.cli.conftest import Cli, Result

SEED = Path(__file__).resolve().parent / "seed" / "manage-customer-key.md"
VAULT_A = "Contoso-O365EX-NA-VaultA1"
VAULT_B = "Contoso-O365EX-NA-VaultA2"
KEY_A = "Contoso-O365EX-NA-VaultA1-Key001"
KEY_B = "Contoso-O365EX-NA-VaultA2-Key001"
BACKUP = "Contoso-O365EX-NA-VaultA1-Key001-Backup-20170802.backup"
EXCHANGE_APP = "00000002-0000-0ff1-ce00-000000000000"
DEP = "ContosoMailboxDEP"
MAILBOX = "megan@contoso.com"
ALIAS = "megan"
GUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
# SharePoint Online: the admin site as Microsoft's documentation writes it, and three sites.
SPO_ADMIN = "https://contoso-admin.sharepoint.com"
SITES = [f"https://contoso.sharepoint.local/sites/{name}" for name in ("finance", "hr", "legal")]
SPO_GRANT = (
    "Set-AzKeyVaultAccessPolicy -VaultName {vault} -PermissionsToKeys wrapKey,unwrapKey,get "
    f"-ServicePrincipalName {SHAREPOINT.app_id}"
)

SETUP = f"""
New-AzKeyVault -Name {VAULT_A} -ResourceGroupName Contoso-O365EX-NA-RG -Location eastus `
    -SubscriptionId contoso-sub-1
New-AzKeyVault -Name {VAULT_B} -ResourceGroupName Contoso-O365EX-NA-RG -Location westus `
    -SubscriptionId contoso-sub-2 -EnablePurgeProtection
Add-AzKeyVaultKey -VaultName {VAULT_A} -Name {KEY_A} -Destination HSM -KeyOps wrapKey,unwrapKey
Add-AzKeyVaultKey -VaultName {VAULT_A} -Name {KEY_A} -Destination HSM -KeyOps wrapKey,unwrapKey
Add-AzKeyVaultKey -VaultName {VAULT_B} -Name {KEY_B} -Destination HSM -KeyOps wrapKey,unwrapKey
Set-AzKeyVaultAccessPolicy -VaultName {VAULT_A} -PermissionsToKeys wrapKey,unwrapKey,get `
    -ServicePrincipalName {EXCHANGE_APP}
Set-AzKeyVaultAccessPolicy -VaultName {VAULT_B} -PermissionsToKeys wrapKey,unwrapKey,get `
    -ServicePrincipalName {EXCHANGE_APP}
Set-AzKeyVaultAccessPolicy -VaultName {VAULT_A} -UserPrincipalName alice@contoso.com `
    -PermissionsToKeys create,import,list,get,backup,restore
Set-AzKeyVaultAccessPolicy -VaultName {VAULT_B} -UserPrincipalName bob@contoso.com `
    -PermissionsToKeys get,list
New-DataEncryptionPolicy -Name {DEP} -Description "Contoso mailboxes" -AzureKeyIDs `
    "https://contoso-o365ex-na-vaulta1.vault.azure.net/keys/{KEY_A}", `
    "https://contoso-o365ex-na-vaulta2.vault.azure.net/keys/{KEY_B}"
New-Mailbox -Name Megan -Alias {ALIAS} -MicrosoftOnlineServicesID {MAILBOX} `
    -DataEncryptionPolicy {DEP}
"""


def ps(cli: Cli, *lines: str) -> Result:
    return cli.run("ps", "\n".join(lines))


def ok(cli: Cli, *lines: str) -> str:
    result = ps(cli, *lines)
    assert result.code == 0, result.err
    assert result.err == "", result.err
    return result.out


def failed(cli: Cli, *lines: str) -> str:
    """Run lines that must fail; returns the error text (stderr)."""
    result = ps(cli, *lines)
    assert result.code == 1, result
    assert "Traceback" not in result.err
    return result.err


def stdin_script(cli: Cli, monkeypatch: pytest.MonkeyPatch, text: str) -> Result:
    monkeypatch.setattr(sys, "stdin", io.StringIO(text))
    return cli.run("shell")


def lines_of(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


def seed_blocks() -> list[str]:
    return re.findall(r"```[^\n]*\n(.*?)```", SEED.read_text(encoding="utf-8"), re.S)


@dataclass
class Contoso:
    work: Path
    messages: list[bytes]
    versions_a: list[str]

    def blobs(self, home: Path, mailbox_id: str) -> list[str]:
        return sorted(p.name for p in (home / "blobs" / "mail" / mailbox_id).iterdir())


@pytest.fixture
def contoso(cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Contoso:
    """What the document assumes exists: tenant contoso (contoso.com), two vaults with a root
    key each (A1's with two versions) granted to Exchange Online, a DEP over both, a mailbox
    under it with content, and alice (and bob) holding access policies."""
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    cli.ok("init")
    cli.ok("tenant", "create", "contoso", "--mail-domain", "contoso.com")
    for user in ("alice@contoso.com", "bob@contoso.com"):
        cli.ok("principal", "create", user, "--tenant", "contoso")
    setup = work / "setup.ps1"
    setup.write_text(SETUP, encoding="utf-8")
    result = cli.run("shell", str(setup))
    assert result.code == 0, result.err
    messages = write_mbox(work / "megan.mbox", 5)
    imported = cli.run("mailbox", "import", MAILBOX, str(work / "megan.mbox"))
    assert imported.code == 0, imported.err
    versions = [k["Version"] for k in cli.json("key", "versions", VAULT_A, KEY_A)]
    assert len(versions) == 2
    return Contoso(work, messages, versions)


def statistics(cli: Cli, identity: str = MAILBOX) -> dict[str, Any]:
    (stats,) = cli.json("ps", f"Get-MailboxStatistics -Identity {identity}")
    assert isinstance(stats, dict)
    return stats


def fields(text: str) -> dict[str, str]:
    """The ``Name : Value`` lines of list output (one object)."""
    found = {}
    for line in text.splitlines():
        name, sep, value = line.partition(" : ")
        if sep:
            found[name.strip()] = value.strip()
    return found


def spo_sites(cli: Cli, work: Path) -> bytes:
    """Grant SharePoint Online both vaults and create three sites, a file in the first.
    Returns the file's content."""
    for vault in (VAULT_A, VAULT_B):
        ok(cli, SPO_GRANT.format(vault=vault))
    for url in SITES:
        cli.json("site", "create", url)
    content = b"budget 2017\n" * 1000
    (work / "budget.xlsx").write_bytes(content)
    cli.json("file", "put", SITES[0], "Shared Documents/budget.xlsx", str(work / "budget.xlsx"))
    return content


def register_spo(cli: Cli, primary_version: str, secondary_version: str, *before: str) -> None:
    """Register-SPODataEncryptionPolicy over KEY_A and KEY_B; with ``before`` lines (a
    Connect-SPOService) and no -Identity."""
    identity = "" if before else f"-Identity {SPO_ADMIN} "
    ok(
        cli,
        *before,
        f"Register-SPODataEncryptionPolicy {identity}-PrimaryKeyVaultName {VAULT_A} "
        f"-PrimaryKeyName {KEY_A} -PrimaryKeyVersion {primary_version} -SecondaryKeyVaultName "
        f"{VAULT_B} -SecondaryKeyName {KEY_B} -SecondaryKeyVersion {secondary_version}",
    )


def site_file(cli: Cli, work: Path) -> bytes:
    target = work / "downloaded.xlsx"
    cli.json("file", "get", SITES[0], "Shared Documents/budget.xlsx", str(target), "--force")
    return target.read_bytes()


def mailbox_content(cli: Cli, count: int) -> list[bytes]:
    return [
        cli.ok("mailbox", "read", MAILBOX, str(seq)).out.encode() for seq in range(1, count + 1)
    ]


# ====================================================================== the seed document


def test_every_code_block_of_the_seed_document(cli: Cli, contoso: Contoso, home: Path) -> None:
    blocks = seed_blocks()
    used: set[int] = set()

    def block(number: int, starts: str, **values: str) -> str:
        text = blocks[number]
        assert text.startswith(starts), f"block {number} changed: {text!r}"
        for name, value in values.items():
            text = text.replace(f"<{name}>", value)
        assert "<" not in text, f"unsubstituted placeholder in {text!r}"
        used.add(number)
        return text

    def run(text: str) -> Result:
        return cli.run("ps", text)

    mailbox_id = statistics(cli)["MailboxGuid"]
    original = mailbox_content(cli, 5)
    assert [m.replace(b"\r\n", b"\n") for m in original] == [
        m.replace(b"\r\n", b"\n") for m in contoso.messages
    ]

    # ---- Restore Azure Key Vault keys. First a backup to restore from.
    backup = ok(
        cli, f"Backup-AzureKeyVaultKey -VaultName {VAULT_A} -Name {KEY_A} -OutputFile {BACKUP}"
    )
    assert lines_of(backup) == [BACKUP]
    assert (contoso.work / BACKUP).stat().st_size > 0

    # "If a key with the same name already exists in the key vault, the restore fails."
    refused = run(block(0, "Restore-AzureKeyVaultKey", vaultname=VAULT_A, filename=BACKUP))
    assert refused.code == 1
    assert refused.err.startswith(f"Restore-AzureKeyVaultKey : Key {KEY_A} already exists")
    assert "FullyQualifiedErrorId : Conflict,Restore-AzKeyVaultKey" in refused.err
    assert cli.versions(VAULT_A, KEY_A) == contoso.versions_a

    # Lose the key: delete it (it protects the DEP, so -Force) and purge it.
    gone = run(f"Remove-AzKeyVaultKey -VaultName {VAULT_A} -Name {KEY_A} -Force")
    assert gone.code == 0 and gone.err.startswith("WARNING: Removing key")
    ok(cli, f"Remove-AzKeyVaultKey -VaultName {VAULT_A} -Name {KEY_A} -InRemovedState -Force")
    assert ok(cli, f"Get-AzKeyVaultKey -VaultName {VAULT_A}") == ""
    assert ok(cli, f"Get-AzKeyVaultKey -VaultName {VAULT_A} -InRemovedState") == ""
    assert mailbox_content(cli, 5) == original  # the other root key still opens it

    # "Restore-AzureKeyVaultKey restores all key versions and all metadata for the key."
    restored = run(block(1, "Restore-AzureKeyVaultKey -VaultName Contoso-O365EX-NA-VaultA1"))
    assert restored.code == 0, restored.err
    assert f"Name           : {KEY_A}" in restored.out
    assert f"Version        : {contoso.versions_a[-1]}" in restored.out
    assert cli.versions(VAULT_A, KEY_A) == contoso.versions_a
    assert mailbox_content(cli, 5) == original

    # SharePoint Online uses the same two root keys: its files DEP is registered over the
    # current versions, before the roll below.
    registered_version = cli.versions(VAULT_A, KEY_A)[-1]
    file_content = spo_sites(cli, contoso.work)
    register_spo(cli, registered_version, cli.versions(VAULT_B, KEY_B)[-1])
    registered = fields(ok(cli, f"Get-SPODataEncryptionPolicy -Identity {SPO_ADMIN}"))
    assert (registered["State"], registered["PercentComplete"]) == ("Registered", "100")
    assert registered["PrimaryKeyVersion"] == registered_version

    # ---- Rolling a key: the same cmdlet adds a version.
    before_roll = statistics(cli)["DataEncryptionPolicyID"]
    assert GUID.fullmatch(before_roll)
    rolled = run(block(2, "Add-AzureKeyVaultKey -VaultName Contoso-O365EX-NA-VaultA1"))
    assert rolled.code == 0, rolled.err
    assert "Not Before     : 12/27/2016 12:01:00 AM" in rolled.out
    versions = cli.versions(VAULT_A, KEY_A)
    assert versions[:-1] == contoso.versions_a and len(versions) == 3
    newest = cli.json("key", "show", VAULT_A, KEY_A)
    assert newest["Version"] == versions[-1]
    assert newest["NotBefore"] == "2016-12-27T00:01:00Z"
    assert newest["KeyOps"] == ["wrapKey", "unwrapKey"] and newest["KeyType"] == "RSA-HSM"

    # "Set-DataEncryptionPolicy <policyname> -Refresh": the mailbox's DataEncryptionPolicyID
    # changes once the updated key is applied (the re-wrap runs to completion here).
    refresh = run(block(3, "Set-DataEncryptionPolicy", policyname=DEP))
    assert (refresh.code, refresh.out, refresh.err) == (0, "", "")
    after_roll = statistics(cli)["DataEncryptionPolicyID"]
    assert GUID.fullmatch(after_roll) and after_roll != before_roll
    generations = cli.json("dep", "show", DEP, "--tenant", "contoso")["KeyGenerationUsage"]
    current = next(g for g in generations if g["KeyGenerationId"] == after_roll)
    assert any(uri.endswith(f"/{versions[-1]}") for uri in current["RootKeyVersions"])
    assert current["Mailboxes"] == 1
    assert mailbox_content(cli, 5) == original

    # ---- SharePoint: "Update-SPODataEncryptionPolicy ... will start the key roll operation
    # [...]. This action is not immediate. To see the progress of the key roll operation, run
    # the Get-SPODataEncryptionPolicy cmdlet". The roll runs here (no worker is live) one site
    # per transaction; at its first committed step a second admin's shell runs the Get line
    # (and the Update line again: "no more than one Key Roll operation [...] at a time").
    update = block(
        4,
        "Update-SPODataEncryptionPolicy",
        SPOAdminSiteUrl=SPO_ADMIN,
        ReplacementKeyVaultName=VAULT_A,
        ReplacementKeyName=KEY_A,
        ReplacementKeyVersion=versions[-1],
        **{"Primary | Secondary": "Primary"},
    )
    get_policy = block(5, "Get-SPODataEncryptionPolicy", SPOAdminSiteUrl=SPO_ADMIN)
    runtime = Runtime.open(Settings(home=home, refresh_batch=1))
    seen: list[tuple[int, int, str, str]] = []

    def second_admin(job: Job, done: int, total: int) -> None:
        if seen:
            return
        out, err = io.StringIO(), io.StringIO()
        other = Session(lambda: runtime, out=out, err=err)
        assert other.run(get_policy), err.getvalue()
        assert not other.run(update)
        seen.append((done, total, out.getvalue(), err.getvalue()))

    out, err = io.StringIO(), io.StringIO()
    try:
        shell = Session(lambda: runtime, out=out, err=err, on_job_progress=second_admin)
        assert shell.run(update), err.getvalue()
    finally:
        runtime.close()
    assert (out.getvalue(), err.getvalue()) == ("", "")
    ((done, total, progress, refused),) = seen
    assert (done, total) == (1, 3)
    rolling = fields(progress)
    assert (rolling["State"], rolling["PercentComplete"]) == ("Rolling", "33.3")
    assert rolling["PrimaryKeyVersion"] == versions[-1]  # the version being rolled to
    assert refused.startswith("Update-SPODataEncryptionPolicy : A key roll is already in progress")
    assert "rolling the primary key to https://contoso-o365ex-na-vaulta1." in refused
    assert "FullyQualifiedErrorId : Conflict,Update-SPODataEncryptionPolicy" in refused
    finished = run(get_policy)
    assert finished.code == 0, finished.err
    after = fields(finished.out)
    assert (after["State"], after["PercentComplete"]) == ("Registered", "100")
    assert after["PrimaryKeyVersion"] == versions[-1] != registered_version
    assert after["SecondaryKeyVersion"] == registered["SecondaryKeyVersion"]
    assert after["PrimaryKeyName"] == KEY_A
    for url in SITES:
        site = cli.json("ps", f"Get-SPOSiteDataEncryptionPolicy {url}")[0]
        assert (site["State"], site["KeyGenerationId"]) == (
            "Registered",
            site["CurrentKeyGenerationId"],
        )
    assert site_file(cli, contoso.work) == file_content  # no file was rewritten to get here

    # ---- Manage key vault permissions: Get-AzureRmKeyVault shows the access policies.
    other = run(block(6, "Get-AzureRmKeyVault", vaultname=VAULT_B))
    assert other.code == 0, other.err
    assert f"Vault Name                          : {VAULT_B}" in other.out
    assert "Display Name        : bob@contoso.com" in other.out
    shown = run(block(7, "Get-AzureRmKeyVault -VaultName Contoso-O365EX-NA-VaultA1"))
    assert shown.code == 0, shown.err
    out = shown.out
    assert f"Vault Name                          : {VAULT_A}" in out
    assert "Soft Delete Enabled?                : True" in out
    assert "Purge Protection Enabled?           : False" in out
    assert re.search(r"^Access Policies +:$", out, re.M)
    # Object ids are GUIDs the directory made; the application id names the workload.
    assert re.search(r"^ +Object ID +: [0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-", out, re.M)
    assert f"Application ID      : {EXCHANGE_APP}" in out
    assert f"Display Name        : Office 365 Exchange Online ({EXCHANGE_APP})" in out
    assert "Permissions to Keys : get, unwrapKey, wrapKey" in out
    assert "Display Name        : alice@contoso.com" in out
    assert "Permissions to Keys : get, list, create, import, backup, restore" in out

    # Remove-AzureRmKeyVaultAccessPolicy, split over two lines as the document writes it.
    removed_bob = run(
        block(
            8,
            "Remove-AzureRmKeyVaultAccessPolicy",
            vaultname=VAULT_B,
            **{"UPN of user": "bob@contoso.com"},
        )
    )
    assert (removed_bob.code, removed_bob.err) == (0, "")
    removed = run(
        block(9, "Remove-AzureRmKeyVaultAccessPolicy -VaultName Contoso-O365EX-NA-VaultA1")
    )
    assert (removed.code, removed.out, removed.err) == (0, "", "")
    for vault, gone_user in ((VAULT_A, "alice@contoso.com"), (VAULT_B, "bob@contoso.com")):
        policies = cli.json("vault", "show", vault)["AccessPolicies"]
        assert [p["PrincipalName"] for p in policies] == [EXCHANGE_APP, SHAREPOINT.app_id], (
            gone_user
        )

    # ---- Determine the DEP assigned to a mailbox: fl prints only that property.
    dep_id = run(block(10, "Get-MailboxStatistics", GeneralMailboxOrMailUserIdParameter=MAILBOX))
    assert dep_id.code == 0, dep_id.err
    assert lines_of(dep_id.out) == [f"DataEncryptionPolicyID : {after_roll}"]
    found = run(block(11, "Get-DataEncryptionPolicy", GUID=after_roll))
    assert found.code == 0, found.err
    assert lines_of(found.out)[:2] == [
        "Name              Enabled AzureKeyIDs",
        "----              ------- -----------",
    ]
    assert lines_of(found.out)[2].startswith(f"{DEP} True    {{https://")

    # ---- "If the mailboxes aren't encrypted ... initiate a mailbox move": New-MoveRequest.
    blobs_before = contoso.blobs(home, mailbox_id)
    moved = run(block(12, "New-MoveRequest", alias=ALIAS))
    assert moved.code == 0, moved.err
    assert re.search(r"^Megan +Completed +100$", moved.out, re.M), moved.out
    blobs_after = contoso.blobs(home, mailbox_id)
    assert len(blobs_after) == len(blobs_before) == 5
    assert not set(blobs_after) & set(blobs_before)  # every item re-encrypted (new key)
    stats = statistics(cli)
    assert stats["IsEncrypted"] is True and stats["DataEncryptionPolicyID"] == after_roll
    assert mailbox_content(cli, 5) == original

    assert used == set(range(len(blocks))), "a code block was not run"


def test_set_mailuser_assigns_a_dep_before_migration(
    cli: Cli, contoso: Contoso, tmp_path: Path
) -> None:
    """FAQ: assign a DEP to a mail user before migrating; content is encrypted under it as it
    is migrated, with no re-encryption afterwards."""
    ok(cli, "New-MailUser -Name Adele -MicrosoftOnlineServicesID adele@contoso.com")
    assert statistics(cli, "adele@contoso.com")["IsEncrypted"] is False
    refused = failed(cli, f"Set-Mailbox adele@contoso.com -DataEncryptionPolicy {DEP}")
    assert "is a mail user, not a mailbox; use the *-MailUser cmdlets" in refused
    ok(cli, f"Set-MailUser -Identity adele@contoso.com -DataEncryptionPolicy {DEP}")
    table = ok(cli, "Get-MailUser adele@contoso.com")
    assert re.search(rf"^adele +adele +MailUser +{DEP}$", table, re.M), table
    current = statistics(cli)["DataEncryptionPolicyID"]
    stats = statistics(cli, "adele@contoso.com")
    assert stats["IsEncrypted"] is True and stats["DataEncryptionPolicyID"] == current
    write_mbox(tmp_path / "adele.mbox", 3)
    imported = cli.run("mailbox", "import", "adele@contoso.com", str(tmp_path / "adele.mbox"))
    assert imported.code == 0, imported.err
    stats = statistics(cli, "adele@contoso.com")
    assert (stats["ItemCount"], stats["IsEncrypted"]) == (3, True)
    assert stats["DataEncryptionPolicyID"] == current
    assert cli.json("jobs", "list", "--kind", "mailbox-rekey") == []


def test_spo_policy_states_and_one_key_roll_at_a_time(
    cli: Cli, contoso: Contoso, home: Path
) -> None:
    """Get-SPODataEncryptionPolicy from Unregistered to Registered; Register names the exact
    key versions; a roll queued through the Python API (no worker has run it yet) shows as
    Rolling, and another roll is refused with an error naming the one in progress."""
    connect = f"Connect-SPOService -Url {SPO_ADMIN}"
    unregistered = fields(ok(cli, connect, "Get-SPODataEncryptionPolicy"))
    assert unregistered["State"] == "Unregistered" and "PrimaryKeyName" not in unregistered
    spo_sites(cli, contoso.work)
    not_yet = failed(cli, f"Get-SPOSiteDataEncryptionPolicy {SITES[0]}")
    assert "Customer Key is not registered for tenant 'contoso'" in not_yet

    # The version named wraps the TIK, even when it is not the newest; a GUID with dashes
    # is a version too (the parameters are System.Guid).
    version_b = cli.versions(VAULT_B, KEY_B)[-1]
    dashed = (
        f"{version_b[:8]}-{version_b[8:12]}-{version_b[12:16]}-{version_b[16:20]}-{version_b[20:]}"
    )
    register_spo(cli, contoso.versions_a[0], dashed, connect)
    (registered,) = cli.json("ps", f"{connect}\nGet-SPODataEncryptionPolicy")
    assert (registered["State"], registered["PercentComplete"]) == ("Registered", 100.0)
    assert registered["PrimaryKeyVersion"] == contoso.versions_a[0]
    assert registered["SecondaryKeyVersion"] == version_b
    assert registered["PrimaryKeyId"] == (
        f"https://contoso-o365ex-na-vaulta1.vault.localhost:8443/keys/{KEY_A}/"
        f"{contoso.versions_a[0]}"
    )
    assert (registered["SitesDone"], registered["SitesTotal"]) == (3, 3)
    again = failed(
        cli,
        connect,
        f"Register-SPODataEncryptionPolicy -PrimaryKeyVaultName {VAULT_A} "
        f"-PrimaryKeyName {KEY_A} -PrimaryKeyVersion {contoso.versions_a[1]} "
        f"-SecondaryKeyVaultName {VAULT_B} -SecondaryKeyName {KEY_B} "
        f"-SecondaryKeyVersion {version_b}",
    )
    assert "Tenant 'contoso' already has a files data encryption policy" in again

    # A roll queued, not run: Rolling at 0 %, and only one roll at a time.
    runtime = Runtime.open(Settings(home=home))
    try:
        target = f"https://{VAULT_A.lower()}.vault.azure.net/keys/{KEY_A}/{contoso.versions_a[1]}"
        job = runtime.files.roll(OPERATOR, "contoso", "primary", target)
    finally:
        runtime.close()
    (rolling,) = cli.json("ps", f"Get-SPODataEncryptionPolicy {SPO_ADMIN}")
    assert (rolling["State"], rolling["PercentComplete"]) == ("Rolling", 0.0)
    assert (rolling["RollKeyType"], rolling["JobId"]) == ("primary", job.id)
    site = fields(ok(cli, f"Get-SPOSiteDataEncryptionPolicy {SITES[1].replace('.local', '.com')}"))
    assert site == {"Identity": SITES[1], "State": "Rolling"}
    refused = failed(
        cli,
        f"Update-SPODataEncryptionPolicy -Identity {SPO_ADMIN} -KeyVaultName {VAULT_B} "
        f"-KeyName {KEY_B} -KeyVersion {version_b} -KeyType Secondary",
    )
    assert refused.startswith(
        "Update-SPODataEncryptionPolicy : A key roll is already in progress for tenant 'contoso': "
        f"job {job.id} is rolling the primary key to {target}"
    )
    cli.json("jobs", "wait", "--all")
    (rolled,) = cli.json("ps", f"Get-SPODataEncryptionPolicy {SPO_ADMIN}")
    assert (rolled["State"], rolled["PrimaryKeyVersion"]) == ("Registered", contoso.versions_a[1])

    # -KeyVaultUri: a key URI as it is (no version: the newest).
    ok(cli, f"Add-AzKeyVaultKey {VAULT_A} {KEY_A} -Destination HSM -KeyOps wrapKey,unwrapKey")
    newest = cli.versions(VAULT_A, KEY_A)[-1]
    ok(
        cli,
        f"Update-SPODataEncryptionPolicy -KeyVaultUri https://{VAULT_A.lower()}.vault.azure.net"
        f"/keys/{KEY_A} -KeyType primary",
    )
    (uri_rolled,) = cli.json("ps", f"Get-SPODataEncryptionPolicy {SPO_ADMIN}")
    assert (uri_rolled["State"], uri_rolled["PrimaryKeyVersion"]) == ("Registered", newest)

    # Mistakes change nothing.
    cli.ok("tenant", "create", "fabrikam", "--mail-domain", "fabrikam.com")
    other = failed(
        cli, connect, "Get-SPODataEncryptionPolicy https://fabrikam-admin.sharepoint.com"
    )
    assert (
        "The admin site https://fabrikam-admin.sharepoint.local is not tenant 'contoso''s." in other
    )
    needs_tenant = failed(cli, "Get-SPODataEncryptionPolicy")
    assert "Connect-SPOService -Url https://<tenant>-admin.sharepoint.com" in needs_tenant
    bad_version = failed(
        cli,
        f"Update-SPODataEncryptionPolicy {SPO_ADMIN} -KeyVaultName {VAULT_A} -KeyName {KEY_A} "
        "-KeyVersion 12ab -KeyType Primary",
    )
    assert 'Cannot convert value "12ab" to type "System.Guid"' in bad_version
    bad_type = failed(
        cli,
        f"Update-SPODataEncryptionPolicy {SPO_ADMIN} -KeyVaultName {VAULT_A} -KeyName {KEY_A} "
        f"-KeyVersion {newest} -KeyType Tertiary",
    )
    assert 'does not belong to the set "Primary,Secondary"' in bad_type
    assert cli.json("ps", f"Get-SPODataEncryptionPolicy {SPO_ADMIN}") == [uri_rolled]


# ====================================================================== syntax end to end


def test_get_date_and_sub_expressions(cli: Cli) -> None:
    assert ok(cli, 'Get-Date -Date "12/27/2016 12:01 AM"') == (
        "Tuesday, December 27, 2016 12:01:00 AM\n"
    )
    assert ok(cli, '(Get-Date -Date "12/27/2016 12:01 AM").Year') == "2016\n"
    assert ok(cli, '$d = get-date 2017-08-02; "backup-$($d.Year)"') == "backup-2017\n"


def test_names_are_case_insensitive_prefixes_and_positions_work(cli: Cli, contoso: Contoso) -> None:
    full = ok(cli, f"Get-AzKeyVaultKey -VaultName {VAULT_A} -Name {KEY_A}")
    assert ok(cli, f"get-azurekeyvaultkey -vaultn {VAULT_A.lower()} -na {KEY_A}") == full
    assert ok(cli, f"GET-AZKEYVAULTKEY {VAULT_A} {KEY_A}") == full
    version = contoso.versions_a[0]
    old = ok(cli, f"Get-AzKeyVaultKey {VAULT_A} {KEY_A} {version}")
    assert f"Version        : {version}" in old


def test_switches_booleans_and_null(cli: Cli, contoso: Contoso) -> None:
    out = ok(
        cli,
        f"Add-AzKeyVaultKey {VAULT_A} soft-key -Destination Software -Disable",
        f"Add-AzKeyVaultKey {VAULT_A} soft-key2 -Destination software -Disable:$false",
        f"(Get-AzKeyVaultKey {VAULT_A} soft-key).Enabled",
        f"(Get-AzKeyVaultKey {VAULT_A} soft-key2).Enabled",
        f"Update-AzKeyVaultKey {VAULT_A} soft-key -Enable $true -PassThru | fl Enabled",
    )
    assert lines_of(out)[-3:] == ["False", "True", "Enabled : True"]
    assert ok(cli, "$null") == "" and ok(cli, "$true, $false") == "True\nFalse\n"
    ok(cli, f"Set-Mailbox {MAILBOX} -DataEncryptionPolicy $null")
    stats = statistics(cli)
    assert (stats["IsEncrypted"], stats["DataEncryptionPolicyID"]) == (False, None)
    ok(cli, f"Set-Mailbox {MAILBOX} -DataEncryptionPolicy {DEP}")
    assert statistics(cli)["IsEncrypted"] is True


def test_arrays_strings_and_tags(cli: Cli, contoso: Contoso) -> None:
    ok(
        cli,
        "$name = 'tagged'; $ops = @('wrapKey', \"unwrapKey\")",
        f'Add-AzKeyVaultKey {VAULT_A} "$name-key" -Destination HSM -KeyOps $ops '
        "-Tag @{Env='Prod'; Owner=\"it's me\"} -Size 3072",
    )
    key = cli.json("key", "show", VAULT_A, "tagged-key")
    assert key["KeyOps"] == ["wrapKey", "unwrapKey"] and key["KeySize"] == 3072
    assert key["Tags"] == {"Env": "Prod", "Owner": "it's me"}
    shown = ok(cli, f"Get-AzKeyVaultKey {VAULT_A} tagged-key")
    assert "Tags           :\n                 Name   Value\n" in shown
    assert ok(cli, "Write-Output a,b 'c d'") == "a\nb\nc d\n"


def test_variables_and_properties(cli: Cli, contoso: Contoso) -> None:
    out = ok(
        cli,
        f"$k = Get-AzKeyVaultKey -VaultName {VAULT_A} -Name {KEY_A}",
        "$k.Version",
        "$k.name",
        '"$($k.Name) is enabled: $($k.Enabled)"',
        f"$all = Get-AzKeyVaultKey -VaultName {VAULT_A} -Name {KEY_A} -IncludeVersions",
        "$all.Count",
        "$all[0].Version",
        "$all.Version",
        "$k.NoSuchProperty",
    )
    assert lines_of(out) == [
        contoso.versions_a[-1],
        KEY_A,
        f"{KEY_A} is enabled: True",
        "2",
        contoso.versions_a[0],
        *contoso.versions_a,
    ]
    # Listed keys carry a version-less Id, the one New-DataEncryptionPolicy takes.
    listed = ok(cli, f"(Get-AzKeyVaultKey -VaultName {VAULT_A}).Id")
    assert lines_of(listed) == [
        f"https://contoso-o365ex-na-vaulta1.vault.localhost:8443/keys/{KEY_A}"
    ]


def test_format_list_table_and_select(cli: Cli, contoso: Contoso) -> None:
    fl = ok(cli, f"Get-MailboxStatistics {MAILBOX} | fl IsEncrypted, itemcount")
    assert fl == "\nIsEncrypted : True\nItemCount   : 5\n\n\n"
    ft = ok(cli, f"Get-MailboxStatistics {MAILBOX} | ft DisplayName, ItemCount, IsEncrypted")
    assert ft == (
        "\nDisplayName ItemCount IsEncrypted\n----------- --------- -----------\n"
        "Megan               5 True\n\n"
    )
    everything = ok(cli, f"Get-AzKeyVault {VAULT_A} | fl *")
    assert "EnablePurgeProtection     : False" in everything
    assert "AccessPolicies            : {Office 365 Exchange Online" in everything
    labelled = ok(cli, f"Get-AzKeyVault {VAULT_A} | fl")
    assert labelled == ok(cli, f"Get-AzKeyVault {VAULT_A}")
    wild = ok(cli, f"Get-MailboxStatistics {MAILBOX} | fl *Encrypt*")
    assert lines_of(wild) == [
        "IsEncrypted            : True",
        f"DataEncryptionPolicyID : {statistics(cli)['DataEncryptionPolicyID']}",
        "EncryptionJobState     :",
    ]
    selected = ok(cli, f"Get-MailboxStatistics {MAILBOX} | Select-Object DisplayName, ItemCount")
    assert lines_of(selected) == [
        "DisplayName ItemCount",
        "----------- ---------",
        "Megan               5",
    ]
    expanded = ok(
        cli,
        f"Get-AzKeyVaultKey {VAULT_A} {KEY_A} -IncludeVersions"
        " | select -Last 1 -ExpandProperty Version",
    )
    assert expanded == contoso.versions_a[-1] + "\n"
    table = ok(cli, "Get-Mailbox | ft")
    assert lines_of(table) == [
        "Name  Alias RecipientTypeDetails DataEncryptionPolicy",
        "----  ----- -------------------- --------------------",
        f"megan megan UserMailbox          {DEP}",
    ]
    pipeline = failed(cli, "Get-Mailbox | fl | ft")
    assert "is not valid or not in the correct sequence" in pipeline


def test_json_output(cli: Cli, contoso: Contoso) -> None:
    data = cli.json(
        "ps", f"Get-AzKeyVault {VAULT_A}; Get-MailboxStatistics {MAILBOX} | fl IsEncrypted"
    )
    vault, (selected,) = data
    assert vault["VaultName"] == VAULT_A and vault["EnableSoftDelete"] is True
    assert [p["DisplayName"] for p in vault["AccessPolicies"]] == [
        f"Office 365 Exchange Online ({EXCHANGE_APP})",
        "alice@contoso.com",
    ]
    assert all(str(uuid.UUID(p["ObjectId"])) == p["ObjectId"] for p in vault["AccessPolicies"])
    assert selected == {"IsEncrypted": True}
    (key,) = cli.json("ps", f"Get-AzKeyVaultKey {VAULT_A} {KEY_A}")
    assert key["Created"].endswith("Z") and key["Version"] == contoso.versions_a[-1]


def test_dep_settings_and_the_purge_request(cli: Cli, contoso: Contoso) -> None:
    nothing = ps(cli, f"Set-DataEncryptionPolicy {DEP}")
    assert nothing.code == 0 and "no settings of 'ContosoMailboxDEP' have been modified" in (
        nothing.err
    )
    ok(cli, f"Set-DataEncryptionPolicy -Identity {DEP} -Description 'North America'")
    assert lines_of(ok(cli, f"Get-DataEncryptionPolicy {DEP} | fl Description")) == [
        "Description : North America"
    ]
    ok(cli, f"Set-DataEncryptionPolicy {DEP} -Enabled $false")
    refused = failed(cli, f"New-Mailbox -Name Lynne -DataEncryptionPolicy {DEP}")
    assert "is disabled and cannot be assigned" in refused
    ok(cli, f"Set-DataEncryptionPolicy {DEP} -Enabled:$true")
    # Nothing to refresh without a key roll: a warning, nothing changed.
    before = statistics(cli)["DataEncryptionPolicyID"]
    same = ps(cli, f"Set-DataEncryptionPolicy {DEP} -Refresh")
    assert same.code == 0 and "there was nothing to refresh" in same.err
    assert statistics(cli)["DataEncryptionPolicyID"] == before
    purge = (
        f"Set-DataEncryptionPolicy -Identity {DEP} -PermanentDataPurgeRequested "
        "-PermanentDataPurgeReason 'Leaving the service' "
        "-PermanentDataPurgeContact alice@contoso.com"
    )
    assert "Remove its access to both vaults before requesting a permanent data purge" in (
        failed(cli, purge)
    )
    assert "missing mandatory parameters: PermanentDataPurgeReason" in failed(
        cli, f"Set-DataEncryptionPolicy {DEP} -PermanentDataPurgeRequested"
    )
    for vault in (VAULT_A, VAULT_B):
        ok(
            cli,
            f"Remove-AzKeyVaultAccessPolicy -VaultName {vault} -SPN {EXCHANGE_APP}",
        )
    ok(cli, purge)
    (policy,) = cli.json("ps", f"Get-DataEncryptionPolicy {DEP}")
    assert policy["State"] == "purge-requested"
    assert policy["PermanentDataPurgeReason"] == "Leaving the service"
    assert policy["PermanentDataPurgeContact"] == "alice@contoso.com"


def test_recipients_and_move_requests(cli: Cli, contoso: Contoso) -> None:
    out = ok(cli, "New-Mailbox -Shared -Name 'Sales Team' -DisplayName 'Sales'")
    assert re.search(r"^salesteam +salesteam +SharedMailbox *$", out, re.M), out
    ok(cli, "New-MailUser -Name Adele -MicrosoftOnlineServicesID adele@contoso.com")
    names = ok(cli, "Get-Mailbox | Select-Object -ExpandProperty UserPrincipalName")
    assert lines_of(names) == [MAILBOX, "salesteam@contoso.com"]
    assert lines_of(ok(cli, "(Get-Mailbox -ResultSize 1).Name")) == [ALIAS]
    assert lines_of(ok(cli, "Get-MailUser | Select -ExpandProperty Alias")) == ["adele"]
    assert "is a mail user, not a mailbox" in failed(cli, "Get-Mailbox adele")
    # Pipeline input binds -Identity, one object at a time.
    stats = ok(cli, "Get-Mailbox | Get-MailboxStatistics | ft DisplayName, ItemCount")
    assert lines_of(stats)[2:] == ["Megan               5", "Sales               0"]
    assert (
        "Couldn't find a move request that corresponds to the specified identity 'salesteam'"
        in (failed(cli, "Get-MoveRequest salesteam"))
    )
    ok(cli, f"Get-Mailbox {ALIAS} | New-MoveRequest | Out-Null")
    moves = ok(cli, "Get-MoveRequest")
    assert re.search(r"^Megan +Completed +100$", moves, re.M), moves
    assert lines_of(ok(cli, f"(Get-MoveRequest {MAILBOX}).Status")) == ["Completed"]
    assert "already exists" in failed(
        cli, "New-Mailbox -Name Megan -MicrosoftOnlineServicesID megan@contoso.com"
    )
    assert "is not a user principal name" in failed(
        cli, "New-Mailbox -Name x -MicrosoftOnlineServicesID nobody"
    )


def test_backup_files(cli: Cli, contoso: Contoso) -> None:
    first = ok(cli, f"Backup-AzKeyVaultKey {VAULT_B} {KEY_B} b.backup")
    assert first == "b.backup\n"
    exists = failed(cli, f"Backup-AzKeyVaultKey {VAULT_B} {KEY_B} b.backup")
    assert "Backup file 'b.backup' already exists. Use -Force to overwrite it." in exists
    ok(cli, f"Backup-AzKeyVaultKey {VAULT_B} {KEY_B} -OutputFile b.backup -Force")
    assert "the folder 'no/such' does not exist" in failed(
        cli, f"Backup-AzKeyVaultKey {VAULT_B} {KEY_B} no/such/b.backup"
    )
    named = ok(cli, f"Backup-AzKeyVaultKey {VAULT_B} {KEY_B}").strip()
    assert re.fullmatch(rf"{VAULT_B}-{KEY_B}-\d{{14}}\.keybackup", named)
    assert (contoso.work / named).is_file()
    assert "Cannot read the backup file 'missing.backup'" in failed(
        cli, f"Restore-AzKeyVaultKey {VAULT_B} missing.backup"
    )
    elsewhere = failed(cli, f"Restore-AzKeyVaultKey {VAULT_A} b.backup")
    assert "it can only be restored into a vault of that subscription and geography" in elsewhere


# ====================================================================== errors


def test_unknown_cmdlet(cli: Cli) -> None:
    err = failed(cli, "Get-Foo -Name x")
    assert err.splitlines() == [
        "Get-Foo : The term 'Get-Foo' is not recognized as the name of a cmdlet, function, "
        "script file, or operable program. Check the spelling of the name, or if a path was "
        "included, verify that the path is correct and try again.",
        "At line:1 char:1",
        "+ Get-Foo -Name x",
        "+ ~~~~~~~",
        "    + CategoryInfo          : ObjectNotFound: (Get-Foo:String) [], "
        "CommandNotFoundException",
        "    + FullyQualifiedErrorId : CommandNotFoundException",
    ]


def test_bad_parameters_name_the_problem_and_change_nothing(cli: Cli, contoso: Contoso) -> None:
    audit = cli.audit_count()
    vaults = cli.vault_names()
    keys = cli.key_names(VAULT_A)
    bogus = failed(cli, f"Get-AzKeyVault -VaultName {VAULT_A} -Bogus")
    assert bogus.splitlines()[:4] == [
        "Get-AzKeyVault : A parameter cannot be found that matches parameter name 'Bogus'.",
        "At line:1 char:53",
        f"+ Get-AzKeyVault -VaultName {VAULT_A} -Bogus",
        "+" + " " * 53 + "~~~~~~",
    ]
    assert "FullyQualifiedErrorId : NamedParameterNotFound,Get-AzKeyVault" in bogus
    ambiguous = failed(cli, f"Add-AzKeyVaultKey -VaultName {VAULT_A} -N new-key -Destination HSM")
    assert ambiguous.startswith(
        "Add-AzKeyVaultKey : Parameter cannot be processed because the parameter name 'N' is "
        "ambiguous. Possible matches include: -Name -NotBefore."
    )
    assert "Cannot validate argument on parameter 'Destination'. The argument \"Cloud\"" in (
        failed(cli, f"Add-AzKeyVaultKey {VAULT_A} new-key -Destination Cloud")
    )
    assert 'Cannot convert value "huge" to type "System.Int32"' in failed(
        cli, f"Add-AzKeyVaultKey {VAULT_A} new-key -Destination HSM -Size huge"
    )
    assert "missing mandatory parameters: ResourceGroupName Location." in failed(
        cli, "New-AzKeyVault -Name new-vault"
    )
    # A bad element anywhere in a pipeline stops all of it.
    assert "'Get-Foo' is not recognized" in failed(
        cli, "New-AzKeyVault new-vault rg eastus | Get-Foo"
    )
    assert "matches parameter name 'Wrong'" in failed(
        cli, "New-AzKeyVault new-vault rg eastus | fl -Wrong"
    )
    # A script that does not parse runs nothing, not even its good first line.
    parse = failed(cli, "New-AzKeyVault new-vault rg eastus", "Get-AzKeyVault -VaultName 'open")
    assert parse.splitlines()[0] == "At line:2 char:27"
    assert "The string is missing the terminator: '." in parse
    assert "'<' operator is reserved" in failed(cli, "Get-AzureRmKeyVault -VaultName <vaultname>")
    assert (cli.audit_count(), cli.vault_names(), cli.key_names(VAULT_A)) == (audit, vaults, keys)


def test_service_errors_are_reported_per_statement(cli: Cli, contoso: Contoso) -> None:
    result = ps(cli, "Get-AzKeyVault -VaultName no-such-vault", "Write-Output still-running")
    assert result.code == 1
    assert result.out == "still-running\n"
    assert result.err.startswith("Get-AzKeyVault : No vault named 'no-such-vault' was found.")
    assert (
        "CategoryInfo          : ObjectNotFound: (:) [Get-AzKeyVault], VaultNotFound" in result.err
    )
    assert "At line:1 char:1" in result.err


def test_error_action(cli: Cli, contoso: Contoso) -> None:
    quiet = ps(cli, "Get-AzKeyVault no-such-vault -ErrorAction SilentlyContinue", "'after'")
    assert (quiet.code, quiet.out, quiet.err) == (0, "after\n", "")
    stop = ps(cli, "$ErrorActionPreference = 'Stop'", "Get-AzKeyVault no-such-vault", "'after'")
    assert stop.code == 1 and stop.out == "" and "No vault named" in stop.err


def test_what_if_changes_nothing(cli: Cli, contoso: Contoso) -> None:
    out = ok(cli, f"Remove-AzKeyVault -VaultName {VAULT_A} -WhatIf")
    assert out == f'What if: Performing the operation "Remove-AzKeyVault" on target "{VAULT_A}".\n'
    assert VAULT_A in cli.vault_names()


def test_removing_a_protecting_key_needs_force(cli: Cli, contoso: Contoso) -> None:
    err = failed(cli, f"Remove-AzKeyVaultKey -VaultName {VAULT_B} -Name {KEY_B}")
    assert f"Key '{KEY_B}' still protects data (version " in err
    assert "add -Force to remove it anyway" in err
    assert cli.key_names(VAULT_B) == [KEY_B]
    disable = ps(cli, f"Update-AzKeyVaultKey {VAULT_B} {KEY_B} -Enable $false")
    assert disable.code == 0 and disable.err.startswith("WARNING: Disabling a root key version")


def test_access_policy_errors(cli: Cli, contoso: Contoso) -> None:
    missing = failed(
        cli,
        f"Set-AzKeyVaultAccessPolicy {VAULT_A} -UserPrincipalName x@contoso.com "
        "-PermissionsToKeys get",
    )
    assert "Cannot find the Active Directory object 'x@contoso.com' in tenant 'contoso'" in missing
    wrong_kind = failed(
        cli,
        f"Set-AzKeyVaultAccessPolicy {VAULT_A} -UserPrincipalName {EXCHANGE_APP} "
        "-PermissionsToKeys get",
    )
    assert "Cannot find the Active Directory object" in wrong_kind
    secrets = failed(
        cli,
        f"Set-AzKeyVaultAccessPolicy {VAULT_A} -UserPrincipalName alice@contoso.com "
        "-PermissionsToSecrets get",
    )
    assert "customerkey vaults hold keys only" in secrets
    both = failed(
        cli,
        f"Set-AzKeyVaultAccessPolicy {VAULT_A} -UserPrincipalName alice@contoso.com -ObjectId x "
        "-PermissionsToKeys get",
    )
    assert "Parameter set cannot be resolved" in both
    # Set replaces the principal's key permissions, as Az does.
    ok(
        cli,
        f"Set-AzKeyVaultAccessPolicy -VaultName {VAULT_A} -UPN alice@contoso.com "
        "-PermissionsToKeys get,list",
    )
    policies = {
        p["PrincipalName"]: p["PermissionsToKeys"]
        for p in cli.json("vault", "show", VAULT_A)["AccessPolicies"]
    }
    assert policies["alice@contoso.com"] == ["get", "list"]


# ====================================================================== who the lines act as


def test_exchange_cmdlets_need_a_tenant_when_there_are_several(cli: Cli, contoso: Contoso) -> None:
    cli.ok("tenant", "create", "fabrikam", "--mail-domain", "fabrikam.com")
    err = failed(cli, "Get-DataEncryptionPolicy")
    assert "There are 2 tenants (contoso, fabrikam)" in err
    assert "Connect-ExchangeOnline -UserPrincipalName <admin UPN>" in err
    # A UPN that is no principal: the tenant owning its mail domain, acting as the operator
    # (with a warning saying so).
    connected = ps(
        cli,
        "Connect-ExchangeOnline -UserPrincipalName admin@contoso.com -ShowBanner:$false",
        "Get-DataEncryptionPolicy",
    )
    assert connected.code == 0 and DEP in connected.out
    assert connected.err == (
        "WARNING: 'admin@contoso.com' is not a principal of this installation; the following "
        "lines act as 'operator' in tenant 'contoso'.\n"
    )
    quiet = ps(
        cli,
        "Connect-ExchangeOnline -UserPrincipalName admin@fabrikam.com -WarningAction Ignore",
        "Get-DataEncryptionPolicy",
    )
    assert (quiet.code, quiet.out, quiet.err) == (0, "", "")
    unknown = failed(cli, "Connect-ExchangeOnline -UserPrincipalName someone@nowhere.example")
    assert "no tenant has the mail domain 'nowhere.example'" in unknown
    # The mailbox of another tenant is not found from fabrikam.
    other = failed(
        cli,
        "Connect-ExchangeOnline -UserPrincipalName admin@fabrikam.com -WarningAction Ignore",
        f"Get-MailboxStatistics {MAILBOX}",
    )
    assert "was not found in tenant 'fabrikam'" in other


def test_connecting_as_a_principal_acts_as_it(cli: Cli, contoso: Contoso) -> None:
    # alice is no tenant admin: Exchange management is refused...
    refused = failed(
        cli,
        "Connect-ExchangeOnline -UserPrincipalName alice@contoso.com",
        "Get-DataEncryptionPolicy",
    )
    assert "'alice@contoso.com' is not an administrator of tenant 'contoso'" in refused
    # ...and on the vault side her access policy applies: A1 yes, A2 no.
    result = ps(
        cli,
        "Connect-AzAccount -AccountId alice@contoso.com -Tenant contoso",
        f"(Get-AzKeyVaultKey -VaultName {VAULT_A} -Name {KEY_A}).Name",
        f"Get-AzKeyVaultKey -VaultName {VAULT_B} -Name {KEY_B}",
    )
    assert result.code == 1
    assert re.search(r"^Account +SubscriptionName +TenantId +Environment$", result.out, re.M)
    assert "alice@contoso.com" in result.out and "contoso" in result.out
    assert lines_of(result.out)[-1] == KEY_A
    assert "does not have keys get permission on key vault" in result.err
    # So does the principal given to customerkey --as.
    as_alice = cli.run("ps", "Get-DataEncryptionPolicy", as_principal="alice@contoso.com")
    assert as_alice.code == 1 and "is not an administrator of tenant 'contoso'" in as_alice.err
    # Disconnecting goes back to the operator.
    assert (
        ok(
            cli,
            "Connect-AzAccount -AccountId alice@contoso.com | Out-Null",
            "Disconnect-AzAccount",
            f"(Get-AzKeyVaultKey {VAULT_B} {KEY_B}).Name",
        )
        == KEY_B + "\n"
    )


def test_connect_sposervice_sets_the_sharepoint_tenant(cli: Cli, contoso: Contoso) -> None:
    ok(cli, "Connect-SPOService -Url https://contoso-admin.sharepoint.com")
    err = failed(cli, "Connect-SPOService https://nobody-admin.sharepoint.com")
    assert "No tenant matches the admin URL 'https://nobody-admin.sharepoint.com'." in err
    assert "is not a SharePoint admin URL" in failed(cli, "Connect-SPOService -Url contoso")


def test_vault_lists_and_removed_vaults(cli: Cli, contoso: Contoso) -> None:
    listed = ok(cli, "Get-AzKeyVault")
    assert lines_of(listed)[0] == f"Vault Name          : {VAULT_A}"
    assert f"Vault Name          : {VAULT_B}" in listed and "Access Policies" not in listed
    ok(
        cli,
        "New-AzKeyVault scratch-vault rg eastus -SoftDeleteRetentionInDays 7 | Out-Null",
        "Remove-AzKeyVault scratch-vault",
    )
    removed = ok(cli, "Get-AzKeyVault -InRemovedState")
    assert "Vault Name                : scratch-vault" in removed
    assert "Scheduled Purge Date      : " in removed
    ok(cli, "Remove-AzKeyVault scratch-vault -InRemovedState -Force")
    assert ok(cli, "Get-AzKeyVault -InRemovedState") == ""
    assert ok(cli, "Get-AzKeyVault *VaultA2 | fl VaultName") == f"\nVaultName : {VAULT_B}\n\n\n"


def test_last_status_variable(cli: Cli, contoso: Contoso) -> None:
    result = ps(
        cli, "Get-AzKeyVault nothing-here", "$?", f"Get-AzKeyVault {VAULT_A} | Out-Null", "$?"
    )
    assert result.code == 1 and lines_of(result.out) == ["False", "True"]


# ====================================================================== scripts, stdin, REPL


def test_split_command_from_a_script_file_and_from_stdin(
    cli: Cli, contoso: Contoso, monkeypatch: pytest.MonkeyPatch
) -> None:
    script = contoso.work / "remove.ps1"
    script.write_text(
        f"Remove-AzureRmKeyVaultAccessPolicy -VaultName {VAULT_A} \r\n"
        "-UserPrincipalName alice@contoso.com\r\n"
        f"(Get-AzureRmKeyVault -VaultName {VAULT_A}).AccessPolicies.ApplicationId\r\n",
        encoding="utf-8-sig",
    )
    result = cli.run("shell", str(script))
    assert (result.code, result.out, result.err) == (0, EXCHANGE_APP + "\n", "")
    result = stdin_script(
        cli,
        monkeypatch,
        f"Remove-AzureRmKeyVaultAccessPolicy -VaultName {VAULT_B} \n"
        "-UserPrincipalName bob@contoso.com\n"
        f"Get-AzureRmKeyVault -VaultName {VAULT_B} | fl VaultName\n",
    )
    assert (result.code, lines_of(result.out), result.err) == (0, [f"VaultName : {VAULT_B}"], "")
    # The same two lines given to ps in one argument work too.
    again = ps(
        cli,
        f"Remove-AzureRmKeyVaultAccessPolicy -VaultName {VAULT_A} ",
        "-UserPrincipalName alice@contoso.com",
    )
    assert "has no access policy for 'alice@contoso.com'" in again.err
    failing = contoso.work / "bad.ps1"
    failing.write_text("Get-AzKeyVault\nGet-AzKeyVault -Nope\n", encoding="utf-8")
    bad = cli.run("shell", str(failing))
    assert bad.code == 1 and f"At {failing}:2 char:16" in bad.err
    assert cli.run("shell", str(contoso.work / "missing.ps1")).code == 1


def test_repl_runs_lines_keeps_history_and_continues_open_lines(tmp_path: Path) -> None:
    from prompt_toolkit.input import create_pipe_input
    from prompt_toolkit.output import DummyOutput

    registry = Registry()
    for spec in default_registry().specs():
        registry.register(spec)

    @cmdlet("Test-Split", Param("First", mandatory=True), Param("Second"), registry=registry)
    def test_split(inv: Invocation) -> list[Any]:
        return [f"{inv.args.get('First')}+{inv.args.get('Second')}"]

    out, err = io.StringIO(), io.StringIO()
    session = Session(lambda: pytest.fail("no runtime"), out=out, err=err, registry=registry)
    history = tmp_path / "shell_history"
    with create_pipe_input() as pipe:
        pipe.send_text('Get-Date -Date "12/27/2016"\r')
        pipe.send_text("Write-Output (\r")
        pipe.send_text("'continued')\r")
        pipe.send_text("$x = 'kept'\r")
        pipe.send_text("$x\r")
        pipe.send_text("Get-Foo\r")
        pipe.send_text("Test-Split -Second two\r")  # the document's split command, typed
        pipe.send_text("-First one\r")
        pipe.send_text("-Second again\r")  # nothing unfinished now: a command of that name
        pipe.send_text("exit\r")
        code = run_repl(session, history, input=pipe, output=DummyOutput())
    assert code == 0
    assert out.getvalue() == ("Tuesday, December 27, 2016 12:00:00 AM\ncontinued\nkept\none+two\n")
    errors = err.getvalue()
    assert "The term 'Get-Foo' is not recognized" in errors
    assert "Test-Split : Cannot process command because of one or more missing mandatory" in errors
    assert "The term '-Second' is not recognized" in errors
    saved = history.read_text()
    assert "Get-Date -Date" in saved and "'continued')" in saved


def test_completion(tmp_path: Path) -> None:
    from prompt_toolkit.completion import CompleteEvent
    from prompt_toolkit.document import Document

    assert completion_context("Get-AzKeyV").kind == "command"
    assert completion_context("Get-AzKeyVault -Vau") == completion_context("Get-AzKeyVault -Vau")
    context = completion_context("Get-MailboxStatistics x | fl -Pro")
    assert (context.kind, context.command, context.word) == ("parameter", "fl", "-Pro")
    assert completion_context("Get-X -Name 'a |").kind == "none"
    assert completion_context("Get-X $k").kind == "variable"
    assert completion_context("Get-X -Name val").kind == "none"

    session = Session(lambda: pytest.fail("no runtime"), out=io.StringIO(), err=io.StringIO())
    session.set_variable("MyKey", 1)
    completer = ShellCompleter(session.registry, session)

    def complete(text: str) -> list[str]:
        document = Document(text, len(text))
        return [c.text for c in completer.get_completions(document, CompleteEvent())]

    assert complete("get-azkeyvaultk") == ["Get-AzKeyVaultKey"]
    assert "Get-AzureRmKeyVault" in complete("Get-AzureRm")
    assert complete("Add-AzureKeyVaultKey -N") == ["-Name", "-NotBefore"]
    assert complete("Get-AzKeyVault -InR") == ["-InRemovedState"]
    assert complete("Get-AzKeyVault -Err") == ["-ErrorAction", "-ErrorVariable"]
    assert complete("Write-Output $my") == ["$MyKey"]
    assert complete("Get-Nothing -X") == []
    assert needs_more("Get-X -Name 'open") and needs_more("Get-X |")
    assert needs_more("Get-X `") and not needs_more("Get-X -Name ok")


# ====================================================================== extension point


def test_cmdlets_can_be_registered_from_another_module() -> None:
    registry = Registry()

    @cmdlet(
        "Get-SPOThing",
        Param("Identity", position=0, mandatory=True),
        Param("Detailed", "switch"),
        aliases=("Get-SPOThingOld",),
        registry=registry,
    )
    def get_spo_thing(inv: Invocation) -> list[Any]:
        return [
            PSObject(
                "Test.SPOThing",
                {
                    "Identity": inv.args.get("Identity"),
                    "State": "Registered",
                    "Detailed": inv.args.flag("Detailed"),
                },
            )
        ]

    register_view("Test.SPOThing", list_view=[("Site", "Identity"), ("State", "State")])
    out, err = io.StringIO(), io.StringIO()
    session = Session(lambda: pytest.fail("no runtime"), out=out, err=err, registry=registry)
    assert session.run("get-spothingold https://contoso-admin.sharepoint.com -det")
    assert (
        out.getvalue() == "\nSite  : https://contoso-admin.sharepoint.com\nState : Registered\n\n\n"
    )
    assert not session.run("Get-SPOThing")
    assert "missing mandatory parameters: Identity." in err.getvalue()
    with pytest.raises(ValueError, match="already registered"):
        cmdlet("GET-SPOTHING", registry=registry)(get_spo_thing)


def test_get_command_and_get_help(cli: Cli) -> None:
    listed = ok(cli, "Get-Command *KeyVaultKey* | ft Name")
    assert "Add-AzKeyVaultKey" in listed and "Add-AzureKeyVaultKey -> Add-AzKeyVaultKey" in listed
    help_text = ok(cli, "Get-Help Get-AzureRmKeyVault")
    assert "Get-AzKeyVault [[-VaultName] <String>] [[-ResourceGroupName] <String>]" in help_text
    assert "[-InRemovedState] [<CommonParameters>]" in help_text
    key_help = ok(cli, "Get-Help Get-AzKeyVaultKey")
    assert "Get-AzKeyVaultKey [-VaultName] <String> [-Name] <String> -IncludeVersions" in key_help


def test_shell_help_names_the_home_folder_and_no_missing_option(cli: Cli) -> None:
    for command in ("ps", "shell"):
        text = " ".join(cli.run(command, "--help").out.split())
        assert "--server" not in text  # there is no such option (issue 17, item 8)
        assert "against the home folder given by --home (or CUSTOMERKEY_HOME)" in text
