"""The ``BlobStore`` protocol: what the workloads and the blob sweep may ask of a blob store, and
how each operation fails. Two stores implement it: ``storage.blobs.LocalBlobStore`` (a local
folder, the default) and ``storage.s3_blobs.S3BlobStore`` (an S3-compatible bucket).

This module owns the choice of store (``open_blob_store``, from the settings), blob names
(``check_name``: relative ``/``-separated paths of safe characters chosen by the service,
never by users), ``BlobInfo`` and the failure contract every store keeps:

- A bad name raises ``ValueError`` before the store is touched.
- Reading a blob that does not exist (``open``, ``read_bytes``, ``size``) raises
  ``FileNotFoundError``; ``exists`` and ``delete`` answer False instead.
- A store that cannot be reached (network, credentials refused, the server failing) raises
  ``BlobStoreUnavailable`` (503, ``ServiceUnavailable``); the operation may be retried. Its
  message names the operation and the store, never a credential.
- ``write`` is all or nothing: until it returns, no reader sees the new content; when ``fill``
  raises (or the process dies), the old blob (or none) stays. What a killed writer leaves is
  invisible to readers and listings and is the sweep's to remove: a local staging file of a
  dead pid (``remove_dead_temp_files``), an incomplete S3 multipart upload older than the
  sweep's grace (``abort_stale_uploads``).
- A write streams: a store holds at most a bounded buffer (one part), never a whole blob.
- Listings (``list``, ``iter_folders``, ``iter_blobs``) are scoped to a prefix (a folder name,
  matched whole: ``a`` never lists ``ab/x``) and paged, never a whole store in memory; within
  ``iter_blobs`` everything under one sub-folder comes before anything of the next.
"""

from __future__ import annotations

import builtins
import re
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, Protocol

from customerkey.errors import ServiceUnavailable

if TYPE_CHECKING:
    from customerkey.config import Settings

NAME = re.compile(r"^[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*$")
PART = re.compile(r"^[A-Za-z0-9._-]+$")


def check_name(name: str) -> str:
    """``name`` when it is a safe blob name (or folder prefix); ``ValueError`` otherwise."""
    if not NAME.match(name) or any(part in (".", "..") for part in name.split("/")):
        raise ValueError(f"unsafe blob name {name!r}")
    return name


class BlobStoreUnavailable(ServiceUnavailable):
    """The blob store could not be reached or refused us (not a missing blob): nothing was
    changed that a retry would not redo."""


@dataclass(frozen=True)
class BlobInfo:
    """One object of a store: a blob, or (``writer_pid`` set) a local writer's staging file,
    or (from ``abort_stale_uploads``) an incomplete upload."""

    name: str  # relative to the store's root, "/"-separated
    size: int
    mtime: datetime  # last modification, timezone-aware UTC
    writer_pid: int | None = None

    @property
    def is_staging(self) -> bool:
        return self.writer_pid is not None


class BlobStore(Protocol):
    """A place for sealed content, by name. See the module docstring for the failure contract."""

    def write(self, name: str, fill: Callable[[BinaryIO], object]) -> int:
        """Create or replace blob ``name`` with what ``fill`` writes; returns its size."""
        ...

    def put_bytes(self, name: str, data: bytes) -> int: ...

    def open(self, name: str) -> AbstractContextManager[BinaryIO]:
        """A streaming reader of blob ``name``."""
        ...

    def read_bytes(self, name: str) -> bytes: ...

    def exists(self, name: str) -> bool: ...

    def size(self, name: str) -> int: ...

    def delete(self, name: str) -> bool:
        """Delete blob ``name``; says whether there was one."""
        ...

    def delete_prefix(self, prefix: str) -> None:
        """Delete every blob under folder ``prefix``."""
        ...

    def list(self, prefix: str) -> list[str]:
        """The sorted names of the blobs under folder ``prefix`` (a bounded folder: one file
        version's chunks, one mailbox's items)."""
        ...

    def iter_folders(self, prefix: str) -> Iterator[str]:
        """The folders directly under ``prefix`` (names relative to the root)."""
        ...

    def iter_blobs(self, prefix: str, *, staging: bool = False) -> Iterator[BlobInfo]:
        """Every blob under ``prefix`` (with ``staging``, local writers' staging files too)."""
        ...

    def sweep_temp_files(
        self, prefix: str, *, is_alive: Callable[[int], bool], dry_run: bool = False
    ) -> builtins.list[str]:
        """Remove the staging files under ``prefix`` of dead writers; returns their names."""
        ...

    def remove_dead_temp_files(
        self,
        staging: Iterable[BlobInfo],
        *,
        is_alive: Callable[[int], bool],
        dry_run: bool = False,
    ) -> builtins.list[BlobInfo]:
        """``sweep_temp_files`` for staging files ``iter_blobs`` has already found."""
        ...

    def abort_stale_uploads(
        self, prefix: str, older_than: datetime, *, dry_run: bool = False
    ) -> builtins.list[BlobInfo]:
        """Abort the incomplete uploads under ``prefix`` begun before ``older_than``; returns
        them (with ``dry_run``, those that would be). A store without such uploads: none."""
        ...

    def delete_unless_newer(self, name: str, older_than: datetime) -> int | None:
        """Delete blob ``name`` if it was last written before ``older_than``; the bytes freed,
        or None (no such blob, or a newer one)."""
        ...

    def remove_empty_folder(self, prefix: str) -> bool:
        """Remove folder ``prefix`` if empty; says whether it did (a store without folders:
        False)."""
        ...


def open_blob_store(settings: Settings, local_root: Path) -> BlobStore:
    """The store ``settings.blob_store`` names: the local folder ``local_root``, or the S3
    bucket of the ``s3_*`` settings."""
    if settings.blob_store == "s3":
        from customerkey.storage.s3_blobs import S3BlobStore, make_client

        assert settings.s3_bucket is not None  # the settings refuse s3 without a bucket
        return S3BlobStore(
            make_client(settings.s3_endpoint, settings.s3_region),
            settings.s3_bucket,
            prefix=settings.s3_prefix,
        )
    from customerkey.storage.blobs import LocalBlobStore

    return LocalBlobStore(local_root)
