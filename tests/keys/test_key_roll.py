"""Key roll and refresh, move requests, key usage and the mail data purge path."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from customerkey.errors import Conflict, CustomerKeyError, Forbidden, KeyAccessDenied
from customerkey.identity.workload_principals import EXCHANGE
from customerkey.runtime import Runtime
from customerkey.storage.models import GenerationRow, MailboxKeyRow, PolicyRow
from customerkey.vault.models import OPERATOR
from tests.support.mailfixtures import (
    GRANT,
    KEY_A,
    KEY_B,
    TENANT,
    VAULT_A,
    VAULT_B,
    setup_policy,
    write_mbox,
)

pytestmark = pytest.mark.storage

USERS = ("active@contoso.com", "inactive@contoso.com", "shared@contoso.com", "empty@contoso.com")


def _populate(rt: Runtime, tmp_path: Path) -> dict[str, list[bytes]]:
    contents: dict[str, list[bytes]] = {}
    for i, upn in enumerate(USERS):
        kind = "shared" if upn.startswith("shared") else "user"
        rt.mail.create_mailbox(OPERATOR, TENANT, upn, kind=kind, policy="NA-DEP")
        if upn.startswith("empty"):
            contents[upn] = []
            continue
        contents[upn] = write_mbox(tmp_path / f"{i}.mbox", 5 + i)
        rt.mail.import_messages(OPERATOR, upn, tmp_path / f"{i}.mbox")
    return contents


def _blob_digests(rt: Runtime) -> dict[str, tuple[str, int]]:
    root = rt.home.blobs_dir
    return {
        str(p.relative_to(root)): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
        for p in root.rglob("*")
        if p.is_file()
    }


def _messages(rt: Runtime, upn: str) -> list[bytes]:
    return [data for _, data in rt.mail.iter_messages(OPERATOR, upn)]


def test_refresh_moves_every_mailbox_to_new_generation_without_rewriting_content(
    runtime: Runtime, tmp_path: Path
) -> None:
    s = setup_policy(runtime)
    contents = _populate(runtime, tmp_path)
    old_version_a = runtime.vault.get_key(OPERATOR, VAULT_A, KEY_A).id.version
    assert runtime.mail.refresh(OPERATOR, TENANT, "NA-DEP") is None  # no new version yet

    # the key roll: Add-AzureKeyVaultKey with the same name makes a new version
    rolled = runtime.vault.create_key(
        OPERATOR, VAULT_A, KEY_A, kty="RSA-HSM", key_ops=["wrapKey", "unwrapKey"]
    )
    blobs_before = _blob_digests(runtime)
    job = runtime.mail.refresh(OPERATOR, TENANT, "NA-DEP")
    assert job is not None and job.progress_total == len(USERS)
    with pytest.raises(Conflict, match="already running"):
        runtime.mail.refresh(OPERATOR, TENANT, "NA-DEP")
    # nothing moved before the job runs
    for upn in USERS:
        assert runtime.mail.statistics(OPERATOR, upn).data_encryption_policy_id == s.generation_id

    finished = runtime.worker().run_one()
    assert finished is not None and finished.state == "succeeded"
    policy = runtime.policies.get(OPERATOR, TENANT, "NA-DEP")
    new_generation = policy.current_generation_id
    assert new_generation not in (None, s.generation_id)
    assert policy.generation_count == 2
    for upn in USERS:
        stats = runtime.mail.statistics(OPERATOR, upn)
        assert stats.is_encrypted and stats.data_encryption_policy_id == new_generation
        assert _messages(runtime, upn) == contents[upn]
    assert _blob_digests(runtime) == blobs_before  # not one content byte rewritten

    generations = runtime.policies.generations(s.policy_id)
    assert generations[0].retired_at is not None and generations[1].retired_at is None
    assert generations[1].key_uri_1.endswith(rolled.id.version)
    with runtime.db.transaction() as session:
        old = session.get(GenerationRow, s.generation_id)
        assert old is not None and old.wrapped_1 is None and old.wrapped_availability is None
    # the new generation is found by its GUID too (Get-DataEncryptionPolicy <GUID>)
    assert runtime.policies.get(OPERATOR, TENANT, str(new_generation)).id == s.policy_id

    # key usage is exact, and the old version can now be disabled with all data readable
    usage = {u.version: u for u in runtime.usage.key_usage(OPERATOR, VAULT_A, KEY_A)}
    assert usage[old_version_a].dependents["DepGenerations"] == 0
    assert usage[rolled.id.version].dependents == {
        "DepGenerations": 1,
        "Policies": "NA-DEP",
        "Mailboxes": len(USERS),
        "Items": sum(len(v) for v in contents.values()),
    }
    assert runtime.usage.still_protects(OPERATOR, VAULT_A, KEY_A, old_version_a) is None
    warning = runtime.usage.still_protects(OPERATOR, VAULT_A, KEY_A, rolled.id.version)
    assert warning is not None and "4 mailbox(es)" in warning
    runtime.vault.update_key(OPERATOR, VAULT_A, KEY_A, old_version_a, enabled=False)
    runtime.key_cache.clear()
    for upn in USERS:
        assert _messages(runtime, upn) == contents[upn]


def test_refresh_rewrap_resumes_after_interruption(
    runtime: Runtime, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from customerkey.jobs.queue import JobQueue

    setup_policy(runtime)
    contents = _populate(runtime, tmp_path)
    runtime.vault.rotate_key(OPERATOR, VAULT_B, KEY_B)
    monkeypatch.setattr(runtime.mail, "refresh_batch", 1)
    job = runtime.mail.refresh(OPERATOR, TENANT, "NA-DEP")
    assert job is not None
    real = JobQueue.checkpoint
    calls = {"n": 0}

    def dies_on_second(self: JobQueue, *args: object, **kwargs: object) -> None:
        calls["n"] += 1
        if calls["n"] == 2:
            raise SystemExit("killed mid-batch")
        real(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(JobQueue, "checkpoint", dies_on_second)
    with pytest.raises(SystemExit):
        runtime.worker(worker_id="doomed").run_one()
    monkeypatch.setattr(JobQueue, "checkpoint", real)
    assert runtime.jobs.get(job.id).progress_done == 1
    for upn in USERS:  # readable in the middle: some on the old generation, some on the new
        assert _messages(runtime, upn) == contents[upn]
    runtime.clock.advance(runtime.jobs.lease.total_seconds() + 1)  # type: ignore[attr-defined]
    done = runtime.worker(worker_id="rescuer").run_one()
    assert done is not None and done.state == "succeeded"
    current = runtime.policies.get(OPERATOR, TENANT, "NA-DEP").current_generation_id
    with runtime.db.transaction() as session:
        generations = {k.generation_id for k in session.scalars(select(MailboxKeyRow))}
    assert generations == {current}
    for upn in USERS:
        assert _messages(runtime, upn) == contents[upn]


def test_move_request_reencrypts_and_destroys_old_key(runtime: Runtime, tmp_path: Path) -> None:
    setup_policy(runtime)
    contents = _populate(runtime, tmp_path)
    upn = "active@contoso.com"
    before = _blob_digests(runtime)
    job = runtime.mail.move(OPERATOR, upn)
    assert runtime.mail.move_status(OPERATOR, upn).state == "queued"  # type: ignore[union-attr]
    assert _messages(runtime, upn) == contents[upn]  # readable before the move runs
    runtime.worker().run_until_idle()
    status = runtime.mail.move_status(OPERATOR, upn)
    assert status is not None and status.id == job.id and status.state == "succeeded"
    assert status.progress_done == len(contents[upn])
    after = _blob_digests(runtime)
    mailbox_id = runtime.mail.get(OPERATOR, upn).id
    moved_before = {k for k in before if mailbox_id in k}
    moved_after = {k for k in after if mailbox_id in k}
    assert moved_before and moved_after and not (moved_before & moved_after)
    assert _messages(runtime, upn) == contents[upn]
    with runtime.db.transaction() as session:
        keys = list(
            session.scalars(
                select(MailboxKeyRow)
                .where(MailboxKeyRow.mailbox_id == mailbox_id)
                .order_by(MailboxKeyRow.seq)
            )
        )
    assert [k.state for k in keys] == ["destroyed", "active"]
    assert keys[0].wrapped is None
    # other mailboxes untouched
    assert {k: v for k, v in after.items() if mailbox_id not in k} == {
        k: v for k, v in before.items() if mailbox_id not in k
    }


def test_purge_path_refused_while_permissions_remain_then_destroys_everything(
    runtime: Runtime, tmp_path: Path
) -> None:
    s = setup_policy(runtime)
    contents = _populate(runtime, tmp_path)
    requester, _ = runtime.principals.create(
        OPERATOR, "admin1@contoso.com", tenant=TENANT, roles=["tenant-admin"]
    )
    approver, _ = runtime.principals.create(
        OPERATOR, "admin2@contoso.com", tenant=TENANT, roles=["tenant-admin", "purge-approver"]
    )
    with pytest.raises(Conflict, match="still holds wrapKey, unwrapKey"):
        runtime.policies.request_purge(
            requester.actor(),
            TENANT,
            "NA-DEP",
            reason="leaving",
            contact="sec@contoso.com",
            workload_principal=EXCHANGE.app_id,
        )
    runtime.vault.set_access_policy(OPERATOR, VAULT_A, EXCHANGE.app_id, ["get"], replace=True)
    with pytest.raises(Conflict, match="vault 'contoso-o365ex-na-vaulta2'"):
        runtime.policies.request_purge(
            requester.actor(),
            TENANT,
            "NA-DEP",
            reason="leaving",
            contact="sec@contoso.com",
            workload_principal=EXCHANGE.app_id,
        )
    assert runtime.policies.get(OPERATOR, TENANT, "NA-DEP").state == "active"
    runtime.vault.remove_access_policy(OPERATOR, VAULT_B, EXCHANGE.app_id)
    requested = runtime.policies.request_purge(
        requester.actor(),
        TENANT,
        "NA-DEP",
        reason="leaving",
        contact="sec@contoso.com",
        workload_principal=EXCHANGE.app_id,
    )
    assert requested.state == "purge-requested" and requested.purge_reason == "leaving"
    with pytest.raises(Conflict, match="can no longer be assigned"):
        runtime.mail.create_mailbox(OPERATOR, TENANT, "late@contoso.com", policy="NA-DEP")
    with pytest.raises(Forbidden, match="different principal than the requester"):
        runtime.mail.approve_purge(requester.actor(), TENANT, "NA-DEP", "admin1@contoso.com")
    with pytest.raises(Forbidden, match="not a principal of tenant"):
        runtime.mail.approve_purge(OPERATOR, TENANT, "NA-DEP", "nobody@contoso.com")
    blob_files = [p for p in runtime.home.blobs_dir.rglob("*") if p.is_file()]
    assert blob_files
    job = runtime.mail.approve_purge(approver.actor(), TENANT, "NA-DEP", "admin2@contoso.com")
    runtime.worker().run_until_idle()
    assert runtime.jobs.get(job.id).state == "succeeded"

    # nothing left that anyone could decrypt
    assert [p for p in runtime.home.blobs_dir.rglob("*") if p.is_file()] == []
    with runtime.db.transaction() as session:
        policy = session.get(PolicyRow, s.policy_id)
        assert policy is not None and policy.state == "purged"
        assert policy.sealed_availability_key is None
        for generation in session.scalars(select(GenerationRow)):
            assert generation.wrapped_1 is None and generation.wrapped_2 is None
            assert generation.wrapped_availability is None
        assert all(k.wrapped is None for k in session.scalars(select(MailboxKeyRow)))
    for upn in contents:
        with pytest.raises(Exception, match="not found"):
            runtime.mail.statistics(OPERATOR, upn)
    with pytest.raises(KeyAccessDenied):
        runtime.policies.generation_key(s.generation_id, system=True)
    # even with access restored, the DEP keys are gone
    for vault in (VAULT_A, VAULT_B):
        runtime.vault.set_access_policy(OPERATOR, vault, EXCHANGE.app_id, GRANT)
    with pytest.raises(KeyAccessDenied):
        runtime.policies.generation_key(s.generation_id, system=True)
    with runtime.db.transaction() as session:
        operations = [r.operation for r in runtime.audit.records(session)]
    for step in (
        "DataEncryptionPolicyPurgeRequested",
        "DataEncryptionPolicyPurgeApproved",
        "MailboxPurged",
        "DataEncryptionPolicyGenerationRetired",
        "DataEncryptionPolicyPurged",
    ):
        assert step in operations
    assert operations.count("MailboxPurged") == len(USERS)


def test_a_write_racing_a_move_is_moved_too_or_refused(
    runtime: Runtime, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A writer that picked up the old mailbox key before the move began commits its item
    while the move runs: the move re-encrypts it as well; once the old key is destroyed, a
    writer still holding it is refused and stores nothing."""
    setup_policy(runtime)
    upn = "active@contoso.com"
    runtime.mail.create_mailbox(OPERATOR, TENANT, upn, policy="NA-DEP")
    runtime.mail.add_message(OPERATOR, upn, b"Subject: first\n\nfirst")
    with runtime.db.transaction() as session:
        old_key = session.scalars(select(MailboxKeyRow)).one()
        old_key_id = old_key.id
    job = runtime.mail.move(OPERATOR, upn)
    blobs = runtime.mail.blobs
    real_delete = blobs.delete
    real_transaction = runtime.mail.db.transaction
    state = {"armed": False, "opened": 0, "done": False}

    def late_write() -> None:
        with monkeypatch.context() as patch:
            patch.setattr(
                runtime.mail,
                "_current_key",
                lambda session, row: session.get(MailboxKeyRow, old_key_id),
            )
            patch.setattr(runtime.mail.db, "transaction", real_transaction)
            runtime.mail.add_message(OPERATOR, upn, b"Subject: late\n\nlate")

    def delete_and_arm(name: str) -> bool:
        state["armed"] = True  # the move's last batch has committed
        return real_delete(name)

    def transaction() -> Any:
        # After the last batch: the 1st transaction finds nothing left to move, and just
        # before the 2nd (the one destroying the old key) a concurrent writer commits.
        if state["armed"] and not state["done"]:
            state["opened"] += 1
            if state["opened"] == 2:
                state["done"] = True
                late_write()
        return real_transaction()

    monkeypatch.setattr(blobs, "delete", delete_and_arm)
    monkeypatch.setattr(runtime.mail.db, "transaction", transaction)
    finished = runtime.worker().run_one()
    assert finished is not None and finished.id == job.id and finished.state == "succeeded"
    assert state["done"]
    monkeypatch.undo()
    bodies = sorted(data for _, data in runtime.mail.iter_messages(OPERATOR, upn))
    assert bodies == [b"Subject: first\n\nfirst", b"Subject: late\n\nlate"]
    # now the old key is destroyed: a writer still holding it is refused, nothing stored
    with monkeypatch.context() as patch:
        patch.setattr(
            runtime.mail,
            "_current_key",
            lambda session, row: session.get(MailboxKeyRow, old_key_id),
        )
        with pytest.raises(CustomerKeyError, match=r"destroyed|re-keyed while") as refused:
            runtime.mail.add_message(OPERATOR, upn, b"Subject: too late\n\nx")
    assert refused.value.status == 409
    assert len(runtime.mail.list_items(OPERATOR, upn)) == 2
