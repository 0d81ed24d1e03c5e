"""The keyed audit chain and its signed checkpoints through the CLI entry point, attacked by
someone who can write the database but does not hold the master key: ``audit verify`` (with
``--checkpoint``), ``audit checkpoint`` to the file, syslog and webhook sinks, ``audit
public-key``, ``audit export``, and key operations failing closed while a sink cannot be
written."""

from __future__ import annotations

import base64
import json
import stat
from datetime import datetime
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from customerkey.audit.chain import ChainKey, canonical, record_hash
from tests.support.audit_attacks import cut_tail, rebuild_plain, udp_collector, webhook_server

if TYPE_CHECKING:
    from tests.cli.conftest import Cli

VAULT = "Contoso-O365EX-NA-VaultA1"
KEY = "Contoso-O365EX-NA-VaultA1-Key001"


def _db(home: Path) -> str:
    return f"sqlite:///{home / 'customerkey.db'}"


def _grow(cli: Cli, rotations: int = 2) -> None:
    for _ in range(rotations):
        cli.json("key", "rotate", VAULT, KEY)


def _checkpoint_file(home: Path) -> Path:
    return home / "audit-checkpoints.jsonl"


def _verify(cli: Cli, *extra: str) -> tuple[int, dict[str, Any]]:
    result = cli.run("--json", "audit", "verify", *extra)
    return result.code, json.loads(result.out)


def _public_key(cli: Cli) -> Ed25519PublicKey:
    pem = cli.ok("audit", "public-key").out.encode()
    key = serialization.load_pem_public_key(pem)
    assert isinstance(key, Ed25519PublicKey)
    return key


def _third_party_check(public: Ed25519PublicKey, checkpoint: dict[str, Any]) -> None:
    """Check a checkpoint as its module documents, with nothing of customerkey's."""
    body = {k: v for k, v in checkpoint.items() if k != "signature"}
    message = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    signature = checkpoint["signature"]
    public.verify(
        base64.urlsafe_b64decode(signature + "=" * (-len(signature) % 4)), message.encode()
    )


# ---------------------------------------------------------------- the keyed chain


@pytest.mark.parametrize("keep_version", [False, True], ids=["as-plain", "keyed-label"])
def test_an_edited_record_is_found_though_the_chain_was_rebuilt_with_sha256(
    cli: Cli, key: Any, home: Path, keep_version: bool
) -> None:
    _grow(cli)
    code, before = _verify(cli)
    assert code == 0 and before["Ok"] and before["KeyedFrom"] == 1 and before["Legacy"] == 0
    count = before["Records"]

    def forge(row: Any) -> None:
        row.principal = "mallory"

    # Every record from the edited one on is re-chained, so each links to the one before:
    # a plain-SHA-256 chain verified before the chain was keyed.
    rebuild_plain(_db(home), from_seq=count - 1, edit=forge, keep_chain_version=keep_version)
    code, after = _verify(cli)
    assert code == 1 and not after["Ok"]
    problems = " | ".join(after["Problems"])
    if keep_version:
        assert f"record {count - 1}: contents do not match its hash" in problems
    else:
        assert f"record {count - 1}: not keyed" in problems and "downgraded" in problems
    # The text form says so too, and exits 1.
    text = cli.run("audit", "verify")
    assert text.code == 1 and "Audit log damaged" in text.out


def test_a_checkpoint_finds_records_cut_off_the_end(cli: Cli, key: Any, home: Path) -> None:
    _grow(cli)
    checkpoint = cli.json("audit", "checkpoint")
    assert checkpoint["seq"] == cli.audit_count()
    cut_tail(_db(home), keep=checkpoint["seq"] - 2)
    # The chain that is left is whole: alone, it cannot tell that its end is missing.
    code, alone = _verify(cli)
    assert code == 0 and alone["Ok"]
    code, checked = _verify(cli, "--checkpoint", str(_checkpoint_file(home)))
    assert code == 1 and not checked["Ok"]
    assert any(
        f"ends at record {checkpoint['seq'] - 2}" in p and "cut off" in p
        for p in checked["Problems"]
    ), checked["Problems"]


def test_a_checkpoint_finds_a_chain_rewritten_whole_as_plain_sha256(
    cli: Cli, key: Any, home: Path
) -> None:
    _grow(cli, 1)
    first = cli.json("audit", "checkpoint")
    _grow(cli, 1)
    second = cli.json("audit", "checkpoint")
    code, ok = _verify(cli, "--checkpoint", str(_checkpoint_file(home)))
    assert code == 0 and ok["Ok"] and ok["CheckpointsMatched"] == 2, ok

    def forge(row: Any) -> None:
        row.principal = "mallory"

    # Turn every record back into a "legacy" one: the chain then looks as if never keyed.
    rebuild_plain(_db(home), from_seq=1, edit=forge)
    code, alone = _verify(cli)
    assert code == 0 and alone["Legacy"] == alone["Records"]
    code, checked = _verify(cli, "--checkpoint", str(_checkpoint_file(home)))
    assert code == 1
    for seq in (first["seq"], second["seq"]):
        assert any(f"record {seq}: its hash is not the head" in p for p in checked["Problems"])


def test_forged_and_foreign_checkpoints_are_refused(
    cli: Cli, key: Any, home: Path, tmp_path: Path
) -> None:
    genuine = cli.json("audit", "checkpoint")
    forged = tmp_path / "forged.jsonl"

    def refused(checkpoint: dict[str, Any]) -> str:
        forged.write_text(json.dumps(checkpoint) + "\n")
        return cli.fail("audit", "verify", "--checkpoint", str(forged), error="InvalidCheckpoint")

    # Altered after signing: a smaller count would excuse a cut tail.
    assert "not signed by this installation" in refused({**genuine, "seq": genuine["seq"] - 1})
    # Signed, but by a key of the attacker's, under our key id.
    body = {**genuine, "seq": 1, "head": "ab" * 32}
    del body["signature"]
    message = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
    signature = base64.urlsafe_b64encode(Ed25519PrivateKey.generate().sign(message)).rstrip(b"=")
    assert "not signed" in refused({**body, "signature": signature.decode()})
    # A genuine checkpoint of another installation.
    other = tmp_path / "other-home"
    cli.home, mine = other, cli.home
    try:
        cli.ok("init")
        foreign = cli.json("audit", "checkpoint")
    finally:
        cli.home = mine
    assert foreign["key_id"] != genuine["key_id"]
    refused(foreign)
    # Not a checkpoint at all.
    forged.write_text('{"seq": 1}\n')
    cli.fail("audit", "verify", "--checkpoint", str(forged), error="InvalidCheckpoint")


# ---------------------------------------------------------------- sinks


def test_checkpoints_reach_the_file_syslog_and_the_webhook(
    cli: Cli, key: Any, home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with udp_collector() as collector, webhook_server() as hook:
        port = collector.getsockname()[1]
        monkeypatch.setenv("CUSTOMERKEY_AUDIT_SYSLOG", f"udp://127.0.0.1:{port}")
        monkeypatch.setenv("CUSTOMERKEY_AUDIT_WEBHOOK_URL", hook.url)
        monkeypatch.setenv("CUSTOMERKEY_AUDIT_WEBHOOK_TOKEN", "s3cret-hook-token")
        checkpoint = cli.json("audit", "checkpoint")
        datagram, _ = collector.recvfrom(65536)
    public = _public_key(cli)
    _third_party_check(public, checkpoint)
    assert checkpoint["seq"] == cli.audit_count()
    # syslog: RFC 5424, facility auth (4) at severity info (6), the checkpoint as the message.
    line = datagram.decode()
    header, _, message = line.partition(" - ")
    pri_version, time, _host, app, _pid, msgid = header.split(" ")
    assert (pri_version, app, msgid) == ("<38>1", "customerkey", "checkpoint")
    assert time == checkpoint["time"]
    assert json.loads(message) == checkpoint
    # webhook: the same JSON, with the configured bearer token.
    assert hook.bodies == [checkpoint]
    assert hook.authorizations == ["Bearer s3cret-hook-token"]
    # file: one JSON line, private.
    path = _checkpoint_file(home)
    assert [json.loads(x) for x in path.read_text().splitlines()] == [checkpoint]
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


@pytest.mark.parametrize("sink", ["webhook", "file"])
def test_an_unwritable_sink_fails_key_operations_closed(
    cli: Cli, key: Any, home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sink: str
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with webhook_server(status=500) as hook:
        if sink == "webhook":
            monkeypatch.setenv("CUSTOMERKEY_AUDIT_WEBHOOK_URL", hook.url)
        else:  # a path under a regular file cannot be created, whoever we are
            monkeypatch.setenv("CUSTOMERKEY_AUDIT_CHECKPOINT_FILE", str(blocker / "cp.jsonl"))
        message = cli.fail("audit", "checkpoint", error="AuditSinkUnavailable")
        assert ("webhook" if sink == "webhook" else "file") in message
        versions = cli.versions()
        refused = cli.fail("key", "rotate", VAULT, KEY, error="AuditSinkUnavailable")
        assert "KeyRotate refused" in refused and "fail closed" in refused
        cli.fail("key", "create", VAULT, "another", error="AuditSinkUnavailable")
        assert cli.versions() == versions
        assert "another" not in cli.key_names()
        # Taking access away is never blocked by an audit outage.
        cli.create_principal("alice@contoso.com")
        cli.json(
            "vault",
            "access",
            "set",
            VAULT,
            "--upn",
            "alice@contoso.com",
            "--key-permissions",
            "get",
        )
        cli.json("vault", "access", "remove", VAULT, "--upn", "alice@contoso.com")
        # With fail-closed off, key operations go on.
        monkeypatch.setenv("CUSTOMERKEY_AUDIT_FAIL_CLOSED", "false")
        cli.json("key", "rotate", VAULT, KEY)
        monkeypatch.delenv("CUSTOMERKEY_AUDIT_FAIL_CLOSED")
        cli.fail("key", "rotate", VAULT, KEY, error="AuditSinkUnavailable")
        # Once a checkpoint reaches every sink, they are allowed again.
        hook.status = 204
        monkeypatch.delenv("CUSTOMERKEY_AUDIT_CHECKPOINT_FILE", raising=False)
        cli.json("audit", "checkpoint")
        cli.json("key", "rotate", VAULT, KEY)
    assert len(cli.versions()) == len(versions) + 2


# ---------------------------------------------------------------- export


def _parse_time(value: str) -> datetime:
    return datetime.fromisoformat(value)


def test_export_writes_json_lines_whose_hashes_recompute(
    cli: Cli, key: Any, home: Path, tmp_path: Path
) -> None:
    _grow(cli)
    out = cli.ok("audit", "export").out
    lines = [json.loads(line) for line in out.splitlines()]
    assert len(lines) == cli.audit_count() and [x["seq"] for x in lines] == list(
        range(1, len(lines) + 1)
    )
    shown = {r["Seq"]: r["Hash"] for r in cli.json("audit", "show", "--limit", "100000")}
    assert {x["seq"]: x["hash"] for x in lines} == shown
    # Every line holds what its hash covers: the chain recomputes from the export alone
    # (given the chain key, which only the master key's holder can derive).
    chain_key = ChainKey((home / "master.key").read_bytes())
    prev = "0" * 64
    for line in lines:
        record = SimpleNamespace(**{**line, "time": _parse_time(line["time"])})
        assert line["prev_hash"] == prev and line["chain"] == 1
        assert record_hash(record, prev, line["chain"], chain_key) == line["hash"]
        assert canonical(record, 1).decode().count('"chain":1') == 1
        prev = line["hash"]
    # --since, and --output (0600, the same lines).
    later = cli.ok("audit", "export", "--since", "3").out.splitlines()
    assert [json.loads(x)["seq"] for x in later] == list(range(4, len(lines) + 1))
    target = tmp_path / "audit.jsonl"
    cli.ok("audit", "export", "--output", str(target))
    assert target.read_text() == out
    assert stat.S_IMODE(target.stat().st_mode) == 0o600


def test_export_keeps_the_visibility_rules_of_show(cli: Cli, key: Any) -> None:
    cli.create_principal("alice@contoso.com")
    cli.json(
        "vault", "access", "set", VAULT, "--upn", "alice@contoso.com", "--key-permissions", "get"
    )
    seen = cli.json("audit", "show", "--limit", "100000", as_principal="alice@contoso.com")
    exported = cli.ok("audit", "export", as_principal="alice@contoso.com").out.splitlines()
    assert 0 < len(exported) < cli.audit_count()
    assert [json.loads(x)["seq"] for x in exported] == [r["Seq"] for r in seen]
