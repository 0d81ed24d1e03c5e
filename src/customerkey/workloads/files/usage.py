"""The files workload's key-usage counter: how many sites, files and file versions a files
policy's generation (a TIK) protects (``keys.usage`` asks it, for files policies only)."""

from __future__ import annotations

from collections.abc import Mapping

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from customerkey.storage.models import FileChunkRow, FileVersionRow, SiteKeyRow


class FilesUsage:
    """Key usage: the sites, files and file versions under a files policy's generation."""

    policy_kinds: frozenset[str] | None = frozenset({"files"})
    labels = ("Sites", "Files", "FileVersions")

    def count(self, session: Session, generation_id: str) -> dict[str, int]:
        sites = session.scalar(
            select(func.count(func.distinct(SiteKeyRow.site_id))).where(
                SiteKeyRow.generation_id == generation_id, SiteKeyRow.state == "active"
            )
        )
        versions_query = (
            select(FileVersionRow.id, FileVersionRow.file_id)
            .join(FileChunkRow, FileChunkRow.version_id == FileVersionRow.id)
            .join(SiteKeyRow, SiteKeyRow.id == FileChunkRow.site_key_id)
            .where(SiteKeyRow.generation_id == generation_id, SiteKeyRow.state == "active")
            .distinct()
            .subquery()
        )
        versions, files = session.execute(
            select(func.count(), func.count(func.distinct(versions_query.c.file_id)))
        ).one()
        return {"Sites": int(sites or 0), "Files": int(files or 0), "FileVersions": int(versions)}

    def describe(self, counts: Mapping[str, int]) -> str:
        return f"{counts['Sites']} site(s) and {counts['Files']} file(s)"
