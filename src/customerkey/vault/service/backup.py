"""Backup and restore of a key: every version, its private half opened from its sealed form and
sealed again under the backup format's master key (``vault.backup``); a backup restores only
into a vault of its own tenant, subscription and geography, under a free name, keeping its
version ids. An exportable version keeps its release policy: its settings are checked against
their tag before they are backed up, and tagged again when restored (``release``).

A key held in the HSM is backed up without its private key ever leaving the token in the
clear: each version is wrapped in the token under the security domain, and the backup is
sealed there too (format 2, ``vault.backup``). It restores into any installation whose token
holds the same security domain (the versions are unwrapped into the token, each checked
against its public key); under another one it is refused before anything changes. Versions
made before the token held a security domain cannot be backed up (``KeyNotBackupable``)."""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy.orm import Session

from customerkey.crypto.ec import ec_public_key_from_jwk
from customerkey.crypto.rsa import public_key_from_jwk
from customerkey.errors import (
    BadParameter,
    Conflict,
    DecryptionFailed,
    Forbidden,
    InvalidBackup,
    SecurityDomainMismatch,
)
from customerkey.rng import new_hex_id
from customerkey.storage.models import KeyRow, KeyVersionRow, SubscriptionRow
from customerkey.storage.repositories import KeyRepository
from customerkey.vault import backup as backup_format
from customerkey.vault.hsm import AesKeySize, HsmProtector, PublicKey, SealedBackup
from customerkey.vault.key_documents import release_policy_json
from customerkey.vault.models import Actor, KeyBundle
from customerkey.vault.service.release import ReleaseMixin, policy_from_stored


class BackupMixin(ReleaseMixin):
    """Key backups and restores."""

    def backup_key(self, actor: Actor, vault: str, name: str) -> bytes:
        def work(session: Session) -> bytes:
            row = self._vault_row(session, vault)
            self._require(session, actor, row, "backup")
            key = self._key_row(session, row, name)
            versions = []
            rows = KeyRepository(session).versions(key.id)
            in_hsm = [v.hsm_object_id is not None for v in rows]
            hsm = self._hsm if any(in_hsm) else None
            if any(in_hsm) and not all(in_hsm):
                raise BadParameter(
                    f"Key {key.name} has versions both in the HSM and in software; such a key "
                    "cannot be backed up as one."
                )
            if any(in_hsm) and hsm is None:
                raise BadParameter(
                    f"Key {key.name} is held in an HSM, and this installation has no PKCS#11 "
                    "module configured."
                )
            domain = hsm.security_domain() if hsm is not None else None
            for v in rows:
                self._check_public(row, key, v)
                policy = self._stored_release_policy(row, key, v)
                wrapped = None
                der = b""
                if hsm is not None and v.hsm_object_id is not None:
                    wrapped = hsm.export_version(v.hsm_object_id)
                else:
                    der = self._protector.open_private_key(
                        v.sealed_private_key, vault_id=row.id, key_id=key.id, version=v.version
                    )
                versions.append(
                    backup_format.BackupVersion(
                        version=v.version,
                        seq=v.seq,
                        kty=v.kty,
                        key_size=v.key_size,
                        key_ops=tuple(v.key_ops),
                        enabled=v.enabled,
                        not_before=v.not_before,
                        expires=v.expires,
                        created=v.created_at,
                        updated=v.updated_at,
                        tags=dict(v.tags),
                        exportable=v.exportable,
                        imported=v.imported,
                        n=v.public_n,
                        e=v.public_e,
                        private_der=der,
                        crv=v.crv,
                        x=v.public_x,
                        y=v.public_y,
                        release_policy=(
                            release_policy_json(policy) if policy is not None else None
                        ),
                        wrapped=wrapped,
                    )
                )
            backup = backup_format.KeyBackup(
                header=backup_format.BackupHeader(
                    name=key.name,
                    subscription=row.subscription,
                    region=row.region,
                    created=key.created_at,
                    tenant=row.tenant,
                    security_domain=domain,
                ),
                rotation_policy=key.rotation_policy,
                versions=tuple(versions),
            )
            if hsm is not None:
                blob = backup_format.encode_hsm_backup(backup, seal_in_token=hsm.seal_backup)
            else:
                blob = backup_format.encode_backup(
                    backup, master_key=self._master_key, master_key_id=self._master_key_id
                )
            self._record(
                session,
                actor,
                "KeyBackup",
                vault=row,
                key=key.name,
                details={"versions": len(versions)},
            )
            return blob

        return self._run(actor, "KeyBackup", work, vault=vault.lower(), key=name)

    def restore_key(self, actor: Actor, vault: str, blob: bytes) -> KeyBundle:
        """Restore every version of a backed-up key, keeping its version ids."""
        header = backup_format.read_backup_header(blob)
        made: list[str] = []  # token objects to destroy if the restore does not commit
        hsm = self._hsm
        opener: Callable[[SealedBackup, bytes], bytes] | None = None
        if header.security_domain is not None:
            if hsm is None:
                raise SecurityDomainMismatch(
                    f"The backup of key '{header.name}' holds keys of an HSM (security domain "
                    f"{header.security_domain}), and this installation has no HSM configured."
                )
            opener = hsm.open_backup

        def work(session: Session) -> KeyBundle:
            row = self._vault_row(session, vault)
            self._require(session, actor, row, "restore")
            owner = session.get(SubscriptionRow, row.subscription)
            if (header.tenant is not None and header.tenant != row.tenant) or (
                owner is not None and owner.tenant != row.tenant
            ):
                raise Forbidden(
                    f"The backup of key '{header.name}' belongs to another tenant; it can only "
                    f"be restored into a vault of its own tenant."
                )
            if header.subscription != row.subscription or header.region != row.region:
                raise BadParameter(
                    f"The backup of key '{header.name}' belongs to subscription "
                    f"'{header.subscription}' in geography '{header.region}'; it can only be "
                    f"restored into a vault of that subscription and geography (vault "
                    f"'{row.name}' is in subscription '{row.subscription}', geography "
                    f"'{row.region}')."
                )
            keys = KeyRepository(session)
            existing = keys.find(row.id, header.name)
            if existing is not None:
                state = " (soft-deleted)" if existing.deleted_at else ""
                raise Conflict(
                    f"Key {existing.name} already exists in vault '{row.name}'{state}; "
                    "a backup can only be restored under a free name."
                )
            backup = backup_format.decode_backup(
                blob, master_key=self._master_key, open_in_token=opener
            )
            key = KeyRow(
                id=new_hex_id(self._rng),
                vault_id=row.id,
                name=header.name,
                name_lower=header.name.lower(),
                created_at=header.created,
                rotation_policy=dict(backup.rotation_policy) if backup.rotation_policy else None,
            )
            keys.add(key)
            newest: KeyVersionRow | None = None
            for v in backup.versions:
                object_id = None
                if v.wrapped is not None:
                    assert hsm is not None
                    object_id = _unwrap_into_token(
                        hsm, v, label=f"customerkey {row.name}/{header.name}"
                    )
                    made.append(object_id)
                version_row = KeyVersionRow(
                    id=new_hex_id(self._rng),
                    key_id=key.id,
                    version=v.version,
                    seq=v.seq,
                    kty=v.kty,
                    key_size=v.key_size,
                    key_ops=list(v.key_ops),
                    enabled=v.enabled,
                    not_before=v.not_before,
                    expires=v.expires,
                    created_at=v.created,
                    updated_at=v.updated,
                    tags=dict(v.tags),
                    exportable=v.exportable,
                    imported=v.imported,
                    public_n=v.n,
                    public_e=v.e,
                    crv=v.crv,
                    public_x=v.x,
                    public_y=v.y,
                    sealed_private_key=(
                        b""
                        if object_id is not None
                        else self._protector.seal_private_key(
                            v.private_der, vault_id=row.id, key_id=key.id, version=v.version
                        )
                    ),
                    hsm_object_id=object_id,
                    public_tag=(
                        self._binding.tag_for_public(
                            vault_id=row.id,
                            key_id=key.id,
                            version=v.version,
                            kty=v.kty,
                            public_key=_public_of(v),
                        )
                        if object_id is not None
                        else self._binding.tag_for_restore(
                            vault_id=row.id,
                            key_id=key.id,
                            version=v.version,
                            kty=v.kty,
                            n=v.n,
                            e=v.e,
                            private_der=v.private_der,
                            crv=v.crv,
                            x=v.x,
                            y=v.y,
                            key_size=v.key_size,
                        )
                    ),
                )
                self._set_release(
                    version_row,
                    vault_id=row.id,
                    key_id=key.id,
                    exportable=v.exportable,
                    policy=policy_from_stored(v.release_policy),
                )
                keys.add_version(version_row)
                if newest is None or version_row.seq > newest.seq:
                    newest = version_row
            assert newest is not None
            self._record(
                session,
                actor,
                "KeyRestore",
                vault=row,
                key=key.name,
                details={"versions": len(backup.versions)},
            )
            return self._bundle(row, key, newest)

        try:
            return self._run(actor, "KeyRestore", work, vault=vault.lower(), key=header.name)
        except BaseException:
            for object_id in made:  # not stored: not kept in the token
                if hsm is not None:
                    hsm.destroy(object_id)
            raise


def _public_of(v: backup_format.BackupVersion) -> PublicKey | AesKeySize:
    if v.kty == "oct-HSM":
        return AesKeySize(v.key_size)
    try:
        if v.crv is not None:
            return ec_public_key_from_jwk({"kty": "EC", "crv": v.crv, "x": v.x, "y": v.y})
        return public_key_from_jwk({"kty": "RSA", "n": v.n, "e": v.e})
    except ValueError:
        raise InvalidBackup(backup_format.CORRUPT) from None


def _unwrap_into_token(hsm: HsmProtector, v: backup_format.BackupVersion, *, label: str) -> str:
    assert v.wrapped is not None
    try:
        return hsm.import_version(v.wrapped, v.kty, _public_of(v), label=label)
    except DecryptionFailed:
        raise InvalidBackup(backup_format.CORRUPT) from None
