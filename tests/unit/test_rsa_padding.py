"""``crypto.rsa_padding`` against pyca/cryptography: what pyca's OAEP (SHA-256 and SHA-1) and
PKCS#1 v1.5 encryption produce, taken through raw RSA with the private key as a token's
``CKM_RSA_X_509`` would, decodes to the message; every damaged encoding is the one undetailed
``DecryptionFailed``; bad PKCS#1 v1.5 padding gives a synthetic message that depends only on
the rejection key and the ciphertext."""

from __future__ import annotations

import os

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from customerkey.crypto.rsa_padding import digest_info, oaep_decode, pkcs1v15_decode
from customerkey.errors import DecryptionFailed

KEY = rsa.generate_private_key(65537, 2048)
K = 256


def _raw(ciphertext: bytes) -> bytes:
    numbers = KEY.private_numbers()
    m = pow(int.from_bytes(ciphertext, "big"), numbers.d, numbers.public_numbers.n)
    return m.to_bytes(K, "big")


@pytest.mark.parametrize(
    ("name", "hash_"), [("SHA-256", hashes.SHA256()), ("SHA-1", hashes.SHA1())]
)
@pytest.mark.parametrize("length", [0, 1, 32, 190])
def test_oaep_decode_opens_what_pyca_encrypts(
    name: str, hash_: hashes.HashAlgorithm, length: int
) -> None:
    if name == "SHA-256" and length > K - 2 * 32 - 2:
        length = K - 2 * 32 - 2
    message = os.urandom(length)
    ciphertext = KEY.public_key().encrypt(message, padding.OAEP(padding.MGF1(hash_), hash_, None))
    assert oaep_decode(_raw(ciphertext), K, name) == message


def test_oaep_decode_refuses_every_damaged_encoding_alike() -> None:
    sha = hashes.SHA256()
    em = _raw(KEY.public_key().encrypt(b"k" * 32, padding.OAEP(padding.MGF1(sha), sha, None)))
    damaged = [
        bytes([1]) + em[1:],  # leading byte not zero
        em[:5] + bytes([em[5] ^ 1]) + em[6:],  # seed changed: lHash and padding break
        em[:-1] + bytes([em[-1] ^ 1]),  # masked DB changed: the seed mask changes with it
        em[:-1],  # wrong length
    ]
    for bad in damaged:
        with pytest.raises(DecryptionFailed) as raised:
            oaep_decode(bad, K, "SHA-256")
        assert raised.value.message == "Decryption failed."
    # The wrong hash is refused, not misread.
    with pytest.raises(DecryptionFailed):
        oaep_decode(em, K, "SHA-1")


def test_pkcs1v15_decode_opens_what_pyca_encrypts_and_rejects_implicitly() -> None:
    message = os.urandom(32)
    ciphertext = KEY.public_key().encrypt(message, padding.PKCS1v15())
    assert pkcs1v15_decode(_raw(ciphertext), K, rejection_key=b"r" * 32, ciphertext=ciphertext) == (
        message
    )
    bad = b"\x00\x01" + _raw(ciphertext)[2:]
    first = pkcs1v15_decode(bad, K, rejection_key=b"r" * 32, ciphertext=ciphertext)
    again = pkcs1v15_decode(bad, K, rejection_key=b"r" * 32, ciphertext=ciphertext)
    other = pkcs1v15_decode(bad, K, rejection_key=b"s" * 32, ciphertext=ciphertext)
    assert first == again != message and first != other
    assert len(first) <= K - 11
    # Too little padding (fewer than 8 non-zero bytes) is bad padding too.
    short = b"\x00\x02" + b"\x01" * 7 + b"\x00" + b"x" * (K - 10)
    assert pkcs1v15_decode(short, K, rejection_key=b"r" * 32, ciphertext=b"c") != b"x" * (K - 10)


def test_digest_info_is_what_pyca_signs() -> None:
    digest = os.urandom(32)
    signature = KEY.sign(b"message", padding.PKCS1v15(), hashes.SHA256())
    numbers = KEY.private_numbers().public_numbers
    em = pow(int.from_bytes(signature, "big"), numbers.e, numbers.n).to_bytes(K, "big")
    h = hashes.Hash(hashes.SHA256())
    h.update(b"message")
    assert em.endswith(digest_info("SHA-256", h.finalize()))
    assert len(digest_info("SHA-512", os.urandom(64))) == 19 + 64
    assert digest  # the random digest only sizes the call above
