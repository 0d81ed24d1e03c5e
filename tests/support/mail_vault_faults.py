"""The mail platform of the vault-faults tests: a generated mail store, a ``Runtime`` on the
test's database reaching two remote vaults (the requesting module's ``clouds`` fixture), a
mail user on the DEP holding that store, and helpers to read it back. Shared by
``test_mail_vault_faults`` and ``test_vault_garbage``."""

from __future__ import annotations

import email.message
import email.utils
import hashlib
import mailbox
import random
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from customerkey.audit.log import AuditRecord
from customerkey.clock import FrozenClock
from customerkey.config import Settings
from customerkey.keys.deps import DataEncryptionPolicy
from customerkey.keys.resolver import FALLBACK_ACTIVITY
from customerkey.rng import SystemRng
from customerkey.runtime import Runtime
from customerkey.vault.models import OPERATOR, Actor
from customerkey.workloads.mail.service import MailItem
from tests.support.remote_vaults import (
    TENANT,
    Cloud,
)

UPN = "alice@contoso.com"
POLICY = "NA-DEP"
MESSAGES = 36  # plain ones, plus one multi-part and one larger than 1 MiB
BIG_ATTACHMENT = 1_300_000  # bytes before base64: the message is about 1.8 MiB
CANARY = "CANARY-7f3a9c"

# ---------------------------------------------------------------- the source mail store


@dataclass(frozen=True)
class Source:
    path: Path
    messages: list[bytes]  # mailbox.mbox(path).get_bytes(k), in file order
    needles: list[bytes]  # canaries and slices of message bodies: must never be on disk


def _plain_message(i: int, rnd: random.Random) -> email.message.EmailMessage:
    msg = email.message.EmailMessage()
    msg["From"] = f"Sender {i} <sender{i}@fabrikam.com>"
    msg["To"] = UPN
    msg["Subject"] = f"Quarterly numbers {i} {CANARY}-subject-{i:03d}"
    msg["Date"] = email.utils.format_datetime(
        datetime(2025, 3, 1, 9, 0, tzinfo=UTC) + timedelta(hours=7 * i)
    )
    msg["Message-ID"] = f"<q{i}.{rnd.getrandbits(32):08x}@fabrikam.com>"
    words = " ".join(f"w{rnd.getrandbits(24):06x}" for _ in range(40 + 20 * (i % 5)))
    body = f"Hello Alice,\n\n{CANARY}-body-{i:03d}\n{words}\n"
    if i % 9 == 4:  # a line mbox must escape
        body += "From the desk of the CFO: figures attached.\n"
    msg.set_content(body)
    return msg


def _multipart_message(rnd: random.Random) -> email.message.EmailMessage:
    msg = email.message.EmailMessage()
    msg["From"] = "Reports <reports@fabrikam.com>"
    msg["To"] = UPN
    msg["Subject"] = f"Board pack {CANARY}-subject-multipart"
    msg["Date"] = "Tue, 01 Apr 2025 10:00:00 +0000"
    msg["Message-ID"] = "<board-pack@fabrikam.com>"
    msg.set_content(f"Plain part {CANARY}-multipart-text\n")
    msg.add_alternative(f"<html><body><p>{CANARY}-multipart-html</p></body></html>", subtype="html")
    msg.add_attachment(
        rnd.randbytes(20_000) + f"{CANARY}-multipart-attachment".encode(),
        maintype="application",
        subtype="octet-stream",
        filename="pack.bin",
    )
    return msg


def _big_message(rnd: random.Random) -> email.message.EmailMessage:
    msg = email.message.EmailMessage()
    msg["From"] = "Archive <archive@fabrikam.com>"
    msg["To"] = UPN
    msg["Subject"] = f"Scans {CANARY}-subject-big"
    msg["Date"] = "Wed, 02 Apr 2025 11:00:00 +0000"
    msg["Message-ID"] = "<scans@fabrikam.com>"
    msg.set_content(f"The scans, {CANARY}-big-text.\n")
    msg.add_attachment(
        rnd.randbytes(BIG_ATTACHMENT), maintype="image", subtype="tiff", filename="scans.tiff"
    )
    return msg


def _body(message: bytes) -> bytes:
    end = message.find(b"\n\n")
    assert end > 0
    return message[end + 2 :]


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Source:
    rnd = random.Random(20250401)
    path = tmp_path_factory.mktemp("source") / "alice.mbox"
    box = mailbox.mbox(str(path), create=True)
    try:
        for i in range(MESSAGES // 2):
            box.add(_plain_message(i, rnd))
        box.add(_multipart_message(rnd))
        for i in range(MESSAGES // 2, MESSAGES):
            box.add(_plain_message(i, rnd))
        box.add(_big_message(rnd))
        box.flush()
    finally:
        box.close()
    box = mailbox.mbox(str(path), create=False)
    try:
        messages = [box.get_bytes(key) for key in box.iterkeys()]
    finally:
        box.close()
    assert len(messages) == MESSAGES + 2
    assert max(len(m) for m in messages) > 1024 * 1024
    assert any(b"\n>From the desk" in m for m in messages)
    needles = sorted({m.encode() for m in re.findall(rf"{CANARY}-[a-z]+-[a-z0-9]+", _text(path))})
    assert len(needles) >= 2 * MESSAGES + 5
    for message in messages:  # 64 bytes from the middle of every body, too
        body = _body(message)
        middle = len(body) // 2
        needles.append(body[middle : middle + 64])
    return Source(path, messages, needles)


def _text(path: Path) -> str:
    return path.read_bytes().decode("ascii", errors="replace")


# ---------------------------------------------------------------- the platform under test


@dataclass
class Platform:
    rt: Runtime
    clock: FrozenClock
    db_url: str
    clouds: list[Cloud]


@dataclass
class Mail:
    platform: Platform
    policy: DataEncryptionPolicy
    generation_id: str
    dep_key: bytes
    items: list[MailItem]
    digests: dict[str, str]  # item id -> sha256 of the source message

    @property
    def rt(self) -> Runtime:
        return self.platform.rt


@pytest.fixture
def platform(clouds: list[Cloud], db_url: str, tmp_path: Path) -> Iterator[Platform]:
    clock = FrozenClock(datetime(2026, 5, 4, 12, 0, tzinfo=UTC))
    settings = Settings(
        home=tmp_path / "local",
        database_url=db_url,
        remote_vaults=[cloud.remote_vault() for cloud in clouds],
    )
    rt = Runtime.open(settings, clock=clock, rng=SystemRng())
    try:
        rt.tenants.create(OPERATOR, TENANT, mail_domain="contoso.com")
        yield Platform(rt, clock, db_url, clouds)
    finally:
        rt.close()


@pytest.fixture
def mail(platform: Platform, source: Source) -> Mail:
    rt = platform.rt
    a, b = platform.clouds
    policy = rt.policies.create(OPERATOR, TENANT, POLICY, [a.key_uri, b.key_uri])
    assert policy.current_generation_id is not None
    rt.mail.create_mailbox(OPERATOR, TENANT, UPN, kind="mailuser", policy=POLICY)
    result = rt.mail.import_messages(OPERATOR, UPN, source.path, fmt="mbox")
    assert result.imported == len(source.messages)
    items = rt.mail.list_items(OPERATOR, UPN)
    assert len(items) == len(source.messages)
    digests = {item.id: _sha(message) for item, message in zip(items, source.messages, strict=True)}
    # The DEP key as the root keys give it, taken from the cache that import filled.
    dep_key = rt.policies.generation_key(policy.current_generation_id)
    return Mail(platform, policy, policy.current_generation_id, dep_key, items, digests)


# ---------------------------------------------------------------- helpers


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _read(mail: Mail, item: MailItem, actor: Actor = OPERATOR) -> bytes:
    return mail.rt.mail.read_item(actor, UPN, item.id)


def _read_all_intact(mail: Mail) -> None:
    for item in mail.items:
        assert _sha(_read(mail, item)) == mail.digests[item.id], f"item {item.seq} changed"


def _fallbacks(mail: Mail) -> list[AuditRecord]:
    return mail.rt.audit_log.records(OPERATOR, operation=FALLBACK_ACTIVITY)


def _uncached_read(mail: Mail, item: MailItem) -> int:
    """Read one item with the DEP-key cache empty; returns how many root keys were asked."""
    mail.rt.key_cache.clear()
    before = mail.rt.policies.resolver.vault_calls
    assert _sha(_read(mail, item)) == mail.digests[item.id]
    return mail.rt.policies.resolver.vault_calls - before


def _read_in_both_orders(mail: Mail, *, at_least: int = 10, at_most: int = 64) -> Counter[int]:
    """Uncached reads until both orders happened: the working root key asked first (one call)
    and the failing one asked first (two calls). The order is random; 64 reads all one way
    would happen once in 2**63 runs."""
    seen: Counter[int] = Counter()
    for n in range(at_most):
        seen[_uncached_read(mail, mail.items[n % len(mail.items)])] += 1
        if n + 1 >= at_least and seen[1] and seen[2]:
            break
    assert set(seen) == {1, 2}, seen
    return seen
