"""The local blob store: ``LocalBlobStore`` keeps blobs as files under a folder (the default
``BlobStore``; the protocol and its failure contract are in ``storage.blob_store``).

Writes are atomic (a temporary file in the same folder, fsync, rename, then fsync of the
folder), so a crash leaves either the old blob or the new one, never half of one. Blob names
are relative paths of safe characters chosen by the service, never by users.

This module owns the staging-file naming: a blob ``<folder>/<name>`` being written by process
``<pid>`` is staged as ``<folder>/.<name>.<pid>.tmp`` (``temp_name`` makes the name,
``parse_temp_name`` reads it back). A writer killed mid-write leaves its staging file behind;
``sweep_temp_files`` removes those of dead writers. Walking a store (``iter_blobs``,
``iter_folders``) streams directory entries with ``os.scandir`` and never lists a whole tree
in memory. The store knows nothing of which blobs the database still references.
"""

from __future__ import annotations

import builtins
import contextlib
import os
import re
import shutil
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

from customerkey.storage.blob_store import PART as _PART
from customerkey.storage.blob_store import BlobInfo, check_name

__all__ = ["BlobInfo", "LocalBlobStore", "parse_temp_name", "temp_name"]

# Greedy: a blob name may itself contain dots and digits ("<item>.<seq>"); the pid is the
# last number before ".tmp".
_TEMP = re.compile(r"^\.(?P<name>[A-Za-z0-9._-]+)\.(?P<pid>[0-9]+)\.tmp$")
# What a sweeper renames a blob to while it decides (see ``delete_unless_newer``): a staging
# name of a blob name no service writes, so a sweeper that dies there leaves a file that
# ``sweep_temp_files`` removes, and which no writer's own staging file can collide with.
_HOLD_SUFFIX = ".sweep"


def temp_name(name: str, pid: int) -> str:
    """The staging file name of blob file ``name`` (a base name, no folder) while process
    ``pid`` writes it; it lives in the blob's folder."""
    if not _PART.match(name) or pid < 0:
        raise ValueError(f"unsafe blob file name {name!r} or pid {pid}")
    return f".{name}.{pid}.tmp"


def parse_temp_name(filename: str) -> tuple[str, int] | None:
    """``(blob base name, writer pid)`` of a staging file name made by ``temp_name``, or None
    when ``filename`` (a base name) is not one."""
    match = _TEMP.match(filename)
    if match is None:
        return None
    return match["name"], int(match["pid"])


class LocalBlobStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True, mode=0o700)

    def _make_folders(self, folder: Path) -> None:
        """Create ``folder`` and every missing folder between it and the root, each 0700
        (``mkdir(parents=True)`` would give the intermediate ones the umask's 0755)."""
        missing = []
        while folder != self.root and not folder.is_dir():
            missing.append(folder)
            folder = folder.parent
        for path in reversed(missing):
            path.mkdir(exist_ok=True, mode=0o700)

    def _path(self, name: str) -> Path:
        return self.root / check_name(name)

    def write(self, name: str, fill: Callable[[BinaryIO], object]) -> int:
        """Create or replace blob ``name`` with what ``fill`` writes; returns its size."""
        path = self._path(name)
        self._make_folders(path.parent)
        tmp = path.with_name(temp_name(path.name, os.getpid()))
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            with os.fdopen(fd, "wb") as handle:
                fill(handle)
                handle.flush()
                os.fsync(handle.fileno())
                size = handle.tell()
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        self._sync_dir(path.parent)
        return size

    def put_bytes(self, name: str, data: bytes) -> int:
        return self.write(name, lambda handle: handle.write(data))

    @contextmanager
    def open(self, name: str) -> Iterator[BinaryIO]:
        with open(self._path(name), "rb") as handle:
            yield handle

    def read_bytes(self, name: str) -> bytes:
        return self._path(name).read_bytes()

    def exists(self, name: str) -> bool:
        return self._path(name).exists()

    def size(self, name: str) -> int:
        return self._path(name).stat().st_size

    def delete(self, name: str) -> bool:
        try:
            self._path(name).unlink()
            return True
        except FileNotFoundError:
            return False

    def delete_prefix(self, prefix: str) -> None:
        path = self._path(prefix)
        if path.is_dir():
            shutil.rmtree(path)

    def list(self, prefix: str) -> list[str]:
        base = self._path(prefix)
        if not base.is_dir():
            return []
        return sorted(
            str(p.relative_to(self.root))
            for p in base.rglob("*")
            if p.is_file() and not p.name.startswith(".")
        )

    def iter_folders(self, prefix: str) -> Iterator[str]:
        """The names (relative to the root) of the folders directly under ``prefix``, in no
        particular order; nothing when ``prefix`` is not a folder."""
        base = self._path(prefix)
        try:
            with os.scandir(base) as entries:
                for entry in entries:
                    if entry.is_dir(follow_symlinks=False) and _PART.match(entry.name):
                        yield f"{prefix}/{entry.name}"
        except (FileNotFoundError, NotADirectoryError):
            return

    def iter_blobs(self, prefix: str, *, staging: bool = False) -> Iterator[BlobInfo]:
        """Every blob under ``prefix`` (with ``staging``, writers' staging files too), streamed
        depth first: everything under one sub-folder comes before anything of the next, so a
        caller can group by sub-folder as it goes. Files that vanish while the walk passes
        (deleted by someone else) are skipped; the order within a folder is the file system's."""
        yield from self._walk(self._path(prefix), prefix, staging)

    def _walk(self, folder: Path, prefix: str, staging: bool) -> Iterator[BlobInfo]:
        try:
            entries = os.scandir(folder)
        except (FileNotFoundError, NotADirectoryError):
            return
        with entries:
            for entry in entries:
                try:
                    if entry.is_dir(follow_symlinks=False):
                        if _PART.match(entry.name):
                            yield from self._walk(
                                Path(entry.path), f"{prefix}/{entry.name}", staging
                            )
                        continue
                    if not entry.is_file(follow_symlinks=False):
                        continue
                    pid: int | None = None
                    if entry.name.startswith("."):
                        parsed = parse_temp_name(entry.name)
                        if not staging or parsed is None:
                            continue
                        pid = parsed[1]
                    elif not _PART.match(entry.name):
                        continue
                    st = entry.stat(follow_symlinks=False)
                except FileNotFoundError:
                    continue
                yield BlobInfo(
                    name=f"{prefix}/{entry.name}",
                    size=st.st_size,
                    mtime=datetime.fromtimestamp(st.st_mtime, UTC),
                    writer_pid=pid,
                )

    def sweep_temp_files(
        self, prefix: str, *, is_alive: Callable[[int], bool], dry_run: bool = False
    ) -> builtins.list[str]:
        """Remove the staging files under ``prefix`` of writers that are dead (``is_alive``
        says no for their pid); returns their names (relative to the root). Staging files of
        live writers, this process's included, are left alone. With ``dry_run`` nothing is
        removed: the names are those that would have been."""
        staging = (i for i in self.iter_blobs(prefix, staging=True) if i.is_staging)
        removed = self.remove_dead_temp_files(staging, is_alive=is_alive, dry_run=dry_run)
        return [info.name for info in removed]

    def remove_dead_temp_files(
        self,
        staging: Iterable[BlobInfo],
        *,
        is_alive: Callable[[int], bool],
        dry_run: bool = False,
    ) -> builtins.list[BlobInfo]:
        """``sweep_temp_files`` for staging files a caller's own walk has already found;
        returns those removed (or, with ``dry_run``, that would be)."""
        removed: builtins.list[BlobInfo] = []
        verdicts: dict[int, bool] = {}
        for info in staging:
            pid = info.writer_pid
            if pid is None:
                continue
            if pid not in verdicts:
                verdicts[pid] = pid == os.getpid() or is_alive(pid)
            if verdicts[pid]:
                continue
            if dry_run:
                removed.append(info)
                continue
            try:
                (self.root / info.name).unlink()
            except FileNotFoundError:
                continue  # its writer finished (renamed it) or someone else removed it
            removed.append(info)
        return removed

    def abort_stale_uploads(
        self, prefix: str, older_than: datetime, *, dry_run: bool = False
    ) -> builtins.list[BlobInfo]:
        """None here: a killed local writer leaves a staging file, which
        ``remove_dead_temp_files`` removes once its pid is dead."""
        check_name(prefix)
        return []

    def delete_unless_newer(self, name: str, older_than: datetime) -> int | None:
        """Delete blob ``name`` if the file there was last modified before ``older_than``;
        returns the bytes freed, or None when nothing was deleted (no such blob, or a newer
        one). Safe against a writer replacing the blob meanwhile: the file is first renamed
        aside, and only the renamed file's own time decides, so a blob that a writer has just
        put in place (a fresh file: writes never modify a blob in place) is put back, unless
        an even newer one has arrived since."""
        path = self._path(name)
        hold = path.with_name(temp_name(path.name + _HOLD_SUFFIX, os.getpid()))
        try:
            os.rename(path, hold)
        except FileNotFoundError:
            return None
        st = os.stat(hold)
        if datetime.fromtimestamp(st.st_mtime, UTC) < older_than:
            # No fsync of the folder: an unlink lost to a crash only brings back an orphan,
            # which the next sweep removes again.
            os.unlink(hold)
            return st.st_size
        with contextlib.suppress(FileExistsError):  # a newer write has taken the name since
            os.link(hold, path)
        os.unlink(hold)
        self._sync_dir(path.parent)
        return None

    def remove_empty_folder(self, prefix: str) -> bool:
        """Remove folder ``prefix`` if it is empty; says whether it did."""
        try:
            os.rmdir(self._path(prefix))
        except OSError:  # not empty, gone, or not a folder
            return False
        return True

    @staticmethod
    def _sync_dir(path: Path) -> None:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
