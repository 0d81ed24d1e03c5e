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
    SmallInteger,
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

    # The sign-in name: lower-cased UPN (users) or application id (service principals).
    id: Mapped[str] = mapped_column(String(320), primary_key=True)
    # The immutable directory id every decision and grant uses (a GUID the platform makes).
    object_id: Mapped[str] = mapped_column(String(36), unique=True)
    kind: Mapped[str] = mapped_column(String(16))  # "user" | "service"
    tenant: Mapped[str] = mapped_column(String(128), index=True)
    display_name: Mapped[str] = mapped_column(String(256))
    secret_hash: Mapped[str | None] = mapped_column(String(256), nullable=True)
    roles: Mapped[list[str]] = mapped_column(JSON, default=list)
    # role -> ISO 8601 time it was granted
    role_grants: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    builtin: Mapped[bool] = mapped_column(Boolean, default=False)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    # Bumped by disable, role removal and secret reset: tokens of an older generation fail.
    token_generation: Mapped[int] = mapped_column(Integer, default=0)
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
    object_id: Mapped[str] = mapped_column(String(320), primary_key=True)  # principal object id
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
    # HMAC of the public key under a master-key-derived key (crypto.key_binding); NULL for
    # versions made before migration 0005 until the start-up backfill has checked them.
    public_tag: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    # EC versions (migration 0008): the curve and the public point (base64url, full-length
    # coordinates); NULL for RSA and oct-HSM versions, whose public_n/public_e are "" when
    # they are not RSA.
    crv: Mapped[str | None] = mapped_column(String(16), nullable=True)
    public_x: Mapped[str | None] = mapped_column(Text, nullable=True)
    public_y: Mapped[str | None] = mapped_column(Text, nullable=True)
    # Secure key release (migration 0009): an exportable version's release policy
    # ({"contentType", "data": base64url of the policy's bytes, "immutable"}) and the tag that
    # binds it and ``exportable`` to the master key (crypto.release_tag); both NULL when the
    # version is not exportable.
    release_policy: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    release_tag: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    # A version held in an HSM (migration 0011, ``vault.hsm``): its token object's CKA_ID in
    # hex; its ``sealed_private_key`` is then empty. NULL for software versions.
    hsm_object_id: Mapped[str | None] = mapped_column(String(64), nullable=True)


class ReleaseSigningKeyRow(Base):
    """The key that signs secure key release results (migration 0009): one per installation,
    made on first use. Its RSA private key is sealed under the master key; its self-signed
    certificate (DER) is what a release result names in ``x5c``."""

    __tablename__ = "release_signing_keys"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    created_at: Mapped[datetime]
    sealed_private_key: Mapped[bytes] = mapped_column(LargeBinary)
    certificate: Mapped[bytes] = mapped_column(LargeBinary)


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
    # Scope (NULL on records written before migration 0007): the tenant the record concerns,
    # the vault's immutable id, the acting principal's object id, and the principal whose
    # grant or directory entry the record changed.
    tenant: Mapped[str | None] = mapped_column(String(128), nullable=True, index=True)
    vault_id: Mapped[str | None] = mapped_column(String(32), nullable=True, index=True)
    actor_id: Mapped[str | None] = mapped_column(String(36), nullable=True)
    subject_id: Mapped[str | None] = mapped_column(String(36), nullable=True)
    # How ``hash`` was made (``audit.chain``): 0, plain SHA-256 (records written before
    # migration 0010); 1, HMAC-SHA256 under a key derived from the master key.
    chain: Mapped[int] = mapped_column(SmallInteger, default=0, server_default="0")


class TenantRow(Base):
    __tablename__ = "tenants"

    id: Mapped[str] = mapped_column(String(128), primary_key=True)  # lower-case name
    display_name: Mapped[str] = mapped_column(String(128))
    mail_domain: Mapped[str] = mapped_column(String(253), unique=True)
    created_at: Mapped[datetime]


class SubscriptionRow(Base):
    """A subscription id and the one tenant it belongs to: registered by the first vault that
    names it; no other tenant's vault may use it (backups restore only within it)."""

    __tablename__ = "subscriptions"

    id: Mapped[str] = mapped_column(String(128), primary_key=True)
    tenant: Mapped[str] = mapped_column(String(128), index=True)
    created_at: Mapped[datetime]


class PolicyRow(Base):
    """A data encryption policy (DEP): two root keys in two vaults, plus an availability key."""

    __tablename__ = "data_encryption_policies"
    __table_args__ = (UniqueConstraint("tenant_id", "kind", "name_lower"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True)  # GUID
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), index=True)
    kind: Mapped[str] = mapped_column(String(16))  # "mailbox" | "files"
    name: Mapped[str] = mapped_column(String(128))
    name_lower: Mapped[str] = mapped_column(String(128))
    description: Mapped[str] = mapped_column(Text, default="")
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    key_uri_1: Mapped[str] = mapped_column(String(512))
    key_uri_2: Mapped[str] = mapped_column(String(512))
    sealed_availability_key: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    state: Mapped[str] = mapped_column(String(24), default="active")
    purge_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    purge_contact: Mapped[str | None] = mapped_column(String(320), nullable=True)
    purge_requested_by: Mapped[str | None] = mapped_column(String(320), nullable=True)
    purge_requested_by_id: Mapped[str | None] = mapped_column(String(36), nullable=True)
    purge_requested_at: Mapped[datetime | None] = mapped_column(nullable=True)
    purged_at: Mapped[datetime | None] = mapped_column(nullable=True)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class GenerationRow(Base):
    """One DEP key generation: the DEP key wrapped by both root keys and the availability key."""

    __tablename__ = "dep_generations"
    __table_args__ = (UniqueConstraint("policy_id", "seq"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True)  # GUID
    policy_id: Mapped[str] = mapped_column(ForeignKey("data_encryption_policies.id"), index=True)
    seq: Mapped[int] = mapped_column(Integer)
    key_uri_1: Mapped[str] = mapped_column(String(512))  # versioned
    wrapped_1: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    key_uri_2: Mapped[str] = mapped_column(String(512))
    wrapped_2: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    wrapped_availability: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    # customerkey.crypto.key_check of the DEP key; NULL for generations made before it existed
    key_check: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    created_at: Mapped[datetime]
    retired_at: Mapped[datetime | None] = mapped_column(nullable=True)


class MailboxRow(Base):
    __tablename__ = "mailboxes"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)  # GUID
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), index=True)
    upn: Mapped[str] = mapped_column(String(320), unique=True)  # lower-case
    alias: Mapped[str] = mapped_column(String(64))
    display_name: Mapped[str] = mapped_column(String(256))
    kind: Mapped[str] = mapped_column(String(16))  # "user" | "shared" | "mailuser"
    state: Mapped[str] = mapped_column(String(24), default="active")
    policy_id: Mapped[str | None] = mapped_column(
        ForeignKey("data_encryption_policies.id"), nullable=True, index=True
    )
    current_key_id: Mapped[str | None] = mapped_column(String(36), nullable=True)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class MailboxKeyRow(Base):
    """A mailbox key, wrapped by a DEP generation's key (or the service key when
    ``generation_id`` is null). ``wrapped`` is cleared when the key is destroyed."""

    __tablename__ = "mailbox_keys"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    mailbox_id: Mapped[str] = mapped_column(ForeignKey("mailboxes.id"), index=True)
    seq: Mapped[int] = mapped_column(Integer)
    generation_id: Mapped[str | None] = mapped_column(
        ForeignKey("dep_generations.id"), nullable=True, index=True
    )
    wrapped: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    state: Mapped[str] = mapped_column(String(16), default="active")
    created_at: Mapped[datetime]
    destroyed_at: Mapped[datetime | None] = mapped_column(nullable=True)


class MailItemRow(Base):
    """A message: only ids, folder, sizes, a date and which key seals its blob."""

    __tablename__ = "mail_items"
    __table_args__ = (Index("ix_mail_items_mailbox_key", "mailbox_id", "key_id"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    mailbox_id: Mapped[str] = mapped_column(ForeignKey("mailboxes.id"), index=True)
    seq: Mapped[int] = mapped_column(BigInteger)
    folder: Mapped[str] = mapped_column(String(256))
    key_id: Mapped[str] = mapped_column(ForeignKey("mailbox_keys.id"))
    blob: Mapped[str] = mapped_column(String(256))
    size: Mapped[int] = mapped_column(BigInteger)
    sealed_size: Mapped[int] = mapped_column(BigInteger)
    received_at: Mapped[datetime]
    created_at: Mapped[datetime]


class JobRow(Base):
    """A durable background job; workers claim it with a lease and checkpoint progress."""

    __tablename__ = "jobs"
    __table_args__ = (Index("ix_jobs_state_created", "state", "created_at"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    kind: Mapped[str] = mapped_column(String(64))
    target: Mapped[str] = mapped_column(String(320), index=True)
    state: Mapped[str] = mapped_column(String(16))  # queued|running|succeeded|failed
    payload: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    checkpoint: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    progress_done: Mapped[int] = mapped_column(BigInteger, default=0)
    progress_total: Mapped[int] = mapped_column(BigInteger, default=0)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    lease_owner: Mapped[str | None] = mapped_column(String(128), nullable=True)
    lease_expires_at: Mapped[datetime | None] = mapped_column(nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_by: Mapped[str] = mapped_column(String(320))
    created_by_id: Mapped[str | None] = mapped_column(String(36), nullable=True)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    finished_at: Mapped[datetime | None] = mapped_column(nullable=True)


class InstallationRow(Base):
    """The one row naming the master key this database's data is sealed under
    (``storage.installation``)."""

    __tablename__ = "installation"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)  # always 1
    master_key_id: Mapped[str] = mapped_column(String(16))
    recorded_at: Mapped[datetime]


class WorkerRow(Base):
    """A live worker process announces itself here so commands know not to run jobs inline,
    and renews ``heartbeat_at`` while it lives (``jobs.heartbeats``).

    Its identity is ``host`` (the host id: CUSTOMERKEY_HOST_ID, /etc/machine-id or the
    hostname), ``boot_id`` (the kernel's boot id) and ``pid``; ``pid_namespace`` says in which
    pid namespace ``pid`` is meaningful. Rows of versions before 0012 have NULL in the last
    three columns and are judged by their jobs' leases alone."""

    __tablename__ = "workers"

    id: Mapped[str] = mapped_column(String(128), primary_key=True)
    host: Mapped[str] = mapped_column(String(256))
    pid: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[datetime]
    last_seen_at: Mapped[datetime]
    boot_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    pid_namespace: Mapped[str | None] = mapped_column(String(64), nullable=True)
    heartbeat_at: Mapped[datetime | None] = mapped_column(nullable=True)


class MailImportStagingRow(Base):
    """A mail store staged into the blob store for an import (``workloads.mail.staging``):
    sealed chunks ``mail-staging/<mailbox>/<id>/<n>``, of which ``chunks`` are committed,
    chunk n starting at message ``chunk_starts[n]``. The chunks are sealed under a data key
    of the import's own, stored sealed under the mailbox key ``key_id`` (``sealed_key``)."""

    __tablename__ = "mail_import_stagings"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    mailbox_id: Mapped[str] = mapped_column(String(36), index=True)
    tenant_id: Mapped[str] = mapped_column(String(128))
    source: Mapped[str] = mapped_column(String(1024))  # the path it was staged from (shown)
    format: Mapped[str] = mapped_column(String(16))
    signature: Mapped[str] = mapped_column(String(64))
    key_id: Mapped[str] = mapped_column(String(36))
    sealed_key: Mapped[bytes] = mapped_column(LargeBinary)
    chunks: Mapped[int] = mapped_column(Integer, default=0)
    chunk_starts: Mapped[list[int]] = mapped_column(JSON, default=list)
    messages: Mapped[int] = mapped_column(BigInteger, default=0)
    bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    complete: Mapped[bool] = mapped_column(Boolean, default=False)
    job_id: Mapped[str | None] = mapped_column(String(36), nullable=True)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


# ---------------------------------------------------------------------- files workload


class SiteRow(Base):
    """A SharePoint/OneDrive site, identified by its URL (lower-case, no trailing slash)."""

    __tablename__ = "sites"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)  # GUID
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), index=True)
    url: Mapped[str] = mapped_column(String(512), unique=True)
    title: Mapped[str] = mapped_column(String(256))
    kind: Mapped[str] = mapped_column(String(16))  # "site" | "onedrive"
    state: Mapped[str] = mapped_column(String(16), default="active")  # active | purged
    current_key_id: Mapped[str | None] = mapped_column(String(36), nullable=True)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class SiteKeyRow(Base):
    """A site key (AES-256), wrapped by a files TIK generation's key, or by the tenant's
    service-managed key when ``generation_id`` is null. ``wrapped`` is cleared on destruction."""

    __tablename__ = "site_keys"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    site_id: Mapped[str] = mapped_column(ForeignKey("sites.id"), index=True)
    seq: Mapped[int] = mapped_column(Integer)
    generation_id: Mapped[str | None] = mapped_column(
        ForeignKey("dep_generations.id"), nullable=True, index=True
    )
    wrapped: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    state: Mapped[str] = mapped_column(String(16), default="active")  # active | destroyed
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    destroyed_at: Mapped[datetime | None] = mapped_column(nullable=True)


class FileRow(Base):
    """A file in a site's folder tree. ``active_path`` is the lower-cased path while the file
    is live and null while it sits in the recycle bin, so live paths are unique per site."""

    __tablename__ = "files"
    __table_args__ = (UniqueConstraint("site_id", "active_path"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    site_id: Mapped[str] = mapped_column(ForeignKey("sites.id"), index=True)
    path: Mapped[str] = mapped_column(String(1024))  # as given, e.g. "Shared Documents/a.xlsx"
    path_lower: Mapped[str] = mapped_column(String(1024))
    active_path: Mapped[str | None] = mapped_column(String(1024), nullable=True)
    state: Mapped[str] = mapped_column(String(16), default="active")  # active | recycled
    current_version: Mapped[int] = mapped_column(Integer, default=0)
    created_by: Mapped[str] = mapped_column(String(320))
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    deleted_by: Mapped[str | None] = mapped_column(String(320), nullable=True)
    deleted_at: Mapped[datetime | None] = mapped_column(nullable=True)


class FileVersionRow(Base):
    """One version of a file: its size and how many chunks hold it (a dropped chunk shows)."""

    __tablename__ = "file_versions"
    __table_args__ = (UniqueConstraint("file_id", "number"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    file_id: Mapped[str] = mapped_column(ForeignKey("files.id"), index=True)
    number: Mapped[int] = mapped_column(Integer)  # 1, 2, ... per file
    size: Mapped[int] = mapped_column(BigInteger)
    sealed_size: Mapped[int] = mapped_column(BigInteger)
    chunk_size: Mapped[int] = mapped_column(Integer)
    chunk_count: Mapped[int] = mapped_column(Integer)
    created_by: Mapped[str] = mapped_column(String(320))
    created_at: Mapped[datetime]


class FileChunkRow(Base):
    """One chunk of a file version: its own AES-256 key, AES-KWP-wrapped by a site key, and
    the blob holding its envelope. ``wrapped_key`` is cleared when the chunk is destroyed."""

    __tablename__ = "file_chunks"
    __table_args__ = (UniqueConstraint("version_id", "position"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True)  # also the chunk key id
    version_id: Mapped[str] = mapped_column(ForeignKey("file_versions.id"), index=True)
    position: Mapped[int] = mapped_column(Integer)  # 0, 1, ... within the version
    site_key_id: Mapped[str] = mapped_column(ForeignKey("site_keys.id"), index=True)
    wrapped_key: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    blob: Mapped[str] = mapped_column(String(256))
    size: Mapped[int] = mapped_column(BigInteger)
    sealed_size: Mapped[int] = mapped_column(BigInteger)


class RevocationRow(Base):
    """One narrowing of vault access (a grant changed or removed, a key disabled, updated or
    deleted, a vault deleted), appended in the transaction that made it. Every running process
    follows this log to drop its cached DEP keys; ``storage/revocations.py`` owns it. ``seq``
    only grows (AUTOINCREMENT on SQLite, a sequence on PostgreSQL): pruning never lets a
    number come back."""

    __tablename__ = "revocations"
    __table_args__ = {"sqlite_autoincrement": True}

    seq: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    vault: Mapped[str] = mapped_column(String(63))  # lower-cased vault name
    key: Mapped[str] = mapped_column(String(127), default="")  # key name, or "" for the vault
    change: Mapped[str] = mapped_column(String(32))  # access-changed, key-updated, ...
    created_at: Mapped[datetime] = mapped_column(index=True)
