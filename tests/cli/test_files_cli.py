"""``customerkey files|site|file ...`` through the CLI entry point, on a real home folder."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from customerkey.identity.workload_principals import SHAREPOINT

if TYPE_CHECKING:
    from tests.cli.conftest import Cli

VAULT_A = "Contoso-O365SP-NA-VaultA1"
VAULT_B = "Contoso-O365SP-NA-VaultA2"
KEY_A = "Contoso-O365SP-NA-VaultA1-Key001"
KEY_B = "Contoso-O365SP-NA-VaultA2-Key001"
URI_A = f"https://{VAULT_A.lower()}.vault.azure.net/keys/{KEY_A}"
URI_B = f"https://{VAULT_B.lower()}.vault.azure.net/keys/{KEY_B}"
ADMIN_URL = "https://contoso-admin.sharepoint.local"
SITE = "https://contoso.sharepoint.local/sites/finance"


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def tenant(cli: Cli) -> None:
    """A tenant and two vaults whose keys the SharePoint principal may use."""
    cli.ok("init")
    cli.json("tenant", "create", "contoso", "--mail-domain", "contoso.com")
    for vault, key, region in ((VAULT_A, KEY_A, "eastus"), (VAULT_B, KEY_B, "westus")):
        cli.create_vault(vault, "--purge-protection", region=region)
        cli.create_key(vault, key)
        cli.json(
            "vault",
            "access",
            "set",
            vault,
            "--spn",
            SHAREPOINT.app_id,
            "--key-permissions",
            "wrapKey,unwrapKey,get",
        )


def test_sites_files_register_roll_and_recycle_bin(cli: Cli, tenant: None, tmp_path: Path) -> None:
    site = cli.json("site", "create", SITE, "--title", "Finance")
    assert site["Url"] == SITE and site["Encryption"] == "ServiceManaged"
    assert [s["Url"] for s in cli.json("site", "list")] == [SITE]
    assert cli.json("site", "status", SITE)["State"] == "Unregistered"
    assert cli.json("files", "status")["State"] == "Unregistered"

    # a file spanning three 8 MiB chunks, and a second version of it
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(20 * 1024 * 1024 + 3))
    small = tmp_path / "budget.xlsx"
    small.write_bytes(b"budget v1")
    put = cli.json("file", "put", SITE, "Shared Documents/big.bin", str(big))
    assert (put["Version"], put["Size"], put["Chunks"]) == (1, big.stat().st_size, 3)
    cli.json("file", "put", SITE, "Shared Documents/budget.xlsx", str(small))
    small.write_bytes(b"budget v2")
    assert cli.json("file", "put", SITE, "Shared Documents/budget.xlsx", str(small))["Version"] == 2

    # register, then a roll queued without waiting; a second roll is refused meanwhile
    registered = cli.json(
        "files", "register", "--identity", ADMIN_URL, "--primary", URI_A, "--secondary", URI_B
    )
    assert registered["State"] == "Registered" and registered["PercentComplete"] == 100.0
    assert registered["PrimaryKeyVaultName"] == VAULT_A.lower()
    assert registered["PrimaryKeyName"] == KEY_A
    assert registered["SecondaryKeyName"] == KEY_B
    assert len(registered["PrimaryKeyVersion"]) == 32
    assert cli.json("site", "status", SITE)["State"] == "Registered"
    cli.json("key", "rotate", VAULT_A, KEY_A)
    cli.ok("files", "roll", "--key-type", "primary", "--key", URI_A, "--no-wait")
    rolling = cli.json("files", "status")
    assert rolling["State"] == "Rolling" and rolling["PercentComplete"] == 0.0
    error = cli.fail("files", "roll", "--key-type", "secondary", "--key", URI_B, error="Conflict")
    assert rolling["JobId"] in error and "one key roll at a time" in error
    cli.json("jobs", "wait", "--all")
    rolled = cli.json("files", "status", "--generations")
    assert rolled["State"] == "Registered"
    assert rolled["PrimaryKeyVersion"] != registered["PrimaryKeyVersion"]
    assert [g["Retired"] for g in rolled["KeyGenerationUsage"]] == [True, False]
    assert rolled["KeyGenerationUsage"][1]["Sites"] == 1
    assert rolled["KeyGenerationUsage"][1]["FileVersions"] == 3

    # every version comes back byte for byte
    out = tmp_path / "out"
    out.mkdir()
    got = cli.json("file", "get", SITE, "Shared Documents/big.bin", str(out))
    assert got["Size"] == big.stat().st_size and _digest(out / "big.bin") == _digest(big)
    cli.json("file", "get", SITE, "Shared Documents/budget.xlsx", str(out / "v1"), "--version", "1")
    assert (out / "v1").read_bytes() == b"budget v1"
    cli.fail(
        "file", "get", SITE, "Shared Documents/budget.xlsx", str(out / "v1"), error="BadParameter"
    )
    cli.json("file", "get", SITE, "Shared Documents/budget.xlsx", str(out / "v1"), "--force")
    assert (out / "v1").read_bytes() == b"budget v2"
    versions = cli.json("file", "versions", SITE, "Shared Documents/budget.xlsx")
    assert [(v["Version"], v["IsCurrent"]) for v in versions] == [(1, False), (2, True)]
    listed = cli.json("file", "list", SITE, "--folder", "Shared Documents")
    assert [f["Name"] for f in listed] == ["big.bin", "budget.xlsx"]

    # recycle bin: delete, list, restore, delete again, purge
    cli.json("file", "delete", SITE, "Shared Documents/budget.xlsx")
    assert [f["Name"] for f in cli.json("file", "list", SITE)] == ["big.bin"]
    recycled = cli.json("file", "list", SITE, "--recycle-bin")
    assert [(f["Path"], f["State"]) for f in recycled] == [
        ("Shared Documents/budget.xlsx", "RecycleBin")
    ]
    cli.fail(
        "file", "get", SITE, "Shared Documents/budget.xlsx", str(out / "x"), error="FileNotFound"
    )
    assert not (out / "x").exists()
    cli.json("file", "get", SITE, "Shared Documents/budget.xlsx", str(out / "x"), "--recycle-bin")
    assert (out / "x").read_bytes() == b"budget v2"
    assert cli.json("file", "restore", SITE, "Shared Documents/budget.xlsx")["State"] == "Active"
    cli.json("file", "delete", SITE, "Shared Documents/budget.xlsx")
    # emptying the recycle bin destroys keys and content: without --yes (no terminal) refused
    refused = cli.fail("file", "purge", SITE, error="BadParameter")
    assert refused.endswith("is destructive; pass --yes to confirm.")
    assert len(cli.json("file", "list", SITE, "--recycle-bin")) == 1
    assert cli.json("file", "purge", SITE, "--yes")["Purged"] == 1
    assert cli.json("file", "list", SITE, "--recycle-bin") == []


def test_bad_input_gives_one_clear_error_and_changes_nothing(
    cli: Cli, tenant: None, tmp_path: Path
) -> None:
    cli.json("site", "create", SITE)
    source = tmp_path / "a.txt"
    source.write_bytes(b"hello")
    cli.json("file", "put", SITE, "a.txt", str(source))
    before = cli.audit_count()
    cli.fail("site", "create", "https://contoso.example.com/sites/x", error="BadParameter")
    cli.fail("site", "create", SITE, error="Conflict")
    cli.fail("site", "show", "https://contoso.sharepoint.local/sites/nosuch", error="SiteNotFound")
    cli.fail("file", "put", SITE, "a/../b.txt", str(source), error="BadParameter")
    cli.fail("file", "put", SITE, "b.txt", str(tmp_path / "missing"), error="BadParameter")
    cli.fail(
        "file", "get", SITE, "a.txt", str(tmp_path / "o"), "--version", "7", error="FileNotFound"
    )
    assert not (tmp_path / "o").exists()
    cli.fail("files", "roll", "--key-type", "primary", "--key", URI_A, error="Conflict")
    cli.fail("files", "register", "--primary", URI_A, "--secondary", URI_A, error="BadParameter")
    cli.fail(
        "files",
        "register",
        "--identity",
        "https://contoso.sharepoint.local",
        "--primary",
        URI_A,
        "--secondary",
        URI_B,
        error="BadParameter",
    )
    cli.fail(
        "files",
        "recover",
        "--primary",
        URI_A,
        "--secondary",
        URI_B,
        "--reason",
        "lost",
        "--with-availability-key",
        error="Conflict",
    )
    cli.fail("files", "purge-request", "--reason", "x", "--contact", "y", error="Conflict")
    assert cli.audit_count() == before
    assert cli.json("files", "status")["State"] == "Unregistered"
    # once registered: the purge path is refused while the principal keeps its access
    cli.json("files", "register", "--primary", URI_A, "--secondary", URI_B)
    error = cli.fail(
        "files", "purge-request", "--reason", "leaving", "--contact", "sec@contoso.com"
    )
    assert "still holds" in error
    cli.fail(
        "files",
        "recover",
        "--primary",
        URI_A,
        "--secondary",
        URI_B,
        "--reason",
        "lost",
        error="BadParameter",
    )
    assert cli.json("files", "status")["State"] == "Registered"
    cli.json("file", "get", SITE, "a.txt", str(tmp_path / "back"))
    assert (tmp_path / "back").read_bytes() == b"hello"
