"""Building blocks for files-workload tests: a tenant, two vaults whose root keys are granted
to the SharePoint workload principal, sites, and generated content that is cheap to make and
to check without holding it whole."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from customerkey.identity.workload_principals import SHAREPOINT
from customerkey.runtime import Runtime
from customerkey.vault.models import OPERATOR

TENANT = "contoso"
VAULT_A = "Contoso-O365SP-NA-VaultA1"
VAULT_B = "Contoso-O365SP-NA-VaultA2"
VAULT_C = "Contoso-O365SP-NA-VaultA3"
KEY_A = "Contoso-O365SP-NA-VaultA1-Key001"
KEY_B = "Contoso-O365SP-NA-VaultA2-Key001"
KEY_C = "Contoso-O365SP-NA-VaultA3-Key001"
URI_A = f"https://{VAULT_A.lower()}.vault.azure.net/keys/{KEY_A}"
URI_B = f"https://{VAULT_B.lower()}.vault.azure.net/keys/{KEY_B}"
URI_C = f"https://{VAULT_C.lower()}.vault.azure.net/keys/{KEY_C}"
ADMIN_URL = "https://contoso-admin.sharepoint.local"
FINANCE = "https://contoso.sharepoint.local/sites/finance"
GRANT = ["wrapKey", "unwrapKey", "get"]


def site_url(name: str) -> str:
    return f"https://contoso.sharepoint.local/sites/{name}"


def setup_tenant_and_vaults(rt: Runtime, *, third: bool = False) -> None:
    rt.tenants.create(OPERATOR, TENANT, mail_domain="contoso.com")
    vaults = [(VAULT_A, "eastus", KEY_A), (VAULT_B, "westus", KEY_B)]
    if third:
        vaults.append((VAULT_C, "centralus", KEY_C))
    for vault, region, key in vaults:
        rt.vault.create_vault(
            OPERATOR,
            vault,
            subscription="contoso-sub",
            region=region,
            tenant=TENANT,
            purge_protection=True,
        )
        rt.vault.create_key(OPERATOR, vault, key, kty="RSA-HSM", key_ops=["wrapKey", "unwrapKey"])
        rt.vault.set_access_policy(OPERATOR, vault, SHAREPOINT.app_id, GRANT)


def register(rt: Runtime) -> None:
    """Register the files policy and run its job to the end."""
    rt.files.register(OPERATOR, TENANT, URI_A, URI_B)
    rt.worker().run_until_idle()
    assert rt.files.status(OPERATOR, TENANT).state == "Registered"


class Generated:
    """``size`` pseudo-random bytes (AES-CTR keystream of ``seed``), read like a file."""

    def __init__(self, size: int, seed: int = 0) -> None:
        key = hashlib.sha256(f"files-test-{seed}".encode()).digest()
        self._encryptor = Cipher(algorithms.AES(key), modes.CTR(bytes(16))).encryptor()
        self._left = size
        self._zeros = bytearray(1 << 20)

    def readinto(self, buffer: memoryview | bytearray) -> int:
        view = memoryview(buffer).cast("B")
        size = min(len(view), self._left, len(self._zeros))
        if size <= 0:
            return 0
        view[:size] = self._encryptor.update(memoryview(self._zeros)[:size])
        self._left -= size
        return size

    def read(self, size: int = -1) -> bytes:
        size = min(self._left, 1 << 20) if size < 0 else size
        buffer = bytearray(size)
        got = self.readinto(buffer)
        return bytes(buffer[:got])


def generated_bytes(size: int, seed: int = 0) -> bytes:
    out = bytearray()
    source = Generated(size, seed)
    while chunk := source.read(1 << 20):
        out += chunk
    return bytes(out)


def digest_of_generated(size: int, seed: int = 0) -> str:
    digest = hashlib.sha256()
    source = Generated(size, seed)
    while chunk := source.read(1 << 20):
        digest.update(chunk)
    return digest.hexdigest()


def digest_of_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def blob_files(rt: Runtime) -> Iterator[Path]:
    root = rt.home.blobs_dir / "files"
    return (p for p in root.rglob("*") if p.is_file()) if root.exists() else iter(())
