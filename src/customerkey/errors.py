"""The error hierarchy of customerkey.

Every error the platform raises on purpose is a ``CustomerKeyError``. Each subclass carries
the HTTP status it maps to and the Azure Key Vault error code a Key Vault client expects in
``{"error": {"code": ..., "message": ...}}``, so the API layer renders any of them without a
table of its own. This module imports nothing of ours; every layer may import it.
"""

from __future__ import annotations

from typing import ClassVar


class CustomerKeyError(Exception):
    """Root of every error customerkey raises on purpose."""

    status: ClassVar[int] = 500
    code: ClassVar[str] = "InternalError"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def to_body(self) -> dict[str, dict[str, str]]:
        """The Key Vault error body: ``{"error": {"code", "message"}}``."""
        return {"error": {"code": self.code, "message": self.message}}


class BadParameter(CustomerKeyError):
    """The caller's input is malformed or out of range; nothing was changed."""

    status = 400
    code = "BadParameter"


class Unauthorized(CustomerKeyError):
    """No valid credentials were presented."""

    status = 401
    code = "Unauthorized"


class Forbidden(CustomerKeyError):
    """The caller is known but may not do this (missing permission, key not usable)."""

    status = 403
    code = "Forbidden"


class KeyNotUsable(Forbidden):
    """The key refuses the operation: disabled, not yet valid, expired, or op not allowed."""


class PurgeProtected(Forbidden):
    """Purge refused: purge protection is on and the retention period has not ended."""


class NotFound(CustomerKeyError):
    """A named object does not exist."""

    status = 404
    code = "NotFound"


class VaultNotFound(NotFound):
    code = "VaultNotFound"


class KeyNotFound(NotFound):
    code = "KeyNotFound"


class PrincipalNotFound(NotFound):
    code = "PrincipalNotFound"


class Conflict(CustomerKeyError):
    """The request conflicts with the current state (name taken, object in the wrong state)."""

    status = 409
    code = "Conflict"


class StillProtectsData(Conflict):
    """Refused: deleting it would take away a root key that data still depends on."""


class PayloadTooLarge(CustomerKeyError):
    status = 413
    code = "RequestTooLarge"


class Throttled(CustomerKeyError):
    """Too many requests for this vault right now (``api.throttle``): nothing was done; the
    answer carries ``Retry-After`` (``retry_after`` whole seconds), which the Azure SDKs
    honour before retrying."""

    status = 429
    code = "Throttled"

    def __init__(self, message: str, *, retry_after: int = 1) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class DecryptionFailed(CustomerKeyError):
    """A ciphertext did not open. Deliberately says nothing about why."""

    status = 400
    code = "BadParameter"

    def __init__(self, message: str = "Decryption failed.") -> None:
        super().__init__(message)


class InvalidBackup(BadParameter):
    """A key backup blob is malformed, tampered with, truncated or from another installation."""


class KeyIntegrityFailure(CustomerKeyError):
    """A stored key version failed its integrity check: its public key is not the one bound to
    it under the master key (or its sealed private key does not open). The storage was changed
    behind the platform's back, so the version is neither served nor used. A server-side
    fault, not the caller's: status 500, like Key Vault's own internal failures, with a code
    of its own. The message names the key version, never key material."""

    status = 500
    code = "KeyIntegrityFailure"


class ServiceUnavailable(CustomerKeyError):
    """A dependency (a remote vault, the database) could not be reached in time."""

    status = 503
    code = "ServiceUnavailable"


class StorageFull(ServiceUnavailable):
    """The database or the blob store refused a write for lack of space (disk full, quota).
    The transaction rolled back, so nothing was changed; the answer carries ``Retry-After``
    (``retry_after`` seconds) and the same request succeeds once space is freed."""

    code = "InsufficientStorage"

    def __init__(self, message: str, *, retry_after: int = 30) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class KeyAccessDenied(Forbidden):
    """A root key refused us: no permission, disabled, expired, deleted or missing."""

    code = "KeyAccessDenied"


class KeyProviderUnavailable(ServiceUnavailable):
    """A root key's vault could not be reached or answered with a server error."""

    code = "KeyVaultUnavailable"


class HsmUnavailable(ServiceUnavailable):
    """The HSM (the PKCS#11 token holding the ``-HSM`` keys) failed or stopped answering during
    work: a system error, as a vault outage is; never answered from software instead."""

    code = "HsmUnavailable"


class HsmNotReady(CustomerKeyError):
    """The PKCS#11 settings do not give a usable token at start: the module does not load, no
    token has the label, or the PIN is refused. The message names the setting to fix, never
    the PIN."""

    status = 503
    code = "HsmNotReady"


class MasterKeyNotUnsealed(CustomerKeyError):
    """``master.key.sealed`` did not open with the HSM's seal key (altered, truncated, or
    sealed by another key). Deliberately says nothing about why."""

    status = 503
    code = "MasterKeyNotUnsealed"

    def __init__(self, message: str = "The sealed master key did not open.") -> None:
        super().__init__(message)


class MasterKeyMismatch(CustomerKeyError):
    """The database belongs to an installation with another master key (``storage.installation``):
    this process would seal data no other host could open, so it does not start. The message
    names both key ids (non-secret fingerprints), never a key."""

    status = 503
    code = "MasterKeyMismatch"


class KeyNotBackupable(BadParameter):
    """An HSM key version cannot leave its token even wrapped: it was made before the token held
    a security domain (non-extractable), or the token has no security domain to wrap it under.
    The message says which."""


class SecurityDomainMismatch(BadParameter):
    """A backup of HSM keys was wrapped under another security domain than the one this
    installation's token holds (or the token holds none): nothing was restored."""
