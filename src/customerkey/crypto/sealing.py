"""What the service seals under the installation's master key: availability keys and the
keys of the service-managed hierarchy (content with no customer DEP)."""

from __future__ import annotations

from cryptography.hazmat.primitives.hashes import SHA256
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from customerkey.crypto.aead import open_sealed, seal


class MasterSealer:
    def __init__(self, master_key: bytes, master_key_id: str) -> None:
        self._key = master_key
        self._key_id = master_key_id

    def seal(self, data: bytes, *, purpose: str, subject: str) -> bytes:
        return seal(
            self._key,
            data,
            key_id=self._key_id,
            key_version="1",
            context={"purpose": purpose, "subject": subject},
        )

    def open(self, blob: bytes, *, purpose: str, subject: str) -> bytes:
        return open_sealed(self._key, blob, context={"purpose": purpose, "subject": subject})

    def service_key(self, tenant: str) -> bytes:
        """The key-wrapping key of a tenant's service-managed hierarchy (never stored)."""
        return HKDF(
            algorithm=SHA256(),
            length=32,
            salt=b"customerkey/service-managed/v1",
            info=tenant.lower().encode(),
        ).derive(self._key)
