"""Revocation everywhere: a grant removed through any front end clears the DEP-key cache of
every running process on the same database within a poll interval (``storage/revocations.py``).

Through a real ``customerkey serve`` (SQLite, and PostgreSQL when configured): a mailbox item is
read through the admin API (which unwraps the DEP key into the server's cache), the Exchange
principal's grants are removed by the CLI in a process of its own, and reads are refused soon
after, long before the cache TTL (15 minutes). With ``--workers 2`` both processes are warmed
(each unwraps once: counted in the audit log), a revocation made through the admin API, which
reaches one worker, and then one made by the CLI are each refused by every fresh connection.

In-process, on both databases: every narrowing change writes one row in its own transaction
(a refused change and a rolled-back one write none); a relay starts at the log's end, hands
each later row over once and in order, never skips a row committed late behind a higher one,
survives a database error, and prunes rows older than an hour on its injected clock; numbers
are never reused after pruning; a change made by a second runtime (another process) empties
the first one's cache; a job worker holds the relay while it runs.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import create_engine, event, func, select, text
from sqlalchemy.orm import Session

from customerkey.clock import FrozenClock
from customerkey.config import Settings
from customerkey.errors import Forbidden, KeyAccessDenied
from customerkey.identity.workload_principals import EXCHANGE
from customerkey.runtime import Runtime
from customerkey.storage import revocations
from customerkey.storage.database import Database, normalize_url
from customerkey.storage.models import AuditRow, RevocationRow
from customerkey.storage.revocations import Revocation, RevocationRelay
from customerkey.vault.models import OPERATOR, Actor
from tests.support.live_servers import LiveServer, start_server
from tests.support.mailfixtures import (
    GRANT,
    KEY_A,
    TENANT,
    VAULT_A,
    VAULT_B,
    setup_policy,
    setup_tenant_and_keys,
)
from tests.support.servers import clean_env

pytestmark = pytest.mark.storage

MAILBOX = "alice@contoso.com"
ADMIN = "admin@contoso.com"
BODY = b"the body only a granted service may read"
# Far below the cache TTL (900 s): a read still answered after this proves the cache was
# not told. The relay's promise is one poll interval (0.25 s) plus a query.
DEADLINE_SECONDS = 30.0


# ---------------------------------------------------------------- through a real server


@dataclass
class Prepared:
    home: Path
    env: dict[str, str]
    item_id: str
    admin_secret: str


def _prepare(tmp_path: Path, db_url: str) -> Prepared:
    """A home folder on ``db_url`` with two vaults granted to Exchange, a DEP, a mailbox
    under it holding one item, and a tenant admin who may read it."""
    home = tmp_path / "home"
    rt = Runtime.open(Settings(home=home, database_url=db_url))
    try:
        setup_policy(rt)
        rt.mail.create_mailbox(OPERATOR, TENANT, MAILBOX, policy="NA-DEP")
        item = rt.mail.add_message(OPERATOR, MAILBOX, b"Subject: s\n\n" + BODY)
        _, secret = rt.principals.create(
            OPERATOR, ADMIN, kind="user", tenant=TENANT, roles=["tenant-admin"]
        )
    finally:
        rt.close()
    assert secret is not None
    return Prepared(home, {"CUSTOMERKEY_DATABASE_URL": db_url}, item.id, secret)


def _serve(prepared: Prepared, *args: str) -> LiveServer:
    server = start_server(prepared.home, env=prepared.env, args=args)
    server.admin_secret = prepared.admin_secret
    return server


def _cli(prepared: Prepared, *args: str) -> None:
    """The CLI in a process of its own, on the same home folder and database."""
    result = subprocess.run(
        [sys.executable, "-m", "customerkey.cli.main", "--home", str(prepared.home), *args],
        capture_output=True,
        text=True,
        env={**clean_env(), **prepared.env},
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, f"customerkey {' '.join(args)}:\n{result.stderr}"


def _revoke_with_cli(prepared: Prepared) -> None:
    for vault in (VAULT_A, VAULT_B):
        _cli(prepared, "vault", "access", "remove", vault, "--spn", EXCHANGE.app_id)


def _grant_with_cli(prepared: Prepared) -> None:
    for vault in (VAULT_A, VAULT_B):
        _cli(
            prepared,
            "vault",
            "access",
            "set",
            vault,
            "--spn",
            EXCHANGE.app_id,
            "--key-permissions",
            ",".join(GRANT),
        )


def _reader(server: LiveServer, item_id: str, *, fresh: bool) -> Callable[[], bool]:
    """A read of the item through the admin API: True when answered, False when refused
    because the root keys refuse the service (anything else fails the test). ``fresh``: a
    new connection each time, which either worker process may accept."""
    url = f"{server.url}/api/v1/mailboxes/{MAILBOX}/items/{item_id}"

    def read() -> bool:
        headers = {"Authorization": f"Bearer {server.admin_token}"}
        if fresh:
            response = httpx.get(url, headers=headers, verify=server.ssl_context(), timeout=30)
        else:
            response = server.http.get(url, headers=headers)
        if response.status_code == 200:
            assert response.content.endswith(BODY)
            return True
        assert response.status_code == 403, response.text
        assert response.json()["error"]["code"] == "KeyAccessDenied", response.text
        return False

    return read


def _refused_within_deadline(read: Callable[[], bool], *, streak: int) -> float:
    """Read until ``streak`` reads in a row are refused; returns the seconds until the first
    read of that streak. Fails if reads are still answered at the deadline."""
    began = time.monotonic()
    first_refusal: float | None = None
    refused = 0
    while refused < streak:
        assert time.monotonic() - began < DEADLINE_SECONDS, (
            f"reads still answered {DEADLINE_SECONDS:.0f} s after the revocation: the running "
            "server's DEP-key cache was not told"
        )
        if read():
            refused, first_refusal = 0, None
            time.sleep(0.02)  # polling the server until the revocation reaches it
        else:
            if first_refusal is None:
                first_refusal = time.monotonic() - began
            refused += 1
    assert first_refusal is not None
    return first_refusal


def _unwraps(db_url: str) -> int:
    """KeyUnwrap operations audited so far: one per DEP-key cache miss of any process."""
    db = Database(db_url)
    try:
        with db.read() as session:
            return int(
                session.scalar(
                    select(func.count())
                    .select_from(AuditRow)
                    .where(AuditRow.operation == "KeyUnwrap", AuditRow.result == "success")
                )
                or 0
            )
    finally:
        db.dispose()


def _warm_every_worker(read: Callable[[], bool], db_url: str, workers: int) -> None:
    """Fresh connections until each worker process has unwrapped the DEP key once (each
    one's first read is a cache miss, every later one a hit)."""
    before = _unwraps(db_url)
    for _ in range(400):
        assert read()
        if _unwraps(db_url) - before >= workers:
            return
    raise AssertionError("400 fresh connections did not reach every worker")


def _stop(server: LiveServer) -> None:
    status = server.stop()
    bugs = server.bugs()
    assert status == 0, server.log()[-3000:]
    assert not bugs, "\n".join(bugs)


@pytest.mark.slow
def test_a_grant_removed_by_the_cli_ends_reads_in_a_running_server(
    tmp_path: Path, db_url: str
) -> None:
    prepared = _prepare(tmp_path, db_url)
    server = _serve(prepared)
    try:
        read = _reader(server, prepared.item_id, fresh=False)
        assert read()  # the DEP key is now in the server's cache
        assert read()
        _revoke_with_cli(prepared)
        revoked_at = time.monotonic()
        delay = _refused_within_deadline(read, streak=3)
        print(f"\nCLI revocation refused by the server {delay:.3f} s after the CLI exited")
        assert time.monotonic() - revoked_at < DEADLINE_SECONDS
        # Granting again works as before (the log does not wedge anything).
        _grant_with_cli(prepared)
        assert read()
    finally:
        _stop(server)


@pytest.mark.slow
def test_a_revocation_reaches_every_worker_process(tmp_path: Path, db_url: str) -> None:
    prepared = _prepare(tmp_path, db_url)
    server = _serve(prepared, "--workers", "2")
    try:
        read = _reader(server, prepared.item_id, fresh=True)
        _warm_every_worker(read, db_url, workers=2)
        # Through the admin API: one worker makes the change, the other must hear of it.
        for vault in (VAULT_A, VAULT_B):
            view = server.admin("GET", f"/vaults/{vault}").json()
            (policy,) = view["AccessPolicies"]
            removed = server.admin("DELETE", f"/vaults/{vault}/accessPolicies/{policy['ObjectId']}")
            assert removed.status_code == 200, removed.text
        delay = _refused_within_deadline(read, streak=16)
        print(f"\nAPI revocation refused by both workers {delay:.3f} s after the request")
        # And through the CLI, which neither worker hears of directly.
        _grant_with_cli(prepared)
        _warm_every_worker(read, db_url, workers=2)
        _revoke_with_cli(prepared)
        delay = _refused_within_deadline(read, streak=16)
        print(f"CLI revocation refused by both workers {delay:.3f} s after the CLI exited")
    finally:
        _stop(server)


# ---------------------------------------------------------------- the log, in-process


def _log(db: Database) -> list[tuple[str, str, str]]:
    with db.read() as session:
        return [(r.vault, r.key, r.change) for r in revocations.since(session, 0)]


def test_every_narrowing_change_writes_one_row_in_its_transaction(
    runtime: Runtime, clock: FrozenClock
) -> None:
    setup_tenant_and_keys(runtime)
    vault_a, vault_b = VAULT_A.lower(), VAULT_B.lower()
    with runtime.db.read() as session:
        start = revocations.latest(session)
        granted = revocations.since(session, 0)
    # the grants the setup made: one row each, in order, stamped with the injected clock
    assert [(r.vault, r.change) for r in granted] == [
        (vault_a, "access-changed"),
        (vault_b, "access-changed"),
    ]
    assert all(r.at == clock.now() for r in granted)
    clock.advance(60)
    runtime.vault.remove_access_policy(OPERATOR, VAULT_A, EXCHANGE.app_id)
    runtime.vault.set_access_policy(OPERATOR, VAULT_A, EXCHANGE.app_id, ["get"], replace=True)
    runtime.vault.update_key(OPERATOR, VAULT_A, KEY_A, enabled=False)
    # forced: both still protect the setup's data (a refusal would write no revocation)
    runtime.vault.delete_key(OPERATOR, VAULT_A, KEY_A, force=True)
    runtime.vault.delete_vault(OPERATOR, VAULT_B, force=True)
    with runtime.db.read() as session:
        rows = revocations.since(session, start)
    assert [(r.vault, r.key, r.change) for r in rows] == [
        (vault_a, "", "access-changed"),
        (vault_a, "", "access-changed"),
        (vault_a, KEY_A, "key-updated"),
        (vault_a, KEY_A, "key-deleted"),
        (vault_b, "", "vault-deleted"),
    ]
    assert [r.seq for r in rows] == sorted(r.seq for r in rows)
    assert all(r.at == clock.now() for r in rows)


def test_a_refused_or_rolled_back_change_writes_no_row(runtime: Runtime) -> None:
    setup_tenant_and_keys(runtime)
    before = _log(runtime.db)
    policies = runtime.vault.get_vault(OPERATOR, VAULT_A).access_policies
    heard: list[tuple[str, str, str]] = []
    runtime.vault.add_change_listener(lambda v, k, c: heard.append((v, k, c)))
    stranger = Actor(principal_id="mallory@contoso.com", tenant=TENANT)
    with pytest.raises(Forbidden):
        runtime.vault.remove_access_policy(stranger, VAULT_A, EXCHANGE.app_id)

    def fail_commit(_session: Session) -> None:
        raise RuntimeError("the database went away at commit")

    event.listen(Session, "before_commit", fail_commit)
    try:
        with pytest.raises(RuntimeError, match="went away"):
            runtime.vault.remove_access_policy(OPERATOR, VAULT_A, EXCHANGE.app_id)
    finally:
        event.remove(Session, "before_commit", fail_commit)
    assert _log(runtime.db) == before
    assert heard == []
    assert runtime.vault.get_vault(OPERATOR, VAULT_A).access_policies == policies
    assert len(policies) == 1


def test_relay_starts_at_the_end_and_delivers_each_row_once_in_order(
    runtime: Runtime, clock: FrozenClock
) -> None:
    with runtime.db.transaction() as session:
        revocations.append(session, vault="Old-Vault", change="access-changed", at=clock.now())
    seen: list[Revocation] = []
    relay = RevocationRelay(runtime.db, seen.append, clock=clock)
    relay.sync()
    assert relay.poll_once() == 0  # what was revoked before this process started is skipped
    with runtime.db.transaction() as session:
        revocations.append(session, vault="Vault-1", change="access-changed", at=clock.now())
        revocations.append(session, vault="vault-2", key="k", change="key-deleted", at=clock.now())
    assert relay.poll_once() == 2
    assert relay.poll_once() == 0
    assert [(r.vault, r.key, r.change) for r in seen] == [
        ("vault-1", "", "access-changed"),
        ("vault-2", "k", "key-deleted"),
    ]
    assert seen[0].seq < seen[1].seq == relay.last_seen


def test_relay_thread_follows_rows_written_by_another_process(
    runtime: Runtime, db_url: str, clock: FrozenClock
) -> None:
    got = threading.Event()
    seen: list[Revocation] = []

    def on_revoked(revocation: Revocation) -> None:
        seen.append(revocation)
        got.set()

    relay = RevocationRelay(runtime.db, on_revoked, clock=clock, poll_seconds=0.05)
    other = Database(db_url)  # its own engine and connections, like another process
    try:
        with relay.running():
            with other.transaction() as session:
                revocations.append(
                    session, vault="elsewhere", change="access-changed", at=clock.now()
                )
            assert got.wait(10)
        assert relay.running_thread is None
    finally:
        other.dispose()
    assert [r.vault for r in seen] == ["elsewhere"]


def test_a_row_committed_late_behind_a_higher_one_is_not_skipped(
    runtime: Runtime, clock: FrozenClock
) -> None:
    seen: list[str] = []
    relay = RevocationRelay(runtime.db, lambda r: seen.append(r.vault), clock=clock)
    relay.sync()
    relay.poll_once()  # prunes now; the next prune is minutes away
    second_done = threading.Event()

    def second_writer() -> None:
        with runtime.db.transaction() as session:
            revocations.append(session, vault="second", change="access-changed", at=clock.now())
        second_done.set()

    with runtime.db.transaction() as session:
        revocations.append(session, vault="first", change="access-changed", at=clock.now())
        writer = threading.Thread(target=second_writer)
        writer.start()
        # The second appender waits for the first transaction (SQLite: one writer; PostgreSQL:
        # the table lock), so it cannot commit a higher number first.
        assert not second_done.wait(0.5)
        assert relay.poll_once() == 0
    writer.join(30)
    assert second_done.is_set()
    relay.poll_once()
    assert seen == ["first", "second"]


def test_relay_survives_a_database_error(
    runtime: Runtime, db_url: str, clock: FrozenClock, caplog: pytest.LogCaptureFixture
) -> None:
    got = threading.Event()
    relay = RevocationRelay(runtime.db, lambda r: got.set(), clock=clock, poll_seconds=0.05)
    admin = create_engine(normalize_url(db_url))
    try:
        with relay.running():
            with admin.begin() as conn:
                conn.execute(text("ALTER TABLE revocations RENAME TO revocations_away"))
            deadline = time.monotonic() + 10
            while relay.failures < 3:  # several rounds failed, and the thread kept going
                assert time.monotonic() < deadline
                time.sleep(0.05)  # waiting for the relay's thread to meet the error
            with admin.begin() as conn:
                conn.execute(text("ALTER TABLE revocations_away RENAME TO revocations"))
            with runtime.db.transaction() as session:
                revocations.append(session, vault="after", change="access-changed", at=clock.now())
            assert got.wait(10)
            thread = relay.running_thread
            assert thread is not None and thread.is_alive()
    finally:
        admin.dispose()
    assert "could not read the revocation log" in caplog.text


def test_pruning_keeps_an_hour_on_the_injected_clock_and_never_reuses_numbers(
    runtime: Runtime, clock: FrozenClock
) -> None:
    relay = RevocationRelay(runtime.db, lambda r: None, clock=clock)
    relay.sync()
    relay.poll_once()  # the first round prunes (nothing yet)

    def add(vault: str) -> None:
        with runtime.db.transaction() as session:
            revocations.append(session, vault=vault, change="access-changed", at=clock.now())

    add("t0")
    clock.advance(timedelta(minutes=30))
    add("t30")
    clock.advance(timedelta(minutes=31))  # t0 is now 61 minutes old
    assert [v for v, _, _ in _log(runtime.db)] == ["t0", "t30"]
    relay.poll_once()  # the next prune was due after 5 minutes
    assert [v for v, _, _ in _log(runtime.db)] == ["t30"]
    clock.advance(timedelta(minutes=2))
    with runtime.db.read() as session:
        top = revocations.latest(session)
    clock.advance(timedelta(hours=2))
    assert relay.prune() == 1  # t30 too: the log is empty now
    assert _log(runtime.db) == []
    add("after")
    with runtime.db.read() as session:
        (row,) = revocations.since(session, 0)
        assert session.scalar(select(func.count()).select_from(RevocationRow)) == 1
    assert row.seq > top  # a relay that saw ``top`` still sees it


def test_a_change_by_another_process_empties_this_process_cache(
    runtime: Runtime, db_url: str, clock: FrozenClock
) -> None:
    setup_policy(runtime)
    mail = runtime.mail
    mail.create_mailbox(OPERATOR, TENANT, MAILBOX, policy="NA-DEP")
    item = mail.add_message(OPERATOR, MAILBOX, b"Subject: s\n\n" + BODY)
    runtime.revocations.sync()
    assert mail.read_item(OPERATOR, MAILBOX, item.id).endswith(BODY)
    assert len(runtime.key_cache) == 1
    other = Runtime.open(
        Settings(home=runtime.home.path, database_url=db_url), clock=clock, migrate=False
    )
    try:
        for vault in (VAULT_A, VAULT_B):
            other.vault.remove_access_policy(OPERATOR, vault, EXCHANGE.app_id)
    finally:
        other.close()
    assert len(runtime.key_cache) == 1  # our own listener did not hear of it
    assert runtime.revocations.poll_once() == 2
    assert len(runtime.key_cache) == 0
    with pytest.raises(KeyAccessDenied):
        mail.read_item(OPERATOR, MAILBOX, item.id)


def test_a_job_worker_follows_the_log_while_it_runs(runtime: Runtime) -> None:
    stop = threading.Event()
    worker = runtime.worker()
    thread = threading.Thread(
        target=worker.run_forever, args=(stop,), kwargs={"poll_seconds": 0.05}
    )
    assert runtime.revocations.running_thread is None
    thread.start()
    deadline = time.monotonic() + 10
    while runtime.revocations.running_thread is None:  # the worker started it
        assert time.monotonic() < deadline
        time.sleep(0.01)  # waiting for the worker thread to start
    with runtime.revocations.running():  # serve asks for it too: counted, not restarted
        stop.set()
        thread.join(10)
        assert not thread.is_alive()
        assert runtime.revocations.running_thread is not None  # serve still needs it
    assert runtime.revocations.running_thread is None
