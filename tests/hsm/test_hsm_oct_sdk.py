"""oct-HSM keys and EC-HSM BYOK through a real ``customerkey serve`` whose HSM is this session's
SoftHSM2 token, driven by the unmodified Azure SDK: the serve banner names oct-HSM in the
token; an oct-HSM key made with ``create_oct_key(hardware_protected=True)`` is a token object
and round-trips AES key wrap, AES-GCM and AES-CBC(PAD) through ``CryptographyClient`` (the
token's GCM and CBC answers checked against pyca/cryptography under a known AES key brought
in by BYOK); a flipped tag, ciphertext or AAD is refused undetailed; EC keys of each curve
brought in by BYOK serve the customer's public key and sign in the token."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pytest
from azure.core.exceptions import HttpResponseError
from azure.keyvault.keys import JsonWebKey, KeyClient, KeyVaultKey
from azure.keyvault.keys.crypto import (
    CryptographyClient,
    EncryptionAlgorithm,
    KeyWrapAlgorithm,
    SignatureAlgorithm,
)
from cryptography.hazmat.primitives import hashes, padding
from cryptography.hazmat.primitives.asymmetric import ec, rsa, utils
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.keywrap import aes_key_wrap

from customerkey.azure import ClientSecretCredential
from customerkey.crypto.signatures import ecdsa_raw_to_der
from customerkey.vault.byok import wrap_for_kek
from tests.support.softhsm import stored_version

if TYPE_CHECKING:
    from tests.support.live_servers import LiveServer

VAULT = "hsm-oct-sdk"
APP = "oct-app@contoso.com"
# A principal without keys/get: the SDK's CryptographyClient then sends every operation to the
# server. With keys/get it builds a local provider from the oct-HSM key's JWK, which has no
# "k", and SymmetricKey(key_bytes=None) draws a random key: wrapKey and A*CBCPAD encrypt
# would run in the client, under that random key, and never reach the vault.
CRYPTO_APP = "oct-crypto@contoso.com"


@dataclass
class Sdk:
    server: LiveServer
    credential: ClientSecretCredential
    crypto_credential: ClientSecretCredential

    def keys(self) -> KeyClient:
        return KeyClient(
            self.server.vault_url(VAULT), self.credential, connection_verify=str(self.server.ca)
        )

    def crypto(self, key: KeyVaultKey) -> CryptographyClient:
        assert key.id is not None
        return CryptographyClient(
            key.id, self.crypto_credential, connection_verify=str(self.server.ca)
        )

    def bring(self, name: str, target: bytes | ec.EllipticCurvePrivateKey, kty: str) -> KeyVaultKey:
        """``target`` wrapped to a fresh KEK (as the customer does) and imported by BYOK."""
        kek = self.keys().create_rsa_key(
            f"kek-{name}", hardware_protected=True, size=2048, key_operations=["import"]
        )
        assert kek.id is not None and kek.key.n is not None and kek.key.e is not None
        public = rsa.RSAPublicNumbers(
            int.from_bytes(kek.key.e, "big"), int.from_bytes(kek.key.n, "big")
        ).public_key()
        blob = wrap_for_kek(public, kek.id, target, aes_key=os.urandom(32))
        return self.keys().import_key(name, JsonWebKey(kty=kty, t=blob))


@pytest.fixture(scope="module")
def sdk(hsm_server: LiveServer) -> Iterator[Sdk]:
    hsm_server.create_vault(VAULT)
    secret = hsm_server.create_principal(APP)
    hsm_server.grant(VAULT, APP, ["all"])
    crypto_secret = hsm_server.create_principal(CRYPTO_APP)
    hsm_server.grant(
        VAULT, CRYPTO_APP, ["encrypt", "decrypt", "wrapKey", "unwrapKey", "sign", "verify"]
    )
    credential = hsm_server.credential(APP, secret)
    crypto_credential = hsm_server.credential(CRYPTO_APP, crypto_secret)
    try:
        yield Sdk(hsm_server, credential, crypto_credential)
    finally:
        credential.close()
        crypto_credential.close()


def test_the_serve_banner_keeps_oct_hsm_in_the_token(sdk: Sdk) -> None:
    log = sdk.server.log()
    assert "Key protection: RSA, EC in software" in log
    assert "RSA-HSM, EC-HSM, oct-HSM" in log
    assert "oct-HSM (CKM_AES_KEY_GEN): A*KW: CKM_AES_KEY_WRAP" in log
    assert "A*GCM: CKM_AES_GCM" in log and "A*CBCPAD: CKM_AES_CBC_PAD" in log


def test_an_oct_hsm_key_from_the_sdk_round_trips_every_algorithm_in_the_token(sdk: Sdk) -> None:
    key = sdk.keys().create_oct_key("sdk-aes", size=256, hardware_protected=True)
    assert key.key_type == "oct-HSM" and key.properties.version is not None
    assert sorted(key.key_operations or []) == ["decrypt", "encrypt", "unwrapKey", "wrapKey"]
    sealed, object_id = stored_version(sdk.server.home, key.properties.version)
    assert sealed == b"" and object_id is not None
    client = sdk.crypto(key)
    secret = os.urandom(32)
    wrapped = client.wrap_key(KeyWrapAlgorithm.aes_256, secret)
    assert len(wrapped.encrypted_key) == 40
    assert client.unwrap_key(KeyWrapAlgorithm.aes_256, wrapped.encrypted_key).key == secret
    plaintext = b"an oct-HSM key held in SoftHSM"
    aad = b"authenticated header"
    gcm = client.encrypt(EncryptionAlgorithm.a256_gcm, plaintext, additional_authenticated_data=aad)
    assert gcm.iv is not None and len(gcm.iv) == 12 and gcm.tag is not None
    opened = client.decrypt(
        EncryptionAlgorithm.a256_gcm,
        gcm.ciphertext,
        iv=gcm.iv,
        authentication_tag=gcm.tag,
        additional_authenticated_data=aad,
    )
    assert opened.plaintext == plaintext
    iv = os.urandom(16)
    for alg, text in (
        (EncryptionAlgorithm.a256_cbc, b"c" * 48),
        (EncryptionAlgorithm.a256_cbcpad, plaintext),
    ):
        cbc = client.encrypt(alg, text, iv=iv)
        assert cbc.iv == iv
        assert client.decrypt(alg, cbc.ciphertext, iv=iv).plaintext == text, alg

    # Tampering with the tag, the ciphertext or the AAD is refused, saying nothing about why.
    def flipped(data: bytes) -> bytes:
        return bytes([data[0] ^ 1]) + data[1:]

    for ciphertext, tag, extra in (
        (flipped(gcm.ciphertext), gcm.tag, aad),
        (gcm.ciphertext, flipped(gcm.tag), aad),
        (gcm.ciphertext, gcm.tag, flipped(aad)),
    ):
        with pytest.raises(HttpResponseError) as info:
            client.decrypt(
                EncryptionAlgorithm.a256_gcm,
                ciphertext,
                iv=gcm.iv,
                authentication_tag=tag,
                additional_authenticated_data=extra,
            )
        assert info.value.status_code == 400
        assert info.value.message.endswith("The ciphertext could not be decrypted with this key.")


def test_the_tokens_answers_under_a_known_key_are_pycas(sdk: Sdk) -> None:
    known = os.urandom(32)
    key = sdk.bring("known-aes", known, "oct-HSM")
    assert key.key_type == "oct-HSM" and key.properties.version is not None
    sealed, object_id = stored_version(sdk.server.home, key.properties.version)
    assert sealed == b"" and object_id is not None
    client = sdk.crypto(key)
    secret = os.urandom(24)
    wrapped = client.wrap_key(KeyWrapAlgorithm.aes_256, secret).encrypted_key
    assert wrapped == aes_key_wrap(known, secret)
    aad, plaintext = b"aad", b"known answer"
    # The SDK sends no IV for GCM (the vault draws it); the answer is checked under that IV.
    gcm = client.encrypt(EncryptionAlgorithm.a256_gcm, plaintext, additional_authenticated_data=aad)
    assert gcm.iv is not None and gcm.aad == aad
    assert gcm.ciphertext + (gcm.tag or b"") == AESGCM(known).encrypt(gcm.iv, plaintext, aad)
    iv = os.urandom(16)
    padder = padding.PKCS7(128).padder()
    padded = padder.update(plaintext) + padder.finalize()
    encryptor = Cipher(algorithms.AES(known), modes.CBC(iv)).encryptor()
    expected = encryptor.update(padded) + encryptor.finalize()
    assert client.encrypt(EncryptionAlgorithm.a256_cbcpad, plaintext, iv=iv).ciphertext == expected


@pytest.mark.parametrize(
    ("crv", "curve", "alg", "hash_"),
    [
        ("P-256", ec.SECP256R1(), SignatureAlgorithm.es256, hashes.SHA256()),
        ("P-384", ec.SECP384R1(), SignatureAlgorithm.es384, hashes.SHA384()),
        ("P-521", ec.SECP521R1(), SignatureAlgorithm.es512, hashes.SHA512()),
        ("P-256K", ec.SECP256K1(), SignatureAlgorithm.es256_k, hashes.SHA256()),
    ],
)
def test_an_ec_key_brought_by_byok_serves_the_customers_public_key(
    sdk: Sdk,
    crv: str,
    curve: ec.EllipticCurve,
    alg: SignatureAlgorithm,
    hash_: hashes.HashAlgorithm,
) -> None:
    target = ec.generate_private_key(curve)
    name = f"byok-ec-{crv}"
    key = sdk.bring(name, target, "EC-HSM")
    numbers = target.public_key().public_numbers()
    assert key.key_type == "EC-HSM" and key.key.crv == crv
    assert key.key.x is not None and key.key.y is not None
    assert (int.from_bytes(key.key.x, "big"), int.from_bytes(key.key.y, "big")) == (
        numbers.x,
        numbers.y,
    )
    assert key.properties.version is not None
    sealed, object_id = stored_version(sdk.server.home, key.properties.version)
    assert sealed == b"" and object_id is not None
    digest = hashlib.new(hash_.name, b"signed in the token").digest()
    raw = sdk.crypto(key).sign(alg, digest).signature
    target.public_key().verify(ecdsa_raw_to_der(raw, crv), digest, ec.ECDSA(utils.Prehashed(hash_)))
