"""oct-HSM keys in the SoftHSM2 token (``hsm.aes``) and EC-HSM/oct-HSM BYOK (``hsm.byok``), in
process: AES keys made in the token as sensitive, never-extractable secret keys (attributes
read back), every AES algorithm run there, tampering refused undetailed, SoftHSM's lax input
rules not let through; known answers: each published vector's key brought into the token by
BYOK, and the token's output compared with the vector and with pyca/cryptography; EC keys of
every curve brought in by BYOK, their public point recovered in the token."""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pkcs11
import pytest
from cryptography.hazmat.primitives import hashes, padding
from cryptography.hazmat.primitives.asymmetric import ec, rsa, utils
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.keywrap import aes_key_wrap, aes_key_wrap_with_padding
from pkcs11 import Attribute, ObjectClass
from sqlalchemy import select

from customerkey.clock import FrozenClock
from customerkey.config import Settings
from customerkey.crypto.rsa import b64url_decode, b64url_encode, public_key_from_jwk
from customerkey.crypto.signatures import ecdsa_raw_to_der
from customerkey.errors import BadParameter, CustomerKeyError
from customerkey.rng import SystemRng
from customerkey.runtime import Runtime
from customerkey.storage.models import KeyVersionRow
from customerkey.vault.byok import wrap_for_kek
from customerkey.vault.models import OPERATOR, KeyBundle
from tests.support.softhsm import SoftHsm

VAULT = "hsm-oct"
VECTORS = Path(__file__).resolve().parents[1] / "vectors"
KEY_TYPES = json.loads((VECTORS / "key_types.json").read_text())
KWP = json.loads((VECTORS / "aes_kwp.json").read_text())
UNDETAILED = "The ciphertext could not be decrypted with this key."


@dataclass
class Hsm:
    rt: Runtime
    softhsm: SoftHsm
    kek: rsa.RSAPublicKey
    kid: str

    def bring(self, name: str, key: Any, kty: str) -> KeyBundle:
        """``key`` (AES bytes or an EC private key) imported by BYOK."""
        blob = wrap_for_kek(self.kek, self.kid, key, aes_key=os.urandom(32))
        return self.rt.vault.import_key(
            OPERATOR, VAULT, name, {"kty": kty, "key_hsm": b64url_encode(blob)}
        )

    def op(self, operation: str, name: str, alg: str, value: bytes, **extra: Any) -> Any:
        return self.rt.vault.crypto(OPERATOR, operation, VAULT, name, None, alg, value, **extra)


@pytest.fixture(scope="module")
def hsm(softhsm: SoftHsm, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hsm]:
    folder = tmp_path_factory.mktemp("oct")
    settings = Settings(
        home=folder / "home",
        database_url=f"sqlite:///{folder / 'test.db'}",
        pkcs11_module=softhsm.module,
        pkcs11_token_label=softhsm.label,
        pkcs11_pin_file=softhsm.pin_file,
    )
    rt = Runtime.open(settings, clock=FrozenClock(), rng=SystemRng())
    try:
        rt.vault.create_vault(OPERATOR, VAULT, subscription="sub-1", region="eastus")
        kek = rt.vault.create_key(
            OPERATOR, VAULT, "kek", kty="RSA-HSM", size=2048, key_ops=["import"]
        )
        public = public_key_from_jwk({"kty": "RSA", "n": kek.n, "e": kek.e})
        assert isinstance(public, rsa.RSAPublicKey)
        kid = f"https://{VAULT}.vault.azure.net/keys/kek/{kek.id.version}"
        yield Hsm(rt, softhsm, public, kid)
    finally:
        rt.close()


def _row(rt: Runtime, version: str) -> KeyVersionRow:
    with rt.db.read() as session:
        row = session.execute(
            select(KeyVersionRow).where(KeyVersionRow.version == version)
        ).scalar_one()
        session.expunge(row)
        return row


def _token_objects(softhsm: SoftHsm, object_class: ObjectClass, **match: str) -> list[Any]:
    """What the token says of its objects of ``object_class`` with this CKA_ID or label."""
    token = pkcs11.lib(softhsm.module).get_token(token_label=softhsm.label)
    try:
        session = token.open(user_pin=softhsm.pin)
    except pkcs11.exceptions.UserAlreadyLoggedIn:
        session = token.open()
    template: dict[Attribute, object] = {Attribute.CLASS: object_class}
    if "object_id" in match:
        template[Attribute.ID] = bytes.fromhex(match["object_id"])
    if "label" in match:
        template[Attribute.LABEL] = match["label"]
    with session:
        seen = []
        for key in session.get_objects(template):
            found: dict[str, object] = {
                a.name.lower(): key[a]
                for a in (
                    Attribute.TOKEN,
                    Attribute.PRIVATE,
                    Attribute.SENSITIVE,
                    Attribute.EXTRACTABLE,
                    Attribute.SIGN,
                    Attribute.DERIVE,
                )
            }
            if object_class == ObjectClass.SECRET_KEY:
                for a in (
                    Attribute.ENCRYPT,
                    Attribute.DECRYPT,
                    Attribute.WRAP,
                    Attribute.UNWRAP,
                    Attribute.NEVER_EXTRACTABLE,
                ):
                    found[a.name.lower()] = key[a]
            try:
                found["value"] = bytes(key[Attribute.VALUE])
            except pkcs11.exceptions.AttributeSensitive:
                found["value"] = "refused"
            seen.append(found)
        return seen


# ------------------------------------------------------------------ keys made in the token


@pytest.mark.parametrize("bits", [128, 192, 256])
def test_an_oct_hsm_key_is_made_in_the_token_and_every_algorithm_runs_there(
    hsm: Hsm, bits: int
) -> None:
    name = f"aes-{bits}"
    bundle = hsm.rt.vault.create_key(OPERATOR, VAULT, name, kty="oct-HSM", size=bits)
    assert (bundle.kty, bundle.key_size, bundle.n, bundle.x) == ("oct-HSM", bits, "", None)
    row = _row(hsm.rt, bundle.id.version)
    assert row.sealed_private_key == b"" and row.hsm_object_id is not None
    [seen] = _token_objects(hsm.softhsm, ObjectClass.SECRET_KEY, object_id=row.hsm_object_id)
    assert seen == {
        "token": True,
        "private": True,
        "sensitive": True,
        "extractable": False,
        "never_extractable": True,
        "sign": False,
        "derive": False,
        "encrypt": True,
        "decrypt": True,
        "wrap": True,
        "unwrap": True,
        "value": "refused",
    }
    secret = os.urandom(32)
    for alg in (f"A{bits}KW", "CKM_AES_KEY_WRAP", "CKM_AES_KEY_WRAP_PAD"):
        wrapped = hsm.op("wrapKey", name, alg, secret).value
        assert len(wrapped) == 40 and wrapped != secret
        assert hsm.op("unwrapKey", name, alg, wrapped).value == secret, alg
    # SoftHSM's KWP gets keys of other lengths wrong (hsm.aes): refused, not done elsewhere.
    with pytest.raises(BadParameter, match="whole 8-byte blocks; the key given is 17 bytes"):
        hsm.op("wrapKey", name, "CKM_AES_KEY_WRAP_PAD", b"seventeen bytes!!")
    plaintext = b"attack at dawn" * 3
    sealed = hsm.op("encrypt", name, f"A{bits}GCM", plaintext, aad=b"header")
    assert sealed.iv is not None and len(sealed.iv) == 12 and sealed.tag is not None
    assert sealed.aad == b"header" and sealed.value != plaintext[: len(sealed.value)]
    opened = hsm.op(
        "decrypt", name, f"A{bits}GCM", sealed.value, iv=sealed.iv, tag=sealed.tag, aad=b"header"
    )
    assert opened.value == plaintext
    for alg, text in ((f"A{bits}CBC", b"b" * 32), (f"A{bits}CBCPAD", plaintext)):
        sealed = hsm.op("encrypt", name, alg, text)
        assert sealed.iv is not None and len(sealed.iv) == 16
        assert hsm.op("decrypt", name, alg, sealed.value, iv=sealed.iv).value == text, alg
    # A rotation makes the new version in the token too.
    rolled = hsm.rt.vault.rotate_key(OPERATOR, VAULT, name)
    assert _row(hsm.rt, rolled.id.version).hsm_object_id not in (None, row.hsm_object_id)


def test_tampering_is_refused_undetailed(hsm: Hsm) -> None:
    hsm.rt.vault.create_key(OPERATOR, VAULT, "tamper", kty="oct-HSM", size=256)
    sealed = hsm.op("encrypt", "tamper", "A256GCM", b"secret message", aad=b"aad")
    assert sealed.iv is not None and sealed.tag is not None

    def flip(data: bytes, at: int = 0) -> bytes:
        changed = bytearray(data)
        changed[at] ^= 0x01
        return bytes(changed)

    for value, iv, tag, aad in (
        (flip(sealed.value), sealed.iv, sealed.tag, b"aad"),
        (sealed.value, sealed.iv, flip(sealed.tag, -1), b"aad"),
        (sealed.value, sealed.iv, sealed.tag, b"aae"),
        (sealed.value, flip(sealed.iv), sealed.tag, b"aad"),
        (sealed.value, sealed.iv, sealed.tag, None),
    ):
        with pytest.raises(BadParameter) as info:
            hsm.op("decrypt", "tamper", "A256GCM", value, iv=iv, tag=tag, aad=aad)
        assert info.value.message == UNDETAILED
    wrapped = hsm.op("wrapKey", "tamper", "A256KW", b"k" * 16).value
    for alg in ("A256KW", "CKM_AES_KEY_WRAP_PAD"):
        with pytest.raises(BadParameter) as info:
            hsm.op("unwrapKey", "tamper", alg, flip(wrapped, 5))
        assert info.value.message == UNDETAILED
    # CBC-PAD: a one-block message of 15 bytes ends in the pad byte 01; flipping two bits of
    # the IV's last byte makes it 02, which byte 14 (not 02) does not match.
    sealed = hsm.op("encrypt", "tamper", "A256CBCPAD", b"fifteen bytes!!")
    assert sealed.iv is not None
    bad_iv = bytearray(sealed.iv)
    bad_iv[-1] ^= 0x03
    with pytest.raises(BadParameter) as info:
        hsm.op("decrypt", "tamper", "A256CBCPAD", sealed.value, iv=bytes(bad_iv))
    assert info.value.message == UNDETAILED
    with pytest.raises(BadParameter) as info:
        hsm.op("decrypt", "tamper", "A256CBCPAD", sealed.value[:-3], iv=sealed.iv)
    assert info.value.message == UNDETAILED


def test_what_softhsm_would_accept_but_the_algorithms_do_not_is_refused(hsm: Hsm) -> None:
    hsm.rt.vault.create_key(OPERATOR, VAULT, "strict", kty="oct-HSM", size=128)
    # SoftHSM pads a CKM_AES_KEY_WRAP input of 20 bytes; RFC 3394 takes whole 8-byte blocks.
    with pytest.raises(BadParameter, match="whole 8-byte blocks"):
        hsm.op("wrapKey", "strict", "A128KW", b"t" * 20)
    with pytest.raises(BadParameter, match="whole 16-byte blocks"):
        hsm.op("encrypt", "strict", "A128CBC", b"t" * 20)
    with pytest.raises(BadParameter, match="needs a 256-bit AES key"):
        hsm.op("encrypt", "strict", "A256GCM", b"t")
    with pytest.raises(BadParameter, match="cannot be used with this oct-HSM key"):
        hsm.op("sign", "strict", "ES256", hashlib.sha256(b"x").digest())


# ------------------------------------------------------------------ known answers, via BYOK


def _kat(hsm: Hsm, key_hex: str, name: str) -> str:
    name = re.sub("[^A-Za-z0-9-]", "-", name)
    bundle = hsm.bring(name, bytes.fromhex(key_hex), "oct-HSM")
    assert bundle.kty == "oct-HSM" and bundle.key_size == len(key_hex) * 4
    return name


@pytest.mark.parametrize("case", KEY_TYPES["aes_kw"], ids=lambda c: c["name"])
def test_aes_kw_in_the_token_gives_the_published_answer(hsm: Hsm, case: dict[str, str]) -> None:
    name = _kat(hsm, case["kek"], f"kat-{case['name']}")
    kek, key, expected = (bytes.fromhex(case[k]) for k in ("kek", "key", "wrapped"))
    assert aes_key_wrap(kek, key) == expected  # pyca agrees with the vector
    alg = f"A{len(kek) * 8}KW"
    assert hsm.op("wrapKey", name, alg, key).value == expected
    assert hsm.op("wrapKey", name, "CKM_AES_KEY_WRAP", key).value == expected
    assert hsm.op("unwrapKey", name, alg, expected).value == key


# SoftHSM 2.6.1's KWP is RFC 5649 for whole 8-byte blocks only (hsm.aes): those cases run.
KWP_CASES = [
    c
    for c in KWP["cases"]
    if c["valid"] and len(c["kek"]) in (32, 48, 64) and c["key"] and len(c["key"]) % 16 == 0
]
KWP_ODD = [c for c in KWP["cases"] if c["valid"] and len(c["key"]) % 16]


@pytest.mark.parametrize("case", KWP_CASES, ids=lambda c: c["name"])
def test_aes_kwp_in_the_token_gives_the_published_answer(hsm: Hsm, case: dict[str, Any]) -> None:
    name = _kat(hsm, case["kek"], f"kwp-{case['name']}")
    kek, key, expected = (bytes.fromhex(case[k]) for k in ("kek", "key", "wrapped"))
    assert aes_key_wrap_with_padding(kek, key) == expected
    assert hsm.op("wrapKey", name, "CKM_AES_KEY_WRAP_PAD", key).value == expected
    assert hsm.op("unwrapKey", name, "CKM_AES_KEY_WRAP_PAD", expected).value == key


@pytest.mark.parametrize("case", KWP_ODD, ids=lambda c: c["name"])
def test_a_kwp_key_of_other_lengths_unwraps_but_is_not_wrapped_wrong(
    hsm: Hsm, case: dict[str, Any]
) -> None:
    name = _kat(hsm, case["kek"], f"kwp-odd-{case['name']}")
    kek, key, expected = (bytes.fromhex(case[k]) for k in ("kek", "key", "wrapped"))
    assert aes_key_wrap_with_padding(kek, key) == expected
    assert hsm.op("unwrapKey", name, "CKM_AES_KEY_WRAP_PAD", expected).value == key
    with pytest.raises(BadParameter, match=f"whole 8-byte blocks; the key given is {len(key)}"):
        hsm.op("wrapKey", name, "CKM_AES_KEY_WRAP_PAD", key)


@pytest.mark.parametrize("case", KEY_TYPES["aes_gcm"], ids=lambda c: c["name"])
def test_aes_gcm_in_the_token_gives_the_published_answer(hsm: Hsm, case: dict[str, str]) -> None:
    key, iv, plaintext, aad, ciphertext, tag = (
        bytes.fromhex(case[k]) for k in ("key", "iv", "plaintext", "aad", "ciphertext", "tag")
    )
    if len(iv) != 12:
        pytest.fail(f"vector {case['name']} has a {len(iv)}-byte IV; Key Vault's is 12")
    name = _kat(hsm, case["key"], f"gcm-{case['name']}")
    assert AESGCM(key).encrypt(iv, plaintext, aad or None) == ciphertext + tag
    alg = f"A{len(key) * 8}GCM"
    sealed = hsm.op("encrypt", name, alg, plaintext, iv=iv, aad=aad or None)
    assert (sealed.value, sealed.tag, sealed.iv) == (ciphertext, tag, iv)
    opened = hsm.op("decrypt", name, alg, ciphertext, iv=iv, tag=tag, aad=aad or None)
    assert opened.value == plaintext


@pytest.mark.parametrize(
    ("case", "pad"),
    [(c, False) for c in KEY_TYPES["aes_cbc"]] + [(c, True) for c in KEY_TYPES["aes_cbcpad"]],
    ids=lambda c: c["name"] if isinstance(c, dict) else str(c),
)
def test_aes_cbc_in_the_token_gives_the_published_answer(
    hsm: Hsm, case: dict[str, str], pad: bool
) -> None:
    key, iv, plaintext, ciphertext = (
        bytes.fromhex(case[k]) for k in ("key", "iv", "plaintext", "ciphertext")
    )
    name = _kat(hsm, case["key"], f"cbc-{case['name']}")
    padded = plaintext
    if pad:
        padder = padding.PKCS7(128).padder()
        padded = padder.update(plaintext) + padder.finalize()
    encryptor = Cipher(algorithms.AES(key), modes.CBC(iv)).encryptor()
    assert encryptor.update(padded) + encryptor.finalize() == ciphertext
    alg = f"A{len(key) * 8}CBC" + ("PAD" if pad else "")
    assert hsm.op("encrypt", name, alg, plaintext, iv=iv).value == ciphertext
    assert hsm.op("decrypt", name, alg, ciphertext, iv=iv).value == plaintext


def test_a_brought_aes_key_is_held_as_a_generated_one(hsm: Hsm) -> None:
    bundle = hsm.bring("brought-aes", os.urandom(24), "oct-HSM")
    row = _row(hsm.rt, bundle.id.version)
    assert row.sealed_private_key == b"" and row.hsm_object_id is not None and row.imported
    [seen] = _token_objects(hsm.softhsm, ObjectClass.SECRET_KEY, object_id=row.hsm_object_id)
    assert (seen["token"], seen["private"], seen["sensitive"], seen["extractable"]) == (
        True,
        True,
        True,
        False,
    )
    assert seen["value"] == "refused" and (seen["sign"], seen["derive"]) == (False, False)


@pytest.mark.parametrize(
    ("what", "kty"),
    [
        ("an EC key as oct-HSM", "oct-HSM"),
        ("a 20-byte key as oct-HSM", "oct-HSM"),
        ("an AES key as EC-HSM", "EC-HSM"),
    ],
)
def test_a_blob_holding_another_key_type_is_refused_and_leaves_nothing(
    hsm: Hsm, what: str, kty: str
) -> None:
    key: Any = {
        "an EC key as oct-HSM": ec.generate_private_key(ec.SECP256R1()),
        "a 20-byte key as oct-HSM": None,
        "an AES key as EC-HSM": os.urandom(32),
    }[what]
    name = "mismatch-" + what.split()[1]
    if key is None:
        # wrap_for_kek takes only AES sizes; a customer's own tool might send anything.
        from customerkey.crypto.rsa_aes_wrap import rsa_aes_wrap
        from customerkey.vault.byok import BYOK_ENC, make_byok

        blob = make_byok(
            hsm.kid, rsa_aes_wrap(hsm.kek, os.urandom(20), BYOK_ENC, os.urandom(32)), "test"
        )
    else:
        blob = wrap_for_kek(hsm.kek, hsm.kid, key, aes_key=os.urandom(32))
    with pytest.raises(CustomerKeyError) as info:
        hsm.rt.vault.import_key(OPERATOR, VAULT, name, {"kty": kty, "key_hsm": b64url_encode(blob)})
    assert (info.value.status, info.value.code) == (400, "BadParameter")
    assert info.value.message == "Decryption failed."
    for object_class in (ObjectClass.SECRET_KEY, ObjectClass.PRIVATE_KEY):
        assert not _token_objects(hsm.softhsm, object_class, label=f"customerkey {VAULT}/{name}")


# ------------------------------------------------------------------ EC-HSM BYOK


@pytest.mark.parametrize(
    ("crv", "curve", "alg", "hash_"),
    [
        ("P-256", ec.SECP256R1(), "ES256", hashes.SHA256()),
        ("P-384", ec.SECP384R1(), "ES384", hashes.SHA384()),
        ("P-521", ec.SECP521R1(), "ES512", hashes.SHA512()),
        ("P-256K", ec.SECP256K1(), "ES256K", hashes.SHA256()),
    ],
)
def test_an_ec_key_brought_by_byok_serves_its_public_key_and_signs_in_the_token(
    hsm: Hsm, crv: str, curve: ec.EllipticCurve, alg: str, hash_: hashes.HashAlgorithm
) -> None:
    target = ec.generate_private_key(curve)
    name = f"byok-{crv}"
    bundle = hsm.bring(name, target, "EC-HSM")
    numbers = target.public_key().public_numbers()
    assert bundle.kty == "EC-HSM" and bundle.crv == crv and bundle.x and bundle.y
    assert int.from_bytes(b64url_decode(bundle.x), "big") == numbers.x
    assert int.from_bytes(b64url_decode(bundle.y), "big") == numbers.y
    row = _row(hsm.rt, bundle.id.version)
    assert row.sealed_private_key == b"" and row.hsm_object_id is not None
    [seen] = _token_objects(hsm.softhsm, ObjectClass.PRIVATE_KEY, object_id=row.hsm_object_id)
    # CKA_DERIVE served the recovery of the point and is off again.
    assert (seen["sensitive"], seen["extractable"], seen["sign"], seen["derive"]) == (
        True,
        False,
        True,
        False,
    )
    assert seen["value"] == "refused"
    digest = hashlib.new(hash_.name, b"signed in the token").digest()
    raw = hsm.op("sign", name, alg, digest).value
    target.public_key().verify(ecdsa_raw_to_der(raw, crv), digest, ec.ECDSA(utils.Prehashed(hash_)))
