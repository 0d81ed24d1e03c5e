"""``customerkey key ...`` through the CLI entry point: versions, attributes, rotation,
soft delete, backup and restore, usage, and bad input that must change nothing."""

from __future__ import annotations

import json
import os
import re
import stat
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from tests.cli.conftest import Cli

VAULT = "Contoso-O365EX-NA-VaultA1"
CANONICAL = VAULT.lower()
KEY = "Contoso-O365EX-NA-VaultA1-Key001"
OTHER = "contoso-b1"  # same subscription and geography, no purge protection, 7-day retention

POLICY = {
    "lifetimeActions": [{"trigger": {"timeAfterCreate": "P30D"}, "action": {"type": "Rotate"}}],
    "attributes": {"expiryTime": "P90D"},
}


def _when(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# ---------------------------------------------------------------- create, versions, show


def test_create_twice_makes_two_versions(cli: Cli, key: Any) -> None:
    assert key["Name"] == KEY
    assert key["VaultName"] == CANONICAL
    assert re.fullmatch(r"[0-9a-f]{32}", key["Version"])
    assert key["Id"] == f"https://{CANONICAL}.vault.localhost:8443/keys/{KEY}/{key['Version']}"
    assert (key["KeyType"], key["KeySize"]) == ("RSA-HSM", 2048)
    assert key["KeyOps"] == ["wrapKey", "unwrapKey"]
    assert key["Enabled"] is True
    assert key["NotBefore"] is None and key["Expires"] is None
    assert key["RecoveryLevel"] == "Recoverable" and key["RecoverableDays"] == 90
    assert key["Exportable"] is False

    second = cli.create_key(VAULT, KEY, "--not-before", "2016-12-27T00:01:00")
    assert second["Version"] != key["Version"]
    assert second["NotBefore"] == "2016-12-27T00:01:00Z"  # no zone given: UTC

    versions = cli.json("key", "versions", VAULT, KEY)
    assert [v["Version"] for v in versions] == [key["Version"], second["Version"]]
    assert [v["NotBefore"] for v in versions] == [None, "2016-12-27T00:01:00Z"]
    table = cli.ok("key", "versions", VAULT, KEY).out
    assert key["Version"] in table and second["Version"] in table

    assert cli.json("key", "show", VAULT, KEY)["Version"] == second["Version"]  # the newest
    first = cli.json("key", "show", VAULT, KEY, "--version", key["Version"])
    assert first == key
    upper = cli.json("key", "show", VAULT, KEY.lower(), "--version", key["Version"].upper())
    assert upper["Version"] == key["Version"]

    listed = cli.json("key", "list", VAULT)
    assert [(k["Name"], k["Version"]) for k in listed] == [(KEY, second["Version"])]
    assert KEY in cli.ok("key", "list", VAULT).out


def test_create_with_every_option(cli: Cli, vault: Any) -> None:
    created = cli.json(
        "key",
        "create",
        VAULT,
        "soft-key",
        "--size",
        "3072",
        "--not-before",
        "2027-01-01",
        "--expires",
        "2028-06-30T12:00:00+02:00",
        "--disabled",
        "--tag",
        "owner=security",
        "--tag",
        "env = prod",
    )
    assert (created["KeyType"], created["KeySize"]) == ("RSA", 3072)
    assert created["KeyOps"] == ["encrypt", "decrypt", "sign", "verify", "wrapKey", "unwrapKey"]
    assert created["Enabled"] is False
    assert created["NotBefore"] == "2027-01-01T00:00:00Z"
    assert created["Expires"] == "2028-06-30T10:00:00Z"  # shown in UTC, as stored
    assert created["Tags"] == {"owner": "security", "env": "prod"}
    assert cli.json("key", "show", VAULT, "soft-key") == created


def test_show_unknown_key_or_version(cli: Cli, key: Any) -> None:
    cli.fail("key", "show", VAULT, "no-such-key", error="KeyNotFound")
    cli.fail("key", "show", VAULT, KEY, "--version", "0" * 32, error="KeyNotFound")
    assert "32 hex" in cli.fail("key", "show", VAULT, KEY, "--version", "v1", error="BadParameter")


# ---------------------------------------------------------------- update and rotate


def test_update_attributes(cli: Cli, key: Any) -> None:
    newest = cli.create_key()
    disabled = cli.json("key", "update", VAULT, KEY, "--disable")
    assert disabled["Version"] == newest["Version"] and disabled["Enabled"] is False
    assert _when(disabled["Updated"]) >= _when(newest["Updated"])
    assert cli.json("key", "update", VAULT, KEY, "--enable")["Enabled"] is True

    expires = cli.json("key", "update", VAULT, KEY, "--expires", "2030-01-01T00:00:00+02:00")
    assert expires["Expires"] == "2029-12-31T22:00:00Z"
    assert cli.json("key", "show", VAULT, KEY)["Expires"] == "2029-12-31T22:00:00Z"

    ops = cli.json("key", "update", VAULT, KEY, "--ops", "wrapKey")
    assert ops["KeyOps"] == ["wrapKey"]
    tagged = cli.json("key", "update", VAULT, KEY, "--tag", "dep=mail", "--tag", "tier=1")
    assert tagged["Tags"] == {"dep": "mail", "tier": "1"}
    assert tagged["KeyOps"] == ["wrapKey"] and tagged["Expires"] == "2029-12-31T22:00:00Z"

    # --version targets an older version and leaves the newest alone.
    old = cli.json("key", "update", VAULT, KEY, "--version", key["Version"], "--disable")
    assert old["Version"] == key["Version"] and old["Enabled"] is False
    shown = cli.json("key", "show", VAULT, KEY)
    assert shown["Enabled"] is True and shown["Tags"] == {"dep": "mail", "tier": "1"}
    first, second = cli.json("key", "versions", VAULT, KEY)
    assert (first["Enabled"], second["Enabled"]) == (False, True)


def test_update_bad_input_changes_nothing(cli: Cli, key: Any) -> None:
    before = cli.json("key", "show", VAULT, KEY)
    audit = cli.audit_count()
    cli.fail("key", "update", VAULT, KEY, "--expires", "next tuesday", error="BadParameter")
    cli.fail("key", "update", VAULT, KEY, "--ops", "wrapKey,fly", error="BadParameter")
    cli.fail("key", "update", VAULT, KEY, "--tag", "novalue", error="BadParameter")
    cli.json("key", "update", VAULT, KEY, "--not-before", "2027-01-01")
    message = cli.fail("key", "update", VAULT, KEY, "--expires", "2026-06-01", error="BadParameter")
    assert "after its not-before" in message
    after = cli.json("key", "show", VAULT, KEY)
    assert after["Expires"] is None and after["KeyOps"] == before["KeyOps"]
    assert after["NotBefore"] == "2027-01-01T00:00:00Z"
    assert cli.audit_count() == audit + 1  # only the one good update


def test_rotate_adds_a_version_like_the_newest(cli: Cli, key: Any) -> None:
    cli.json("key", "update", VAULT, KEY, "--tag", "dep=mail")
    rotated = cli.json("key", "rotate", VAULT, KEY)
    assert rotated["Version"] != key["Version"]
    assert (rotated["KeyType"], rotated["KeySize"], rotated["KeyOps"]) == (
        "RSA-HSM",
        2048,
        ["wrapKey", "unwrapKey"],
    )
    assert rotated["Tags"] == {"dep": "mail"} and rotated["Enabled"] is True
    assert cli.versions() == [key["Version"], rotated["Version"]]
    cli.fail("key", "rotate", VAULT, "no-such-key", error="KeyNotFound")


def test_rotation_policy_show_and_set(cli: Cli, key: Any, tmp_path: Path) -> None:
    empty = cli.json("key", "rotation-policy", VAULT, KEY)
    assert (empty["VaultName"], empty["KeyName"]) == (VAULT, KEY)
    assert empty["LifetimeActions"] == [] and empty["ExpiresIn"] is None

    set_ = cli.json("key", "rotation-policy", VAULT, KEY, "--set", json.dumps(POLICY))
    assert set_["LifetimeActions"] == [
        {"Action": "Rotate", "TimeAfterCreate": "P30D", "TimeBeforeExpiry": None}
    ]
    assert set_["ExpiresIn"] == "P90D"
    assert set_["CreatedOn"] and set_["UpdatedOn"]
    assert cli.json("key", "rotation-policy", VAULT, KEY) == set_
    assert "Rotate" in cli.ok("key", "rotation-policy", VAULT, KEY).out

    # The policy's expiry applies to the next version: created + 90 days.
    version = cli.json("key", "rotate", VAULT, KEY)
    assert _when(version["Expires"]) - _when(version["Created"]) == timedelta(days=90)

    path = tmp_path / "policy.json"
    notify = {
        "lifetimeActions": [
            {"trigger": {"timeBeforeExpiry": "P10D"}, "action": {"type": "Notify"}}
        ],
        "attributes": {"expiryTime": "P60D"},
    }
    path.write_text(json.dumps(notify))
    from_file = cli.json("key", "rotation-policy", VAULT, KEY, "--set", f"@{path}")
    assert from_file["LifetimeActions"] == [
        {"Action": "Notify", "TimeAfterCreate": None, "TimeBeforeExpiry": "P10D"}
    ]
    assert from_file["ExpiresIn"] == "P60D"
    assert from_file["CreatedOn"] == set_["CreatedOn"]


def test_rotation_policy_bad_input_changes_nothing(cli: Cli, key: Any, tmp_path: Path) -> None:
    cli.json("key", "rotation-policy", VAULT, KEY, "--set", json.dumps(POLICY))
    before = cli.json("key", "rotation-policy", VAULT, KEY)
    audit = cli.audit_count()
    assert "not valid JSON" in cli.fail(
        "key", "rotation-policy", VAULT, KEY, "--set", "{nope", error="BadParameter"
    )
    short = {"lifetimeActions": [], "attributes": {"expiryTime": "P1D"}}
    assert "28 days" in cli.fail(
        "key", "rotation-policy", VAULT, KEY, "--set", json.dumps(short), error="BadParameter"
    )
    missing = tmp_path / "missing.json"
    message = cli.fail(
        "key", "rotation-policy", VAULT, KEY, "--set", f"@{missing}", error="BadParameter"
    )
    assert str(missing) in message
    assert cli.json("key", "rotation-policy", VAULT, KEY) == before
    assert cli.audit_count() == audit


# ---------------------------------------------------------------- soft delete


def test_delete_list_deleted_recover(cli: Cli, key: Any) -> None:
    deleted = cli.json("key", "delete", "--yes", VAULT, KEY)
    assert deleted["Name"] == KEY
    assert deleted["RecoveryId"] == f"https://{CANONICAL}.vault.localhost:8443/deletedkeys/{KEY}"
    assert _when(deleted["ScheduledPurgeDate"]) - _when(deleted["DeletedDate"]) == timedelta(90)
    assert cli.key_names() == []
    listed = cli.json("key", "list", VAULT, "--deleted")
    assert [(k["Name"], k["ScheduledPurgeDate"]) for k in listed] == [
        (KEY, deleted["ScheduledPurgeDate"])
    ]
    assert "ScheduledPurgeDate" in cli.ok("key", "list", VAULT, "--deleted").out
    cli.fail("key", "show", VAULT, KEY, error="KeyNotFound")
    message = cli.fail("key", "create", VAULT, KEY, error="Conflict")
    assert "deleted but recoverable" in message

    recovered = cli.json("key", "recover", VAULT, KEY)
    assert recovered["Version"] == key["Version"]
    assert cli.key_names() == [KEY] and cli.key_names(deleted=True) == []
    cli.fail("key", "recover", VAULT, KEY, error="KeyNotFound")


def test_purge_refused_under_purge_protection(cli: Cli, key: Any) -> None:
    cli.fail("key", "purge", "--yes", VAULT, KEY, error="KeyNotFound")  # not deleted yet
    cli.json("key", "delete", "--yes", VAULT, KEY)
    message = cli.fail("key", "purge", "--yes", VAULT, KEY, error="Forbidden")
    assert "purge protection" in message
    assert cli.key_names(deleted=True) == [KEY]
    assert cli.json("key", "recover", VAULT, KEY)["Version"] == key["Version"]


def test_purge_without_purge_protection(cli: Cli, vault: Any) -> None:
    cli.create_vault(OTHER, "--retention-days", "7")
    cli.create_key(OTHER, "k1")
    deleted = cli.json("key", "delete", "--yes", OTHER, "k1")
    assert _when(deleted["ScheduledPurgeDate"]) - _when(deleted["DeletedDate"]) == timedelta(7)
    purged = cli.json("key", "purge", "--yes", OTHER, "k1")
    assert purged["Message"] == f"Key 'k1' purged from vault '{OTHER}'."
    assert cli.key_names(OTHER) == [] and cli.key_names(OTHER, deleted=True) == []
    # The name is free: a new key of that name starts over with one version.
    cli.create_key(OTHER, "k1")
    assert len(cli.versions(OTHER, "k1")) == 1


# ---------------------------------------------------------------- backup and restore


def test_backup_writes_a_private_file_and_never_overwrites(
    cli: Cli, key: Any, tmp_path: Path
) -> None:
    folder = tmp_path / "backups"
    folder.mkdir()
    out = folder / "Contoso-O365EX-NA-VaultA1-Key001-Backup-20170802.backup"
    result = cli.json("key", "backup", VAULT, KEY, "--out", str(out))
    assert result["File"] == str(out) and result["Bytes"] == out.stat().st_size > 0
    assert _mode(out) == 0o600
    assert out.read_bytes().startswith(b"CKBK")
    assert [p.name for p in folder.iterdir()] == [out.name]  # no temporary file left
    blob = out.read_bytes()

    audit = cli.audit_count()
    assert "--force" in cli.fail("key", "backup", VAULT, KEY, "--out", str(out))
    assert out.read_bytes() == blob and cli.audit_count() == audit

    os.chmod(out, 0o644)
    cli.create_key()  # a second version, so the new backup differs
    cli.ok("key", "backup", VAULT, KEY, "--out", str(out), "--force")
    assert out.read_bytes() != blob
    assert _mode(out) == 0o600
    assert [p.name for p in folder.iterdir()] == [out.name]


def test_backup_to_a_missing_folder_is_a_clear_error(cli: Cli, key: Any, tmp_path: Path) -> None:
    audit = cli.audit_count()
    message = cli.fail(
        "key",
        "backup",
        VAULT,
        KEY,
        "--out",
        str(tmp_path / "no" / "such.backup"),
        error="BadParameter",
    )
    assert "does not exist" in message
    cli.fail("key", "backup", VAULT, KEY, "--out", str(tmp_path), error="BadParameter")
    assert cli.audit_count() == audit  # no backup was taken


def test_restore_conflicts_then_works_after_purge(cli: Cli, vault: Any, tmp_path: Path) -> None:
    cli.create_vault(OTHER, "--retention-days", "7")
    first = cli.create_key(OTHER, KEY, "--tag", "dep=mail")
    second = cli.create_key(OTHER, KEY, "--not-before", "2016-12-27T00:01:00")
    cli.json("key", "rotation-policy", OTHER, KEY, "--set", json.dumps(POLICY))
    backup = tmp_path / "key.backup"
    cli.ok("key", "backup", OTHER, KEY, "--out", str(backup))
    versions = cli.json("key", "versions", OTHER, KEY)

    message = cli.fail("key", "restore", OTHER, "--in", str(backup), error="Conflict")
    assert "already exists" in message
    cli.json("key", "delete", "--yes", OTHER, KEY)
    assert "soft-deleted" in cli.fail("key", "restore", OTHER, "--in", str(backup))
    cli.json("key", "purge", "--yes", OTHER, KEY)

    restored = cli.json("key", "restore", OTHER, "--in", str(backup))
    assert (restored["Name"], restored["Version"]) == (KEY, second["Version"])
    again = cli.json("key", "versions", OTHER, KEY)
    assert [v["Version"] for v in again] == [first["Version"], second["Version"]]
    for before, after in zip(versions, again, strict=True):
        for prop in ("KeyType", "KeySize", "KeyOps", "Enabled", "NotBefore", "Tags", "Created"):
            assert after[prop] == before[prop], prop
    assert cli.json("key", "rotation-policy", OTHER, KEY)["ExpiresIn"] == "P90D"

    # Into another vault of the same subscription and geography, too.
    into_vault = cli.json("key", "restore", VAULT, "--in", str(backup))
    assert into_vault["VaultName"] == CANONICAL and into_vault["Version"] == second["Version"]
    assert into_vault["RecoveryLevel"] == "Recoverable"  # takes the target vault's settings


def test_restore_refuses_another_subscription_or_geography(
    cli: Cli, key: Any, tmp_path: Path
) -> None:
    backup = tmp_path / "key.backup"
    cli.ok("key", "backup", VAULT, KEY, "--out", str(backup))
    cli.create_vault("elsewhere-1", subscription="contoso-sub-2")
    cli.create_vault("elsewhere-2", region="westeurope")
    for other in ("elsewhere-1", "elsewhere-2"):
        message = cli.fail("key", "restore", other, "--in", str(backup), error="BadParameter")
        assert "subscription" in message and "geography" in message
        assert cli.key_names(other) == []


@pytest.mark.parametrize("damage", ["empty", "truncated-header", "truncated", "flipped", "tail"])
def test_restore_of_a_damaged_backup_changes_nothing(
    cli: Cli, key: Any, tmp_path: Path, damage: str
) -> None:
    backup = tmp_path / "key.backup"
    cli.ok("key", "backup", VAULT, KEY, "--out", str(backup))
    cli.create_vault(OTHER)
    blob = backup.read_bytes()
    damaged = {
        "empty": b"",
        "truncated-header": blob[:20],
        "truncated": blob[: len(blob) // 2],
        "flipped": blob[:400] + bytes([blob[400] ^ 0x01]) + blob[401:],
        "tail": blob[:-1],
    }[damage]
    bad = tmp_path / "damaged.backup"
    bad.write_bytes(damaged)
    audit = cli.audit_count()
    message = cli.fail("key", "restore", OTHER, "--in", str(bad), error="BadParameter")
    assert "corrupt, truncated" in message
    assert cli.key_names(OTHER) == [] and cli.key_names(OTHER, deleted=True) == []
    assert cli.audit_count() == audit
    # The intact file still restores.
    assert cli.json("key", "restore", OTHER, "--in", str(backup))["Name"] == KEY


def test_restore_of_a_backup_with_a_forged_header_time(cli: Cli, key: Any, tmp_path: Path) -> None:
    backup = tmp_path / "key.backup"
    cli.ok("key", "backup", VAULT, KEY, "--out", str(backup))
    cli.create_vault(OTHER)
    blob = backup.read_bytes()
    header_len = int.from_bytes(blob[5:7], "big")
    header = json.loads(blob[7 : 7 + header_len])
    header["created"] = 1e20
    forged = json.dumps(header).encode()
    bad = tmp_path / "forged.backup"
    bad.write_bytes(blob[:5] + len(forged).to_bytes(2, "big") + forged + blob[7 + header_len :])
    cli.fail("key", "restore", OTHER, "--in", str(bad), error="BadParameter")


def test_restore_of_a_missing_file(cli: Cli, vault: Any, tmp_path: Path) -> None:
    missing = tmp_path / "missing.backup"
    assert str(missing) in cli.fail("key", "restore", VAULT, "--in", str(missing))
    cli.fail("key", "restore", VAULT, code=2)  # --in is required


# ---------------------------------------------------------------- usage


def test_usage_lists_every_version(cli: Cli, key: Any) -> None:
    second = cli.create_key()
    usage = cli.json("key", "usage", VAULT, KEY)
    assert [(u["Version"], u["Sequence"]) for u in usage] == [
        (key["Version"], 1),
        (second["Version"], 2),
    ]
    assert all(u["Operations"] == 0 and u["Enabled"] is True for u in usage)
    assert "Operations" in cli.ok("key", "usage", VAULT, KEY).out


# ---------------------------------------------------------------- bad input changes nothing


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--not-before", "27/12/2016"], "--not-before '27/12/2016' is not an ISO 8601"),
        (["--expires", "soon"], "--expires 'soon' is not an ISO 8601"),
        (["--protection", "tpm"], "--protection must be 'hsm' or 'software'"),
        (["--size", "1024"], "1024 is not supported"),
        (["--ops", "wrapKey,teleport"], "'teleport' is not valid"),
        (["--tag", "novalue"], "name=value"),
        (["--not-before", "2027-01-02", "--expires", "2027-01-01"], "after its not-before"),
    ],
)
def test_key_create_bad_input(cli: Cli, key: Any, args: list[str], fragment: str) -> None:
    audit = cli.audit_count()
    message = cli.fail("key", "create", VAULT, KEY, *args, error="BadParameter")
    assert fragment in message
    assert cli.versions() == [key["Version"]]
    assert cli.audit_count() == audit


def test_key_create_bad_name(cli: Cli, vault: Any) -> None:
    cli.fail("key", "create", VAULT, "bad_name", error="BadParameter")
    assert cli.key_names() == []


def test_keys_in_a_deleted_or_unknown_vault(cli: Cli, key: Any) -> None:
    cli.json("vault", "delete", "--yes", VAULT)
    for args in (
        ["key", "create", VAULT, "k2"],
        ["key", "show", VAULT, KEY],
        ["key", "list", VAULT],
        ["key", "delete", "--yes", VAULT, KEY],
        ["key", "rotate", VAULT, KEY],
    ):
        assert "No vault named" in cli.fail(*args, error="VaultNotFound")
    cli.fail("key", "create", "no-such-vault", "k2", error="VaultNotFound")
    cli.json("vault", "recover", VAULT)
    assert cli.key_names() == [KEY]
    assert cli.versions() == [key["Version"]]
