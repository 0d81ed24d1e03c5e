"""File content in and out, streaming: an upload cuts its input into chunks, each sealed under
its own chunk key (wrapped by the site key) into a blob, and commits the version only once
every chunk is stored; a download checks the version's chunk rows against what was stored and
opens chunk after chunk, authenticating every byte before writing it."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from io import BytesIO
from typing import BinaryIO

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from customerkey.crypto.aead import open_stream, seal_stream
from customerkey.crypto.wrap import aes_kwp_unwrap, aes_kwp_wrap
from customerkey.errors import Conflict, DecryptionFailed, KeyAccessDenied
from customerkey.storage.models import FileChunkRow, FileRow, FileVersionRow, SiteKeyRow, SiteRow
from customerkey.vault.models import Actor
from customerkey.workloads.files import blobs as blob_names
from customerkey.workloads.files.base import FilesServiceBase
from customerkey.workloads.files.models import (
    FileNotFound,
    FileVersion,
    PreparedDownload,
    Progress,
    chunk_context,
)
from customerkey.workloads.files.streams import _ChunkReader, _Counting, _Source
from customerkey.workloads.files.urls import normalize_path


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


class TransfersMixin(FilesServiceBase):
    """Uploads and downloads."""

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
        site_key = self.keys.unwrap(tenant, generation_id, wrapped, request_id=actor.request_id)
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
                site_keys[chunk.site_key_id] = self.keys.unwrap(
                    plan.tenant, generation_id, wrapped, request_id=request_id
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
