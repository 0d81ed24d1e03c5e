"""Known answers for the key types and algorithms of issue 16, in tests/vectors/key_types.json
(written by tests/vectors/generate_key_types.py from published vectors and pyca/cryptography,
never here): AES key wrap (RFC 3394), AES-GCM (the GCM specification's test cases), AES-CBC
(NIST SP 800-38A) and CBC with PKCS#7 padding, ECDSA as ``r || s`` (RFC 6979 plus fixed-key
cases for P-521 and secp256k1), RSA PKCS#1 v1.5 and PSS signatures over a digest, RSA1_5.

ECDSA and PSS are randomized, so their vectors are checked in the verify direction and a fresh
signature must verify with pyca/cryptography; RS* and the AES modes must match byte for byte.
"""

from __future__ import annotations

import contextlib
import json
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, utils

from customerkey.crypto import aes_modes, rsa_encryption, signatures
from customerkey.crypto import ec as ec_keys
from customerkey.crypto.rsa import b64url_decode, b64url_encode, private_key_from_der
from customerkey.errors import DecryptionFailed

VECTORS = Path(__file__).resolve().parents[1] / "vectors"
RSA_KEY = "wycheproof-2048-sha256"
HASHES: dict[str, hashes.HashAlgorithm] = {
    "256": hashes.SHA256(),
    "384": hashes.SHA384(),
    "512": hashes.SHA512(),
}
CURVES: dict[str, ec.EllipticCurve] = {
    "P-256": ec.SECP256R1(),
    "P-256K": ec.SECP256K1(),
    "P-384": ec.SECP384R1(),
    "P-521": ec.SECP521R1(),
}


@cache
def _load(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((VECTORS / name).read_text(encoding="utf-8"))
    return data


def _cases(group: str) -> list[Any]:
    return [pytest.param(case, id=case["name"]) for case in _load("key_types.json")[group]]


def _h(text: str) -> bytes:
    return bytes.fromhex(text)


def _flip(data: bytes, index: int = -1) -> bytes:
    out = bytearray(data)
    out[index] ^= 0x01
    return bytes(out)


@cache
def _rsa_key(name: str) -> rsa.RSAPrivateKey:
    return private_key_from_der(_h(_load("rsa_oaep.json")["keys"][name]["pkcs8"]))


# --- AES -----------------------------------------------------------------------------------


@pytest.mark.parametrize("case", _cases("aes_kw"))
def test_aes_kw_vector(case: dict[str, Any]) -> None:
    kek, key, wrapped = _h(case["kek"]), _h(case["key"]), _h(case["wrapped"])
    assert aes_modes.aes_kw_wrap(kek, key) == wrapped
    assert aes_modes.aes_kw_unwrap(kek, wrapped) == key
    with pytest.raises(DecryptionFailed):
        aes_modes.aes_kw_unwrap(kek, _flip(wrapped))
    with pytest.raises(DecryptionFailed):
        aes_modes.aes_kw_unwrap(_flip(kek, 0), wrapped)


@pytest.mark.parametrize("case", _cases("aes_gcm"))
def test_aes_gcm_vector(case: dict[str, Any]) -> None:
    key, iv, aad = _h(case["key"]), _h(case["iv"]), _h(case["aad"]) or None
    plaintext, ciphertext, tag = _h(case["plaintext"]), _h(case["ciphertext"]), _h(case["tag"])
    assert aes_modes.aes_gcm_encrypt(key, plaintext, iv, aad) == (ciphertext, tag)
    assert aes_modes.aes_gcm_decrypt(key, ciphertext, iv, tag, aad) == plaintext
    for args in (
        (key, _flip(ciphertext), iv, tag, aad),
        (key, ciphertext, iv, _flip(tag), aad),
        (key, ciphertext, _flip(iv), tag, aad),
        (key, ciphertext, iv, tag, b"other aad"),
        (_flip(key, 0), ciphertext, iv, tag, aad),
    ):
        with pytest.raises(DecryptionFailed):
            aes_modes.aes_gcm_decrypt(*args)


@pytest.mark.parametrize("case", _cases("aes_cbc"))
def test_aes_cbc_vector(case: dict[str, Any]) -> None:
    key, iv = _h(case["key"]), _h(case["iv"])
    plaintext, ciphertext = _h(case["plaintext"]), _h(case["ciphertext"])
    assert aes_modes.aes_cbc_encrypt(key, plaintext, iv, pad=False) == ciphertext
    assert aes_modes.aes_cbc_decrypt(key, ciphertext, iv, pad=False) == plaintext
    # SP 800-38A's blocks are independent of one another's padding: the first block alone
    assert aes_modes.aes_cbc_encrypt(key, plaintext[:16], iv, pad=False) == ciphertext[:16]


@pytest.mark.parametrize("case", _cases("aes_cbcpad"))
def test_aes_cbcpad_vector(case: dict[str, Any]) -> None:
    key, iv = _h(case["key"]), _h(case["iv"])
    plaintext, ciphertext = _h(case["plaintext"]), _h(case["ciphertext"])
    assert aes_modes.aes_cbc_encrypt(key, plaintext, iv, pad=True) == ciphertext
    assert aes_modes.aes_cbc_decrypt(key, ciphertext, iv, pad=True) == plaintext
    assert len(ciphertext) == (len(plaintext) // 16 + 1) * 16


def test_aes_vectors_cover_the_published_sources() -> None:
    data = _load("key_types.json")
    names = {c["name"] for group in ("aes_kw", "aes_gcm", "aes_cbc") for c in data[group]}
    assert {"rfc3394-4.1", "gcm-test-case-2", "gcm-test-case-16", "sp800-38a-F.2.1"} <= names
    sizes = {len(_h(c.values[0]["key"])) for c in _cases("aes_gcm") + _cases("aes_cbc")}
    assert sizes == {16, 24, 32}


def test_aes_caller_mistakes_are_value_errors() -> None:
    key = bytes(32)
    with pytest.raises(ValueError, match="16, 24 or 32"):
        aes_modes.aes_kw_wrap(bytes(20), bytes(16))
    with pytest.raises(ValueError, match="8-byte"):
        aes_modes.aes_kw_wrap(key, bytes(20))
    with pytest.raises(ValueError, match="12 bytes"):
        aes_modes.aes_gcm_encrypt(key, b"x", bytes(16))
    with pytest.raises(ValueError, match="16 bytes"):
        aes_modes.aes_gcm_decrypt(key, b"x", bytes(12), bytes(8))
    with pytest.raises(ValueError, match="whole 16-byte blocks"):
        aes_modes.aes_cbc_encrypt(key, b"x" * 17, bytes(16), pad=False)
    with pytest.raises(ValueError, match="whole 16-byte blocks"):
        aes_modes.aes_cbc_encrypt(key, b"", bytes(16), pad=False)
    with pytest.raises(DecryptionFailed):
        aes_modes.aes_cbc_decrypt(key, b"x" * 17, bytes(16), pad=True)
    ciphertext = aes_modes.aes_cbc_encrypt(key, b"x" * 16, bytes(16), pad=False)
    with pytest.raises(DecryptionFailed):  # no valid PKCS#7 padding in the last block
        aes_modes.aes_cbc_decrypt(key, ciphertext, bytes(16), pad=True)
    with pytest.raises(ValueError, match="unsupported AES algorithm"):
        aes_modes.parse_aes_algorithm("A512GCM")


def test_aes_algorithm_table() -> None:
    assert aes_modes.aes_info("A192KW") == aes_modes.AesInfo("KW", 192)
    assert aes_modes.aes_info("A256CBCPAD") == aes_modes.AesInfo("CBCPAD", 256)
    assert aes_modes.aes_info("A128GCM") == aes_modes.AesInfo("GCM", 128)
    assert aes_modes.aes_info("CKM_AES_KEY_WRAP_PAD") == aes_modes.AesInfo("KWP", None)
    assert aes_modes.aes_info("A128KW").wraps and not aes_modes.aes_info("A128CBC").wraps
    key = bytes(range(24))
    wrapped = aes_modes.aes_kwp_wrap_any(key, b"seven b")
    assert aes_modes.aes_kwp_unwrap_any(key, wrapped) == b"seven b"
    with pytest.raises(DecryptionFailed):
        aes_modes.aes_kwp_unwrap_any(key, _flip(wrapped))


# --- ECDSA ---------------------------------------------------------------------------------


@pytest.mark.parametrize("case", _cases("ecdsa"))
def test_ecdsa_vector(case: dict[str, Any]) -> None:
    crv, alg = case["crv"], case["alg"]
    d, x, y = _h(case["d"]), _h(case["x"]), _h(case["y"])
    digest, signature = _h(case["digest"]), _h(case["signature"])
    jwk = {"kty": "EC", "crv": crv, "x": b64url_encode(x), "y": b64url_encode(y)}
    public = ec_keys.ec_public_key_from_jwk(jwk)
    private = ec_keys.ec_private_key_from_jwk({**jwk, "d": b64url_encode(d)})
    assert ec_keys.ec_private_jwk_fields(private) == {
        "crv": crv,
        "x": jwk["x"],
        "y": jwk["y"],
        "d": b64url_encode(d),
    }
    assert signatures.verify_digest(public, alg, digest, signature)
    assert not signatures.verify_digest(public, alg, digest, _flip(signature))
    assert not signatures.verify_digest(public, alg, _flip(digest), signature)
    assert not signatures.verify_digest(public, alg, digest, signature[:-1])
    # r || s is the DER pyca/cryptography verifies, and back
    size = ec_keys.coordinate_size(crv)
    der = signatures.ecdsa_raw_to_der(signature, crv)
    assert signatures.ecdsa_der_to_raw(der, crv) == signature and len(signature) == 2 * size
    digest_alg = HASHES[alg[2:5]]
    public.verify(der, digest, ec.ECDSA(utils.Prehashed(digest_alg)))
    # a fresh (randomized) signature verifies with pyca/cryptography
    fresh = signatures.sign_digest(private, alg, digest)
    assert len(fresh) == 2 * size
    public.verify(
        signatures.ecdsa_raw_to_der(fresh, crv), digest, ec.ECDSA(utils.Prehashed(digest_alg))
    )
    # the digest must be the hash's length, and the curve the algorithm's
    with pytest.raises(ValueError, match="digest"):
        signatures.sign_digest(private, alg, digest[:-1])
    other = "ES384" if crv != "P-384" else "ES256"
    other_digest = bytes(signatures.signature_info(other).digest_size)
    with pytest.raises(ValueError, match="curve"):
        signatures.sign_digest(private, other, other_digest)


def test_ecdsa_vectors_cover_every_curve_and_rfc6979() -> None:
    cases = [c.values[0] for c in _cases("ecdsa")]
    assert {c["crv"] for c in cases} == set(CURVES)
    assert {c["alg"] for c in cases} == {"ES256", "ES256K", "ES384", "ES512"}
    assert sum(c["name"].startswith("rfc6979-") for c in cases) >= 3


@pytest.mark.parametrize("crv", list(CURVES))
def test_ec_jwk_round_trip_keeps_full_length_members(crv: str) -> None:
    key = ec_keys.generate_ec_key(crv)
    fields = ec_keys.ec_private_jwk_fields(key)
    size = ec_keys.coordinate_size(crv)
    assert all(len(b64url_decode(fields[m])) == size for m in ("x", "y", "d"))
    again = ec_keys.ec_private_key_from_jwk({"kty": "EC-HSM", **fields})
    assert again.private_numbers() == key.private_numbers()
    der = ec_keys.ec_private_key_to_der(key)
    assert ec_keys.ec_private_key_from_der(der).private_numbers() == key.private_numbers()
    assert ec_keys.curve_name(key) == crv


def test_ec_jwk_refusals() -> None:
    fields = ec_keys.ec_private_jwk_fields(ec_keys.generate_ec_key("P-256"))
    other = ec_keys.ec_private_jwk_fields(ec_keys.generate_ec_key("P-256"))
    with pytest.raises(ValueError, match="public point"):
        ec_keys.ec_private_key_from_jwk({**fields, "x": other["x"], "y": other["y"]})
    with pytest.raises(ValueError, match="not on curve"):
        ec_keys.ec_public_key_from_jwk({**fields, "y": fields["x"]})
    with pytest.raises(ValueError, match="unsupported curve"):
        ec_keys.ec_public_key_from_jwk({**fields, "crv": "P-192"})
    with pytest.raises(ValueError, match="32 bytes"):
        ec_keys.ec_public_key_from_jwk({**fields, "x": fields["x"] + "AAAA"})
    with pytest.raises(ValueError, match="'d'"):
        ec_keys.ec_private_key_from_jwk({k: v for k, v in fields.items() if k != "d"})
    with pytest.raises(ValueError, match="kty"):
        ec_keys.ec_public_key_from_jwk({**fields, "kty": "RSA"})
    with pytest.raises(ValueError, match="not an EC key"):
        ec_keys.ec_private_key_from_der(_h(_load("rsa_oaep.json")["keys"][RSA_KEY]["pkcs8"]))


# --- RSA -----------------------------------------------------------------------------------


@pytest.mark.parametrize("case", _cases("rsa_signatures"))
def test_rsa_signature_vector(case: dict[str, Any]) -> None:
    key = _rsa_key(case["key"])
    alg, digest, signature = case["alg"], _h(case["digest"]), _h(case["signature"])
    digest_alg = HASHES[alg[2:]]
    public = key.public_key()
    assert signatures.verify_digest(public, alg, digest, signature)
    assert not signatures.verify_digest(public, alg, digest, _flip(signature))
    assert not signatures.verify_digest(public, alg, _flip(digest), signature)
    fresh = signatures.sign_digest(key, alg, digest)
    if case["deterministic"]:
        assert fresh == signature  # RSASSA-PKCS1-v1_5: byte for byte
        scheme: padding.AsymmetricPadding = padding.PKCS1v15()
    else:
        assert fresh != signature  # PSS is randomized
        scheme = padding.PSS(mgf=padding.MGF1(digest_alg), salt_length=digest_alg.digest_size)
    public.verify(fresh, digest, scheme, utils.Prehashed(digest_alg))
    # PSS with another salt length is not what Key Vault makes
    if not case["deterministic"]:
        short_salt = key.sign(
            digest, padding.PSS(mgf=padding.MGF1(digest_alg), salt_length=0),
            utils.Prehashed(digest_alg),
        )  # fmt: skip
        assert not signatures.verify_digest(public, alg, digest, short_salt)
    with pytest.raises(InvalidSignature):
        public.verify(_flip(fresh), digest, scheme, utils.Prehashed(digest_alg))
    with pytest.raises(ValueError, match="digest"):
        signatures.sign_digest(key, alg, digest + b"\x00")
    with pytest.raises(ValueError, match="EC key"):
        signatures.sign_digest(key, "ES256", bytes(32))


@pytest.mark.parametrize("case", _cases("rsa1_5"))
def test_rsa1_5_vector(case: dict[str, Any]) -> None:
    key = _rsa_key(case["key"])
    plaintext, ciphertext = _h(case["plaintext"]), _h(case["ciphertext"])
    assert rsa_encryption.rsa_decrypt(key, ciphertext, "RSA1_5") == plaintext
    again = rsa_encryption.rsa_encrypt(key.public_key(), plaintext, "RSA1_5")
    assert again != ciphertext and len(again) == 256
    assert key.decrypt(again, padding.PKCS1v15()) == plaintext
    # implicit rejection: a tampered ciphertext does not decrypt to the plaintext
    with contextlib.suppress(DecryptionFailed):
        assert rsa_encryption.rsa_decrypt(key, _flip(ciphertext, 5), "RSA1_5") != plaintext
    with pytest.raises(DecryptionFailed):
        rsa_encryption.rsa_decrypt(key, ciphertext[:-1], "RSA1_5")


def test_rsa_encryption_limits_and_names() -> None:
    key = _rsa_key(RSA_KEY)
    assert rsa_encryption.rsa_max_plaintext(2048, "RSA1_5") == 245
    assert rsa_encryption.rsa_max_plaintext(2048, "RSA-OAEP") == 214
    assert rsa_encryption.rsa_max_plaintext(2048, "RSA-OAEP-256") == 190
    with pytest.raises(ValueError, match="at most 245"):
        rsa_encryption.rsa_encrypt(key.public_key(), bytes(246), "RSA1_5")
    for alg in ("RSA-OAEP", "RSA-OAEP-256", "RSA1_5"):
        sealed = rsa_encryption.rsa_encrypt(key.public_key(), b"secret", alg)
        assert rsa_encryption.rsa_decrypt(key, sealed, alg) == b"secret"
    with pytest.raises(ValueError, match="unsupported algorithm"):
        rsa_encryption.parse_rsa_encryption_algorithm("RSA-OAEP-512")
    with pytest.raises(ValueError, match="unsupported signature algorithm"):
        signatures.parse_signature_algorithm("HS256")
