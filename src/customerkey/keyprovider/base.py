"""The key-provider interface the service uses to reach a root key, and key URIs.

A root key is named by a Key Vault key URI, ``https://<vault>.<domain>[:port]/keys/<name>``
with an optional ``/<version>``; ``https://contoso-a1.vault.azure.net/keys/key1`` is one.
Providers wrap with RSA-OAEP-256 and classify every failure as either ``KeyAccessDenied``
(403, disabled, expired, deleted or missing key: the customer said no) or
``KeyProviderUnavailable`` (unreachable, timeout, 5xx: the system failed), because the
availability-key rules treat the two differently.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from customerkey.errors import BadParameter

WRAP_ALGORITHM = "RSA-OAEP-256"
_URI = re.compile(
    r"^https://(?P<host>[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+)(?::(?P<port>\d{1,5}))?"
    r"/keys/(?P<name>[A-Za-z0-9-]{1,127})(?:/(?P<version>[0-9a-fA-F]{32})?)?/?$"
)


@dataclass(frozen=True)
class KeyUri:
    host: str  # lower-case, without port
    port: int | None
    name: str
    version: str | None

    @property
    def vault(self) -> str:
        return self.host.split(".", 1)[0]

    @property
    def domain(self) -> str:
        return self.host.split(".", 1)[1]

    @property
    def netloc(self) -> str:
        return self.host + (f":{self.port}" if self.port else "")

    @property
    def vault_url(self) -> str:
        return f"https://{self.netloc}"

    def with_version(self, version: str) -> KeyUri:
        return KeyUri(self.host, self.port, self.name, version.lower())

    def unversioned(self) -> KeyUri:
        return KeyUri(self.host, self.port, self.name, None)

    def __str__(self) -> str:
        tail = f"/{self.version}" if self.version else ""
        return f"{self.vault_url}/keys/{self.name}{tail}"

    @classmethod
    def parse(cls, text: str) -> KeyUri:
        match = _URI.match(text.strip()) if isinstance(text, str) else None
        if not match:
            raise BadParameter(
                f"'{text}' is not a key URI like https://<vault>.vault.azure.net/keys/<name>."
            )
        port = int(match["port"]) if match["port"] else None
        if port == 443:
            port = None
        version = match["version"].lower() if match["version"] else None
        return cls(match["host"].lower(), port, match["name"], version)


@dataclass(frozen=True)
class RootKeyProperties:
    uri: KeyUri  # versioned: the newest version
    kty: str
    key_size: int
    enabled: bool
    not_before: datetime | None
    expires: datetime | None
    key_ops: tuple[str, ...]
    recovery_level: str


@dataclass(frozen=True)
class WrapResult:
    uri: KeyUri  # the exact version that wrapped
    wrapped: bytes


class KeyProvider(Protocol):
    def wrap(self, uri: KeyUri, key: bytes) -> WrapResult:
        """Wrap ``key`` with the root key (its newest version unless ``uri`` names one)."""
        ...

    def unwrap(self, uri: KeyUri, wrapped: bytes) -> bytes:
        """Unwrap with the exact version ``uri`` names."""
        ...

    def properties(self, uri: KeyUri) -> RootKeyProperties:
        """The root key's properties (newest version unless ``uri`` names one)."""
        ...

    def holds(self, uri: KeyUri, principal_permissions: tuple[str, ...]) -> dict[str, bool]:
        """Which of the permissions the workload principal holds on the key's vault, when the
        provider can tell (in-process); a remote provider answers from a probe wrap/get."""
        ...
