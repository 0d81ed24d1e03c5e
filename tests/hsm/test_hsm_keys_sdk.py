"""HSM-backed keys through a real ``customerkey serve`` whose PKCS#11 settings name this
session's SoftHSM2 token (``hsm_server``), with the unmodified Azure SDK and the CLI: keys made
through either live in the token (the database holds no private key for them), keys wrapped by
the SDK locally unwrap on the server, signatures verify outside it, software key types stay in
software, and the server says at start which protector keeps which key types. A module, token
or PIN that cannot be used stops ``customerkey serve`` at start with an error naming the setting
and never the PIN."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from azure.keyvault.keys import KeyClient
from azure.keyvault.keys.crypto import CryptographyClient, KeyWrapAlgorithm, SignatureAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, utils

from customerkey.azure import ClientSecretCredential
from tests.support.servers import clean_env, free_port
from tests.support.softhsm import SoftHsm, stored_version

if TYPE_CHECKING:
    from tests.support.live_servers import LiveServer

VAULT = "hsm-main"
APP = "hsm-app@contoso.com"


@dataclass
class Sdk:
    server: LiveServer
    credential: ClientSecretCredential

    def keys(self) -> KeyClient:
        return KeyClient(
            self.server.vault_url(VAULT), self.credential, connection_verify=str(self.server.ca)
        )

    def crypto(self, key_id: str) -> CryptographyClient:
        return CryptographyClient(key_id, self.credential, connection_verify=str(self.server.ca))


@pytest.fixture(scope="module")
def sdk(hsm_server: LiveServer) -> Iterator[Sdk]:
    hsm_server.create_vault(VAULT)
    secret = hsm_server.create_principal(APP)
    hsm_server.grant(VAULT, APP, ["all"])
    credential = hsm_server.credential(APP, secret)
    try:
        yield Sdk(hsm_server, credential)
    finally:
        credential.close()


def test_the_server_says_which_protector_keeps_which_key_types(sdk: Sdk) -> None:
    log = sdk.server.log()
    assert "Key protection: RSA, EC in software" in log
    assert "Key protection: PKCS#11 token 'customerkey-test'" in log
    assert "RSA-HSM, EC-HSM, oct-HSM" in log
    assert "RSA-OAEP-256: CKM_RSA_X_509 + OAEP decoding in software" in log


def test_rsa_hsm_key_from_the_sdk_unwraps_in_the_token(sdk: Sdk) -> None:
    key = sdk.keys().create_rsa_key("sdk-root", hardware_protected=True, size=2048)
    assert key.key_type == "RSA-HSM" and key.properties.version is not None
    sealed, object_id = stored_version(sdk.server.home, key.properties.version)
    assert sealed == b"" and object_id is not None
    assert key.id is not None
    client = sdk.crypto(key.id)
    secret = os.urandom(32)
    for alg in (KeyWrapAlgorithm.rsa_oaep_256, KeyWrapAlgorithm.rsa_oaep, KeyWrapAlgorithm.rsa1_5):
        wrapped = client.wrap_key(alg, secret)  # locally, on the public key
        assert client.unwrap_key(alg, wrapped.encrypted_key).key == secret, alg
    digest = hashlib.sha256(b"signed by the token").digest()
    signature = client.sign(SignatureAlgorithm.ps256, digest).signature
    public = key.key
    from cryptography.hazmat.primitives.asymmetric import rsa

    assert public.n is not None and public.e is not None
    rsa_public = rsa.RSAPublicNumbers(
        int.from_bytes(public.e, "big"), int.from_bytes(public.n, "big")
    ).public_key()
    rsa_public.verify(
        signature,
        digest,
        padding.PSS(padding.MGF1(hashes.SHA256()), 32),
        utils.Prehashed(hashes.SHA256()),
    )


def test_keys_from_the_cli_land_in_the_token_and_software_keys_stay_software(sdk: Sdk) -> None:
    sdk.server.cli("key", "create", VAULT, "cli-rsa", "--protection", "hsm")
    made = sdk.keys().get_key("cli-rsa")
    assert made.key_type == "RSA-HSM" and made.properties.version is not None
    sealed, object_id = stored_version(sdk.server.home, made.properties.version)
    assert sealed == b"" and object_id is not None
    ec_key = sdk.keys().create_ec_key("sdk-ec", hardware_protected=True, curve="P-384")
    assert ec_key.key_type == "EC-HSM" and ec_key.properties.version is not None
    assert stored_version(sdk.server.home, ec_key.properties.version)[0] == b""
    soft = sdk.keys().create_rsa_key("soft", size=2048)
    assert soft.properties.version is not None
    sealed, object_id = stored_version(sdk.server.home, soft.properties.version)
    assert sealed != b"" and object_id is None


def _serve(home: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "customerkey.cli.main",
            "--home",
            str(home),
            "serve",
            "--port",
            str(free_port()),
        ],
        capture_output=True,
        text=True,
        env={**clean_env(), **env},
        timeout=120,
    )


@pytest.mark.parametrize(
    ("change", "names"),
    [
        ({"CUSTOMERKEY_PKCS11_MODULE": "/nonexistent/libvendor.so"}, "CUSTOMERKEY_PKCS11_MODULE"),
        ({"CUSTOMERKEY_PKCS11_TOKEN_LABEL": "no-such-token"}, "CUSTOMERKEY_PKCS11_TOKEN_LABEL"),
        ("wrong-pin", "CUSTOMERKEY_PKCS11_PIN_FILE"),
    ],
)
def test_serve_refuses_to_start_without_a_usable_token(
    softhsm: SoftHsm, tmp_path: Path, change: dict[str, str] | str, names: str
) -> None:
    env = softhsm.env()
    wrong = "7391-not-the-pin"
    if change == "wrong-pin":
        pin_file = tmp_path / "pin"
        pin_file.write_text(wrong + "\n")
        env["CUSTOMERKEY_PKCS11_PIN_FILE"] = str(pin_file)
    else:
        assert isinstance(change, dict)
        env.update(change)
    result = _serve(tmp_path / "home", env)
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert names in output
    assert softhsm.pin not in output and wrong not in output
    assert "Traceback" not in output
