"""The BYOK key transfer blob (``vault.byok``): a fixed ``.byok`` made with pyca/cryptography
alone (``tests/vectors/byok_ec_p256.json``) parses to the KEK and ciphertext it holds; the
customer-side wrap is, byte for byte in its deterministic half, what pyca makes, and opens with
the KEK's private key; malformed or foreign blobs are refused before any key is touched."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.keywrap import (
    aes_key_unwrap_with_padding,
    aes_key_wrap_with_padding,
)

from customerkey.errors import BadParameter
from customerkey.vault.byok import (
    KekReference,
    is_kek_request,
    make_byok,
    parse_byok,
    target_plaintext,
    wrap_for_kek,
)

VECTOR = json.loads((Path(__file__).parents[1] / "vectors" / "byok_ec_p256.json").read_text())
SHA1_OAEP = padding.OAEP(padding.MGF1(hashes.SHA1()), hashes.SHA1(), None)


def _kek() -> rsa.RSAPrivateKey:
    key = serialization.load_pem_private_key(VECTOR["kek_private_pem"].encode(), None)
    assert isinstance(key, rsa.RSAPrivateKey)
    return key


def _blob(document: dict[str, Any]) -> bytes:
    return json.dumps(document).encode()


def test_the_vector_parses_to_its_kek_and_opens_with_pyca() -> None:
    transfer = parse_byok(_blob(VECTOR["byok"]))
    assert transfer.kek == KekReference(
        "byok-vectors", "KEKforBYOK", "0123456789abcdef0123456789abcdef"
    )
    assert transfer.generator == "pyca/cryptography (tests/vectors)"
    encrypted_key, wrapped_key = transfer.split(256)
    aes_key = _kek().decrypt(encrypted_key, SHA1_OAEP)
    assert aes_key.hex() == VECTOR["aes_key_hex"]
    assert aes_key_unwrap_with_padding(aes_key, wrapped_key).hex() == VECTOR["target_pkcs8_hex"]


def test_the_customer_side_wrap_is_what_pyca_makes() -> None:
    kek = _kek()
    target = serialization.load_der_private_key(bytes.fromhex(VECTOR["target_pkcs8_hex"]), None)
    assert isinstance(target, ec.EllipticCurvePrivateKey)
    aes_key = bytes.fromhex(VECTOR["aes_key_hex"])
    kid = VECTOR["byok"]["header"]["kid"]
    blob = wrap_for_kek(kek.public_key(), kid, target, aes_key=aes_key, generator="g")
    document = json.loads(blob)
    assert document["schema_version"] == "1.0.0"
    assert document["header"] == {"kid": kid, "alg": "dir", "enc": "CKM_RSA_AES_KEY_WRAP"}
    assert document["generator"] == "g"
    text = document["ciphertext"]
    assert "=" not in text and "+" not in text and "/" not in text  # base64url, unpadded
    ciphertext = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    # RSA-OAEP is randomised: its half opens with SHA-1 OAEP to the AES key; the AES-KWP half
    # is deterministic and equals pyca's, and the vector's.
    assert kek.decrypt(ciphertext[:256], SHA1_OAEP) == aes_key
    expected = aes_key_wrap_with_padding(aes_key, bytes.fromhex(VECTOR["target_pkcs8_hex"]))
    assert ciphertext[256:] == expected
    assert ciphertext[256:] == parse_byok(_blob(VECTOR["byok"])).split(256)[1]


def test_target_plaintexts() -> None:
    rsa_key = rsa.generate_private_key(65537, 2048)
    der = target_plaintext(rsa_key)
    assert serialization.load_der_private_key(der, None).private_numbers() == (  # type: ignore[union-attr]
        rsa_key.private_numbers()
    )
    assert target_plaintext(bytes(range(32))) == bytes(range(32))
    with pytest.raises(ValueError):
        target_plaintext(bytes(20))


@pytest.mark.parametrize(
    ("change", "words"),
    [
        (lambda d: d["header"].update(enc="RSA_AES_KEY_WRAP_256"), "'enc'"),
        (lambda d: d["header"].update(alg="RSA-OAEP"), "'alg'"),
        (lambda d: d["header"].update(kid="http://v.vault.azure.net/keys/k/1"), "not a key id"),
        (lambda d: d["header"].update(kid="https://v.vault.azure.net/secrets/k/1"), "not a key"),
        (lambda d: d["header"].pop("kid"), "'kid'"),
        (lambda d: d.pop("header"), "'header'"),
        (lambda d: d.update(schema_version="2.0.0"), "schema_version"),
        (lambda d: d.update(ciphertext="AAAA"), "too short"),
        (lambda d: d.update(ciphertext="!!not base64url!!"), "too short"),
    ],
)
def test_malformed_blobs_are_refused(change: Any, words: str) -> None:
    document = json.loads(json.dumps(VECTOR["byok"]))
    change(document)
    with pytest.raises(BadParameter, match=words):
        parse_byok(_blob(document))


def test_not_json_and_oversized_blobs_are_refused() -> None:
    with pytest.raises(BadParameter, match="not a JSON document"):
        parse_byok(b"\xff\xfe")
    with pytest.raises(BadParameter, match="not a JSON object"):
        parse_byok(b"[1, 2]")
    with pytest.raises(BadParameter, match="larger than"):
        parse_byok(b" " * 20000)


def test_make_byok_round_trips_and_kek_requests() -> None:
    kid = "https://vault1.example.test:8443/keys/kek"
    transfer = parse_byok(make_byok(kid, bytes(300), "tool"))
    assert transfer.kek == KekReference("vault1", "kek", None)
    assert transfer.ciphertext == bytes(300)
    assert is_kek_request(["import"]) and is_kek_request(["Import"])
    assert not is_kek_request(None) and not is_kek_request(["sign", "verify"])
    with pytest.raises(BadParameter, match="only"):
        is_kek_request(["import", "decrypt"])
