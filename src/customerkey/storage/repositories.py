"""Repositories: queries over the table models, with soft delete handled here.

A repository wraps a session it is given; it adds, finds and removes rows but never commits.
"Active" rows are those with no ``deleted_at``; deleted rows are only returned by the methods
that say so.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import bindparam, delete, func, select, update
from sqlalchemy.orm import Session

from customerkey.storage.models import (
    AccessPolicyRow,
    KeyRow,
    KeyVersionRow,
    PrincipalRow,
    VaultRow,
)

_KEY_VERSIONS = KeyVersionRow.metadata.tables[KeyVersionRow.__tablename__]
_COUNT_USE = (
    update(_KEY_VERSIONS)
    .where(_KEY_VERSIONS.c.id == bindparam("version_id"))
    .values(operation_count=_KEY_VERSIONS.c.operation_count + 1)
)


class VaultRepository:
    def __init__(self, session: Session) -> None:
        self.session = session

    def find(self, name: str) -> VaultRow | None:
        """The vault with this (lower-case) name, deleted or not."""
        return self.session.scalar(select(VaultRow).where(VaultRow.name == name))

    def all(self, *, deleted: bool = False) -> list[VaultRow]:
        condition = VaultRow.deleted_at.is_not(None) if deleted else VaultRow.deleted_at.is_(None)
        return list(self.session.scalars(select(VaultRow).where(condition).order_by(VaultRow.name)))

    def add(self, row: VaultRow) -> None:
        self.session.add(row)
        self.session.flush()

    def purge(self, row: VaultRow) -> None:
        key_ids = select(KeyRow.id).where(KeyRow.vault_id == row.id)
        self.session.execute(delete(KeyVersionRow).where(KeyVersionRow.key_id.in_(key_ids)))
        self.session.execute(delete(KeyRow).where(KeyRow.vault_id == row.id))
        self.session.delete(row)
        self.session.flush()

    def due_for_purge(self, now: datetime) -> list[VaultRow]:
        return list(
            self.session.scalars(
                select(VaultRow).where(
                    VaultRow.deleted_at.is_not(None), VaultRow.scheduled_purge_at <= now
                )
            )
        )

    def policy(self, vault: VaultRow, object_id: str) -> AccessPolicyRow | None:
        return self.session.get(AccessPolicyRow, (vault.id, object_id))


class KeyRepository:
    def __init__(self, session: Session) -> None:
        self.session = session

    def find(self, vault_id: str, name: str) -> KeyRow | None:
        """The key of this name, active or soft-deleted."""
        return self.session.scalar(
            select(KeyRow).where(KeyRow.vault_id == vault_id, KeyRow.name_lower == name.lower())
        )

    def active(self, vault_id: str, name: str) -> KeyRow | None:
        row = self.find(vault_id, name)
        return row if row is not None and row.deleted_at is None else None

    def deleted(self, vault_id: str, name: str) -> KeyRow | None:
        row = self.find(vault_id, name)
        return row if row is not None and row.deleted_at is not None else None

    def all(self, vault_id: str, *, deleted: bool = False) -> list[KeyRow]:
        condition = KeyRow.deleted_at.is_not(None) if deleted else KeyRow.deleted_at.is_(None)
        return list(
            self.session.scalars(
                select(KeyRow)
                .where(KeyRow.vault_id == vault_id, condition)
                .order_by(KeyRow.name_lower)
            )
        )

    def add(self, row: KeyRow) -> None:
        self.session.add(row)
        self.session.flush()

    def versions(self, key_id: str) -> list[KeyVersionRow]:
        return list(
            self.session.scalars(
                select(KeyVersionRow)
                .where(KeyVersionRow.key_id == key_id)
                .order_by(KeyVersionRow.seq)
            )
        )

    def version(self, key_id: str, version: str) -> KeyVersionRow | None:
        return self.session.scalar(
            select(KeyVersionRow).where(
                KeyVersionRow.key_id == key_id, KeyVersionRow.version == version.lower()
            )
        )

    def newest(self, key_id: str) -> KeyVersionRow | None:
        return self.session.scalar(
            select(KeyVersionRow)
            .where(KeyVersionRow.key_id == key_id)
            .order_by(KeyVersionRow.seq.desc())
            .limit(1)
        )

    def next_seq(self, key_id: str) -> int:
        current = self.session.scalar(
            select(func.max(KeyVersionRow.seq)).where(KeyVersionRow.key_id == key_id)
        )
        return int(current or 0) + 1

    def add_version(self, row: KeyVersionRow) -> None:
        self.session.add(row)
        self.session.flush()

    def count_use(self, version_row_id: str) -> None:
        # A Core UPDATE of the table, not of the mapped class: the ORM's bulk-update path
        # (synchronising the session) cost more than the rest of a crypto operation.
        self.session.execute(_COUNT_USE, {"version_id": version_row_id})

    def purge(self, row: KeyRow) -> None:
        self.session.execute(delete(KeyVersionRow).where(KeyVersionRow.key_id == row.id))
        self.session.delete(row)
        self.session.flush()

    def due_for_purge(self, now: datetime) -> list[KeyRow]:
        return list(
            self.session.scalars(
                select(KeyRow).where(
                    KeyRow.deleted_at.is_not(None), KeyRow.scheduled_purge_at <= now
                )
            )
        )

    def with_rotation_policy(self) -> list[KeyRow]:
        return list(
            self.session.scalars(
                select(KeyRow).where(
                    KeyRow.rotation_policy.is_not(None), KeyRow.deleted_at.is_(None)
                )
            )
        )


class PrincipalRepository:
    def __init__(self, session: Session) -> None:
        self.session = session

    def get(self, principal_id: str) -> PrincipalRow | None:
        """By sign-in name (UPN or application id)."""
        return self.session.get(PrincipalRow, principal_id.lower())

    def by_object_id(self, object_id: str) -> PrincipalRow | None:
        return self.session.scalar(
            select(PrincipalRow).where(PrincipalRow.object_id == object_id.lower())
        )

    def find(self, reference: str) -> PrincipalRow | None:
        """By sign-in name or object id."""
        return self.get(reference) or self.by_object_id(reference)

    def by_object_ids(self, object_ids: list[str]) -> dict[str, PrincipalRow]:
        if not object_ids:
            return {}
        rows = self.session.scalars(
            select(PrincipalRow).where(PrincipalRow.object_id.in_(object_ids))
        )
        return {row.object_id: row for row in rows}

    def delete(self, row: PrincipalRow) -> None:
        self.session.execute(
            delete(AccessPolicyRow).where(AccessPolicyRow.object_id == row.object_id)
        )
        self.session.delete(row)
        self.session.flush()

    def all(self, *, tenant: str | None = None) -> list[PrincipalRow]:
        query = select(PrincipalRow).order_by(PrincipalRow.id)
        if tenant is not None:
            query = query.where(PrincipalRow.tenant == tenant)
        return list(self.session.scalars(query))

    def add(self, row: PrincipalRow) -> None:
        self.session.add(row)
        self.session.flush()
