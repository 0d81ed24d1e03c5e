"""The files service's shared part: its constructor and state, and the helpers every concern
uses.

It owns the site-key table (``SITE_KEYS``) and its ``ContainerKeys``, the permission check
(``_may_manage``: a tenant admin), the tenant an admin site URL names (``resolve_tenant``),
the lookups of the tenant's files policy, its current TIK generation and its register/roll
jobs, the site-key unwrap, the site and file lookups and views (``_site_row``, ``_site_view``,
``_file_row``, ``_file_view``, ``_version_view``), and the deletion of file rows that both the
recycle bin and the data purge use (``_delete_files``). The concerns (``status``, ``policy``,
``purge``, ``sites``, ``documents``, ``transfers``) each inherit from ``FilesServiceBase``;
``service.FilesService`` combines them."""

from __future__ import annotations

import uuid

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from customerkey.audit.log import AuditLog
from customerkey.clock import Clock
from customerkey.crypto.aead import DEFAULT_SEGMENT_SIZE
from customerkey.crypto.sealing import MasterSealer
from customerkey.errors import BadParameter, Forbidden
from customerkey.identity import authorize as authz
from customerkey.jobs.queue import JobQueue
from customerkey.keys.containers import ContainerKeys, ContainerKeyTable
from customerkey.keys.deps import DataEncryptionPolicies
from customerkey.rng import Rng
from customerkey.storage.blob_store import BlobStore
from customerkey.storage.database import Database
from customerkey.storage.models import (
    FileChunkRow,
    FileRow,
    FileVersionRow,
    JobRow,
    PolicyRow,
    SiteKeyRow,
    SiteRow,
)
from customerkey.vault.models import Actor
from customerkey.workloads.files.jobs import REWRAP_JOBS
from customerkey.workloads.files.models import (
    _ACTIVE,
    CHUNK_SIZE,
    REWRAP_BATCH,
    SPO_DOMAIN,
    FileInfo,
    FileNotFound,
    FileVersion,
    Site,
    SiteNotFound,
)
from customerkey.workloads.files.urls import normalize_path, parse_site_url, tenant_of_admin_url

SITE_KEYS = ContainerKeyTable(
    SiteKeyRow, live=lambda: SiteKeyRow.state == "active", touch="updated_at"
)


class FilesServiceBase:
    """State and helpers shared by every part of ``FilesService``."""

    def __init__(
        self,
        db: Database,
        *,
        clock: Clock,
        rng: Rng,
        audit: AuditLog,
        policies: DataEncryptionPolicies,
        sealer: MasterSealer,
        blobs: BlobStore,
        jobs: JobQueue,
        domain: str = SPO_DOMAIN,
        chunk_size: int = CHUNK_SIZE,
        segment_size: int = DEFAULT_SEGMENT_SIZE,
        rewrap_batch: int = REWRAP_BATCH,
    ) -> None:
        if chunk_size < 1:
            raise ValueError("chunk_size must be positive")
        self.db = db
        self._clock = clock
        self._rng = rng
        self._audit = audit
        self.policies = policies
        self._sealer = sealer
        self.blobs = blobs
        self.jobs = jobs
        self.domain = domain
        self.chunk_size = chunk_size
        self.segment_size = segment_size
        self.rewrap_batch = rewrap_batch  # site keys re-wrapped per transaction
        self.keys = ContainerKeys(
            db, SITE_KEYS, policies=policies, sealer=sealer, audit=audit, clock=clock, rng=rng
        )

    def _uuid(self) -> str:
        return str(uuid.UUID(bytes=self._rng.token_bytes(16), version=4))

    @staticmethod
    def _may_manage(actor: Actor, tenant: str) -> None:
        if not authz.allowed(actor, authz.Action.TENANT_ADMINISTER, authz.Tenant(tenant)):
            raise Forbidden(f"'{actor.principal_id}' is not an administrator of '{tenant}'.")

    def resolve_tenant(self, tenant: str | None, identity: str | None) -> str | None:
        """The tenant named by an admin site URL (``-Identity``), checked against ``tenant``."""
        if identity is None:
            return tenant.lower() if tenant else None
        named = tenant_of_admin_url(identity, self.domain)
        if tenant and tenant.lower() != named:
            raise BadParameter(f"The admin site {identity} is not tenant '{tenant}''s.")
        return named

    @staticmethod
    def _policy_row(session: Session, tenant: str) -> PolicyRow | None:
        """The tenant's files policy (at most one is not purged)."""
        return session.scalar(
            select(PolicyRow).where(
                PolicyRow.tenant_id == tenant,
                PolicyRow.kind == "files",
                PolicyRow.state != "purged",
            )
        )

    @staticmethod
    def _rewrap_jobs(session: Session, policy_id: str) -> list[JobRow]:
        """Register and roll jobs of a policy, oldest first (by TIK generation, then time)."""
        rows = list(
            session.scalars(
                select(JobRow).where(JobRow.target == policy_id, JobRow.kind.in_(REWRAP_JOBS))
            )
        )
        return sorted(
            rows,
            key=lambda r: (
                int(r.payload.get("generation_seq", 0)),
                r.created_at,
                r.state in _ACTIVE,
            ),
        )

    def _active_rewrap(self, session: Session, policy_id: str) -> JobRow | None:
        active = [r for r in self._rewrap_jobs(session, policy_id) if r.state in _ACTIVE]
        return active[-1] if active else None

    def _site_row(self, session: Session, url: str) -> SiteRow:
        text = url.strip()
        row = session.get(SiteRow, text.lower()) if len(text) == 36 else None
        if row is None:
            canonical, _, _ = parse_site_url(text, self.domain)
            row = session.scalar(select(SiteRow).where(SiteRow.url == canonical))
        if row is None or row.state != "active":
            raise SiteNotFound(f"The site '{url}' was not found.")
        return row

    def _site_view(self, session: Session, row: SiteRow) -> Site:
        key = session.get(SiteKeyRow, row.current_key_id) if row.current_key_id else None
        files = session.scalar(
            select(func.count())
            .select_from(FileRow)
            .where(FileRow.site_id == row.id, FileRow.state == "active")
        )
        return Site(
            id=row.id,
            tenant=row.tenant_id,
            url=row.url,
            title=row.title,
            kind=row.kind,
            state=row.state,
            generation_id=key.generation_id if key else None,
            file_count=int(files or 0),
            created_at=row.created_at,
        )

    def _file_row(
        self, session: Session, site: SiteRow, ref: str, *, recycled: bool = False
    ) -> FileRow:
        """A live file by path (or id); with ``recycled``, the newest recycled one instead."""
        text = ref.strip()
        row = session.get(FileRow, text.lower()) if len(text) == 36 else None
        if row is not None and row.site_id == site.id:
            if (row.state == "recycled") == recycled:
                return row
            row = None
        path = normalize_path(text).lower()
        if recycled:
            row = session.scalar(
                select(FileRow)
                .where(
                    FileRow.site_id == site.id,
                    FileRow.path_lower == path,
                    FileRow.state == "recycled",
                )
                .order_by(FileRow.deleted_at.desc())
                .limit(1)
            )
        else:
            row = session.scalar(
                select(FileRow).where(FileRow.site_id == site.id, FileRow.active_path == path)
            )
        if row is None:
            where = "the recycle bin of" if recycled else "site"
            raise FileNotFound(f"No file '{ref}' in {where} {site.url}.")
        return row

    def _file_view(self, session: Session, row: FileRow, site_url: str) -> FileInfo:
        current = session.scalar(
            select(FileVersionRow).where(
                FileVersionRow.file_id == row.id, FileVersionRow.number == row.current_version
            )
        )
        count = session.scalar(
            select(func.count()).select_from(FileVersionRow).where(FileVersionRow.file_id == row.id)
        )
        return FileInfo(
            id=row.id,
            site_url=site_url,
            path=row.path,
            state=row.state,
            version=row.current_version,
            size=current.size if current else 0,
            version_count=int(count or 0),
            created_by=row.created_by,
            created_at=row.created_at,
            updated_at=row.updated_at,
            deleted_by=row.deleted_by,
            deleted_at=row.deleted_at,
        )

    @staticmethod
    def _version_view(row: FileVersionRow, current: int) -> FileVersion:
        return FileVersion(
            id=row.id,
            number=row.number,
            size=row.size,
            chunk_count=row.chunk_count,
            created_by=row.created_by,
            created_at=row.created_at,
            is_current=row.number == current,
        )

    @staticmethod
    def _delete_files(session: Session, file_ids: list[str]) -> None:
        if not file_ids:
            return
        versions = select(FileVersionRow.id).where(FileVersionRow.file_id.in_(file_ids))
        session.execute(delete(FileChunkRow).where(FileChunkRow.version_id.in_(versions)))
        session.execute(delete(FileVersionRow).where(FileVersionRow.file_id.in_(file_ids)))
        session.execute(delete(FileRow).where(FileRow.id.in_(file_ids)))
