"""The files workload (SharePoint Online / OneDrive): sites, files in folders, file versions
and a site recycle bin, always stored encrypted.

Key hierarchy (DESIGN.md, and the SharePoint sections of the Customer Key reference)::

    primary root key    secondary root key    availability key
            \\__________________|___________________/
                   tenant intermediate key (TIK) = a generation of the tenant's files DEP
                                  | AES-KWP
                   site key (AES-256, one per site)
                                  | AES-KWP
                   chunk key (AES-256, random, one per chunk of a file version)
                                  |
                   chunk envelope (crypto.aead, 1 MiB segments)

A files policy is a ``PolicyRow`` of kind ``files`` (one per tenant; key_uri_1 is the primary
key, key_uri_2 the secondary) and a TIK is one of its generations. Without a registered policy
site keys are wrapped by the tenant's service-managed key. ``register`` moves every site key
under the TIK in a background job (State Registering, percent of sites done, then Registered);
``roll`` (Update-SPODataEncryptionPolicy) makes a new TIK generation wrapped by the new key and
re-wraps every site key onto it (State Rolling); no file content is rewritten by either. Only
one roll runs at a time. The files workload never falls back to the availability key by
itself: ``recover`` is the explicit, audited operator action that uses it.

Files stream in and out: content is cut into chunks of ``chunk_size`` bytes (8 MiB), each
sealed with ``seal_stream`` under its own key into a blob named
``files/<site>/<file>/<version>/<position>``. The envelope context binds tenant, site, file,
version, chunk position and chunk key id, and each version records its chunk count and size,
so a dropped, reordered, swapped or truncated chunk fails to open. The database holds ids,
paths, sizes and wrapped keys; never content.

Deleting a file moves it to the site's recycle bin (restorable); purging the recycle bin
destroys its chunk keys and blobs. The data purge path (two tenant admins, vault access
revoked first) destroys every TIK generation, site key and chunk key of the tenant.

Length: not split yet. The seams are the banner comments (status, register/roll, purge, sites,
files); the split behind this facade is the remaining step of the architecture issue (15).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from io import BytesIO
from typing import Any, BinaryIO
from urllib.parse import urlsplit

from sqlalchemy import ColumnElement, and_, delete, func, or_, select
from sqlalchemy.orm import Session

from customerkey.audit.log import AuditLog
from customerkey.clock import Clock
from customerkey.crypto.aead import DEFAULT_SEGMENT_SIZE, open_stream, seal_stream
from customerkey.crypto.sealing import MasterSealer
from customerkey.crypto.wrap import aes_kwp_unwrap, aes_kwp_wrap
from customerkey.errors import (
    BadParameter,
    Conflict,
    DecryptionFailed,
    Forbidden,
    KeyAccessDenied,
    NotFound,
)
from customerkey.identity import authorize as authz
from customerkey.identity.workload_principals import SHAREPOINT
from customerkey.jobs.queue import Job, JobQueue
from customerkey.jobs.registry import payload_dict, payload_of
from customerkey.jobs.worker import Handler, JobContext, PermanentJobError
from customerkey.keyprovider.base import KeyUri
from customerkey.keys.containers import ContainerKeys, ContainerKeyTable
from customerkey.keys.deps import PolicyService
from customerkey.keys.purge import PurgeSteps, run_purge
from customerkey.keys.purge_approval import approving_actor
from customerkey.rng import Rng
from customerkey.storage.blobs import LocalBlobStore
from customerkey.storage.database import Database
from customerkey.storage.models import (
    FileChunkRow,
    FileRow,
    FileVersionRow,
    GenerationRow,
    JobRow,
    PolicyRow,
    SiteKeyRow,
    SiteRow,
    TenantRow,
)
from customerkey.vault.models import Actor
from customerkey.workloads.files import blobs as blob_names
from customerkey.workloads.files.jobs import (
    PURGE_JOB,
    REGISTER_JOB,
    REWRAP_JOBS,
    ROLL_JOB,
    PurgePayload,
    RewrapPayload,
)

REWRAP_BATCH = 100
CHUNK_SIZE = 8 << 20
SPO_DOMAIN = "sharepoint.local"
FILES_POLICY_NAME = "SPODataEncryptionPolicy"
MAX_PATH = 400
KEY_TYPES = ("primary", "secondary")
RECOVERY_ACTIVITY = "Availability Key Used for Recovery"
Progress = Callable[[int, int | None], None]

_TENANT = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
_SITE_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,127}$")
_BAD_PATH_CHARS = set('"*:<>?\\|')
_ACTIVE = ("queued", "running")


class SiteNotFound(NotFound):
    code = "SiteNotFound"


class FileNotFound(NotFound):
    code = "FileNotFound"


# ---------------------------------------------------------------------- views


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
class _Chunk:
    id: str
    position: int
    site_key_id: str
    wrapped_key: bytes | None
    blob: str
    size: int


@dataclass(frozen=True)
class _ReadPlan:
    tenant: str
    site_id: str
    file_id: str
    version: FileVersion
    chunks: list[_Chunk]
    site_keys: dict[str, tuple[str | None, bytes | None]]  # id -> (generation, wrapped)


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


# ---------------------------------------------------------------------- names


def admin_url(tenant: str, domain: str = SPO_DOMAIN) -> str:
    return f"https://{tenant}-admin.{domain}"


def tenant_of_admin_url(text: str, domain: str = SPO_DOMAIN) -> str:
    """The tenant an admin site URL (``https://<tenant>-admin.<domain>``) names."""
    parts = urlsplit(text.strip())
    host = (parts.hostname or "").lower()
    suffix = f"-admin.{domain}"
    tenant = host[: -len(suffix)] if host.endswith(suffix) else ""
    if (
        parts.scheme.lower() != "https"
        or parts.path.strip("/")
        or parts.query
        or parts.fragment
        or not _TENANT.match(tenant)
    ):
        raise BadParameter(
            f"'{text}' is not a SharePoint admin site URL like https://<tenant>-admin.{domain}."
        )
    return tenant


def parse_site_url(text: str, domain: str = SPO_DOMAIN) -> tuple[str, str, str]:
    """(canonical URL, tenant, kind) of a site URL: ``https://<tenant>.<domain>`` (the root
    site), ``https://<tenant>.<domain>/sites/<name>`` or ``/teams/<name>``, or a OneDrive
    ``https://<tenant>-my.<domain>/personal/<name>``."""
    example = (
        f"site URLs look like https://<tenant>.{domain}/sites/<name> or "
        f"https://<tenant>-my.{domain}/personal/<name>"
    )
    try:
        parts = urlsplit(text.strip())
        port = parts.port
    except ValueError:
        raise BadParameter(f"'{text}' is not a site URL: {example}.") from None
    host = (parts.hostname or "").lower()
    suffix = "." + domain
    if (
        parts.scheme.lower() != "https"
        or not host.endswith(suffix)
        or port is not None
        or parts.username
        or parts.query
        or parts.fragment
    ):
        raise BadParameter(f"'{text}' is not a site URL of this service: {example}.")
    label = host[: -len(suffix)]
    raw = parts.path.rstrip("/")
    segments = raw.lower().split("/")[1:] if raw else []
    if label.endswith("-admin"):
        raise BadParameter(f"'{text}' is the tenant's admin site; files live in its sites.")
    if label.endswith("-my"):
        tenant, kind = label[:-3], "onedrive"
        shape_ok = len(segments) == 2 and segments[0] == "personal"
    else:
        tenant, kind = label, "site"
        shape_ok = not segments or (len(segments) == 2 and segments[0] in ("sites", "teams"))
    if not _TENANT.match(tenant) or not shape_ok or not all(segments):
        raise BadParameter(f"'{text}' is not a site URL: {example}.")
    if segments and not _SITE_NAME.match(segments[1]):
        raise BadParameter(
            f"The site name '{segments[1]}' is invalid: letters, digits, '-', '_' and '.', "
            "at most 128 characters."
        )
    url = f"https://{host}" + ("/" + "/".join(segments) if segments else "")
    return url, tenant, kind


def normalize_path(path: str) -> str:
    """A file path inside a site: folders separated by '/', e.g. 'Shared Documents/q1.xlsx'."""
    text = path.strip().strip("/")
    if not text:
        raise BadParameter("A file path is needed, e.g. 'Shared Documents/report.docx'.")
    if len(text) > MAX_PATH:
        raise BadParameter(f"The file path is {len(text)} characters; at most {MAX_PATH}.")
    for segment in text.split("/"):
        if not segment or segment in (".", "..") or segment != segment.strip():
            raise BadParameter(
                f"The file path '{path}' is invalid: empty, '.' or '..' folder names and names "
                "starting or ending with spaces are not allowed."
            )
        bad = sorted({c for c in segment if c in _BAD_PATH_CHARS or ord(c) < 32})
        if bad:
            shown = " ".join(repr(c) for c in bad)
            raise BadParameter(f"The file path '{path}' contains characters not allowed: {shown}.")
    return text


# ---------------------------------------------------------------------- streams


class _Source:
    """A source stream with a one-byte look-ahead, so an upload knows when the input ended."""

    def __init__(self, src: BinaryIO) -> None:
        self._src = src
        self._ahead = b""

    def at_eof(self) -> bool:
        if self._ahead:
            return False
        self._ahead = self._read(1)
        return not self._ahead

    def _read(self, size: int) -> bytes:
        data = self._src.read(size)
        if data is None:
            raise BlockingIOError("the upload stream returned no data without reaching EOF")
        return data

    def readinto(self, buffer: memoryview, limit: int) -> int:
        size = min(len(buffer), limit)
        if size <= 0:
            return 0
        offset = 0
        if self._ahead:
            buffer[0] = self._ahead[0]
            self._ahead = b""
            offset = 1
            if size == 1:
                return 1
        readinto = getattr(self._src, "readinto", None)
        if readinto is not None:
            count = readinto(buffer[offset:size])
            if count is None:
                raise BlockingIOError("the upload stream returned no data without reaching EOF")
            return offset + int(count)
        data = self._read(size - offset)
        buffer[offset : offset + len(data)] = data
        return offset + len(data)


class _ChunkReader:
    """At most ``limit`` bytes of a ``_Source``: what one chunk envelope seals."""

    def __init__(self, source: _Source, limit: int) -> None:
        self._source = source
        self._left = limit
        self.count = 0

    def readinto(self, buffer: memoryview | bytearray) -> int:
        view = memoryview(buffer).cast("B")
        got = self._source.readinto(view, self._left)
        self._left -= got
        self.count += got
        return got

    def read(self, size: int = -1) -> bytes:
        size = self._left if size < 0 else min(size, self._left)
        buffer = bytearray(size)
        got = self.readinto(buffer)
        return bytes(buffer[:got])


class _Counting:
    """A write-only wrapper that counts bytes on their way to ``dst``."""

    def __init__(self, dst: BinaryIO) -> None:
        self._dst = dst
        self.count = 0

    def write(self, data: bytes | memoryview) -> int:
        self._dst.write(data)
        self.count += len(data)
        return len(data)


# ---------------------------------------------------------------------- the service


SITE_KEYS = ContainerKeyTable(
    SiteKeyRow, live=lambda: SiteKeyRow.state == "active", touch="updated_at"
)


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


class FilesService:
    def __init__(
        self,
        db: Database,
        *,
        clock: Clock,
        rng: Rng,
        audit: AuditLog,
        policies: PolicyService,
        sealer: MasterSealer,
        blobs: LocalBlobStore,
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

    # ------------------------------------------------------------------ helpers

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
    def _current_generation(session: Session, policy_id: str) -> GenerationRow | None:
        return session.scalar(
            select(GenerationRow)
            .where(GenerationRow.policy_id == policy_id, GenerationRow.retired_at.is_(None))
            .order_by(GenerationRow.seq.desc())
            .limit(1)
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

    def _unwrap_site_key(
        self,
        tenant: str,
        generation_id: str | None,
        wrapped: bytes | None,
        request_id: str | None = None,
    ) -> bytes:
        return self.keys.unwrap(tenant, generation_id, wrapped, request_id=request_id)

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

    # ------------------------------------------------------------------ status

    def _status(self, session: Session, tenant: str) -> FilesPolicyStatus:
        identity = admin_url(tenant, self.domain)
        total = int(
            session.scalar(
                select(func.count())
                .select_from(SiteRow)
                .where(SiteRow.tenant_id == tenant, SiteRow.state == "active")
            )
            or 0
        )
        policy = self._policy_row(session, tenant)
        if policy is None:
            return FilesPolicyStatus(tenant, identity, "Unregistered", None, total, 0)
        current = self._current_generation(session, policy.id)
        done = 0
        if current is not None:
            done = int(
                session.scalar(
                    select(func.count())
                    .select_from(SiteRow)
                    .join(SiteKeyRow, SiteKeyRow.id == SiteRow.current_key_id)
                    .where(
                        SiteRow.tenant_id == tenant,
                        SiteRow.state == "active",
                        SiteKeyRow.generation_id == current.id,
                    )
                )
                or 0
            )
        generations = int(
            session.scalar(
                select(func.count())
                .select_from(GenerationRow)
                .where(GenerationRow.policy_id == policy.id)
            )
            or 0
        )
        jobs = self._rewrap_jobs(session, policy.id)
        active = [j for j in jobs if j.state in _ACTIVE]
        job = active[-1] if active else (jobs[-1] if jobs else None)
        last_error: str | None = None
        if policy.state == "purge-requested":
            state = "PurgeRequested"
        elif policy.state == "purging":
            state = "Purging"
        elif active:
            state = "Registering" if active[-1].kind == REGISTER_JOB else "Rolling"
            last_error = active[-1].error
        elif done == total:
            state = "Registered"
        else:  # the last re-wrap stopped before every site was done (see ``resume``)
            state = "Rolling" if job is not None and job.kind == ROLL_JOB else "Registering"
            last_error = job.error if job is not None else "No re-wrap job is queued."
        if total:
            percent = 100.0 * done / total
        elif active:
            percent = 0.0
        else:
            percent = 100.0
        rolling = (
            payload_of(job, RewrapPayload)
            if job is not None and state == "Rolling"
            else RewrapPayload(generation_id="")
        )
        return FilesPolicyStatus(
            tenant=tenant,
            identity=identity,
            state=state,
            percent_complete=percent,
            sites_total=total,
            sites_done=done,
            policy_id=policy.id,
            primary_key_uri=policy.key_uri_1,
            secondary_key_uri=policy.key_uri_2,
            primary_key_version_uri=current.key_uri_1 if current else None,
            secondary_key_version_uri=current.key_uri_2 if current else None,
            generation_id=current.id if current else None,
            generation_count=generations,
            job_id=job.id if job is not None else None,
            job_kind=job.kind if job is not None else None,
            job_state=job.state if job is not None else None,
            roll_key_type=rolling.key_type,
            roll_key_uri=rolling.key_uri,
            last_error=last_error,
            purge_reason=policy.purge_reason,
            purge_contact=policy.purge_contact,
            purge_requested_by=policy.purge_requested_by,
        )

    def status(self, actor: Actor, tenant: str) -> FilesPolicyStatus:
        """Get-SPODataEncryptionPolicy: key URIs, State and percent of sites done."""
        tenant = tenant.lower()
        self._may_manage(actor, tenant)
        with self.db.transaction() as session:
            if session.get(TenantRow, tenant) is None:
                raise NotFound(f"No tenant named '{tenant}'.")
            return self._status(session, tenant)

    def _policy_for_change(self, session: Session, tenant: str) -> FilesPolicyStatus:
        if session.get(TenantRow, tenant) is None:
            raise NotFound(f"No tenant named '{tenant}'.")
        status = self._status(session, tenant)
        if status.policy_id is None:
            raise Conflict(
                f"Tenant '{tenant}' has no files data encryption policy registered; register "
                "one first."
            )
        if status.state in ("PurgeRequested", "Purging"):
            raise Conflict(
                f"A permanent data purge of tenant '{tenant}''s files is requested (State "
                f"{status.state}); its keys can no longer change."
            )
        return status

    @staticmethod
    def _busy_message(status: FilesPolicyStatus, *, active: bool) -> str:
        percent = f"{status.percent_complete or 0.0:.1f}% of sites done"
        if status.state == "Registering":
            what = f"Registration of the files policy of tenant '{status.tenant}'"
            if active:
                return (
                    f"{what} is still in progress (job {status.job_id}, {percent}); wait for "
                    "State Registered before rolling a key."
                )
            return (
                f"{what} did not finish (job {status.job_id}, {percent}: {status.last_error}); "
                "resume it to finish it first."
            )
        what = (
            f"A key roll is already in progress for tenant '{status.tenant}': job "
            f"{status.job_id} is rolling the {status.roll_key_type or 'root'} key to "
            f"{status.roll_key_uri or 'new keys'} ({percent})"
        )
        if active:
            return f"{what}. SharePoint allows only one key roll at a time; wait for it to finish."
        return (
            f"{what} and stopped before finishing ({status.last_error}). Only one key roll may "
            "be in progress; resume it to finish it first."
        )

    # ------------------------------------------------------------------ register / roll

    def register(
        self,
        actor: Actor,
        tenant: str,
        primary: str,
        secondary: str,
        *,
        identity: str | None = None,
    ) -> Job:
        """Register-SPODataEncryptionPolicy: a files DEP from two root keys (a versioned URI
        names the version wrapping the first TIK; else the newest), and a job that moves every
        site key from the service-managed key under the new TIK."""
        tenant_id = self.resolve_tenant(tenant, identity) or tenant.lower()
        self._may_manage(actor, tenant_id)
        with self.db.transaction() as session:
            if session.get(TenantRow, tenant_id) is None:
                raise NotFound(f"No tenant named '{tenant_id}'.")
            if self._policy_row(session, tenant_id) is not None:
                status = self._status(session, tenant_id)
                raise Conflict(
                    f"Tenant '{tenant_id}' already has a files data encryption policy (State "
                    f"{status.state}, primary key {status.primary_key_uri}, secondary key "
                    f"{status.secondary_key_uri}); one is allowed per tenant. Roll a key to change "
                    "it."
                )
        policy = self.policies.create(
            actor,
            tenant_id,
            FILES_POLICY_NAME,
            [primary, secondary],
            description=f"Files policy of {admin_url(tenant_id, self.domain)}",
            kind="files",
            exact_versions=True,
        )
        assert policy.current_generation_id is not None
        with self.db.transaction() as session:
            job = self.jobs.enqueue(
                session,
                REGISTER_JOB,
                policy.id,
                created_by=actor,
                payload=payload_dict(
                    RewrapPayload(generation_id=policy.current_generation_id, generation_seq=1)
                ),
                total=self._sites_to_rewrap(session, tenant_id, policy.current_generation_id),
            )
            self._audit.append(
                session,
                tenant=tenant_id,
                principal=actor.audit_name,
                actor_id=actor.object_id or None,
                operation="SPODataEncryptionPolicyRegister",
                request_id=actor.request_id,
                details={
                    "tenant": tenant_id,
                    "identity": admin_url(tenant_id, self.domain),
                    "policy": policy.id,
                    "generation": policy.current_generation_id,
                    "primary": policy.azure_key_ids[0],
                    "secondary": policy.azure_key_ids[1],
                    "job": job.id,
                },
            )
            return job

    @staticmethod
    def _rewrap_scope(tenant: str, generation_id: str) -> ColumnElement[bool]:
        """The site keys a register or roll onto ``generation_id`` moves: those of the
        tenant's active sites not on it yet (service-managed ones included)."""
        active_sites = select(SiteRow.id).where(
            SiteRow.tenant_id == tenant, SiteRow.state == "active"
        )
        return and_(
            SiteKeyRow.site_id.in_(active_sites),
            or_(SiteKeyRow.generation_id.is_(None), SiteKeyRow.generation_id != generation_id),
        )

    def _sites_to_rewrap(self, session: Session, tenant: str, generation_id: str) -> int:
        return self.keys.count_to_rewrap(session, self._rewrap_scope(tenant, generation_id))

    def roll(self, actor: Actor, tenant: str, key_type: str, key_uri: str) -> Job:
        """Update-SPODataEncryptionPolicy -KeyType Primary|Secondary: a new TIK generation
        wrapped by the new key (a versioned URI names the version; else the newest) and the
        other slot's current key version, then a job re-wrapping every site key onto it."""
        tenant = tenant.lower()
        self._may_manage(actor, tenant)
        kind = key_type.strip().lower()
        if kind not in KEY_TYPES:
            raise BadParameter(f"The key type must be Primary or Secondary, not '{key_type}'.")
        uri = KeyUri.parse(key_uri)
        with self.db.transaction() as session:
            status = self._policy_for_change(session, tenant)
            if status.state != "Registered":
                raise Conflict(self._busy_message(status, active=status.job_state in _ACTIVE))
        assert status.policy_id is not None
        assert status.primary_key_version_uri and status.secondary_key_version_uri
        assert status.primary_key_uri and status.secondary_key_uri
        slot = KEY_TYPES.index(kind)
        current = [
            KeyUri.parse(status.primary_key_version_uri),
            KeyUri.parse(status.secondary_key_version_uri),
        ]
        other = KEY_TYPES[1 - slot]
        if uri.netloc == current[1 - slot].netloc:
            raise BadParameter(
                f"The new {kind} key must be in a different vault than the {other} key "
                f"({current[1 - slot].vault})."
            )
        props = self.policies.validate_root_key("files", uri, tenant)
        if str(props.uri) == str(current[slot]):
            raise Conflict(
                f"The {kind} key is already {props.uri}; nothing to roll. Add a new version of "
                "the key in its vault first, or name another key."
            )
        wrap_with = list(current)
        wrap_with[slot] = props.uri
        policy_uris = [status.primary_key_uri, status.secondary_key_uri]
        policy_uris[slot] = str(uri)
        return self._roll_to_new_generation(
            actor,
            tenant,
            status.policy_id,
            (wrap_with[0], wrap_with[1]),
            policy_uris=(policy_uris[0], policy_uris[1]),
            operation="SPODataEncryptionPolicyUpdate",
            details={"tenant": tenant, "key_type": kind, "key": str(props.uri)},
            payload=RewrapPayload(generation_id="", key_type=kind, key_uri=str(props.uri)),
        )

    def _roll_to_new_generation(
        self,
        actor: Actor,
        tenant: str,
        policy_id: str,
        wrap_with: tuple[KeyUri, KeyUri],
        *,
        policy_uris: tuple[str, str],
        operation: str,
        details: dict[str, Any],
        payload: RewrapPayload,
    ) -> Job:
        """Make a TIK generation wrapped by ``wrap_with`` and queue the roll job that re-wraps
        every site key onto it, in the generation's own transaction (refused while another
        registration or roll is active)."""
        queued: list[Job] = []

        def enqueue(session: Session, generation: GenerationRow) -> None:
            if self._active_rewrap(session, policy_id) is not None:
                raise Conflict(self._busy_message(self._status(session, tenant), active=True))
            queued.append(
                self.jobs.enqueue(
                    session,
                    ROLL_JOB,
                    policy_id,
                    created_by=actor,
                    payload=payload_dict(
                        replace(payload, generation_id=generation.id, generation_seq=generation.seq)
                    ),
                    total=self._sites_to_rewrap(session, tenant, generation.id),
                )
            )

        self.policies.new_generation_with_keys(
            actor,
            policy_id,
            wrap_with,
            policy_uris=policy_uris,
            operation=operation,
            details=details,
            in_transaction=enqueue,
        )
        return queued[0]

    def resume(self, actor: Actor, tenant: str) -> Job | None:
        """Queue again a registration or roll that stopped before every site was done (its
        job failed). None when there is nothing to finish."""
        tenant = tenant.lower()
        self._may_manage(actor, tenant)
        with self.db.transaction() as session:
            status = self._policy_for_change(session, tenant)
            if status.job_state in _ACTIVE:
                raise Conflict(
                    f"Job {status.job_id} of tenant '{tenant}' is still {status.job_state}; it "
                    "needs no resuming."
                )
            if status.state == "Registered":
                return None
            assert status.policy_id is not None and status.generation_id is not None
            generation = session.get(GenerationRow, status.generation_id)
            assert generation is not None
            kind = ROLL_JOB if status.job_kind == ROLL_JOB else REGISTER_JOB
            previous = session.get(JobRow, status.job_id) if status.job_id else None
            before = (
                payload_of(previous, RewrapPayload)
                if previous is not None
                else RewrapPayload(generation_id="")
            )
            payload = payload_dict(
                replace(before, generation_id=generation.id, generation_seq=generation.seq)
            )
            job = self.jobs.enqueue(
                session,
                kind,
                status.policy_id,
                created_by=actor,
                payload=payload,
                total=self._sites_to_rewrap(session, tenant, generation.id),
            )
            self._audit.append(
                session,
                tenant=tenant,
                principal=actor.audit_name,
                actor_id=actor.object_id or None,
                operation="SPODataEncryptionPolicyResume",
                request_id=actor.request_id,
                details={"tenant": tenant, "policy": status.policy_id, "job": job.id},
            )
            return job

    def recover(
        self,
        actor: Actor,
        tenant: str,
        primary: str,
        secondary: str,
        *,
        with_availability_key: bool,
        reason: str,
    ) -> Job:
        """The recovery the customer asks for when its root keys are lost: the platform
        operator uses the availability key to unwrap the tenant's TIK generations, and a job
        re-wraps every site key under a new TIK protected by the two new root keys. Audited;
        never done automatically."""
        tenant = tenant.lower()
        if not authz.allowed(actor, authz.Action.PLATFORM_OPERATE, authz.Platform()):
            raise Forbidden(
                "Recovery with the availability key is a platform operator action, taken only "
                "when the customer asks for it."
            )
        if not with_availability_key:
            raise BadParameter(
                "Recovery unwraps the tenant's keys with the availability key; confirm with "
                "--with-availability-key."
            )
        if not reason.strip():
            raise BadParameter("A recovery needs a reason (the customer's request).")
        uri_1, uri_2 = KeyUri.parse(primary), KeyUri.parse(secondary)
        if uri_1.netloc == uri_2.netloc:
            raise BadParameter(
                "The two root keys must be in two different vaults (ideally in two regions)."
            )
        with self.db.transaction() as session:
            status = self._policy_for_change(session, tenant)
            if status.job_state in _ACTIVE:
                raise Conflict(self._busy_message(status, active=True))
        assert status.policy_id is not None
        props_1 = self.policies.validate_root_key("files", uri_1, tenant)
        props_2 = self.policies.validate_root_key("files", uri_2, tenant)
        return self._roll_to_new_generation(
            actor,
            tenant,
            status.policy_id,
            (props_1.uri, props_2.uri),
            policy_uris=(str(uri_1), str(uri_2)),
            operation="SPODataEncryptionPolicyRecover",
            details={"tenant": tenant, "reason": reason, "availability_key": "to be used"},
            payload=RewrapPayload(
                generation_id="",
                key_type="primary and secondary",
                key_uri=f"{props_1.uri}, {props_2.uri}",
                recovery=True,
            ),
        )

    # ------------------------------------------------------------------ re-wrap jobs

    def job_handlers(self) -> dict[str, Handler]:
        return {
            REGISTER_JOB: self.run_register,
            ROLL_JOB: self.run_roll,
            PURGE_JOB: self.run_purge,
        }

    def run_register(self, job: Job, context: JobContext) -> None:
        self._run_rewrap(job, context)

    def run_roll(self, job: Job, context: JobContext) -> None:
        self._run_rewrap(job, context)

    def _old_kek(
        self,
        tenant: str,
        generation_id: str | None,
        *,
        recovery: bool,
        job: Job,
    ) -> bytes:
        if generation_id is None:
            return self._sealer.service_key(tenant)
        if not recovery:
            return self.policies.generation_key(generation_id, system=True)
        key = self.policies.unwrap_with_availability_key(generation_id)
        with self.db.transaction() as session:
            generation = session.get(GenerationRow, generation_id)
            self._audit.append(
                session,
                tenant=tenant,
                principal="customerkey-service",
                operation=RECOVERY_ACTIVITY,
                details={
                    "PolicyId": generation.policy_id if generation else None,
                    "ScopeKeyVersionId": generation_id,
                    "Job": job.id,
                    "RequestedBy": job.created_by,
                },
            )
        return key

    def _run_rewrap(self, job: Job, context: JobContext) -> None:
        """Re-wrap every live site key of the tenant onto the job's TIK generation (from the
        service-managed key when registering, from older generations when rolling) with
        ``ContainerKeys.rewrap`` (resumable, the checkpoint in each batch's transaction), then
        retire every older generation no site key depends on and record the end, once."""
        policy_id = job.target
        payload = payload_of(job, RewrapPayload)
        target_id, recovery = payload.generation_id, payload.recovery
        if job.checkpoint.get("complete"):
            return
        with self.db.transaction() as session:
            policy = session.get(PolicyRow, policy_id)
            if policy is None or policy.state != "active":
                raise PermanentJobError(f"Files policy {policy_id} is no longer active.")
            target = session.get(GenerationRow, target_id)
            if target is None or target.retired_at is not None:
                raise PermanentJobError(f"Key generation {target_id} no longer exists.")
            tenant = policy.tenant_id
        done = self.keys.rewrap(
            scope=self._rewrap_scope(tenant, target_id),
            target_id=target_id,
            old_kek=lambda generation_id: self._old_kek(
                tenant, generation_id, recovery=recovery, job=job
            ),
            context=context,
            batch=self.rewrap_batch,
        )
        self.keys.finish_rewrap(
            context,
            policy_id=policy_id,
            target_id=target_id,
            done=done,
            operation=(
                "SPODataEncryptionPolicyRegistered"
                if job.kind == REGISTER_JOB
                else "SPODataEncryptionPolicyRollComplete"
            ),
            details={"tenant": tenant, "recovery": recovery},
        )

    # ------------------------------------------------------------------ data purge path

    def request_purge(
        self, actor: Actor, tenant: str, *, reason: str, contact: str
    ) -> FilesPolicyStatus:
        """Start the files data purge path; refused while the SharePoint principal still holds
        wrapKey or unwrapKey on either vault."""
        tenant = tenant.lower()
        self._may_manage(actor, tenant)
        with self.db.transaction() as session:
            status = self._policy_for_change(session, tenant)
            if status.job_state in _ACTIVE:
                raise Conflict(
                    f"Job {status.job_id} ({status.state}) of tenant '{tenant}' is still running; "
                    "wait for it before requesting a purge."
                )
        assert status.policy_id is not None
        self.policies.request_purge(
            actor,
            tenant,
            status.policy_id,
            reason=reason,
            contact=contact,
            workload_principal=SHAREPOINT.app_id,
        )
        return self.status(actor, tenant)

    def approve_purge(self, actor: Actor, tenant: str, approver: str) -> Job:
        """A second tenant admin signs off; the purge job then destroys the TIK generations,
        site keys, chunk keys and blobs of every site of the tenant."""
        tenant = tenant.lower()
        with self.db.transaction() as session:
            policy = self._policy_row(session, tenant)
            if policy is None or policy.state != "purge-requested":
                raise Conflict(
                    f"Tenant '{tenant}' has no permanent data purge of its files requested."
                )
            signer = approving_actor(
                session,
                actor,
                approver,
                tenant=tenant,
                requested_by_id=policy.purge_requested_by_id,
                requested_by_name=policy.purge_requested_by,
                requested_at=policy.purge_requested_at,
            )
            approver_id = signer.principal_id
            if self.jobs.active_for(session, PURGE_JOB, policy.id) is not None:
                raise Conflict("The purge of this tenant's files is already running.")
            policy.state = "purging"
            policy.updated_at = self._clock.now()
            job = self.jobs.enqueue(
                session,
                PURGE_JOB,
                policy.id,
                created_by=signer,
                payload=payload_dict(PurgePayload(approver=approver_id)),
            )
            self._audit.append(
                session,
                principal=signer.audit_name,
                operation="SPODataEncryptionPolicyPurgeApproved",
                request_id=actor.request_id,
                details={"tenant": tenant, "policy": policy.id, "approver": approver_id},
                tenant=tenant,
                actor_id=signer.object_id or None,
            )
            return job

    @staticmethod
    def _delete_files(session: Session, file_ids: list[str]) -> None:
        if not file_ids:
            return
        versions = select(FileVersionRow.id).where(FileVersionRow.file_id.in_(file_ids))
        session.execute(delete(FileChunkRow).where(FileChunkRow.version_id.in_(versions)))
        session.execute(delete(FileVersionRow).where(FileVersionRow.file_id.in_(file_ids)))
        session.execute(delete(FileRow).where(FileRow.id.in_(file_ids)))

    def run_purge(self, job: Job, context: JobContext) -> None:
        """Destroy every site of the tenant (chunk keys, versions, files, site keys, blobs), one
        site per transaction, then every TIK generation and the availability key
        (``keys.purge``: idempotent, so a rerun after a crash ends as one run would)."""
        run_purge(
            job,
            context,
            PurgeSteps(
                containers=self._purge_targets,
                purge_container=self._purge_site,
                delete_blobs=lambda site_id: self.blobs.delete_prefix(
                    blob_names.site_folder(site_id)
                ),
                container_operation="SitePurged",
                final_operation="SPODataEncryptionPolicyPurged",
                count_name="sites",
                on_purged=self._free_policy_name,
            ),
            db=self.db,
            audit=self._audit,
            policies=self.policies,
            clock=self._clock,
        )

    @staticmethod
    def _purge_targets(session: Session, policy: PolicyRow, generation_ids: list[str]) -> list[str]:
        """The tenant's sites still standing, and every site with a key under one of the
        policy's generations (those a first run purged already)."""
        standing = session.scalars(
            select(SiteRow.id).where(
                SiteRow.tenant_id == policy.tenant_id, SiteRow.state != "purged"
            )
        )
        keyed = session.scalars(
            select(SiteKeyRow.site_id).where(SiteKeyRow.generation_id.in_(generation_ids))
        )
        return sorted(set(standing) | set(keyed))

    def _purge_site(self, session: Session, site_id: str) -> dict[str, object] | None:
        site = session.get(SiteRow, site_id)
        assert site is not None
        if site.state == "purged":
            return None
        self._delete_files(
            session, list(session.scalars(select(FileRow.id).where(FileRow.site_id == site_id)))
        )
        now = self._clock.now()
        for key in session.scalars(select(SiteKeyRow).where(SiteKeyRow.site_id == site_id)):
            key.wrapped = None
            key.state = "destroyed"
            key.destroyed_at = now
            key.updated_at = now
        old_url = site.url
        site.url = f"purged:{site.id}"  # frees the URL for a new site
        site.state = "purged"
        site.updated_at = now
        return {"site": site_id, "url": old_url}

    @staticmethod
    def _free_policy_name(_session: Session, policy: PolicyRow) -> None:
        # The tenant may register a new files policy one day; this one keeps its record.
        policy.name = f"{FILES_POLICY_NAME}-purged-{policy.id[:8]}"
        policy.name_lower = policy.name.lower()

    # ------------------------------------------------------------------ sites

    def create_site(
        self, actor: Actor, url: str, *, title: str | None = None, tenant: str | None = None
    ) -> Site:
        canonical, url_tenant, kind = parse_site_url(url, self.domain)
        if tenant is not None and tenant.lower() != url_tenant:
            raise BadParameter(f"The site {canonical} belongs to tenant '{url_tenant}'.")
        self._may_manage(actor, url_tenant)
        name = canonical.rsplit("/", 1)[-1] if canonical.count("/") > 2 else url_tenant
        title = (title if title is not None else name).strip()
        if not title or len(title) > 256:
            raise BadParameter("A site title is 1 to 256 characters.")

        def check(session: Session) -> str | None:
            if session.get(TenantRow, url_tenant) is None:
                raise NotFound(f"No tenant named '{url_tenant}'.")
            if session.scalar(select(SiteRow).where(SiteRow.url == canonical)) is not None:
                raise Conflict(f"A site {canonical} already exists.")
            policy = self._policy_row(session, url_tenant)
            if policy is None:
                return None
            if policy.state != "active":
                raise Conflict(
                    f"A permanent data purge of tenant '{url_tenant}''s files is requested; no "
                    "new sites can be created."
                )
            current = self._current_generation(session, policy.id)
            if current is None:
                raise Conflict("The tenant's files policy has no usable key generation.")
            return current.id

        with self.db.transaction() as session:
            generation_id = check(session)
        site_key = self._rng.token_bytes(32)
        wrapped = aes_kwp_wrap(
            self.keys.kek(url_tenant, generation_id, request_id=actor.request_id), site_key
        )
        now = self._clock.now()
        with self.db.transaction() as session:
            if check(session) != generation_id:
                raise Conflict("The tenant's files keys changed meanwhile; try again.")
            site_id = self._uuid()
            row = SiteRow(
                id=site_id,
                tenant_id=url_tenant,
                url=canonical,
                title=title,
                kind=kind,
                state="active",
                created_at=now,
                updated_at=now,
            )
            session.add(row)
            session.flush()
            key = SiteKeyRow(
                id=self._uuid(),
                site_id=site_id,
                seq=1,
                generation_id=generation_id,
                wrapped=wrapped,
                state="active",
                created_at=now,
                updated_at=now,
            )
            session.add(key)
            session.flush()
            row.current_key_id = key.id
            self._audit.append(
                session,
                tenant=url_tenant,
                principal=actor.audit_name,
                actor_id=actor.object_id or None,
                operation="SiteCreate",
                request_id=actor.request_id,
                details={
                    "site": site_id,
                    "url": canonical,
                    "tenant": url_tenant,
                    "generation": generation_id,
                },
            )
            return self._site_view(session, row)

    def get_site(self, actor: Actor, url: str) -> Site:
        with self.db.transaction() as session:
            row = self._site_row(session, url)
            self._may_manage(actor, row.tenant_id)
            return self._site_view(session, row)

    def list_sites(self, actor: Actor, tenant: str) -> list[Site]:
        tenant = tenant.lower()
        self._may_manage(actor, tenant)
        with self.db.transaction() as session:
            rows = session.scalars(
                select(SiteRow)
                .where(SiteRow.tenant_id == tenant, SiteRow.state == "active")
                .order_by(SiteRow.url)
            )
            return [self._site_view(session, r) for r in rows]

    def site_status(self, actor: Actor, url: str) -> SiteEncryptionStatus:
        """Get-SPOSiteDataEncryptionPolicy: the state of one site."""
        with self.db.transaction() as session:
            row = self._site_row(session, url)
            self._may_manage(actor, row.tenant_id)
            site = self._site_view(session, row)
            policy = self._policy_row(session, row.tenant_id)
            if policy is None:
                return SiteEncryptionStatus(site, "Unregistered", None, None, None)
            current = self._current_generation(session, policy.id)
            current_id = current.id if current else None
            if policy.state == "purge-requested":
                state = "PurgeRequested"
            elif policy.state == "purging":
                state = "Purging"
            elif site.generation_id is not None and site.generation_id == current_id:
                state = "Registered"
            elif site.generation_id is None:
                state = "Registering"
            else:
                state = "Rolling"
            return SiteEncryptionStatus(site, state, policy.id, site.generation_id, current_id)

    # ------------------------------------------------------------------ files

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

    def upload(
        self,
        actor: Actor,
        site_url: str,
        path: str,
        src: BinaryIO,
        *,
        size_hint: int | None = None,
        progress: Progress | None = None,
    ) -> FileVersion:
        """Store what ``src`` yields until EOF as a new version of the file at ``path`` (a new
        file when there is none), streaming: one chunk key and a few segment buffers in memory
        whatever the size. Nothing is visible until every chunk is stored."""
        norm = normalize_path(path)
        with self.db.transaction() as session:
            site = self._site_row(session, site_url)
            self._may_manage(actor, site.tenant_id)
            key = session.get(SiteKeyRow, site.current_key_id) if site.current_key_id else None
            if key is None or key.wrapped is None:
                raise Conflict(f"Site {site.url} has no usable key.")
            existing = session.scalar(
                select(FileRow.id).where(
                    FileRow.site_id == site.id, FileRow.active_path == norm.lower()
                )
            )
            tenant, site_id, url = site.tenant_id, site.id, site.url
            key_id, key_seq, generation_id, wrapped = (
                key.id,
                key.seq,
                key.generation_id,
                key.wrapped,
            )
        site_key = self._unwrap_site_key(tenant, generation_id, wrapped, actor.request_id)
        file_id = existing or self._uuid()
        version_id = self._uuid()
        prefix = blob_names.version_folder(site_id, file_id, version_id)
        source = _Source(src)
        chunks: list[FileChunkRow] = []
        size = 0
        sealed_total = 0
        try:
            position = 0
            while position == 0 or not source.at_eof():
                chunk_id = self._uuid()
                chunk_key = self._rng.token_bytes(32)
                reader = _ChunkReader(source, self.chunk_size)
                blob = blob_names.chunk_blob(prefix, position)
                context = chunk_context(tenant, site_id, file_id, version_id, position, chunk_id)

                def fill(
                    handle: BinaryIO,
                    chunk_key: bytes = chunk_key,
                    reader: _ChunkReader = reader,
                    chunk_id: str = chunk_id,
                    context: dict[str, str] = context,
                ) -> None:
                    seal_stream(
                        chunk_key,
                        reader,  # type: ignore[arg-type]
                        handle,
                        key_id=chunk_id,
                        key_version=str(key_seq),
                        context=context,
                        segment_size=self.segment_size,
                        rng=self._rng,
                    )

                sealed = self.blobs.write(blob, fill)
                chunks.append(
                    FileChunkRow(
                        id=chunk_id,
                        version_id=version_id,
                        position=position,
                        site_key_id=key_id,
                        wrapped_key=aes_kwp_wrap(site_key, chunk_key),
                        blob=blob,
                        size=reader.count,
                        sealed_size=sealed,
                    )
                )
                size += reader.count
                sealed_total += sealed
                position += 1
                if progress is not None:
                    progress(size, size_hint)
                if reader.count < self.chunk_size:
                    break
            with self.db.transaction() as session:
                version = self._store_version(
                    session,
                    actor,
                    site_id,
                    url,
                    key_id,
                    file_id,
                    existing,
                    norm,
                    version_id,
                    size,
                    sealed_total,
                    chunks,
                )
        except BaseException:
            self.blobs.delete_prefix(prefix)
            raise
        return version

    def _store_version(
        self,
        session: Session,
        actor: Actor,
        site_id: str,
        site_url: str,
        key_id: str,
        file_id: str,
        existing: str | None,
        path: str,
        version_id: str,
        size: int,
        sealed_size: int,
        chunks: list[FileChunkRow],
    ) -> FileVersion:
        site = session.get(SiteRow, site_id)
        if site is None or site.state != "active" or site.current_key_id != key_id:
            raise Conflict(f"Site {site_url} changed during the upload; upload again.")
        key = session.get(SiteKeyRow, key_id)
        if key is None or key.state != "active":
            raise Conflict(f"Site {site_url}'s key was destroyed during the upload.")
        # An upload that stalled for longer than the blob sweep's grace may have had its
        # first chunks taken for a killed upload's orphans: never commit a version without them.
        if any(not self.blobs.exists(chunk.blob) for chunk in chunks):
            raise Conflict(
                f"Chunks of '{path}' were removed while the upload stalled; upload again."
            )
        now = self._clock.now()
        if existing is not None:
            row = session.get(FileRow, existing)
            if row is None or row.state != "active":
                raise Conflict(f"'{path}' was deleted during the upload; upload again.")
        else:
            taken = session.scalar(
                select(FileRow.id).where(
                    FileRow.site_id == site_id, FileRow.active_path == path.lower()
                )
            )
            if taken is not None:
                raise Conflict(f"'{path}' was created by someone else meanwhile; upload again.")
            row = FileRow(
                id=file_id,
                site_id=site_id,
                path=path,
                path_lower=path.lower(),
                active_path=path.lower(),
                state="active",
                current_version=0,
                created_by=actor.principal_id,
                created_at=now,
                updated_at=now,
            )
            session.add(row)
            session.flush()
        number = (
            int(
                session.scalar(
                    select(func.max(FileVersionRow.number)).where(FileVersionRow.file_id == row.id)
                )
                or 0
            )
            + 1
        )
        version = FileVersionRow(
            id=version_id,
            file_id=row.id,
            number=number,
            size=size,
            sealed_size=sealed_size,
            chunk_size=self.chunk_size,
            chunk_count=len(chunks),
            created_by=actor.principal_id,
            created_at=now,
        )
        session.add(version)
        session.flush()
        session.add_all(chunks)
        row.current_version = number
        row.updated_at = now
        self._audit.append(
            session,
            tenant=site.tenant_id,
            principal=actor.audit_name,
            actor_id=actor.object_id or None,
            operation="FileUploaded",
            request_id=actor.request_id,
            details={
                "site": site_id,
                "file": row.id,
                "path": path,
                "version": number,
                "size": size,
                "chunks": len(chunks),
            },
        )
        return self._version_view(version, number)

    def _read_plan(
        self,
        actor: Actor,
        site_url: str,
        ref: str,
        version: int | None,
        *,
        recycled: bool = False,
    ) -> _ReadPlan:
        with self.db.transaction() as session:
            site = self._site_row(session, site_url)
            self._may_manage(actor, site.tenant_id)
            row = self._file_row(session, site, ref, recycled=recycled)
            number = row.current_version if version is None else version
            found = session.scalar(
                select(FileVersionRow).where(
                    FileVersionRow.file_id == row.id, FileVersionRow.number == number
                )
            )
            if found is None:
                raise FileNotFound(f"'{row.path}' in {site.url} has no version {number}.")
            chunks = [
                _Chunk(c.id, c.position, c.site_key_id, c.wrapped_key, c.blob, c.size)
                for c in session.scalars(
                    select(FileChunkRow)
                    .where(FileChunkRow.version_id == found.id)
                    .order_by(FileChunkRow.position)
                )
            ]
            site_keys = {
                k.id: (k.generation_id, k.wrapped)
                for k in session.scalars(
                    select(SiteKeyRow).where(SiteKeyRow.id.in_({c.site_key_id for c in chunks}))
                )
            }
            plan = _ReadPlan(
                tenant=site.tenant_id,
                site_id=site.id,
                file_id=row.id,
                version=self._version_view(found, row.current_version),
                chunks=chunks,
                site_keys=site_keys,
            )
        # A missing, extra or misnumbered chunk row: the version is not what was stored.
        if [c.position for c in chunks] != list(range(found.chunk_count)):
            raise DecryptionFailed()
        if sum(c.size for c in chunks) != found.size:
            raise DecryptionFailed()
        return plan

    def _chunk_keys(self, plan: _ReadPlan, request_id: str | None) -> Callable[[_Chunk], bytes]:
        site_keys: dict[str, bytes] = {}

        def chunk_key(chunk: _Chunk) -> bytes:
            if chunk.site_key_id not in site_keys:
                generation_id, wrapped = plan.site_keys.get(chunk.site_key_id, (None, None))
                site_keys[chunk.site_key_id] = self._unwrap_site_key(
                    plan.tenant, generation_id, wrapped, request_id
                )
            if chunk.wrapped_key is None:
                raise KeyAccessDenied("This file's keys have been destroyed; it is gone.")
            return aes_kwp_unwrap(site_keys[chunk.site_key_id], chunk.wrapped_key)

        return chunk_key

    def _open_chunk(self, plan: _ReadPlan, chunk: _Chunk, key: bytes, dst: BinaryIO) -> None:
        context = chunk_context(
            plan.tenant, plan.site_id, plan.file_id, plan.version.id, chunk.position, chunk.id
        )
        counter = _Counting(dst)
        try:
            with self.blobs.open(chunk.blob) as handle:
                open_stream(key, handle, counter, context=context)  # type: ignore[arg-type]
        except FileNotFoundError:
            raise DecryptionFailed() from None
        if counter.count != chunk.size:
            raise DecryptionFailed()

    def prepare_download(
        self,
        actor: Actor,
        site_url: str,
        path: str,
        *,
        version: int | None = None,
        recycled: bool = False,
    ) -> PreparedDownload:
        """Find a version (the current one by default) and unwrap its site key, so that every
        error but a damaged chunk shows before anything is written."""
        plan = self._read_plan(actor, site_url, path, version, recycled=recycled)
        chunk_key = self._chunk_keys(plan, actor.request_id)
        if plan.chunks:
            chunk_key(plan.chunks[0])

        def write(dst: BinaryIO, progress: Progress | None) -> None:
            done = 0
            for chunk in plan.chunks:
                self._open_chunk(plan, chunk, chunk_key(chunk), dst)
                done += chunk.size
                if progress is not None:
                    progress(done, plan.version.size)

        return PreparedDownload(plan.version, write)

    def download(
        self,
        actor: Actor,
        site_url: str,
        path: str,
        dst: BinaryIO,
        *,
        version: int | None = None,
        recycled: bool = False,
        progress: Progress | None = None,
    ) -> FileVersion:
        """Write a version (the current one by default) of a file to ``dst``, streaming.

        Every byte written is authenticated first; but when this raises (a tampered, missing or
        truncated chunk: ``DecryptionFailed``) ``dst`` may already hold the earlier chunks, and
        the caller must discard it (the CLI writes to a temporary file and renames it)."""
        prepared = self.prepare_download(actor, site_url, path, version=version, recycled=recycled)
        prepared.write_to(dst, progress)
        return prepared.version

    def iter_download(
        self,
        actor: Actor,
        site_url: str,
        path: str,
        *,
        version: int | None = None,
    ) -> tuple[FileVersion, Iterator[bytes]]:
        """The version and an iterator of its plaintext, one authenticated chunk at a time
        (at most ``chunk_size`` bytes in memory): for the HTTP API's streamed responses."""
        plan = self._read_plan(actor, site_url, path, version)
        chunk_key = self._chunk_keys(plan, actor.request_id)
        first = chunk_key(plan.chunks[0]) if plan.chunks else b""

        def chunks() -> Iterator[bytes]:
            for index, chunk in enumerate(plan.chunks):
                key = first if index == 0 else chunk_key(chunk)
                buffer = BytesIO()
                self._open_chunk(plan, chunk, key, buffer)
                yield buffer.getvalue()

        return plan.version, chunks()

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
