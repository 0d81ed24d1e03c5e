"""``crypto.rsa_padding``, the software half of RSA decryption on a token that only does raw RSA.

- MGF1 and OAEP decoding against published answers: the intermediate values of RSA
  Laboratories' ``oaep-int.txt`` (SHA-1) and Project Wycheproof's OAEP vectors (SHA-1 and
  SHA-256), taken through raw RSA with the private key as a token's ``CKM_RSA_X_509`` would.
- Cross-checks with pyca/cryptography: what its OAEP (SHA-1, SHA-256; empty label, and a label,
  which we must refuse) and PKCS#1 v1.5 encryption produce, at every message length edge.
- Encodings built byte by byte (an OAEP encoder written here from RFC 8017 section 7.1.1, with
  its own MGF1): each rule on both sides of its boundary, e.g. the ``0x01`` separator at every
  position, exactly 8 vs 7 bytes of PKCS#1 v1.5 padding, a zero byte at every position, the
  smallest modulus each scheme allows and one byte less. Every refusal is the one undetailed
  ``DecryptionFailed`` (never an ``IndexError`` or a ``ValueError``).
- Implicit rejection: bad PKCS#1 v1.5 padding gives the synthetic message of
  ``tests/vectors/rsa_padding.json`` byte for byte. That construction is ours, not the one of
  draft-irtf-cfrg-rsa-guidance (see ``tests/vectors/generate_rsa_padding.py``, which computes
  the answers independently with pyca's HMAC), so the draft's vectors do not apply. And its
  properties: the same ciphertext gives the same message whatever the bad padding is, another
  ciphertext or rejection key another message, and its length stays within 0..k - 11.
- ``digest_info``: the DER prefixes of RFC 8017 section 9.2 note 1, and exactly what pyca signs.
"""

from __future__ import annotations

import hashlib
import json
import struct
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from customerkey.crypto.rsa_padding import digest_info, mgf1, oaep_decode, pkcs1v15_decode
from customerkey.errors import DecryptionFailed

VECTORS = Path(__file__).resolve().parents[1] / "vectors"
HASHES = {"SHA-1": (hashlib.sha1, hashes.SHA1()), "SHA-256": (hashlib.sha256, hashes.SHA256())}
H_LEN = {"SHA-1": 20, "SHA-256": 32}
R = b"r" * 32  # a rejection key


@cache
def _load(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((VECTORS / name).read_text(encoding="utf-8"))
    return data


@cache
def _key(name: str) -> rsa.RSAPrivateKey:
    """A Wycheproof 2048-bit key of ``rsa_oaep.json``."""
    der = bytes.fromhex(_load("rsa_oaep.json")["keys"][name]["pkcs8"])
    key = serialization.load_der_private_key(der, None)
    assert isinstance(key, rsa.RSAPrivateKey)
    return key


KEY_NAME = "wycheproof-2048-sha256"
K = 256


def _raw(ciphertext: bytes, name: str = KEY_NAME) -> bytes:
    """``CKM_RSA_X_509``: c^d mod n, as k bytes."""
    numbers = _key(name).private_numbers()
    m = pow(int.from_bytes(ciphertext, "big"), numbers.d, numbers.public_numbers.n)
    return m.to_bytes(K, "big")


def _message(length: int) -> bytes:
    """Fixed bytes that include 0x00, 0x01 and 0x02 (which must not confuse the decoders)."""
    return bytes((7 * i) % 256 for i in range(length))


def _refused(call: Any, *args: Any, **kwargs: Any) -> None:
    with pytest.raises(DecryptionFailed) as raised:
        call(*args, **kwargs)
    assert type(raised.value) is DecryptionFailed
    assert raised.value.message == "Decryption failed."


# --- an independent OAEP encoder (RFC 8017 section 7.1.1, step 2) --------------------------


def _ref_mgf1(seed: bytes, length: int, hash_name: str) -> bytes:
    new = HASHES[hash_name][0]
    blocks = [
        new(seed + struct.pack(">I", i)).digest() for i in range(length // H_LEN[hash_name] + 1)
    ]
    return b"".join(blocks)[:length]


def _encode(db: bytes, hash_name: str, first: int = 0) -> bytes:
    """``first || maskedSeed || maskedDB`` for a data block ``db`` given whole (fixed seed)."""
    h_len = H_LEN[hash_name]
    seed = bytes(range(100, 100 + h_len))
    masked_db = bytes(a ^ b for a, b in zip(db, _ref_mgf1(seed, len(db), hash_name), strict=True))
    mask = _ref_mgf1(masked_db, h_len, hash_name)
    masked_seed = bytes(a ^ b for a, b in zip(seed, mask, strict=True))
    return bytes([first]) + masked_seed + masked_db


def _lhash(hash_name: str) -> bytes:
    """The hash of the empty label."""
    return HASHES[hash_name][0](b"").digest()


def _db(hash_name: str, k: int, message: bytes) -> bytes:
    """``lHash || PS || 0x01 || message``, ``k - hLen - 1`` bytes."""
    ps = bytes(k - 2 * H_LEN[hash_name] - 2 - len(message))
    return _lhash(hash_name) + ps + b"\x01" + message


# --- MGF1 and OAEP: published answers ------------------------------------------------------


def test_mgf1_gives_the_masks_of_the_published_oaep_example() -> None:
    v = {
        name: bytes.fromhex(value)
        for name, value in _load("rsa_padding.json")["oaep_int"].items()
        if name != "source"
    }
    assert mgf1(v["seed"], 107, "SHA-1") == v["db_mask"]
    assert mgf1(v["masked_db"], 20, "SHA-1") == v["seed_mask"]
    # Every shorter length is a prefix: one byte short of a 20-byte block, exactly one, one
    # byte past it, and so on.
    for length in (0, 1, 19, 20, 21, 40, 41, 106):
        assert mgf1(v["seed"], length, "SHA-1") == v["db_mask"][:length]
    # The test's own MGF1 (which the encoder below uses) agrees with the published masks too.
    assert _ref_mgf1(v["seed"], 107, "SHA-1") == v["db_mask"]


def test_mgf1_sha256_blocks_are_sha256_of_seed_and_a_big_endian_counter() -> None:
    seed = b"mgf1 seed"
    out = mgf1(seed, 32 * 3 + 1, "SHA-256")
    assert out == (
        hashlib.sha256(seed + b"\x00\x00\x00\x00").digest()
        + hashlib.sha256(seed + b"\x00\x00\x00\x01").digest()
        + hashlib.sha256(seed + b"\x00\x00\x00\x02").digest()
        + hashlib.sha256(seed + b"\x00\x00\x00\x03").digest()[:1]
    )
    assert mgf1(seed, 0, "SHA-256") == b""


def test_oaep_decode_opens_the_published_oaep_example() -> None:
    v = _load("rsa_padding.json")["oaep_int"]
    em = bytes.fromhex(v["em"])
    assert oaep_decode(em, 128, "SHA-1") == bytes.fromhex(v["message"])
    # The same encoding read with the other hash is refused.
    _refused(oaep_decode, em, 128, "SHA-256")


WYCHEPROOF = [c for c in _load("rsa_oaep.json")["cases"] if c["name"].startswith("wycheproof-")]


@pytest.mark.parametrize("case", [pytest.param(c, id=c["name"]) for c in WYCHEPROOF])
def test_oaep_decode_answers_the_wycheproof_vectors(case: dict[str, Any]) -> None:
    hash_name = "SHA-256" if case["alg"] == "RSA-OAEP-256" else "SHA-1"
    em = _raw(bytes.fromhex(case["ciphertext"]), case["key"])
    if case["valid"]:
        assert oaep_decode(em, K, hash_name) == bytes.fromhex(case["plaintext"])
    else:
        _refused(oaep_decode, em, K, hash_name)


def test_the_wycheproof_vectors_cover_both_hashes_and_a_refusal() -> None:
    assert {c["alg"] for c in WYCHEPROOF if c["valid"]} == {"RSA-OAEP", "RSA-OAEP-256"}
    assert any(not c["valid"] for c in WYCHEPROOF)


# --- OAEP: pyca/cryptography ---------------------------------------------------------------


@pytest.mark.parametrize("hash_name", ["SHA-1", "SHA-256"])
def test_oaep_decode_opens_what_pyca_encrypts_at_every_length_edge(hash_name: str) -> None:
    algorithm = HASHES[hash_name][1]
    longest = K - 2 * H_LEN[hash_name] - 2  # 214 with SHA-1, 190 with SHA-256
    public = _key(KEY_NAME).public_key()
    for length in (0, 1, 2, longest - 1, longest):
        message = _message(length)
        ciphertext = public.encrypt(message, padding.OAEP(padding.MGF1(algorithm), algorithm, None))
        assert oaep_decode(_raw(ciphertext), K, hash_name) == message
    # A message of 0x01 bytes: the separator is the first 0x01, not a later one.
    ones = b"\x01" * 5
    ciphertext = public.encrypt(ones, padding.OAEP(padding.MGF1(algorithm), algorithm, None))
    assert oaep_decode(_raw(ciphertext), K, hash_name) == ones


@pytest.mark.parametrize("hash_name", ["SHA-1", "SHA-256"])
@pytest.mark.parametrize("label", [b"label", b"\x00"])
def test_oaep_decode_refuses_what_pyca_encrypts_with_a_label(hash_name: str, label: bytes) -> None:
    # Everything but lHash is right: only the label check can refuse it.
    algorithm = HASHES[hash_name][1]
    oaep = padding.OAEP(padding.MGF1(algorithm), algorithm, label)
    em = _raw(_key(KEY_NAME).public_key().encrypt(b"secret", oaep))
    _refused(oaep_decode, em, K, hash_name)


def test_oaep_decode_refuses_every_damaged_pyca_encoding_alike() -> None:
    sha = hashes.SHA256()
    ciphertext = (
        _key(KEY_NAME).public_key().encrypt(b"k" * 32, padding.OAEP(padding.MGF1(sha), sha, None))
    )
    em = _raw(ciphertext)
    assert oaep_decode(em, K, "SHA-256") == b"k" * 32
    for bad in (
        b"\x01" + em[1:],  # leading byte not zero
        b"\x80" + em[1:],
        em[:5] + bytes([em[5] ^ 1]) + em[6:],  # seed changed: lHash and padding break
        em[:-1] + bytes([em[-1] ^ 1]),  # masked DB changed: the seed mask changes with it
        em[:-1],  # one byte short
        em + b"\x00",  # one byte long
    ):
        _refused(oaep_decode, bad, K, "SHA-256")
    _refused(oaep_decode, em, K, "SHA-1")  # the wrong hash is refused, not misread


# --- OAEP: encodings built byte by byte ----------------------------------------------------


@pytest.mark.parametrize("hash_name", ["SHA-1", "SHA-256"])
def test_oaep_decode_accepts_the_smallest_modulus_and_refuses_one_byte_less(
    hash_name: str,
) -> None:
    smallest = 2 * H_LEN[hash_name] + 2  # 42 with SHA-1, 66 with SHA-256: an empty message
    em = _encode(_lhash(hash_name) + b"\x01", hash_name)
    assert len(em) == smallest
    assert oaep_decode(em, smallest, hash_name) == b""
    # Every smaller k is refused alike, whatever the bytes (even a well-formed prefix).
    for k in range(smallest):
        _refused(oaep_decode, em[:k], k, hash_name)
        _refused(oaep_decode, bytes(k), k, hash_name)
    # A one-byte message needs one byte more.
    em = _encode(_lhash(hash_name) + b"\x01\xab", hash_name)
    assert oaep_decode(em, smallest + 1, hash_name) == b"\xab"


@pytest.mark.parametrize("hash_name", ["SHA-1", "SHA-256"])
def test_oaep_decode_finds_the_separator_at_every_position(hash_name: str) -> None:
    k = 2 * H_LEN[hash_name] + 2 + 20
    h_len = H_LEN[hash_name]
    db_len = k - h_len - 1
    for position in range(h_len, db_len):  # where 0x01 sits in DB
        tail = _message(db_len - position - 1)
        db = _lhash(hash_name) + bytes(position - h_len) + b"\x01" + tail
        assert oaep_decode(_encode(db, hash_name), k, hash_name) == tail
        # The same block with anything else than 0x01 as the first non-zero byte is refused.
        for separator in (0x02, 0x03, 0x80, 0xFF):
            bad = _lhash(hash_name) + bytes(position - h_len) + bytes([separator]) + tail
            _refused(oaep_decode, _encode(bad, hash_name), k, hash_name)


@pytest.mark.parametrize("hash_name", ["SHA-1", "SHA-256"])
def test_oaep_decode_refuses_each_broken_rule_alone(hash_name: str) -> None:
    k = 128
    message = b"\x00\x01\x02 message"  # starts with 0x00 and 0x01: both are message bytes
    good = _db(hash_name, k, message)
    assert oaep_decode(_encode(good, hash_name), k, hash_name) == message
    h_len = H_LEN[hash_name]
    for first in (0x01, 0x02, 0x80, 0xFF):  # the leading byte
        _refused(oaep_decode, _encode(good, hash_name, first=first), k, hash_name)
    for index in (0, h_len // 2, h_len - 1):  # one bit of lHash
        bad = good[:index] + bytes([good[index] ^ 0x01]) + good[index + 1 :]
        _refused(oaep_decode, _encode(bad, hash_name), k, hash_name)
    # No separator at all: lHash and zeros to the end.
    _refused(
        oaep_decode,
        _encode(_lhash(hash_name) + bytes(k - h_len - 1 - h_len), hash_name),
        k,
        hash_name,
    )
    # The separator is found before the message: a message of all 0x00 bytes after it.
    zeros = _db(hash_name, k, bytes(10))
    assert oaep_decode(_encode(zeros, hash_name), k, hash_name) == bytes(10)
    # The longest message: no zero padding at all.
    longest = _message(k - 2 * h_len - 2)
    assert oaep_decode(_encode(_db(hash_name, k, longest), hash_name), k, hash_name) == longest
    # em one byte longer or shorter than k.
    em = _encode(good, hash_name)
    _refused(oaep_decode, em + b"\x00", k, hash_name)
    _refused(oaep_decode, em[:-1], k, hash_name)
    _refused(oaep_decode, b"\x00" + em, k + 1, hash_name)  # the same bytes are not a k+1 encoding


# --- PKCS#1 v1.5 ---------------------------------------------------------------------------


def _pkcs1(k: int, message: bytes, ps_length: int | None = None) -> bytes:
    ps_length = k - 3 - len(message) if ps_length is None else ps_length
    em = b"\x00\x02" + bytes(0x11 + i % 0xEE for i in range(ps_length)) + b"\x00" + message
    assert len(em) == k
    return em


@cache
def _synthetic_cases() -> list[dict[str, Any]]:
    cases: list[dict[str, Any]] = _load("rsa_padding.json")["synthetic"]
    return cases


def _synthetic(k: int, kind: str, key: str = "00") -> dict[str, Any]:
    [case] = [
        c
        for c in _synthetic_cases()
        if c["k"] == k and c["length"] == kind and c["rejection_key"].startswith(key)
    ]
    return case


def test_pkcs1v15_decode_opens_what_pyca_encrypts_at_every_length_edge() -> None:
    public = _key(KEY_NAME).public_key()
    for length in (0, 1, 32, K - 12, K - 11):
        message = _message(length)
        ciphertext = public.encrypt(message, padding.PKCS1v15())
        em = _raw(ciphertext)
        assert pkcs1v15_decode(em, K, rejection_key=R, ciphertext=ciphertext) == message


@pytest.mark.parametrize(
    "case",
    [
        pytest.param(c, id=f"k{c['k']}-{c['length']}-{c['rejection_key'][:2]}")
        for c in _load("rsa_padding.json")["synthetic"]
    ],
)
def test_bad_padding_gives_the_synthetic_message_of_the_vectors(case: dict[str, Any]) -> None:
    k = case["k"]
    key = bytes.fromhex(case["rejection_key"])
    ciphertext = bytes.fromhex(case["ciphertext"])
    expected = bytes.fromhex(case["synthetic"])
    # The answer depends on the key and the ciphertext only, not on how the padding is bad.
    for bad in (
        bytes(k),  # all zero
        b"\x00\x01" + b"\xff" * (k - 3) + b"\x00",  # a signature's block type
        b"\x01\x02" + b"\xff" * (k - 3) + b"\x00",  # leading byte not zero
        b"\x00\x02" + b"\xff" * (k - 2),  # no zero separator
        b"\x00\x02" + b"\xff" * 7 + b"\x00" * (k - 9),  # 7 bytes of padding
    ):
        assert pkcs1v15_decode(bad, k, rejection_key=key, ciphertext=ciphertext) == expected
    if case["length"] == "max":
        assert len(expected) == k - 11
    elif case["length"] == "zero":
        assert expected == b""
    else:
        assert 0 < len(expected) < k - 11


def test_the_synthetic_vectors_reach_both_length_bounds() -> None:
    kinds = {(c["k"], c["length"]) for c in _synthetic_cases()}
    assert {
        (11, "max"),
        (12, "max"),
        (12, "zero"),
        (42, "max"),
        (256, "max"),
        (512, "max"),
    } <= kinds


def test_the_synthetic_message_changes_with_the_ciphertext_and_the_key() -> None:
    case = _synthetic(256, "mid")
    ciphertext = bytes.fromhex(case["ciphertext"])
    bad = bytes(K)
    first = pkcs1v15_decode(
        bad, K, rejection_key=bytes.fromhex(case["rejection_key"]), ciphertext=ciphertext
    )
    assert first == bytes.fromhex(case["synthetic"])
    flipped = ciphertext[:-1] + bytes([ciphertext[-1] ^ 1])
    other_key = b"\x01" + bytes.fromhex(case["rejection_key"])[1:]
    assert (
        pkcs1v15_decode(
            bad, K, rejection_key=bytes.fromhex(case["rejection_key"]), ciphertext=flipped
        )
        != first
    )
    assert pkcs1v15_decode(bad, K, rejection_key=other_key, ciphertext=ciphertext) != first
    assert pkcs1v15_decode(bad, K, rejection_key=b"", ciphertext=b"") != first


@pytest.mark.parametrize("k", [11, 12, 13, 20, 43])
def test_the_synthetic_length_stays_within_bounds(k: int) -> None:
    lengths = set()
    for index in range(400):
        ciphertext = index.to_bytes(2, "big")
        message = pkcs1v15_decode(bytes(k), k, rejection_key=R, ciphertext=ciphertext)
        assert message == pkcs1v15_decode(bytes(k), k, rejection_key=R, ciphertext=ciphertext)
        lengths.add(len(message))
    # Every length from 0 to k - 11 comes out, and no other.
    assert lengths == set(range(k - 10))


def _vector(k: int, kind: str) -> tuple[bytes, bytes, bytes]:
    """(rejection key, ciphertext, synthetic message) of a vector."""
    case = _synthetic(k, kind)
    return (
        bytes.fromhex(case["rejection_key"]),
        bytes.fromhex(case["ciphertext"]),
        bytes.fromhex(case["synthetic"]),
    )


def test_pkcs1v15_decode_needs_8_bytes_of_padding_not_7() -> None:
    k = 42
    key, ciphertext, synthetic = _vector(k, "mid")
    for ps_length in (8, 9, k - 3):  # 8 is the least; k - 3 leaves an empty message
        message = _message(k - 3 - ps_length)
        em = _pkcs1(k, message, ps_length)
        assert pkcs1v15_decode(em, k, rejection_key=key, ciphertext=ciphertext) == message
    for ps_length in (0, 1, 7):
        em = _pkcs1(k, _message(k - 3 - ps_length), ps_length)
        assert pkcs1v15_decode(em, k, rejection_key=key, ciphertext=ciphertext) == synthetic


def test_pkcs1v15_decode_with_a_zero_byte_at_each_position() -> None:
    # 0x00 0x02, then non-zero bytes but a zero at ``position``: the message starts after it
    # when at least 8 padding bytes come before it (position >= 10); before that, the padding
    # is bad even if another zero follows where a separator could be.
    k = 42
    key, ciphertext, synthetic = _vector(k, "mid")
    for position in range(2, k):
        em = bytearray(b"\x00\x02" + bytes(0x11 + i for i in range(k - 2)))
        em[position] = 0
        answer = pkcs1v15_decode(bytes(em), k, rejection_key=key, ciphertext=ciphertext)
        assert answer == (bytes(em[position + 1 :]) if position >= 10 else synthetic), position
        if position < 20:
            em[20] = 0  # a second zero, where it would be a good separator
            answer = pkcs1v15_decode(bytes(em), k, rejection_key=key, ciphertext=ciphertext)
            assert answer == (bytes(em[position + 1 :]) if position >= 10 else synthetic), position
    # Two zeros: the first one separates, the second is the message's.
    two = _pkcs1(k, b"\x00\x00ab")
    assert pkcs1v15_decode(two, k, rejection_key=key, ciphertext=ciphertext) == b"\x00\x00ab"


def test_pkcs1v15_decode_checks_both_leading_bytes() -> None:
    k = 42
    key, ciphertext, synthetic = _vector(k, "max")
    good = _pkcs1(k, b"message")
    assert pkcs1v15_decode(good, k, rejection_key=key, ciphertext=ciphertext) == b"message"
    for first, second in ((1, 2), (0x80, 2), (0, 0), (0, 1), (0, 3), (0, 0x82), (2, 0)):
        bad = bytes([first, second]) + good[2:]
        assert pkcs1v15_decode(bad, k, rejection_key=key, ciphertext=ciphertext) == synthetic


def test_pkcs1v15_decode_smallest_modulus_and_wrong_lengths() -> None:
    # k = 11: 0x00 0x02, 8 padding bytes, 0x00, and an empty message; the synthetic message
    # for k = 11 is empty too, so tell them apart with k = 12 as well.
    assert pkcs1v15_decode(_pkcs1(11, b""), 11, rejection_key=R, ciphertext=b"c") == b""
    case = _synthetic(11, "max")
    assert (
        pkcs1v15_decode(
            bytes(11),
            11,
            rejection_key=bytes.fromhex(case["rejection_key"]),
            ciphertext=bytes.fromhex(case["ciphertext"]),
        )
        == b""
    )
    assert pkcs1v15_decode(_pkcs1(12, b"z"), 12, rejection_key=R, ciphertext=b"c") == b"z"
    for k in range(11):  # no room for 8 bytes of padding: refused, whatever em is
        _refused(pkcs1v15_decode, bytes(k), k, rejection_key=R, ciphertext=b"c")
        _refused(
            pkcs1v15_decode, (b"\x00\x02" + b"\x11" * 16)[:k], k, rejection_key=R, ciphertext=b"c"
        )
    for k in (11, 12, 64, 256):  # em one byte short or long
        em = _pkcs1(k, b"")
        _refused(pkcs1v15_decode, em[:-1], k, rejection_key=R, ciphertext=b"c")
        _refused(pkcs1v15_decode, em + b"\x00", k, rejection_key=R, ciphertext=b"c")
        _refused(pkcs1v15_decode, em + b"m", k, rejection_key=R, ciphertext=b"c")


# --- DigestInfo ----------------------------------------------------------------------------

# RFC 8017 section 9.2, note 1: the DER of DigestInfo before the hash value.
RFC8017_PREFIXES = {
    "SHA-256": "30 31 30 0d 06 09 60 86 48 01 65 03 04 02 01 05 00 04 20",
    "SHA-384": "30 41 30 0d 06 09 60 86 48 01 65 03 04 02 02 05 00 04 30",
    "SHA-512": "30 51 30 0d 06 09 60 86 48 01 65 03 04 02 03 05 00 04 40",
}


@pytest.mark.parametrize(
    ("name", "algorithm"),
    [("SHA-256", hashes.SHA256()), ("SHA-384", hashes.SHA384()), ("SHA-512", hashes.SHA512())],
)
def test_digest_info_is_the_rfc_8017_prefix_and_what_pyca_signs(
    name: str, algorithm: hashes.HashAlgorithm
) -> None:
    h = hashes.Hash(algorithm)
    h.update(b"message")
    digest = h.finalize()
    info = digest_info(name, digest)
    assert info == bytes.fromhex(RFC8017_PREFIXES[name]) + digest
    key = _key(KEY_NAME)
    signature = key.sign(b"message", padding.PKCS1v15(), algorithm)
    numbers = key.public_key().public_numbers()
    em = pow(int.from_bytes(signature, "big"), numbers.e, numbers.n).to_bytes(K, "big")
    assert em == b"\x00\x01" + b"\xff" * (K - 3 - len(info)) + b"\x00" + info
