"""RSA key generation, PKCS#8 DER and JWK fields."""

from __future__ import annotations

import base64

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric import rsa as pyca_rsa
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from customerkey.crypto.rsa import (
    b64url_decode,
    b64url_encode,
    generate_rsa_key,
    private_jwk_fields,
    private_key_from_der,
    private_key_from_jwk,
    private_key_to_der,
    public_jwk_fields,
    public_key_from_jwk,
)


@pytest.fixture(scope="module")
def key() -> RSAPrivateKey:
    return generate_rsa_key(2048)


# --- generation --------------------------------------------------------------------------


@pytest.mark.parametrize("size", [2048, 3072, 4096])
def test_generate_allowed_sizes(size: int) -> None:
    generated = generate_rsa_key(size)
    assert generated.key_size == size
    assert generated.public_key().public_numbers().e == 65537


@pytest.mark.parametrize("size", [1024, 2047, 2049, 8192, 0])
def test_generate_rejects_other_sizes(size: int) -> None:
    with pytest.raises(ValueError) as caught:
        generate_rsa_key(size)
    assert str(caught.value) == f"RSA key size must be one of 2048, 3072, 4096, got {size}"


@pytest.mark.parametrize("exponent", [1, 5, 17, 65539])
def test_generate_rejects_odd_exponents(exponent: int) -> None:
    with pytest.raises(ValueError, match="public_exponent must be 65537 or 3"):
        generate_rsa_key(2048, public_exponent=exponent)


# --- DER ---------------------------------------------------------------------------------


def test_der_round_trip(key: RSAPrivateKey) -> None:
    der = private_key_to_der(key)
    assert der[:1] == b"\x30"
    loaded = private_key_from_der(der)
    assert loaded.private_numbers() == key.private_numbers()
    assert private_key_to_der(loaded) == der
    pkcs8 = key.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    assert der == pkcs8


def test_der_accepts_traditional_pkcs1(key: RSAPrivateKey) -> None:
    pkcs1 = key.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    assert private_key_from_der(pkcs1).private_numbers() == key.private_numbers()


@pytest.mark.parametrize("data", [b"", b"\x30\x00", b"not der at all", bytes(100)])
def test_der_rejects_garbage(data: bytes) -> None:
    with pytest.raises(ValueError, match="not a valid unencrypted DER private key"):
        private_key_from_der(data)


def test_der_rejects_other_key_types() -> None:
    ec_der = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    with pytest.raises(ValueError, match="DER private key is not an RSA key"):
        private_key_from_der(ec_der)


def test_der_rejects_encrypted(key: RSAPrivateKey) -> None:
    encrypted = key.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"pw"),
    )
    with pytest.raises(ValueError, match="not a valid unencrypted DER private key"):
        private_key_from_der(encrypted)


# --- base64url ---------------------------------------------------------------------------


def test_b64url_encode_has_no_padding() -> None:
    assert b64url_encode(b"") == ""
    assert b64url_encode(b"\x01\x00\x01") == "AQAB"
    assert b64url_encode(b"\xfb\xff") == "-_8"
    assert b64url_encode(b"a") == "YQ"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", b""),
        ("YQ", b"a"),
        ("YQ==", b"a"),
        ("YWI", b"ab"),
        ("YWI=", b"ab"),
        ("-_8", b"\xfb\xff"),
    ],
)
def test_b64url_decode_tolerates_missing_padding(text: str, expected: bytes) -> None:
    assert b64url_decode(text) == expected


@pytest.mark.parametrize(
    "text", ["+/8", "YQ===", "Y", "YQ=a", "YQ=", "Y Q", "YQ\n", "é", "=", "YQ=="[1:]]
)
def test_b64url_decode_rejects_invalid(text: str) -> None:
    with pytest.raises(ValueError, match="base64url"):
        b64url_decode(text)


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=600))
def test_b64url_property_round_trip(data: bytes) -> None:
    text = b64url_encode(data)
    assert "=" not in text and "+" not in text and "/" not in text
    assert b64url_decode(text) == data
    assert text == base64.urlsafe_b64encode(data).decode().rstrip("=")


# --- JWK ---------------------------------------------------------------------------------


def test_public_jwk_fields(key: RSAPrivateKey) -> None:
    fields = public_jwk_fields(key.public_key())
    assert set(fields) == {"n", "e"}
    assert fields["e"] == "AQAB"
    n_bytes = b64url_decode(fields["n"])
    assert len(n_bytes) == 256 and n_bytes[0] != 0
    assert int.from_bytes(n_bytes, "big") == key.public_key().public_numbers().n


def test_private_jwk_round_trip(key: RSAPrivateKey) -> None:
    fields = private_jwk_fields(key)
    assert set(fields) == {"n", "e", "d", "p", "q", "dp", "dq", "qi"}
    loaded = private_key_from_jwk({"kty": "RSA", **fields})
    assert loaded.private_numbers() == key.private_numbers()
    assert private_key_from_jwk({"kty": "RSA-HSM", **fields}).private_numbers() == (
        key.private_numbers()
    )


def test_private_jwk_computes_missing_crt_members(key: RSAPrivateKey) -> None:
    fields = private_jwk_fields(key)
    minimal = {name: fields[name] for name in ("n", "e", "d", "p", "q")}
    assert private_key_from_jwk(minimal).private_numbers() == key.private_numbers()


def test_public_jwk_round_trip(key: RSAPrivateKey) -> None:
    fields = public_jwk_fields(key.public_key())
    loaded = public_key_from_jwk({"kty": "RSA", "key_ops": ["wrapKey"], **fields})
    assert loaded.public_numbers() == key.public_key().public_numbers()
    assert public_key_from_jwk(private_jwk_fields(key)).public_numbers() == (
        key.public_key().public_numbers()
    )


@pytest.mark.parametrize("member", ["n", "e", "d", "p", "q"])
def test_private_jwk_missing_member(key: RSAPrivateKey, member: str) -> None:
    fields = {k: v for k, v in private_jwk_fields(key).items() if k != member}
    with pytest.raises(ValueError) as caught:
        private_key_from_jwk(fields)
    assert str(caught.value) == f"RSA private JWK is missing required member {member!r}"


@pytest.mark.parametrize("member", ["n", "e"])
def test_public_jwk_missing_member(key: RSAPrivateKey, member: str) -> None:
    fields = {k: v for k, v in public_jwk_fields(key.public_key()).items() if k != member}
    with pytest.raises(ValueError, match=f"missing required member {member!r}"):
        public_key_from_jwk(fields)


def _other_key_fields() -> dict[str, str]:
    return private_jwk_fields(pyca_rsa.generate_private_key(public_exponent=65537, key_size=2048))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"kty": "EC"}, "JWK kty must be RSA or RSA-HSM"),
        ({"n": 5}, "member 'n' must be a base64url string"),
        ({"d": "!!!"}, "member 'd' is not valid base64url"),
        ({"e": ""}, "member 'e' is empty"),
        ({"e": "Ag"}, "exponent e must be odd"),
        ({"e": "AQ"}, "exponent e must be odd"),
        ({"n": b64url_encode(b"\xff" * 64)}, "modulus is 512 bits, minimum 1024"),
        ({"dp": "AQAB"}, "dp or dq does not match d"),
        ({"dq": "AQAB"}, "dp or dq does not match d"),
        ({"qi": "AQAB"}, "qi is not the inverse of q mod p"),
        ({"d": "AQ"}, "d is out of range"),
    ],
)
def test_private_jwk_validation(
    key: RSAPrivateKey, change: dict[str, object], message: str
) -> None:
    fields: dict[str, object] = {"kty": "RSA", **private_jwk_fields(key)}
    fields.update(change)
    with pytest.raises(ValueError, match=message):
        private_key_from_jwk(fields)


def test_private_jwk_rejects_primes_of_another_key(key: RSAPrivateKey) -> None:
    other = _other_key_fields()
    fields = {**private_jwk_fields(key), "p": other["p"], "q": other["q"]}
    with pytest.raises(ValueError, match="p \\* q does not equal n"):
        private_key_from_jwk(fields)


def test_private_jwk_rejects_wrong_d(key: RSAPrivateKey) -> None:
    fields = private_jwk_fields(key)
    numbers = key.private_numbers()
    wrong_d = numbers.d + 2
    fields.update(
        d=b64url_encode(wrong_d.to_bytes(256, "big")),
        dp=b64url_encode((wrong_d % (numbers.p - 1)).to_bytes(128, "big").lstrip(b"\x00")),
        dq=b64url_encode((wrong_d % (numbers.q - 1)).to_bytes(128, "big").lstrip(b"\x00")),
    )
    with pytest.raises(ValueError, match="invalid RSA private key"):
        private_key_from_jwk(fields)


def test_public_jwk_validation() -> None:
    with pytest.raises(ValueError, match="modulus n is even"):
        public_key_from_jwk({"n": b64url_encode(b"\xff" * 127 + b"\xfe"), "e": "AQAB"})
    with pytest.raises(ValueError, match="kty must be RSA"):
        public_key_from_jwk({"kty": "oct", "n": "AQAB", "e": "AQAB"})
