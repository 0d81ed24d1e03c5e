"""The customer's command-line BYOK paths against a real ``customerkey serve`` whose HSM is this
session's SoftHSM2 token: ``customerkey key create --protection hsm --ops import`` makes the
KEK, ``customerkey key byok-wrap`` wraps an EC key and a raw AES key file to its public key,
``customerkey key byok-import`` brings them in (each CLI run a process of its own with the HSM
settings, as an operator runs it); and the unmodified az CLI's ``az keyvault key create --ops
import``, ``az keyvault key download`` and ``az keyvault key import --byok-file`` (RSA, EC with
``--curve``, oct), as Key Vault's BYOK documentation has customers run them. What lands in the
vault is checked with the SDK: the customer's public key is served, and the token's signature
and AES ciphertext agree with pyca/cryptography under the customer's key."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from azure.keyvault.keys import KeyClient, KeyVaultKey
from azure.keyvault.keys.crypto import (
    CryptographyClient,
    EncryptionAlgorithm,
    KeyWrapAlgorithm,
    SignatureAlgorithm,
)
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, utils
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.keywrap import aes_key_wrap

from customerkey.azure import ClientSecretCredential
from customerkey.crypto.signatures import ecdsa_raw_to_der
from tests.support.az_cli import Az, loopback_proxy, require_az
from tests.support.live_servers import TENANT

if TYPE_CHECKING:
    from tests.support.live_servers import LiveServer

VAULT = "hsm-byok-cli"
# Crypto operations only, without keys/get: the SDK then runs every operation in the vault
# (tests/hsm/test_hsm_oct_sdk.py says why that matters for oct-HSM keys).
CRYPTO_APP = "byok-cli-crypto@contoso.com"
READER = "byok-cli-reader@contoso.com"


@dataclass
class Installation:
    server: LiveServer
    reader: ClientSecretCredential
    crypto_credential: ClientSecretCredential

    def key(self, name: str) -> KeyVaultKey:
        client = KeyClient(
            self.server.vault_url(VAULT), self.reader, connection_verify=str(self.server.ca)
        )
        return client.get_key(name)

    def crypto(self, key: KeyVaultKey) -> CryptographyClient:
        assert key.id is not None
        return CryptographyClient(
            key.id, self.crypto_credential, connection_verify=str(self.server.ca)
        )


@pytest.fixture(scope="module")
def installation(hsm_server: LiveServer) -> Iterator[Installation]:
    hsm_server.create_vault(VAULT)
    reader_secret = hsm_server.create_principal(READER)
    hsm_server.grant(VAULT, READER, ["get", "list"])
    crypto_secret = hsm_server.create_principal(CRYPTO_APP)
    hsm_server.grant(VAULT, CRYPTO_APP, ["encrypt", "decrypt", "wrapKey", "unwrapKey", "sign"])
    reader = hsm_server.credential(READER, reader_secret)
    crypto = hsm_server.credential(CRYPTO_APP, crypto_secret)
    try:
        yield Installation(hsm_server, reader, crypto)
    finally:
        reader.close()
        crypto.close()


def _kek_pem(key: KeyVaultKey, path: Path) -> Path:
    assert key.key.n is not None and key.key.e is not None
    public = rsa.RSAPublicNumbers(
        int.from_bytes(key.key.e, "big"), int.from_bytes(key.key.n, "big")
    ).public_key()
    path.write_bytes(
        public.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return path


def _ec_pem(target: ec.EllipticCurvePrivateKey, path: Path) -> Path:
    path.write_bytes(
        target.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return path


def _check_ec(
    installation: Installation, name: str, target: ec.EllipticCurvePrivateKey, crv: str
) -> None:
    key = installation.key(name)
    numbers = target.public_key().public_numbers()
    assert key.key_type == "EC-HSM" and key.key.crv == crv
    assert key.key.x is not None and key.key.y is not None
    assert (int.from_bytes(key.key.x, "big"), int.from_bytes(key.key.y, "big")) == (
        numbers.x,
        numbers.y,
    )
    hash_ = {"P-256": hashes.SHA256(), "P-384": hashes.SHA384()}[crv]
    alg = {"P-256": SignatureAlgorithm.es256, "P-384": SignatureAlgorithm.es384}[crv]
    digest = hashlib.new(hash_.name, b"brought in from the command line").digest()
    raw = installation.crypto(key).sign(alg, digest).signature
    target.public_key().verify(ecdsa_raw_to_der(raw, crv), digest, ec.ECDSA(utils.Prehashed(hash_)))


def _check_aes(installation: Installation, name: str, known: bytes) -> None:
    key = installation.key(name)
    assert key.key_type == "oct-HSM"
    client = installation.crypto(key)
    secret = os.urandom(32)
    alg = {16: KeyWrapAlgorithm.aes_128, 24: KeyWrapAlgorithm.aes_192}.get(
        len(known), KeyWrapAlgorithm.aes_256
    )
    assert client.wrap_key(alg, secret).encrypted_key == aes_key_wrap(known, secret)
    enc = {16: EncryptionAlgorithm.a128_gcm, 24: EncryptionAlgorithm.a192_gcm}.get(
        len(known), EncryptionAlgorithm.a256_gcm
    )
    sealed = client.encrypt(enc, b"from the command line", additional_authenticated_data=b"h")
    assert sealed.iv is not None
    assert sealed.ciphertext + (sealed.tag or b"") == AESGCM(known).encrypt(
        sealed.iv, b"from the command line", b"h"
    )


# ------------------------------------------------------------------ customerkey's own CLI


def test_byok_wrap_and_byok_import_on_the_command_line(
    installation: Installation, tmp_path: Path
) -> None:
    server = installation.server
    made = server.cli_json(
        "key", "create", VAULT, "cli-kek", "--protection", "hsm", "--size", "2048",
        "--ops", "import",
    )  # fmt: skip
    assert made["KeyType"] == "RSA-HSM" and made["KeyOps"] == ["import"]
    kek_pem = _kek_pem(installation.key("cli-kek"), tmp_path / "kek.pem")

    target = ec.generate_private_key(ec.SECP384R1())
    ec_byok = tmp_path / "ec.byok"
    server.cli(
        "key", "byok-wrap", "--kek-public", str(kek_pem),
        "--key", str(_ec_pem(target, tmp_path / "ec.pem")), "--kid", made["Id"],
        "--out", str(ec_byok),
    )  # fmt: skip
    imported = server.cli_json(
        "key", "byok-import", VAULT, "cli-ec", "--byok-file", str(ec_byok), "--kty", "EC-HSM"
    )
    assert imported["KeyType"] == "EC-HSM" and imported["KeySize"] == 384
    _check_ec(installation, "cli-ec", target, "P-384")

    known = os.urandom(32)
    raw = tmp_path / "aes.key"
    raw.write_bytes(known)
    aes_byok = tmp_path / "aes.byok"
    server.cli(
        "key", "byok-wrap", "--kek-public", str(kek_pem), "--key", str(raw),
        "--kid", made["Id"], "--out", str(aes_byok),
    )  # fmt: skip
    imported = server.cli_json(
        "key", "byok-import", VAULT, "cli-aes", "--byok-file", str(aes_byok), "--kty", "oct-HSM"
    )
    assert imported["KeyType"] == "oct-HSM" and imported["KeySize"] == 256
    assert sorted(imported["KeyOps"]) == ["decrypt", "encrypt", "unwrapKey", "wrapKey"]
    _check_aes(installation, "cli-aes", known)

    # The wrong --kty: the blob holds an EC key, not an AES one; refused, nothing said why.
    refused = server.cli(
        "key", "byok-import", VAULT, "cli-wrong", "--byok-file", str(ec_byok), "--kty", "oct-HSM",
        check=False,
    )  # fmt: skip
    assert refused.returncode != 0 and "Decryption failed." in refused.stderr


# ------------------------------------------------------------------ az keyvault key import


@pytest.fixture(scope="module")
def az(installation: Installation, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Az]:
    executable = require_az()
    server = installation.server
    app = server.cli_json("principal", "create", "--service", "--tenant", TENANT)
    server.cli("vault", "access", "set", VAULT, "--spn", app["Id"], "--key-permissions", "all")
    root = tmp_path_factory.mktemp("az-byok")
    with loopback_proxy(server.port) as proxy:
        signed_in = Az(executable, server, proxy, root)
        signed_in.register_cloud()
        signed_in.login(app["Id"], app["ClientSecret"], TENANT)
        yield signed_in


def test_az_keyvault_key_import_byok_file(
    az: Az, installation: Installation, tmp_path: Path
) -> None:
    server = installation.server
    kek = az.json(
        "keyvault", "key", "create", "--vault-name", VAULT, "--name", "az-kek",
        "--kty", "RSA-HSM", "--size", "2048", "--ops", "import",
    )  # fmt: skip
    assert kek["key"]["kty"] == "RSA-HSM" and kek["key"]["keyOps"] == ["import"]
    kid = kek["key"]["kid"]
    kek_pem = tmp_path / "az-kek.pem"
    az.run(
        "keyvault", "key", "download", "--vault-name", VAULT, "--name", "az-kek",
        "--file", str(kek_pem), "--encoding", "PEM",
    )  # fmt: skip

    # RSA (az's default --kty)
    rsa_target = rsa.generate_private_key(65537, 2048)
    rsa_pem = tmp_path / "rsa.pem"
    rsa_pem.write_bytes(
        rsa_target.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    rsa_byok = tmp_path / "rsa.byok"
    server.cli(
        "key", "byok-wrap", "--kek-public", str(kek_pem), "--key", str(rsa_pem), "--kid", kid,
        "--out", str(rsa_byok),
    )  # fmt: skip
    imported = az.json(
        "keyvault", "key", "import", "--vault-name", VAULT, "--name", "az-rsa",
        "--byok-file", str(rsa_byok),
    )  # fmt: skip
    assert imported["key"]["kty"] == "RSA-HSM"
    key = installation.key("az-rsa")
    assert key.key.n is not None
    assert int.from_bytes(key.key.n, "big") == rsa_target.public_key().public_numbers().n
    digest = hashlib.sha256(b"az import").digest()
    signature = installation.crypto(key).sign(SignatureAlgorithm.rs256, digest).signature
    rsa_target.public_key().verify(
        signature, digest, padding.PKCS1v15(), utils.Prehashed(hashes.SHA256())
    )

    # EC, with the --curve az insists on (sent as the JWK's crv)
    ec_target = ec.generate_private_key(ec.SECP256R1())
    ec_byok = tmp_path / "ec.byok"
    server.cli(
        "key", "byok-wrap", "--kek-public", str(kek_pem),
        "--key", str(_ec_pem(ec_target, tmp_path / "ec.pem")), "--kid", kid,
        "--out", str(ec_byok),
    )  # fmt: skip
    imported = az.json(
        "keyvault", "key", "import", "--vault-name", VAULT, "--name", "az-ec",
        "--byok-file", str(ec_byok), "--kty", "EC", "--curve", "P-256",
    )  # fmt: skip
    assert imported["key"]["kty"] == "EC-HSM" and imported["key"]["crv"] == "P-256"
    _check_ec(installation, "az-ec", ec_target, "P-256")
    # A --curve that is not the key's is refused, and nothing is created.
    refused = az.fails(
        "keyvault", "key", "import", "--vault-name", VAULT, "--name", "az-ec-wrong",
        "--byok-file", str(ec_byok), "--kty", "EC", "--curve", "P-384",
    )  # fmt: skip
    assert "another curve" in refused

    # oct (a raw AES-128 key file)
    known = os.urandom(16)
    raw = tmp_path / "aes.key"
    raw.write_bytes(known)
    aes_byok = tmp_path / "aes.byok"
    server.cli(
        "key", "byok-wrap", "--kek-public", str(kek_pem), "--key", str(raw), "--kid", kid,
        "--out", str(aes_byok),
    )  # fmt: skip
    imported = az.json(
        "keyvault", "key", "import", "--vault-name", VAULT, "--name", "az-aes",
        "--byok-file", str(aes_byok), "--kty", "oct",
    )  # fmt: skip
    assert imported["key"]["kty"] == "oct-HSM"
    _check_aes(installation, "az-aes", known)
