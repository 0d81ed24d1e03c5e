"""Destructive commands ask first, and refuse to take away a root key data still depends on.

Every delete, purge and purge approval asks the user to type the name of what goes, ``--yes``
skips that for scripts, and without a terminal (or with ``--json``) a missing ``--yes`` is
refused at once with nothing changed. ``vault delete`` refuses like ``key delete`` while a key
protects data, and the advice of both names what really still depends: after a refresh it no
longer sends the admin back to refresh (the loop this file was written for), and following it
frees the key.
"""

from __future__ import annotations

import io
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from customerkey.identity.workload_principals import EXCHANGE
from tests.support.mailfixtures import write_mbox

if TYPE_CHECKING:
    from tests.cli.conftest import Cli

TENANT = "contoso"
VAULT_A, VAULT_B, KEY = "contoso-va", "contoso-vb", "root"
DEP = "NA-DEP"
MAILBOX = "dana@contoso.com"
NEEDS_YES = "is destructive; pass --yes to confirm."


@contextmanager
def terminal(typed: str) -> Iterator[None]:
    """stdin is a real terminal (a pty) on which ``typed`` has been typed."""
    controller, device = os.openpty()
    os.write(controller, typed.encode())
    before = sys.stdin
    with open(device, encoding="utf-8") as stdin:
        sys.stdin = stdin
        try:
            yield
        finally:
            sys.stdin = before
            os.close(controller)


@pytest.fixture(autouse=True)
def no_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    """What a script or CI gives a command: stdin that is not a terminal."""
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))


@pytest.fixture
def contoso(cli: Cli) -> Any:
    """Two vaults with a root key each, a DEP on both and a mailbox under it."""
    cli.ok("init")
    cli.ok("tenant", "create", TENANT, "--mail-domain", "contoso.com")
    for vault in (VAULT_A, VAULT_B):
        cli.create_vault(vault)
        cli.create_key(vault, KEY)
        cli.ok(
            "vault", "access", "set", vault, "--spn", EXCHANGE.app_id,
            "--key-permissions", "wrapKey,unwrapKey,get",
        )  # fmt: skip
    keys = [f"https://{v}.vault.azure.net/keys/{KEY}" for v in (VAULT_A, VAULT_B)]
    cli.ok("dep", "create", DEP, "--tenant", TENANT, "--key", keys[0], "--key", keys[1])
    cli.ok("mailbox", "create", MAILBOX, "--dep", DEP)
    return cli


def _refused(cli: Cli, *args: str, code: str = "BadParameter") -> str:
    return cli.fail(*args, error=code)


def test_without_yes_and_without_a_terminal_nothing_is_destroyed(cli: Cli) -> None:
    cli.ok("init")
    cli.create_vault("scratch-vault")
    cli.create_key("scratch-vault", "k1")
    cli.create_principal("eve@contoso.com")
    audit = cli.audit_count()

    for args, what in (
        (("vault", "delete", "scratch-vault"), "Deleting vault 'scratch-vault'"),
        (("key", "delete", "scratch-vault", "k1"), "Deleting key 'k1'"),
        (("principal", "delete", "eve@contoso.com"), "Deleting principal"),
    ):
        message = _refused(cli, *args)
        assert what in message and message.endswith(NEEDS_YES), message
    # --json is for programs: refused without --yes even when there is a terminal to ask on
    with terminal("scratch-vault\n"):
        result = cli.run("--json", "vault", "delete", "scratch-vault")
    assert result.code == 1 and f'{NEEDS_YES}"' in result.out + result.err, result
    assert cli.vault_names() == ["scratch-vault"]
    assert cli.key_names("scratch-vault") == ["k1"]
    assert cli.audit_count() == audit

    # the purges of what is soft-deleted ask too
    cli.json("key", "delete", "scratch-vault", "k1", "--yes")
    assert _refused(cli, "key", "purge", "scratch-vault", "k1").endswith(NEEDS_YES)
    assert cli.key_names("scratch-vault", deleted=True) == ["k1"]
    cli.json("vault", "delete", "scratch-vault", "--yes")
    assert _refused(cli, "vault", "purge", "scratch-vault").endswith(NEEDS_YES)
    assert cli.vault_names(deleted=True) == ["scratch-vault"]
    cli.json("vault", "purge", "scratch-vault", "--yes")
    assert cli.vault_names(deleted=True) == []


def test_deleting_a_mail_item_asks_first(cli: Cli, tmp_path: Path) -> None:
    cli.ok("init")
    cli.ok("tenant", "create", TENANT, "--mail-domain", "contoso.com")
    cli.ok("mailbox", "create", MAILBOX)
    write_mbox(tmp_path / "in.mbox", 2)
    cli.json("mailbox", "import", MAILBOX, str(tmp_path / "in.mbox"))

    message = _refused(cli, "mailbox", "delete-item", MAILBOX, "1")
    assert f"Deleting item 1 of {MAILBOX} {NEEDS_YES}" in message
    assert cli.json("mailbox", "stats", MAILBOX)["ItemCount"] == 2
    with terminal("2\n"):  # the wrong item typed: cancelled
        result = cli.run("mailbox", "delete-item", MAILBOX, "1")
    assert result.code == 1 and "cancelled: '1' was not typed" in result.err, result
    assert cli.json("mailbox", "stats", MAILBOX)["ItemCount"] == 2
    with terminal("1\n"):
        result = cli.run("mailbox", "delete-item", MAILBOX, "1")
    assert result.code == 0, result
    assert cli.json("mailbox", "stats", MAILBOX)["ItemCount"] == 1


def test_typing_the_name_confirms_anything_else_cancels(cli: Cli) -> None:
    cli.ok("init")
    cli.create_vault("scratch-vault")
    cli.create_key("scratch-vault", "k1")

    for typed in ("y\n", "\n", "k2\n", "\x04"):  # a habit, Enter, a wrong name, Ctrl-D
        with terminal(typed):
            result = cli.run("key", "delete", "scratch-vault", "k1")
        assert result.code == 1, result
        assert "Type 'k1' to confirm" in result.err
        assert "cancelled: 'k1' was not typed; nothing changed." in result.err
        assert cli.key_names("scratch-vault") == ["k1"]

    with terminal("K1\n"):  # names are case-insensitive
        result = cli.run("key", "delete", "scratch-vault", "k1")
    assert result.code == 0, result
    assert "every version stops working at once" in result.err
    assert cli.key_names("scratch-vault") == [] and cli.key_names("scratch-vault", deleted=True)

    with terminal("scratch-vault\n"):
        result = cli.run("vault", "delete", "scratch-vault")
    assert result.code == 0, result
    assert cli.vault_names() == [] and cli.vault_names(deleted=True) == ["scratch-vault"]


def test_vault_delete_is_refused_while_a_key_of_it_protects_data(contoso: Cli) -> None:
    cli = contoso
    message = _refused(cli, "vault", "delete", VAULT_B, "--yes", code="Conflict")
    assert message.startswith(f"Error (Conflict): Vault '{VAULT_B}' still protects data: ")
    assert f"DEP '{DEP}' of tenant {TENANT} keeps 1 mailbox(es)" in message
    assert f"under key {KEY} of vault {VAULT_B}" in message
    assert "--force" in message
    assert cli.vault_names() == [VAULT_A, VAULT_B]

    # once the mailbox is on other keys nothing depends on the vault: it can go
    cli.json("mailbox", "set", MAILBOX, "--dep", "none")
    cli.json("vault", "delete", VAULT_B, "--yes")
    assert cli.vault_names(deleted=True) == [VAULT_B]


def test_vault_delete_with_force_deletes_and_audits_what_it_protected(contoso: Cli) -> None:
    cli = contoso
    assert _refused(cli, "vault", "delete", VAULT_A, "--force").endswith(NEEDS_YES)
    cli.json("vault", "delete", VAULT_A, "--force", "--yes")
    assert cli.vault_names() == [VAULT_B]
    record = cli.json("audit", "show", "--operation", "VaultDelete")[-1]
    assert record["Details"]["forced"] is True
    assert f"DEP '{DEP}'" in record["Details"]["protected"]


def test_key_delete_advice_after_a_refresh_names_what_still_depends(contoso: Cli) -> None:
    cli = contoso
    first = cli.versions(VAULT_A, KEY)[0]
    cli.json("key", "rotate", VAULT_A, KEY)
    newest = cli.versions(VAULT_A, KEY)[-1]
    cli.json("dep", "refresh", DEP, "--tenant", TENANT)

    # The old version is free now; the key is not, and a refresh is no longer the advice.
    message = _refused(cli, "key", "delete", VAULT_A, KEY, "--yes", code="Conflict")
    assert f"version(s) {newest})" in message and first not in message
    assert f"keeps 1 mailbox(es) and 0 item(s) under key {KEY}" in message
    assert "A refresh does not free a key" in message
    assert "Refresh the policy onto a newer version" not in message
    assert f"'customerkey dep refresh {DEP}" not in message
    assert "'customerkey mailbox set UPN --dep OTHER-DEP'" in message
    assert f"'customerkey dep purge-request {DEP} --tenant {TENANT}'" in message
    assert cli.key_names(VAULT_A) == [KEY]

    # Disabling: the old version may go; the newest needs a new version and a refresh first.
    cli.json("key", "update", VAULT_A, KEY, "--version", first, "--disable")
    newest_refused = _refused(cli, "key", "update", VAULT_A, KEY, "--disable", code="Conflict")
    assert f"version {newest} is the newest of key {KEY}" in newest_refused
    assert f"'customerkey key rotate {VAULT_A} {KEY}'" in newest_refused
    assert f"then refresh DEP '{DEP}'" in newest_refused

    # Following the advice frees the key: no loop.
    cli.json("mailbox", "set", MAILBOX, "--dep", "none")
    cli.json("key", "delete", VAULT_A, KEY, "--yes")
    assert cli.key_names(VAULT_A, deleted=True) == [KEY]
