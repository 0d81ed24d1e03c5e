"""Policies and the mail workload against a real database and our in-process vault."""

from __future__ import annotations

import hashlib
import mailbox
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from customerkey.clock import FrozenClock
from customerkey.errors import BadParameter, Conflict, Forbidden, KeyAccessDenied
from customerkey.identity.workload_principals import EXCHANGE
from customerkey.keys.resolver import FALLBACK_ACTIVITY
from customerkey.runtime import Runtime
from customerkey.storage.models import MailboxKeyRow, MailItemRow
from customerkey.vault.models import OPERATOR
from tests.support.mailfixtures import (
    KEY_A,
    KEY_B,
    TENANT,
    URI_A,
    URI_B,
    VAULT_A,
    VAULT_B,
    assert_no_plaintext,
    canary,
    setup_policy,
    setup_tenant_and_keys,
    write_mbox,
)

pytestmark = [pytest.mark.storage, pytest.mark.protectors]


def _drain(rt: Runtime) -> None:
    rt.worker().run_until_idle()


# ---------------------------------------------------------------- policies


def test_policy_validation_refusals_change_nothing(runtime: Runtime, clock: FrozenClock) -> None:
    setup_tenant_and_keys(runtime, grant=False)
    p = runtime.policies
    with pytest.raises(BadParameter, match="exactly two key URIs"):
        p.create(OPERATOR, TENANT, "one", [URI_A])
    with pytest.raises(BadParameter, match="two different vaults"):
        p.create(OPERATOR, TENANT, "same", [URI_A, URI_A.replace("Key001", "Key002")])
    with pytest.raises(BadParameter, match="no spaces"):
        p.create(OPERATOR, TENANT, "has space", [URI_A, URI_B])
    with pytest.raises(BadParameter, match="not a key URI"):
        p.create(OPERATOR, TENANT, "bad", [URI_A, "ftp://x"])
    with pytest.raises(BadParameter, match="get permission"):
        p.create(OPERATOR, TENANT, "nogrant", [URI_A, URI_B])
    runtime.vault.set_access_policy(OPERATOR, VAULT_A, EXCHANGE.app_id, ["get", "wrapKey"])
    runtime.vault.set_access_policy(
        OPERATOR, VAULT_B, EXCHANGE.app_id, ["get", "wrapKey", "unwrapKey"]
    )
    with pytest.raises(BadParameter, match="lacks unwrapKey"):
        p.create(OPERATOR, TENANT, "partial", [URI_A, URI_B])
    runtime.vault.set_access_policy(OPERATOR, VAULT_A, EXCHANGE.app_id, ["unwrapKey"])
    runtime.vault.update_key(OPERATOR, VAULT_A, KEY_A, enabled=False)
    with pytest.raises(BadParameter, match="disabled"):
        p.create(OPERATOR, TENANT, "disabled", [URI_A, URI_B])
    runtime.vault.update_key(OPERATOR, VAULT_A, KEY_A, enabled=True)
    runtime.vault.update_key(OPERATOR, VAULT_A, KEY_A, expires=clock.now() + timedelta(days=365))
    with pytest.raises(BadParameter, match="must not expire"):
        p.create(OPERATOR, TENANT, "expiring", [URI_A, URI_B])
    from datetime import UTC, datetime

    runtime.vault.update_key(OPERATOR, VAULT_A, KEY_A, expires=datetime(9999, 12, 31, tzinfo=UTC))
    assert p.list_policies(OPERATOR, TENANT) == []
    created = p.create(OPERATOR, TENANT, "NA-DEP", [URI_A, URI_B])
    assert created.azure_key_ids == (URI_A, URI_B)
    with pytest.raises(Conflict, match="already exists"):
        p.create(OPERATOR, TENANT, "na-dep", [URI_A, URI_B])


def test_policy_lookup_by_name_guid_and_generation_and_updates(runtime: Runtime) -> None:
    s = setup_policy(runtime)
    p = runtime.policies
    assert p.get(OPERATOR, TENANT, "NA-DEP").id == s.policy_id
    assert p.get(OPERATOR, TENANT, s.policy_id.upper()).id == s.policy_id
    assert p.get(OPERATOR, TENANT, s.generation_id).id == s.policy_id
    updated = p.update(
        OPERATOR, TENANT, "NA-DEP", name="NA-DEP-2", description="renamed", enabled=False
    )
    assert (updated.name, updated.description, updated.enabled) == ("NA-DEP-2", "renamed", False)
    (generation,) = p.generations(s.policy_id)
    assert (
        generation.key_uri_1.startswith(URI_A + "/")
        and len(generation.key_uri_1.rsplit("/", 1)[1]) == 32
    )
    with pytest.raises(Conflict, match="disabled"):
        runtime.mail.create_mailbox(OPERATOR, TENANT, "x@contoso.com", policy="NA-DEP-2")


def test_only_tenant_admins_manage_policies(runtime: Runtime) -> None:
    setup_policy(runtime)
    stranger, _ = runtime.principals.create(OPERATOR, "eve@contoso.com", tenant=TENANT)
    other, _ = runtime.principals.create(
        OPERATOR, "admin@fabrikam.com", tenant="fabrikam", roles=["tenant-admin"]
    )
    for actor in (stranger.actor(), other.actor()):
        with pytest.raises(Forbidden):
            runtime.policies.get(actor, TENANT, "NA-DEP")
        with pytest.raises(Forbidden):
            runtime.mail.create_mailbox(actor, TENANT, "x@contoso.com")
    admin, _ = runtime.principals.create(
        OPERATOR, "admin@contoso.com", tenant=TENANT, roles=["tenant-admin"]
    )
    assert runtime.policies.get(admin.actor(), TENANT, "NA-DEP").name == "NA-DEP"


def test_at_most_fifty_mailbox_policies_per_tenant(runtime: Runtime) -> None:
    setup_policy(runtime, "dep-0")
    for i in range(1, 50):
        runtime.policies.create(OPERATOR, TENANT, f"dep-{i}", [URI_A, URI_B])
    with pytest.raises(Conflict, match="50"):
        runtime.policies.create(OPERATOR, TENANT, "dep-50", [URI_A, URI_B])


# ---------------------------------------------------------------- mail end to end


def test_mail_user_before_migration_import_export_and_no_plaintext_at_rest(
    runtime: Runtime, tmp_path: Path
) -> None:
    s = setup_policy(runtime)
    mail = runtime.mail
    user = mail.create_mailbox(
        OPERATOR, TENANT, "alice@contoso.com", kind="mailuser", policy="NA-DEP"
    )
    assert user.recipient_type == "MailUser"
    originals = write_mbox(tmp_path / "alice.mbox", 30, big=True)
    result = mail.import_messages(OPERATOR, "alice@contoso.com", tmp_path / "alice.mbox")
    assert result.imported == 30
    stats = mail.statistics(OPERATOR, "alice@contoso.com")
    assert stats.is_encrypted is True
    assert stats.data_encryption_policy_id == s.generation_id
    assert stats.item_count == 30 and stats.total_size == sum(len(m) for m in originals)
    assert stats.mailbox.recipient_type == "UserMailbox"  # migrated by the import

    # nothing of the content is stored in the clear: database, WAL, blobs
    needles = [canary(i).encode() for i in range(30)] + [b"From the finance team", b"ZZZZZZZZZZZZ"]
    assert_no_plaintext(runtime.home.path, needles)

    # export gives each message back byte for byte, in every format
    mail.export_messages(OPERATOR, "alice@contoso.com", tmp_path / "out.mbox", fmt="mbox")
    box = mailbox.mbox(str(tmp_path / "out.mbox"), create=False)
    assert [box.get_bytes(k) for k in box.iterkeys()] == originals
    mail.export_messages(OPERATOR, "alice@contoso.com", tmp_path / "out-eml", fmt="eml")
    assert [p.read_bytes() for p in sorted((tmp_path / "out-eml").iterdir())] == originals
    mail.export_messages(OPERATOR, "alice@contoso.com", tmp_path / "out-maildir", fmt="maildir")
    maildir = mailbox.Maildir(str(tmp_path / "out-maildir"), factory=None, create=False)
    assert sorted(maildir.get_bytes(k) for k in maildir.iterkeys()) == sorted(originals)
    # and a Maildir imports again
    mail.create_mailbox(OPERATOR, TENANT, "bob@contoso.com", policy="NA-DEP")
    assert (
        mail.import_messages(OPERATOR, "bob@contoso.com", tmp_path / "out-maildir").imported == 30
    )


def test_items_bound_to_their_place_swapped_blobs_do_not_open(
    runtime: Runtime, tmp_path: Path
) -> None:
    setup_policy(runtime)
    mail = runtime.mail
    mail.create_mailbox(OPERATOR, TENANT, "alice@contoso.com", policy="NA-DEP")
    first = mail.add_message(OPERATOR, "alice@contoso.com", b"Subject: one\n\nfirst")
    second = mail.add_message(OPERATOR, "alice@contoso.com", b"Subject: two\n\nsecond")
    with runtime.db.transaction() as session:
        a = session.get(MailItemRow, first.id)
        b = session.get(MailItemRow, second.id)
        assert a is not None and b is not None
        blob_a, blob_b = a.blob, b.blob
    data_a = runtime.mail.blobs.read_bytes(blob_a)
    runtime.mail.blobs.put_bytes(blob_a, runtime.mail.blobs.read_bytes(blob_b))
    with pytest.raises(Exception, match="Decryption failed"):
        mail.read_item(OPERATOR, "alice@contoso.com", first.id)
    tampered = bytearray(data_a)
    tampered[-5] ^= 1
    runtime.mail.blobs.put_bytes(blob_a, bytes(tampered))
    with pytest.raises(Exception, match="Decryption failed"):
        mail.read_item(OPERATOR, "alice@contoso.com", first.id)
    assert mail.read_item(OPERATOR, "alice@contoso.com", second.id).endswith(b"second")


def test_service_managed_mailbox_then_dep_change_rekeys_and_destroys_old_key(
    runtime: Runtime, tmp_path: Path
) -> None:
    s = setup_policy(runtime)
    mail = runtime.mail
    mail.create_mailbox(OPERATOR, TENANT, "bob@contoso.com")
    originals = write_mbox(tmp_path / "bob.mbox", 12)
    mail.import_messages(OPERATOR, "bob@contoso.com", tmp_path / "bob.mbox")
    before = mail.statistics(OPERATOR, "bob@contoso.com")
    assert before.is_encrypted is False and before.data_encryption_policy_id is None
    with runtime.db.transaction() as session:
        old_blobs = set(session.scalars(select(MailItemRow.blob)))
    job = mail.set_policy(OPERATOR, "bob@contoso.com", "NA-DEP")
    assert job is not None
    during = mail.statistics(OPERATOR, "bob@contoso.com")
    assert during.is_encrypted is False and during.job_state == "queued"
    # readable while the job has not run yet
    assert [d for _, d in mail.iter_messages(OPERATOR, "bob@contoso.com")] == originals
    with pytest.raises(Conflict, match="being re-encrypted"):
        mail.set_policy(OPERATOR, "bob@contoso.com", None)
    done = runtime.worker().run_one()
    assert done is not None and done.state == "succeeded" and done.progress_done == 12
    after = mail.statistics(OPERATOR, "bob@contoso.com")
    assert after.is_encrypted is True and after.data_encryption_policy_id == s.generation_id
    assert [d for _, d in mail.iter_messages(OPERATOR, "bob@contoso.com")] == originals
    with runtime.db.transaction() as session:
        keys = list(session.scalars(select(MailboxKeyRow).order_by(MailboxKeyRow.seq)))
        assert [(k.state, k.wrapped is None) for k in keys] == [
            ("destroyed", True),
            ("active", False),
        ]
        new_blobs = set(session.scalars(select(MailItemRow.blob)))
    assert not (old_blobs & new_blobs)
    assert all(not runtime.mail.blobs.exists(b) for b in old_blobs)
    # back to service-managed keys with $null
    assert mail.set_policy(OPERATOR, "bob@contoso.com", None) is not None
    _drain(runtime)
    back = mail.statistics(OPERATOR, "bob@contoso.com")
    assert back.is_encrypted is False and back.data_encryption_policy_id is None
    assert [d for _, d in mail.iter_messages(OPERATOR, "bob@contoso.com")] == originals


def test_revocation_through_our_vault_takes_effect_at_once_and_restores(
    runtime: Runtime, clock: FrozenClock
) -> None:
    setup_policy(runtime)
    mail = runtime.mail
    mail.create_mailbox(OPERATOR, TENANT, "alice@contoso.com", policy="NA-DEP")
    item = mail.add_message(OPERATOR, "alice@contoso.com", b"Subject: s\n\nsecret body")
    assert mail.read_item(OPERATOR, "alice@contoso.com", item.id).endswith(b"secret body")
    assert len(runtime.key_cache) == 1
    for vault in (VAULT_A, VAULT_B):
        runtime.vault.remove_access_policy(OPERATOR, vault, EXCHANGE.app_id)
    assert len(runtime.key_cache) == 0  # cleared at once, no TTL wait
    with pytest.raises(KeyAccessDenied, match="refused access"):
        mail.read_item(OPERATOR, "alice@contoso.com", item.id)
    with pytest.raises(KeyAccessDenied):
        mail.add_message(OPERATOR, "alice@contoso.com", b"Subject: t\n\nnew")
    for vault in (VAULT_A, VAULT_B):
        runtime.vault.set_access_policy(
            OPERATOR, vault, EXCHANGE.app_id, ["get", "wrapKey", "unwrapKey"]
        )
    assert mail.read_item(OPERATOR, "alice@contoso.com", item.id).endswith(b"secret body")


def test_disabling_both_root_keys_denies_user_reads_system_ops_use_availability(
    runtime: Runtime,
) -> None:
    s = setup_policy(runtime)
    mail = runtime.mail
    mail.create_mailbox(OPERATOR, TENANT, "alice@contoso.com", policy="NA-DEP")
    item = mail.add_message(OPERATOR, "alice@contoso.com", b"Subject: s\n\nbody")
    runtime.vault.update_key(OPERATOR, VAULT_A, KEY_A, enabled=False)
    runtime.vault.update_key(OPERATOR, VAULT_B, KEY_B, enabled=False)
    with pytest.raises(KeyAccessDenied):
        mail.read_item(OPERATOR, "alice@contoso.com", item.id)
    key = runtime.policies.generation_key(s.generation_id, system=True, request_id="req-1")
    assert len(key) == 32
    with runtime.db.transaction() as session:
        (record,) = runtime.audit.records(session, operation=FALLBACK_ACTIVITY)
    assert record.details["PolicyId"] == s.policy_id
    assert record.details["ScopeKeyVersionId"] == s.generation_id
    assert record.details["RequestId"] == "req-1"
    assert record.details["Reason"] == "system-operation"


def test_cache_ttl_no_vault_calls_while_warm_then_expires(
    runtime: Runtime, clock: FrozenClock
) -> None:
    setup_policy(runtime)
    mail = runtime.mail
    mail.create_mailbox(OPERATOR, TENANT, "alice@contoso.com", policy="NA-DEP")
    item = mail.add_message(OPERATOR, "alice@contoso.com", b"Subject: s\n\nbody")
    calls = runtime.policies.resolver.vault_calls
    for _ in range(5):
        mail.read_item(OPERATOR, "alice@contoso.com", item.id)
    assert runtime.policies.resolver.vault_calls == calls
    clock.advance(timedelta(seconds=runtime.settings.dek_cache_ttl_seconds + 1))
    mail.read_item(OPERATOR, "alice@contoso.com", item.id)
    assert runtime.policies.resolver.vault_calls == calls + 1


def test_mailbox_refusals(runtime: Runtime, tmp_path: Path) -> None:
    setup_policy(runtime)
    mail = runtime.mail
    with pytest.raises(BadParameter, match="mail domain"):
        mail.create_mailbox(OPERATOR, TENANT, "alice@fabrikam.com")
    mail.create_mailbox(OPERATOR, TENANT, "alice@contoso.com")
    with pytest.raises(Conflict):
        mail.create_mailbox(OPERATOR, TENANT, "Alice@Contoso.com")
    with pytest.raises(BadParameter, match="does not exist"):
        mail.import_messages(OPERATOR, "alice@contoso.com", tmp_path / "missing.mbox")
    with pytest.raises(BadParameter, match="Unknown mail format"):
        mail.import_messages(OPERATOR, "alice@contoso.com", tmp_path, fmt="pst")
    eve, _ = runtime.principals.create(OPERATOR, "eve@contoso.com", tenant=TENANT)
    with pytest.raises(Forbidden):
        mail.list_items(eve.actor(), "alice@contoso.com")
    assert mail.list_items(OPERATOR, "alice@contoso.com") == []
    (tmp_path / "out.mbox").write_text("exists")
    with pytest.raises(BadParameter, match="already exists"):
        mail.export_messages(OPERATOR, "alice@contoso.com", tmp_path / "out.mbox", fmt="mbox")


def test_owner_reads_own_mailbox(runtime: Runtime) -> None:
    setup_policy(runtime)
    runtime.mail.create_mailbox(OPERATOR, TENANT, "alice@contoso.com", policy="NA-DEP")
    alice, _ = runtime.principals.create(OPERATOR, "alice@contoso.com", tenant=TENANT)
    item = runtime.mail.add_message(alice.actor(), "alice@contoso.com", b"Subject: hi\n\nmine")
    assert runtime.mail.read_item(alice.actor(), "alice@contoso.com", str(item.seq)).endswith(
        b"mine"
    )
    digest = hashlib.sha256(b"Subject: hi\n\nmine").hexdigest()
    assert hashlib.sha256(runtime.mail.read_item(OPERATOR, "alice", item.id)).hexdigest() == digest
