"""mail import: import a generated mbox into a DEP-protected mailbox, then export it.

Data: an mbox generated here (seeded, no downloads) with a realistic size mix: ~62% short
text messages (1-6 KB), ~25% text + HTML (6-30 KB), ~11% with a small attachment (20-100 KB),
~1.8% with a larger one (100-500 KB), ~0.2% with a big one (1-3 MB); sizes log-uniform in each
band, ~19 KB on average, so 20,000 messages are ~400 MB (``--quick``: 500 messages). It lives
in a temporary folder removed afterwards.

Ours: ``MailService.import_messages`` into a mailbox whose DEP protects it (every message
sealed under the mailbox key, written as a blob, its row committed in batches), then
``export_messages`` back to an mbox. Each message is checked to come back byte for byte.

Baselines on the same bytes, in the same run:

- **plain**: the very same import and export code on a second, identical platform with the
  envelope switched off: ``seal`` and ``open_stream`` are replaced, for that run only, by
  functions that pass the bytes through unchanged, so the same mbox reading, blob writes
  (temporary file, fsync, rename, fsync of the folder), database rows, audit records and mbox
  writing remain. The ratio is the share of that throughput left with encryption on.
- **file copy**: ``shutil.copyfile`` of the mbox (what ``cp`` does), for scale.

The figures are MB/s of message bytes (the plaintext; sealed blobs add a header and a tag).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import math
import os
import random
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

from bench._common import DEP_NAME, MAIL_DOMAIN, TENANT, Row, open_runtime, setup_dep, temp_dir
from customerkey.vault.models import OPERATOR
from customerkey.workloads.mail import formats
from customerkey.workloads.mail import imports as mail_imports
from customerkey.workloads.mail import items as mail_items

NAME = "mail_import"
TITLE = "mbox import into a DEP-protected mailbox, and export"

FULL_MESSAGES = 20_000
QUICK_MESSAGES = 300
SHARE_TARGET = 0.5
SIZE_SCALE = 1.17  # brings the mix to ~20 KB a message, ~400 MB for 20,000
OWNER = f"alice@{MAIL_DOMAIN}"
# (share of messages, smallest, largest bytes, kind)
BANDS = (
    (0.620, 1_000, 6_000, "text"),
    (0.250, 6_000, 30_000, "html"),
    (0.110, 20_000, 100_000, "attachment"),
    (0.018, 100_000, 500_000, "attachment"),
    (0.002, 1_000_000, 3_000_000, "attachment"),
)
_WORDS = [
    "quarterly",
    "numbers",
    "revenue",
    "forecast",
    "meeting",
    "agenda",
    "please",
    "review",
    "attached",
    "draft",
    "budget",
    "team",
    "update",
    "project",
    "status",
    "customer",
    "invoice",
    "contract",
    "renewal",
    "schedule",
    "thanks",
    "regards",
    "tomorrow",
    "office",
    "travel",
    "approval",
    "deadline",
    "summary",
    "notes",
    "action",
    "items",
    "follow",
    "up",
]


def _text_pool(rng: random.Random, size: int) -> bytes:
    lines = []
    total = 0
    while total < size:
        words = [rng.choice(_WORDS) for _ in range(rng.randint(8, 13))]
        line = (" ".join(words).capitalize() + ".\n").encode()
        lines.append(line)
        total += len(line)
    return b"".join(lines)


def _base64_pool(rng: random.Random, size: int) -> bytes:
    raw = rng.randbytes(size * 3 // 4)
    encoded = base64.b64encode(raw)
    return b"\n".join(encoded[i : i + 76] for i in range(0, len(encoded), 76)) + b"\n"


def _slice(pool: bytes, rng: random.Random, size: int) -> bytes:
    """About ``size`` bytes of whole lines from ``pool``."""
    start = pool.find(b"\n", rng.randrange(0, max(1, len(pool) - size - 1))) + 1
    end = pool.find(b"\n", start + max(1, size)) + 1
    return pool[start:end] if end > start else pool[start:]


def write_mbox(path: Path, count: int, *, seed: int = 20261103) -> int:
    """Write ``count`` generated messages to a new mbox; returns the bytes written."""
    rng = random.Random(seed)
    text = _text_pool(rng, 2_000_000)
    b64 = _base64_pool(rng, 8_000_000)
    weights = [band[0] for band in BANDS]
    written = 0
    with path.open("wb") as out:
        for i in range(count):
            share, low, high, kind = rng.choices(BANDS, weights)[0]
            del share
            size = int(SIZE_SCALE * math.exp(rng.uniform(math.log(low), math.log(high))))
            boundary = f"=_bench_{i:06d}"
            head = (
                f"From sender{i % 977}@fabrikam.com Tue Nov  3 10:00:00 2026\n"
                f"From: Sender {i % 977} <sender{i % 977}@fabrikam.com>\n"
                f"To: Alice <{OWNER}>\n"
                f"Subject: {' '.join(rng.choice(_WORDS) for _ in range(5))} #{i}\n"
                f"Date: Tue, {1 + i % 28:02d} Nov 2026 {i % 24:02d}:{i % 60:02d}:00 +0000\n"
                f"Message-ID: <bench-{i:06d}@fabrikam.com>\n"
                "MIME-Version: 1.0\n"
            ).encode()
            if kind == "text":
                body = b"Content-Type: text/plain; charset=utf-8\n\n" + _slice(text, rng, size)
            else:
                parts = [f"Content-Type: multipart/mixed; boundary={boundary}\n\n".encode()]
                share_text = size if kind == "html" else min(size // 5, 8_000)
                parts += [
                    f"--{boundary}\nContent-Type: text/plain; charset=utf-8\n\n".encode(),
                    _slice(text, rng, share_text // 2),
                ]
                if kind == "html":
                    parts += [
                        f"--{boundary}\nContent-Type: text/html; charset=utf-8\n\n".encode(),
                        b"<html><body><p>\n" + _slice(text, rng, share_text // 2) + b"</p>\n",
                    ]
                else:
                    parts += [
                        f"--{boundary}\nContent-Type: application/pdf; name=report{i}.pdf\n"
                        "Content-Transfer-Encoding: base64\n\n".encode(),
                        _slice(b64, rng, size - share_text)
                        if size - share_text < len(b64) // 2
                        else b"".join(
                            _slice(b64, rng, len(b64) // 4)
                            for _ in range((size - share_text) // (len(b64) // 4) + 1)
                        ),
                    ]
                parts.append(f"--{boundary}--\n".encode())
                body = b"".join(parts)
            message = head + body + b"\n"
            out.write(message)
            written += len(message)
        # On disk before anything is timed: otherwise the first run's fsyncs (ext4 commits
        # its journal with the data written before) pay for writing the mbox back.
        out.flush()
        os.fsync(out.fileno())
    return written


@contextlib.contextmanager
def encryption_off() -> Iterator[None]:
    """The mail service's envelope calls replaced by pass-throughs (the plain baseline)."""

    def seal(key: bytes, plaintext: bytes, **_: Any) -> bytes:
        return plaintext

    def open_stream(key: bytes, src: BinaryIO, dst: BinaryIO, **_: Any) -> int:
        shutil.copyfileobj(src, dst, 1 << 20)
        return 0

    # Where the import seals and the reads open (workloads/mail/imports.py and items.py).
    saved = (mail_imports.seal, mail_items.open_stream)
    mail_imports.seal = seal  # type: ignore[assignment]
    mail_items.open_stream = open_stream  # type: ignore[assignment]
    try:
        yield
    finally:
        mail_imports.seal, mail_items.open_stream = saved  # type: ignore[assignment]


def _digests(path: Path) -> list[bytes]:
    return [hashlib.sha256(m).digest() for _, m in formats.read_messages(path, "mbox")]


def _import_export(home: Path, mbox: Path, out: Path, *, plain: bool) -> tuple[float, float, int]:
    """(import seconds, export seconds, message bytes) on a fresh platform in ``home``."""
    rt = open_runtime(home)
    try:
        setup_dep(rt)
        rt.mail.create_mailbox(OPERATOR, TENANT, OWNER, policy=DEP_NAME)
        with encryption_off() if plain else contextlib.nullcontext():
            start = time.perf_counter()
            result = rt.mail.import_messages(OPERATOR, OWNER, mbox, fmt="mbox")
            imported = time.perf_counter() - start
            start = time.perf_counter()
            count = rt.mail.export_messages(OPERATOR, OWNER, out, fmt="mbox")
            exported = time.perf_counter() - start
        assert count == result.imported
        if not plain:
            stats = rt.mail.statistics(OPERATOR, OWNER)
            assert stats.is_encrypted, "the mailbox is not protected by its DEP"
        return imported, exported, result.bytes
    finally:
        rt.close()


def run(quick: bool) -> list[Row]:
    count = QUICK_MESSAGES if quick else FULL_MESSAGES
    repeats = 2
    with temp_dir("mail") as tmp:
        mbox = tmp / "source.mbox"
        file_bytes = write_mbox(mbox, count)
        source = _digests(mbox)
        best: dict[str, float] = {}
        message_bytes = 0
        for attempt in range(repeats):
            # Alternate which runs first, so a noisy moment does not always hit the same one.
            order = (False, True) if attempt % 2 == 0 else (True, False)
            for plain in order:
                label = "plain" if plain else "ours"
                home = tmp / f"home-{label}-{attempt}"
                out = tmp / f"export-{label}-{attempt}.mbox"
                imported, exported, message_bytes = _import_export(home, mbox, out, plain=plain)
                if not plain and attempt == 0:
                    assert _digests(out) == source, "export differs from the imported mbox"
                best[f"{label} import"] = min(best.get(f"{label} import", math.inf), imported)
                best[f"{label} export"] = min(best.get(f"{label} export", math.inf), exported)
                shutil.rmtree(home, ignore_errors=True)
                out.unlink(missing_ok=True)
        copy_seconds = math.inf
        for _ in range(max(2, repeats)):
            target = tmp / "copy.mbox"
            start = time.perf_counter()
            shutil.copyfile(mbox, target)
            copy_seconds = min(copy_seconds, time.perf_counter() - start)
            target.unlink()
    mb = message_bytes / 1e6
    rows: list[Row] = []
    for step in ("import", "export"):
        ours = mb / best[f"ours {step}"]
        plain_rate = mb / best[f"plain {step}"]
        share = ours / plain_rate
        case = f"{count:,} msgs, {mb:,.0f} MB {step}"
        rows.append(
            Row(
                NAME,
                case,
                "MB/s",
                ours,
                baseline="same code, encryption off",
                baseline_value=plain_rate,
                ratio=share,
                target=f">= {SHARE_TARGET:.0%} of plain",
                met=share >= SHARE_TARGET,
                extra={
                    "seconds": best[f"ours {step}"],
                    "plain_seconds": best[f"plain {step}"],
                    "messages_per_s": count / best[f"ours {step}"],
                    "mbox_bytes": file_bytes,
                },
            )
        )
        rows.append(
            Row(
                NAME,
                case,
                "MB/s",
                ours,
                baseline="file copy (shutil.copyfile)",
                baseline_value=file_bytes / 1e6 / copy_seconds,
                ratio=ours / (file_bytes / 1e6 / copy_seconds),
            )
        )
    return rows
