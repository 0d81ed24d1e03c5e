"""Reading and writing mail stores: mbox, Maildir and folders of ``.eml`` files (stdlib only).

Readers yield ``(folder, message bytes, received time)`` one message at a time, so a large
store is never held whole. A message's bytes are exactly what the store holds for it
(``mailbox.get_bytes``: for mbox, without its ``From_`` separator line), and writers put those
bytes back, so import then export gives each message byte for byte.
"""

from __future__ import annotations

import email.utils
import hashlib
import mailbox
import os
import shutil
from collections.abc import Iterator
from datetime import UTC, datetime
from email.parser import BytesHeaderParser
from pathlib import Path

from customerkey.errors import BadParameter

FORMATS = ("mbox", "maildir", "eml")
_HEADERS = BytesHeaderParser()


def detect_format(path: Path) -> str:
    if path.is_dir():
        if (path / "cur").is_dir() and (path / "new").is_dir():
            return "maildir"
        return "eml"
    if path.suffix.lower() == ".eml":
        return "eml"
    return "mbox"


def received_time(message: bytes, default: datetime) -> datetime:
    """The message's Date header as UTC, or ``default`` when it has none that parses."""
    try:
        end = message.find(b"\r\n\r\n")
        end = message.find(b"\n\n") if end < 0 else end
        headers = _HEADERS.parsebytes(message[: end if end >= 0 else 65536])
        value = headers.get("Date")
        if not value:
            return default
        parsed = email.utils.parsedate_to_datetime(str(value))
    except (TypeError, ValueError, IndexError):
        return default
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def count_messages(path: Path, fmt: str) -> int | None:
    """How many messages the store holds (cheap for all three formats)."""
    if fmt == "mbox":
        return len(mailbox.mbox(str(path), create=False))
    if fmt == "maildir":
        box = mailbox.Maildir(str(path), factory=None, create=False)
        return len(box) + sum(len(box.get_folder(f)) for f in box.list_folders())
    files = [path] if path.is_file() else sorted(path.glob("*.eml"))
    return len(files)


def read_messages(path: Path, fmt: str) -> Iterator[tuple[str, bytes]]:
    if fmt not in FORMATS:
        raise BadParameter(f"Unknown mail format '{fmt}'; use mbox, maildir or eml.")
    if not path.exists():
        raise BadParameter(f"{path} does not exist.")
    if fmt == "mbox":
        if not path.is_file():
            raise BadParameter(f"{path} is not an mbox file.")
        box = mailbox.mbox(str(path), create=False)
        try:
            for key in box.iterkeys():
                yield "Inbox", box.get_bytes(key)
        finally:
            box.close()
    elif fmt == "maildir":
        if not (path / "cur").is_dir():
            raise BadParameter(f"{path} is not a Maildir (no cur/ and new/ folders).")
        root = mailbox.Maildir(str(path), factory=None, create=False)
        for key in sorted(root.iterkeys()):
            yield "Inbox", root.get_bytes(key)
        for folder in sorted(root.list_folders()):
            sub = root.get_folder(folder)
            for key in sorted(sub.iterkeys()):
                yield folder, sub.get_bytes(key)
    else:
        files = [path] if path.is_file() else sorted(path.glob("*.eml"))
        for file in files:
            yield "Inbox", file.read_bytes()


class MessageWriter:
    """Writes messages into a new store; refuses to overwrite an existing one.

    The store is built under a hidden staging name beside ``path`` and renamed to ``path``
    by ``commit``, so an export that fails part-way (or is killed) never leaves a store that
    looks complete; ``abort`` removes the staging store."""

    def __init__(self, path: Path, fmt: str) -> None:
        if fmt not in FORMATS:
            raise BadParameter(f"Unknown mail format '{fmt}'; use mbox, maildir or eml.")
        if path.exists() and (path.is_file() or any(path.iterdir())):
            raise BadParameter(f"{path} already exists; export into a new path.")
        if not path.parent.is_dir():
            raise BadParameter(f"{path.parent} is not a folder.")
        self.fmt = fmt
        self.final_path = path
        self.path = path.parent / f".{path.name}.partial-{os.getpid()}"
        self._discard(self.path)  # left by an earlier export of this pid that was killed
        path = self.path
        self.count = 0
        self._mbox: mailbox.mbox | None = None
        self._maildir: mailbox.Maildir | None = None
        self._folders: dict[str, mailbox.Maildir] = {}
        if fmt == "mbox":
            self._mbox = mailbox.mbox(str(path), create=True)
            self._mbox.lock()
        elif fmt == "maildir":
            self._maildir = mailbox.Maildir(str(path), factory=None, create=True)
        else:
            path.mkdir(parents=True, exist_ok=True)

    def add(self, folder: str, message: bytes) -> None:
        self.count += 1
        if self._mbox is not None:
            self._mbox.add(message)
        elif self._maildir is not None:
            box = self._maildir
            if folder != "Inbox":
                if folder not in self._folders:
                    self._folders[folder] = (
                        box.get_folder(folder)
                        if folder in box.list_folders()
                        else box.add_folder(folder)
                    )
                box = self._folders[folder]
            box.add(message)
        else:
            (self.path / f"{self.count:07d}.eml").write_bytes(message)

    def close(self) -> None:
        if self._mbox is not None:
            self._mbox.flush()
            self._mbox.unlock()
            self._mbox.close()
            self._mbox = None

    def commit(self) -> None:
        """Close the store and give it its name."""
        self.close()
        if self.final_path.is_dir():
            self.final_path.rmdir()  # empty (checked at the start): the store replaces it
        os.replace(self.path, self.final_path)

    def abort(self) -> None:
        """Close and remove the staging store: nothing is left at the path."""
        try:
            self.close()
        finally:
            self._discard(self.path)

    @staticmethod
    def _discard(path: Path) -> None:
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)


def source_signature(path: Path, fmt: str) -> str:
    """A cheap signature of a mail store as it is on disk (names, sizes and modification
    times of its files, hashed): an import that resumes checks it before skipping the
    messages it already stored, so that it never resumes against a store that changed."""
    digest = hashlib.sha256(fmt.encode())
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for file in files:
        stat = file.stat()
        name = file.name if file == path else str(file.relative_to(path))
        digest.update(f"\0{name}\0{stat.st_size}\0{stat.st_mtime_ns}".encode())
    return digest.hexdigest()
