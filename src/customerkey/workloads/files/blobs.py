"""The names of the files workload's blobs, built and parsed in one place, and what the blob
sweep asks of them.

``files/<site id>/<file id>/<version id>/<position>``: one sealed chunk of a file version
(``FileChunkRow.blob``). An upload writes every chunk of a version before it commits their
rows at once, so the sweep treats a version folder as one unit. A roll or registration
re-wraps site keys only and writes no blob.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from sqlalchemy import select
from sqlalchemy.orm import Session

from customerkey.storage.models import FileChunkRow

PREFIX = "files"
_POSITION = re.compile(r"^[0-9]+$")


def site_folder(site_id: str) -> str:
    return f"{PREFIX}/{site_id}"


def file_folder(site_id: str, file_id: str) -> str:
    return f"{PREFIX}/{site_id}/{file_id}"


def version_folder(site_id: str, file_id: str, version_id: str) -> str:
    return f"{PREFIX}/{site_id}/{file_id}/{version_id}"


def chunk_blob(version: str, position: int) -> str:
    """A chunk's name inside its ``version_folder``."""
    return f"{version}/{position:06d}"


def parse_chunk_blob(name: str) -> tuple[str, str, str, int] | None:
    """(site id, file id, version id, position) of a chunk's name; None for any other."""
    parts = name.split("/")
    if len(parts) != 5 or parts[0] != PREFIX or not _POSITION.match(parts[4]):
        return None
    return parts[1], parts[2], parts[3], int(parts[4])


class FilesBlobs:
    """The sweep's view of ``files/``: a unit is a version folder."""

    prefix = PREFIX
    units_are_folders = True

    def unit_of(self, name: str) -> str | None:
        parsed = parse_chunk_blob(name)
        return None if parsed is None else version_folder(*parsed[:3])

    def referenced(self, session: Session, folder: str, units: Iterable[str]) -> set[str]:
        version_ids = {unit.split("/")[3] for unit in units}
        return set(
            session.scalars(
                select(FileChunkRow.blob).where(FileChunkRow.version_id.in_(version_ids))
            )
        )
