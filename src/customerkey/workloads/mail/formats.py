"""Reading and writing mail stores: mbox, Maildir and folders of ``.eml`` files (stdlib only).

Readers yield ``(folder, message bytes)`` one message at a time, so a large store is never held
whole; ``read_entries`` adds an mbox message's envelope date. A message's bytes are exactly
what the store holds for it (``mailbox.get_bytes``: for mbox, without its ``From_`` separator
line), and writers put those bytes back, so import then export gives each message byte for
byte.

``check_store`` tells a mail store from anything else before an import begins: an mbox file
starts with a ``From `` line (after blank lines), an ``.eml`` file with RFC 5322 header fields,
a Maildir has ``cur/`` and ``new/``. An empty mbox file or Maildir is a valid empty store.

The ``From_`` line: its date is kept as the item's received time (``read_entries``); the
envelope sender is not stored (the database holds no message content), so an mbox export
writes the message's ``Return-Path`` (the envelope sender the delivering server recorded),
else its ``From`` address, else ``MAILER-DAEMON`` (``envelope_sender``).

Exports are built under a hidden staging name beside the target, private (0600 files, 0700
folders) from the first byte, and renamed into place at the end; errors name the target.
"""

from __future__ import annotations

import contextlib
import email.utils
import hashlib
import io
import itertools
import mailbox
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime
from email.parser import BytesHeaderParser
from pathlib import Path

from customerkey.errors import BadParameter

FORMATS = ("mbox", "maildir", "eml")
_HEADERS = BytesHeaderParser()
# An RFC 5322 header field: a name of printable ASCII but the colon, then a colon.
_FIELD = re.compile(rb"^[\x21-\x39\x3b-\x7e]+[ \t]*:")
_EXPECTED = (
    "expected an mbox file (starting with a 'From ' line), an .eml message or a Maildir folder"
)
_HEAD_BYTES = 65536


class NotAMailStore(BadParameter):
    """What was given to import is not a mail store of the format asked for (or of any)."""


def check_store(path: Path, fmt: str, *, detected: bool) -> None:
    """Refuse ``path`` unless it is a ``fmt`` store (``detected``: the format was guessed
    from the path, so the error names every format). An empty mbox file or Maildir passes."""
    if fmt == "maildir":
        if not ((path / "cur").is_dir() and (path / "new").is_dir()):
            raise NotAMailStore(f"{path} is not a Maildir (no cur/ and new/ folders).")
        return
    if fmt == "mbox":
        if path.is_file() and _starts_like_mbox(path):
            return
        if detected:
            raise NotAMailStore(f"{path} is not a mail store: {_EXPECTED}.")
        raise NotAMailStore(f"{path} is not an mbox file: it does not start with a 'From ' line.")
    files = [path] if path.is_file() else sorted(path.glob("*.eml"))
    if not files:
        raise NotAMailStore(
            f"{path} is not a mail store: {_EXPECTED} (it holds no .eml files and no cur/ "
            "and new/ folders)."
        )
    for file in files:
        if not _starts_like_message(file):
            raise NotAMailStore(
                f"{file} is not an .eml message: it does not start with RFC 5322 header "
                "fields (such as 'From: ...')."
            )


def _head(path: Path) -> bytes:
    with path.open("rb") as handle:
        return handle.read(_HEAD_BYTES)


def _starts_like_mbox(path: Path) -> bool:
    """Empty (blank lines at most), or a ``From `` line first."""
    head = _head(path).lstrip(b" \t\r\n")
    return not head or head.startswith(b"From ")


def _starts_like_message(path: Path) -> bool:
    """A header field first (after an mbox-style ``From `` line, which some tools write)."""
    head = _head(path)
    if head.startswith(b"From "):
        head = head.partition(b"\n")[2]
    if not _FIELD.match(head):
        return False
    return len(_HEADERS.parsebytes(head)) > 0


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


def envelope_date(from_line: bytes) -> datetime | None:
    """The date of an mbox ``From_`` line (``From sender Tue Nov  3 10:00:07 2026``, UTC), or
    None when it has none that parses."""
    fields = from_line.decode("ascii", "replace").split()
    if len(fields) < 7 or fields[0] != "From":
        return None
    try:
        parsed = datetime.strptime(" ".join(fields[2:7]), "%a %b %d %H:%M:%S %Y")
    except ValueError:
        return None
    return parsed.replace(tzinfo=UTC)


def envelope_sender(message: bytes) -> str:
    """The sender an mbox ``From_`` line names for ``message``: its Return-Path, else its From
    address, else ``MAILER-DAEMON`` (a bounce's empty Return-Path too)."""
    end = message.find(b"\r\n\r\n")
    end = message.find(b"\n\n") if end < 0 else end
    try:
        headers = _HEADERS.parsebytes(message[: end if end >= 0 else _HEAD_BYTES])
        return_path = headers.get("Return-Path")
        if return_path is not None:
            address = email.utils.parseaddr(str(return_path))[1]
        else:
            address = email.utils.parseaddr(str(headers.get("From", "")))[1]
    except (TypeError, ValueError, IndexError):
        address = ""
    address = "".join(address.split())
    return address if address and address.isascii() else "MAILER-DAEMON"


def from_line(sender: str, when: datetime) -> bytes:
    """An mbox ``From_`` line (date in UTC, as ``time.asctime`` writes it)."""
    when = when.astimezone(UTC) if when.tzinfo else when
    stamp = f"{when:%a %b} {when.day:2d} {when:%H:%M:%S %Y}"
    return f"From {sender} {stamp}".encode("ascii", "replace")


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
    for folder, message, _ in read_entries(path, fmt):
        yield folder, message


def read_entries(
    path: Path, fmt: str, *, skip: int = 0
) -> Iterator[tuple[str, bytes, datetime | None]]:
    """``(folder, message, envelope date)``: the date of an mbox message's ``From_`` line
    (None in other formats, or when it has none). ``skip`` passes over the first messages
    without reading them (a resumed staging: ``staging``)."""
    if fmt not in FORMATS:
        raise BadParameter(f"Unknown mail format '{fmt}'; use mbox, maildir or eml.")
    if not path.exists():
        raise BadParameter(f"{path} does not exist.")
    if fmt == "mbox":
        if not path.is_file():
            raise BadParameter(f"{path} is not an mbox file.")
        box = mailbox.mbox(str(path), create=False)
        try:
            for key in itertools.islice(box.iterkeys(), skip, None):
                with box.get_file(key, from_=True) as handle:
                    envelope = handle.readline()
                yield "Inbox", box.get_bytes(key), envelope_date(envelope)
        finally:
            box.close()
    elif fmt == "maildir":
        if not (path / "cur").is_dir():
            raise BadParameter(f"{path} is not a Maildir (no cur/ and new/ folders).")
        root = mailbox.Maildir(str(path), factory=None, create=False)
        boxes = [("Inbox", root)] + [(f, root.get_folder(f)) for f in sorted(root.list_folders())]
        for folder, maildir in boxes:
            keys = sorted(maildir.iterkeys())
            for key in keys[skip:]:
                yield folder, maildir.get_bytes(key), None
            skip = max(0, skip - len(keys))
    else:
        files = [path] if path.is_file() else sorted(path.glob("*.eml"))
        for file in files[skip:]:
            yield "Inbox", file.read_bytes(), None


class MessageWriter:
    """Writes messages into a new store; refuses to overwrite an existing one.

    The store is built under a hidden staging name beside ``path`` (made 0600 or 0700 with
    ``O_EXCL``, so nobody else can read it on the way) and renamed to ``path`` by ``commit``, so
    an export that fails part-way (or is killed) never leaves a store that looks complete;
    ``abort`` removes the staging store. An ``OSError`` names ``path``, never the staging
    name."""

    def __init__(self, path: Path, fmt: str) -> None:
        if fmt not in FORMATS:
            raise BadParameter(f"Unknown mail format '{fmt}'; use mbox, maildir or eml.")
        check_export_target(path)
        self.fmt = fmt
        self.final_path = path
        self.count = 0
        self._mbox: io.FileIO | None = None
        self._maildir: mailbox.Maildir | None = None
        self._folders: dict[str, mailbox.Maildir] = {}
        prefix, suffix = f".{path.name}.", ".partial"
        with self._named():
            if fmt == "mbox":
                fd, staging = tempfile.mkstemp(dir=path.parent, prefix=prefix, suffix=suffix)
                self._mbox = io.FileIO(fd, "wb")
                self.path = Path(staging)
            else:
                self.path = Path(tempfile.mkdtemp(dir=path.parent, prefix=prefix, suffix=suffix))
                if fmt == "maildir":
                    for sub in ("cur", "new", "tmp"):
                        (self.path / sub).mkdir(mode=0o700)
                    self._maildir = mailbox.Maildir(str(self.path), factory=None, create=False)

    def _named(self) -> _TargetNamed:
        return _TargetNamed(self.final_path)

    def add(
        self,
        folder: str,
        message: bytes,
        *,
        received: datetime | None = None,
    ) -> None:
        """Add one message; ``received`` dates an mbox message's ``From_`` line (now if None)."""
        self.count += 1
        with self._named():
            if self._mbox is not None:
                envelope = from_line(envelope_sender(message), received or datetime.now(UTC))
                _write_all(self._mbox, _mbox_entry(envelope, message))
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
                _write_new(self.path / f"{self.count:07d}.eml", message)

    def close(self) -> None:
        if self._mbox is not None:
            handle, self._mbox = self._mbox, None
            with handle:
                os.fsync(handle.fileno())

    def commit(self) -> None:
        """Close the store and give it its name."""
        with self._named():
            self.close()
            if self.path.is_dir():
                _make_private(self.path)  # Maildir writes its files as the umask says
            if self.final_path.is_dir():
                self.final_path.rmdir()  # empty (checked at the start): the store replaces it
            os.replace(self.path, self.final_path)

    def abort(self) -> None:
        """Close and remove the staging store: nothing is left at the path (what could not
        be written is dropped unflushed)."""
        handle, self._mbox = self._mbox, None
        if handle is not None:
            with contextlib.suppress(OSError):
                handle.close()  # unbuffered: nothing left to flush
        self._discard(self.path)

    @staticmethod
    def _discard(path: Path) -> None:
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)


def check_export_target(path: Path) -> None:
    """Refuse an export target that exists (but an empty folder) or whose folder is missing."""
    if path.exists() and (path.is_file() or any(path.iterdir())):
        raise BadParameter(f"{path} already exists; export into a new path.")
    if not path.parent.is_dir():
        raise BadParameter(f"Cannot export to {path}: the folder {path.parent} does not exist.")


class _TargetNamed:
    """Turns an ``OSError`` raised inside it into one naming the export's target."""

    def __init__(self, target: Path) -> None:
        self.target = target

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: object, exc: BaseException | None, tb: object) -> None:
        if isinstance(exc, OSError) and not isinstance(exc, _NamedOSError):
            raise _NamedOSError(exc.errno, exc.strerror or str(exc), str(self.target)) from exc


class _NamedOSError(OSError):
    """An ``OSError`` already pointed at the export's target."""


def _mbox_entry(envelope: bytes, message: bytes) -> bytes:
    """One mbox entry as Python's ``mailbox.mbox`` writes it (so its reader gives ``message``
    back): the ``From_`` line, the message with ``From `` lines quoted, a blank line."""
    body = message.replace(b"\nFrom ", b"\n>From ")
    if body.startswith(b"From "):
        body = b">" + body
    if not body.endswith(b"\n"):
        body += b"\n"
    return envelope + b"\n" + body + b"\n"


def _write_all(handle: io.FileIO, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = handle.write(view)
        view = view[written or 0 :]


def _write_new(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


def _make_private(root: Path) -> None:
    for folder, dirs, files in os.walk(root):
        os.chmod(folder, 0o700)
        for name in files:
            os.chmod(os.path.join(folder, name), 0o600)
        for name in dirs:
            os.chmod(os.path.join(folder, name), 0o700)


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
