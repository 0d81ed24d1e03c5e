"""The files workload's models: the views the service hands out (sites, their encryption
status, the tenant's files policy status, files and versions, a download ready to be written),
its not-found errors, its constants and defaults, and the envelope context that binds a chunk
to its tenant, site, file, version, position and key."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import BinaryIO

from customerkey.errors import NotFound

REWRAP_BATCH = 100
CHUNK_SIZE = 8 << 20
SPO_DOMAIN = "sharepoint.local"
FILES_POLICY_NAME = "SPODataEncryptionPolicy"
MAX_PATH = 400
KEY_TYPES = ("primary", "secondary")
RECOVERY_ACTIVITY = "Availability Key Used for Recovery"
Progress = Callable[[int, int | None], None]

_ACTIVE = ("queued", "running")


class SiteNotFound(NotFound):
    code = "SiteNotFound"


class FileNotFound(NotFound):
    code = "FileNotFound"


@dataclass(frozen=True)
class Site:
    id: str
    tenant: str
    url: str
    title: str
    kind: str  # site | onedrive
    state: str
    generation_id: str | None  # the TIK generation wrapping its key; None: service-managed
    file_count: int
    created_at: datetime


@dataclass(frozen=True)
class SiteEncryptionStatus:
    site: Site
    state: str  # Unregistered | Registering | Registered | Rolling | PurgeRequested | Purging
    policy_id: str | None
    generation_id: str | None
    current_generation_id: str | None


@dataclass(frozen=True)
class FilesPolicyStatus:
    tenant: str
    identity: str  # the tenant's admin site URL
    state: str  # Unregistered | Registering | Registered | Rolling | PurgeRequested | Purging
    percent_complete: float | None
    sites_total: int
    sites_done: int
    policy_id: str | None = None
    primary_key_uri: str | None = None  # as registered or rolled to
    secondary_key_uri: str | None = None
    primary_key_version_uri: str | None = None  # the exact versions wrapping the current TIK
    secondary_key_version_uri: str | None = None
    generation_id: str | None = None
    generation_count: int = 0
    job_id: str | None = None
    job_kind: str | None = None
    job_state: str | None = None
    roll_key_type: str | None = None
    roll_key_uri: str | None = None
    last_error: str | None = None
    purge_reason: str | None = None
    purge_contact: str | None = None
    purge_requested_by: str | None = None


@dataclass(frozen=True)
class FileVersion:
    id: str
    number: int
    size: int
    chunk_count: int
    created_by: str
    created_at: datetime
    is_current: bool


@dataclass(frozen=True)
class FileInfo:
    id: str
    site_url: str
    path: str
    state: str  # active | recycled
    version: int
    size: int
    version_count: int
    created_by: str
    created_at: datetime
    updated_at: datetime
    deleted_by: str | None
    deleted_at: datetime | None

    @property
    def name(self) -> str:
        return self.path.rsplit("/", 1)[-1]

    @property
    def folder(self) -> str:
        return self.path.rsplit("/", 1)[0] if "/" in self.path else ""


@dataclass(frozen=True)
class PreparedDownload:
    """A version ready to be written out (``FilesService.prepare_download``)."""

    version: FileVersion
    _write: Callable[[BinaryIO, Callable[[int, int | None], None] | None], None]

    def write_to(
        self, dst: BinaryIO, progress: Callable[[int, int | None], None] | None = None
    ) -> None:
        self._write(dst, progress)


def chunk_context(
    tenant: str, site_id: str, file_id: str, version_id: str, position: int, chunk_id: str
) -> dict[str, str]:
    return {
        "tenant": tenant,
        "site": site_id,
        "file": file_id,
        "version": version_id,
        "chunk": str(position),
        "key": chunk_id,
    }
