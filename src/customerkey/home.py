"""The home folder: where an installation keeps its database, blobs, certificates and master key.

Layout (created by ``customerkey init`` or on first start, mode 0700)::

    master.key      32 random bytes (0600): seals every vault key's private material, the
                    availability keys and key backups. Lose it and the data is gone; guard it.
    master.key.sealed
                    instead of master.key once ``customerkey master-key seal`` ran: the master
                    key encrypted inside the HSM (``hsm.master_seal``, which owns the format).
                    Both files at once: a seal or unseal was interrupted; master.key is used.
    customerkey.db  the SQLite database (unless CUSTOMERKEY_DATABASE_URL points elsewhere)
    blobs/          sealed content (mail items, file chunks)
    tls/            the local CA and the server certificate
    token-keys/     access-token signing keys

``write_private_file`` is the one way secrets (and the files beside them) are written to disk:
the TLS keys, the token signing keys and their manifest, key backups.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import stat
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from customerkey.errors import CustomerKeyError
from customerkey.rng import Rng, SystemRng

MASTER_KEY_BYTES = 32


class HomeError(CustomerKeyError):
    """The home folder is missing, unreadable or has unsafe permissions."""

    code = "HomeFolderError"


@dataclass(frozen=True)
class Home:
    path: Path

    @property
    def master_key_file(self) -> Path:
        return self.path / "master.key"

    @property
    def database_file(self) -> Path:
        return self.path / "customerkey.db"

    @property
    def blobs_dir(self) -> Path:
        return self.path / "blobs"

    @property
    def tls_dir(self) -> Path:
        return self.path / "tls"

    @property
    def token_keys_dir(self) -> Path:
        return self.path / "token-keys"

    @property
    def sealed_master_key_file(self) -> Path:
        return self.path / "master.key.sealed"

    def exists(self) -> bool:
        return self.master_key_file.exists() or self.sealed_master_key_file.exists()

    def master_key_form(self) -> str | None:
        """How the master key is kept: "file", "sealed", "both" (a migration was interrupted;
        master.key is the one used) or None (no installation)."""
        plain, sealed = self.master_key_file.exists(), self.sealed_master_key_file.exists()
        if plain and sealed:
            return "both"
        return "file" if plain else "sealed" if sealed else None

    def is_sealed(self) -> bool:
        """The master key must be unsealed by the HSM: master.key.sealed without master.key."""
        return self.master_key_form() == "sealed"

    def sealed_master_key(self) -> bytes:
        """The bytes of master.key.sealed, refused when others may read it."""
        path = self.sealed_master_key_file
        self._check_private(path)
        return path.read_bytes()

    def init(self, *, rng: Rng | None = None) -> bool:
        """Create the folder and master key if missing. Returns True when it created the key."""
        rng = rng or SystemRng()
        self.path.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(self.path, 0o700)
        for sub in (self.blobs_dir,):
            sub.mkdir(exist_ok=True, mode=0o700)
        if self.master_key_file.exists():
            self.master_key()  # validates size and mode
            return False
        if self.sealed_master_key_file.exists():
            return False  # the HSM holds it: never make a new one beside it
        tmp = self.path / ".master.key.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, rng.token_bytes(MASTER_KEY_BYTES))
            os.fsync(fd)
        finally:
            os.close(fd)
        os.link(tmp, self.master_key_file)  # fails if another process won the race
        tmp.unlink()
        return True

    @staticmethod
    def _check_private(path: Path) -> None:
        try:
            mode = stat.S_IMODE(path.stat().st_mode)
        except FileNotFoundError:
            raise HomeError(f"No master key at {path}; run 'customerkey init' first.") from None
        if mode & 0o077:
            raise HomeError(
                f"{path} is readable by others (mode {mode:o}); run 'chmod 600 {path}'."
            )

    def master_key(self) -> bytes:
        path = self.master_key_file
        self._check_private(path)
        data = path.read_bytes()
        if len(data) != MASTER_KEY_BYTES:
            raise HomeError(f"{path} must hold {MASTER_KEY_BYTES} bytes, found {len(data)}.")
        return data

    def master_key_id(self) -> str:
        """A short, non-secret fingerprint naming the master key in sealed headers."""
        return master_key_id_of(self.master_key())

    def sync(self) -> None:
        """fsync the folder itself, so that a rename or removal in it survives a crash."""
        fd = os.open(self.path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def master_key_id_of(master_key: bytes) -> str:
    """``Home.master_key_id`` of a master key held in memory (one unsealed by the HSM)."""
    return hashlib.sha256(b"customerkey/master-key-id" + master_key).hexdigest()[:16]


@contextlib.contextmanager
def private_file(path: Path, *, mode: int = 0o600) -> Iterator[BinaryIO]:
    """A handle whose bytes become ``path`` atomically, with ``mode`` (0600 unless told) from
    the first byte, when the block ends without an error.

    The bytes go to a temporary file in the same folder (created 0600), which is given ``mode``,
    written, fsynced and renamed over ``path``: a reader never sees half a file, a crash leaves
    the old file or the new one, and the file is never readable by others on the way, whatever
    ``path`` was before. On failure the temporary file is removed and the error raised.
    """
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            os.fchmod(handle.fileno(), mode)
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)
        raise


def write_private_file(path: Path, data: bytes, *, mode: int = 0o600) -> None:
    """Write ``data`` to ``path`` atomically, with ``mode`` (see ``private_file``)."""
    with private_file(path, mode=mode) as handle:
        handle.write(data)
