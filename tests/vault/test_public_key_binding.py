"""The public half of every key version is bound to the master key (issue 13, finding 10).

Someone who can write the database but has no ``master.key`` replaces a version's public
modulus: the vault must refuse to serve or use that version (``KeyIntegrityFailure``) and
write nothing, instead of handing clients the attacker's key. The tag (``crypto.key_binding``)
is checked on every bundle, backup and crypto operation; versions from before the tag
(``public_tag`` NULL) are checked against their sealed private key and tagged by the start-up
backfill, unless they do not match. Storage tests run on SQLite and PostgreSQL.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import hmac
import os
import struct
from datetime import UTC, datetime
from pathlib import Path

import pytest
from alembic import command
from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.hazmat.primitives.hashes import SHA256
from sqlalchemy import MetaData, func, select, update

from customerkey.config import Settings
from customerkey.crypto import key_binding
from customerkey.crypto.rsa import (
    generate_rsa_key,
    private_jwk_fields,
    private_key_to_der,
    public_jwk_fields,
)
from customerkey.errors import InvalidBackup, KeyIntegrityFailure
from customerkey.home import Home
from customerkey.rng import SystemRng
from customerkey.runtime import Runtime
from customerkey.storage.database import Database, alembic_config
from customerkey.storage.models import AuditRow, KeyRow, KeyVersionRow
from customerkey.vault import backup as backup_format
from customerkey.vault.models import OPERATOR
from customerkey.vault.protection import SoftwareKeyProtector

storage = pytest.mark.storage

VAULT = "binding-vault"
KEY = "root-key"
ALG = "RSA-OAEP-256"


def _oaep() -> padding.OAEP:
    return padding.OAEP(mgf=padding.MGF1(SHA256()), algorithm=SHA256(), label=None)


def _raw(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _b64url(value: int) -> str:
    raw = value.to_bytes((value.bit_length() + 7) // 8, "big")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


# ---------------------------------------------------------------- the tag itself (no database)


def _hkdf_sha256(ikm: bytes, salt: bytes, info: bytes, length: int) -> bytes:
    """RFC 5869, written out with hmac only (independent of ``cryptography``)."""
    prk = hmac.new(salt, ikm, hashlib.sha256).digest()
    okm, block, counter = b"", b"", 1
    while len(okm) < length:
        block = hmac.new(prk, block + info + bytes([counter]), hashlib.sha256).digest()
        okm += block
        counter += 1
    return okm[:length]


# The documented inputs of the known-answer vector.
KAT_MASTER_KEY = bytes(range(32))
KAT_VAULT_ID = "0123456789abcdef0123456789abcdef"
KAT_KEY_ID = "fedcba9876543210fedcba9876543210"
KAT_VERSION = "00112233445566778899aabbccddeeff"
KAT_KTY = "RSA-HSM"
KAT_N = (1 << 2047) | 0x1234567  # any positive integer: the layout does not care
KAT_E = 65537
KAT_TAG_HEX = "0184c4f67db9e043d54a557a2812417d37114922bcc3924400c6a09a840508e9b7"


def test_known_answer_vector_matches_the_documented_layout() -> None:
    tag_key = _hkdf_sha256(
        KAT_MASTER_KEY,
        b"customerkey/public-key-tag",
        b"customerkey key-version public-key tag key v1",
        32,
    )

    def field(data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + data

    n_bytes = KAT_N.to_bytes(256, "big")  # 2048 bits, no leading zero byte
    e_bytes = b"\x01\x00\x01"
    message = (
        b"CKPT"
        + b"\x01"
        + field(KAT_VAULT_ID.encode())
        + field(KAT_KEY_ID.encode())
        + field(KAT_VERSION.encode())
        + field(KAT_KTY.encode())
        + field(n_bytes)
        + field(e_bytes)
    )
    expected = b"\x01" + hmac.new(tag_key, message, hashlib.sha256).digest()

    assert key_binding.derive_tag_key(KAT_MASTER_KEY) == tag_key
    fields = dict(
        vault_id=KAT_VAULT_ID, key_id=KAT_KEY_ID, version=KAT_VERSION, kty=KAT_KTY, n=KAT_N, e=KAT_E
    )
    assert key_binding.tag_message(**fields) == message
    tag = key_binding.public_tag(tag_key, **fields)
    assert tag == expected and len(tag) == key_binding.TAG_BYTES == 33
    assert tag.hex() == KAT_TAG_HEX
    assert key_binding.public_tag_matches(tag_key, tag, **fields)
    # every input is bound: change any one and the tag no longer matches
    for name, other in (
        ("vault_id", KAT_VAULT_ID[:-1] + "0"),
        ("key_id", KAT_KEY_ID[:-1] + "1"),
        ("version", KAT_VERSION[:-1] + "0"),
        ("kty", "RSA"),
        ("n", KAT_N + 2),
        ("e", 3),
    ):
        assert not key_binding.public_tag_matches(tag_key, tag, **{**fields, name: other})
    assert not key_binding.public_tag_matches(bytes(32), tag, **fields)


def test_length_prefixes_keep_fields_apart() -> None:
    tag_key = key_binding.derive_tag_key(os.urandom(32))
    a = key_binding.public_tag(tag_key, vault_id="ab", key_id="c", version="v", kty="RSA", n=5, e=3)
    b = key_binding.public_tag(tag_key, vault_id="a", key_id="bc", version="v", kty="RSA", n=5, e=3)
    assert a != b


def test_stored_members_must_be_canonical_base64url() -> None:
    assert key_binding.jwk_member_to_int("AQAB") == 65537
    for bad in ("AQAB=", "AAEAAQ", "AQ+B", "", "A", "AQB", 7):
        with pytest.raises(ValueError):
            key_binding.jwk_member_to_int(bad)  # type: ignore[arg-type]


# ---------------------------------------------------------------- the vault (SQLite + PostgreSQL)


def _setup(rt: Runtime) -> None:
    rt.vault.create_vault(OPERATOR, VAULT, subscription="sub-1", region="eastus")


def _row(rt: Runtime, version: str) -> KeyVersionRow:
    with rt.db.transaction() as session:
        row = session.scalars(select(KeyVersionRow).where(KeyVersionRow.version == version)).one()
        session.expunge(row)
        return row


def _set(rt: Runtime, version: str, **values: object) -> None:
    """What the attacker with database access does."""
    with rt.db.transaction() as session:
        session.execute(
            update(KeyVersionRow).where(KeyVersionRow.version == version).values(**values)
        )


def _audit_count(rt: Runtime) -> int:
    with rt.db.transaction() as session:
        return int(session.scalar(select(func.count()).select_from(AuditRow)) or 0)


def _expected_tag(rt: Runtime, version: str) -> bytes:
    """The tag recomputed from the row's identity and its public key, from first principles."""
    row = _row(rt, version)
    with rt.db.transaction() as session:
        key = session.get(KeyRow, row.key_id)
        assert key is not None
        vault_id = key.vault_id
    return key_binding.public_tag(
        key_binding.derive_tag_key(rt.home.master_key()),
        vault_id=vault_id,
        key_id=row.key_id,
        version=row.version,
        kty=row.kty,
        n=key_binding.jwk_member_to_int(row.public_n),
        e=key_binding.jwk_member_to_int(row.public_e),
    )


def _refused_everywhere(rt: Runtime, version: str, wrapped: bytes) -> None:
    """Every way of serving or using the version refuses it, and nothing is written."""
    before_row = _row(rt, version)
    before_audit = _audit_count(rt)
    attempts = {
        "get": lambda: rt.vault.get_key(OPERATOR, VAULT, KEY),
        "get version": lambda: rt.vault.get_key(OPERATOR, VAULT, KEY, version),
        "list": lambda: rt.vault.list_keys(OPERATOR, VAULT),
        "versions": lambda: rt.vault.list_versions(OPERATOR, VAULT, KEY),
        "backup": lambda: rt.vault.backup_key(OPERATOR, VAULT, KEY),
        "wrap": lambda: rt.vault.wrap_key(OPERATOR, VAULT, KEY, None, ALG, b"k" * 32),
        "wrap version": lambda: rt.vault.wrap_key(OPERATOR, VAULT, KEY, version, ALG, b"k" * 32),
        "unwrap": lambda: rt.vault.unwrap_key(OPERATOR, VAULT, KEY, version, ALG, wrapped),
        "encrypt": lambda: rt.vault.crypto(OPERATOR, "encrypt", VAULT, KEY, None, ALG, b"x"),
        "update": lambda: rt.vault.update_key(OPERATOR, VAULT, KEY, version, tags={"a": "b"}),
    }
    for what, attempt in attempts.items():
        with pytest.raises(KeyIntegrityFailure) as refused:
            attempt()
        failure = refused.value
        assert failure.status == 500 and failure.code == "KeyIntegrityFailure", what
        assert f"{VAULT}/{KEY}/{version}" in failure.message, what
        assert before_row.public_n not in failure.message
    after = _row(rt, version)
    assert (after.public_n, after.public_tag, after.tags, after.operation_count) == (
        before_row.public_n,
        before_row.public_tag,
        before_row.tags,
        before_row.operation_count,
    )
    assert _audit_count(rt) == before_audit


@storage
def test_new_versions_are_tagged_and_served(runtime: Runtime) -> None:
    _setup(runtime)
    created = runtime.vault.create_key(OPERATOR, VAULT, KEY, kty="RSA-HSM")
    jwk = generate_rsa_key(2048)
    imported = runtime.vault.import_key(
        OPERATOR, VAULT, "imported", {"kty": "RSA", **private_jwk_fields(jwk)}
    )
    rotated = runtime.vault.rotate_key(OPERATOR, VAULT, KEY)
    for bundle in (created, imported, rotated):
        row = _row(runtime, bundle.id.version)
        assert row.public_tag is not None and len(row.public_tag) == 33
        assert row.public_tag == _expected_tag(runtime, bundle.id.version)
    assert runtime.vault.get_key(OPERATOR, VAULT, KEY, created.id.version).n == created.n
    assert imported.n == public_jwk_fields(jwk.public_key())["n"]


@storage
def test_replaced_modulus_is_refused_not_served_even_when_cached(runtime: Runtime) -> None:
    _setup(runtime)
    bundle = runtime.vault.create_key(OPERATOR, VAULT, KEY)
    version = bundle.id.version
    secret = os.urandom(32)
    wrapped = runtime.vault.wrap_key(OPERATOR, VAULT, KEY, None, ALG, secret).value
    # warm every cache: the served bundle, the crypto fast path
    runtime.vault.get_key(OPERATOR, VAULT, KEY)
    runtime.vault.unwrap_key(OPERATOR, VAULT, KEY, version, ALG, wrapped)

    attacker = generate_rsa_key(2048)
    _set(runtime, version, public_n=_b64url(attacker.public_key().public_numbers().n))
    _refused_everywhere(runtime, version, wrapped)

    # put the genuine modulus back: served and usable again (nothing was lost)
    _set(runtime, version, public_n=bundle.n)
    assert runtime.vault.get_key(OPERATOR, VAULT, KEY).n == bundle.n
    assert runtime.vault.unwrap_key(OPERATOR, VAULT, KEY, version, ALG, wrapped).value == secret


@storage
@pytest.mark.parametrize(
    "tamper", ["exponent", "kty", "padded", "leading-zero", "tag", "tag-and-key-of-other-key"]
)
def test_every_part_of_the_public_half_is_bound(runtime: Runtime, tamper: str) -> None:
    _setup(runtime)
    bundle = runtime.vault.create_key(OPERATOR, VAULT, KEY)
    other = runtime.vault.create_key(OPERATOR, VAULT, "other-key")
    version = bundle.id.version
    wrapped = runtime.vault.wrap_key(OPERATOR, VAULT, KEY, None, ALG, b"s" * 32).value
    runtime.vault.get_key(OPERATOR, VAULT, KEY)
    other_row = _row(runtime, other.id.version)
    changes: dict[str, object] = {
        "exponent": {"public_e": "Aw"},
        "kty": {"kty": "RSA-HSM"},
        "padded": {"public_e": "AQAB="},
        # the same integer, but not its canonical (minimal) encoding
        "leading-zero": {
            "public_n": base64.urlsafe_b64encode(b"\x00" + _raw(bundle.n)).rstrip(b"=").decode()
        },
        "tag": {"public_tag": b"\x01" + bytes(32)},
        # a genuine public half and its genuine tag, copied from another key of the vault
        "tag-and-key-of-other-key": {
            "public_n": other_row.public_n,
            "public_e": other_row.public_e,
            "public_tag": other_row.public_tag,
        },
    }[tamper]  # type: ignore[assignment]
    _set(runtime, version, **changes)  # type: ignore[arg-type]
    _refused_everywhere(runtime, version, wrapped)
    assert runtime.vault.get_key(OPERATOR, VAULT, "other-key").n == other.n  # unaffected


@storage
def test_deleted_bundles_are_checked_too(runtime: Runtime) -> None:
    _setup(runtime)
    bundle = runtime.vault.create_key(OPERATOR, VAULT, KEY)
    runtime.vault.delete_key(OPERATOR, VAULT, KEY)
    attacker = generate_rsa_key(2048)
    _set(runtime, bundle.id.version, public_n=_b64url(attacker.public_key().public_numbers().n))
    with pytest.raises(KeyIntegrityFailure):
        runtime.vault.get_deleted_key(OPERATOR, VAULT, KEY)
    with pytest.raises(KeyIntegrityFailure):
        runtime.vault.list_deleted_keys(OPERATOR, VAULT)
    with pytest.raises(KeyIntegrityFailure):
        runtime.vault.recover_deleted_key(OPERATOR, VAULT, KEY)
    # the key stays deleted: the refused recovery wrote nothing
    with runtime.db.transaction() as session:
        key = session.scalars(select(KeyRow).where(KeyRow.name == KEY)).one()
        assert key.deleted_at is not None


@storage
def test_backfill_tags_untagged_versions_in_batches_idempotently(runtime: Runtime) -> None:
    _setup(runtime)
    versions = [runtime.vault.create_key(OPERATOR, VAULT, KEY).id.version for _ in range(3)]
    versions += [runtime.vault.create_key(OPERATOR, VAULT, "second").id.version for _ in range(2)]
    original = {v: _row(runtime, v).public_tag for v in versions}
    secret = os.urandom(32)
    wrapped = runtime.vault.wrap_key(OPERATOR, VAULT, KEY, versions[2], ALG, secret).value
    with runtime.db.transaction() as session:  # as migration 0005 leaves older versions
        session.execute(update(KeyVersionRow).values(public_tag=None))

    # untagged versions are served and used, checked against their sealed private keys
    assert [b.id.version for b in runtime.vault.list_versions(OPERATOR, VAULT, KEY)] == versions[:3]
    assert runtime.vault.unwrap_key(OPERATOR, VAULT, KEY, versions[2], ALG, wrapped).value == (
        secret
    )
    assert all(_row(runtime, v).public_tag is None for v in versions)  # reading wrote nothing

    report = runtime.vault.backfill_public_tags(batch=2)
    assert report.tagged == 5 and report.refused == ()
    assert {v: _row(runtime, v).public_tag for v in versions} == original
    again = runtime.vault.backfill_public_tags(batch=2)
    assert again.tagged == 0 and again.refused == ()
    assert runtime.vault.get_key(OPERATOR, VAULT, KEY).id.version == versions[2]


@storage
def test_untagged_version_with_replaced_modulus_is_refused_and_never_tagged(
    runtime: Runtime,
) -> None:
    _setup(runtime)
    good = runtime.vault.create_key(OPERATOR, VAULT, "good-key").id.version
    bundle = runtime.vault.create_key(OPERATOR, VAULT, KEY)
    version = bundle.id.version
    wrapped = runtime.vault.wrap_key(OPERATOR, VAULT, KEY, None, ALG, b"s" * 32).value
    attacker = generate_rsa_key(2048)
    # the attacker also clears the tag, hoping the version passes as one made before tags
    with runtime.db.transaction() as session:
        session.execute(update(KeyVersionRow).values(public_tag=None))
    _set(runtime, version, public_n=_b64url(attacker.public_key().public_numbers().n))

    _refused_everywhere(runtime, version, wrapped)
    report = runtime.vault.backfill_public_tags()
    assert report.tagged == 1
    assert report.refused == (f"{VAULT}/{KEY}/{version}",)
    assert _row(runtime, version).public_tag is None  # not blessed with a tag
    assert _row(runtime, good).public_tag == _expected_tag(runtime, good)
    _refused_everywhere(runtime, version, wrapped)
    # and a later backfill still refuses it
    assert runtime.vault.backfill_public_tags().refused == (f"{VAULT}/{KEY}/{version}",)


@storage
def test_runtime_start_backfills(runtime: Runtime, db_url: str, tmp_path: Path) -> None:
    _setup(runtime)
    version = runtime.vault.create_key(OPERATOR, VAULT, KEY).id.version
    tag = _row(runtime, version).public_tag
    _set(runtime, version, public_tag=None)
    reopened = Runtime.open(Settings(home=tmp_path / "home", database_url=db_url))
    try:
        assert _row(reopened, version).public_tag == tag
    finally:
        reopened.close()


@storage
def test_restore_computes_tags_for_the_new_rows(runtime: Runtime) -> None:
    _setup(runtime)
    v1 = runtime.vault.create_key(OPERATOR, VAULT, KEY).id.version
    v2 = runtime.vault.create_key(OPERATOR, VAULT, KEY).id.version
    blob = runtime.vault.backup_key(OPERATOR, VAULT, KEY)
    runtime.vault.delete_key(OPERATOR, VAULT, KEY)
    runtime.vault.purge_deleted_key(OPERATOR, VAULT, KEY)
    runtime.vault.restore_key(OPERATOR, VAULT, blob)
    for version in (v1, v2):
        row = _row(runtime, version)  # a new key row id: the tag must be computed afresh
        assert row.public_tag is not None
        assert row.public_tag == _expected_tag(runtime, version)
    assert [b.id.version for b in runtime.vault.list_versions(OPERATOR, VAULT, KEY)] == [v1, v2]
    attacker = generate_rsa_key(2048)
    _set(runtime, v2, public_n=_b64url(attacker.public_key().public_numbers().n))
    with pytest.raises(KeyIntegrityFailure):
        runtime.vault.get_key(OPERATOR, VAULT, KEY)


@storage
def test_restore_refuses_a_backup_whose_public_key_is_not_its_private_keys(
    runtime: Runtime,
) -> None:
    """A backup taken (before tags) from a store whose modulus had been replaced."""
    _setup(runtime)
    runtime.vault.create_key(OPERATOR, VAULT, KEY)
    blob = runtime.vault.backup_key(OPERATOR, VAULT, KEY)
    master_key = runtime.home.master_key()
    backup = backup_format.decode_backup(blob, master_key=master_key)
    attacker = generate_rsa_key(2048)
    poisoned = dataclasses.replace(
        backup,
        versions=tuple(
            dataclasses.replace(v, n=_b64url(attacker.public_key().public_numbers().n))
            for v in backup.versions
        ),
    )
    bad_blob = backup_format.encode_backup(
        poisoned, master_key=master_key, master_key_id=runtime.home.master_key_id()
    )
    runtime.vault.delete_key(OPERATOR, VAULT, KEY)
    runtime.vault.purge_deleted_key(OPERATOR, VAULT, KEY)
    with pytest.raises(InvalidBackup, match="not the public key of its private key"):
        runtime.vault.restore_key(OPERATOR, VAULT, bad_blob)
    assert runtime.vault.list_keys(OPERATOR, VAULT) == []
    assert runtime.vault.restore_key(OPERATOR, VAULT, blob).id.name == KEY


@storage
def test_database_from_before_the_tag_is_carried_over(db_url: str, tmp_path: Path) -> None:
    """A database at revision 0004 (no public_tag column) with one genuine and one tampered
    version: opening the platform migrates it, tags the genuine version and refuses the other."""
    home = Home(tmp_path / "home")
    home.init(rng=SystemRng())
    protector = SoftwareKeyProtector(home.master_key(), home.master_key_id())
    db = Database(db_url)
    with db.engine.begin() as connection:
        config = alembic_config(db_url)
        config.attributes["connection"] = connection
        command.upgrade(config, "0004")
    now = datetime(2026, 1, 1, tzinfo=UTC)
    vault_id, key_id = "a" * 32, "b" * 32
    genuine, attacker = generate_rsa_key(2048), generate_rsa_key(2048)
    versions = {"c" * 32: genuine, "d" * 32: genuine}  # the second one gets a foreign modulus
    with db.engine.begin() as connection:
        tables = MetaData()
        tables.reflect(connection, only=["vaults", "keys", "key_versions"])
        assert "public_tag" not in tables.tables["key_versions"].c
        connection.execute(
            tables.tables["vaults"].insert(),
            {
                "id": vault_id,
                "name": VAULT,
                "display_name": VAULT,
                "tenant": "default",
                "subscription": "sub-1",
                "region": "eastus",
                "resource_group": "customerkey",
                "retention_days": 90,
                "purge_protection": False,
                "created_by": "operator",
                "created_at": now,
            },
        )
        connection.execute(
            tables.tables["keys"].insert(),
            {
                "id": key_id,
                "vault_id": vault_id,
                "name": KEY,
                "name_lower": KEY,
                "created_at": now,
            },
        )
        for seq, (version, private) in enumerate(versions.items(), start=1):
            numbers = (attacker if seq == 2 else private).public_key().public_numbers()
            connection.execute(
                tables.tables["key_versions"].insert(),
                {
                    "id": f"{seq:032x}",
                    "key_id": key_id,
                    "version": version,
                    "seq": seq,
                    "kty": "RSA",
                    "key_size": 2048,
                    "key_ops": ["wrapKey", "unwrapKey"],
                    "enabled": True,
                    "created_at": now,
                    "updated_at": now,
                    "tags": {},
                    "exportable": False,
                    "imported": False,
                    "public_n": _b64url(numbers.n),
                    "public_e": _b64url(numbers.e),
                    "sealed_private_key": protector.seal_private_key(
                        private_key_to_der(private),
                        vault_id=vault_id,
                        key_id=key_id,
                        version=version,
                    ),
                    "operation_count": 0,
                },
            )
    db.dispose()

    rt = Runtime.open(Settings(home=home.path, database_url=db_url))
    try:
        good = _row(rt, "c" * 32)
        assert good.public_tag == _expected_tag(rt, "c" * 32)
        assert _row(rt, "d" * 32).public_tag is None
        served = rt.vault.get_key(OPERATOR, VAULT, KEY, "c" * 32)
        assert served.n == _b64url(genuine.public_key().public_numbers().n)
        wrapped = rt.vault.wrap_key(OPERATOR, VAULT, KEY, "c" * 32, ALG, b"k" * 32).value
        assert genuine.decrypt(wrapped, _oaep()) == b"k" * 32
        with pytest.raises(KeyIntegrityFailure):
            rt.vault.get_key(OPERATOR, VAULT, KEY)  # the newest is the tampered one
        with pytest.raises(KeyIntegrityFailure):
            rt.vault.wrap_key(OPERATOR, VAULT, KEY, None, ALG, b"k" * 32)
    finally:
        rt.close()
