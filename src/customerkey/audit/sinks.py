"""Where signed checkpoints go, outside the database, and what happens when they cannot.

Three sinks, each given every checkpoint (``audit.publisher``):

- ``FileSink``: one JSON line appended and fsynced per checkpoint; the file is made 0600.
  The default, ``<home>/audit-checkpoints.jsonl``, is always on.
- ``SyslogSink``: an RFC 5424 line (facility auth, severity info, app name ``customerkey``,
  msgid ``checkpoint``, the checkpoint's JSON as the message) through the standard library's
  ``SysLogHandler``, to ``udp://host:port``, ``tcp://host:port`` (one line, LF-terminated) or a
  unix socket path (``/dev/log``). UDP is fire and forget: a collector that is down is not
  noticed; use TCP or the local socket where that matters.
- ``WebhookSink``: an HTTP(S) POST of the checkpoint's JSON; any answer but 2xx, or none within
  ``WEBHOOK_TIMEOUT`` seconds, is a failure.

``SinkHealth`` remembers a failure in a marker file in the home folder
(``audit-sink-unavailable``, holding the reason), so every process of the installation on this
host sees it, the one-shot CLI included, and a checkpoint that gets through from any of them
clears it for all (a process that cannot write the marker remembers the failure itself).
While it is set and ``fail_closed`` is on, the operations that use or hand out key material
(``GATED_OPERATIONS``) are refused with ``AuditSinkUnavailable`` (503) before they are
recorded: nothing happens to a key that cannot be accounted for outside the database.
Operations that narrow access (delete, disable, access-policy changes) are never gated, so an
audit outage cannot block a revocation.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
from dataclasses import dataclass
from logging.handlers import SysLogHandler
from pathlib import Path
from typing import Protocol
from urllib.parse import urlsplit

from customerkey.audit.checkpoints import Checkpoint
from customerkey.errors import BadParameter, ServiceUnavailable
from customerkey.home import write_private_file

WEBHOOK_TIMEOUT = 5.0
SYSLOG_APP = "customerkey"
MARKER_NAME = "audit-sink-unavailable"
# Operations that use key material or hand it out: refused while a sink is unavailable.
GATED_OPERATIONS = frozenset(
    {
        "KeyCreate",
        "KeyImport",
        "KeyRotate",
        "KeyRestore",
        "KeyBackup",
        "KeyRelease",
        "KeyWrap",
        "KeyUnwrap",
        "KeyEncrypt",
        "KeyDecrypt",
        "KeySign",
        "KeyVerify",
    }
)


class AuditSinkUnavailable(ServiceUnavailable):
    """An audit sink (checkpoint file, syslog, webhook) could not be written, and key
    operations fail closed until it can."""

    code = "AuditSinkUnavailable"


class SinkFailed(Exception):
    """One sink's write failed; the message says why (never a secret)."""


class Sink(Protocol):
    @property
    def name(self) -> str: ...

    def write(self, checkpoint: Checkpoint) -> None:
        """Deliver ``checkpoint``; raise ``SinkFailed`` when it could not be."""
        ...


@dataclass(frozen=True)
class FileSink:
    path: Path

    @property
    def name(self) -> str:
        return f"file {self.path}"

    def write(self, checkpoint: Checkpoint) -> None:
        line = (checkpoint.to_json() + "\n").encode()
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                os.write(fd, line)
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            raise SinkFailed(exc.strerror or str(exc)) from None


class _RaisingSysLogHandler(SysLogHandler):
    """``SysLogHandler`` reports a failed send to stderr and carries on; a sink must know."""

    def handleError(self, record: logging.LogRecord) -> None:
        raise  # re-raises the error being handled in ``emit``


@dataclass(frozen=True)
class SyslogSink:
    address: str

    def __post_init__(self) -> None:
        self._target()  # a malformed address is a bad setting, found at start-up

    @property
    def name(self) -> str:
        return f"syslog {self.address}"

    def _target(self) -> tuple[str | tuple[str, int], socket.SocketKind | None]:
        if self.address.startswith("/"):
            return self.address, None
        if self.address.startswith("unix:"):
            return self.address.removeprefix("unix:").removeprefix("//"), None
        parts = urlsplit(self.address)
        kinds = {"udp": socket.SOCK_DGRAM, "tcp": socket.SOCK_STREAM}
        try:
            port = parts.port
        except ValueError:
            port = None
        if parts.scheme not in kinds or not parts.hostname or port is None:
            raise BadParameter(
                "The audit syslog address must be udp://host:port, tcp://host:port or a unix "
                f"socket path; got '{self.address}'."
            )
        return (parts.hostname, port), kinds[parts.scheme]

    def write(self, checkpoint: Checkpoint) -> None:
        address, kind = self._target()
        message = (
            f"1 {checkpoint.time} {socket.gethostname() or '-'} {SYSLOG_APP} {os.getpid()} "
            f"checkpoint - {checkpoint.to_json()}"
        )
        if kind == socket.SOCK_STREAM:
            message += "\n"  # RFC 6587 non-transparent framing
        record = logging.LogRecord("customerkey.audit", logging.INFO, "", 0, message, None, None)
        try:
            handler = _RaisingSysLogHandler(address, SysLogHandler.LOG_AUTH, kind)
        except OSError as exc:
            raise SinkFailed(exc.strerror or str(exc)) from None
        handler.append_nul = False
        try:
            handler.emit(record)
        except Exception as exc:  # whatever the socket raised
            raise SinkFailed(str(exc) or type(exc).__name__) from None
        finally:
            handler.close()


@dataclass(frozen=True)
class WebhookSink:
    url: str
    token: str | None = None
    ca_file: str | None = None

    def __post_init__(self) -> None:
        parts = urlsplit(self.url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise BadParameter("The audit webhook URL must be an http:// or https:// URL.")

    @property
    def name(self) -> str:
        parts = urlsplit(self.url)
        return f"webhook {parts.scheme}://{parts.netloc.rsplit('@', 1)[-1]}{parts.path}"

    def write(self, checkpoint: Checkpoint) -> None:
        import httpx  # only a webhook needs it; every CLI command would pay for its import

        headers = {"Content-Type": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        try:
            answer = httpx.post(
                self.url,
                content=checkpoint.to_json().encode(),
                headers=headers,
                timeout=WEBHOOK_TIMEOUT,
                verify=self.ca_file or True,
            )
        except httpx.HTTPError as exc:
            raise SinkFailed(f"{type(exc).__name__}: {exc}") from None
        if not 200 <= answer.status_code < 300:
            raise SinkFailed(f"answered HTTP {answer.status_code}")


class SinkHealth:
    """Whether the sinks could last be written, shared by the processes of one home folder."""

    def __init__(self, marker: Path, *, fail_closed: bool) -> None:
        self.marker = marker
        self.fail_closed = fail_closed
        self._reason: str | None = None

    def failed(self, reason: str) -> None:
        # The marker is the shared state: a checkpoint that succeeds in any process of this
        # home clears it for all. Only when it cannot be written does this process fall back
        # on a flag of its own (cleared by its own next successful checkpoint).
        try:
            write_private_file(self.marker, reason.encode())
            self._reason = None
        except OSError:
            self._reason = reason

    def recovered(self) -> None:
        self._reason = None
        with contextlib.suppress(FileNotFoundError):
            self.marker.unlink()

    def reason(self) -> str | None:
        """Why the sinks are unavailable, or None when they are not known to be."""
        if self._reason is not None:
            return self._reason
        try:
            return self.marker.read_text(errors="replace") or "unknown"
        except FileNotFoundError:
            return None
        except OSError as exc:
            return f"the marker {self.marker} cannot be read: {exc.strerror}"

    def check(self, operation: str, result: str) -> None:
        """The audit log's gate: refuse a gated operation while a sink is unavailable."""
        if not self.fail_closed or result != "success" or operation not in GATED_OPERATIONS:
            return
        if self._reason is None and not self.marker.exists():
            return
        # The reason (paths, hosts) is the operator's; a caller is told only what happened.
        raise AuditSinkUnavailable(
            f"{operation} refused: the audit log's sinks cannot be written, and key operations "
            "fail closed until a checkpoint reaches every sink."
        )
