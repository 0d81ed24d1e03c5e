"""``customerkey init`` and ``customerkey vault ...`` through the CLI entry point, plus the
installed console scripts in a subprocess."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import stat
import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from alembic.script import ScriptDirectory

from customerkey.cli.main import display_database_url, main
from customerkey.storage.database import alembic_config

if TYPE_CHECKING:
    from tests.cli.conftest import Cli

VAULT = "Contoso-O365EX-NA-VaultA1"
KEY = "Contoso-O365EX-NA-VaultA1-Key001"
CANONICAL = VAULT.lower()


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _when(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


# ---------------------------------------------------------------- init


def test_init_creates_private_home_master_key_and_database(cli: Cli, home: Path) -> None:
    view = cli.json("init")
    assert view["Home"] == str(home)
    assert view["MasterKeyCreated"] is True
    assert _mode(home) == 0o700
    master = home / "master.key"
    assert view["MasterKey"] == str(master)
    assert _mode(master) == 0o600
    assert len(master.read_bytes()) == 32

    db = home / "customerkey.db"
    assert view["Database"] == str(db)
    head = ScriptDirectory.from_config(alembic_config(f"sqlite:///{db}")).get_current_head()
    assert view["SchemaRevision"] == head
    with sqlite3.connect(db) as conn:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        (revision,) = conn.execute("SELECT version_num FROM alembic_version").fetchone()
    assert {"vaults", "keys", "key_versions", "access_policies", "audit_records"} <= tables
    assert revision == head


def test_init_with_a_database_url(
    cli: Cli, home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    elsewhere = tmp_path / "elsewhere.db"
    monkeypatch.setenv("CUSTOMERKEY_DATABASE_URL", f"sqlite:///{elsewhere}")
    view = cli.json("init")
    assert view["Database"] == f"sqlite:///{elsewhere}"
    assert elsewhere.exists() and not (home / "customerkey.db").exists()
    cli.create_vault("contoso-a1")
    monkeypatch.delenv("CUSTOMERKEY_DATABASE_URL")
    assert cli.vault_names() == []  # the home folder's own database is another one


def test_init_never_prints_the_database_password() -> None:
    shown = display_database_url("postgresql+psycopg://ck:s3cret@db.internal:5432/ck")
    assert "s3cret" not in shown and shown.startswith("postgresql+psycopg://ck:")
    assert "db.internal:5432/ck" in shown
    assert display_database_url(f"sqlite:///{Path('/x/y.db')}") == "sqlite:////x/y.db"


def test_init_twice_keeps_the_master_key(cli: Cli, home: Path) -> None:
    first = cli.ok("init")
    assert "Back up" in first.out  # the warning is shown when the key is made
    key = (home / "master.key").read_bytes()
    second = cli.json("init")
    assert second["MasterKeyCreated"] is False
    assert (home / "master.key").read_bytes() == key
    assert "Back up" not in cli.ok("init").out


def test_init_tightens_an_existing_home_folder(cli: Cli, home: Path) -> None:
    home.mkdir(mode=0o755)
    os.chmod(home, 0o755)
    cli.ok("init")
    assert _mode(home) == 0o700


def test_init_refuses_a_master_key_readable_by_others(cli: Cli, home: Path) -> None:
    cli.ok("init")
    master = home / "master.key"
    key = master.read_bytes()
    os.chmod(master, 0o644)
    message = cli.fail("init")
    assert str(master) in message and "644" in message and "chmod 600" in message
    # Every other command refuses it too, and nothing was "repaired" behind the user's back.
    assert "chmod 600" in cli.fail("vault", "list")
    assert _mode(master) == 0o644 and master.read_bytes() == key
    os.chmod(master, 0o600)
    assert cli.json("init")["MasterKeyCreated"] is False


def test_init_refuses_a_master_key_of_the_wrong_size(cli: Cli, home: Path) -> None:
    cli.ok("init")
    master = home / "master.key"
    master.write_bytes(b"\x00" * 16)
    assert "32 bytes" in cli.fail("init")
    assert master.read_bytes() == b"\x00" * 16


# ---------------------------------------------------------------- vault lifecycle


def test_vault_create_show_list_like_get_azkeyvault(cli: Cli, vault: Any) -> None:
    assert vault["VaultName"] == VAULT
    assert vault["Location"] == "eastus"
    assert vault["SubscriptionId"] == "contoso-sub-1"
    assert vault["TenantId"] == "contoso"
    assert vault["EnableSoftDelete"] is True
    assert vault["EnablePurgeProtection"] is True
    assert vault["SoftDeleteRetentionInDays"] == 90
    assert vault["RecoveryLevel"] == "Recoverable"
    assert vault["VaultUri"] == f"https://{CANONICAL}.vault.localhost:8443/"
    assert vault["ResourceId"].endswith(f"/providers/Microsoft.KeyVault/vaults/{CANONICAL}")
    assert vault["AccessPolicies"] == []
    assert "DeletionDate" not in vault

    shown = cli.json("vault", "show", VAULT.upper())  # names are case-insensitive
    assert shown == vault
    table = cli.ok("vault", "show", VAULT).out
    for label in ("VaultName", "EnableSoftDelete", "EnablePurgeProtection", "AccessPolicies"):
        assert label in table
    assert VAULT in table and "(none)" in table

    cli.create_vault("contoso-b1", "--retention-days", "7")
    listed = cli.json("vault", "list")
    assert [v["VaultName"] for v in listed] == ["contoso-b1", VAULT]  # by canonical name
    b1 = next(v for v in listed if v["VaultName"] == "contoso-b1")
    assert b1["SoftDeleteRetentionInDays"] == 7
    assert b1["EnablePurgeProtection"] is False
    assert b1["RecoveryLevel"] == "CustomizedRecoverable+Purgeable"
    assert "contoso-b1" in cli.ok("vault", "list").out


def test_json_flag_before_or_after_the_sub_command(
    cli: Cli, vault: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    after = cli.ok("vault", "show", VAULT, "--json").data()
    before = cli.ok("--json", "vault", "show", VAULT).data()
    assert after == before == vault
    assert cli.ok("vault", "list", "--json", "--json").data()[0]["VaultName"] == VAULT
    # Given both before and after (a script adding --json to a line that already had it).
    assert main(["--json", "--home", str(cli.home), "vault", "show", VAULT, "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == vault
    # After "--" it is an argument like any other (here: a bad vault name), not the flag.
    assert "'--json' is invalid" in cli.fail("vault", "show", "--", "--json", error="BadParameter")
    # Without --json it is a table, not JSON.
    with pytest.raises(json.JSONDecodeError):
        cli.ok("vault", "show", VAULT).data()


def test_vault_delete_recover(cli: Cli, vault: Any) -> None:
    deleted = cli.json("vault", "delete", "--yes", VAULT)
    deletion = _when(deleted["DeletionDate"])
    assert _when(deleted["ScheduledPurgeDate"]) - deletion == timedelta(days=90)
    assert cli.vault_names() == []
    listed = cli.json("vault", "list", "--deleted")
    assert [v["VaultName"] for v in listed] == [VAULT]
    assert listed[0]["ScheduledPurgeDate"] == deleted["ScheduledPurgeDate"]
    assert "ScheduledPurgeDate" in cli.ok("vault", "list", "--deleted").out
    cli.fail("vault", "show", VAULT, error="VaultNotFound")

    recovered = cli.json("vault", "recover", VAULT)
    assert "DeletionDate" not in recovered
    assert cli.vault_names() == [VAULT]
    assert cli.vault_names(deleted=True) == []
    cli.fail("vault", "recover", VAULT, error="VaultNotFound")  # nothing deleted to recover


def test_vault_purge_without_purge_protection(cli: Cli) -> None:
    cli.ok("init")
    cli.create_vault("contoso-b1", "--retention-days", "7")
    cli.create_key("contoso-b1", "k1")
    cli.fail("vault", "purge", "--yes", "contoso-b1", error="VaultNotFound")  # only deleted vaults
    deleted = cli.json("vault", "delete", "--yes", "contoso-b1")
    assert _when(deleted["ScheduledPurgeDate"]) - _when(deleted["DeletionDate"]) == timedelta(7)
    assert (
        cli.json("vault", "purge", "--yes", "contoso-b1")["Message"] == "Vault 'contoso-b1' purged."
    )
    assert cli.vault_names(deleted=True) == []
    # The name is free again, and the new vault has none of the old keys.
    cli.create_vault("contoso-b1")
    assert cli.key_names("contoso-b1") == []


def test_vault_purge_refused_under_purge_protection(cli: Cli, vault: Any) -> None:
    cli.json("vault", "delete", "--yes", VAULT)
    before = cli.audit_count()
    message = cli.fail("vault", "purge", "--yes", VAULT, error="Forbidden")
    assert "purge protection" in message
    assert cli.vault_names(deleted=True) == [VAULT]
    assert cli.audit_count() == before + 1  # the refusal is audited, nothing else happened
    assert cli.json("vault", "recover", VAULT)["VaultName"] == VAULT


def test_vault_create_twice_is_a_conflict(cli: Cli, vault: Any) -> None:
    cli.fail(
        "vault", "create", VAULT.lower(), "--subscription", "x", "--region", "y", error="Conflict"
    )
    cli.json("vault", "delete", "--yes", VAULT)
    message = cli.fail(
        "vault", "create", VAULT, "--subscription", "x", "--region", "y", error="Conflict"
    )
    assert "soft-deleted" in message
    assert cli.vault_names(deleted=True) == [VAULT]


# ---------------------------------------------------------------- access policies and --as


def test_access_set_show_remove(cli: Cli, vault: Any) -> None:
    cli.create_principal("alice@contoso.com", "--display-name", "Alice")
    shown = cli.json(
        "vault",
        "access",
        "set",
        VAULT,
        "--upn",
        "alice@contoso.com",
        "--key-permissions",
        "get,list,wrapKey,unwrapKey",
    )
    alice = cli.json("principal", "show", "alice@contoso.com")
    assert shown["AccessPolicies"] == [
        {
            "ObjectId": alice["ObjectId"],
            "DisplayName": "Alice",
            "PrincipalName": "alice@contoso.com",
            "PermissionsToKeys": ["get", "list", "unwrapKey", "wrapKey"],
        }
    ]
    assert cli.json("vault", "show", VAULT)["AccessPolicies"] == shown["AccessPolicies"]
    assert "Alice (alice@contoso.com): get, list, unwrapKey, wrapKey" in (
        cli.ok("vault", "show", VAULT).out
    )
    assert cli.json("vault", "access", "show", VAULT) == shown["AccessPolicies"]
    # The grant names the object id, so a principal made again under the name gets nothing.
    cli.ok("principal", "delete", "alice@contoso.com", "--yes")
    assert cli.json("vault", "access", "show", VAULT) == []
    cli.create_principal("alice@contoso.com", "--display-name", "Alice")
    cli.json(
        "vault",
        "access",
        "set",
        VAULT,
        "--upn",
        "alice@contoso.com",
        "--key-permissions",
        "get,list,wrapKey,unwrapKey",
    )

    # Merged by default, replaced with --replace; case-insensitive permission names.
    merged = cli.json(
        "vault", "access", "set", VAULT, "--upn", "Alice@Contoso.com", "--key-permissions", "BACKUP"
    )
    assert merged["AccessPolicies"][0]["PermissionsToKeys"] == [
        "get",
        "list",
        "backup",
        "unwrapKey",
        "wrapKey",
    ]
    replaced = cli.json(
        "vault",
        "access",
        "set",
        VAULT,
        "--upn",
        "alice@contoso.com",
        "--key-permissions",
        "get",
        "--replace",
    )
    assert replaced["AccessPolicies"][0]["PermissionsToKeys"] == ["get"]

    removed = cli.json("vault", "access", "remove", VAULT, "--upn", "alice@contoso.com")
    assert removed["AccessPolicies"] == []
    assert cli.json("vault", "access", "show", VAULT) == []
    cli.fail("vault", "access", "remove", VAULT, "--upn", "alice@contoso.com")


def test_access_for_a_service_principal_and_all(cli: Cli, vault: Any) -> None:
    cli.create_principal("app-1", "--service")
    shown = cli.json("vault", "access", "set", VAULT, "--spn", "app-1", "--key-permissions", "all")
    (policy,) = shown["AccessPolicies"]
    assert policy["PrincipalName"] == "app-1" and policy["ObjectId"] != "app-1"
    assert {"get", "wrapKey", "unwrapKey", "purge", "release"} <= set(policy["PermissionsToKeys"])


def test_as_principal_needs_an_access_policy(cli: Cli, key: Any) -> None:
    alice = "alice@contoso.com"
    cli.create_principal(alice)
    before = cli.audit_count()
    message = cli.fail("key", "show", VAULT, KEY, as_principal=alice, error="Forbidden")
    assert alice in message and "get" in message
    cli.fail("vault", "show", VAULT, as_principal=alice, error="Forbidden")
    assert cli.json("vault", "list", as_principal=alice) == []  # sees no vault
    assert cli.audit_count() == before + 1  # the key refusal is audited as denied
    denied = cli.json("audit", "show", "--limit", "1")[0]
    assert (denied["Principal"], denied["Operation"], denied["Result"]) == (
        f"operator as {alice}",  # --as is the operator impersonating
        "KeyGet",
        "denied",
    )

    cli.json(
        "vault", "access", "set", VAULT, "--upn", alice, "--key-permissions", "get,list,wrapKey"
    )
    assert cli.json("key", "show", VAULT, KEY, as_principal=alice)["Name"] == KEY
    assert cli.json("--json", "key", "list", VAULT, as_principal=alice)[0]["Name"] == KEY
    assert cli.json("vault", "show", VAULT, as_principal=alice)["VaultName"] == VAULT
    assert [v["VaultName"] for v in cli.json("vault", "list", as_principal=alice)] == [VAULT]

    # The policy grants only what it names: no create, delete, backup, or vault management.
    versions = cli.versions()
    cli.fail("key", "create", VAULT, KEY, as_principal=alice, error="Forbidden")
    cli.fail("key", "delete", "--yes", VAULT, KEY, as_principal=alice, error="Forbidden")
    cli.fail("vault", "delete", "--yes", VAULT, as_principal=alice, error="Forbidden")
    cli.fail(
        "vault",
        "access",
        "set",
        VAULT,
        "--upn",
        alice,
        "--key-permissions",
        "all",
        as_principal=alice,
        error="Forbidden",
    )
    assert cli.versions() == versions
    assert cli.key_names() == [KEY]
    assert cli.json("vault", "access", "show", VAULT)[0]["PermissionsToKeys"] == [
        "get",
        "list",
        "wrapKey",
    ]

    # Removing the policy is revocation.
    cli.json("vault", "access", "remove", VAULT, "--upn", alice)
    cli.fail("key", "show", VAULT, KEY, as_principal=alice, error="Forbidden")


def test_as_an_unknown_principal(cli: Cli, vault: Any) -> None:
    cli.fail("vault", "list", as_principal="nobody@contoso.com", error="PrincipalNotFound")


def test_a_principal_uses_the_vault_it_created_and_its_admins_manage_it(cli: Cli) -> None:
    cli.ok("init")
    bob = "bob@contoso.com"
    cli.create_principal(bob)
    created = cli.json(
        "vault",
        "create",
        "bobs-vault",
        "--subscription",
        "s",
        "--region",
        "eastus",
        as_principal=bob,
    )
    assert created["CreatedBy"] == bob
    (policy,) = created["AccessPolicies"]
    assert policy["PrincipalName"] == bob and "create" in policy["PermissionsToKeys"]
    assert cli.json("key", "create", "bobs-vault", "k1", as_principal=bob)["Name"] == "k1"
    cli.create_principal("carol@contoso.com")
    cli.fail(
        "vault",
        "delete",
        "--yes",
        "bobs-vault",
        as_principal="carol@contoso.com",
        error="Forbidden",
    )
    # Managing a vault is its tenant admins' (no rule compares the creator's name).
    cli.fail("vault", "delete", "--yes", "bobs-vault", as_principal=bob, error="Forbidden")
    cli.create_principal("root@contoso.com", "--roles", "tenant-admin")
    deleted = cli.json("vault", "delete", "--yes", "bobs-vault", as_principal="root@contoso.com")
    assert deleted["DeletionDate"]


# ---------------------------------------------------------------- bad input changes nothing


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["1contoso"], "invalid"),
        (["ab"], "3 to 63"),
        (["contoso--a1"], "single hyphens"),
        (["contoso_a1"], "invalid"),
        (["contoso-a1", "--retention-days", "5"], "between 7 and 90"),
        (["contoso-a1", "--retention-days", "91"], "between 7 and 90"),
    ],
)
def test_vault_create_bad_input(cli: Cli, args: list[str], fragment: str) -> None:
    cli.ok("init")
    before = cli.audit_count()
    message = cli.fail(
        "vault",
        "create",
        *args,
        "--subscription",
        "s",
        "--region",
        "eastus",
        error="BadParameter",
    )
    assert fragment in message
    assert cli.vault_names() == [] and cli.vault_names(deleted=True) == []
    assert cli.audit_count() == before


def test_access_set_bad_input(cli: Cli, vault: Any) -> None:
    cli.create_principal("alice@contoso.com")
    cli.json(
        "vault", "access", "set", VAULT, "--upn", "alice@contoso.com", "--key-permissions", "get"
    )
    before = cli.audit_count()
    message = cli.fail(
        "vault",
        "access",
        "set",
        VAULT,
        "--upn",
        "alice@contoso.com",
        "--key-permissions",
        "get,frobnicate",
        error="BadParameter",
    )
    assert "'frobnicate' is not a key permission" in message
    cli.fail(
        "vault", "access", "set", VAULT, "--upn", "alice@contoso.com", "--key-permissions", ","
    )
    cli.fail("vault", "access", "set", VAULT, "--key-permissions", "get", error="BadParameter")
    cli.fail(
        "vault",
        "access",
        "set",
        VAULT,
        "--upn",
        "alice@contoso.com",
        "--spn",
        "app",
        "--key-permissions",
        "get",
        error="BadParameter",
    )
    cli.fail(
        "vault",
        "access",
        "set",
        VAULT,
        "--upn",
        "nobody@contoso.com",
        "--key-permissions",
        "get",
        error="PrincipalNotFound",
    )
    cli.fail(
        "vault",
        "access",
        "set",
        "no-such-vault",
        "--upn",
        "alice@contoso.com",
        "--key-permissions",
        "get",
        error="VaultNotFound",
    )
    assert cli.json("vault", "access", "show", VAULT)[0]["PermissionsToKeys"] == ["get"]
    assert cli.audit_count() == before


def test_unknown_vault(cli: Cli) -> None:
    cli.ok("init")
    for args in (
        ["vault", "show", "no-such-vault"],
        ["vault", "delete", "--yes", "no-such-vault"],
        ["vault", "access", "show", "no-such-vault"],
        ["key", "list", "no-such-vault"],
    ):
        message = cli.fail(*args, error="VaultNotFound")
        assert "no-such-vault" in message
    cli.fail("vault", "show", "bad_name!", error="BadParameter")


def test_usage_errors_exit_2(cli: Cli, vault: Any) -> None:
    err = cli.fail("vault", "create", "contoso-b1", "--region", "eastus", code=2)
    assert "--subscription" in err
    cli.fail("vault", "frobnicate", code=2)
    cli.fail("vault", "create", "contoso-b1", "-s", "x", "--region", "y", code=2)
    cli.fail(
        "vault",
        "create",
        "contoso-b1",
        "--subscription",
        "s",
        "--region",
        "r",
        "--retention-days",
        "seven",
        code=2,
    )
    assert cli.vault_names() == [VAULT]


# ---------------------------------------------------------------- the installed entry points


def _script(name: str) -> str:
    candidate = Path(sys.executable).parent / name
    found = str(candidate) if candidate.exists() else shutil.which(name)
    assert found, f"the '{name}' console script is not installed (pip install -e .)"
    return found


def _run(*argv: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CUSTOMERKEY_")}
    return subprocess.run(argv, capture_output=True, text=True, env=env, timeout=60, check=False)


def test_console_scripts(tmp_path: Path) -> None:
    home = tmp_path / "sub-home"
    customerkey, ck = _script("customerkey"), _script("ck")

    init = _run(customerkey, "--home", str(home), "init")
    assert init.returncode == 0, init.stderr
    assert "MasterKeyCreated" in init.stdout
    assert _mode(home) == 0o700 and _mode(home / "master.key") == 0o600

    created = _run(
        customerkey,
        "--home",
        str(home),
        "vault",
        "create",
        VAULT,
        "--subscription",
        "contoso-sub-1",
        "--region",
        "eastus",
        "--purge-protection",
        "--json",
    )
    assert created.returncode == 0, created.stderr
    assert json.loads(created.stdout)["EnablePurgeProtection"] is True

    shown = _run(ck, "--home", str(home), "--json", "vault", "show", VAULT)
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["VaultName"] == VAULT

    bad = _run(
        customerkey,
        "--home",
        str(home),
        "vault",
        "create",
        "x",
        "--subscription",
        "s",
        "--region",
        "r",
    )
    assert bad.returncode == 1
    assert bad.stderr.strip().splitlines() == [
        "Error (BadParameter): The vault name 'x' is invalid: it must be 3 to 63 characters long."
    ]
    assert bad.stdout == ""
