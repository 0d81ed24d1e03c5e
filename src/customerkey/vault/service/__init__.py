"""The key vault service: every vault and key operation, each in one transaction with its audit.

This is the vault's Python API; the HTTPS keys API, the admin API, the CLI and the in-process
key provider all call it. Every method takes the ``Actor`` asking and checks it: vault
management (create, delete, access policies) needs the operator, a tenant admin of the vault's
tenant, or the vault's creator; key operations need the matching permission in the vault's
access policies (the operator bypasses them). Refusals change nothing, and are audited with
result ``denied`` in a transaction of their own.

``KeyVaultService`` is one class put together from one part per concern, each a module of this
package inheriting from ``base.ServiceBase`` (constructor, shared state, plumbing):

- ``vaults``: vaults and their access policies
- ``keys``: keys, versions and rotation policies
- ``deletion``: soft-deleted keys (recover, purge)
- ``backup``: key backup and restore
- ``operations``: encrypt / decrypt / wrapKey / unwrapKey / sign / verify with every key type
  (the rules are ``vault.key_types``), getRandomBytes, public-tag backfill
- ``usage``: usage counts and the scheduler's ``tick`` (it builds on ``keys``)
"""

from __future__ import annotations

from customerkey.vault.service.backup import BackupMixin
from customerkey.vault.service.deletion import DeletionMixin
from customerkey.vault.service.keys import KEY_SIZES, KEY_TYPES, RSA_KEY_OPS, KeysMixin
from customerkey.vault.service.operations import CryptoResult, OperationsMixin
from customerkey.vault.service.usage import UsageMixin
from customerkey.vault.service.vaults import MAX_RETENTION_DAYS, MIN_RETENTION_DAYS, VaultsMixin

__all__ = [
    "KEY_SIZES",
    "KEY_TYPES",
    "MAX_RETENTION_DAYS",
    "MIN_RETENTION_DAYS",
    "RSA_KEY_OPS",
    "CryptoResult",
    "KeyVaultService",
]


class KeyVaultService(
    VaultsMixin,
    UsageMixin,  # before KeysMixin, which it extends (the scheduler rotates keys)
    KeysMixin,
    DeletionMixin,
    BackupMixin,
    OperationsMixin,
):
    """The key vault service (see the module's docstring); it adds nothing to its parts."""
