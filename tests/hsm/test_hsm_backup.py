"""HSM key backup and restore under a security domain, against real SoftHSM2 tokens
(``tests.support.softhsm``): token A creates a security domain with ``customerkey hsm
security-domain create`` (the SO PIN), token B imports A's through a transfer request (the key
never leaves a token in the clear), token C creates one of its own. Each "installation" is a
Runtime with a home (and master key) of its own on one of those tokens.

What an attacker holding the user PIN tries, and the token refuses: wrapping a key version
under a key of their own, reading its private value, wrapping it under the domain and
unwrapping it again as a readable key, giving the domain key a decrypt use. Backups: the same
installation after a purge, a second installation of the same domain, one of another domain
(refused, nothing changed), tampering (refused, undetailed), keys made before the domain
(refused, saying why), and the format-2 wire format's known answer."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pkcs11
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, utils
from cryptography.hazmat.primitives.keywrap import aes_key_wrap
from pkcs11 import Attribute, KeyType, Mechanism, ObjectClass
from pkcs11 import exceptions as p11
from sqlalchemy import select

from customerkey.clock import FrozenClock, from_unix
from customerkey.config import Settings
from customerkey.crypto.ec import ec_public_key_from_jwk
from customerkey.crypto.rsa import b64url_encode, public_key_from_jwk
from customerkey.crypto.signatures import ecdsa_raw_to_der
from customerkey.errors import InvalidBackup, KeyNotBackupable, SecurityDomainMismatch
from customerkey.hsm.security_domain import DOMAIN_LABEL
from customerkey.rng import SystemRng
from customerkey.runtime import Runtime
from customerkey.storage.models import KeyRow, KeyVersionRow
from customerkey.vault import backup as backup_format
from customerkey.vault.byok import wrap_for_kek
from customerkey.vault.models import OPERATOR
from tests.support.hsm_backup_vector import VECTORS, SoftwareSeal, vector_backup
from tests.support.softhsm import SoftHsm, hsm_cli

VAULT = "dr-vault"
OAEP256 = padding.OAEP(padding.MGF1(hashes.SHA256()), hashes.SHA256(), None)


@pytest.fixture(scope="module")
def domains(softhsm: SoftHsm, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A creates a domain, B imports A's, C creates its own (each once per token folder)."""
    work = tmp_path_factory.mktemp("domains")
    a, b, c = (softhsm.other(f"customerkey-dr-{x}") for x in "abc")
    found = {t.label: hsm_cli(t, work, "hsm", "security-domain", "show") for t in (a, b, c)}
    if found[a.label]["SecurityDomain"] is None:
        hsm_cli(a, work, "hsm", "security-domain", "create")
    if found[b.label]["SecurityDomain"] is None:
        hsm_cli(b, work, "hsm", "security-domain", "request", "--out", str(work / "b.pem"))
        assert b"BEGIN PUBLIC KEY" in (work / "b.pem").read_bytes()
        hsm_cli(
            a,
            work,
            "hsm",
            "security-domain",
            "export",
            "--request",
            str(work / "b.pem"),
            "--out",
            str(work / "a-to-b.json"),
        )
        hsm_cli(b, work, "hsm", "security-domain", "import", str(work / "a-to-b.json"))
    if found[c.label]["SecurityDomain"] is None:
        hsm_cli(c, work, "hsm", "security-domain", "create")
    return {
        t.label: hsm_cli(t, work, "hsm", "security-domain", "show")["SecurityDomain"]
        for t in (a, b, c)
    }


Open = Callable[[SoftHsm, str], Runtime]


@pytest.fixture
def installation(tmp_path: Path, clock: FrozenClock) -> Iterator[Open]:
    opened: list[Runtime] = []

    def open_(token: SoftHsm, name: str) -> Runtime:
        settings = Settings(
            home=tmp_path / name,
            database_url=f"sqlite:///{tmp_path / name}.db",
            pkcs11_module=token.module,
            pkcs11_token_label=token.label,
            pkcs11_pin_file=token.pin_file,
        )
        rt = Runtime.open(settings, clock=clock, rng=SystemRng())
        rt.vault.create_vault(OPERATOR, VAULT, subscription="sub-dr", region="eastus")
        opened.append(rt)
        return rt

    yield open_
    for rt in opened:
        rt.close()


def _session(token: SoftHsm) -> Any:
    """A session of the test's own (the runtime of the test has logged the process in)."""
    lib_token = pkcs11.lib(token.module).get_token(token_label=token.label)
    try:
        return lib_token.open(rw=True, user_pin=token.pin)
    except p11.UserAlreadyLoggedIn:
        return lib_token.open(rw=True)


def _object_id(rt: Runtime, version: str) -> str:
    with rt.db.read() as session:
        row = session.execute(
            select(KeyVersionRow).where(KeyVersionRow.version == version)
        ).scalar_one()
        assert row.hsm_object_id is not None and row.sealed_private_key == b""
        return row.hsm_object_id


def _objects(token: SoftHsm) -> int:
    with _session(token) as session:
        return len(list(session.get_objects()))


def _private(session: Any, object_id: str) -> Any:
    return session.get_key(object_class=ObjectClass.PRIVATE_KEY, id=bytes.fromhex(object_id))


def test_the_domains_are_shared_only_where_imported(domains: dict[str, str]) -> None:
    a, b, c = (domains[f"customerkey-dr-{x}"] for x in "abc")
    assert a is not None and len(a) == 16
    assert b == a and c != a


def test_an_attacker_with_the_user_pin_cannot_get_a_key_out(
    domains: dict[str, str], softhsm: SoftHsm, installation: Open
) -> None:
    token = softhsm.other("customerkey-dr-a")
    rt = installation(token, "a")
    rsa_key = rt.vault.create_key(OPERATOR, VAULT, "victim", kty="RSA-HSM", size=2048)
    ec_key = rt.vault.create_key(OPERATOR, VAULT, "victim-ec", kty="EC-HSM", crv="P-256")
    with _session(token) as session:
        domain = session.get_key(object_class=ObjectClass.SECRET_KEY, label=DOMAIN_LABEL)
        assert [domain[a] for a in (Attribute.TRUSTED, Attribute.PRIVATE, Attribute.TOKEN)] == [
            True,
            True,
            True,
        ]
        assert domain[Attribute.SENSITIVE] and not domain[Attribute.MODIFIABLE]
        with pytest.raises(p11.AttributeSensitive):
            domain[Attribute.VALUE]
        mine = session.generate_key(
            KeyType.AES, 256, store=False, template={Attribute.WRAP: True, Attribute.UNWRAP: True}
        )
        for version, secret in (
            (rsa_key.id.version, Attribute.PRIVATE_EXPONENT),
            (ec_key.id.version, Attribute.VALUE),
        ):
            private = _private(session, _object_id(rt, version))
            assert private[Attribute.EXTRACTABLE] and private[Attribute.WRAP_WITH_TRUSTED]
            with pytest.raises(p11.AttributeSensitive):
                private[secret]
            for mechanism in (Mechanism.AES_KEY_WRAP_PAD, Mechanism.AES_KEY_WRAP):
                with pytest.raises(p11.KeyNotWrappable):
                    mine.wrap_key(private, mechanism=mechanism)
            with pytest.raises((p11.AttributeReadOnly, p11.TemplateInconsistent)):
                private[Attribute.WRAP_WITH_TRUSTED] = False
        # Wrapped under the domain (allowed), it unwraps only as a key as protected as before.
        private = _private(session, _object_id(rt, rsa_key.id.version))
        wrapped = domain.wrap_key(private, mechanism=Mechanism.AES_KEY_WRAP_PAD)
        for cls, kty, template in (
            (ObjectClass.PRIVATE_KEY, KeyType.RSA, {Attribute.SENSITIVE: False}),
            (ObjectClass.SECRET_KEY, KeyType.GENERIC_SECRET, {Attribute.SENSITIVE: False}),
            (ObjectClass.PRIVATE_KEY, KeyType.RSA, {Attribute.WRAP_WITH_TRUSTED: False}),
        ):
            readable = {
                Attribute.EXTRACTABLE: True,
                Attribute.PRIVATE: True,
                Attribute.SENSITIVE: True,
                Attribute.WRAP_WITH_TRUSTED: True,
                **template,
            }
            if cls == ObjectClass.PRIVATE_KEY:
                readable |= {a: pkcs11.DEFAULT for a in (Attribute.ENCRYPT, Attribute.VERIFY)}
                readable[Attribute.WRAP] = pkcs11.DEFAULT
            with pytest.raises(p11.TemplateInconsistent):
                domain.unwrap_key(
                    cls,
                    kty,
                    wrapped,
                    mechanism=Mechanism.AES_KEY_WRAP_PAD,
                    capabilities=0,
                    template=readable,
                )
        # Nor can the domain key be given a use that would undo a wrap (AES-ECB decryption).
        with pytest.raises(p11.PKCS11Error):
            domain[Attribute.DECRYPT] = True
        with pytest.raises(p11.PKCS11Error):
            domain.copy({Attribute.DECRYPT: True})
        with pytest.raises(p11.MechanismInvalid):
            domain.wrap_key(private, mechanism=Mechanism.AES_KEY_WRAP)


def test_keys_made_before_the_domain_are_refused_saying_why(
    softhsm: SoftHsm, installation: Open
) -> None:
    rt = installation(softhsm, "main")  # this session's main token never gets a domain
    rt.vault.create_key(OPERATOR, VAULT, "old", kty="RSA-HSM", size=2048)
    with pytest.raises(KeyNotBackupable, match="holds no security domain"):
        rt.vault.backup_key(OPERATOR, VAULT, "old")


def test_backup_purge_restore_in_the_same_installation(
    domains: dict[str, str], softhsm: SoftHsm, installation: Open
) -> None:
    token = softhsm.other("customerkey-dr-a")
    rt = installation(token, "a")
    first = rt.vault.create_key(OPERATOR, VAULT, "root", kty="RSA-HSM", size=2048)
    second = rt.vault.rotate_key(OPERATOR, VAULT, "root")
    versions = [first.id.version, second.id.version]
    old_objects = [_object_id(rt, v) for v in versions]
    public = public_key_from_jwk({"kty": "RSA", "n": first.n, "e": first.e})
    secret = os.urandom(32)
    wrapped_to_first = public.encrypt(secret, OAEP256)
    blob = rt.vault.backup_key(OPERATOR, VAULT, "root")
    assert blob[:5] == b"CKBK\x02"
    assert backup_format.read_backup_header(blob).security_domain == domains[token.label]
    rt.vault.delete_key(OPERATOR, VAULT, "root")
    rt.vault.purge_deleted_key(OPERATOR, VAULT, "root")
    with _session(token) as session:
        for object_id in old_objects:
            assert list(session.get_objects({Attribute.ID: bytes.fromhex(object_id)})) == []
    rt.vault.destroy_token_objects(old_objects)  # already gone: no error on a rerun

    restored = rt.vault.restore_key(OPERATOR, VAULT, blob)
    assert restored.id.version == second.id.version
    new_objects = [_object_id(rt, v) for v in versions]  # both versions, same ids, in the token
    assert set(new_objects).isdisjoint(old_objects)
    result = rt.vault.unwrap_key(
        OPERATOR, VAULT, "root", first.id.version, "RSA-OAEP-256", wrapped_to_first
    )
    assert result.value == secret
    with _session(token) as session:
        restored_key = _private(session, new_objects[0])
        assert restored_key[Attribute.SENSITIVE] and restored_key[Attribute.WRAP_WITH_TRUSTED]
        with pytest.raises(p11.AttributeSensitive):
            restored_key[Attribute.PRIVATE_EXPONENT]
    # What was restored backs up again.
    assert rt.vault.backup_key(OPERATOR, VAULT, "root")[:5] == b"CKBK\x02"


def test_a_backup_restores_where_the_domain_was_shared_and_nowhere_else(
    domains: dict[str, str], softhsm: SoftHsm, installation: Open
) -> None:
    a_token, b_token, c_token = (softhsm.other(f"customerkey-dr-{x}") for x in "abc")
    a = installation(a_token, "a")
    key = a.vault.create_key(OPERATOR, VAULT, "shared-ec", kty="EC-HSM", crv="P-256")
    blob = a.vault.backup_key(OPERATOR, VAULT, "shared-ec")

    c = installation(c_token, "c")
    before = _objects(c_token)
    with pytest.raises(SecurityDomainMismatch, match=domains[a_token.label]):
        c.vault.restore_key(OPERATOR, VAULT, blob)
    assert _objects(c_token) == before
    with c.db.read() as session:
        assert session.execute(select(KeyRow)).first() is None

    b = installation(b_token, "b")  # another home: another master key
    restored = b.vault.restore_key(OPERATOR, VAULT, blob)
    assert restored.id.version == key.id.version
    digest = hashlib.sha256(b"signed in B").digest()
    signature = b.vault.sign(OPERATOR, VAULT, "shared-ec", None, "ES256", digest).value
    public = ec_public_key_from_jwk({"kty": "EC", "crv": "P-256", "x": key.x, "y": key.y})
    public.verify(
        ecdsa_raw_to_der(signature, "P-256"), digest, ec.ECDSA(utils.Prehashed(hashes.SHA256()))
    )


def test_a_tampered_backup_is_refused_undetailed_and_changes_nothing(
    domains: dict[str, str], softhsm: SoftHsm, installation: Open
) -> None:
    token = softhsm.other("customerkey-dr-b")
    rt = installation(token, "b")
    rt.vault.create_key(OPERATOR, VAULT, "t", kty="RSA-HSM", size=2048)
    blob = rt.vault.backup_key(OPERATOR, VAULT, "t")
    rt.vault.delete_key(OPERATOR, VAULT, "t")
    rt.vault.purge_deleted_key(OPERATOR, VAULT, "t")
    before = _objects(token)
    header_len = int.from_bytes(blob[5:7], "big")
    key_at = 7 + header_len + 2
    for position in (key_at + 3, key_at + 60, len(blob) - 1, len(blob) - 200):
        tampered = bytearray(blob)
        tampered[position] ^= 0x01
        with pytest.raises(InvalidBackup) as refused:
            rt.vault.restore_key(OPERATOR, VAULT, bytes(tampered))
        assert refused.value.message == backup_format.CORRUPT
    assert _objects(token) == before
    with rt.db.read() as session:
        assert session.execute(select(KeyRow)).first() is None
    assert rt.vault.restore_key(OPERATOR, VAULT, blob).id.name == "t"


def test_format_2_known_answer_and_format_1_still_reads() -> None:
    vector = json.loads(VECTORS.read_text())
    seal = SoftwareSeal(vector)
    blob = backup_format.encode_hsm_backup(vector_backup(vector), seal_in_token=seal.seal)
    assert blob.hex() == vector["blob"]
    decoded = backup_format.decode_backup(blob, master_key=bytes(32), open_in_token=seal.open)
    assert decoded.versions[0].wrapped == bytes.fromhex(vector["wrapped_version"])
    assert decoded.header.security_domain == vector["security_domain"]
    with pytest.raises(InvalidBackup):  # format 2 never opens under a master key alone
        backup_format.decode_backup(blob, master_key=bytes(32))
    v1 = backup_format.encode_backup(
        backup_format.KeyBackup(
            header=backup_format.BackupHeader("k", "s", "r", from_unix(1_700_000_000)),
            rotation_policy=None,
            versions=(
                backup_format.BackupVersion(
                    **{
                        **vector_backup(vector).versions[0].__dict__,
                        "kty": "RSA",
                        "private_der": b"der",
                        "wrapped": None,
                    }
                ),
            ),
        ),
        master_key=bytes(32),
        master_key_id="m",
    )
    assert v1[:5] == b"CKBK\x01"
    assert backup_format.decode_backup(v1, master_key=bytes(32)).versions[0].private_der == b"der"


def _in_token(token: SoftHsm, object_ids: list[str]) -> list[bool]:
    with _session(token) as session:
        return [
            bool(list(session.get_objects({Attribute.ID: bytes.fromhex(object_id)})))
            for object_id in object_ids
        ]


def test_a_vault_purge_and_the_schedulers_purges_destroy_the_token_objects(
    domains: dict[str, str], softhsm: SoftHsm, installation: Open, clock: FrozenClock
) -> None:
    token = softhsm.other("customerkey-dr-a")
    rt = installation(token, "purges")
    # A vault purged at once: every version of every key, live and deleted, leaves the token.
    rt.vault.create_vault(OPERATOR, "gone-vault", subscription="sub-dr", region="eastus")
    live = rt.vault.create_key(OPERATOR, "gone-vault", "live", kty="RSA-HSM", size=2048)
    rotated = rt.vault.rotate_key(OPERATOR, "gone-vault", "live")
    deleted = rt.vault.create_key(OPERATOR, "gone-vault", "deleted", kty="EC-HSM", crv="P-256")
    rt.vault.delete_key(OPERATOR, "gone-vault", "deleted")
    vault_objects = [
        _object_id(rt, v) for v in (live.id.version, rotated.id.version, deleted.id.version)
    ]
    kept = rt.vault.create_key(OPERATOR, VAULT, "kept", kty="RSA-HSM", size=2048)
    kept_object = _object_id(rt, kept.id.version)
    assert _in_token(token, vault_objects) == [True, True, True]
    rt.vault.delete_vault(OPERATOR, "gone-vault")
    assert _in_token(token, vault_objects) == [True, True, True]  # soft-deleted: recoverable
    rt.vault.purge_vault(OPERATOR, "gone-vault")
    assert _in_token(token, vault_objects) == [False, False, False]

    # A key and a vault whose retention ends are purged by the scheduler, token objects too.
    rt.vault.create_vault(
        OPERATOR, "retained", subscription="sub-dr", region="eastus", retention_days=7
    )
    in_vault = rt.vault.create_key(OPERATOR, "retained", "k", kty="RSA-HSM", size=2048)
    expiring = rt.vault.create_key(OPERATOR, VAULT, "expiring", kty="RSA-HSM", size=2048)
    scheduled = [_object_id(rt, in_vault.id.version), _object_id(rt, expiring.id.version)]
    rt.vault.delete_vault(OPERATOR, "retained")
    rt.vault.delete_key(OPERATOR, VAULT, "expiring")
    clock.advance(timedelta(days=6))
    rt.vault.tick(OPERATOR)
    assert _in_token(token, scheduled) == [True, True]
    clock.advance(timedelta(days=91))
    report = rt.vault.tick(OPERATOR)
    assert report.purged_vaults == ("retained",) and report.purged_keys == (f"{VAULT}/expiring",)
    assert _in_token(token, scheduled) == [False, False]
    assert _in_token(token, [kept_object]) == [True]  # nothing else was touched


def test_oct_hsm_and_byok_keys_back_up_and_restore_a_kek_does_not(
    domains: dict[str, str], softhsm: SoftHsm, installation: Open
) -> None:
    token = softhsm.other("customerkey-dr-a")
    rt = installation(token, "kinds")
    kek = rt.vault.create_key(OPERATOR, VAULT, "kek", kty="RSA-HSM", size=2048, key_ops=["import"])
    kek_public = public_key_from_jwk({"kty": "RSA", "n": kek.n, "e": kek.e})
    assert isinstance(kek_public, rsa.RSAPublicKey)
    kid = f"https://{VAULT}.vault.azure.net/keys/kek/{kek.id.version}"
    with pytest.raises(KeyNotBackupable, match="or is a key exchange key"):
        rt.vault.backup_key(OPERATOR, VAULT, "kek")

    aes_key = os.urandom(32)
    brought_rsa = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    rt.vault.create_key(OPERATOR, VAULT, "aes", kty="oct-HSM", size=256)
    brought: dict[str, tuple[str, rsa.RSAPrivateKey | bytes]] = {
        "brought-aes": ("oct-HSM", aes_key),
        "brought-rsa": ("RSA-HSM", brought_rsa),
    }
    for name, (kty, material) in brought.items():
        blob = wrap_for_kek(kek_public, kid, material, aes_key=os.urandom(32))
        rt.vault.import_key(OPERATOR, VAULT, name, {"kty": kty, "key_hsm": b64url_encode(blob)})
    nonce, aad, secret = os.urandom(12), b"restore check", os.urandom(48)
    sealed = rt.vault.crypto(
        OPERATOR, "encrypt", VAULT, "aes", None, "A256GCM", secret, iv=nonce, aad=aad
    )
    wrapped_to_rsa = brought_rsa.public_key().encrypt(secret, OAEP256)

    names = ("aes", "brought-aes", "brought-rsa")
    old = [_held_object(rt, name) for name in names]
    backups = [rt.vault.backup_key(OPERATOR, VAULT, name) for name in names]
    for name in names:
        rt.vault.delete_key(OPERATOR, VAULT, name)
        rt.vault.purge_deleted_key(OPERATOR, VAULT, name)
    assert _in_token(token, old) == [False, False, False]
    for blob in backups:
        assert blob[:5] == b"CKBK\x02"
        rt.vault.restore_key(OPERATOR, VAULT, blob)

    # The generated AES key opens, in the token, what it sealed before the purge.
    opened = rt.vault.crypto(
        OPERATOR,
        "decrypt",
        VAULT,
        "aes",
        None,
        "A256GCM",
        sealed.value,
        iv=nonce,
        aad=aad,
        tag=sealed.tag,
    )
    assert opened.value == secret
    # The brought AES key gives pyca's answer for its known value; the brought RSA key unwraps.
    kw = rt.vault.crypto(OPERATOR, "wrapKey", VAULT, "brought-aes", None, "A256KW", secret[:32])
    assert kw.value == aes_key_wrap(aes_key, secret[:32])
    unwrapped = rt.vault.unwrap_key(
        OPERATOR, VAULT, "brought-rsa", None, "RSA-OAEP-256", wrapped_to_rsa
    )
    assert unwrapped.value == secret
    with _session(token) as session:
        for name in names:
            (held,) = list(
                session.get_objects({Attribute.ID: bytes.fromhex(_held_object(rt, name))})
            )
            assert held[Attribute.SENSITIVE] and held[Attribute.WRAP_WITH_TRUSTED]


def _held_object(rt: Runtime, name: str) -> str:
    with rt.db.read() as session:
        key_id = session.execute(select(KeyRow.id).where(KeyRow.name == name)).scalar_one()
        object_id = session.execute(
            select(KeyVersionRow.hsm_object_id).where(KeyVersionRow.key_id == key_id)
        ).scalar_one()
    assert object_id is not None
    return object_id
