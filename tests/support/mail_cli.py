"""Driving mail imports through the ``customerkey`` command as a separate process (so that it
can be sent SIGINT or SIGKILL mid-way), and reading its jobs straight from the database.

``write_envelope_mbox`` writes an mbox the way a delivering mail server does: each message's
``From_`` line names its envelope sender and delivery time, and its ``Return-Path`` header
records the same sender.
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from tests.support.servers import clean_env

POLL = 0.02


@dataclass(frozen=True)
class Envelope:
    sender: str
    line: str  # the whole From_ line


def envelope_messages(count: int) -> list[tuple[Envelope, bytes]]:
    """``count`` small messages, each with its own envelope sender and delivery time."""
    out = []
    for i in range(count):
        sender = f"bounce-{i}@lists.fabrikam.com"
        when = datetime(2026, 11, 1 + i % 28, 9, i % 60, (7 * i) % 60)
        line = f"From {sender} {when:%a %b} {when.day:2d} {when:%H:%M:%S %Y}"
        message = (
            f"Return-Path: <{sender}>\n"
            f"From: Sender {i} <sender{i}@fabrikam.com>\n"
            "To: alice@contoso.com\n"
            f"Subject: Message {i}\n"
            "Date: Mon, 02 Nov 2026 18:00:00 +0000\n"
            "\n"
            f"Hello {i}\n"
        ).encode()
        out.append((Envelope(sender, line), message))
    return out


def write_envelope_mbox(path: Path, count: int) -> list[tuple[Envelope, bytes]]:
    """An mbox of ``envelope_messages(count)``; returns them."""
    entries = envelope_messages(count)
    with path.open("wb") as handle:
        for envelope, message in entries:
            handle.write(envelope.line.encode() + b"\n" + message + b"\n")
    return entries


def from_lines(path: Path) -> list[str]:
    """The ``From_`` lines of an mbox file, in order."""
    return [line.decode() for line in path.read_bytes().split(b"\n") if line.startswith(b"From ")]


def spawn(home: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """``customerkey --home HOME ARGS`` as its own process (stdout and stderr piped)."""
    return subprocess.Popen(
        [sys.executable, "-m", "customerkey.cli.main", "--home", str(home), *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**clean_env(), **(env or {})},
    )


def jobs(home: Path) -> list[dict[str, Any]]:
    """Every job row, oldest first, as the database holds it."""
    with sqlite3.connect(home / "customerkey.db") as conn:
        conn.row_factory = sqlite3.Row
        rows = conn.execute("SELECT * FROM jobs ORDER BY created_at").fetchall()
    return [dict(row) for row in rows]


def wait_until(
    condition: Callable[[], bool],
    what: str,
    *,
    timeout: float = 60.0,
    process: subprocess.Popen[bytes] | None = None,
) -> None:
    """Poll ``condition`` until it holds; fail after ``timeout`` seconds, or at once when
    ``process`` has exited meanwhile (it cannot get there any more)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if process is not None and process.poll() is not None:
            out, err = process.communicate()
            raise AssertionError(
                f"exited {process.returncode} before {what}:\n{err.decode()}\n{out.decode()}"
            )
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting until {what}")
        time.sleep(POLL)  # polling a subprocess's progress in the database


def import_progress(home: Path) -> int:
    """How many messages the newest import job has committed (0 before it exists)."""
    rows = [j for j in jobs(home) if j["kind"] == "mailbox-import"]
    return int(rows[-1]["progress_done"]) if rows else 0
