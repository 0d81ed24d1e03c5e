"""Backup and restore of an RSA-HSM key through a real ``customerkey serve`` and the unmodified
Azure SDK (``backup_key``, ``restore_key_backup``), the token holding a security domain made
with ``customerkey hsm security-domain create``: the key is purged (its token objects with
it), restored with the same version ids, and unwraps in the token again."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest
from azure.keyvault.keys import KeyClient
from azure.keyvault.keys.crypto import CryptographyClient, KeyWrapAlgorithm

from customerkey.azure import ClientSecretCredential
from tests.support.servers import clean_env
from tests.support.softhsm import SoftHsm

if TYPE_CHECKING:
    from tests.support.live_servers import LiveServer

VAULT = "hsm-backup"
APP = "hsm-backup-app@contoso.com"
LABEL = "customerkey-dr-sdk"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, softhsm: SoftHsm) -> Iterator[LiveServer]:
    from tests.support.live_servers import contoso_server

    token = softhsm.other(LABEL)
    home = tmp_path_factory.mktemp("hsm-backup")
    created = subprocess.run(
        [sys.executable, "-m", "customerkey", "--json", "hsm", "security-domain", "create"],
        env={
            **clean_env(),
            **token.env(),
            "CUSTOMERKEY_HOME": str(home / "admin"),
            "CUSTOMERKEY_PKCS11_SO_PIN_FILE": str(token.so_pin_file),
        },
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert created.returncode == 0, created.stderr
    assert len(json.loads(created.stdout)["SecurityDomain"]) == 16
    with contoso_server(home / "serve", env=token.env()) as live:
        live.create_vault(VAULT)
        yield live


@pytest.fixture(scope="module")
def credential(server: LiveServer) -> Iterator[ClientSecretCredential]:
    secret = server.create_principal(APP)
    server.grant(VAULT, APP, ["all"])
    credential = server.credential(APP, secret)
    try:
        yield credential
    finally:
        credential.close()


def _object_ids(server: LiveServer) -> dict[str, str | None]:
    db = sqlite3.connect(server.home / "customerkey.db")
    try:
        rows = db.execute("SELECT version, hsm_object_id FROM key_versions").fetchall()
    finally:
        db.close()
    return {version: object_id for version, object_id in rows}


def test_sdk_backup_purge_restore_of_an_rsa_hsm_key(
    server: LiveServer, credential: ClientSecretCredential
) -> None:
    keys = KeyClient(server.vault_url(VAULT), credential, connection_verify=str(server.ca))
    key = keys.create_rsa_key("dr-root", hardware_protected=True, size=2048)
    assert key.key_type == "RSA-HSM" and key.id is not None and key.properties.version
    before = _object_ids(server)[key.properties.version]
    assert before is not None
    secret = os.urandom(32)
    crypto = CryptographyClient(key.id, credential, connection_verify=str(server.ca))
    wrapped = crypto.wrap_key(KeyWrapAlgorithm.rsa_oaep_256, secret).encrypted_key

    blob = keys.backup_key("dr-root")
    assert blob[:5] == b"CKBK\x02"
    keys.begin_delete_key("dr-root").wait()
    keys.purge_deleted_key("dr-root")
    assert key.properties.version not in _object_ids(server)

    restored = keys.restore_key_backup(blob)
    assert restored.id == key.id and restored.key_type == "RSA-HSM"
    after = _object_ids(server)[key.properties.version]
    assert after is not None and after != before
    crypto = CryptographyClient(key.id, credential, connection_verify=str(server.ca))
    assert crypto.unwrap_key(KeyWrapAlgorithm.rsa_oaep_256, wrapped).key == secret
