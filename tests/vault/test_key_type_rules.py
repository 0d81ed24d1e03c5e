"""The rules of ``vault.key_types``: key types, default and allowed key operations, which
algorithm each operation and key takes, what a request may carry, and the operation itself on
each kind of material (no database, no server)."""

from __future__ import annotations

import hashlib

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from customerkey.crypto.key_material import (
    SymmetricKey,
    key_family,
    key_size_of,
    material_from_bytes,
    material_to_bytes,
    public_members,
)
from customerkey.crypto.rsa import generate_rsa_key
from customerkey.errors import BadParameter, DecryptionFailed
from customerkey.rng import SeededRng
from customerkey.vault.key_types import (
    ALGORITHMS,
    KEY_OPS_BY_FAMILY,
    CryptoRequest,
    check_key,
    check_request,
    family_of,
    key_ops_for,
    known_key_ops,
    normalize_kty,
    perform,
)

RSA = generate_rsa_key(2048)


def test_key_types_and_their_default_operations() -> None:
    assert [normalize_kty(k) for k in ("rsa", "RSA-hsm", "ec", "EC-HSM", "OCT-hsm")] == [
        "RSA",
        "RSA-HSM",
        "EC",
        "EC-HSM",
        "oct-HSM",
    ]
    with pytest.raises(BadParameter, match=r"'oct' .* not supported in a key vault"):
        normalize_kty("oct")
    with pytest.raises(BadParameter, match="'DSA' is not supported"):
        normalize_kty("DSA")
    assert key_ops_for("RSA", None) == (
        "encrypt",
        "decrypt",
        "sign",
        "verify",
        "wrapKey",
        "unwrapKey",
    )
    assert key_ops_for("EC", None) == ("sign", "verify")
    assert key_ops_for("oct", None) == ("encrypt", "decrypt", "wrapKey", "unwrapKey")
    assert key_ops_for("EC", ["VERIFY", "sign", "verify"]) == ("verify", "sign")
    with pytest.raises(BadParameter, match="'encrypt' is not valid for an EC key"):
        key_ops_for("EC", ["encrypt"])
    with pytest.raises(BadParameter, match="'sign' is not valid for an oct-HSM key"):
        key_ops_for("oct", ["sign"])
    known_key_ops(["Sign", "wrapkey"])
    with pytest.raises(BadParameter, match="'fly'"):
        known_key_ops(["fly"])
    assert family_of("ec-hsm") == "EC" and set(KEY_OPS_BY_FAMILY) == {"RSA", "EC", "oct"}


def test_requests_refused_whatever_the_key() -> None:
    digest = hashlib.sha256(b"x").digest()
    refusals = [
        (CryptoRequest("teleport", "RS256", digest), "Unknown key operation"),
        (CryptoRequest("sign", "RSA-OAEP", digest), "not supported for sign"),
        (CryptoRequest("wrapKey", "ES256", digest), "not supported for wrapKey"),
        (CryptoRequest("sign", "ES384", digest), "48 bytes"),
        (CryptoRequest("verify", "PS512", digest, signature=b"s"), "64 bytes"),
        (CryptoRequest("encrypt", "RSA-OAEP", b"x", iv=bytes(16)), "'iv' is not a parameter"),
        (CryptoRequest("encrypt", "A128GCM", b"x", iv=bytes(16)), "12 bytes"),
        (CryptoRequest("encrypt", "A128GCM", b"x", tag=bytes(16)), "it is returned"),
        (CryptoRequest("decrypt", "A128GCM", b"x", iv=bytes(12)), "'iv' and 'tag'"),
        (CryptoRequest("decrypt", "A128GCM", b"x", iv=bytes(12), tag=b"t"), "16 bytes"),
        (CryptoRequest("encrypt", "A128CBC", b"x", aad=b"a"), "no 'aad'"),
        (CryptoRequest("decrypt", "A128CBCPAD", bytes(16)), "needs the 'iv'"),
        (CryptoRequest("encrypt", "A128KW", bytes(16)), "not supported for encrypt"),
    ]
    for request, says in refusals:
        with pytest.raises(BadParameter, match=says):
            check_request(request)
    assert "RSA1_5" in ALGORITHMS["unwrapKey"] and "RSA1_5" in ALGORITHMS["encrypt"]
    check_request(CryptoRequest("unwrapKey", "RSA1_5", bytes(256)))
    check_request(CryptoRequest("wrapKey", "RSA1_5", bytes(32)))
    check_request(CryptoRequest("encrypt", "A256GCM", b"x", aad=b"a"))


def test_algorithms_must_fit_the_key() -> None:
    cases = [
        (CryptoRequest("sign", "ES256", bytes(32)), "RSA", None, 2048, "needs an EC key"),
        (CryptoRequest("sign", "RS256", bytes(32)), "EC", "P-256", 256, "needs an RSA key"),
        (CryptoRequest("sign", "ES256K", bytes(32)), "EC-HSM", "P-256", 256, "curve P-256K"),
        (CryptoRequest("wrapKey", "RSA-OAEP", bytes(32)), "EC", "P-256", 256, "EC keys only"),
        (CryptoRequest("wrapKey", "A128KW", bytes(32)), "RSA", None, 2048, "RSA key"),
        (CryptoRequest("wrapKey", "RSA-OAEP", bytes(32)), "oct-HSM", None, 128, "oct-HSM key"),
        (CryptoRequest("wrapKey", "A256KW", bytes(32)), "oct-HSM", None, 128, "256-bit"),
        (CryptoRequest("sign", "PS256", bytes(32)), "oct-HSM", None, 256, "needs an RSA key"),
    ]
    for request, kty, crv, size, says in cases:
        with pytest.raises(BadParameter, match=says):
            check_key(request, kty, crv, size)
    check_key(CryptoRequest("wrapKey", "CKM_AES_KEY_WRAP", bytes(32)), "oct-HSM", None, 192)
    check_key(CryptoRequest("sign", "ES256K", bytes(32)), "EC", "P-256K", 256)


def test_perform_on_each_kind_of_material() -> None:
    rng = SeededRng(7)
    aes = SymmetricKey(bytes(range(32)))
    sealed = perform(CryptoRequest("encrypt", "A256GCM", b"data", aad=b"h"), aes, rng)
    assert sealed.iv is not None and sealed.tag is not None and sealed.aad == b"h"
    opened = perform(
        CryptoRequest("decrypt", "A256GCM", sealed.value, iv=sealed.iv, tag=sealed.tag, aad=b"h"),
        aes,
        rng,
    )
    assert opened.value == b"data"
    # the IV comes from the injected Rng
    assert sealed.iv == SeededRng(7).token_bytes(12)
    with pytest.raises(DecryptionFailed):
        perform(
            CryptoRequest(
                "decrypt", "A256GCM", sealed.value, iv=sealed.iv, tag=sealed.tag, aad=b"other"
            ),
            aes,
            rng,
        )
    wrapped = perform(CryptoRequest("wrapKey", "CKM_AES_KEY_WRAP_PAD", b"abc"), aes, rng).value
    unwrapped = perform(CryptoRequest("unwrapKey", "CKM_AES_KEY_WRAP_PAD", wrapped), aes, rng)
    assert unwrapped.value == b"abc"
    key = ec.generate_private_key(ec.SECP256K1())
    digest = hashlib.sha256(b"m").digest()
    signature = perform(CryptoRequest("sign", "ES256K", digest), key, rng).value
    verified = perform(CryptoRequest("verify", "ES256K", digest, signature=signature), key, rng)
    assert verified.verified is True and verified.value == b""
    for alg in ("RSA1_5", "RSA-OAEP", "RSA-OAEP-256"):
        ciphertext = perform(CryptoRequest("encrypt", alg, b"p"), RSA, rng).value
        assert perform(CryptoRequest("decrypt", alg, ciphertext), RSA, rng).value == b"p"


def test_material_bytes_round_trip_by_key_type() -> None:
    ec_key = ec.generate_private_key(ec.SECP521R1())
    aes = SymmetricKey(bytes(24))
    assert "bytes" not in repr(aes) and repr(bytes(24)) not in repr(aes)
    for kty, material in (("RSA-HSM", RSA), ("EC", ec_key), ("oct-HSM", aes)):
        again = material_from_bytes(kty, material_to_bytes(material))
        assert public_members(again) == public_members(material)
        assert key_size_of(again) == key_size_of(material)
    assert key_size_of(ec_key) == 521 and key_size_of(aes) == 192
    assert set(public_members(ec_key)) == {"crv", "x", "y"} and public_members(aes) == {}
    with pytest.raises(ValueError):
        material_from_bytes("oct-HSM", material_to_bytes(RSA))
    with pytest.raises(ValueError):
        material_from_bytes("EC", material_to_bytes(RSA))
    with pytest.raises(ValueError):
        key_family("oct")
