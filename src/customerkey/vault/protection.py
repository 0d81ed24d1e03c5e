"""How a vault protects private key material at rest.

``KeyProtector`` is the interface (a PKCS#11 or cloud-HSM backend would implement the same
two methods). ``SoftwareKeyProtector`` seals each version's PKCS#8 private key with the
envelope (``crypto.aead``) under the installation's master key, with the context binding it
to its vault, key and version ids, so a sealed blob copied onto another key row will not
open. This is software protection: ``RSA-HSM`` keys are marked non-exportable and never leave
through the API, but the master key file is what really guards them.
"""

from __future__ import annotations

from typing import Protocol

from customerkey.crypto.aead import open_sealed, seal


class KeyProtector(Protocol):
    def seal_private_key(
        self, der: bytes, *, vault_id: str, key_id: str, version: str
    ) -> bytes: ...

    def open_private_key(
        self, sealed: bytes, *, vault_id: str, key_id: str, version: str
    ) -> bytes: ...


class SoftwareKeyProtector:
    def __init__(self, master_key: bytes, master_key_id: str) -> None:
        if len(master_key) != 32:
            raise ValueError(f"master key must be 32 bytes, got {len(master_key)}")
        self._key = master_key
        self._key_id = master_key_id

    @staticmethod
    def _context(vault_id: str, key_id: str, version: str) -> dict[str, str]:
        return {"purpose": "vault-key", "vault": vault_id, "key": key_id, "version": version}

    def seal_private_key(self, der: bytes, *, vault_id: str, key_id: str, version: str) -> bytes:
        return seal(
            self._key,
            der,
            key_id=self._key_id,
            key_version="1",
            context=self._context(vault_id, key_id, version),
        )

    def open_private_key(self, sealed: bytes, *, vault_id: str, key_id: str, version: str) -> bytes:
        return open_sealed(self._key, sealed, context=self._context(vault_id, key_id, version))
