"""Files as records: list a site's files (or its recycle bin), read one and its versions,
move one to the recycle bin and back, and empty the recycle bin (chunk keys, rows and blobs
removed). Their content goes in and out through ``transfers``."""

from __future__ import annotations

from sqlalchemy import select

from customerkey.errors import Conflict
from customerkey.storage.models import FileRow, FileVersionRow
from customerkey.vault.models import Actor
from customerkey.workloads.files import blobs as blob_names
from customerkey.workloads.files.base import FilesServiceBase
from customerkey.workloads.files.models import FileInfo, FileVersion
from customerkey.workloads.files.urls import normalize_path


class DocumentsMixin(FilesServiceBase):
    """File records and the recycle bin."""

    def list_files(
        self,
        actor: Actor,
        site_url: str,
        *,
        folder: str | None = None,
        recycle_bin: bool = False,
    ) -> list[FileInfo]:
        with self.db.transaction() as session:
            site = self._site_row(session, site_url)
            self._may_manage(actor, site.tenant_id)
            query = select(FileRow).where(
                FileRow.site_id == site.id,
                FileRow.state == ("recycled" if recycle_bin else "active"),
            )
            if folder is not None and folder.strip().strip("/"):
                prefix = normalize_path(folder).lower() + "/"
                query = query.where(FileRow.path_lower.startswith(prefix, autoescape=True))
            order = FileRow.deleted_at.desc() if recycle_bin else FileRow.path_lower
            return [
                self._file_view(session, r, site.url)
                for r in session.scalars(query.order_by(order))
            ]

    def get_file(self, actor: Actor, site_url: str, path: str) -> FileInfo:
        with self.db.transaction() as session:
            site = self._site_row(session, site_url)
            self._may_manage(actor, site.tenant_id)
            return self._file_view(session, self._file_row(session, site, path), site.url)

    def versions(self, actor: Actor, site_url: str, path: str) -> list[FileVersion]:
        with self.db.transaction() as session:
            site = self._site_row(session, site_url)
            self._may_manage(actor, site.tenant_id)
            row = self._file_row(session, site, path)
            return [
                self._version_view(v, row.current_version)
                for v in session.scalars(
                    select(FileVersionRow)
                    .where(FileVersionRow.file_id == row.id)
                    .order_by(FileVersionRow.number)
                )
            ]

    def delete(self, actor: Actor, site_url: str, path: str) -> FileInfo:
        """Move a file (with all its versions) to the site's recycle bin."""
        with self.db.transaction() as session:
            site = self._site_row(session, site_url)
            self._may_manage(actor, site.tenant_id)
            row = self._file_row(session, site, path)
            now = self._clock.now()
            row.state = "recycled"
            row.active_path = None
            row.deleted_by = actor.principal_id
            row.deleted_at = now
            row.updated_at = now
            self._audit.append(
                session,
                tenant=site.tenant_id,
                principal=actor.audit_name,
                actor_id=actor.object_id or None,
                operation="FileRecycled",
                request_id=actor.request_id,
                details={"site": site.id, "file": row.id, "path": row.path},
            )
            return self._file_view(session, row, site.url)

    def restore(self, actor: Actor, site_url: str, ref: str) -> FileInfo:
        """Bring a file back from the recycle bin (by path: the most recently deleted one)."""
        with self.db.transaction() as session:
            site = self._site_row(session, site_url)
            self._may_manage(actor, site.tenant_id)
            row = self._file_row(session, site, ref, recycled=True)
            taken = session.scalar(
                select(FileRow.id).where(
                    FileRow.site_id == site.id, FileRow.active_path == row.path_lower
                )
            )
            if taken is not None:
                raise Conflict(
                    f"A file '{row.path}' already exists in {site.url}; delete or rename it before "
                    "restoring this one."
                )
            row.state = "active"
            row.active_path = row.path_lower
            row.deleted_by = None
            row.deleted_at = None
            row.updated_at = self._clock.now()
            self._audit.append(
                session,
                tenant=site.tenant_id,
                principal=actor.audit_name,
                actor_id=actor.object_id or None,
                operation="FileRestored",
                request_id=actor.request_id,
                details={"site": site.id, "file": row.id, "path": row.path},
            )
            return self._file_view(session, row, site.url)

    def purge_recycled(self, actor: Actor, site_url: str, ref: str | None = None) -> int:
        """Empty the site's recycle bin (or remove one file from it): chunk keys destroyed,
        rows and blobs deleted. Returns how many files were removed."""
        with self.db.transaction() as session:
            site = self._site_row(session, site_url)
            self._may_manage(actor, site.tenant_id)
            if ref is not None:
                rows = [self._file_row(session, site, ref, recycled=True)]
            else:
                rows = list(
                    session.scalars(
                        select(FileRow).where(
                            FileRow.site_id == site.id, FileRow.state == "recycled"
                        )
                    )
                )
            file_ids = [r.id for r in rows]
            self._delete_files(session, file_ids)
            site_id = site.id
            self._audit.append(
                session,
                tenant=site.tenant_id,
                principal=actor.audit_name,
                actor_id=actor.object_id or None,
                operation="RecycleBinPurged",
                request_id=actor.request_id,
                details={"site": site.id, "files": file_ids},
            )
        for file_id in file_ids:
            self.blobs.delete_prefix(blob_names.file_folder(site_id, file_id))
        return len(file_ids)
