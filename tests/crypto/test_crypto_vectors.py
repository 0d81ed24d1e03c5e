"""Known-answer vectors in tests/vectors (written by tests/vectors/generate.py, never here).

Each envelope vector is checked both ways: the stored ciphertext opens to the stored plaintext,
and sealing the stored plaintext with the stored salt and nonce prefix gives the stored
ciphertext byte for byte. An independent decoder below, written from the format described in
``customerkey.crypto.aead`` using only pyca/cryptography, checks that the docstring is the truth.

The DEP key check value (``customerkey.crypto.key_check``) has its known answers inline: two
fixed cases whose expected values were computed outside the project (``openssl dgst -sha256
-mac HMAC``), checked against the module and against pyca/cryptography's HMAC.
"""

from __future__ import annotations

import io
import json
import struct
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes, hmac
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from customerkey.crypto import aead, key_check, wrap
from customerkey.crypto.rsa import (
    private_jwk_fields,
    private_key_from_der,
    private_key_from_jwk,
    public_jwk_fields,
    public_key_from_jwk,
)
from customerkey.errors import DecryptionFailed

VECTORS = Path(__file__).resolve().parents[1] / "vectors"


@cache
def _load(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((VECTORS / name).read_text(encoding="utf-8"))
    return data


def _cases(name: str) -> list[Any]:
    return [pytest.param(case, id=case["name"]) for case in _load(name)["cases"]]


# --- envelope ----------------------------------------------------------------------------


def _independent_open(key: bytes, ciphertext: bytes, context: dict[str, str]) -> bytes:
    """Decode an envelope from the documented format alone."""
    assert ciphertext[:4] == b"CKE\x01"
    (key_id_len,) = struct.unpack_from(">H", ciphertext, 4)
    pos = 6 + key_id_len
    key_version_len = ciphertext[pos]
    pos += 1 + key_version_len
    salt = ciphertext[pos : pos + 32]
    (segment_size,) = struct.unpack_from(">I", ciphertext, pos + 32)
    prefix = ciphertext[pos + 36 : pos + 43]
    commitment = ciphertext[pos + 43 : pos + 75]
    header = ciphertext[: pos + 75]
    okm = HKDF(hashes.SHA256(), 64, salt, b"customerkey/envelope/v1").derive(key)
    assert okm[32:] == commitment
    encoded = [struct.pack(">I", len(context))]
    for name in sorted(context):
        for part in (name.encode(), context[name].encode()):
            encoded.append(struct.pack(">I", len(part)) + part)
    aad = header + b"".join(encoded)
    gcm = AESGCM(okm[:32])
    body = ciphertext[len(header) :]
    chunk = segment_size + 16
    count = len(body) // chunk + 1
    plaintext = b""
    for index in range(count):
        nonce = prefix + struct.pack(">IB", index, index == count - 1)
        plaintext += gcm.decrypt(nonce, body[index * chunk : (index + 1) * chunk], aad)
    return plaintext


@pytest.mark.parametrize("case", _cases("envelope_v1.json"))
def test_envelope_vector_opens(case: dict[str, Any]) -> None:
    key = bytes.fromhex(case["key"])
    ciphertext = bytes.fromhex(case["ciphertext"])
    plaintext = bytes.fromhex(case["plaintext"])
    assert aead.open_sealed(key, ciphertext, context=case["context"]) == plaintext
    out = io.BytesIO()
    aead.open_stream(key, io.BytesIO(ciphertext), out, context=case["context"])
    assert out.getvalue() == plaintext
    assert _independent_open(key, ciphertext, case["context"]) == plaintext


@pytest.mark.parametrize("case", _cases("envelope_v1.json"))
def test_envelope_vector_seals_identically(case: dict[str, Any]) -> None:
    key = bytes.fromhex(case["key"])
    plaintext = bytes.fromhex(case["plaintext"])
    expected = bytes.fromhex(case["ciphertext"])
    fixed: dict[str, Any] = {
        "key_id": case["key_id"],
        "key_version": case["key_version"],
        "context": case["context"],
        "segment_size": case["segment_size"],
        "_salt": bytes.fromhex(case["salt"]),
        "_nonce_prefix": bytes.fromhex(case["nonce_prefix"]),
    }
    assert aead.seal(key, plaintext, **fixed) == expected
    out = io.BytesIO()
    assert aead.seal_stream(key, io.BytesIO(plaintext), out, **fixed) == len(expected)
    assert out.getvalue() == expected
    assert len(expected) == aead.sealed_size(
        len(plaintext),
        key_id=case["key_id"],
        key_version=case["key_version"],
        segment_size=case["segment_size"],
    )


@pytest.mark.parametrize("case", _cases("envelope_v1.json"))
def test_envelope_vector_intermediate_values(case: dict[str, Any]) -> None:
    ciphertext = bytes.fromhex(case["ciphertext"])
    header = aead.parse_header(ciphertext)
    assert header.key_id == case["key_id"]
    assert header.key_version == case["key_version"]
    assert header.segment_size == case["segment_size"]
    assert header.salt.hex() == case["salt"]
    assert header.nonce_prefix.hex() == case["nonce_prefix"]
    assert header.commitment.hex() == case["commitment"]
    assert header.to_bytes().hex() == case["header"]
    assert aead.encode_context(case["context"]).hex() == case["context_bytes"]
    okm = HKDF(hashes.SHA256(), 64, header.salt, b"customerkey/envelope/v1").derive(
        bytes.fromhex(case["key"])
    )
    assert okm.hex() == case["item_key"] + case["commitment"]
    body = len(ciphertext) - header.header_length - len(case["plaintext"]) // 2
    assert body == 16 * case["segments"]


@pytest.mark.parametrize("case", _cases("envelope_v1.json"))
def test_envelope_vector_rejects_other_key_and_context(case: dict[str, Any]) -> None:
    ciphertext = bytes.fromhex(case["ciphertext"])
    with pytest.raises(DecryptionFailed):
        aead.open_sealed(bytes(32), ciphertext, context=case["context"])
    with pytest.raises(DecryptionFailed):
        aead.open_sealed(
            bytes.fromhex(case["key"]), ciphertext, context={**case["context"], "x": "y"}
        )


def test_envelope_vectors_cover_the_segment_edges() -> None:
    cases = {case["name"]: case for case in _load("envelope_v1.json")["cases"]}
    assert cases["empty"]["segments"] == 1 and cases["empty"]["plaintext"] == ""
    assert cases["exact-segment"]["segments"] == 2
    assert cases["three-segments"]["segments"] == 3
    assert cases["unicode-ids-default-segment"]["segment_size"] == 1 << 20


# --- AES-KWP -----------------------------------------------------------------------------


@pytest.mark.parametrize("case", _cases("aes_kwp.json"))
def test_kwp_vector(case: dict[str, Any]) -> None:
    kek = bytes.fromhex(case["kek"])
    key = bytes.fromhex(case["key"])
    wrapped = bytes.fromhex(case["wrapped"])
    # The public functions insist on a 32-byte KEK; RFC 5649's own examples use AES-192.
    do_wrap = wrap.aes_kwp_wrap if len(kek) == 32 else wrap._kwp_wrap
    do_unwrap = wrap.aes_kwp_unwrap if len(kek) == 32 else wrap._kwp_unwrap
    if case["valid"]:
        assert do_unwrap(kek, wrapped) == key
        assert do_wrap(kek, key) == wrapped
    else:
        with pytest.raises(DecryptionFailed):
            do_unwrap(kek, wrapped)


def test_kwp_vectors_include_the_published_ones() -> None:
    names = {case["name"] for case in _load("aes_kwp.json")["cases"]}
    assert {"rfc5649-section6-1", "rfc5649-section6-2"} <= names
    assert any(name.startswith("wycheproof-") for name in names)
    assert any(name.startswith("customerkey-") for name in names)


# --- RSA-OAEP ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(_load("rsa_oaep.json")["keys"]))
def test_rsa_vector_keys_load_from_der_and_jwk(name: str) -> None:
    entry = _load("rsa_oaep.json")["keys"][name]
    from_der = private_key_from_der(bytes.fromhex(entry["pkcs8"]))
    from_jwk = private_key_from_jwk(entry["jwk"])
    assert from_der.private_numbers() == from_jwk.private_numbers()
    assert {"kty": "RSA", **private_jwk_fields(from_der)} == entry["jwk"]
    public = public_key_from_jwk(entry["jwk"])
    assert public_jwk_fields(public) == {"n": entry["jwk"]["n"], "e": entry["jwk"]["e"]}


@pytest.mark.parametrize("case", _cases("rsa_oaep.json"))
def test_rsa_vector(case: dict[str, Any]) -> None:
    entry = _load("rsa_oaep.json")["keys"][case["key"]]
    private_key = private_key_from_der(bytes.fromhex(entry["pkcs8"]))
    ciphertext = bytes.fromhex(case["ciphertext"])
    plaintext = bytes.fromhex(case["plaintext"])
    if not case["valid"]:
        with pytest.raises(DecryptionFailed):
            wrap.rsa_oaep_unwrap(private_key, ciphertext, case["alg"])
        return
    assert wrap.rsa_oaep_unwrap(private_key, ciphertext, case["alg"]) == plaintext
    # OAEP is randomized, so the other direction is a fresh wrap that must unwrap the same.
    again = wrap.rsa_oaep_wrap(private_key.public_key(), plaintext, case["alg"])
    assert len(again) == len(ciphertext) == private_key.key_size // 8
    assert wrap.rsa_oaep_unwrap(private_key, again, case["alg"]) == plaintext


def test_rsa_vectors_cover_both_algorithms() -> None:
    cases = _load("rsa_oaep.json")["cases"]
    for alg in ("RSA-OAEP-256", "RSA-OAEP"):
        assert any(c["alg"] == alg and c["name"].startswith("wycheproof-") for c in cases)
        assert any(c["alg"] == alg and c["name"].startswith("customerkey-") for c in cases)
    assert any(not c["valid"] for c in cases)


# --- DEP key check value -------------------------------------------------------------------

# (DEP key, generation id, first 16 bytes of HMAC-SHA256(key, label || id)), from
# printf 'customerkey dep-key check v1%s' <id> | openssl dgst -sha256 -mac HMAC -macopt hexkey:<key>
KEY_CHECK_CASES = [
    (
        "00" * 32,
        "3f2504e0-4f89-41d3-9a0c-0305e82c3301",
        "cff8d8e5e576da9f9d17a4614e65ef98",
    ),
    (
        "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f",
        "6f9619ff-8b86-4011-b42d-00c04fc964ff",
        "071e62943f6d6cb8f217d8dc32be46f0",
    ),
]


@pytest.mark.parametrize("key_hex,generation_id,expected", KEY_CHECK_CASES)
def test_key_check_vector(key_hex: str, generation_id: str, expected: str) -> None:
    dep_key = bytes.fromhex(key_hex)
    value = key_check.key_check_value(dep_key, generation_id)
    assert value.hex() == expected
    assert len(value) == key_check.KEY_CHECK_BYTES == 16
    mac = hmac.HMAC(dep_key, hashes.SHA256())
    mac.update(b"customerkey dep-key check v1" + generation_id.encode())
    assert mac.finalize()[:16] == value
    assert key_check.key_check_matches(dep_key, generation_id, bytes.fromhex(expected))
    # Another key, another generation, one flipped bit: no match.
    other_key = bytes([dep_key[0] ^ 1]) + dep_key[1:]
    assert not key_check.key_check_matches(other_key, generation_id, value)
    assert not key_check.key_check_matches(dep_key, generation_id.upper(), value)
    flipped = bytes([value[0] ^ 0x80]) + value[1:]
    assert not key_check.key_check_matches(dep_key, generation_id, flipped)
