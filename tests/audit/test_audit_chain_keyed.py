"""The keyed audit chain across migration 0010, and the periodic checkpoint publisher driven by
an injected clock: records written before the upgrade stay plain and verify, every record
after is keyed and a later plain one is a downgrade; a checkpoint that cannot be written makes
key operations fail closed until one can (or only warns with fail-closed off)."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import JSON, BigInteger, DateTime, String, column, insert, table

from customerkey.audit.chain import GENESIS_HASH, PLAIN, canonical, plain_hash
from customerkey.audit.log import AuditChainKeyMissing, AuditLog
from customerkey.audit.sinks import AuditSinkUnavailable
from customerkey.clock import FrozenClock
from customerkey.config import Settings
from customerkey.rng import SystemRng
from customerkey.runtime import Runtime
from customerkey.storage.database import Database, alembic_config
from customerkey.vault.models import OPERATOR
from tests.support.audit_attacks import rebuild_plain

storage = pytest.mark.storage
VAULT = "chain-vault"
KEY = "chain-key"
# audit_records as migration 0009 left it: no ``chain`` column.
LEGACY_AUDIT = table(
    "audit_records",
    column("seq", BigInteger),
    column("time", DateTime(timezone=True)),
    column("principal", String),
    column("operation", String),
    column("result", String),
    column("vault", String),
    column("key", String),
    column("version", String),
    column("request_id", String),
    column("details", JSON),
    column("prev_hash", String),
    column("hash", String),
)


class _Legacy:
    """A record as the pre-0010 writer hashed it (no scope, plain SHA-256)."""

    def __init__(self, seq: int, time: datetime, operation: str) -> None:
        self.seq, self.time, self.operation = seq, time, operation
        self.principal, self.result = "operator", "success"
        self.vault = self.key = self.version = self.request_id = None
        self.tenant = self.vault_id = self.actor_id = self.subject_id = None
        self.details: dict[str, str] = {"n": str(seq)}


def _legacy_database(db_url: str, records: int) -> None:
    db = Database(db_url)
    try:
        with db.engine.begin() as connection:
            config = alembic_config(db_url)
            config.attributes["connection"] = connection
            command.upgrade(config, "0009")
        with db.engine.begin() as connection:
            prev = GENESIS_HASH
            for seq in range(1, records + 1):
                old = _Legacy(seq, datetime(2026, 1, 1, 0, 0, seq, tzinfo=UTC), "LegacyThing")
                digest = plain_hash(prev, canonical(old, PLAIN))
                connection.execute(
                    insert(LEGACY_AUDIT).values(
                        seq=seq,
                        time=old.time,
                        principal=old.principal,
                        operation=old.operation,
                        result=old.result,
                        details=old.details,
                        prev_hash=prev,
                        hash=digest,
                    )
                )
                prev = digest
    finally:
        db.dispose()


@storage
def test_records_from_before_the_upgrade_verify_and_new_ones_are_keyed(
    db_url: str, tmp_path: Path
) -> None:
    _legacy_database(db_url, 3)
    rt = Runtime.open(Settings(home=tmp_path / "home", database_url=db_url), rng=SystemRng())
    try:
        rt.tenants.create(OPERATOR, "contoso", mail_domain="contoso.com")
        result = rt.audit_log.verify(OPERATOR)
        assert result.ok, result.problems
        assert result.legacy == 3 and result.keyed_from == 4 and result.records > 4
        with rt.db.read() as session:
            records = rt.audit.records(session)
        assert [r.chain for r in records] == [0, 0, 0] + [1] * (len(records) - 3)
        # A writer without the chain key may not add a plain record after keyed ones.
        with pytest.raises(AuditChainKeyMissing), rt.db.transaction() as session:
            AuditLog(rt.clock).append(session, principal="x", operation="Plain")
        # Turning the newest keyed record into a plain one is a downgrade.
        rebuild_plain(db_url, from_seq=result.records)
        damaged = rt.audit_log.verify(OPERATOR)
        assert not damaged.ok
        assert f"record {result.records}: not keyed" in " ".join(damaged.problems)
    finally:
        rt.close()


def _runtime(tmp_path: Path, clock: FrozenClock, **settings: object) -> Runtime:
    values = {
        "home": tmp_path / "home",
        "database_url": f"sqlite:///{tmp_path / 'test.db'}",
        "audit_checkpoint_seconds": 60,
        **settings,
    }
    rt = Runtime.open(Settings(**values), clock=clock, rng=SystemRng())  # type: ignore[arg-type]
    rt.tenants.create(OPERATOR, "contoso", mail_domain="contoso.com")
    rt.vault.create_vault(OPERATOR, VAULT, subscription="s", region="eastus", tenant="contoso")
    rt.vault.create_key(OPERATOR, VAULT, KEY, kty="RSA", key_ops=["wrapKey"])
    return rt


def _wrap(rt: Runtime) -> None:
    rt.vault.wrap_key(OPERATOR, VAULT, KEY, None, "RSA-OAEP-256", b"k" * 32)


def test_the_periodic_checkpoint_fails_closed_then_recovers(tmp_path: Path) -> None:
    clock = FrozenClock()
    blocker = tmp_path / "sinks"
    blocker.write_text("")  # a file where the sink's folder should be: nothing can be made
    rt = _runtime(tmp_path, clock, audit_checkpoint_file=blocker / "checkpoints.jsonl")
    try:
        _wrap(rt)
        assert rt.checkpoints.tick() is None  # due at once, and failed
        with pytest.raises(AuditSinkUnavailable):
            _wrap(rt)
        blocker.unlink()
        blocker.mkdir()
        assert rt.checkpoints.tick() is None  # not due again before the interval
        with pytest.raises(AuditSinkUnavailable):
            _wrap(rt)
        clock.advance(60)
        published = rt.checkpoints.tick()
        assert published is not None
        _wrap(rt)
        lines = (blocker / "checkpoints.jsonl").read_text().splitlines()
        assert len(lines) == 1
        # Due again, but nothing was appended since... then something was.
        clock.advance(60)
        with rt.db.read() as session:
            grown = rt.audit.head(session)
        assert grown[0] > published.seq
        again = rt.checkpoints.tick()
        assert again is not None and (again.seq, again.head) == grown
        clock.advance(60)
        assert rt.checkpoints.tick() is None
        assert len((blocker / "checkpoints.jsonl").read_text().splitlines()) == 2
        # Interval 0: only on demand.
        rt.checkpoints.interval = None
        clock.advance(3600)
        _wrap(rt)
        assert rt.checkpoints.tick() is None
    finally:
        rt.close()


def test_with_fail_closed_off_a_failed_checkpoint_only_warns(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    clock = FrozenClock()
    blocker = tmp_path / "sinks"
    blocker.write_text("")
    rt = _runtime(
        tmp_path,
        clock,
        audit_checkpoint_file=blocker / "checkpoints.jsonl",
        audit_fail_closed=False,
    )
    try:
        with caplog.at_level(logging.WARNING, logger="customerkey.audit"):
            assert rt.checkpoints.tick() is None
        assert "key operations go on" in caplog.text
        _wrap(rt)
        # Another process of the installation with fail-closed on sees the failure.
        other = Runtime.open(
            Settings(home=tmp_path / "home", database_url=f"sqlite:///{tmp_path / 'test.db'}"),
            clock=clock,
        )
        try:
            with pytest.raises(AuditSinkUnavailable):
                other.vault.wrap_key(OPERATOR, VAULT, KEY, None, "RSA-OAEP-256", b"k" * 32)
        finally:
            other.close()
    finally:
        rt.close()


def test_a_checkpoint_from_another_process_lifts_the_refusal(tmp_path: Path) -> None:
    clock = FrozenClock()
    blocker = tmp_path / "sinks"
    blocker.write_text("")
    rt = _runtime(tmp_path, clock, audit_checkpoint_file=blocker / "checkpoints.jsonl")
    try:
        assert rt.checkpoints.tick() is None
        with pytest.raises(AuditSinkUnavailable):
            _wrap(rt)
        # The operator fixes the sink and publishes from the CLI (another process): the
        # server's process need not wait for its own next tick.
        other = Runtime.open(
            Settings(
                home=tmp_path / "home",
                database_url=f"sqlite:///{tmp_path / 'test.db'}",
                audit_checkpoint_file=tmp_path / "elsewhere.jsonl",
            ),
            clock=clock,
        )
        try:
            other.audit_log.checkpoint(OPERATOR)
        finally:
            other.close()
        _wrap(rt)
    finally:
        rt.close()
