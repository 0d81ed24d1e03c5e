"""``customerkey principal ...``, ``customerkey audit ...`` and ``customerkey tick`` through the
CLI entry point."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from customerkey.clock import FrozenClock
from customerkey.config import Settings
from customerkey.errors import Unauthorized
from customerkey.runtime import Runtime
from customerkey.vault.models import OPERATOR

if TYPE_CHECKING:
    from tests.cli.conftest import Cli

VAULT = "Contoso-O365EX-NA-VaultA1"
CANONICAL = VAULT.lower()
KEY = "Contoso-O365EX-NA-VaultA1-Key001"
ALICE = "alice@contoso.com"


@contextmanager
def _runtime(home: Path, clock: FrozenClock | None = None) -> Iterator[Runtime]:
    """The same installation through the Python API (the only way to move time)."""
    rt = Runtime.open(Settings(home=home), clock=clock)
    try:
        yield rt
    finally:
        rt.close()


# ---------------------------------------------------------------- principals


def test_principal_create_prints_a_working_secret_once(cli: Cli, home: Path) -> None:
    cli.ok("init")
    result = cli.ok("principal", "create", ALICE, "--tenant", "contoso")
    assert "ClientSecret" in result.out and "not shown again" in result.out
    created = cli.json(
        "principal", "create", "bob@contoso.com", "--tenant", "contoso", "--display-name", "Bob"
    )
    assert created["Id"] == "bob@contoso.com"
    assert (created["Kind"], created["Tenant"], created["DisplayName"]) == (
        "user",
        "contoso",
        "Bob",
    )
    assert created["HasSecret"] is True and created["BuiltIn"] is False
    secret = created["ClientSecret"]
    with _runtime(home) as rt:
        assert rt.principals.authenticate("bob@contoso.com", secret, tenant="contoso").id == (
            "bob@contoso.com"
        )
        with pytest.raises(Unauthorized):
            rt.principals.authenticate("bob@contoso.com", secret + "x", tenant="contoso")

    listed = cli.json("principal", "list")
    assert _own(listed) == [ALICE, "bob@contoso.com"]
    assert all("ClientSecret" not in p for p in listed)
    assert secret not in cli.ok("principal", "list").out
    assert secret not in (home / "customerkey.db").read_bytes().decode("latin-1")


def test_principal_kinds_roles_and_tenants(cli: Cli) -> None:
    cli.ok("init")
    app = cli.json("principal", "create", "mail-app", "--service", "--tenant", "fabrikam")
    assert app["Kind"] == "service" and app["Tenant"] == "fabrikam"
    admin = cli.json(
        "principal",
        "create",
        ALICE,
        "--tenant",
        "contoso",
        "--roles",
        "tenant-admin",
        "--no-secret",
    )
    assert admin["Roles"] == ["tenant-admin"]
    assert admin["HasSecret"] is False and "ClientSecret" not in admin
    assert _own(cli.json("principal", "list", "--tenant", "contoso")) == [ALICE]
    assert _own(cli.json("principal", "list", "--tenant", "fabrikam")) == ["mail-app"]
    assert "mail-app" in cli.ok("principal", "list").out


def test_principal_bad_input_changes_nothing(cli: Cli) -> None:
    cli.ok("init")
    cli.json("principal", "create", ALICE, "--tenant", "contoso")
    audit = cli.audit_count()
    cli.fail("principal", "create", ALICE.upper(), "--tenant", "contoso", error="Conflict")
    cli.fail("principal", "create", "not-an-upn", "--tenant", "contoso", error="BadParameter")
    cli.fail(
        "principal",
        "create",
        "bob@contoso.com",
        "--roles",
        "superuser",
        "--tenant",
        "contoso",
        error="BadParameter",
    )
    cli.fail("principal", "create", "bob@contoso.com", "--tenant", "bad tenant!")
    cli.fail("principal", "reset-secret", "nobody@contoso.com", error="PrincipalNotFound")
    cli.fail(
        "principal",
        "create",
        "bob@contoso.com",
        "--tenant",
        "contoso",
        as_principal=ALICE,
        error="Forbidden",
    )
    assert _own(cli.json("principal", "list")) == [ALICE]
    assert cli.audit_count() == audit


def test_principal_reset_secret(cli: Cli, home: Path) -> None:
    cli.ok("init")
    old = cli.json("principal", "create", ALICE, "--tenant", "contoso")["ClientSecret"]
    reset = cli.json("principal", "reset-secret", ALICE.upper())
    assert reset["Id"] == ALICE
    new = reset["ClientSecret"]
    assert new != old
    with _runtime(home) as rt:
        assert rt.principals.authenticate(ALICE, new, tenant="contoso").id == ALICE
        with pytest.raises(Unauthorized):
            rt.principals.authenticate(ALICE, old, tenant="contoso")
    assert "ClientSecret" in cli.ok("principal", "reset-secret", ALICE).out


# ---------------------------------------------------------------- audit


def test_audit_show_records_every_change(cli: Cli, key: Any) -> None:
    cli.json("key", "update", VAULT, KEY, "--disable")
    cli.json("principal", "create", ALICE, "--tenant", "contoso")
    everything = cli.json("audit", "show", "--limit", "1000")
    assert [r["Seq"] for r in everything] == list(range(1, len(everything) + 1))  # oldest first
    first = next(i for i, r in enumerate(everything) if r["Operation"] == "VaultPut")
    records = everything[first:]  # what init itself recorded (built-in principals) comes first
    ops = [r["Operation"] for r in records]
    assert ops == ["VaultPut", "KeyCreate", "KeyUpdate", "PrincipalCreate"]
    assert all(r["Principal"] == "operator" and r["Result"] == "success" for r in records)
    create = records[1]
    assert (create["Vault"], create["Key"], create["Version"]) == (CANONICAL, KEY, key["Version"])
    assert create["Details"]["kty"] == "RSA-HSM"
    assert len(create["Hash"]) == 64

    assert [r["Operation"] for r in cli.json("audit", "show", "--limit", "2")] == [
        "KeyUpdate",
        "PrincipalCreate",
    ]
    assert [r["Operation"] for r in cli.json("audit", "show", "--operation", "KeyCreate")] == [
        "KeyCreate"
    ]
    assert len(cli.json("audit", "show", "--vault", VAULT.upper())) == 3
    table = cli.ok("audit", "show").out
    assert "VaultPut" in table and "PrincipalCreate" in table
    cli.fail("audit", "show", "--limit", "0", code=2)
    # A principal with no role sees only the records about itself.
    own = cli.json("audit", "show", as_principal=ALICE)
    assert [(r["Operation"], r["Details"]["id"]) for r in own] == [("PrincipalCreate", ALICE)]


def test_audit_verify_detects_an_edited_record(cli: Cli, key: Any, home: Path) -> None:
    cli.json("key", "rotate", VAULT, KEY)
    count = cli.audit_count()
    assert count >= 3  # (init may record built-in principals too)
    intact = cli.ok("audit", "verify")
    assert intact.out.strip() == f"Audit log intact: {count} records, chain verified."
    verified = cli.json("audit", "verify")
    assert {k: verified[k] for k in ("Ok", "Records", "Problems")} == {
        "Ok": True,
        "Records": count,
        "Problems": [],
    }
    assert (verified["Legacy"], verified["KeyedFrom"]) == (0, 1)

    with sqlite3.connect(home / "customerkey.db") as conn:
        conn.execute("UPDATE audit_records SET principal='mallory' WHERE seq=2")
    broken = cli.run("audit", "verify")
    assert broken.code == 1
    assert "Audit log damaged" in broken.out and "record 2" in broken.out
    as_json = cli.run("--json", "audit", "verify")
    assert as_json.code == 1
    report = json.loads(as_json.out)
    assert report["Ok"] is False and report["Records"] == count
    assert report["Problems"] == ["record 2: contents do not match its hash"]


def test_audit_verify_detects_a_deleted_record(cli: Cli, key: Any, home: Path) -> None:
    cli.json("key", "rotate", VAULT, KEY)
    with sqlite3.connect(home / "customerkey.db") as conn:
        conn.execute("DELETE FROM audit_records WHERE seq=2")
    result = cli.run("audit", "verify")
    assert result.code == 1 and "record 3" in result.out


def test_audit_verify_is_for_the_operator(cli: Cli) -> None:
    cli.ok("init")
    cli.json("principal", "create", ALICE, "--tenant", "contoso")
    cli.fail("audit", "verify", as_principal=ALICE, error="Forbidden")


# ---------------------------------------------------------------- tick


def test_tick_with_nothing_due(cli: Cli, key: Any) -> None:
    assert cli.json("tick") == {
        "PurgedKeys": [],
        "PurgedVaults": [],
        "RotatedKeys": [],
        "NotifiedKeys": [],
    }
    assert "PurgedKeys" in cli.ok("tick").out
    assert cli.versions(VAULT, KEY) == [key["Version"]]


def test_tick_purges_released_objects_and_applies_rotation_policies(cli: Cli, home: Path) -> None:
    cli.ok("init")
    # Forty days ago, through the Python API with a frozen clock: the CLI's tick then runs on
    # the real clock and finds the retention over and the policies due.
    past = FrozenClock(datetime.now(UTC) - timedelta(days=40))
    with _runtime(home, past) as rt:
        for name in ("old-vault", "gone-vault", "rot-vault"):
            rt.vault.create_vault(
                OPERATOR, name, subscription="s", region="eastus", retention_days=7
            )
        rt.vault.create_key(OPERATOR, "old-vault", "old-key")
        rt.vault.create_key(OPERATOR, "old-vault", "kept-key")
        rt.vault.delete_key(OPERATOR, "old-vault", "old-key")
        rt.vault.delete_vault(OPERATOR, "gone-vault")
        rt.vault.create_key(OPERATOR, "rot-vault", "rot-key")
        rt.vault.set_rotation_policy(
            OPERATOR,
            "rot-vault",
            "rot-key",
            {
                "lifetimeActions": [
                    {"trigger": {"timeAfterCreate": "P30D"}, "action": {"type": "Rotate"}}
                ],
                "attributes": {"expiryTime": "P90D"},
            },
        )
        rt.vault.create_key(OPERATOR, "rot-vault", "notify-key")
        rt.vault.set_rotation_policy(
            OPERATOR,
            "rot-vault",
            "notify-key",
            {
                "lifetimeActions": [
                    {"trigger": {"timeBeforeExpiry": "P30D"}, "action": {"type": "Notify"}}
                ],
                "attributes": {"expiryTime": "P60D"},
            },
        )
        rt.vault.rotate_key(OPERATOR, "rot-vault", "notify-key")  # a version with an expiry
    scheduled = cli.json("key", "list", "old-vault", "--deleted")[0]["ScheduledPurgeDate"]
    assert datetime.fromisoformat(scheduled.replace("Z", "+00:00")) < datetime.now(UTC)

    report = cli.json("tick")
    assert report == {
        "PurgedKeys": ["old-vault/old-key"],
        "PurgedVaults": ["gone-vault"],
        "RotatedKeys": ["rot-vault/rot-key"],
        "NotifiedKeys": ["rot-vault/notify-key"],
    }
    assert cli.key_names("old-vault", deleted=True) == []
    assert cli.key_names("old-vault") == ["kept-key"]
    assert cli.vault_names(deleted=True) == []
    rotated = cli.json("key", "versions", "rot-vault", "rot-key")
    assert len(rotated) == 2
    newest = rotated[-1]
    assert _days(newest["Expires"], newest["Created"]) == 90
    assert len(cli.versions("rot-vault", "notify-key")) == 2  # notified, not rotated

    # A second pass finds nothing more to do; the log still verifies.
    assert cli.json("tick") == {
        "PurgedKeys": [],
        "PurgedVaults": [],
        "RotatedKeys": [],
        "NotifiedKeys": [],
    }
    purges = cli.json("audit", "show", "--operation", "KeyPurge")
    assert [(r["Key"], r["Details"]) for r in purges] == [
        ("old-key", {"reason": "retention ended"})
    ]
    assert cli.json("audit", "show", "--operation", "KeyNearExpiry")[0]["Key"] == "notify-key"
    assert cli.ok("audit", "verify").out.startswith("Audit log intact")


def _own(principals: list[dict[str, Any]]) -> list[str]:
    """Principal ids, without the built-in workload principals every installation has."""
    return [p["Id"] for p in principals if not p["BuiltIn"]]


def _days(later: str, earlier: str) -> float:
    delta = datetime.fromisoformat(later.replace("Z", "+00:00")) - datetime.fromisoformat(
        earlier.replace("Z", "+00:00")
    )
    return delta / timedelta(days=1)
