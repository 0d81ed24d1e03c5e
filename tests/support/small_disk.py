"""A small real filesystem to run out of: a tmpfs of a few MiB mounted on a test's folder.

A full tmpfs answers ENOSPC to every write that needs another page, as a full disk does, so
SQLite reports ``SQLITE_FULL`` ("database or disk is full") and blob writes fail with ENOSPC:
the application's real error paths, with no mock. Mounting needs CAP_SYS_ADMIN (root, as in
the CI container); without it the test using this is skipped with the reason.

``fill()`` writes a filler file until the filesystem refuses another byte; ``free()`` removes
it.
"""

from __future__ import annotations

import errno
import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

CHUNKS = (1 << 20, 1 << 12, 1)


class SmallDisk:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.filler = path / "filler"

    def fill(self) -> int:
        """Fill the filesystem to the last byte; returns the bytes written."""
        written = 0
        fd = os.open(self.filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            for size in CHUNKS:
                chunk = b"\xff" * size
                while True:
                    try:
                        done = os.write(fd, chunk)
                    except OSError as exc:
                        if exc.errno != errno.ENOSPC:
                            raise
                        break
                    written += done
                    if done < size:
                        break
        finally:
            os.close(fd)
        assert os.statvfs(self.path).f_bavail == 0, "the filesystem still has free blocks"
        return written

    def free(self) -> None:
        self.filler.unlink()


@contextmanager
def small_disk(path: Path, size_mib: int) -> Iterator[SmallDisk]:
    """A tmpfs of ``size_mib`` MiB on ``path`` (made if missing), unmounted afterwards."""
    path.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size_mib}m,mode=0700", "tmpfs", str(path)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs CAP_SYS_ADMIN): {mounted.stderr.strip()}")
    try:
        yield SmallDisk(path)
    finally:
        subprocess.run(["umount", "--lazy", str(path)], check=True)
