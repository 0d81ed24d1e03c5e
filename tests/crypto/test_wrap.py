"""Key wrapping: AES-KWP (RFC 5649) and RSA-OAEP as Key Vault's wrapKey/unwrapKey use them."""

from __future__ import annotations

import re
from contextlib import AbstractContextManager
from typing import Any, cast

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa as pyca_rsa
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey, RSAPublicKey
from hypothesis import given, settings
from hypothesis import strategies as st

from customerkey.crypto import wrap
from customerkey.crypto.wrap import (
    RsaOaepAlgorithm,
    aes_kwp_unwrap,
    aes_kwp_wrap,
    parse_rsa_algorithm,
    rsa_oaep_max_key_length,
    rsa_oaep_unwrap,
    rsa_oaep_wrap,
)
from customerkey.errors import DecryptionFailed
from customerkey.rng import SeededRng

KEK = bytes(range(32))
FAILED = DecryptionFailed().message


def _raises(kind: type[Exception], message: str) -> AbstractContextManager[Any]:
    """``pytest.raises`` that wants exactly ``message``, not a message merely containing it."""
    return pytest.raises(kind, match=f"^{re.escape(message)}$")


@pytest.fixture(scope="module")
def rsa_key() -> RSAPrivateKey:
    return pyca_rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def other_rsa_key() -> RSAPrivateKey:
    return pyca_rsa.generate_private_key(public_exponent=65537, key_size=2048)


# --- AES-KWP -----------------------------------------------------------------------------


def test_rfc5649_section6_examples() -> None:
    kek = bytes.fromhex("5840df6e29b02af1ab493b705bf16ea1ae8338f4dcc176a8")
    examples = [
        (
            "c37b7e6492584340bed12207808941155068f738",
            "138bdeaa9b8fa7fc61f97742e72248ee5ae6ae5360d1ae6a5f54f373fa543b6a",
        ),
        ("466f7250617369", "afbeb0f07dfbf5419200f2ccb50bb24f"),
    ]
    for key, wrapped in examples:
        assert wrap._kwp_wrap(kek, bytes.fromhex(key)).hex() == wrapped
        assert wrap._kwp_unwrap(kek, bytes.fromhex(wrapped)).hex() == key


@pytest.mark.parametrize("size", [1, 7, 8, 9, 15, 16, 17, 31, 32, 33, 64, 512])
def test_kwp_round_trip(size: int) -> None:
    key = SeededRng(size).token_bytes(size)
    wrapped = aes_kwp_wrap(KEK, key)
    # RFC 5649: one 8-byte block for the integrity check plus the key padded to 8 bytes.
    assert len(wrapped) == 8 + max(8, -(-size // 8) * 8)
    assert aes_kwp_unwrap(KEK, wrapped) == key
    assert aes_kwp_wrap(KEK, key) == wrapped


@pytest.mark.parametrize("size", [0, 16, 24, 31, 33, 64])
def test_kwp_kek_must_be_32_bytes(size: int) -> None:
    with _raises(ValueError, f"kek must be 32 bytes, got {size}"):
        aes_kwp_wrap(bytes(size), b"k" * 32)
    with _raises(ValueError, f"kek must be 32 bytes, got {size}"):
        aes_kwp_unwrap(bytes(size), bytes(40))


def test_kwp_rejects_empty_key_and_non_bytes() -> None:
    with _raises(ValueError, "key must not be empty"):
        aes_kwp_wrap(KEK, b"")
    with _raises(TypeError, "key must be bytes, got str"):
        aes_kwp_wrap(KEK, cast(bytes, "secret"))
    with _raises(TypeError, "kek must be bytes, got str"):
        aes_kwp_wrap(cast(bytes, "k" * 32), b"secret")
    with _raises(TypeError, "kek must be bytes, got NoneType"):
        aes_kwp_unwrap(cast(bytes, None), bytes(40))
    with _raises(TypeError, "wrapped must be bytes, got memoryview"):
        aes_kwp_unwrap(KEK, cast(bytes, memoryview(bytes(40))))
    # bytearray is bytes enough, both ways.
    as_bytes = [cast(bytes, bytearray(value)) for value in (KEK, b"secret")]
    wrapped = aes_kwp_wrap(*as_bytes)
    assert aes_kwp_unwrap(as_bytes[0], cast(bytes, bytearray(wrapped))) == b"secret"


def test_kwp_wrong_kek_fails() -> None:
    wrapped = aes_kwp_wrap(KEK, b"\x01" * 32)
    with pytest.raises(DecryptionFailed) as caught:
        aes_kwp_unwrap(bytes(32), wrapped)
    assert str(caught.value) == FAILED


def test_kwp_tamper_every_byte_fails() -> None:
    wrapped = aes_kwp_wrap(KEK, SeededRng(1).token_bytes(32))
    for position in range(len(wrapped)):
        tampered = bytearray(wrapped)
        tampered[position] ^= 0x01
        with pytest.raises(DecryptionFailed) as caught:
            aes_kwp_unwrap(KEK, bytes(tampered))
        assert str(caught.value) == FAILED


@pytest.mark.parametrize("length", [0, 1, 8, 15, 17, 23, 39])
def test_kwp_malformed_lengths_fail(length: int) -> None:
    with pytest.raises(DecryptionFailed):
        aes_kwp_unwrap(KEK, bytes(length))


def test_kwp_truncated_and_extended_fail() -> None:
    wrapped = aes_kwp_wrap(KEK, b"\x02" * 32)
    for candidate in (wrapped[:-8], wrapped + bytes(8), wrapped[8:]):
        with pytest.raises(DecryptionFailed):
            aes_kwp_unwrap(KEK, candidate)


@settings(max_examples=50, deadline=None)
@given(key=st.binary(min_size=1, max_size=100), kek=st.binary(min_size=32, max_size=32))
def test_kwp_property_round_trip(key: bytes, kek: bytes) -> None:
    assert aes_kwp_unwrap(kek, aes_kwp_wrap(kek, key)) == key


# --- algorithms --------------------------------------------------------------------------


def test_parse_rsa_algorithm() -> None:
    assert parse_rsa_algorithm("RSA-OAEP-256") is RsaOaepAlgorithm.RSA_OAEP_256
    assert parse_rsa_algorithm("RSA-OAEP") is RsaOaepAlgorithm.RSA_OAEP
    assert parse_rsa_algorithm(RsaOaepAlgorithm.RSA_OAEP) is RsaOaepAlgorithm.RSA_OAEP
    assert (
        str(RsaOaepAlgorithm.RSA_OAEP_256) == RsaOaepAlgorithm.RSA_OAEP_256.value == "RSA-OAEP-256"
    )


@pytest.mark.parametrize("name", ["RSA1_5", "rsa-oaep-256", "RSA-OAEP-384", "A256KW", ""])
def test_parse_rsa_algorithm_rejects_others(name: str) -> None:
    with _raises(ValueError, f"unsupported algorithm {name!r}; supported: RSA-OAEP-256, RSA-OAEP"):
        parse_rsa_algorithm(name)


def test_max_key_length() -> None:
    assert rsa_oaep_max_key_length(2048, "RSA-OAEP-256") == 256 - 2 * 32 - 2 == 190
    assert rsa_oaep_max_key_length(2048, "RSA-OAEP") == 256 - 2 * 20 - 2 == 214
    assert rsa_oaep_max_key_length(4096, RsaOaepAlgorithm.RSA_OAEP_256) == 446


# --- RSA-OAEP ----------------------------------------------------------------------------


@pytest.mark.parametrize("alg", ["RSA-OAEP-256", "RSA-OAEP"])
@pytest.mark.parametrize("size", [0, 1, 32, 64])
def test_rsa_round_trip(rsa_key: RSAPrivateKey, alg: str, size: int) -> None:
    key = SeededRng(size).token_bytes(size)
    wrapped = rsa_oaep_wrap(rsa_key.public_key(), key, alg)
    assert len(wrapped) == 256
    assert rsa_oaep_unwrap(rsa_key, wrapped, alg) == key
    assert rsa_oaep_wrap(rsa_key.public_key(), key, alg) != wrapped


@pytest.mark.parametrize("alg", list(RsaOaepAlgorithm))
def test_rsa_longest_key_fits_and_one_more_does_not(
    rsa_key: RSAPrivateKey, alg: RsaOaepAlgorithm
) -> None:
    limit = rsa_oaep_max_key_length(2048, alg)
    key = b"\x07" * limit
    assert rsa_oaep_unwrap(rsa_key, rsa_oaep_wrap(rsa_key.public_key(), key, alg), alg) == key
    with pytest.raises(ValueError) as caught:
        rsa_oaep_wrap(rsa_key.public_key(), key + b"\x07", alg)
    assert str(caught.value) == (
        f"key is {limit + 1} bytes; {alg.value} with a 2048-bit RSA key wraps at most {limit} bytes"
    )


def test_rsa_wrong_key_fails(rsa_key: RSAPrivateKey, other_rsa_key: RSAPrivateKey) -> None:
    wrapped = rsa_oaep_wrap(rsa_key.public_key(), b"\x03" * 32, "RSA-OAEP-256")
    with pytest.raises(DecryptionFailed) as caught:
        rsa_oaep_unwrap(other_rsa_key, wrapped, "RSA-OAEP-256")
    assert str(caught.value) == FAILED
    assert caught.value.__cause__ is None


def test_rsa_wrong_algorithm_fails(rsa_key: RSAPrivateKey) -> None:
    wrapped = rsa_oaep_wrap(rsa_key.public_key(), b"\x03" * 32, "RSA-OAEP-256")
    with pytest.raises(DecryptionFailed):
        rsa_oaep_unwrap(rsa_key, wrapped, "RSA-OAEP")


def test_rsa_tampered_or_malformed_fails(rsa_key: RSAPrivateKey) -> None:
    wrapped = rsa_oaep_wrap(rsa_key.public_key(), b"\x04" * 32, "RSA-OAEP")
    candidates = [
        bytes([wrapped[0] ^ 1]) + wrapped[1:],
        wrapped[:-1] + bytes([wrapped[-1] ^ 0x80]),
        wrapped[:-1],
        wrapped + b"\x00",
        b"",
        b"\xff" * 256,
    ]
    for candidate in candidates:
        with pytest.raises(DecryptionFailed) as caught:
            rsa_oaep_unwrap(rsa_key, candidate, "RSA-OAEP")
        assert str(caught.value) == FAILED


def test_rsa_argument_checks(rsa_key: RSAPrivateKey) -> None:
    supported = "; supported: RSA-OAEP-256, RSA-OAEP"
    with _raises(ValueError, "unsupported algorithm 'RSA1_5'" + supported):
        rsa_oaep_wrap(rsa_key.public_key(), b"k", "RSA1_5")
    with _raises(ValueError, "unsupported algorithm 'RSA-OAEP-512'" + supported):
        rsa_oaep_unwrap(rsa_key, bytes(256), "RSA-OAEP-512")
    with _raises(ValueError, "unsupported algorithm 'RSA-OAEP-512'" + supported):
        rsa_oaep_max_key_length(2048, "RSA-OAEP-512")
    with _raises(TypeError, "public_key must be an RSAPublicKey, got str"):
        rsa_oaep_wrap(cast(RSAPublicKey, "n.e"), b"k", "RSA-OAEP-256")
    with _raises(TypeError, "private_key must be an RSAPrivateKey, got bytes"):
        rsa_oaep_unwrap(cast(RSAPrivateKey, b"der"), bytes(256), "RSA-OAEP-256")
    with _raises(TypeError, "key must be bytes, got str"):
        rsa_oaep_wrap(rsa_key.public_key(), cast(bytes, "k"), "RSA-OAEP-256")
    with _raises(TypeError, "wrapped must be bytes, got list"):
        rsa_oaep_unwrap(rsa_key, cast(bytes, [0] * 256), "RSA-OAEP-256")
