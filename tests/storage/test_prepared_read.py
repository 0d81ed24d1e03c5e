"""``PreparedRead`` (``Database.first``) against a real database (SQLite, and PostgreSQL when
configured): it gives back what the ORM gives back for the same row (datetimes, JSON, booleans,
bytes), binds the statement's own literals, sees a change committed a moment before (nothing
is cached but the compiled statement), and returns its connection to the pool clean."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import bindparam, select, update

from customerkey.clock import FrozenClock
from customerkey.runtime import Runtime
from customerkey.storage.models import KeyVersionRow
from customerkey.storage.prepared_read import PreparedRead
from customerkey.vault.models import OPERATOR

pytestmark = pytest.mark.storage

_VERSIONS = KeyVersionRow.__table__.c
_COLUMNS = (
    _VERSIONS.id,
    _VERSIONS.enabled,
    _VERSIONS.not_before,
    _VERSIONS.expires,
    _VERSIONS.key_ops,
    _VERSIONS.public_tag,
    _VERSIONS.key_size,
    _VERSIONS.crv,
)
BY_VERSION = PreparedRead(select(*_COLUMNS).where(_VERSIONS.version == bindparam("version")))
# ORDER BY and a LIMIT the statement binds itself, besides the caller's parameter.
NEWEST = PreparedRead(
    select(*_COLUMNS)
    .where(_VERSIONS.key_id == bindparam("key_id"))
    .order_by(_VERSIONS.seq.desc())
    .limit(1)
)


def _orm_values(rt: Runtime, version: str) -> tuple[object, ...]:
    with rt.db.read() as session:
        row = session.scalars(select(KeyVersionRow).where(KeyVersionRow.version == version)).one()
        return tuple(getattr(row, column.key) for column in _COLUMNS)


def test_values_come_back_as_the_orm_gives_them(runtime: Runtime, clock: FrozenClock) -> None:
    runtime.vault.create_vault(OPERATOR, "prepared", subscription="sub-1", region="eastus")
    bundle = runtime.vault.create_key(
        OPERATOR,
        "prepared",
        "k",
        kty="RSA",
        size=2048,
        key_ops=["wrapKey", "unwrapKey"],
        not_before=clock.now() - timedelta(days=1),
        expires=clock.now() + timedelta(days=30),
    )
    got = runtime.db.first(BY_VERSION, {"version": bundle.id.version})
    assert got is not None
    expected = _orm_values(runtime, bundle.id.version)
    assert got == expected
    # The types too, not just equality (1 == True, and a naive datetime would not compare).
    assert [type(value) for value in got] == [type(value) for value in expected]
    assert got[1] is True and got[4] == ["wrapKey", "unwrapKey"]
    assert got[2] is not None and got[2].tzinfo is not None
    assert isinstance(got[5], bytes) and got[6] == 2048 and got[7] is None


def test_the_statements_own_literals_are_bound(runtime: Runtime) -> None:
    runtime.vault.create_vault(OPERATOR, "prepared", subscription="sub-1", region="eastus")
    first = runtime.vault.create_key(OPERATOR, "prepared", "k", kty="RSA", size=2048)
    second = runtime.vault.rotate_key(OPERATOR, "prepared", "k")
    by_version = runtime.db.first(BY_VERSION, {"version": first.id.version})
    assert by_version is not None
    with runtime.db.read() as session:
        key_id = session.scalars(
            select(KeyVersionRow.key_id).where(KeyVersionRow.version == first.id.version)
        ).one()
    newest = runtime.db.first(NEWEST, {"key_id": key_id})
    assert newest == _orm_values(runtime, second.id.version)
    assert runtime.db.first(BY_VERSION, {"version": "0" * 32}) is None


def test_a_committed_change_is_seen_by_the_next_read(runtime: Runtime) -> None:
    runtime.vault.create_vault(OPERATOR, "prepared", subscription="sub-1", region="eastus")
    bundle = runtime.vault.create_key(OPERATOR, "prepared", "k", kty="RSA", size=2048)
    params = {"version": bundle.id.version}
    before = runtime.db.first(BY_VERSION, params)
    assert before is not None and before[1] is True
    with runtime.db.transaction() as session:
        session.execute(
            update(KeyVersionRow)
            .where(KeyVersionRow.version == bundle.id.version)
            .values(enabled=False, key_size=4096)
        )
    after = runtime.db.first(BY_VERSION, params)
    assert after is not None and after[1] is False and after[6] == 4096


def test_the_connection_goes_back_to_the_pool_with_nothing_open(runtime: Runtime) -> None:
    runtime.vault.create_vault(OPERATOR, "prepared", subscription="sub-1", region="eastus")
    bundle = runtime.vault.create_key(OPERATOR, "prepared", "k", kty="RSA", size=2048)
    for _ in range(3):
        assert runtime.db.first(BY_VERSION, {"version": bundle.id.version}) is not None
    pool = runtime.db.engine.pool
    assert pool.checkedout() == 0  # type: ignore[attr-defined]
    # Nothing was left open on a pooled connection: a write transaction gets in at once.
    runtime.vault.update_key(OPERATOR, "prepared", "k", bundle.id.version, enabled=False)
    after = runtime.db.first(BY_VERSION, {"version": bundle.id.version})
    assert after is not None and after[1] is False
