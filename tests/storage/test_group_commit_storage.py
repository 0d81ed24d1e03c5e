"""Group commit of crypto operations against a real database (SQLite, and PostgreSQL when
configured): concurrent operations share one transaction and one commit, every record of the
keyed audit chain follows the order they were written in, and a failed batch fails every
operation in it (none is counted or audited) while the next batch starts clean.

A batch is held open by wrapping the committer's ``run_batch`` with an Event, so which
operations share a batch is decided by the test, not by timing.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

import pytest
from sqlalchemy import event, func, select
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from customerkey.runtime import Runtime
from customerkey.storage.models import AuditRow, KeyVersionRow
from customerkey.storage.repositories import KeyRepository
from customerkey.vault.models import OPERATOR

pytestmark = pytest.mark.storage

VAULT = "group-commit-vault"


def _setup(rt: Runtime, *names: str) -> dict[str, tuple[str, bytes]]:
    rt.vault.create_vault(OPERATOR, VAULT, subscription="sub-1", region="eastus")
    made: dict[str, tuple[str, bytes]] = {}
    for name in names:
        bundle = rt.vault.create_key(OPERATOR, VAULT, name, kty="RSA", size=2048)
        wrapped = rt.vault.wrap_key(
            OPERATOR, VAULT, name, bundle.id.version, "RSA-OAEP-256", b"k" * 32
        ).value
        made[name] = (bundle.id.version, wrapped)
    return made


class HeldBatches:
    """Wraps the committer's ``run_batch``: the first batch waits for ``release``."""

    def __init__(self, rt: Runtime) -> None:
        group = rt.db._group
        self.group = group
        self.inner: Callable[[Sequence[Any]], None] = group._run_batch
        self.entered = threading.Event()
        self.release = threading.Event()
        self.sizes: list[int] = []
        self.held = False
        group._run_batch = self

    def __call__(self, units: Sequence[Any]) -> None:
        self.sizes.append(len(units))
        if not self.held:
            self.held = True
            self.entered.set()
            assert self.release.wait(60)
        self.inner(units)

    def wait_queued(self, n: int) -> None:
        for _ in range(6000):
            with self.group._lock:
                if len(self.group._queue) >= n:
                    return
            threading.Event().wait(0.005)  # polling for the callers to queue, bounded
        raise AssertionError(f"{n} operations never queued")


def _unwrap_in_thread(
    rt: Runtime, name: str, version: str, wrapped: bytes, rid: str, out: dict[str, object]
) -> threading.Thread:
    actor = replace(OPERATOR, request_id=rid)

    def run() -> None:
        try:
            out[rid] = rt.vault.unwrap_key(actor, VAULT, name, version, "RSA-OAEP-256", wrapped)
        except Exception as exc:
            out[rid] = exc

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def _audited(rt: Runtime) -> dict[str, str]:
    with rt.db.read() as session:
        rows = session.execute(
            select(AuditRow.request_id, AuditRow.operation).where(AuditRow.request_id.isnot(None))
        )
        return {rid: op for rid, op in rows}


def _count(rt: Runtime, version: str) -> int:
    with rt.db.read() as session:
        return int(
            session.scalar(
                select(KeyVersionRow.operation_count).where(KeyVersionRow.version == version)
            )
            or 0
        )


def test_operations_arriving_together_share_one_commit_in_chain_order(runtime: Runtime) -> None:
    rt = runtime
    (version, wrapped) = _setup(rt, "k1")["k1"]
    held = HeldBatches(rt)
    commits: list[int] = []

    def committed(_session: Session) -> None:
        commits.append(1)

    out: dict[str, object] = {}
    first = _unwrap_in_thread(rt, "k1", version, wrapped, "first", out)
    assert held.entered.wait(60)
    # Write transactions only (read() sessions commit too, and share no batch).
    event.listen(rt.db._sessions, "after_commit", committed)
    threads = [_unwrap_in_thread(rt, "k1", version, wrapped, f"r{i}", out) for i in range(1, 13)]
    held.wait_queued(12)
    assert out == {}  # the held batch has not committed: nobody has answered
    held.release.set()
    for thread in [first, *threads]:
        thread.join(60)
    event.remove(rt.db._sessions, "after_commit", committed)
    assert all(not isinstance(v, Exception) for v in out.values()), out
    assert held.sizes == [1, 12]
    assert len(commits) == 2  # the held batch, then the twelve together
    audited = _audited(rt)
    assert {f"r{i}" for i in range(1, 13)} | {"first"} <= set(audited)
    assert _count(rt, version) == 1 + 13  # the set-up wrap, then every unwrap
    result = rt.audit_log.verify(OPERATOR)
    assert result.ok, result.problems
    with rt.db.read() as session:
        seqs = list(session.scalars(select(AuditRow.seq).order_by(AuditRow.seq)))
    assert seqs == list(range(1, len(seqs) + 1))


def test_a_failed_batch_fails_every_operation_in_it_and_the_next_is_clean(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    rt = runtime
    keys = _setup(rt, "good", "poison")
    good_version, good_wrapped = keys["good"]
    poison_version, poison_wrapped = keys["poison"]
    with rt.db.read() as session:
        poison_id = session.scalar(
            select(KeyVersionRow.id).where(KeyVersionRow.version == poison_version)
        )
        records_before = int(session.scalar(select(func.count()).select_from(AuditRow)) or 0)
    original = KeyRepository.count_use

    def count_use(self: KeyRepository, version_row_id: str) -> None:
        if version_row_id == poison_id:
            raise OperationalError("UPDATE key_versions", {}, Exception("injected failure"))
        original(self, version_row_id)

    monkeypatch.setattr(KeyRepository, "count_use", count_use)
    held = HeldBatches(rt)
    out: dict[str, object] = {}
    first = _unwrap_in_thread(rt, "good", good_version, good_wrapped, "first", out)
    assert held.entered.wait(60)
    threads = [
        _unwrap_in_thread(rt, "good", good_version, good_wrapped, "g1", out),
        _unwrap_in_thread(rt, "poison", poison_version, poison_wrapped, "p1", out),
        _unwrap_in_thread(rt, "good", good_version, good_wrapped, "g2", out),
    ]
    held.wait_queued(3)
    held.release.set()
    for thread in [first, *threads]:
        thread.join(60)
    assert held.sizes == [1, 3]
    assert not isinstance(out["first"], Exception)
    for rid in ("g1", "p1", "g2"):
        assert isinstance(out[rid], OperationalError), (rid, out[rid])
    audited = _audited(rt)
    assert "first" in audited and not {"g1", "p1", "g2"} & set(audited)
    assert _count(rt, good_version) == 2  # the set-up wrap and "first"
    # The next batch starts on a clean transaction.
    rt.vault.unwrap_key(
        replace(OPERATOR, request_id="after"),
        VAULT,
        "good",
        good_version,
        "RSA-OAEP-256",
        good_wrapped,
    )
    assert "after" in _audited(rt)
    assert _count(rt, good_version) == 3
    with rt.db.read() as session:
        records = int(session.scalar(select(func.count()).select_from(AuditRow)) or 0)
    assert records == records_before + 2
    result = rt.audit_log.verify(OPERATOR)
    assert result.ok, result.problems


def test_appends_in_one_transaction_chain_onto_each_other(runtime: Runtime) -> None:
    rt = runtime
    _setup(rt, "k1")

    def many(session: Session) -> None:
        for n in range(5):
            rt.audit.append(session, principal="p", operation="Op", request_id=f"m{n}")

    with rt.db.transaction() as session:
        many(session)
    rt.db.commit_together(many)
    result = rt.audit_log.verify(OPERATOR)
    assert result.ok, result.problems
    assert {f"m{n}" for n in range(5)} <= set(_audited(rt))
