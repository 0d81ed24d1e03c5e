"""The known answer of the HSM backup format (format 2, ``vault.backup``): the token's sealing
done in software with the fixed keys of ``tests/vectors/hsm_backup_v2.json``, and the backup the
vector describes (used by its generator and by the test that checks it)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from customerkey.clock import from_unix
from customerkey.vault import backup as backup_format
from customerkey.vault.hsm import SealedBackup

VECTORS = Path(__file__).resolve().parents[1] / "vectors" / "hsm_backup_v2.json"


class SoftwareSeal:
    """The token's sealing done in software with fixed keys: the wire format's known answer."""

    def __init__(self, vector: dict[str, Any]) -> None:
        self.key = bytes.fromhex(vector["backup_key"])
        self.nonce = bytes.fromhex(vector["nonce"])
        self.wrapped_key = bytes.fromhex(vector["wrapped_backup_key"])
        self.domain = vector["security_domain"]

    def seal(self, plaintext: bytes, aad: bytes) -> SealedBackup:
        ciphertext = AESGCM(self.key).encrypt(self.nonce, plaintext, aad)
        return SealedBackup(self.domain, self.wrapped_key, self.nonce, ciphertext)

    def open(self, sealed: SealedBackup, aad: bytes) -> bytes:
        assert sealed.key == self.wrapped_key and sealed.domain == self.domain
        return AESGCM(self.key).decrypt(sealed.nonce, sealed.ciphertext, aad)


def vector_backup(vector: dict[str, Any]) -> backup_format.KeyBackup:
    created = from_unix(vector["created"])
    version = backup_format.BackupVersion(
        version=vector["version"],
        seq=1,
        kty="RSA-HSM",
        key_size=2048,
        key_ops=("unwrapKey", "wrapKey"),
        enabled=True,
        not_before=None,
        expires=None,
        created=created,
        updated=created,
        tags={"env": "dr"},
        exportable=False,
        imported=False,
        n=vector["n"],
        e="AQAB",
        private_der=b"",
        wrapped=bytes.fromhex(vector["wrapped_version"]),
    )
    header = backup_format.BackupHeader(
        name="root",
        subscription="sub-dr",
        region="eastus",
        created=created,
        tenant="contoso",
        security_domain=vector["security_domain"],
    )
    return backup_format.KeyBackup(header=header, rotation_policy=None, versions=(version,))
