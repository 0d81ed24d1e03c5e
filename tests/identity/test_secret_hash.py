"""Client-secret hashing: the stored format, verification, and refusal of malformed records."""

from __future__ import annotations

import base64
import hashlib
import re

import pytest

from customerkey.crypto.secret_hash import hash_secret, new_client_secret, verify_secret
from customerkey.rng import SeededRng, SystemRng


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def test_roundtrip() -> None:
    encoded = hash_secret("s3cret-value", rng=SystemRng())
    assert verify_secret("s3cret-value", encoded)
    assert not verify_secret("s3cret-valuE", encoded)
    assert not verify_secret("", encoded)


def test_format_and_known_answer() -> None:
    # Recomputes the hash independently from the documented parameters.
    encoded = hash_secret("pässword", rng=SeededRng(42))
    scheme, n, r, p, salt_text, hash_text = encoded.split("$")
    assert (scheme, n, r, p) == ("scrypt", "16384", "8", "1")
    salt = base64.urlsafe_b64decode(salt_text + "==")
    assert salt == SeededRng(42).token_bytes(16)
    expected = hashlib.scrypt("pässword".encode(), salt=salt, n=2**14, r=8, p=1, dklen=32)
    assert hash_text == _b64(expected)
    assert "=" not in encoded


def test_fresh_salt_every_time() -> None:
    rng = SystemRng()
    first, second = hash_secret("same", rng=rng), hash_secret("same", rng=rng)
    assert first != second
    assert verify_secret("same", first) and verify_secret("same", second)


def test_other_parameters_still_verify() -> None:
    salt = b"0123456789abcdef"
    digest = hashlib.scrypt(b"older", salt=salt, n=2**10, r=4, p=2, dklen=32)
    assert verify_secret("older", f"scrypt$1024$4$2${_b64(salt)}${_b64(digest)}")


@pytest.mark.parametrize(
    "encoded",
    [
        "",
        "garbage",
        "bcrypt$16384$8$1$AAAA$AAAA",
        "scrypt$16384$8$1$AAAA",
        "scrypt$16384$8$1$AAAA$AAAA$extra",
        "scrypt$16383$8$1$MDEyMzQ1Njc4OWFiY2RlZg$" + "A" * 43,
        "scrypt$0$8$1$MDEyMzQ1Njc4OWFiY2RlZg$" + "A" * 43,
        "scrypt$-16384$8$1$MDEyMzQ1Njc4OWFiY2RlZg$" + "A" * 43,
        "scrypt$4194304$8$1$MDEyMzQ1Njc4OWFiY2RlZg$" + "A" * 43,
        "scrypt$16384$999$1$MDEyMzQ1Njc4OWFiY2RlZg$" + "A" * 43,
        "scrypt$16384$8$1$not base64!$" + "A" * 43,
        "scrypt$16384$8$1$MDEyMzQ1Njc4OWFiY2RlZg$",
        "scrypt$16384$8$1$MDEyMzQ1Njc4OWFiY2RlZg$QUFB",
        "scrypt$1e4$8$1$MDEyMzQ1Njc4OWFiY2RlZg$" + "A" * 43,
        "scrypt$16384$8$1$MDEyMzQ1Njc4OWFiY2RlZg==$" + "A" * 43,
    ],
)
def test_malformed_records_never_verify(encoded: str) -> None:
    assert verify_secret("anything", encoded) is False


def test_new_client_secret_shape() -> None:
    secret = new_client_secret(SystemRng())
    assert len(secret) == 40
    assert re.fullmatch(r"[A-Za-z0-9_-]{40}", secret)
    assert new_client_secret(SeededRng(1)) == new_client_secret(SeededRng(1))
    assert new_client_secret(SystemRng()) != secret
