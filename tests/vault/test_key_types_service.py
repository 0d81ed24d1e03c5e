"""Key types other than RSA in the vault service, against a real database (SQLite, and
PostgreSQL when configured): EC and oct-HSM keys are created, imported, used, rotated, backed up
and restored; their stored public half (curve and point, or key size) is bound to the master key
(format 2 of ``crypto.key_binding``), so a changed row is refused; the rules of
``vault.key_types`` refuse what does not fit; ``random_bytes`` uses the injected Rng; and a
backup made before other key types existed (no ``crv`` in its versions) still restores.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import struct

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, utils
from cryptography.hazmat.primitives.keywrap import aes_key_wrap
from sqlalchemy import select, update

from customerkey.crypto import key_binding
from customerkey.crypto.rsa import b64url_encode
from customerkey.crypto.signatures import ecdsa_raw_to_der
from customerkey.errors import BadParameter, Forbidden, KeyIntegrityFailure, KeyNotUsable
from customerkey.runtime import Runtime
from customerkey.storage.models import KeyVersionRow
from customerkey.vault import backup as backup_format
from customerkey.vault.models import OPERATOR, KeyBundle

pytestmark = [pytest.mark.storage, pytest.mark.protectors]

VAULT = "key-types-vault"


def _vault(rt: Runtime) -> None:
    rt.vault.create_vault(OPERATOR, VAULT, subscription="sub-1", region="eastus")


def _public(bundle: KeyBundle) -> ec.EllipticCurvePublicKey:
    assert bundle.crv is not None and bundle.x is not None and bundle.y is not None
    curve = {"P-256": ec.SECP256R1(), "P-256K": ec.SECP256K1(), "P-384": ec.SECP384R1()}
    raw_x = base64.urlsafe_b64decode(bundle.x + "==")
    raw_y = base64.urlsafe_b64decode(bundle.y + "==")
    return ec.EllipticCurvePublicNumbers(
        int.from_bytes(raw_x, "big"), int.from_bytes(raw_y, "big"), curve[bundle.crv]
    ).public_key()


def _set(rt: Runtime, version: str, **values: object) -> None:
    with rt.db.transaction() as session:
        session.execute(
            update(KeyVersionRow).where(KeyVersionRow.version == version).values(**values)
        )


def test_ec_keys_sign_verify_rotate_and_defaults(runtime: Runtime) -> None:
    _vault(runtime)
    vault = runtime.vault
    bundle = vault.create_key(OPERATOR, VAULT, "ec", kty="ec-hsm", crv="P-256")
    assert (bundle.kty, bundle.crv, bundle.key_size) == ("EC-HSM", "P-256", 256)
    assert bundle.key_ops == ("sign", "verify") and bundle.n == "" and bundle.e == ""
    digest = hashlib.sha256(b"message").digest()
    signed = vault.sign(OPERATOR, VAULT, "ec", None, "ES256", digest)
    assert signed.kid == bundle.id and len(signed.value) == 64
    _public(bundle).verify(
        ecdsa_raw_to_der(signed.value, "P-256"), digest, ec.ECDSA(utils.Prehashed(hashes.SHA256()))
    )
    ok = vault.verify(OPERATOR, VAULT, "ec", bundle.id.version, "ES256", digest, signed.value)
    assert ok.verified is True
    bad = vault.verify(OPERATOR, VAULT, "ec", None, "ES256", digest, bytes(64))
    assert bad.verified is False
    rotated = vault.rotate_key(OPERATOR, VAULT, "ec")
    assert (rotated.kty, rotated.crv) == ("EC-HSM", "P-256") and rotated.x != bundle.x
    # the old version still verifies what it signed
    assert vault.verify(
        OPERATOR, VAULT, "ec", bundle.id.version, "ES256", digest, signed.value
    ).verified
    with pytest.raises(BadParameter, match="'wrapKey' is not valid for an EC key"):
        vault.update_key(OPERATOR, VAULT, "ec", key_ops=["sign", "wrapKey"])
    vault.update_key(OPERATOR, VAULT, "ec", key_ops=["verify"])
    with pytest.raises(KeyNotUsable, match="not permitted"):
        vault.sign(OPERATOR, VAULT, "ec", None, "ES256", digest)
    with pytest.raises(BadParameter, match="needs an EC key on curve P-384"):
        vault.sign(OPERATOR, VAULT, "ec", None, "ES384", bytes(48))
    with pytest.raises(BadParameter, match="EC keys only sign and verify"):
        vault.wrap_key(OPERATOR, VAULT, "ec", None, "RSA-OAEP-256", bytes(32))
    usage = {v.version: v.operation_count for v in vault.key_usage(OPERATOR, VAULT, "ec")}
    assert usage[bundle.id.version] == 4  # one sign, three verifies


def test_key_creation_rules(runtime: Runtime) -> None:
    _vault(runtime)
    vault = runtime.vault
    refusals = [
        ({"kty": "EC", "crv": "P-192"}, "P-192"),
        ({"kty": "EC", "crv": "P-384", "size": 256}, "does not match"),
        ({"kty": "RSA", "crv": "P-256"}, "'crv'"),
        ({"kty": "oct-HSM"}, "key_size"),
        ({"kty": "oct-HSM", "size": 512}, "512"),
        ({"kty": "oct", "size": 256}, "oct-HSM"),
        ({"kty": "oct-HSM", "size": 256, "key_ops": ["sign"]}, "'sign' is not valid"),
        ({"kty": "DSA"}, "'DSA' is not supported"),
    ]
    for options, says in refusals:
        with pytest.raises(BadParameter, match=says):
            vault.create_key(OPERATOR, VAULT, "k", **options)  # type: ignore[arg-type]
    assert vault.list_keys(OPERATOR, VAULT) == []


def test_oct_hsm_keys(runtime: Runtime) -> None:
    _vault(runtime)
    vault = runtime.vault
    bundle = vault.create_key(OPERATOR, VAULT, "aes", kty="oct-HSM", size=192)
    assert (bundle.kty, bundle.key_size, bundle.crv, bundle.n) == ("oct-HSM", 192, None, "")
    assert bundle.key_ops == ("encrypt", "decrypt", "wrapKey", "unwrapKey")
    wrapped = vault.wrap_key(OPERATOR, VAULT, "aes", None, "A192KW", bytes(range(32))).value
    assert vault.unwrap_key(OPERATOR, VAULT, "aes", None, "A192KW", wrapped).value == bytes(
        range(32)
    )
    sealed = vault.crypto(OPERATOR, "encrypt", VAULT, "aes", None, "A192GCM", b"hi", aad=b"a")
    assert sealed.iv is not None and len(sealed.iv) == 12 and sealed.tag is not None
    opened = vault.crypto(
        OPERATOR, "decrypt", VAULT, "aes", None, "A192GCM", sealed.value,
        iv=sealed.iv, tag=sealed.tag, aad=b"a",
    )  # fmt: skip
    assert opened.value == b"hi"
    with pytest.raises(BadParameter, match="could not be decrypted"):
        vault.crypto(
            OPERATOR, "decrypt", VAULT, "aes", None, "A192GCM", sealed.value,
            iv=sealed.iv, tag=sealed.tag, aad=b"b",
        )  # fmt: skip
    cbc = vault.crypto(OPERATOR, "encrypt", VAULT, "aes", None, "A192CBCPAD", b"x" * 20)
    assert cbc.iv is not None and len(cbc.iv) == 16 and len(cbc.value) == 32
    for alg, says in (("A256KW", "256-bit"), ("RSA-OAEP", "oct-HSM"), ("A192GCM", "GCM")):
        with pytest.raises(BadParameter, match=says):
            vault.wrap_key(OPERATOR, VAULT, "aes", None, alg, bytes(32))
    with pytest.raises(BadParameter, match="needs the 'iv'"):
        vault.crypto(OPERATOR, "decrypt", VAULT, "aes", None, "A192CBC", bytes(16))
    rotated = vault.rotate_key(OPERATOR, VAULT, "aes")
    assert (rotated.kty, rotated.key_size) == ("oct-HSM", 192)
    aes_jwk = {"kty": "oct", "k": b64url_encode(bytes(16))}
    imported = vault.import_key(OPERATOR, VAULT, "aes-in", aes_jwk, hsm=True)
    assert (imported.kty, imported.key_size) == ("oct-HSM", 128)
    local = aes_key_wrap(bytes(16), b"k" * 16)
    assert vault.unwrap_key(OPERATOR, VAULT, "aes-in", None, "A128KW", local).value == b"k" * 16
    with pytest.raises(BadParameter, match="RSA"):
        vault.import_key(OPERATOR, VAULT, "aes-sw", {"kty": "oct", "k": b64url_encode(bytes(16))})
    with pytest.raises(BadParameter, match="16, 24 or 32"):
        vault.import_key(OPERATOR, VAULT, "aes-odd", {"kty": "oct-HSM", "k": "AAAA"})


def test_changed_rows_of_new_key_types_are_refused(runtime: Runtime) -> None:
    _vault(runtime)
    vault = runtime.vault
    ec_key = vault.create_key(OPERATOR, VAULT, "ec", kty="EC", crv="P-384")
    aes = vault.create_key(OPERATOR, VAULT, "aes", kty="oct-HSM", size=256)
    attacker = ec.generate_private_key(ec.SECP384R1()).public_key().public_numbers()
    changes = [
        (ec_key, {"public_x": b64url_encode(attacker.x.to_bytes(48, "big"))}),
        (ec_key, {"crv": "P-256K"}),
        (ec_key, {"kty": "EC-HSM"}),
        (aes, {"key_size": 128}),
        (aes, {"public_tag": None}),
        (aes, {"kty": "RSA"}),
        (ec_key, {"kty": "oct-HSM"}),
    ]
    for bundle, values in changes:
        with runtime.db.read() as session:
            row = session.execute(
                select(KeyVersionRow).where(KeyVersionRow.version == bundle.id.version)
            ).scalar_one()
            before = {name: getattr(row, name) for name in values}
        _set(runtime, bundle.id.version, **values)
        with pytest.raises(KeyIntegrityFailure):
            vault.get_key(OPERATOR, VAULT, bundle.id.name)
        with pytest.raises(KeyIntegrityFailure):
            if bundle.id.name == "ec":
                vault.sign(OPERATOR, VAULT, bundle.id.name, None, "ES384", bytes(48))
            else:
                vault.wrap_key(OPERATOR, VAULT, bundle.id.name, None, "A256KW", bytes(16))
        _set(runtime, bundle.id.version, **before)
        assert vault.get_key(OPERATOR, VAULT, bundle.id.name).id == bundle.id
    # the start-up backfill leaves an untagged EC or oct-HSM version alone (it stays refused)
    _set(runtime, aes.id.version, public_tag=None)
    assert vault.backfill_public_tags().tagged == 0
    with pytest.raises(KeyIntegrityFailure):
        vault.get_key(OPERATOR, VAULT, "aes")


def test_backup_and_restore_of_every_type(runtime: Runtime) -> None:
    _vault(runtime)
    vault = runtime.vault
    made = {
        "ec": vault.create_key(OPERATOR, VAULT, "ec", kty="EC", crv="P-256K"),
        "aes": vault.create_key(OPERATOR, VAULT, "aes", kty="oct-HSM", size=128),
        "rsa": vault.create_key(OPERATOR, VAULT, "rsa", kty="RSA"),
    }
    wrapped = vault.wrap_key(OPERATOR, VAULT, "aes", None, "A128KW", bytes(16)).value
    blobs = {name: vault.backup_key(OPERATOR, VAULT, name) for name in made}
    for name in made:
        vault.delete_key(OPERATOR, VAULT, name)
        vault.purge_deleted_key(OPERATOR, VAULT, name)
    for name, blob in blobs.items():
        restored = vault.restore_key(OPERATOR, VAULT, blob)
        original = made[name]
        assert (restored.id, restored.kty, restored.key_size, restored.crv) == (
            original.id,
            original.kty,
            original.key_size,
            original.crv,
        )
        assert (restored.x, restored.y, restored.n, restored.e) == (
            original.x,
            original.y,
            original.n,
            original.e,
        )
    assert vault.unwrap_key(OPERATOR, VAULT, "aes", None, "A128KW", wrapped).value == bytes(16)
    header = backup_format.read_backup_header(blobs["ec"])
    decoded = backup_format.decode_backup(blobs["ec"], master_key=runtime.vault._master_key)
    assert header.name == "ec" and decoded.versions[0].crv == "P-256K"


@pytest.mark.software_protector  # a format-1 backup: HSM keys back up in format 2
def test_backups_without_key_type_fields_still_restore(runtime: Runtime) -> None:
    """A backup as made before EC keys: versions carry n and e, and no crv/x/y."""
    _vault(runtime)
    vault = runtime.vault
    made = vault.create_key(OPERATOR, VAULT, "old", kty="RSA-HSM")
    blob = vault.backup_key(OPERATOR, VAULT, "old")
    decoded = backup_format.decode_backup(blob, master_key=vault._master_key)
    assert decoded.versions[0].crv is None
    vault.delete_key(OPERATOR, VAULT, "old")
    vault.purge_deleted_key(OPERATOR, VAULT, "old")
    restored = vault.restore_key(OPERATOR, VAULT, blob)
    assert (restored.id, restored.n, restored.crv) == (made.id, made.n, None)


def test_random_bytes(runtime: Runtime) -> None:
    _vault(runtime)
    vault = runtime.vault
    assert len(vault.random_bytes(OPERATOR, VAULT, 128)) == 128
    for count in (0, 129, -1):
        with pytest.raises(BadParameter, match="between 1 and 128"):
            vault.random_bytes(OPERATOR, VAULT, count)
    stranger, _ = runtime.principals.create(OPERATOR, "nobody@contoso.com", tenant="contoso")
    with pytest.raises(Forbidden):
        vault.random_bytes(stranger.actor(), VAULT, 8)


def test_format_2_tag_matches_its_documented_layout() -> None:
    tag_key = bytes(range(32))
    members = {"crv": b"P-256", "x": b"\x01" * 32, "y": b"\x02" * 32}

    def field(data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + data

    message = (
        b"CKPT\x02"
        + field(b"vault-id")
        + field(b"key-id")
        + field(b"version")
        + field(b"EC")
        + struct.pack(">I", 3)
        + b"".join(field(name.encode()) + field(members[name]) for name in ("crv", "x", "y"))
    )
    args = dict(vault_id="vault-id", key_id="key-id", version="version", kty="EC")
    assert key_binding.tag_message_members(**args, members=members) == message
    tag = key_binding.public_tag_members(tag_key, **args, members=members)
    assert tag == b"\x02" + hmac.new(tag_key, message, hashlib.sha256).digest()
    assert key_binding.public_tag_members_match(tag_key, tag, **args, members=members)
    changed = {**members, "crv": b"P-256K"}
    assert not key_binding.public_tag_members_match(tag_key, tag, **args, members=changed)
