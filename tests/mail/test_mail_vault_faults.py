"""The availability rules of the mail workload, against real remote vaults.

Two ``customerkey serve`` subprocesses play two independent clouds, each holding one root key
of the DEP (``remote_vaults.Cloud``; set up through their CLI). The platform under test is a
``Runtime`` in this process on the test's database (SQLite, and PostgreSQL when configured)
whose ``RemoteKeyProvider`` reaches the clouds over verified TLS with the real Azure SDK. A
mail user on the DEP gets a generated mbox; then vaults are stopped, restarted and revoked
through the real servers while the mailbox is read:

- one vault down: the other root key answers, no availability-key fallback;
- both down: the availability key answers, each uncached read audited
  "Fallback to Availability Key" (PolicyId, ScopeKeyVersionId, RequestId);
- both revoked: user reads fail with ``KeyAccessDenied``, system operations fall back, audited;
- one revoked, the other up: reads work, whichever root key is tried first;
- both restarted on their homes and ports: the root keys answer again, nothing cached the
  fallback;
- a DEP is refused while the application lacks wrapKey (the wrap must reach the vault), a
  refused sign-in (reset secret, 401) is a refusal, a hung vault (SIGSTOP) is an outage.

The clouds live for the whole module (starting one costs about two seconds); each test gets
its own platform and mailbox, and the ``clouds`` fixture puts back whatever an earlier test
stopped or revoked.
"""

from __future__ import annotations

import dataclasses
import mailbox
import re
import signal
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from azure.core.exceptions import ClientAuthenticationError
from sqlalchemy import MetaData, create_engine, select
from sqlalchemy.engine import make_url

from customerkey.azure import ClientSecretCredential, resolve_to_loopback
from customerkey.errors import BadParameter, KeyAccessDenied, KeyProviderUnavailable
from customerkey.keyprovider.base import KeyUri
from customerkey.keyprovider.remote import RemoteKeyProvider
from customerkey.keys.resolver import FALLBACK_ACTIVITY
from customerkey.rng import SystemRng
from customerkey.runtime import Runtime
from customerkey.storage.database import normalize_url
from customerkey.vault.models import OPERATOR
from tests.support import mail_vault_faults as shared
from tests.support.mail_vault_faults import (
    POLICY,
    UPN,
    Mail,
    Platform,
    Source,
    _fallbacks,
    _read,
    _read_all_intact,
    _read_in_both_orders,
    _sha,
)
from tests.support.remote_vaults import (
    DOMAIN,
    TENANT,
    Cloud,
    make_ready,
    provision,
    run_parallel,
    set_access,
    start_clouds,
    stop_clouds,
)
from tests.support.servers import free_port

pytestmark = pytest.mark.storage

# The mail fixtures shared with test_vault_garbage, over this module's clouds (``clouds`` below).
source = shared.source
platform = shared.platform
mail = shared.mail


# ---------------------------------------------------------------- the two clouds


@pytest.fixture(scope="module")
def cloud_pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Cloud]]:
    base = tmp_path_factory.mktemp("clouds")
    port_a = free_port()
    port_b = free_port()
    while port_b == port_a:
        port_b = free_port()
    pair = [
        Cloud("a", base / "cloud-a", port_a, "contoso-vault-a", "contoso-root-a", "mailapp-a"),
        Cloud("b", base / "cloud-b", port_b, "contoso-vault-b", "contoso-root-b", "mailapp-a"),
    ]
    try:
        with resolve_to_loopback(DOMAIN):
            start_clouds(pair)
            provision(pair)
            yield pair
            stop_clouds(pair)
    finally:
        for cloud in pair:
            cloud.kill()
    for cloud in pair:
        assert not cloud.bugs(), f"cloud {cloud.name} logged errors:\n" + "\n".join(cloud.bugs())


@pytest.fixture
def clouds(cloud_pair: list[Cloud]) -> list[Cloud]:
    """Both clouds running with the mail application's access in place."""
    make_ready(cloud_pair)
    return cloud_pair


def _files_under(root: Path) -> Iterator[Path]:
    yield from (p for p in root.rglob("*") if p.is_file())


def _sqlite_files(db_url: str) -> list[Path]:
    url = make_url(normalize_url(db_url))
    if url.get_backend_name() != "sqlite" or not url.database:
        return []
    db = Path(url.database)
    return [p for p in (db, Path(f"{db}-wal"), Path(f"{db}-shm")) if p.exists()]


def _database_values(db_url: str) -> Iterator[tuple[str, bytes]]:
    """Every value of every row of every table, as bytes (for SQLite and PostgreSQL alike)."""
    engine = create_engine(normalize_url(db_url))
    try:
        metadata = MetaData()
        metadata.reflect(bind=engine)
        with engine.connect() as conn:
            for table in metadata.sorted_tables:
                for row in conn.execute(select(table)):
                    for value in row:
                        if isinstance(value, bytes | bytearray | memoryview):
                            yield table.name, bytes(value)
                        elif value is not None:
                            yield table.name, str(value).encode()
    finally:
        engine.dispose()


# ---------------------------------------------------------------- 1. encrypted at rest


def test_content_is_encrypted_at_rest_and_exports_byte_for_byte(
    mail: Mail, source: Source, tmp_path: Path
) -> None:
    rt = mail.rt
    a, b = mail.platform.clouds
    # The generation is wrapped by the remote root keys' exact versions.
    (generation,) = rt.policies.generations(mail.policy.id)
    assert generation.id == mail.generation_id
    assert generation.key_uri_1.startswith(a.key_uri + "/")
    assert generation.key_uri_2.startswith(b.key_uri + "/")

    finder = re.compile(b"|".join(re.escape(n) for n in source.needles))
    assert len(set(finder.findall(source.path.read_bytes()))) == len(set(source.needles))
    scanned = 0
    for path in [*_files_under(rt.home.path), *_sqlite_files(mail.platform.db_url)]:
        found = finder.search(path.read_bytes())
        assert found is None, f"{path} holds plaintext: {found.group()[:40]!r}"
        scanned += 1
    blobs = list(_files_under(rt.home.blobs_dir))
    assert len(blobs) == len(source.messages)
    assert scanned > len(blobs)
    tables: Counter[str] = Counter()
    for table, value in _database_values(mail.platform.db_url):
        found = finder.search(value)
        assert found is None, f"table {table} holds plaintext: {found.group()[:40]!r}"
        tables[table] += 1
    assert tables["mail_items"] > 0 and tables["audit_records"] > 0, tables

    exports = tmp_path / "exports"
    exports.mkdir()
    assert rt.mail.export_messages(OPERATOR, UPN, exports / "out.mbox", fmt="mbox") == len(
        source.messages
    )
    box = mailbox.mbox(str(exports / "out.mbox"), create=False)
    try:
        exported = [box.get_bytes(key) for key in box.iterkeys()]
    finally:
        box.close()
    assert len(exported) == len(source.messages)
    for n, (got, want) in enumerate(zip(exported, source.messages, strict=True)):
        assert got == want, f"mbox message {n} differs"
    assert rt.mail.export_messages(OPERATOR, UPN, exports / "eml", fmt="eml") == len(
        source.messages
    )
    files = sorted((exports / "eml").glob("*.eml"))
    assert [f.read_bytes() for f in files] == source.messages

    stats = rt.mail.statistics(OPERATOR, UPN)
    assert stats.is_encrypted is True
    assert stats.data_encryption_policy_id == mail.policy.current_generation_id
    assert stats.item_count == len(source.messages)
    assert stats.mailbox.kind == "user"  # the import migrated the mail user
    assert _fallbacks(mail) == []


# ---------------------------------------------------------------- 2. one vault down


def test_one_vault_down_the_other_root_key_answers(mail: Mail) -> None:
    rt, clock = mail.rt, mail.platform.clock
    a, _ = mail.platform.clouds
    a.stop()
    # The DEP key cached by the import outlives the vault until its TTL ends.
    calls = rt.policies.resolver.vault_calls
    _read(mail, mail.items[0])
    assert rt.policies.resolver.vault_calls == calls
    assert rt.key_cache.hits > 0
    clock.advance(rt.settings.dek_cache_ttl_seconds + 1)
    misses, calls = rt.key_cache.misses, rt.policies.resolver.vault_calls
    _read_all_intact(mail)  # the first read misses the cache; cloud b answers and is cached
    assert rt.key_cache.misses == misses + 1
    assert rt.policies.resolver.vault_calls - calls in (1, 2)
    assert len(rt.key_cache) == 1
    _read_in_both_orders(mail)
    assert _fallbacks(mail) == []


# ---------------------------------------------------------------- 3. both down


def test_both_vaults_down_the_availability_key_answers_and_is_audited(mail: Mail) -> None:
    rt = mail.rt
    pair = mail.platform.clouds
    stop_clouds(pair)
    rt.key_cache.clear()
    actor = dataclasses.replace(OPERATOR, request_id="req-fallback-0001")
    item = mail.items[-1]  # the big one
    assert _sha(_read(mail, item, actor)) == mail.digests[item.id]
    (record,) = _fallbacks(mail)
    assert record.operation == "Fallback to Availability Key"
    assert record.details["PolicyId"] == mail.policy.id
    assert record.details["ScopeKeyVersionId"] == mail.generation_id
    assert record.details["RequestId"] == "req-fallback-0001"
    assert record.request_id == "req-fallback-0001"
    assert record.details["Reason"] == "system-errors"
    assert len(record.details["Failures"]) == 2
    # Not cached: every read goes to the root keys again and audits again.
    assert len(rt.key_cache) == 0
    _read_all_intact(mail)
    records = _fallbacks(mail)
    assert len(records) == 1 + len(mail.items)
    assert all(r.details["ScopeKeyVersionId"] == mail.generation_id for r in records)
    # A request id of its own on every record, even when the caller gave none.
    assert len({r.details["RequestId"] for r in records}) == len(records)
    assert rt.audit_log.verify(OPERATOR).ok

    # Both clouds come back on the same homes and ports: the root keys answer again.
    ports, starts = [c.port for c in pair], [c.starts for c in pair]
    start_clouds(pair)
    assert [c.port for c in pair] == ports
    assert [c.starts for c in pair] == [n + 1 for n in starts]
    _read_all_intact(mail)
    assert len(rt.key_cache) == 1
    assert len(_fallbacks(mail)) == 1 + len(mail.items)


# ---------------------------------------------------------------- 4. both revoked


def test_revoked_root_keys_fail_user_reads_and_only_system_operations_fall_back(
    mail: Mail,
) -> None:
    rt = mail.rt
    pair = mail.platform.clouds
    set_access(pair, granted=False)
    rt.key_cache.clear()
    for item in (mail.items[0], mail.items[-1]):
        with pytest.raises(KeyAccessDenied):
            _read(mail, item)
    assert _fallbacks(mail) == []  # a user request never falls back on a refusal
    with pytest.raises(KeyAccessDenied):
        rt.policies.generation_key(mail.generation_id)

    key = rt.policies.generation_key(mail.generation_id, system=True, request_id="req-purge-01")
    assert key == mail.dep_key
    (record,) = _fallbacks(mail)
    assert record.details["PolicyId"] == mail.policy.id
    assert record.details["ScopeKeyVersionId"] == mail.generation_id
    assert record.details["RequestId"] == "req-purge-01"
    assert record.details["Reason"] == "system-operation"
    assert len(rt.key_cache) == 0  # the fallback is not cached for user requests
    with pytest.raises(KeyAccessDenied):
        _read(mail, mail.items[1])

    set_access(pair, granted=True)
    rt.key_cache.clear()
    _read_all_intact(mail)
    assert len(_fallbacks(mail)) == 1


# ---------------------------------------------------------------- 5. one revoked, other up


def test_one_vault_denies_the_other_root_key_answers(mail: Mail) -> None:
    a, _ = mail.platform.clouds
    set_access([a], granted=False)
    _read_in_both_orders(mail)
    mail.rt.key_cache.clear()
    _read_all_intact(mail)
    assert _fallbacks(mail) == []
    set_access([a], granted=True)


# ---------------------------------------------------------------- policy validation


def test_policy_needs_wrap_key_permission_on_a_remote_vault(platform: Platform) -> None:
    """A DEP is refused while the mail application lacks wrapKey on one vault: the check
    must reach the vault, not wrap locally with the public key."""
    a, b = platform.clouds
    a.granted = False
    run_parallel([(a, a.grant_command("get,unwrapKey"))])
    with pytest.raises(BadParameter, match="wrapKey"):
        platform.rt.policies.create(OPERATOR, TENANT, POLICY, [a.key_uri, b.key_uri])
    set_access([a], granted=True)
    policy = platform.rt.policies.create(OPERATOR, TENANT, POLICY, [a.key_uri, b.key_uri])
    assert policy.generation_count == 1


# ---------------------------------------------------------------- refused sign-in, hung vault


def test_a_refused_sign_in_is_access_denied_not_an_outage(platform: Platform) -> None:
    """The customer resets the mail application's secret on both clouds: the token endpoints
    answer 401, which is a refusal, so user requests fail instead of falling back."""
    rt = platform.rt
    a, b = platform.clouds
    policy = rt.policies.create(OPERATOR, TENANT, POLICY, [a.key_uri, b.key_uri])
    assert policy.current_generation_id is not None
    rt.mail.create_mailbox(OPERATOR, TENANT, UPN, policy=POLICY)
    item = rt.mail.add_message(OPERATOR, UPN, b"Subject: hi\n\nsecret body\n")
    views = run_parallel([(c, ["principal", "reset-secret", c.principal]) for c in (a, b)])
    try:
        # A platform process started now signs in with the old secret (no cached tokens).
        fresh = Runtime.open(rt.settings, clock=platform.clock, rng=SystemRng())
        try:
            with pytest.raises(KeyAccessDenied, match="401"):
                fresh.mail.read_item(OPERATOR, UPN, item.id)
            assert fresh.audit_log.records(OPERATOR, operation=FALLBACK_ACTIVITY) == []
            fresh.policies.generation_key(policy.current_generation_id, system=True)
            (record,) = fresh.audit_log.records(OPERATOR, operation=FALLBACK_ACTIVITY)
            assert record.details["Reason"] == "system-operation"
        finally:
            fresh.close()
    finally:
        for cloud, view in zip((a, b), views, strict=True):
            cloud.secret = view["ClientSecret"]
    # With the new secrets configured, the root keys answer again.
    settings = rt.settings.model_copy(
        update={"remote_vaults": [c.remote_vault() for c in platform.clouds]}
    )
    renewed = Runtime.open(settings, clock=platform.clock, rng=SystemRng())
    try:
        assert renewed.mail.read_item(OPERATOR, UPN, item.id) == b"Subject: hi\n\nsecret body\n"
        assert len(renewed.audit_log.records(OPERATOR, operation=FALLBACK_ACTIVITY)) == 1
    finally:
        renewed.close()


def test_a_hung_vault_is_unavailable_after_the_read_timeout(clouds: list[Cloud]) -> None:
    """A vault that accepts connections but never answers (SIGSTOP) is a system failure."""
    a, _ = clouds
    credential = ClientSecretCredential(
        TENANT, a.principal, a.secret, authority=a.url, verify=str(a.ca), timeout=1.0
    )
    provider = RemoteKeyProvider(
        credential, verify=str(a.ca), connection_timeout=1.0, read_timeout=1.0
    )
    dep_key = bytes(range(32))
    wrapped = provider.wrap(KeyUri.parse(a.key_uri), dep_key)
    assert provider.unwrap(wrapped.uri, wrapped.wrapped) == dep_key
    assert a.process is not None
    fresh = ClientSecretCredential(
        TENANT, a.principal, a.secret, authority=a.url, verify=str(a.ca), timeout=1.0
    )
    a.process.send_signal(signal.SIGSTOP)
    try:
        with pytest.raises(KeyProviderUnavailable):
            provider.unwrap(wrapped.uri, wrapped.wrapped)
        # A sign-in that times out is no answer at all, so an outage, not a refusal.
        with pytest.raises(ClientAuthenticationError) as no_token:
            fresh.get_token(f"https://{DOMAIN}:{a.port}/.default")
        assert no_token.value.status_code is None
        with pytest.raises(KeyProviderUnavailable):
            RemoteKeyProvider._call(
                wrapped.uri, lambda: fresh.get_token(f"https://{DOMAIN}:{a.port}/.default")
            )
    finally:
        a.process.send_signal(signal.SIGCONT)
        fresh.close()
    assert provider.unwrap(wrapped.uri, wrapped.wrapped) == dep_key
    credential.close()
