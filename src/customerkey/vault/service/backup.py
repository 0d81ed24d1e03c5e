"""Backup and restore of a key: every version, its private half opened from its sealed form and
sealed again under the backup format's master key (``vault.backup``); a backup restores only
into a vault of its own tenant, subscription and geography, under a free name, keeping its
version ids. An exportable version keeps its release policy: its settings are checked against
their tag before they are backed up, and tagged again when restored (``release``)."""

from __future__ import annotations

from sqlalchemy.orm import Session

from customerkey.errors import BadParameter, Conflict, Forbidden
from customerkey.rng import new_hex_id
from customerkey.storage.models import KeyRow, KeyVersionRow, SubscriptionRow
from customerkey.storage.repositories import KeyRepository
from customerkey.vault import backup as backup_format
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
            for v in KeyRepository(session).versions(key.id):
                if v.hsm_object_id is not None:
                    raise BadParameter(
                        f"Key {key.name} has versions held in the HSM, and backing up HSM "
                        "keys is not supported yet: their private keys never leave the token."
                    )
                self._check_public(row, key, v)
                policy = self._stored_release_policy(row, key, v)
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
                    )
                )
            blob = backup_format.encode_backup(
                backup_format.KeyBackup(
                    header=backup_format.BackupHeader(
                        name=key.name,
                        subscription=row.subscription,
                        region=row.region,
                        created=key.created_at,
                        tenant=row.tenant,
                    ),
                    rotation_policy=key.rotation_policy,
                    versions=tuple(versions),
                ),
                master_key=self._master_key,
                master_key_id=self._master_key_id,
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
            backup = backup_format.decode_backup(blob, master_key=self._master_key)
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
                    sealed_private_key=self._protector.seal_private_key(
                        v.private_der, vault_id=row.id, key_id=key.id, version=v.version
                    ),
                    public_tag=self._binding.tag_for_restore(
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

        return self._run(actor, "KeyRestore", work, vault=vault.lower(), key=header.name)
