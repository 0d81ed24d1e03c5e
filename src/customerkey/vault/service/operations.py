"""Crypto operations: encrypt, decrypt, wrapKey, unwrapKey, sign and verify, with every key type
and algorithm ``vault.key_types`` names. The checks (request, permission, algorithm against the
key, key usable, public half bound) normally run on one prepared statement (``_CRYPTO_CHECK``, a
``storage.prepared_read``: no session, no transaction), else step by step in one read-only
transaction; the operation runs outside any transaction; the usage count and the audit record
commit together, in a write shared with the crypto operations of other threads that finish
meanwhile (``Database.commit_together``, a group commit), and the call returns only once that
write has committed. A version held in the HSM runs there (``vault.hsm``): an oct-HSM one's
every AES operation, with the IV of an encryption drawn here from the injected ``Rng`` when the
request carries none, as for a software key. Also ``random_bytes`` (getRandomBytes) and the
start-up backfill of public key tags (``vault.binding``)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import NamedTuple

from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session

from customerkey.crypto.aes_modes import CBC_IV_SIZE, GCM_IV_SIZE, aes_info
from customerkey.errors import BadParameter, DecryptionFailed, Forbidden, KeyNotUsable
from customerkey.identity import authorize as authz
from customerkey.storage.models import AccessPolicyRow, KeyRow, KeyVersionRow, VaultRow
from customerkey.storage.prepared_read import PreparedRead
from customerkey.storage.repositories import KeyRepository
from customerkey.vault.binding import BackfillReport
from customerkey.vault.hsm import TokenKey, TokenOutput, TokenSecretKey
from customerkey.vault.hsm import perform as perform_in_token
from customerkey.vault.key_types import (
    CryptoOutput,
    CryptoRequest,
    check_key,
    check_request,
    perform,
)
from customerkey.vault.models import Actor, KeyId
from customerkey.vault.service.base import ServiceBase, VersionKey

# Which permission and key operation each crypto call needs.
_CRYPTO_OPS = {
    "wrapKey": ("wrapKey", "KeyWrap"),
    "unwrapKey": ("unwrapKey", "KeyUnwrap"),
    "encrypt": ("encrypt", "KeyEncrypt"),
    "decrypt": ("decrypt", "KeyDecrypt"),
    "sign": ("sign", "KeySign"),
    "verify": ("verify", "KeyVerify"),
}
MAX_RANDOM_BYTES = 128


_VAULTS = VaultRow.__table__.c
_KEYS = KeyRow.__table__.c
_VERSIONS = KeyVersionRow.__table__.c
_POLICIES = AccessPolicyRow.__table__.c
# What crypto() checks, in one Core query (no ORM objects): the vault by name, the principal's
# access policy in it, the active key by name and the version (by id, or the newest).
_CRYPTO_CHECK = (
    select(
        _VAULTS.id,
        _VAULTS.name,
        _VAULTS.deleted_at,
        _KEYS.id,
        _KEYS.name,
        _KEYS.deleted_at,
        _VERSIONS.id,
        _VERSIONS.version,
        _VERSIONS.enabled,
        _VERSIONS.not_before,
        _VERSIONS.expires,
        _VERSIONS.key_ops,
        _POLICIES.key_permissions,
        _VAULTS.tenant,
    )
    .select_from(VaultRow.__table__)
    .join(KeyRow.__table__, _KEYS.vault_id == _VAULTS.id)
    .join(KeyVersionRow.__table__, _VERSIONS.key_id == _KEYS.id)
    .outerjoin(
        AccessPolicyRow.__table__,
        (_POLICIES.vault_id == _VAULTS.id) & (_POLICIES.object_id == bindparam("principal")),
    )
    .where(_VAULTS.name == bindparam("vault"), _KEYS.name_lower == bindparam("key"))
)
# The version's public half, checked against its tag before the version is used.
_CRYPTO_CHECK = _CRYPTO_CHECK.add_columns(
    _VERSIONS.kty.label("pk_kty"),
    _VERSIONS.public_n.label("pk_n"),
    _VERSIONS.public_e.label("pk_e"),
    _VERSIONS.public_tag.label("pk_tag"),
    _VERSIONS.crv.label("pk_crv"),
    _VERSIONS.public_x.label("pk_x"),
    _VERSIONS.public_y.label("pk_y"),
    _VERSIONS.key_size.label("pk_size"),
)
_CRYPTO_CHECK_VERSION = PreparedRead(_CRYPTO_CHECK.where(_VERSIONS.version == bindparam("version")))
_CRYPTO_CHECK_NEWEST = PreparedRead(_CRYPTO_CHECK.order_by(_VERSIONS.seq.desc()).limit(1))


class _CheckRow(NamedTuple):
    """A row of ``_CRYPTO_CHECK``, its columns in order."""

    vault_id: str
    vault_name: str
    vault_deleted: datetime | None
    key_id: str
    key_name: str
    key_deleted: datetime | None
    version_id: str
    version: str
    enabled: bool
    not_before: datetime | None
    expires: datetime | None
    key_ops: list[str]
    permissions: list[str] | None
    tenant: str
    pk_kty: str
    pk_n: str
    pk_e: str
    pk_tag: bytes | None
    pk_crv: str | None
    pk_x: str | None
    pk_y: str | None
    pk_size: int


@dataclass(frozen=True)
class CryptoResult:
    """What an operation answers: ``value`` (ciphertext, plaintext, (un)wrapped key or
    signature); ``iv``, ``tag`` and ``aad`` for AES encryption; ``verified`` for verify."""

    kid: KeyId
    value: bytes
    iv: bytes | None = None
    tag: bytes | None = None
    aad: bytes | None = None
    verified: bool | None = None


@dataclass(frozen=True)
class _Checked:
    vault_scope: tuple[str, str, str]  # name, id, tenant
    key_name: str
    version_id: str
    version: str
    material: VersionKey


def _check_usable(
    enabled: bool,
    not_before: datetime | None,
    expires: datetime | None,
    key_ops: Sequence[str],
    operation: str,
    now: datetime,
) -> None:
    if not enabled:
        raise KeyNotUsable(f"Operation {operation} is not allowed on a disabled key.")
    if not_before is not None and now < not_before:
        raise KeyNotUsable(
            f"Operation {operation} is not allowed before the key's not-before time "
            f"({not_before.isoformat()})."
        )
    if expires is not None and now >= expires:
        raise KeyNotUsable(f"Operation {operation} is not allowed on an expired key.")
    if operation not in key_ops:
        raise KeyNotUsable(f"Operation {operation} is not permitted on this key.")


class OperationsMixin(ServiceBase):
    """The key operations the workloads and the keys API call."""

    def _usable(self, version: KeyVersionRow, operation: str, now: datetime) -> None:
        _check_usable(
            version.enabled, version.not_before, version.expires, version.key_ops, operation, now
        )

    def _crypto_check_fast(
        self,
        actor: Actor,
        vault: str,
        name: str,
        version: str | None,
        permission: str,
        request: CryptoRequest,
    ) -> _Checked | None:
        """crypto()'s checks in one prepared statement, for the usual case. None when anything
        is unusual (no such vault, key or version, a deleted one, a missing permission, a name
        to validate, a version not opened yet): the step-by-step checks then run and raise
        exactly what they always raised."""
        operation = request.operation
        if not name or (version is not None and len(version) != 32):
            return None
        params = {
            "vault": vault.lower(),
            "key": name.lower(),
            "principal": actor.object_id or "-",
        }
        if version is None:
            statement = _CRYPTO_CHECK_NEWEST
        else:
            statement = _CRYPTO_CHECK_VERSION
            params["version"] = version.lower()
        values = self.db.first(statement, params)
        if values is None:
            return None
        row = _CheckRow(*values)
        if row.vault_deleted is not None or row.key_deleted is not None:
            return None
        access = authz.KeyAccess(row.tenant, frozenset(row.permissions or ()), permission)
        if not authz.allowed(actor, authz.Action.KEY_OPERATION, access):
            return None
        opened = self._private_keys.get(row.version_id)
        if opened is None:
            return None
        self._binding.check(
            row_id=row.version_id,
            vault_id=row.vault_id,
            key_id=row.key_id,
            version=row.version,
            kty=row.pk_kty,
            n=row.pk_n,
            e=row.pk_e,
            tag=row.pk_tag,
            label=f"{row.vault_name}/{row.key_name}/{row.version}",
            private_key=lambda: opened,
            crv=row.pk_crv,
            x=row.pk_x,
            y=row.pk_y,
            key_size=row.pk_size,
        )
        # Only once the stored row is known to be the one bound to it: does the request fit
        # the key's type, curve and size, and may the key do it now?
        check_key(request, row.pk_kty, row.pk_crv, row.pk_size)
        _check_usable(
            row.enabled, row.not_before, row.expires, row.key_ops, operation, self._clock.now()
        )
        return _Checked(
            (row.vault_name, row.vault_id, row.tenant),
            row.key_name,
            row.version_id,
            row.version,
            opened,
        )

    # Told (operation, the error or None) after every crypto call: the server counts them.
    operation_observer: Callable[[str, BaseException | None], None] | None = None

    def crypto(
        self,
        actor: Actor,
        operation: str,
        vault: str,
        name: str,
        version: str | None,
        algorithm: str,
        value: bytes,
        *,
        iv: bytes | None = None,
        aad: bytes | None = None,
        tag: bytes | None = None,
        signature: bytes | None = None,
    ) -> CryptoResult:
        """encrypt / decrypt / wrapKey / unwrapKey / sign / verify (see ``vault.key_types``).
        For sign and verify ``value`` is the digest; verify checks ``signature``."""
        observer = self.operation_observer
        try:
            result = self._crypto(
                actor, operation, vault, name, version, algorithm, value, iv, aad, tag, signature
            )
        except BaseException as exc:
            if observer is not None:
                observer(operation if operation in _CRYPTO_OPS else "unknown", exc)
            raise
        if observer is not None:
            observer(operation, None)
        return result

    def _crypto(
        self,
        actor: Actor,
        operation: str,
        vault: str,
        name: str,
        version: str | None,
        algorithm: str,
        value: bytes,
        iv: bytes | None,
        aad: bytes | None,
        tag: bytes | None,
        signature: bytes | None,
    ) -> CryptoResult:
        if operation not in _CRYPTO_OPS:
            raise BadParameter(f"Unknown key operation '{operation}'.")
        request = CryptoRequest(operation, algorithm, value, iv, aad, tag, signature)
        if operation == "verify" and signature is None:
            raise BadParameter("verify needs the signature to check.")
        check_request(request)
        permission, audit_name = _CRYPTO_OPS[operation]

        # Three steps, so that the key operation holds no lock: the checks read in a read-only
        # transaction; the operation runs outside any; its usage count and its audit record
        # commit together in one short write, shared with other operations (group commit: one
        # transaction and one commit for all that arrive together). (On SQLite a write
        # transaction holds the database's one write lock, which every other request would
        # wait for.) A change that commits between the checks and the operation (access
        # removed, key disabled) is seen by the next operation, as if it had committed a
        # moment later.
        def check(session: Session) -> _Checked:
            row = self._vault_row(session, vault)
            self._require(session, actor, row, permission)
            key = self._key_row(session, row, name)
            target = self._version_row(session, key, version)
            material = self._private_key(row, key, target)
            self._check_public(row, key, target)
            check_key(request, target.kty, target.crv, target.key_size)
            self._usable(target, operation, self._clock.now())
            return _Checked(
                (row.name, row.id, row.tenant), key.name, target.id, target.version, material
            )

        checked = self._crypto_check_fast(actor, vault, name, version, permission, request)
        if checked is None:
            checked = self._run(
                actor, audit_name, check, vault=vault.lower(), key=name, read_only=True
            )
        try:
            output: CryptoOutput | TokenOutput
            if isinstance(checked.material, TokenSecretKey):
                output = self._token_aes(request, checked.material)
            elif isinstance(checked.material, TokenKey):
                output = perform_in_token(operation, algorithm, value, signature, checked.material)
            else:
                output = perform(request, checked.material, self._rng)
        except ValueError as exc:
            raise BadParameter(str(exc)) from None
        except DecryptionFailed:
            raise BadParameter("The ciphertext could not be decrypted with this key.") from None
        details: dict[str, object] = {"alg": algorithm}
        if output.verified is not None:
            details["verified"] = output.verified
        # The audit gate refuses this operation alone, before its write joins a shared batch
        # (any error there fails every operation of the batch).
        self.audit.admit(audit_name)

        def write(session: Session) -> None:
            KeyRepository(session).count_use(checked.version_id)
            self._record(
                session,
                actor,
                audit_name,
                vault=checked.vault_scope,
                key=checked.key_name,
                version=checked.version,
                details=details,
                admitted=True,
            )

        self.db.commit_together(write)
        return CryptoResult(
            KeyId(checked.vault_scope[0], checked.key_name, checked.version),
            output.value,
            iv=output.iv,
            tag=output.tag,
            aad=output.aad,
            verified=output.verified,
        )

    def _token_aes(self, request: CryptoRequest, key: TokenSecretKey) -> TokenOutput:
        """A checked AES request on an oct-HSM version held in the token."""
        iv = request.iv
        if request.operation == "encrypt" and iv is None:
            mode = aes_info(request.algorithm).mode
            iv = self._rng.token_bytes(GCM_IV_SIZE if mode == "GCM" else CBC_IV_SIZE)
        return key.aes(
            request.operation,
            request.algorithm,
            request.value,
            iv=iv,
            aad=request.aad,
            tag=request.tag,
        )

    def sign(
        self, actor: Actor, vault: str, name: str, version: str | None, alg: str, digest: bytes
    ) -> CryptoResult:
        return self.crypto(actor, "sign", vault, name, version, alg, digest)

    def verify(
        self,
        actor: Actor,
        vault: str,
        name: str,
        version: str | None,
        alg: str,
        digest: bytes,
        signature: bytes,
    ) -> CryptoResult:
        return self.crypto(actor, "verify", vault, name, version, alg, digest, signature=signature)

    def random_bytes(self, actor: Actor, vault: str, count: int) -> bytes:
        """getRandomBytes: ``count`` (1..128) bytes from the injected ``Rng``, for anyone who
        holds an access policy on the vault (or administers its tenant)."""
        if (
            isinstance(count, bool)
            or not isinstance(count, int)
            or not 1 <= count <= MAX_RANDOM_BYTES
        ):
            raise BadParameter(f"'count' must be between 1 and {MAX_RANDOM_BYTES}.")

        def check(session: Session) -> None:
            row = self._vault_row(session, vault)
            granted = self._granted(session, actor, row)
            if not authz.allowed(actor, authz.Action.VAULT_READ, authz.Vault(row.tenant, granted)):
                raise Forbidden(
                    f"The user, group or application '{actor.principal_id}' has no access "
                    f"policy on key vault '{row.name};location={row.region}'."
                )

        self._run(actor, "RandomBytes", check, vault=vault.lower(), read_only=True)
        return self._rng.token_bytes(count)

    def wrap_key(
        self, actor: Actor, vault: str, name: str, version: str | None, alg: str, key: bytes
    ) -> CryptoResult:
        return self.crypto(actor, "wrapKey", vault, name, version, alg, key)

    def unwrap_key(
        self, actor: Actor, vault: str, name: str, version: str | None, alg: str, wrapped: bytes
    ) -> CryptoResult:
        return self.crypto(actor, "unwrapKey", vault, name, version, alg, wrapped)

    def backfill_public_tags(self, *, batch: int = 200) -> BackfillReport:
        """Give every key version made before public-key tags its tag, once it is checked
        against its sealed private key (run at start; idempotent; see ``vault.binding``)."""
        return self._binding.backfill(self.db, self._protector, batch=batch)
