"""Soft delete of keys: delete (kept for the vault's retention days; refused while the key
protects data, unless forced), read and list deleted keys, recover one, or purge it early
(refused while the vault's purge protection holds it). A purged key's versions held in the
HSM are destroyed in the token after the purge commits (``ServiceBase.destroy_token_objects``,
as for a vault purge and the scheduler's purges)."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy.orm import Session

from customerkey.errors import KeyNotFound, PurgeProtected
from customerkey.storage.models import KeyRow, VaultRow
from customerkey.storage.repositories import KeyRepository
from customerkey.vault.models import Actor, DeletedKeyBundle, KeyBundle
from customerkey.vault.service.base import ServiceBase


class DeletionMixin(ServiceBase):
    """Deleted keys: their views, recovery and purge."""

    def _deleted_bundle(self, session: Session, vault: VaultRow, key: KeyRow) -> DeletedKeyBundle:
        newest = self._version_row(session, key, None)
        assert key.deleted_at is not None and key.scheduled_purge_at is not None
        return DeletedKeyBundle(
            key=self._bundle(vault, key, newest),
            deleted_date=key.deleted_at,
            scheduled_purge_date=key.scheduled_purge_at,
        )

    def _deleted_key_row(self, session: Session, vault: VaultRow, name: str) -> KeyRow:
        row = KeyRepository(session).deleted(vault.id, name)
        if row is None:
            raise KeyNotFound(f"Deleted Key not found: {name}")
        return row

    def authorize_key_delete(self, actor: Actor, vault: str, name: str) -> None:
        """Refuse what ``delete_key`` would refuse first (no such vault or key, no permission),
        changing nothing: a front end asks this before it asks for a confirmation."""

        def work(session: Session) -> None:
            row = self._vault_row(session, vault)
            self._require(session, actor, row, "delete")
            self._key_row(session, row, name)

        self._run(actor, "KeyDelete", work, vault=vault.lower(), key=name, read_only=True)

    def delete_key(
        self, actor: Actor, vault: str, name: str, *, force: bool = False
    ) -> DeletedKeyBundle:
        """Soft-delete a key with all its versions. Refused (``StillProtectsData``) while it
        protects data, unless ``force``: then the audit record names what it protected."""

        def work(session: Session) -> DeletedKeyBundle:
            row = self._vault_row(session, vault)
            self._require(session, actor, row, "delete")
            key = self._key_row(session, row, name)
            forced = self._refuse_if_needed(session, row.name, key.name, force=force)
            now = self._clock.now()
            key.deleted_at = now
            key.scheduled_purge_at = now + timedelta(days=row.retention_days)
            details = {"forced": True, "protected": forced} if forced else None
            self._record(session, actor, "KeyDelete", vault=row, key=key.name, details=details)
            return self._deleted_bundle(session, row, key)

        result = self._run(
            actor, "KeyDelete", self._revoking("key-deleted", work), vault=vault.lower(), key=name
        )
        self._notify(result.key.id.vault, result.key.id.name, "key-deleted")
        return result

    def get_deleted_key(self, actor: Actor, vault: str, name: str) -> DeletedKeyBundle:
        def work(session: Session) -> DeletedKeyBundle:
            row = self._vault_row(session, vault)
            self._require(session, actor, row, "get")
            return self._deleted_bundle(session, row, self._deleted_key_row(session, row, name))

        return self._run(actor, "KeyGetDeleted", work, vault=vault.lower(), key=name)

    def list_deleted_keys(self, actor: Actor, vault: str) -> list[DeletedKeyBundle]:
        def work(session: Session) -> list[DeletedKeyBundle]:
            row = self._vault_row(session, vault)
            self._require(session, actor, row, "list")
            return [
                self._deleted_bundle(session, row, key)
                for key in KeyRepository(session).all(row.id, deleted=True)
            ]

        return self._run(actor, "KeyListDeleted", work, vault=vault.lower())

    def recover_deleted_key(self, actor: Actor, vault: str, name: str) -> KeyBundle:
        def work(session: Session) -> KeyBundle:
            row = self._vault_row(session, vault)
            self._require(session, actor, row, "recover")
            key = self._deleted_key_row(session, row, name)
            key.deleted_at = None
            key.scheduled_purge_at = None
            self._record(session, actor, "KeyRecover", vault=row, key=key.name)
            return self._bundle(row, key, self._version_row(session, key, None))

        return self._run(actor, "KeyRecover", work, vault=vault.lower(), key=name)

    def purge_deleted_key(self, actor: Actor, vault: str, name: str) -> None:
        def work(session: Session) -> tuple[list[str], list[str | None]]:
            row = self._vault_row(session, vault)
            self._require(session, actor, row, "purge")
            key = self._deleted_key_row(session, row, name)
            now = self._clock.now()
            if row.purge_protection and key.scheduled_purge_at and now < key.scheduled_purge_at:
                raise PurgeProtected(
                    f"Operation 'DeletedKeyPurge' is not allowed: vault '{row.name}' has purge "
                    f"protection and key '{key.name}' is retained until "
                    f"{key.scheduled_purge_at.isoformat()}."
                )
            versions = KeyRepository(session).versions(key.id)
            ids = [v.id for v in versions]
            in_token = [v.hsm_object_id for v in versions]
            KeyRepository(session).purge(key)
            self._record(session, actor, "KeyPurge", vault=row, key=key.name)
            return ids, in_token

        ids, in_token = self._run(actor, "KeyPurge", work, vault=vault.lower(), key=name)
        self._private_keys.discard(ids)
        self.destroy_token_objects(in_token)
