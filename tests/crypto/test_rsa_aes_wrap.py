"""The crypto of secure key release: the RSA-AES key wrap (``crypto.rsa_aes_wrap``), checked
against pyca/cryptography's own RSA-OAEP and RFC 5649 key wrap and RFC 5649's vectors; the
RS256 JWS and its certificate (``crypto.jws``); and the release tag (``crypto.release_tag``)."""

from __future__ import annotations

import base64
import hashlib
import json
from datetime import UTC, datetime, timedelta

import jwt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.keywrap import (
    aes_key_unwrap_with_padding,
    aes_key_wrap_with_padding,
)

from customerkey.crypto.jws import (
    certificate_thumbprint,
    self_signed_certificate,
    sign_rs256,
    x5c_entry,
)
from customerkey.crypto.release_tag import (
    RELEASE_TAG_BYTES,
    derive_release_tag_key,
    release_tag,
    release_tag_matches,
    release_tag_message,
)
from customerkey.crypto.rsa_aes_wrap import (
    RsaAesWrapAlgorithm,
    parse_rsa_aes_wrap_algorithm,
    rsa_aes_unwrap,
    rsa_aes_wrap,
)
from customerkey.errors import DecryptionFailed

AES_KEY = bytes(range(32))  # the fixed temporary AES key of the known-answer tests
MATERIAL = bytes.fromhex("00112233445566778899aabbccddeeff") * 5 + b"\x01\x02\x03"  # 83 bytes
HASHES = {
    RsaAesWrapAlgorithm.CKM_RSA_AES_KEY_WRAP: hashes.SHA1,
    RsaAesWrapAlgorithm.RSA_AES_KEY_WRAP_256: hashes.SHA256,
    RsaAesWrapAlgorithm.RSA_AES_KEY_WRAP_384: hashes.SHA384,
}


@pytest.fixture(scope="module")
def recipient() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _oaep(digest: type[hashes.HashAlgorithm]) -> padding.OAEP:
    return padding.OAEP(mgf=padding.MGF1(digest()), algorithm=digest(), label=None)


# ---------------------------------------------------------------- RSA-AES key wrap


@pytest.mark.parametrize("algorithm", list(RsaAesWrapAlgorithm))
def test_wrap_is_rsa_oaep_of_the_aes_key_then_rfc5649_of_the_key(
    recipient: rsa.RSAPrivateKey, algorithm: RsaAesWrapAlgorithm
) -> None:
    wrapped = rsa_aes_wrap(recipient.public_key(), MATERIAL, algorithm, AES_KEY)
    encrypted_key, wrapped_key = wrapped[:256], wrapped[256:]
    # The AES-KWP half is deterministic: exactly pyca's RFC 5649 wrap under the fixed key.
    assert wrapped_key == aes_key_wrap_with_padding(AES_KEY, MATERIAL)
    assert len(wrapped_key) == (len(MATERIAL) + 7) // 8 * 8 + 8
    # The RSA half opens with OAEP over the algorithm's hash (and MGF1 of the same), only.
    assert recipient.decrypt(encrypted_key, _oaep(HASHES[algorithm])) == AES_KEY
    for other, digest in HASHES.items():
        if other is not algorithm:
            with pytest.raises(ValueError):
                recipient.decrypt(encrypted_key, _oaep(digest))
    # What pyca unwraps is what was wrapped, and so does rsa_aes_unwrap.
    assert aes_key_unwrap_with_padding(AES_KEY, wrapped_key) == MATERIAL
    assert rsa_aes_unwrap(recipient, wrapped, algorithm) == MATERIAL
    assert rsa_aes_unwrap(recipient, wrapped, algorithm.value) == MATERIAL


@pytest.mark.parametrize(
    ("kek", "key", "wrapped"),
    [
        # RFC 5649 section 6: a 20-octet key and a 7-octet key under the same 192-bit KEK.
        (
            "5840df6e29b02af1ab493b705bf16ea1ae8338f4dcc176a8",
            "c37b7e6492584340bed12207808941155068f738",
            "138bdeaa9b8fa7fc61f97742e72248ee5ae6ae5360d1ae6a5f54f373fa543b6a",
        ),
        (
            "5840df6e29b02af1ab493b705bf16ea1ae8338f4dcc176a8",
            "466f7250617369",
            "afbeb0f07dfbf5419200f2ccb50bb24f",
        ),
    ],
)
def test_unwrap_opens_rfc5649_vectors(
    recipient: rsa.RSAPrivateKey, kek: str, key: str, wrapped: str
) -> None:
    for algorithm, digest in HASHES.items():
        blob = recipient.public_key().encrypt(bytes.fromhex(kek), _oaep(digest))
        blob += bytes.fromhex(wrapped)
        assert rsa_aes_unwrap(recipient, blob, algorithm) == bytes.fromhex(key)


def test_each_wrap_of_the_same_key_differs_in_its_rsa_half(recipient: rsa.RSAPrivateKey) -> None:
    one = rsa_aes_wrap(recipient.public_key(), MATERIAL, "RSA_AES_KEY_WRAP_256", AES_KEY)
    two = rsa_aes_wrap(recipient.public_key(), MATERIAL, "RSA_AES_KEY_WRAP_256", AES_KEY)
    assert one[:256] != two[:256]  # OAEP is randomised
    assert one[256:] == two[256:]


def test_algorithm_names_are_exact() -> None:
    assert parse_rsa_aes_wrap_algorithm("CKM_RSA_AES_KEY_WRAP") is (
        RsaAesWrapAlgorithm.CKM_RSA_AES_KEY_WRAP
    )
    for bad in ("ckm_rsa_aes_key_wrap", "RSA-OAEP", "", None, 3):
        with pytest.raises(ValueError, match="supported: CKM_RSA_AES_KEY_WRAP"):
            parse_rsa_aes_wrap_algorithm(bad)


def test_wrap_refusals(recipient: rsa.RSAPrivateKey) -> None:
    public = recipient.public_key()
    with pytest.raises(ValueError, match="32 bytes"):
        rsa_aes_wrap(public, MATERIAL, "CKM_RSA_AES_KEY_WRAP", AES_KEY[:16])
    with pytest.raises(ValueError, match="must not be empty"):
        rsa_aes_wrap(public, b"", "CKM_RSA_AES_KEY_WRAP", AES_KEY)
    small = rsa.generate_private_key(public_exponent=65537, key_size=1024).public_key()
    with pytest.raises(ValueError, match="at least 2048"):
        rsa_aes_wrap(small, MATERIAL, "CKM_RSA_AES_KEY_WRAP", AES_KEY)
    with pytest.raises(ValueError, match="unsupported"):
        rsa_aes_wrap(public, MATERIAL, "A256KW", AES_KEY)


def test_what_does_not_open_is_decryption_failed(recipient: rsa.RSAPrivateKey) -> None:
    alg = RsaAesWrapAlgorithm.RSA_AES_KEY_WRAP_384
    wrapped = rsa_aes_wrap(recipient.public_key(), MATERIAL, alg, AES_KEY)
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    tampered_tail = wrapped[:-1] + bytes([wrapped[-1] ^ 1])
    tampered_head = bytes([wrapped[0] ^ 1]) + wrapped[1:]
    short_aes_key = recipient.public_key().encrypt(b"k" * 8, _oaep(hashes.SHA384)) + wrapped[256:]
    for bad_key, blob, algorithm in [
        (stranger, wrapped, alg),
        (recipient, tampered_tail, alg),
        (recipient, tampered_head, alg),
        (recipient, wrapped, RsaAesWrapAlgorithm.RSA_AES_KEY_WRAP_256),
        (recipient, wrapped[:270], alg),
        (recipient, short_aes_key, alg),
    ]:
        with pytest.raises(DecryptionFailed):
            rsa_aes_unwrap(bad_key, blob, algorithm)


# ---------------------------------------------------------------- JWS and certificate


def test_sign_rs256_verifies_with_the_certificate_it_names(recipient: rsa.RSAPrivateKey) -> None:
    now = datetime(2026, 12, 1, tzinfo=UTC)
    der = self_signed_certificate(
        recipient,
        common_name="release signer",
        serial=12345,
        not_before=now,
        not_after=now + timedelta(days=1),
    )
    header = {"kid": certificate_thumbprint(der), "x5c": [x5c_entry(der)]}
    token = sign_rs256(recipient, header, {"b": 1, "a": "é"})
    protected, body, _ = token.split(".")
    decoded_header = json.loads(base64.urlsafe_b64decode(protected + "=="))
    assert decoded_header == {"alg": "RS256", **header}
    assert base64.urlsafe_b64decode(body + "==") == '{"a":"é","b":1}'.encode()
    certificate = x509.load_der_x509_certificate(base64.b64decode(decoded_header["x5c"][0]))
    assert certificate.subject == certificate.issuer
    assert certificate.serial_number == 12345
    assert certificate.extensions.get_extension_for_class(x509.KeyUsage).value.digital_signature
    assert certificate.public_key() == recipient.public_key()
    assert decoded_header["kid"] == (
        base64.urlsafe_b64encode(hashlib.sha256(der).digest()).rstrip(b"=").decode()
    )
    claims = jwt.decode(token, certificate.public_key(), algorithms=["RS256"])  # type: ignore[arg-type]
    assert claims == {"a": "é", "b": 1}
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    with pytest.raises(jwt.InvalidSignatureError):
        jwt.decode(token, stranger.public_key(), algorithms=["RS256"])


# ---------------------------------------------------------------- release tag


def test_release_tag_binds_every_setting_and_id() -> None:
    key = derive_release_tag_key(b"\x07" * 32)
    assert len(key) == 32
    base = {
        "vault_id": "v",
        "key_id": "k",
        "version": "0" * 32,
        "exportable": True,
        "policy": ("application/json; charset=utf-8", b'{"version":"1.0.0"}', False),
    }
    tag = release_tag(key, **base)  # type: ignore[arg-type]
    assert len(tag) == RELEASE_TAG_BYTES and tag[0] == 1
    assert release_tag_matches(key, tag, **base)  # type: ignore[arg-type]
    variants = [
        {"vault_id": "w"},
        {"key_id": "j"},
        {"version": "1" * 32},
        {"exportable": False},
        {"policy": None},
        {"policy": ("application/json", b'{"version":"1.0.0"}', False)},
        {"policy": ("application/json; charset=utf-8", b'{"version":"1.0.2"}', False)},
        {"policy": ("application/json; charset=utf-8", b'{"version":"1.0.0"}', True)},
    ]
    for change in variants:
        assert not release_tag_matches(key, tag, **{**base, **change})  # type: ignore[arg-type]
    assert not release_tag_matches(derive_release_tag_key(b"\x08" * 32), tag, **base)  # type: ignore[arg-type]
    assert not release_tag_matches(key, None, **base)  # type: ignore[arg-type]
    # Length prefixes: moving bytes between fields changes the message.
    assert release_tag_message(
        vault_id="ab", key_id="c", version="v", exportable=True, policy=None
    ) != release_tag_message(vault_id="a", key_id="bc", version="v", exportable=True, policy=None)
    with pytest.raises(ValueError, match="32 bytes"):
        derive_release_tag_key(b"short")
