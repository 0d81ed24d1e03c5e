"""SQLAlchemy table models: the only place the database schema is written down in Python.

Every schema change comes with an Alembic migration under ``storage/migrations/versions``.
Times are stored timezone-aware and always come back as UTC (``UtcDateTime``), because
SQLite forgets the zone. Soft-deleted rows keep a ``deleted_at``; repositories hide them.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator

from customerkey.clock import ensure_utc


class UtcDateTime(TypeDecorator[datetime]):
    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetimes are not stored; use timezone-aware UTC")
        return ensure_utc(value)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return None if value is None else ensure_utc(value)


class Base(DeclarativeBase):
    type_annotation_map = {datetime: UtcDateTime, dict[str, Any]: JSON, list[str]: JSON}


class PrincipalRow(Base):
    """A user (UPN) or a service principal (application id) that can authenticate."""

    __tablename__ = "principals"

    id: Mapped[str] = mapped_column(String(320), primary_key=True)  # lower-cased UPN or app id
    kind: Mapped[str] = mapped_column(String(16))  # "user" | "service"
    tenant: Mapped[str] = mapped_column(String(128), index=True)
    display_name: Mapped[str] = mapped_column(String(256))
    secret_hash: Mapped[str | None] = mapped_column(String(256), nullable=True)
    roles: Mapped[list[str]] = mapped_column(JSON, default=list)
    builtin: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime]


class VaultRow(Base):
    __tablename__ = "vaults"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(63), unique=True)  # lower-cased
    display_name: Mapped[str] = mapped_column(String(63))
    tenant: Mapped[str] = mapped_column(String(128))
    subscription: Mapped[str] = mapped_column(String(128))
    region: Mapped[str] = mapped_column(String(64))
    resource_group: Mapped[str] = mapped_column(String(90))
    retention_days: Mapped[int] = mapped_column(Integer)
    purge_protection: Mapped[bool] = mapped_column(Boolean)
    created_by: Mapped[str] = mapped_column(String(320))
    created_at: Mapped[datetime]
    deleted_at: Mapped[datetime | None] = mapped_column(nullable=True)
    scheduled_purge_at: Mapped[datetime | None] = mapped_column(nullable=True)

    policies: Mapped[list[AccessPolicyRow]] = relationship(
        back_populates="vault", cascade="all, delete-orphan", order_by="AccessPolicyRow.object_id"
    )


class AccessPolicyRow(Base):
    __tablename__ = "access_policies"

    vault_id: Mapped[str] = mapped_column(
        ForeignKey("vaults.id", ondelete="CASCADE"), primary_key=True
    )
    object_id: Mapped[str] = mapped_column(String(320), primary_key=True)  # principal id
    key_permissions: Mapped[list[str]] = mapped_column(JSON)

    vault: Mapped[VaultRow] = relationship(back_populates="policies")


class KeyRow(Base):
    """A named key in a vault; its material lives in its versions."""

    __tablename__ = "keys"
    __table_args__ = (UniqueConstraint("vault_id", "name_lower"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    vault_id: Mapped[str] = mapped_column(ForeignKey("vaults.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(127))
    name_lower: Mapped[str] = mapped_column(String(127))
    created_at: Mapped[datetime]
    deleted_at: Mapped[datetime | None] = mapped_column(nullable=True)
    scheduled_purge_at: Mapped[datetime | None] = mapped_column(nullable=True)
    rotation_policy: Mapped[dict[str, Any] | None] = mapped_column(
        JSON(none_as_null=True), nullable=True
    )
    rotation_policy_created: Mapped[datetime | None] = mapped_column(nullable=True)
    rotation_policy_updated: Mapped[datetime | None] = mapped_column(nullable=True)


class KeyVersionRow(Base):
    """One version of a key: public part in clear, private part sealed under the master key."""

    __tablename__ = "key_versions"
    __table_args__ = (
        UniqueConstraint("key_id", "version"),
        Index("ix_key_versions_key_created", "key_id", "seq"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    key_id: Mapped[str] = mapped_column(ForeignKey("keys.id", ondelete="CASCADE"))
    version: Mapped[str] = mapped_column(String(32))
    seq: Mapped[int] = mapped_column(Integer)  # 1, 2, ... in creation order within the key
    kty: Mapped[str] = mapped_column(String(16))
    key_size: Mapped[int] = mapped_column(Integer)
    key_ops: Mapped[list[str]] = mapped_column(JSON)
    enabled: Mapped[bool] = mapped_column(Boolean)
    not_before: Mapped[datetime | None] = mapped_column(nullable=True)
    expires: Mapped[datetime | None] = mapped_column(nullable=True)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    tags: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    exportable: Mapped[bool] = mapped_column(Boolean, default=False)
    imported: Mapped[bool] = mapped_column(Boolean, default=False)
    public_n: Mapped[str] = mapped_column(Text)  # base64url
    public_e: Mapped[str] = mapped_column(String(16))
    sealed_private_key: Mapped[bytes] = mapped_column(LargeBinary)
    operation_count: Mapped[int] = mapped_column(BigInteger, default=0)


class AuditRow(Base):
    """One append-only audit record; ``hash`` chains it to the record before."""

    __tablename__ = "audit_records"

    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    time: Mapped[datetime]
    principal: Mapped[str] = mapped_column(String(320))
    operation: Mapped[str] = mapped_column(String(64), index=True)
    result: Mapped[str] = mapped_column(String(16))
    vault: Mapped[str | None] = mapped_column(String(63), nullable=True, index=True)
    key: Mapped[str | None] = mapped_column(String(127), nullable=True)
    version: Mapped[str | None] = mapped_column(String(32), nullable=True)
    request_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    details: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64), unique=True)
