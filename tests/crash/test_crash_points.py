"""Every crash point of a job, one at a time: the deterministic companion of the SIGKILL
harness (``test_crash_safety``), whose random kills rarely land in the narrowest windows.

A crash point is just before or just after each durable effect a worker makes: writing or
deleting a blob, committing a transaction, finishing the job. For crash point N, a fresh job
runs in-process until its Nth point, where the "process dies" (``SystemExit`` escapes the
worker, leaving the job leased to it, as a kill would); once the lease has run out on the
frozen clock, a second worker finishes the job, and everything a crash must not break is
checked. N grows until a run gets through without reaching its crash point.
"""

from __future__ import annotations

import io
import os
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from customerkey.clock import FrozenClock
from customerkey.identity.workload_principals import EXCHANGE, SHAREPOINT
from customerkey.jobs.queue import Job, JobQueue
from customerkey.runtime import Runtime
from customerkey.storage.blobs import LocalBlobStore
from customerkey.storage.database import Database
from customerkey.storage.models import PolicyRow, SiteKeyRow
from customerkey.vault.models import OPERATOR
from tests.support.crash_harness import (
    MailCorpus,
    audit_operations,
    blob_digests,
    dead_pid,
    verify_audit,
    verify_items,
    verify_move,
    verify_purge,
    verify_refresh,
)
from tests.support.mailfixtures import (
    GRANT,
    KEY_A,
    KEY_B,
    TENANT,
    VAULT_A,
    VAULT_B,
    setup_policy,
)

pytestmark = pytest.mark.storage


class Crash(SystemExit):
    """The worker process dies here."""


class CrashPoints:
    """Counts a worker's durable effects and dies at the chosen one."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.crash_at: int | None = None
        self.count = 0
        self.labels: list[str] = []
        self._wrap(monkeypatch, LocalBlobStore, "write")
        self._wrap(monkeypatch, LocalBlobStore, "delete")
        self._wrap(monkeypatch, LocalBlobStore, "delete_prefix")
        self._wrap(monkeypatch, JobQueue, "finish")
        real_transaction = Database.transaction
        points = self

        @contextmanager
        def transaction(db: Database) -> Iterator[Session]:
            with real_transaction(db) as session:
                yield session
            points.hit("after commit")

        monkeypatch.setattr(Database, "transaction", transaction)

    def _wrap(self, monkeypatch: pytest.MonkeyPatch, cls: type, name: str) -> None:
        real: Callable[..., Any] = getattr(cls, name)
        points = self

        def wrapper(*args: Any, **kwargs: Any) -> Any:
            points.hit(f"before {name}")
            result = real(*args, **kwargs)
            points.hit(f"after {name}")
            return result

        monkeypatch.setattr(cls, name, wrapper)

    def hit(self, label: str) -> None:
        if self.crash_at is None:
            return
        self.count += 1
        self.labels.append(label)
        if self.count == self.crash_at:
            raise Crash(f"crash point {self.count}: {label}")

    def run(self, rt: Runtime, clock: FrozenClock, n: int) -> str | None:
        """Run the queued job, dying at crash point ``n``; then let another worker finish it
        after the lease ran out. Returns where it died (None: the job ended first)."""
        self.crash_at, self.count, self.labels = n, 0, []
        died: str | None = None
        try:
            rt.worker(worker_id=f"doomed-{n}").run_one()
        except Crash as crash:
            died = str(crash)
        finally:
            self.crash_at = None
        clock.advance(rt.jobs.lease.total_seconds() + 1)
        rt.worker(worker_id=f"rescuer-{n}").run_until_idle()
        return died


def _sweep(
    rt: Runtime,
    clock: FrozenClock,
    points: CrashPoints,
    start_job: Callable[[int], Job],
    check: Callable[[int, Job, str], None],
) -> list[str]:
    crashes: list[str] = []
    for n in range(1, 200):
        job = start_job(n)
        died = points.run(rt, clock, n)
        final = rt.jobs.get(job.id)
        context = f"crash point {n} ({died or 'not reached'})"
        assert final.state == "succeeded", f"{context}: job {final.state} {final.error}"
        check(n, final, context)
        if died is None:
            return crashes
        crashes.append(died)
    raise AssertionError("the job never ended before its crash point")


def test_a_move_survives_a_crash_at_every_point(
    runtime: Runtime, clock: FrozenClock, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    setup_policy(runtime)
    corpus = MailCorpus()
    (upn,) = corpus.add(runtime, tmp_path, "mover", 1, policy="NA-DEP", items=(5,))
    (bystander,) = corpus.add(runtime, tmp_path, "still", 1, policy="NA-DEP", items=(3,))
    mailbox_id = corpus.mailbox_ids[upn]
    monkeypatch.setattr(runtime.mail, "rekey_batch", 2)
    points = CrashPoints(monkeypatch)
    old: dict[int, set[str]] = {}
    keep = {k: v for k, v in blob_digests(runtime).items() if mailbox_id not in k}

    def start(n: int) -> Job:
        old[n] = {name for name in blob_digests(runtime) if mailbox_id in name}
        return runtime.mail.move(OPERATOR, upn)

    def check(n: int, job: Job, context: str) -> None:
        verify_move(runtime, mailbox_id, old[n], context)
        completions = [d for op, d in audit_operations(runtime) if op == "MailboxRekeyComplete"]
        assert [d["key"] for d in completions].count(job.payload["key_id"]) == 1, context
        verify_items(runtime, corpus, [upn, bystander], context)
        assert {k: v for k, v in blob_digests(runtime).items() if mailbox_id not in k} == keep

    crashes = _sweep(runtime, clock, points, start, check)
    kinds = Counter(c.split(": ", 1)[1] for c in crashes)
    assert kinds["after write"] >= 5 and kinds["after delete"] >= 5, kinds
    assert any("finish" in c for c in crashes), crashes
    verify_audit(runtime, "after every crash point of a move")


def test_a_refresh_survives_a_crash_at_every_point(
    runtime: Runtime, clock: FrozenClock, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    s = setup_policy(runtime)
    corpus = MailCorpus()
    corpus.add(runtime, tmp_path, "box", 3, policy="NA-DEP", items=(2, 3))
    monkeypatch.setattr(runtime.mail, "refresh_batch", 1)
    points = CrashPoints(monkeypatch)
    before: dict[int, dict[str, str]] = {}

    def start(n: int) -> Job:
        vault, key = (VAULT_A, KEY_A) if n % 2 else (VAULT_B, KEY_B)
        runtime.vault.rotate_key(OPERATOR, vault, key)
        before[n] = blob_digests(runtime)
        job = runtime.mail.refresh(OPERATOR, TENANT, "NA-DEP")
        assert job is not None
        return job

    def check(n: int, job: Job, context: str) -> None:
        generation = str(job.payload["generation_id"])
        verify_refresh(runtime, s.policy_id, generation, before[n], context)
        completions = [
            d["generation"]
            for op, d in audit_operations(runtime)
            if op == "DataEncryptionPolicyRefreshComplete"
        ]
        assert completions.count(generation) == 1, context

    crashes = _sweep(runtime, clock, points, start, check)
    assert sum("after commit" in c for c in crashes) >= 5, crashes
    verify_items(runtime, corpus, corpus.upns, "after every crash point of a refresh")
    verify_audit(runtime, "after every crash point of a refresh")


def test_a_purge_survives_a_crash_at_every_point(
    runtime: Runtime, clock: FrozenClock, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    setup_policy(runtime)  # NA-DEP, whose mailboxes must outlive every purge
    corpus = MailCorpus()
    survivors = corpus.add(runtime, tmp_path, "na", 2, policy="NA-DEP", items=(3,))
    for admin, roles in (
        ("admin1@contoso.com", ["tenant-admin"]),
        ("admin2@contoso.com", ["tenant-admin", "purge-approver"]),
    ):
        runtime.principals.create(OPERATOR, admin, tenant=TENANT, roles=roles)
    requester = runtime.principals.get("admin1@contoso.com").actor()
    approver = runtime.principals.get("admin2@contoso.com").actor()
    points = CrashPoints(monkeypatch)
    purged: dict[int, tuple[str, list[str]]] = {}
    keep: dict[int, dict[str, str]] = {}

    def start(n: int) -> Job:
        uris = []
        vaults = [f"Purge{n:03d}-A", f"Purge{n:03d}-B"]
        for vault in vaults:
            runtime.vault.create_vault(
                OPERATOR,
                vault,
                subscription="contoso-sub",
                region="eastus",
                tenant=TENANT,
                purge_protection=True,
            )
            runtime.vault.create_key(
                OPERATOR, vault, "Key001", kty="RSA-HSM", key_ops=["wrapKey", "unwrapKey"]
            )
            runtime.vault.set_access_policy(OPERATOR, vault, EXCHANGE.app_id, GRANT)
            uris.append(f"https://{vault.lower()}.vault.azure.net/keys/Key001")
        name = f"DEP-{n:03d}"
        policy = runtime.policies.create(OPERATOR, TENANT, name, uris, description="doomed")
        upns = corpus.add(runtime, tmp_path, f"p{n:03d}-", 2, policy=name, items=(2, 3))
        purged[n] = (policy.id, [corpus.mailbox_ids[u] for u in upns])
        corpus.forget(upns)
        doomed = set(purged[n][1])
        keep[n] = {k: v for k, v in blob_digests(runtime).items() if k.split("/")[1] not in doomed}
        for vault in vaults:
            runtime.vault.remove_access_policy(OPERATOR, vault, EXCHANGE.app_id)
        runtime.policies.request_purge(
            requester,
            TENANT,
            name,
            reason="test",
            contact="sec@contoso.com",
            workload_principal=EXCHANGE.app_id,
        )
        return runtime.mail.approve_purge(approver, TENANT, name, "admin2@contoso.com")

    def check(n: int, job: Job, context: str) -> None:
        policy_id, mailbox_ids = purged[n]
        verify_purge(runtime, policy_id, mailbox_ids, context)
        operations = audit_operations(runtime)
        ends = [d.get("policy") for op, d in operations if op == "DataEncryptionPolicyPurged"]
        assert ends.count(policy_id) == 1, context
        per_mailbox = Counter(d.get("mailbox") for op, d in operations if op == "MailboxPurged")
        assert all(per_mailbox[m] == 1 for m in mailbox_ids), context
        assert blob_digests(runtime) == keep[n], context

    crashes = _sweep(runtime, clock, points, start, check)
    assert any("delete_prefix" in c for c in crashes) and any("finish" in c for c in crashes)
    verify_items(runtime, corpus, survivors, "after every crash point of a purge")
    verify_audit(runtime, "after every crash point of a purge")


def test_a_move_removes_half_written_files_of_dead_writers_only(
    runtime: Runtime, tmp_path: Path
) -> None:
    """A writer killed inside ``LocalBlobStore.write`` leaves ``.<blob>.<pid>.tmp`` behind;
    the re-key's sweep removes those of dead pids and leaves a live writer's alone."""
    setup_policy(runtime)
    corpus = MailCorpus()
    (upn,) = corpus.add(runtime, tmp_path, "box", 1, policy="NA-DEP", items=(4,))
    mailbox_id = corpus.mailbox_ids[upn]
    folder = runtime.home.blobs_dir / "mail" / mailbox_id
    item = runtime.mail.list_items(OPERATOR, upn)[0]
    dead = folder / f".{item.id}.2.{dead_pid()}.tmp"
    live = folder / f".{uuid.uuid4()}.1.{os.getpid()}.tmp"  # another item, being written now
    for path in (dead, live):
        path.write_bytes(b"half a blob")
    runtime.mail.move(OPERATOR, upn)
    (job,) = runtime.worker().run_until_idle()
    assert job.state == "succeeded"
    assert not dead.exists() and live.exists()
    live.unlink()
    verify_items(runtime, corpus, [upn], "after the sweep")


def test_a_files_purge_survives_a_crash_at_every_point(
    runtime: Runtime, clock: FrozenClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A tenant's files purge killed at any point ends with exactly one purge record that
    counts every site, each site purged once, and no other tenant's blob touched."""
    runtime.tenants.create(OPERATOR, "fabrikam", mail_domain="fabrikam.com")
    bystander = "https://fabrikam.sharepoint.local/sites/keep"
    runtime.files.create_site(OPERATOR, bystander)
    runtime.files.upload(OPERATOR, bystander, "a.txt", io.BytesIO(b"fabrikam keeps this"))
    points = CrashPoints(monkeypatch)
    purged: dict[int, tuple[str, list[str]]] = {}
    keep: dict[int, dict[str, str]] = {}

    def start(n: int) -> Job:
        tenant = f"t{n:03d}"
        runtime.tenants.create(OPERATOR, tenant, mail_domain=f"{tenant}.com")
        uris = []
        vaults = [f"Files{n:03d}-A", f"Files{n:03d}-B"]
        for vault in vaults:
            runtime.vault.create_vault(
                OPERATOR,
                vault,
                subscription=f"{tenant}-sub",
                region="eastus",
                tenant=tenant,
                purge_protection=True,
            )
            runtime.vault.create_key(
                OPERATOR, vault, "Key001", kty="RSA-HSM", key_ops=["wrapKey", "unwrapKey"]
            )
            runtime.vault.set_access_policy(OPERATOR, vault, SHAREPOINT.app_id, GRANT)
            uris.append(f"https://{vault.lower()}.vault.azure.net/keys/Key001")
        runtime.files.register(OPERATOR, tenant, uris[0], uris[1])
        runtime.worker().run_until_idle()
        sites = []
        for s in range(3):
            url = f"https://{tenant}.sharepoint.local/sites/s{s}"
            sites.append(runtime.files.create_site(OPERATOR, url).id)
            for f in range(2):
                data = f"{tenant} site {s} file {f}".encode() * (1 + s)
                runtime.files.upload(OPERATOR, url, f"docs/f{f}.txt", io.BytesIO(data))
        policy_id = runtime.files.status(OPERATOR, tenant).policy_id
        assert policy_id is not None
        purged[n] = (policy_id, sites)
        keep[n] = {
            k: v for k, v in blob_digests(runtime).items() if k.split("/")[1] not in set(sites)
        }
        for vault in vaults:
            runtime.vault.remove_access_policy(OPERATOR, vault, SHAREPOINT.app_id)
        for admin, roles in (
            (f"admin1@{tenant}.com", ["tenant-admin"]),
            (f"admin2@{tenant}.com", ["tenant-admin", "purge-approver"]),
        ):
            runtime.principals.create(OPERATOR, admin, tenant=tenant, roles=roles)
        clock.advance(1)  # the approver held the role before the request
        requester = runtime.principals.get(f"admin1@{tenant}.com").actor()
        approver = runtime.principals.get(f"admin2@{tenant}.com").actor()
        runtime.files.request_purge(requester, tenant, reason="test", contact="sec@x.com")
        return runtime.files.approve_purge(approver, tenant, f"admin2@{tenant}.com")

    def check(n: int, job: Job, context: str) -> None:
        policy_id, site_ids = purged[n]
        operations = audit_operations(runtime)
        ends = [d for op, d in operations if op == "SPODataEncryptionPolicyPurged"]
        mine = [d for d in ends if d.get("policy") == policy_id]
        assert len(mine) == 1, context
        assert mine[0]["sites"] == len(site_ids), context
        per_site = Counter(d.get("site") for op, d in operations if op == "SitePurged")
        assert all(per_site[s] == 1 for s in site_ids), context
        assert blob_digests(runtime) == keep[n], context
        with runtime.db.transaction() as session:
            keys = session.scalars(select(SiteKeyRow).where(SiteKeyRow.site_id.in_(site_ids)))
            assert all(k.wrapped is None and k.state == "destroyed" for k in keys), context
            policy = session.get(PolicyRow, policy_id)
            assert policy is not None and policy.state == "purged", context
            assert policy.sealed_availability_key is None, context

    crashes = _sweep(runtime, clock, points, start, check)
    assert any("delete_prefix" in c for c in crashes) and any("finish" in c for c in crashes)
    out = io.BytesIO()
    runtime.files.download(OPERATOR, bystander, "a.txt", out)
    assert out.getvalue() == b"fabrikam keeps this"
    verify_audit(runtime, "after every crash point of a files purge")
