"""Mail stores staged into the blob store, so that an import job runs on any host.

Before an import job is queued, the command that starts it (``ImportsMixin.start_import``)
streams the mail store (an mbox file, a Maildir, an ``.eml`` file or a folder of them) into
the blob store, message by message, as sealed chunks; the job's payload then names the staging
instead of a local path, and any worker on any host reads the messages from there. This module
owns:

- the staging rows (``MailImportStagingRow``): which store (path, format, signature) was
  staged for which mailbox, how far (``chunks``, ``messages``, ``bytes``; ``chunk_starts``:
  the index of each chunk's first message), whether it is complete, which job uses it;
- the staged objects ``mail-staging/<mailbox id>/<staging id>/<n>`` (``n``: six digits, from
  000000) and their wire format (below);
- the import's data key, and the sweep's view of the staged objects (``StagedImports``).

Staging holds one chunk (``chunk_bytes``, 4 MiB by default, plus the message that crossed it)
in memory, never the store. It is resumable: each chunk is written, then committed to the row
with the count of messages it holds, so a killed staging (or the same command run again)
goes on from the last committed chunk (the store is read again past the messages already
staged, after its signature has been checked unchanged); a chunk written but not committed is
written again under the same name.

Keys: each staging has a data key of its own (32 random bytes), sealed (``crypto.aead``) under
the mailbox key current when the staging began (``key_id``), bound to tenant, mailbox and
staging. Opening the staged copy needs the mailbox key, so it needs the tenant's DEP (or the
service-managed key): revoking the customer key makes the staged copy unreadable, exactly as
the mailbox's items. A staging whose mailbox key was destroyed meanwhile (a re-key finished)
is unreadable too; the import then fails for good and, started again, stages anew.

Wire format, version 1. A chunk's plaintext (integers unsigned big-endian unless said)::

    offset  size  field
    0       4     magic b"CKMS"
    4       1     version, 0x01
    5       8     index of the chunk's first message in the store (0-based)
    13      4     N, the number of messages in the chunk
    17      ...   N records, each:
                    2   F, length of the folder name
                    F   folder name, UTF-8
                    8   envelope date: signed, microseconds since 1970-01-01 UTC;
                        -2**63 when the message has none
                    8   L, length of the message
                    L   the message's bytes, exactly as the store holds them

A chunk holds at least one message; a new chunk begins once the plaintext reaches
``chunk_bytes``. The stored object is that plaintext sealed as one ``crypto.aead`` envelope
under the data key, with key id = the staging id, key version = the chunk number, and context
``{"purpose": "mail-import-staging", "tenant", "mailbox", "staging", "chunk"}``, so a chunk
cannot be moved to another staging, position or tenant. The data key is sealed likewise under
the mailbox key (key id = the mailbox key's id, version = its sequence number, context
``{"purpose": "mail-import-staging-key", "tenant", "mailbox", "staging"}``).

The staging is deleted (objects, then row: ``discard``) by the import job once it has stored
every message, or when it fails for good on an error of its own (a permanent one: the copy
unreadable, the mailbox gone). The blob sweep (``StagedImports``) removes, past its grace, the
objects and rows of stagings nobody will use: never queued (a staging killed and not run
again), or whose job ended otherwise (failed after its retries, cancelled and not started
again) before the grace began. A cancelled import keeps its copy meanwhile; started again
after the sweep removed it, it is staged anew under the same id and goes on from its
checkpoint.
"""

from __future__ import annotations

import bisect
import io
import re
import struct
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import ColumnElement, delete, or_, select
from sqlalchemy.orm import Session

from customerkey.clock import Clock
from customerkey.crypto.aead import open_sealed, open_stream, seal, seal_stream
from customerkey.errors import DecryptionFailed
from customerkey.jobs.queue import ACTIVE
from customerkey.keys.containers import ContainerKeyDestroyed, ContainerKeys
from customerkey.rng import Rng
from customerkey.storage.blob_store import BlobStore
from customerkey.storage.database import Database
from customerkey.storage.models import JobRow, MailboxKeyRow, MailImportStagingRow
from customerkey.workloads.mail import formats

PREFIX = "mail-staging"
CHUNK_BYTES = 4 * 1024 * 1024
MAGIC = b"CKMS"
VERSION = 1
_HEAD = struct.Struct(">4sBQI")
_FOLDER = struct.Struct(">H")
_MESSAGE = struct.Struct(">qQ")
NO_ENVELOPE = -(2**63)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_CHUNK = re.compile(r"^[0-9]{6}$")

StagingProgress = Callable[[int, int | None], None]  # (messages staged, messages in all)


class StagedCopyUnreadable(DecryptionFailed):
    """The staged copy cannot be opened: its mailbox key is gone, or it was tampered with."""


@dataclass(frozen=True)
class MailboxKey:
    """The mailbox key a staging's data key is sealed under (a ``MailboxKeyRow``'s fields)."""

    id: str
    seq: int
    generation_id: str | None
    wrapped: bytes | None


@dataclass(frozen=True)
class Staging:
    """A staging row as it stood when read."""

    id: str
    mailbox_id: str
    tenant: str
    source: str
    format: str
    signature: str
    key_id: str
    sealed_key: bytes
    chunks: int
    chunk_starts: tuple[int, ...]
    messages: int
    bytes: int
    complete: bool
    job_id: str | None

    @property
    def folder(self) -> str:
        return staging_folder(self.mailbox_id, self.id)

    def chunk_names(self) -> list[str]:
        return [chunk_blob(self.mailbox_id, self.id, n) for n in range(self.chunks)]


def _staging(row: MailImportStagingRow) -> Staging:
    return Staging(
        id=row.id,
        mailbox_id=row.mailbox_id,
        tenant=row.tenant_id,
        source=row.source,
        format=row.format,
        signature=row.signature,
        key_id=row.key_id,
        sealed_key=row.sealed_key,
        chunks=row.chunks,
        chunk_starts=tuple(int(n) for n in row.chunk_starts),
        messages=row.messages,
        bytes=row.bytes,
        complete=row.complete,
        job_id=row.job_id,
    )


def staging_folder(mailbox_id: str, staging_id: str) -> str:
    return f"{PREFIX}/{mailbox_id}/{staging_id}"


def chunk_blob(mailbox_id: str, staging_id: str, n: int) -> str:
    return f"{PREFIX}/{mailbox_id}/{staging_id}/{n:06d}"


def chunk_context(staging: Staging, n: int) -> dict[str, str]:
    return {
        "purpose": "mail-import-staging",
        "tenant": staging.tenant,
        "mailbox": staging.mailbox_id,
        "staging": staging.id,
        "chunk": str(n),
    }


def key_context(tenant: str, mailbox_id: str, staging_id: str) -> dict[str, str]:
    return {
        "purpose": "mail-import-staging-key",
        "tenant": tenant,
        "mailbox": mailbox_id,
        "staging": staging_id,
    }


def _micros(when: datetime | None) -> int:
    if when is None:
        return NO_ENVELOPE
    return (when - _EPOCH) // timedelta(microseconds=1)


def _when(micros: int) -> datetime | None:
    return None if micros == NO_ENVELOPE else _EPOCH + timedelta(microseconds=micros)


def encode_record(folder: str, message: bytes, envelope: datetime | None) -> bytes:
    name = folder.encode("utf-8")[:65535]
    return _FOLDER.pack(len(name)) + name + _MESSAGE.pack(_micros(envelope), len(message)) + message


def decode_chunk(
    plaintext: bytes | memoryview,
) -> tuple[int, list[tuple[str, bytes, datetime | None]]]:
    """(index of the first message, its records) of a chunk's plaintext; ``ValueError`` when
    it is not one."""
    view = memoryview(plaintext)
    if len(view) < _HEAD.size:
        raise ValueError("staged chunk too short")
    magic, version, first, count = _HEAD.unpack_from(view)
    if magic != MAGIC or version != VERSION:
        raise ValueError("not a staged chunk of version 1")
    records: list[tuple[str, bytes, datetime | None]] = []
    pos = _HEAD.size
    try:
        for _ in range(count):
            (flen,) = _FOLDER.unpack_from(view, pos)
            pos += _FOLDER.size
            folder = bytes(view[pos : pos + flen]).decode("utf-8")
            pos += flen
            micros, length = _MESSAGE.unpack_from(view, pos)
            pos += _MESSAGE.size
            if pos + length > len(view):
                raise ValueError("staged chunk truncated")
            records.append((folder, bytes(view[pos : pos + length]), _when(micros)))
            pos += length
    except struct.error:
        raise ValueError("staged chunk truncated") from None
    if pos != len(view):
        raise ValueError("staged chunk has trailing bytes")
    return first, records


class ImportStaging:
    """Stages mail stores into the blob store and reads them back (see the module)."""

    def __init__(
        self,
        db: Database,
        blobs: BlobStore,
        keys: ContainerKeys,
        *,
        clock: Clock,
        rng: Rng,
        chunk_bytes: int = CHUNK_BYTES,
    ) -> None:
        self.db = db
        self.blobs = blobs
        self.keys = keys
        self._clock = clock
        self._rng = rng
        self.chunk_bytes = chunk_bytes

    # ------------------------------------------------------------------ staging

    def stage(
        self,
        *,
        tenant: str,
        mailbox_id: str,
        key: MailboxKey,
        path: Path,
        fmt: str,
        signature: str,
        request_id: str | None = None,
        staging_id: str | None = None,
        total: int | None = None,
        progress: StagingProgress | None = None,
    ) -> Staging:
        """Stage ``path`` for an import into ``mailbox_id``, or go on with the unfinished
        staging of the same store (same path, format and signature, not yet queued; or the
        one ``staging_id`` names); returns it complete. ``key`` is the mailbox's current key,
        used for a new staging."""
        staging, data_key = self._resume(
            staging_id, tenant, mailbox_id, str(path), fmt, signature, request_id
        )
        if staging is None:
            staging, data_key = self._begin(
                staging_id, tenant, mailbox_id, key, str(path), fmt, signature, request_id
            )
        assert data_key is not None
        if not staging.complete:
            staging = self._fill(staging, data_key, path, total, progress)
        elif progress is not None:
            progress(staging.messages, staging.messages)
        return staging

    def _resume(
        self,
        staging_id: str | None,
        tenant: str,
        mailbox_id: str,
        source: str,
        fmt: str,
        signature: str,
        request_id: str | None,
    ) -> tuple[Staging | None, bytes | None]:
        with self.db.transaction() as session:
            if staging_id is not None:
                row = session.get(MailImportStagingRow, staging_id, with_for_update=True)
            else:
                row = session.scalar(
                    select(MailImportStagingRow)
                    .where(
                        MailImportStagingRow.mailbox_id == mailbox_id,
                        MailImportStagingRow.source == source,
                        MailImportStagingRow.format == fmt,
                        MailImportStagingRow.signature == signature,
                        MailImportStagingRow.job_id.is_(None),
                    )
                    .order_by(MailImportStagingRow.created_at.desc())
                    .limit(1)
                    .with_for_update()
                )
            if row is None:
                return None, None
            row.updated_at = self._clock.now()  # in use: the sweep leaves it alone
            staging = _staging(row)
        usable = staging.signature == signature and staging.tenant == tenant
        data_key = None
        if usable:
            try:
                data_key = self.data_key(staging, request_id=request_id)
            except (StagedCopyUnreadable, ContainerKeyDestroyed):
                usable = False
        if usable and set(staging.chunk_names()) <= set(self.blobs.list(staging.folder)):
            return staging, data_key
        self.discard(staging.mailbox_id, staging.id)  # unreadable or incomplete: start anew
        return None, None

    def _begin(
        self,
        staging_id: str | None,
        tenant: str,
        mailbox_id: str,
        key: MailboxKey,
        source: str,
        fmt: str,
        signature: str,
        request_id: str | None,
    ) -> tuple[Staging, bytes]:
        if staging_id is not None:  # staged anew under its old id: nothing of before is kept
            self.blobs.delete_prefix(staging_folder(mailbox_id, staging_id))
        staging_id = staging_id or str(uuid.UUID(bytes=self._rng.token_bytes(16), version=4))
        data_key = self._rng.token_bytes(32)
        mailbox_key = self.keys.unwrap(
            tenant, key.generation_id, key.wrapped, request_id=request_id
        )
        sealed_key = seal(
            mailbox_key,
            data_key,
            key_id=key.id,
            key_version=str(key.seq),
            context=key_context(tenant, mailbox_id, staging_id),
            rng=self._rng,
        )
        now = self._clock.now()
        with self.db.transaction() as session:
            row = MailImportStagingRow(
                id=staging_id,
                mailbox_id=mailbox_id,
                tenant_id=tenant,
                source=source[:1024],
                format=fmt,
                signature=signature,
                key_id=key.id,
                sealed_key=sealed_key,
                chunks=0,
                chunk_starts=[],
                messages=0,
                bytes=0,
                complete=False,
                job_id=None,
                created_at=now,
                updated_at=now,
            )
            session.add(row)
            session.flush()
            return _staging(row), data_key

    def _fill(
        self,
        staging: Staging,
        data_key: bytes,
        path: Path,
        total: int | None,
        progress: StagingProgress | None,
    ) -> Staging:
        """Stage the store's messages past those already committed, a chunk at a time."""
        chunk = io.BytesIO()
        first = staging.messages
        count = 0
        size = 0

        def start() -> None:
            chunk.seek(0)
            chunk.truncate()
            chunk.write(_HEAD.pack(MAGIC, VERSION, first, 0))

        def commit() -> None:
            nonlocal staging, first, count, size
            chunk.getbuffer()[: _HEAD.size] = _HEAD.pack(MAGIC, VERSION, first, count)
            staging = self._commit_chunk(staging, data_key, chunk, first, count, size)
            if progress is not None:
                progress(staging.messages, total)
            first, count, size = first + count, 0, 0
            start()

        start()
        if progress is not None:
            progress(staging.messages, total)
        for folder, message, envelope in formats.read_entries(
            path, staging.format, skip=staging.messages
        ):
            chunk.write(encode_record(folder, message, envelope))
            count += 1
            size += len(message)
            if chunk.tell() >= self.chunk_bytes:
                commit()
        if count:
            commit()
        with self.db.transaction() as session:
            row = session.get(MailImportStagingRow, staging.id, with_for_update=True)
            if row is None:
                raise StagedCopyUnreadable("The staged copy was removed while it was staged.")
            row.complete = True
            row.updated_at = self._clock.now()
            return _staging(row)

    def _commit_chunk(
        self,
        staging: Staging,
        data_key: bytes,
        chunk: io.BytesIO,
        first: int,
        count: int,
        size: int,
    ) -> Staging:
        n = staging.chunks
        name = chunk_blob(staging.mailbox_id, staging.id, n)
        chunk.seek(0)
        self.blobs.write(
            name,
            lambda out: seal_stream(
                data_key,
                chunk,
                out,
                key_id=staging.id,
                key_version=str(n),
                context=chunk_context(staging, n),
                rng=self._rng,
            ),
        )
        with self.db.transaction() as session:
            row = session.get(MailImportStagingRow, staging.id, with_for_update=True)
            if row is None or row.chunks != n:
                raise StagedCopyUnreadable(
                    "Another process staged this store at the same time; run the import again."
                )
            row.chunks = n + 1
            row.chunk_starts = [*row.chunk_starts, first]
            row.messages = first + count
            row.bytes = row.bytes + size
            row.updated_at = self._clock.now()
            return _staging(row)

    def attach(self, session: Session, staging_id: str, job_id: str) -> None:
        """Record (in the caller's transaction, which queues the job) which job uses it."""
        row = session.get(MailImportStagingRow, staging_id, with_for_update=True)
        if row is None:
            raise StagedCopyUnreadable("The staged copy was removed before its job was queued.")
        row.job_id = job_id
        row.updated_at = self._clock.now()

    # ------------------------------------------------------------------ reading

    def get(self, staging_id: str) -> Staging | None:
        with self.db.read() as session:
            row = session.get(MailImportStagingRow, staging_id)
            return _staging(row) if row is not None else None

    def data_key(self, staging: Staging, *, request_id: str | None = None) -> bytes:
        """The staging's data key, opened under its mailbox key (``ContainerKeyDestroyed``
        when that key is gone; ``StagedCopyUnreadable`` when it does not open)."""
        with self.db.read() as session:
            key = session.get(MailboxKeyRow, staging.key_id)
            if key is None or key.mailbox_id != staging.mailbox_id:
                raise StagedCopyUnreadable("The staged copy's mailbox key is gone.")
            generation_id, wrapped = key.generation_id, key.wrapped
        mailbox_key = self.keys.unwrap(
            staging.tenant, generation_id, wrapped, request_id=request_id
        )
        try:
            return open_sealed(
                mailbox_key,
                staging.sealed_key,
                context=key_context(staging.tenant, staging.mailbox_id, staging.id),
            )
        except DecryptionFailed:
            raise StagedCopyUnreadable("The staged copy's key does not open.") from None

    def entries(
        self, staging: Staging, data_key: bytes, start: int = 0
    ) -> Iterator[tuple[int, str, bytes, datetime | None]]:
        """``(index, folder, message, envelope date)`` of every staged message from index
        ``start`` on, one chunk in memory at a time."""
        if start >= staging.messages:
            return
        begin = max(0, bisect.bisect_right(staging.chunk_starts, start) - 1)
        for n in range(begin, staging.chunks):
            plain = io.BytesIO()
            with self.blobs.open(chunk_blob(staging.mailbox_id, staging.id, n)) as src:
                try:
                    open_stream(data_key, src, plain, context=chunk_context(staging, n))
                except DecryptionFailed:
                    raise StagedCopyUnreadable(f"Staged chunk {n} does not open.") from None
            first, records = decode_chunk(plain.getbuffer())
            if first != staging.chunk_starts[n]:
                raise StagedCopyUnreadable(f"Staged chunk {n} is not the one recorded.")
            del plain
            for offset, (folder, message, envelope) in enumerate(records):
                if first + offset >= start:
                    yield first + offset, folder, message, envelope

    # ------------------------------------------------------------------ removal

    def discard(self, mailbox_id: str, staging_id: str) -> None:
        """Delete a staging: its objects, then its row (both may be gone already)."""
        self.blobs.delete_prefix(staging_folder(mailbox_id, staging_id))
        with self.db.transaction() as session:
            session.execute(
                delete(MailImportStagingRow).where(MailImportStagingRow.id == staging_id)
            )


def _kept(now_cutoff: datetime) -> ColumnElement[bool]:
    """The staging rows somebody may still use: queued or running jobs', and those whose job
    ended (or, never queued, which were touched) after ``now_cutoff``."""
    active_job = select(JobRow.id).where(
        JobRow.id == MailImportStagingRow.job_id,
        or_(JobRow.state.in_(ACTIVE), JobRow.finished_at >= now_cutoff),
    )
    return or_(active_job.exists(), MailImportStagingRow.updated_at >= now_cutoff)


class StagedImports:
    """The sweep's view of ``mail-staging/``: a unit is one staging's folder, referenced while
    somebody may still use it (``_kept``); ``prune_rows`` deletes the rows of the others."""

    prefix = PREFIX
    units_are_folders = True

    def __init__(self, clock: Clock, grace: timedelta) -> None:
        self._clock = clock
        self.grace = grace

    def unit_of(self, name: str) -> str | None:
        parts = name.split("/")
        if len(parts) != 4 or parts[0] != PREFIX or not _CHUNK.match(parts[3]):
            return None
        return "/".join(parts[:3])

    def referenced(self, session: Session, folder: str, units: Iterable[str]) -> set[str]:
        ids = {unit.split("/")[2] for unit in units}
        cutoff = self._clock.now() - self.grace
        rows = session.scalars(
            select(MailImportStagingRow).where(
                MailImportStagingRow.id.in_(ids),
                _kept(cutoff),
            )
        )
        return {name for row in rows for name in _staging(row).chunk_names()}

    def prune_rows(self, session: Session, cutoff: datetime) -> int:
        """Delete the rows of the stagings nobody will use (their objects are the sweep's)."""
        abandoned = list(session.scalars(select(MailImportStagingRow.id).where(~_kept(cutoff))))
        if abandoned:
            session.execute(
                delete(MailImportStagingRow).where(MailImportStagingRow.id.in_(abandoned))
            )
        return len(abandoned)
