"""The PKCS#11 key protector against SoftHSM2 (``tests.support.softhsm``): RSA-HSM and EC-HSM
keys are made inside the token as sensitive, non-extractable objects (attributes read back from
the token), the vault row names the token object and holds no sealed private key, private
operations run in the token (RSA-OAEP-256 through raw RSA plus software OAEP decoding on
SoftHSM 2.6), software keys stay software, and a token that stops answering is a system error
the key provider classes as an outage. Start-up faults are in ``tests/hsm/test_hsm_keys_sdk.py``
(they need a process of their own)."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

import pkcs11
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, utils
from pkcs11 import Attribute, ObjectClass
from sqlalchemy import select

from customerkey.clock import FrozenClock
from customerkey.config import Settings
from customerkey.crypto.rsa import public_key_from_jwk
from customerkey.crypto.signatures import ecdsa_raw_to_der
from customerkey.errors import BadParameter, Forbidden, HsmUnavailable, KeyProviderUnavailable
from customerkey.identity.workload_principals import EXCHANGE
from customerkey.keyprovider.base import KeyUri
from customerkey.rng import SystemRng
from customerkey.runtime import Runtime
from customerkey.storage.models import KeyVersionRow
from customerkey.vault.models import OPERATOR
from tests.support.softhsm import SoftHsm

VAULT = "hsm-vault"


@pytest.fixture
def hsm_runtime(softhsm: SoftHsm, tmp_path: Path, clock: FrozenClock) -> Iterator[Runtime]:
    settings = Settings(
        home=tmp_path / "home",
        database_url=f"sqlite:///{tmp_path / 'test.db'}",
        pkcs11_module=softhsm.module,
        pkcs11_token_label=softhsm.label,
        pkcs11_pin_file=softhsm.pin_file,
    )
    rt = Runtime.open(settings, clock=clock, rng=SystemRng())
    rt.vault.create_vault(OPERATOR, VAULT, subscription="sub-1", region="eastus")
    try:
        yield rt
    finally:
        rt.close()


def _token_private_key(softhsm: SoftHsm, object_id: str) -> dict[str, object]:
    """What the token says of the key's private object (a session of the test's own)."""
    token = pkcs11.lib(softhsm.module).get_token(token_label=softhsm.label)
    try:
        session = token.open(user_pin=softhsm.pin)
    except pkcs11.exceptions.UserAlreadyLoggedIn:
        session = token.open()
    with session:
        key = session.get_key(object_class=ObjectClass.PRIVATE_KEY, id=bytes.fromhex(object_id))
        seen: dict[str, object] = {
            "sensitive": key[Attribute.SENSITIVE],
            "extractable": key[Attribute.EXTRACTABLE],
            "token": key[Attribute.TOKEN],
            "never_extractable": key[Attribute.NEVER_EXTRACTABLE],
            "label": key[Attribute.LABEL],
        }
        readable = Attribute.PRIVATE_EXPONENT if key.key_type == pkcs11.KeyType.RSA else None
        try:
            seen["private_value"] = key[readable or Attribute.VALUE]
        except pkcs11.exceptions.AttributeSensitive:
            seen["private_value"] = "refused"
        return seen


def _row(rt: Runtime, version: str) -> KeyVersionRow:
    with rt.db.read() as session:
        row = session.execute(
            select(KeyVersionRow).where(KeyVersionRow.version == version)
        ).scalar_one()
        session.expunge(row)
        return row


def test_rsa_hsm_key_lives_in_the_token_and_unwraps_there(
    hsm_runtime: Runtime, softhsm: SoftHsm
) -> None:
    vault = hsm_runtime.vault
    bundle = vault.create_key(OPERATOR, VAULT, "root", kty="RSA-HSM", size=2048)
    row = _row(hsm_runtime, bundle.id.version)
    assert row.hsm_object_id is not None and len(row.hsm_object_id) == 32
    assert row.sealed_private_key == b""  # nothing of the private key is in the database
    seen = _token_private_key(softhsm, row.hsm_object_id)
    assert seen == {
        "sensitive": True,
        "extractable": False,
        "token": True,
        "never_extractable": True,
        "label": f"customerkey {VAULT}/root",
        "private_value": "refused",
    }
    public = public_key_from_jwk({"kty": "RSA", "n": bundle.n, "e": bundle.e})
    secret = os.urandom(32)
    for alg, pad in (
        ("RSA-OAEP-256", padding.OAEP(padding.MGF1(hashes.SHA256()), hashes.SHA256(), None)),
        ("RSA-OAEP", padding.OAEP(padding.MGF1(hashes.SHA1()), hashes.SHA1(), None)),
        ("RSA1_5", padding.PKCS1v15()),
    ):
        wrapped = public.encrypt(secret, pad)
        result = vault.unwrap_key(OPERATOR, VAULT, "root", None, alg, wrapped)
        assert result.value == secret, alg
    # Server-side wrap (software, on the public key) round-trips through the token.
    wrapped = vault.wrap_key(OPERATOR, VAULT, "root", None, "RSA-OAEP-256", secret).value
    assert vault.unwrap_key(OPERATOR, VAULT, "root", None, "RSA-OAEP-256", wrapped).value == secret
    # A ciphertext that does not open is the one undetailed refusal.
    tampered = bytearray(wrapped)
    tampered[-1] ^= 1
    with pytest.raises(BadParameter, match="could not be decrypted"):
        vault.unwrap_key(OPERATOR, VAULT, "root", None, "RSA-OAEP-256", bytes(tampered))


def test_rsa_hsm_signatures_verify_under_the_public_key(hsm_runtime: Runtime) -> None:
    vault = hsm_runtime.vault
    bundle = vault.create_key(OPERATOR, VAULT, "signer", kty="RSA-HSM", size=3072)
    assert bundle.key_size == 3072
    public = public_key_from_jwk({"kty": "RSA", "n": bundle.n, "e": bundle.e})
    digest = hashlib.sha256(b"message").digest()
    rs = vault.sign(OPERATOR, VAULT, "signer", None, "RS256", digest).value
    public.verify(rs, digest, padding.PKCS1v15(), utils.Prehashed(hashes.SHA256()))
    ps = vault.sign(OPERATOR, VAULT, "signer", None, "PS256", digest).value
    public.verify(
        ps,
        digest,
        padding.PSS(padding.MGF1(hashes.SHA256()), 32),
        utils.Prehashed(hashes.SHA256()),
    )
    assert vault.verify(OPERATOR, VAULT, "signer", None, "PS256", digest, ps).verified is True


@pytest.mark.parametrize(("crv", "alg", "hash_"), [("P-256", "ES256", hashes.SHA256())])
def test_ec_hsm_signs_in_the_token(
    hsm_runtime: Runtime, softhsm: SoftHsm, crv: str, alg: str, hash_: hashes.HashAlgorithm
) -> None:
    vault = hsm_runtime.vault
    bundle = vault.create_key(OPERATOR, VAULT, "ec", kty="EC-HSM", crv=crv)
    row = _row(hsm_runtime, bundle.id.version)
    assert row.hsm_object_id is not None and row.sealed_private_key == b""
    seen = _token_private_key(softhsm, row.hsm_object_id)
    assert (seen["sensitive"], seen["extractable"], seen["private_value"]) == (
        True,
        False,
        "refused",
    )
    assert bundle.x is not None and bundle.y is not None
    public = ec.EllipticCurvePublicNumbers(
        int.from_bytes(_b64(bundle.x), "big"), int.from_bytes(_b64(bundle.y), "big"), ec.SECP256R1()
    ).public_key()
    digest = hashlib.sha256(b"ec message").digest()
    raw = vault.sign(OPERATOR, VAULT, "ec", None, alg, digest).value
    assert len(raw) == 64  # r || s, as Key Vault answers
    public.verify(ecdsa_raw_to_der(raw, crv), digest, ec.ECDSA(utils.Prehashed(hash_)))
    # A rotation makes the new version in the token too.
    rolled = vault.rotate_key(OPERATOR, VAULT, "ec")
    assert _row(hsm_runtime, rolled.id.version).hsm_object_id not in (None, row.hsm_object_id)


def _b64(text: str) -> bytes:
    import base64

    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def test_software_key_types_stay_software_and_hsm_keys_refuse_what_would_leak(
    hsm_runtime: Runtime, softhsm: SoftHsm
) -> None:
    vault = hsm_runtime.vault
    soft = vault.create_key(OPERATOR, VAULT, "soft", kty="RSA", size=2048)
    row = _row(hsm_runtime, soft.id.version)
    assert row.hsm_object_id is None and row.sealed_private_key != b""
    vault.create_key(OPERATOR, VAULT, "held", kty="RSA-HSM")
    with pytest.raises(BadParameter, match="HSM"):
        vault.backup_key(OPERATOR, VAULT, "held")
    key = rsa.generate_private_key(65537, 2048).private_numbers()

    def b64(value: int) -> str:
        import base64

        raw = value.to_bytes((value.bit_length() + 7) // 8, "big")
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    jwk = {
        "kty": "RSA-HSM",
        "n": b64(key.public_numbers.n),
        "e": b64(key.public_numbers.e),
        "d": b64(key.d),
        "p": b64(key.p),
        "q": b64(key.q),
        "dp": b64(key.dmp1),
        "dq": b64(key.dmq1),
        "qi": b64(key.iqmp),
    }
    with pytest.raises(BadParameter, match="not extractable; an exportable key cannot be"):
        vault.import_key(OPERATOR, VAULT, "exported", jwk, exportable=True)
    # Imported in plaintext (Key Vault's import with an -HSM kty), the key lives in the token
    # from then on: no sealed copy, sensitive and non-extractable there, and it works.
    imported = vault.import_key(OPERATOR, VAULT, "imported", jwk)
    row = _row(hsm_runtime, imported.id.version)
    assert row.hsm_object_id is not None and row.sealed_private_key == b""
    seen = _token_private_key(softhsm, row.hsm_object_id)
    assert seen["sensitive"] is True and seen["extractable"] is False
    assert seen["private_value"] == "refused"
    secret = os.urandom(32)
    oaep = padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None)
    wrapped = key.public_numbers.public_key().encrypt(secret, oaep)
    assert vault.unwrap_key(OPERATOR, VAULT, "imported", None, "RSA-OAEP-256", wrapped).value == (
        secret
    )
    # A caller who may not import leaves nothing in the token.
    before = _count_objects(softhsm)
    outsider, _ = hsm_runtime.principals.create(OPERATOR, "mallory@contoso.com", tenant="contoso")
    with pytest.raises(Forbidden):
        vault.import_key(outsider.actor(), VAULT, "sneaked", jwk)
    assert _count_objects(softhsm) == before


def _count_objects(softhsm: SoftHsm) -> int:
    token = pkcs11.lib(softhsm.module).get_token(token_label=softhsm.label)
    try:
        session = token.open(user_pin=softhsm.pin)
    except pkcs11.exceptions.UserAlreadyLoggedIn:
        session = token.open()
    with session:
        return len(list(session.get_objects()))


def test_a_token_that_stops_answering_is_a_system_error(
    hsm_runtime: Runtime, softhsm: SoftHsm
) -> None:
    vault = hsm_runtime.vault
    bundle = vault.create_key(OPERATOR, VAULT, "root", kty="RSA-HSM")
    vault.set_access_policy(OPERATOR, VAULT, EXCHANGE.app_id, ["wrapKey", "unwrapKey", "get"])
    provider = hsm_runtime.routers["mailbox"]
    uri = KeyUri.parse(f"https://{VAULT}.vault.azure.net/keys/root/{bundle.id.version}")
    wrapped = provider.wrap(uri, b"k" * 32)
    assert provider.unwrap(uri, wrapped.wrapped) == b"k" * 32
    library = pkcs11.lib(softhsm.module)
    library.finalize()  # the module goes away under the running service
    try:
        with pytest.raises(HsmUnavailable):
            vault.unwrap_key(OPERATOR, VAULT, "root", None, "RSA-OAEP-256", wrapped.wrapped)
        with pytest.raises(KeyProviderUnavailable):
            provider.unwrap(uri, wrapped.wrapped)
    finally:
        library.initialize()
    # Back again: the next operation opens a new session and logs in, without a restart.
    assert provider.unwrap(uri, wrapped.wrapped) == b"k" * 32
