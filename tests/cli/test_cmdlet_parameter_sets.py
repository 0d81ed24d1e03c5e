"""Lines from Microsoft's cmdlet documentation, pasted into ``customerkey ps`` and
``customerkey shell``: documented parameters that mean nothing here are accepted with a warning,
the ones that would change the result are refused with the reason, parameters Microsoft does
not document still fail, and the parameter table covers every registered cmdlet.

Each line cites the page of learn.microsoft.com it comes from; names of vaults and mailboxes
are the documentation's, with the mail domain contoso.com of the tenant set up here.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from customerkey.pwsh.cmdlets.documented_parameters import DOCUMENTED
from customerkey.pwsh.cmdlets.parameter_reference import reference
from customerkey.pwsh.cmdlets.registry import default_registry

if TYPE_CHECKING:
    from tests.cli.conftest import Cli, Result

REFERENCE = Path(__file__).resolve().parents[2] / "docs" / "CMDLETS.md"
VAULT = "Contoso03Vault"
PATTI = "PattiFuller@contoso.com"


@pytest.fixture
def contoso(cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Cli:
    """Tenant contoso (contoso.com) with the user the Az examples grant, and the examples'
    vault holding one key."""
    monkeypatch.chdir(tmp_path)
    cli.ok("init")
    cli.ok("tenant", "create", "contoso", "--mail-domain", "contoso.com")
    cli.ok("principal", "create", PATTI, "--tenant", "contoso")
    # https://learn.microsoft.com/powershell/module/az.keyvault/new-azkeyvault (example 1)
    ok(cli, f"New-AzKeyVault -VaultName '{VAULT}' -ResourceGroupName 'Group14' -Location 'East US'")
    # https://learn.microsoft.com/powershell/module/az.keyvault/add-azkeyvaultkey (example 1)
    ok(cli, f"Add-AzKeyVaultKey -VaultName '{VAULT}' -Name 'ITSoftware' -Destination 'Software'")
    return cli


def ps(cli: Cli, *lines: str) -> Result:
    return cli.run("ps", "\n".join(lines))


def ok(cli: Cli, *lines: str) -> str:
    result = ps(cli, *lines)
    assert result.code == 0 and result.err == "", result
    return result.out


def warned(cli: Cli, line: str, *ignored: str) -> str:
    """Run a line that must succeed with one warning per ignored parameter; returns stdout."""
    result = ps(cli, line)
    assert result.code == 0, result
    warnings = [w for w in result.err.splitlines() if w.startswith("WARNING: -")]
    assert warnings == [f"WARNING: -{name} has no effect here; ignored." for name in ignored]
    return result.out


def refused(cli: Cli, line: str, parameter: str) -> str:
    result = ps(cli, line)
    assert result.code == 1, result
    assert "Traceback" not in result.err
    assert f"Microsoft documents -{parameter} for " in result.err
    assert "ParameterNotSupported" in result.err
    return result.err


def key_names(cli: Cli, vault: str = VAULT) -> list[str]:
    return sorted(k["Name"] for k in cli.json("key", "list", vault))


# ====================================================================== the table


def test_every_registered_cmdlet_has_its_documented_parameters() -> None:
    registry = default_registry()
    names = {spec.name for spec in registry.specs()}
    assert names == set(DOCUMENTED)
    for spec in registry.specs():
        entry = DOCUMENTED[spec.name]
        assert entry.url.startswith("https://learn.microsoft.com/powershell/module/"), spec.name
        declared = {p.name for p in spec.signature.params}
        assert entry.own_names() <= declared, spec.name
        for param in (*entry.ignored_params(), *entry.refused_params()):
            assert param.name in declared, (spec.name, param.name)
        if entry.should_process:
            assert spec.signature.should_process, spec.name
    # docs/CMDLETS.md is the table as written out (regenerate it when the table changes).
    assert REFERENCE.read_text(encoding="utf-8") == reference(registry)


# ====================================================================== Az.Accounts / Az.KeyVault


def test_az_lines_from_the_documentation(contoso: Cli) -> None:
    cli = contoso
    # https://learn.microsoft.com/powershell/module/az.accounts/connect-azaccount (example 2
    # signs in with a device code; the sign-in is local here)
    warned(cli, "Connect-AzAccount -UseDeviceAuthentication", "UseDeviceAuthentication")
    # https://learn.microsoft.com/powershell/module/az.keyvault/new-azkeyvault (example 2)
    out = warned(
        cli,
        "New-AzKeyVault -VaultName 'Contoso04Vault' -ResourceGroupName 'Group14' "
        "-Location 'East US' -Sku 'Premium'",
        "Sku",
    )
    assert "Contoso04Vault" in out
    # https://learn.microsoft.com/powershell/module/az.keyvault/add-azkeyvaultkey (-CurveName)
    (key,) = cli.json(
        "ps",
        f"Add-AzKeyVaultKey -VaultName '{VAULT}' -Name 'ITEc' -Destination 'Software' "
        "-KeyType EC -CurveName P-384",
    )
    assert (key["KeyType"], key["KeySize"]) == ("EC", 384)
    # https://learn.microsoft.com/powershell/module/az.keyvault/set-azkeyvaultaccesspolicy
    # (example 1, and -BypassObjectIdValidation, -EmailAddress from its parameters)
    out = warned(
        cli,
        f"Set-AzKeyVaultAccessPolicy -VaultName '{VAULT}' -EmailAddress '{PATTI}' "
        "-PermissionsToKeys create,import,delete,list -BypassObjectIdValidation -PassThru",
        "BypassObjectIdValidation",
    )
    assert "list, create, import, delete" in out
    # https://learn.microsoft.com/powershell/module/az.keyvault/get-azkeyvaultkey (example 3)
    ok(cli, f"Get-AzKeyVaultKey -VaultName '{VAULT}' -KeyName 'ITSoftware' -IncludeVersions")
    # https://learn.microsoft.com/powershell/module/az.keyvault/remove-azkeyvault (example 2)
    # then https://learn.microsoft.com/powershell/module/az.keyvault/undo-azkeyvaultremoval
    ok(cli, "Remove-AzKeyVault -Name 'Contoso04Vault' -ResourceGroupName 'Group14' -Force")
    warned(
        cli,
        "Undo-AzKeyVaultRemoval -VaultName 'Contoso04Vault' -ResourceGroupName 'Group14' "
        '-Location eastus -Tag @{"x"= "y"}',
        "Tag",
    )
    assert "Contoso04Vault" in cli.vault_names()
    # -DefaultProfile (every Az cmdlet) names an Azure context; there is one here.
    warned(cli, f"Get-AzKeyVaultKey -VaultName '{VAULT}' -DefaultProfile $null", "DefaultProfile")


def test_az_parameters_that_would_change_the_result_are_refused(contoso: Cli) -> None:
    cli = contoso
    # https://learn.microsoft.com/powershell/module/az.keyvault/add-azkeyvaultkey (example 5)
    refused(
        cli,
        f"Add-AzKeyVaultKey -VaultName '{VAULT}' -Name 'ITByok' -KeyFilePath "
        "'C:\\Contoso\\ITByok.byok' -Destination 'HSM'",
        "KeyFilePath",
    )
    # https://learn.microsoft.com/powershell/module/az.keyvault/get-azkeyvaultkey (example 7)
    refused(cli, "Get-AzKeyVaultKey -HsmName 'testmhsm' -Name 'testkey'", "HsmName")
    refused(
        cli, f"Get-AzKeyVaultKey -VaultName '{VAULT}' -Name 'ITSoftware' -OutFile k.pem", "OutFile"
    )
    assert key_names(cli) == ["ITSoftware"]
    assert not Path("k.pem").exists()


# ====================================================================== Exchange Online


def test_exchange_lines_from_the_documentation(contoso: Cli) -> None:
    cli = contoso
    # https://learn.microsoft.com/powershell/module/exchangepowershell/connect-exchangeonline
    # (example 3: app-only sign-in with a certificate)
    warned(
        cli,
        "Connect-ExchangeOnline -AppId 36ee4c6c-0812-40a2-b820-b22ebd02bce3 "
        "-CertificateThumbprint 012THISISADEMOTHUMBPRINT "
        '-Organization "contoso.onmicrosoft.com"',
        "AppId",
        "CertificateThumbprint",
        "Organization",
    )
    # https://learn.microsoft.com/powershell/module/exchangepowershell/new-mailbox (example 1)
    out = warned(
        cli,
        "New-Mailbox -UserPrincipalName chris@contoso.com -Alias chris -Database "
        '"Mailbox Database 1" -Name ChrisAshton -OrganizationalUnit Users -Password $password '
        '-FirstName Chris -LastName Ashton -DisplayName "Chris Ashton" '
        "-ResetPasswordOnNextLogon $true",
        "Password",
        "Database",
        "FirstName",
        "LastName",
        "OrganizationalUnit",
        "ResetPasswordOnNextLogon",
    )
    assert "chris" in out
    # https://learn.microsoft.com/powershell/module/exchangepowershell/set-mailbox (example 1)
    result = ps(
        cli,
        'Set-Mailbox -Identity "chris@contoso.com" -DeliverToMailboxAndForward $true '
        "-ForwardingSMTPAddress manuel@contoso.com",
    )
    assert result.code == 0, result
    assert result.err.splitlines() == [
        "WARNING: -DeliverToMailboxAndForward has no effect here; ignored.",
        "WARNING: -ForwardingSmtpAddress has no effect here; ignored.",
        "WARNING: The command completed successfully but no settings of 'chris@contoso.com' "
        "have been modified.",
    ]
    # https://learn.microsoft.com/powershell/module/exchangepowershell/new-moverequest
    # (example 1 with -WhatIf: nothing moves; then example 2)
    out = warned(
        cli,
        "New-MoveRequest -Identity 'chris@contoso.com' -TargetDatabase \"DB01\" -WhatIf",
        "TargetDatabase",
    )
    assert 'What if: Performing the operation "New-MoveRequest"' in out
    assert "Couldn't find a move request" in ps(cli, "Get-MoveRequest chris@contoso.com").err
    warned(
        cli,
        "New-MoveRequest -Identity 'chris@contoso.com' -TargetDatabase \"DB01\"",
        "TargetDatabase",
    )
    # https://learn.microsoft.com/powershell/module/exchangepowershell/get-moverequest
    assert "Chris Ashton" in ok(cli, "Get-MoveRequest -ResultSize Unlimited")
    # https://learn.microsoft.com/powershell/module/exchangepowershell/get-dataencryptionpolicy
    # (-DomainController, on every Exchange cmdlet)
    warned(cli, "Get-DataEncryptionPolicy -DomainController dc01.contoso.com", "DomainController")


def test_exchange_parameters_that_would_change_the_result_are_refused(contoso: Cli) -> None:
    cli = contoso
    ok(cli, "New-Mailbox -Name Chris -MicrosoftOnlineServicesID chris@contoso.com")
    # https://learn.microsoft.com/powershell/module/exchangepowershell/get-mailbox (example 4)
    refused(cli, "Get-Mailbox -Anr Chr", "Anr")
    # https://learn.microsoft.com/powershell/module/exchangepowershell/get-mailboxstatistics
    # (example 2)
    refused(cli, "Get-MailboxStatistics -Server MailboxServer01", "Server")
    # https://learn.microsoft.com/powershell/module/exchangepowershell/new-mailbox (example 2):
    # a room mailbox is not created as a user mailbox.
    refused(
        cli,
        "New-Mailbox -UserPrincipalName confmbx@contoso.com -Alias confmbx -Name "
        'ConfRoomMailbox -Database "Mailbox Database 1" -OrganizationalUnit Users -Room '
        "-ResetPasswordOnNextLogon $true",
        "Room",
    )
    upns = [m["UserPrincipalName"] for m in cli.json("ps", "Get-Mailbox")]
    assert upns == ["chris@contoso.com"]


# ====================================================================== SharePoint Online


def test_sharepoint_lines_from_the_documentation(contoso: Cli) -> None:
    # https://learn.microsoft.com/powershell/module/sharepoint-online/connect-sposervice
    # (example 4)
    warned(
        contoso,
        "Connect-SPOService -Url https://contoso-admin.sharepoint.com -Region ITAR",
        "Region",
    )


# ====================================================================== common parameters


def test_common_parameters_and_ones_microsoft_does_not_document(contoso: Cli) -> None:
    cli = contoso
    warned(cli, "Get-AzKeyVault -Verbose -ErrorVariable problems", "Verbose", "ErrorVariable")
    ok(cli, "Get-AzKeyVault -Verbose:$false -Debug:$false -OutVariable vaults")
    ok(cli, "Get-AzKeyVault -Verbose -DefaultProfile $null -WarningAction SilentlyContinue")
    # -Confirm:$false asks for no prompt, which is what this shell does; -Confirm asks for
    # one it cannot give, so nothing runs. -WhatIf runs nothing either.
    refused(
        cli, f"Remove-AzKeyVaultKey -VaultName '{VAULT}' -Name 'ITSoftware' -Confirm", "Confirm"
    )
    assert "What if:" in ok(
        cli, f"Remove-AzKeyVaultKey -VaultName '{VAULT}' -Name ITSoftware -WhatIf"
    )
    assert key_names(cli) == ["ITSoftware"]
    ok(cli, f"Remove-AzKeyVaultKey -VaultName '{VAULT}' -Name 'ITSoftware' -Confirm:$false")
    assert key_names(cli) == []
    # Parameters Microsoft does not document fail as PowerShell fails them.
    for line, name in (
        (f"Get-AzKeyVault -VaultName '{VAULT}' -Colour blue", "Colour"),
        ("Get-Mailbox -DataEncryptionPolicy x", "DataEncryptionPolicy"),
        (
            f"Add-AzKeyVaultKey -VaultName '{VAULT}' -Name k -Destination Software -Bits 2048",
            "Bits",
        ),
    ):
        result = ps(cli, line)
        assert result.code == 1, result
        assert f"A parameter cannot be found that matches parameter name '{name}'." in result.err


def test_the_real_shell_and_get_help(contoso: Cli, tmp_path: Path) -> None:
    script = tmp_path / "lines.ps1"
    script.write_text(
        "Connect-ExchangeOnline -UserPrincipalName admin@contoso.com -ShowBanner:$false "
        "-SkipLoadingFormatData\n"
        "Get-DataEncryptionPolicy -DomainController dc01.contoso.com\n",
        encoding="utf-8",
    )
    result = contoso.run("shell", str(script))
    assert result.code == 0, result
    assert "WARNING: -SkipLoadingFormatData has no effect here; ignored." in result.err
    assert "WARNING: -DomainController has no effect here; ignored." in result.err
    help_text = ok(contoso, "Get-Help Set-Mailbox")
    assert (
        "https://learn.microsoft.com/powershell/module/exchangepowershell/set-mailbox" in help_text
    )
    assert "-LitigationHoldEnabled" in help_text.split("ACCEPTED WITH NO EFFECT HERE")[1]
    assert "-LitigationHoldEnabled" not in help_text.split("ACCEPTED WITH NO EFFECT HERE")[0]
