"""No plaintext at rest: one full run on one home folder, then every byte it holds is scanned.

The run (SQLite in the home folder; PostgreSQL too when configured, where every value of every
row of every table is scanned as well) puts known bytes in everything the platform protects:

- mail: canaries in subjects, bodies, text and binary attachments, a message over one 1 MiB
  segment, imported as mbox, Maildir and an .eml folder, plus single messages;
- files: a file of two 8 MiB chunks and a text file, canaries astride every 1 MiB segment
  boundary and the chunk boundary, a second version, one upload through the admin API;
- key material: an RSA key imported into the vault from a JWK whose d, p, q we chose, every
  vault key version's private key, every DEP / TIK generation key, mailbox, site and chunk
  key, the availability keys, and the keys of the service-managed hierarchy;
- client secrets of several principals (one reset), a wrong secret, every access token;

then exercises everything: imports, exports (outside the home), a DEP change, a move, a key roll
with ``dep refresh`` and a files roll, file versions, the recycle bin, key backups written to a
folder outside the home, the audit log, and a ``customerkey serve`` subprocess on the same home
for part of the run (token requests with the secrets, keys-API wrap/unwrap, admin-API reads,
the refresh and roll jobs run by its worker). Its log goes to a file outside the home.

The home folder (database, WAL and -shm, blobs, TLS and token-key folders, anything written
there, temp files) is scanned byte-wise while the runtime and the server are open and again
after they close: no canary, secret, token, key byte string or 64-byte slice of any content
appears. Three things may appear only where they belong: the master key in ``master.key``,
token signing keys in ``token-keys/``, TLS keys in ``tls/``. The serve log, the key backups
and the temp folders are scanned for all of it (the backups: for key material). The scanner
proves itself first: it finds every needle hidden at an unaligned offset, and every canary in
the source data and the exports.
"""

from __future__ import annotations

import base64
import email.message
import email.policy
import hashlib
import json
import mailbox
import os
import random
import secrets
import signal
import ssl
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from sqlalchemy import MetaData, create_engine, select

from customerkey.azure.localdns import install_loopback_resolver, uninstall_loopback_resolver
from customerkey.cli.main import main as cli_main
from customerkey.config import Settings
from customerkey.crypto.rsa import b64url_encode
from customerkey.crypto.sealing import MasterSealer
from customerkey.crypto.wrap import aes_kwp_unwrap
from customerkey.identity.workload_principals import EXCHANGE, SHAREPOINT
from customerkey.runtime import Runtime
from customerkey.storage.database import normalize_url
from customerkey.storage.models import (
    FileChunkRow,
    GenerationRow,
    KeyRow,
    KeyVersionRow,
    MailboxKeyRow,
    MailboxRow,
    PolicyRow,
    SiteKeyRow,
    SiteRow,
)
from customerkey.vault.models import OPERATOR
from customerkey.vault.protection import SoftwareKeyProtector
from tests.support.filesfixtures import Generated
from tests.support.live_servers import (
    BUG_MARKERS,
    DOMAIN,
    start_server,
)

pytestmark = pytest.mark.storage

TENANT = "contoso"
VAULT_A = "ck-rest-vault-a"
VAULT_B = "ck-rest-vault-b"
KEY_A = "imported-root"  # imported from our JWK
KEY_B = "generated-root"
URI_A = f"https://{VAULT_A}.vault.azure.net/keys/{KEY_A}"
URI_B = f"https://{VAULT_B}.vault.azure.net/keys/{KEY_B}"
SITE = "https://contoso.sharepoint.local/sites/finance"
MIB = 1 << 20
CHUNK = 8 * MIB  # the files workload's chunk size
SLICE = 64  # content is looked for as 64-byte tiles
HEAD = 8  # the scanner keys needles and tiles by their first 8 bytes


# ---------------------------------------------------------------- the scanner


@dataclass(frozen=True)
class Needle:
    label: str
    data: bytes
    allowed: tuple[str, ...] = ()  # home-relative path prefixes where it may appear


class Scanner:
    """Finds needles (each at least 8 bytes) and the 64-byte tiles of some documents anywhere
    in a byte string, exactly.

    Documents (mail and file content) are cut into 64-byte tiles (offsets 0, 64, ... and the
    last 64 bytes), so any run of 127 or more content bytes holds a whole tile; canaries and
    key material are needles of their own. Every needle and tile is keyed by its first 8
    bytes; the data's 8-byte word at every offset (eight memoryviews cast to 64-bit words,
    one per alignment) is intersected with those keys by the set's own C loop, and each word
    found is then located with ``bytes.find`` and compared in full.
    """

    def __init__(
        self, needles: Iterable[Needle] = (), documents: Iterable[tuple[str, bytes]] = ()
    ) -> None:
        self.needles: list[Needle] = []
        self.documents: list[tuple[str, bytes]] = []
        self.tiles = 0
        # first word -> needles (index >= 0) and tiles (-1 - document index, offset)
        self._heads: dict[int, list[tuple[int, int]]] = {}
        self._keys: set[int] = set()
        self._known: set[bytes | str] = set()
        self.add(needles, documents)

    def add(
        self, needles: Iterable[Needle] = (), documents: Iterable[tuple[str, bytes]] = ()
    ) -> Scanner:
        """Look for these too (needles and documents already known are skipped)."""
        for needle in needles:
            assert len(needle.data) >= HEAD, needle.label
            if needle.data not in self._known:
                self._known.add(needle.data)
                self._head(self._word(needle.data, 0), (len(self.needles), 0))
                self.needles.append(needle)
        for label, data in documents:
            if len(data) < SLICE or label in self._known:
                continue
            self._known.add(label)
            doc = len(self.documents)
            self.documents.append((label, data))
            offsets = list(range(0, len(data) - SLICE + 1, SLICE))
            if offsets[-1] != len(data) - SLICE:
                offsets.append(len(data) - SLICE)
            for offset in offsets:
                self._head(self._word(data, offset), (-1 - doc, offset))
            self.tiles += len(offsets)
        return self

    def _head(self, word: int, ref: tuple[int, int]) -> None:
        self._heads.setdefault(word, []).append(ref)
        self._keys.add(word)

    @staticmethod
    def _word(data: bytes, offset: int) -> int:
        return int.from_bytes(data[offset : offset + HEAD], sys.byteorder)

    def find(self, data: bytes) -> list[Needle]:
        view = memoryview(data)
        words: set[int] = set()
        for shift in range(HEAD):
            count = (len(data) - shift) // HEAD
            if count > 0:
                words |= self._keys.intersection(view[shift : shift + HEAD * count].cast("Q"))
        found: dict[str, Needle] = {}
        for word in words:
            head = word.to_bytes(HEAD, sys.byteorder)
            at = data.find(head)
            while at >= 0:
                for ref, offset in self._heads[word]:
                    if ref >= 0:
                        needle = self.needles[ref]
                    else:
                        label, content = self.documents[-1 - ref]
                        tile = content[offset : offset + SLICE]
                        needle = Needle(f"{label}[{offset}:+64]", tile)
                    if data.startswith(needle.data, at):
                        found.setdefault(needle.label, needle)
                at = data.find(head, at + 1)
        return list(found.values())

    def labels(self, data: bytes) -> set[str]:
        return {needle.label for needle in self.find(data)}


def encodings(label: str, raw: bytes) -> list[Needle]:
    """A secret byte string as it could leak: raw, hex, base64, base64url."""
    forms = [
        ("raw", raw),
        ("hex", raw.hex().encode()),
        ("b64", base64.b64encode(raw)),
        ("b64url", b64url_encode(raw).encode()),
    ]
    return [Needle(f"{label} ({kind})", form) for kind, form in forms]


def test_scanner_finds_every_needle_and_content_run_at_any_offset() -> None:
    rng = random.Random(9)
    needles = [Needle(f"n{i}", rng.randbytes(rng.choice((8, 9, 31, 64, 300)))) for i in range(40)]
    documents = [(f"d{i}", rng.randbytes(rng.randrange(127, 20_000))) for i in range(30)]
    scanner = Scanner(needles, documents)
    for trial in range(20):
        data = bytearray(rng.randbytes(60_000))
        hidden = rng.sample(range(len(needles)), 8)
        runs = rng.sample(range(len(documents)), 4)
        slots = rng.sample(range(100), 12)
        for slot, index in zip(slots[:8], hidden, strict=True):
            at = slot * 500 + rng.randrange(150)  # any alignment, never overlapping
            data[at : at + len(needles[index].data)] = needles[index].data
        for slot, doc in zip(slots[8:], runs, strict=True):
            content = documents[doc][1]
            start = rng.randrange(len(content) - 127 + 1)
            at = slot * 500 + rng.randrange(150)
            data[at : at + 127] = content[start : start + 127]  # the shortest run always found
        found = scanner.labels(bytes(data))
        assert {f"n{i}" for i in hidden} <= found, trial
        assert {label.split("[")[0] for label in found if "[" in label} == {
            f"d{i}" for i in runs
        }, trial
    edge = needles[0].data + bytes(5) + needles[1].data  # at offset 0 and at the very end
    assert scanner.labels(edge) == {"n0", "n1"}
    assert scanner.labels(documents[3][1][-64:]) == {f"d3[{len(documents[3][1]) - 64}:+64]"}
    assert scanner.labels(rng.randbytes(200_000)) == set()
    shifted = needles[2].data[1:]  # a needle minus one byte is not the needle
    assert scanner.labels(shifted * 3) == set()
    assert scanner.labels(documents[5][1][1:64]) == set()  # 63 bytes are not a tile


# ---------------------------------------------------------------- what we put in


@dataclass
class Sources:
    """Everything known that must not be at rest in the clear, by kind."""

    run: str
    canaries: list[Needle] = field(default_factory=list)  # in mail and files
    documents: list[tuple[str, bytes]] = field(default_factory=list)  # the content itself
    keys: list[Needle] = field(default_factory=list)  # key material
    secrets: list[Needle] = field(default_factory=list)  # client secrets
    tokens: list[Needle] = field(default_factory=list)  # access tokens
    confined: list[Needle] = field(default_factory=list)  # allowed only where they belong
    _scanner: Scanner = field(default_factory=Scanner)

    def scanner(self) -> Scanner:
        """One scanner for everything known so far, grown as more becomes known."""
        return self._scanner.add(
            [*self.canaries, *self.keys, *self.secrets, *self.tokens, *self.confined],
            self.documents,
        )

    def canary(self, kind: str, n: int) -> bytes:
        value = f"CANARY-{kind}-{self.run}-{n:04d}".encode()
        self.canaries.append(Needle(value.decode(), value))
        return value


def build_messages(src: Sources, prefix: str, count: int, *, big: bool = False) -> list[bytes]:
    messages = []
    for i in range(count):
        n = len(src.canaries)
        msg = email.message.EmailMessage()
        msg["From"] = f"sender{i}@fabrikam.com"
        msg["To"] = f"{prefix}@contoso.com"
        msg["Subject"] = f"Quarterly {i} {src.canary('SUBJECT', n).decode()}"
        msg["Date"] = f"Tue, {1 + i % 28:02d} Nov 2026 10:00:00 +0000"
        body = f"Hello {src.canary('BODY', n).decode()}\nthe finance team writes\n"
        body += "".join(f"line {j} of message {i} to {prefix}\n" for j in range(i * 3))
        if big and i == 0:
            # one message over a 1 MiB segment, a canary astride the boundary
            filler = "".join(f"{j:08d} plain words of a long report\n" for j in range(40_000))
            half = MIB - 200
            body += filler[:half] + src.canary("SEGMENT", n).decode() + filler[half:]
        msg.set_content(body)
        if i % 3 == 1:
            msg.add_attachment(
                f"attached text {src.canary('ATTACHMENT', n).decode()}\n" * 3,
                subtype="plain",
                filename=f"notes{i}.txt",
            )
        if i % 3 == 2:  # a binary attachment: base64 in the message, its tiles cover it
            binary = f"BINARY-{src.run}-{n:04d}".encode()
            msg.add_attachment(
                binary * 20 + os.urandom(500),
                maintype="application",
                subtype="octet-stream",
                filename=f"report{i}.bin",
            )
        messages.append(msg.as_bytes(policy=email.policy.SMTP.clone(linesep="\n")))
    for n, data in enumerate(messages):
        src.documents.append((f"{prefix} message {n}", data))
    return messages


def write_mbox(path: Path, messages: list[bytes]) -> list[bytes]:
    box = mailbox.mbox(str(path))
    for data in messages:
        box.add(data)
    box.flush()
    box.close()
    reread = mailbox.mbox(str(path), create=False)
    try:
        return [reread.get_bytes(k) for k in reread.iterkeys()]
    finally:
        reread.close()


def build_file(src: Sources, name: str, size: int, *, seed: int, text: bool = False) -> bytes:
    """Generated content with a canary astride every 1 MiB boundary (so every segment
    boundary and the 8 MiB chunk boundary), at the start and at the end."""
    if text:
        line = b"2026-11-01,contoso,finance,quarterly,forecast,12345.67,EUR\n"
        data = bytearray((line * (size // len(line) + 1))[:size])
    else:
        source = Generated(size, seed)
        data = bytearray()
        while chunk := source.read(MIB):
            data += chunk
    marks = [0, *(at for at in range(MIB, size, MIB) if size - at > 100), size]
    for at in marks:
        canary = src.canary(f"FILE-{name}", len(src.canaries))
        start = min(max(at - len(canary) // 2, 0), size - len(canary))
        data[start : start + len(canary)] = canary
    content = bytes(data)
    assert content[CHUNK - 20 : CHUNK + 20].count(b"CANARY") == (1 if size > CHUNK else 0)
    src.documents.append((f"file {name}", content))
    return content


def rsa_jwk(src: Sources) -> dict[str, Any]:
    """A fresh RSA-2048 key as a JWK; its private parts become needles in every form."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    numbers = key.private_numbers()
    pub = numbers.public_numbers

    def raw(value: int) -> bytes:
        return value.to_bytes((value.bit_length() + 7) // 8, "big")

    jwk = {
        "kty": "RSA",
        "n": b64url_encode(raw(pub.n)),
        "e": b64url_encode(raw(pub.e)),
        "key_ops": ["wrapKey", "unwrapKey"],
    }
    for name, value in (
        ("d", numbers.d),
        ("p", numbers.p),
        ("q", numbers.q),
        ("dp", numbers.dmp1),
        ("dq", numbers.dmq1),
        ("qi", numbers.iqmp),
    ):
        jwk[name] = b64url_encode(raw(value))
        src.keys += encodings(f"imported JWK {name}", raw(value))
    pkcs8 = key.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    pkcs1 = key.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    src.keys += encodings("imported key PKCS#8 DER", pkcs8)
    src.keys += encodings("imported key PKCS#1 DER", pkcs1)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    src.keys += [Needle(f"imported key PEM line {i}", line) for i, line in pem_lines(pem)]
    return jwk


def pem_lines(pem: bytes) -> Iterator[tuple[int, bytes]]:
    for i, line in enumerate(pem.splitlines()):
        if len(line) >= HEAD and not line.startswith(b"-----"):
            yield i, line


def rsa_der_needles(label: str, der: bytes) -> list[Needle]:
    key = serialization.load_der_private_key(der, password=None)
    assert isinstance(key, rsa.RSAPrivateKey)
    numbers = key.private_numbers()
    out = encodings(f"{label} PKCS#8", der)
    for name, value in (("d", numbers.d), ("p", numbers.p), ("q", numbers.q)):
        out += encodings(f"{label} {name}", value.to_bytes((value.bit_length() + 7) // 8, "big"))
    return out


def derived_keys(rt: Runtime) -> list[Needle]:
    """Every key of the hierarchy that exists now, unwrapped: vault private keys, DEP and TIK
    generation keys, availability keys, service-managed keys, mailbox, site and chunk keys."""
    sealer = MasterSealer(rt.home.master_key(), rt.home.master_key_id())
    protector = SoftwareKeyProtector(rt.home.master_key(), rt.home.master_key_id())
    out: list[Needle] = []
    with rt.db.transaction() as session:
        versions = [
            (key.vault_id, key.id, key.name, v.version, v.sealed_private_key)
            for v, key in session.execute(
                select(KeyVersionRow, KeyRow).join(KeyRow, KeyVersionRow.key_id == KeyRow.id)
            )
        ]
        policies = [(p.id, p.sealed_availability_key) for p in session.scalars(select(PolicyRow))]
        generations = [
            (g.id, g.wrapped_1 is not None) for g in session.scalars(select(GenerationRow))
        ]
        mailbox_keys = [
            (k.id, tenant, k.generation_id, k.wrapped)
            for k, tenant in session.execute(
                select(MailboxKeyRow, MailboxRow.tenant_id).join(
                    MailboxRow, MailboxKeyRow.mailbox_id == MailboxRow.id
                )
            )
            if k.wrapped is not None
        ]
        site_keys = [
            (k.id, tenant, k.generation_id, k.wrapped)
            for k, tenant in session.execute(
                select(SiteKeyRow, SiteRow.tenant_id).join(
                    SiteRow, SiteKeyRow.site_id == SiteRow.id
                )
            )
            if k.wrapped is not None
        ]
        chunk_keys = [
            (c.id, c.site_key_id, c.wrapped_key)
            for c in session.scalars(select(FileChunkRow))
            if c.wrapped_key is not None
        ]
    for vault_id, key_id, name, version, sealed in versions:
        der = protector.open_private_key(sealed, vault_id=vault_id, key_id=key_id, version=version)
        out += rsa_der_needles(f"vault key {name}/{version}", der)
    for policy_id, sealed in policies:
        if sealed is not None:
            key = sealer.open(sealed, purpose="availability-key", subject=policy_id)
            out += encodings(f"availability key of {policy_id}", key)
    generation_keys: dict[str, bytes] = {}
    for generation_id, wrapped in generations:
        if wrapped:  # retired generations lose their wrapped copies
            generation_keys[generation_id] = rt.policies.generation_key(generation_id, system=True)
            out += encodings(f"generation key {generation_id}", generation_keys[generation_id])
    assert generation_keys, "no generation key to look for"
    out += encodings("service-managed key", sealer.service_key(TENANT))

    def kek(tenant: str, generation_id: str | None) -> bytes | None:
        if generation_id is None:
            return sealer.service_key(tenant)
        return generation_keys.get(generation_id)

    opened: dict[str, bytes] = {}
    for kind, rows in (("mailbox", mailbox_keys), ("site", site_keys)):
        for row_id, tenant, generation_id, wrapped in rows:
            wrapping = kek(tenant, generation_id)
            if wrapping is not None:
                opened[row_id] = aes_kwp_unwrap(wrapping, wrapped)
                out += encodings(f"{kind} key {row_id}", opened[row_id])
    for chunk_id, site_key_id, wrapped in chunk_keys:
        if site_key_id in opened:
            out += encodings(f"chunk key {chunk_id}", aes_kwp_unwrap(opened[site_key_id], wrapped))
    assert len(opened) >= 4 and chunk_keys, (len(opened), len(chunk_keys))
    return out


def confined_needles(home: Path) -> list[Needle]:
    """The master key, token signing keys and TLS keys: each only in its own file."""
    out = [Needle("master key (raw)", (home / "master.key").read_bytes(), ("master.key",))]
    out += [n for n in encodings("master key", (home / "master.key").read_bytes())[1:]]
    for folder in ("token-keys", "tls"):  # made by the first start of the server
        for path in sorted((home / folder).glob("*")) if (home / folder).is_dir() else []:
            data = path.read_bytes()
            if b"PRIVATE KEY" not in data:
                continue
            key = serialization.load_pem_private_key(data, password=None)
            der = key.private_bytes(
                serialization.Encoding.DER,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
            label = f"{folder}/{path.name}"
            allowed = (f"{folder}/",)
            out.append(Needle(f"{label} DER", der, allowed))
            out += [Needle(f"{label} PEM line {i}", ln, allowed) for i, ln in pem_lines(data)]
            if isinstance(key, ec.EllipticCurvePrivateKey):
                scalar = key.private_numbers().private_value.to_bytes(32, "big")
                out.append(Needle(f"{label} private scalar", scalar, allowed))
    return out


# ---------------------------------------------------------------- where we look


def read_bytes(path: Path) -> bytes:
    """A file's bytes. SQLite's files are read by another process: closing a descriptor of
    a database file drops every POSIX lock this process holds on it, SQLite's included."""
    if not path.name.startswith("customerkey.db"):
        return path.read_bytes()
    done = subprocess.run(["cat", str(path)], capture_output=True, check=False, timeout=60)
    if done.returncode != 0 and not path.exists():
        raise FileNotFoundError(path)
    assert done.returncode == 0, done.stderr
    return done.stdout


def home_files(root: Path, seen: dict[str, tuple[int, int, int]]) -> Iterator[tuple[str, bytes]]:
    """Every file under ``root`` not read before in the same state (inode, size, mtime).

    A file unchanged since an earlier scan was last written before it, and everything it could
    hold then was already looked for: every needle is collected before the scan that follows
    its creation. So only new and changed files are read again (the blobs are written once)."""
    for path in sorted(root.rglob("*")):
        try:
            if not path.is_file():
                continue
            info = path.stat()
            state = (info.st_ino, info.st_size, info.st_mtime_ns)
            rel = path.relative_to(root).as_posix()
            if seen.get(rel) == state:
                continue
            data = read_bytes(path)
        except FileNotFoundError:  # a temp file renamed while we walked
            continue
        seen[rel] = state
        yield rel, data


def database_values(db_url: str) -> Iterator[tuple[str, bytes]]:
    """Every value of every row of every table, as bytes (SQLite and PostgreSQL alike)."""
    engine = create_engine(normalize_url(db_url))
    try:
        metadata = MetaData()
        metadata.reflect(bind=engine)
        with engine.connect() as conn:
            for table in metadata.sorted_tables:
                for row in conn.execute(select(table)):
                    for value in row:
                        if isinstance(value, bytes | bytearray | memoryview):
                            yield table.name, bytes(value)
                        elif value is not None:
                            yield table.name, str(value).encode()
    finally:
        engine.dispose()


@dataclass
class Report:
    scans: int = 0
    files: Counter[str] = field(default_factory=Counter)
    bytes: int = 0
    wal_bytes: int = 0
    rows: int = 0
    seen: dict[str, tuple[int, int, int]] = field(default_factory=dict)


def scan_home(scanner: Scanner, home: Path, report: Report) -> None:
    found = []
    report.scans += 1
    for rel, data in home_files(home, report.seen):
        report.files[rel.split("/", 1)[0]] += 1
        report.bytes += len(data)
        if rel.endswith("-wal"):
            report.wal_bytes = max(report.wal_bytes, len(data))
        for needle in scanner.find(data):
            if not any(rel.startswith(prefix) for prefix in needle.allowed):
                found.append(f"{needle.label} in {rel}")
    assert not found, "in the clear under the home folder:\n" + "\n".join(sorted(found)[:40])


def scan_rows(scanner: Scanner, db_url: str, report: Report) -> None:
    found = []
    tables: Counter[str] = Counter()
    for table, value in database_values(db_url):
        tables[table] += 1
        found += [f"{needle.label} in table {table}" for needle in scanner.find(value)]
    assert not found, "in the clear in the database:\n" + "\n".join(sorted(found)[:40])
    for table in ("mail_items", "file_chunks", "key_versions", "principals", "audit_records"):
        assert tables[table] > 0, (table, tables)
    report.rows = sum(tables.values())


def scan_outside(scanner: Scanner, paths: Iterable[Path], what: str) -> int:
    found, scanned = [], 0
    for root in paths:
        for path in [root] if root.is_file() else sorted(root.rglob("*")):
            if path.is_file():
                scanned += 1
                found += [f"{label} in {path}" for label in scanner.labels(path.read_bytes())]
    assert not found, f"in the clear in {what}:\n" + "\n".join(sorted(found)[:40])
    return scanned


# ---------------------------------------------------------------- the server


@dataclass
class Serve:
    home: Path
    port: int
    process: subprocess.Popen[bytes]
    log_path: Path
    http: httpx.Client | None = None

    @property
    def url(self) -> str:
        return f"https://localhost:{self.port}"

    @property
    def resource(self) -> str:
        return f"https://{DOMAIN}:{self.port}"

    def vault_url(self, vault: str) -> str:
        return f"https://{vault}.{DOMAIN}:{self.port}"

    def client(self) -> httpx.Client:
        if self.http is None:
            context = ssl.create_default_context(cafile=str(self.home / "tls" / "ca.pem"))
            self.http = httpx.Client(verify=context, timeout=30)
        return self.http

    def token_response(self, client_id: str, secret: str, tenant: str) -> httpx.Response:
        return self.client().post(
            f"{self.url}/{tenant}/oauth2/v2.0/token",
            data={
                "grant_type": "client_credentials",
                "client_id": client_id,
                "client_secret": secret,
                "scope": f"{self.resource}/.default",
            },
        )

    def stop(self) -> int:
        if self.http is not None:
            self.http.close()
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
                raise AssertionError("the server did not stop within 20 s") from None
        return self.process.returncode


def start_serve(home: Path, log_path: Path, env: dict[str, str]) -> Serve:
    live = start_server(home, log_path=log_path, env=env)
    return Serve(home=home, port=live.port, process=live.process, log_path=log_path)


# ---------------------------------------------------------------- the run


class Cli:
    """The CLI in this process, on the same home (and database) as the runtime."""

    def __init__(self, home: Path, capsys: pytest.CaptureFixture[str]) -> None:
        self.home = home
        self.capsys = capsys

    def __call__(self, *args: str) -> Any:
        self.capsys.readouterr()
        code = cli_main(["--home", str(self.home), "--json", *args])
        out, err = self.capsys.readouterr()
        assert code == 0, f"customerkey {' '.join(args)} exited {code}: {err}"
        return json.loads(out) if out.strip() else None


def drain(rt: Runtime) -> None:
    rt.worker().run_until_idle()


def wait_for_job(rt: Runtime, job_id: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = rt.jobs.get(job_id)
        if job.finished:
            assert job.state == "succeeded", (job.kind, job.error)
            return
        time.sleep(0.1)  # polling the job the server's worker runs
    raise AssertionError(f"job {job_id} did not finish within {timeout} s")


def setup_platform(rt: Runtime, src: Sources) -> None:
    rt.tenants.create(OPERATOR, TENANT, mail_domain="contoso.com")
    for vault, region in ((VAULT_A, "eastus"), (VAULT_B, "westus")):
        rt.vault.create_vault(
            OPERATOR, vault, subscription="sub", region=region, tenant=TENANT, purge_protection=True
        )
        for workload in (EXCHANGE, SHAREPOINT):
            rt.vault.set_access_policy(
                OPERATOR, vault, workload.app_id, ["wrapKey", "unwrapKey", "get"]
            )
    rt.vault.import_key(OPERATOR, VAULT_A, KEY_A, rsa_jwk(src), hsm=True)
    rt.vault.create_key(OPERATOR, VAULT_B, KEY_B, kty="RSA-HSM", key_ops=["wrapKey", "unwrapKey"])
    rt.policies.create(OPERATOR, TENANT, "NA-DEP", [URI_A, URI_B], description="NA")


def create_principals(rt: Runtime, src: Sources) -> dict[str, tuple[str, str]]:
    """Principals with secrets: id -> (tenant, secret). One secret is reset (both count)."""
    made: dict[str, tuple[str, str]] = {}
    for upn, roles in (
        ("admin@contoso.com", ["tenant-admin"]),
        ("alice@contoso.com", []),
        ("app@contoso.com", []),
    ):
        _, secret = rt.principals.create(OPERATOR, upn, tenant=TENANT, roles=roles)
        assert secret is not None
        made[upn] = (TENANT, secret)
    _, old = rt.principals.create(
        OPERATOR, "ops@platform.example", tenant="platform", roles=["operator"]
    )
    assert old is not None
    src.secrets.append(Needle("reset-away secret of ops@platform.example", old.encode()))
    made["ops@platform.example"] = (
        "platform",
        rt.principals.reset_secret(OPERATOR, "ops@platform.example"),
    )
    exchange = rt.principals.reset_secret(OPERATOR, EXCHANGE.app_id)
    made[EXCHANGE.app_id] = ("contoso", exchange)
    for principal, (_, secret) in made.items():
        src.secrets.append(Needle(f"client secret of {principal}", secret.encode()))
    return made


def exercise_server(
    server: Serve, rt: Runtime, src: Sources, principals: dict[str, tuple[str, str]]
) -> None:
    """Sign in with every secret, use the keys API as the mail workload does, read mail and
    write a file through the admin API: the server sees secrets, keys and content."""
    http = server.client()
    tokens: dict[str, str] = {}
    for principal, (tenant, secret) in principals.items():
        response = server.token_response(principal, secret, tenant)
        assert response.status_code == 200, response.text
        tokens[principal] = response.json()["access_token"]
        src.tokens.append(Needle(f"access token of {principal}", tokens[principal].encode()))
        signature = tokens[principal].rsplit(".", 1)[1]
        src.tokens.append(Needle(f"token signature of {principal}", signature.encode()))
    wrong = f"WRONG-SECRET-{src.run}-{secrets.token_urlsafe(24)}"
    src.secrets.append(Needle("a wrong client secret", wrong.encode()))
    assert server.token_response("alice@contoso.com", wrong, TENANT).status_code == 401

    keys_url = f"{server.vault_url(VAULT_A)}/keys/{KEY_A}"
    assert http.get(f"{keys_url}?api-version=7.5").status_code == 401  # the challenge
    workload = {"Authorization": f"Bearer {tokens[EXCHANGE.app_id]}"}
    bundle = http.get(f"{keys_url}?api-version=7.5", headers=workload)
    assert bundle.status_code == 200, bundle.text
    version = bundle.json()["key"]["kid"].rsplit("/", 1)[1]
    for i in range(5):
        value = f"UNWRAPPED-{src.run}-{i:02d}-{secrets.token_hex(8)}".encode()
        src.keys += encodings(f"unwrapped value {i}", value)
        wrapped = http.post(
            f"{keys_url}/{version}/wrapkey?api-version=7.5",
            json={"alg": "RSA-OAEP-256", "value": b64url_encode(value)},
            headers=workload,
        )
        assert wrapped.status_code == 200, wrapped.text
        unwrapped = http.post(
            f"{keys_url}/{version}/unwrapkey?api-version=7.5",
            json={"alg": "RSA-OAEP-256", "value": wrapped.json()["value"]},
            headers=workload,
        )
        assert unwrapped.status_code == 200, unwrapped.text
        assert unwrapped.json()["value"] == b64url_encode(value)
    # what the mail workload does: unwrap the DEP key of the current generation over HTTPS
    with rt.db.transaction() as session:
        generation = session.scalars(
            select(GenerationRow).where(GenerationRow.retired_at.is_(None))
        ).first()
        assert generation is not None and generation.wrapped_1 is not None
        uri, wrapped_dep = generation.key_uri_1, generation.wrapped_1
        generation_id = generation.id
    assert uri.startswith(URI_A + "/")
    dep = http.post(
        f"{keys_url}/{uri.rsplit('/', 1)[1]}/unwrapkey?api-version=7.5",
        json={"alg": "RSA-OAEP-256", "value": b64url_encode(wrapped_dep)},
        headers=workload,
    )
    assert dep.status_code == 200, dep.text
    assert dep.json()["value"] == b64url_encode(rt.policies.generation_key(generation_id))
    other = {"Authorization": f"Bearer {tokens['alice@contoso.com']}"}
    assert http.get(f"{keys_url}?api-version=7.5", headers=other).status_code == 403

    admin = {"Authorization": f"Bearer {tokens['admin@contoso.com']}"}
    api = f"{server.url}/api/v1"
    items = http.get(f"{api}/mailboxes/alice@contoso.com/items", headers=admin)
    assert items.status_code == 200, items.text
    stored = dict(rt.mail.iter_messages(OPERATOR, "alice@contoso.com"))
    for item in items.json()["value"][:6]:
        read = http.get(f"{api}/mailboxes/alice@contoso.com/items/{item['Id']}", headers=admin)
        assert read.status_code == 200, read.text
        assert read.content == next(d for i, d in stored.items() if i.id == item["Id"])
    assert http.get(f"{api}/mailboxes/bob@contoso.com/statistics", headers=admin).is_success
    assert http.get(f"{api}/audit?limit=50", headers=admin).is_success
    (site,) = http.get(f"{api}/tenants/{TENANT}/sites", headers=admin).json()["value"]
    content = build_file(src, "api", 2 * MIB + 99, seed=4)
    put = http.put(
        f"{api}/sites/{site['SiteId']}/files/Shared Documents/api.bin",
        content=content,
        headers=admin,
    )
    assert put.status_code == 201, put.text
    got = http.get(f"{api}/sites/{site['SiteId']}/files/Shared Documents/api.bin", headers=admin)
    assert got.status_code == 200 and got.content == content
    operator = {"Authorization": f"Bearer {tokens['ops@platform.example']}"}
    assert http.get(f"{api}/audit/verify", headers=operator).json()["Ok"] is True


def test_no_plaintext_at_rest(
    db_backend: str,
    db_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    home = tmp_path / "home"
    outside = tmp_path / "outside"  # sources, exports, backups, downloads, the serve log
    temp = tmp_path / "tmp"  # TMPDIR of this process (tempfile) and of the server
    for folder in (outside, temp, outside / "backups", outside / "exports", outside / "src"):
        folder.mkdir()
    for name in list(os.environ):
        if name.startswith("CUSTOMERKEY_") and name != "CUSTOMERKEY_TEST_POSTGRES_URL":
            monkeypatch.delenv(name)
    database_url = None if db_backend == "sqlite" else db_url
    env = {"TMPDIR": str(temp)}
    if database_url is not None:
        env["CUSTOMERKEY_DATABASE_URL"] = database_url
        monkeypatch.setenv("CUSTOMERKEY_DATABASE_URL", database_url)
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    src = Sources(run=secrets.token_hex(8))
    report = Report()
    cli = Cli(home, capsys)

    rt = Runtime.open(Settings(home=home, database_url=database_url))
    effective_url = rt.db.url
    try:
        # ---- phase 1: set up, import mail, upload files (in this process)
        setup_platform(rt, src)
        principals = create_principals(rt, src)
        alice = build_messages(src, "alice", 24, big=True)
        bob = build_messages(src, "bob", 9)
        carol = build_messages(src, "carol", 9)
        alice_mbox = outside / "src" / "alice.mbox"
        alice_stored = write_mbox(alice_mbox, alice)
        bob_maildir = mailbox.Maildir(str(outside / "src" / "bob-maildir"))
        for data in bob:
            bob_maildir.add(data)
        (outside / "src" / "carol-eml").mkdir()
        for n, data in enumerate(carol):
            (outside / "src" / "carol-eml" / f"{n:03d}.eml").write_bytes(data)

        mail = rt.mail
        mail.create_mailbox(OPERATOR, TENANT, "alice@contoso.com", kind="mailuser", policy="NA-DEP")
        assert mail.import_messages(OPERATOR, "alice@contoso.com", alice_mbox).imported == 24
        mail.create_mailbox(OPERATOR, TENANT, "bob@contoso.com")  # service-managed keys
        bob_dir = outside / "src" / "bob-maildir"
        assert mail.import_messages(OPERATOR, "bob@contoso.com", bob_dir).imported == 9
        mail.create_mailbox(OPERATOR, TENANT, "carol@contoso.com", policy="NA-DEP")
        carol_dir = outside / "src" / "carol-eml"
        assert mail.import_messages(OPERATOR, "carol@contoso.com", carol_dir).imported == 9
        single = build_messages(src, "single", 3)
        for data in single:
            mail.add_message(OPERATOR, "alice@contoso.com", data)

        rt.files.create_site(OPERATOR, SITE, title="Finance")
        rt.files.register(OPERATOR, TENANT, URI_A, URI_B)
        drain(rt)
        big = build_file(src, "big", CHUNK + 3 * MIB // 2 + 17, seed=1)
        sheet = build_file(src, "sheet", 3 * MIB + 5, seed=2, text=True)
        big_v2 = build_file(src, "big-v2", CHUNK + MIB + 3, seed=3)
        uploads = {"Shared Documents/big.bin": big, "Shared Documents/sheet.csv": sheet}
        for path, content in uploads.items():
            (outside / "src" / path.rsplit("/", 1)[1]).write_bytes(content)
            with (outside / "src" / path.rsplit("/", 1)[1]).open("rb") as handle:
                rt.files.upload(OPERATOR, SITE, path, handle, size_hint=len(content))
        (outside / "src" / "big-v2.bin").write_bytes(big_v2)
        with (outside / "src" / "big-v2.bin").open("rb") as handle:
            version = rt.files.upload(OPERATOR, SITE, "Shared Documents/big.bin", handle)
        assert (version.number, version.chunk_count) == (2, 2)

        src.keys += derived_keys(rt)
        src.confined += confined_needles(home)

        # the scanner finds every canary in the sources before it looks at the home folder
        prove = Scanner(src.canaries)
        found = prove.labels(
            b"".join([alice_mbox.read_bytes(), *bob, *carol, *single, big, sheet, big_v2])
        )
        assert found == {n.label for n in src.canaries}
        scanner = src.scanner()
        scan_home(scanner, home, report)  # the runtime open: WAL and -shm present

        # ---- phase 2: a server on the same home; a key roll; its worker runs the jobs
        install_loopback_resolver(DOMAIN)
        server = start_serve(home, outside / "serve.log", env)
        try:
            src.confined = confined_needles(home)  # the server made its TLS and token keys
            assert any(n.label.startswith("token-keys/") for n in src.confined)
            exercise_server(server, rt, src, principals)
            rt.vault.rotate_key(OPERATOR, VAULT_B, KEY_B)
            refreshed = cli("dep", "refresh", "NA-DEP", "--tenant", TENANT)
            assert refreshed["Name"] == "NA-DEP"
            roll = rt.files.roll(OPERATOR, TENANT, "secondary", URI_B)
            wait_for_job(rt, roll.id)
            src.keys += derived_keys(rt)
            scanner = src.scanner()
            scan_home(scanner, home, report)
        finally:
            status = server.stop()
            uninstall_loopback_resolver(DOMAIN)
        log = server.log_path.read_bytes()
        assert status == 0, log.decode(errors="replace")[-3000:]
        bugs = [
            ln
            for ln in log.decode(errors="replace").splitlines()
            if any(m in ln for m in BUG_MARKERS)
        ]
        assert not bugs, bugs
        # the log is the access log we think it is, and holds nothing of what we guard
        assert b"/oauth2/v2.0/token" in log and b"/unwrapkey" in log and b'"status":200' in log
        assert src.scanner().labels(log) == set(), "the serve log holds some of it"

        # ---- phase 3: re-key, move, versions, recycle bin, exports, backups, audit
        assert (job := mail.set_policy(OPERATOR, "bob@contoso.com", "NA-DEP")) is not None
        mail.move(OPERATOR, "carol@contoso.com")
        drain(rt)
        assert rt.jobs.get(job.id).state == "succeeded"
        items = mail.list_items(OPERATOR, "carol@contoso.com")
        gone = mail.read_item(OPERATOR, "carol@contoso.com", items[0].id)
        mail.delete_item(OPERATOR, "carol@contoso.com", items[0].id)
        rt.files.delete(OPERATOR, SITE, "Shared Documents/sheet.csv")
        rt.files.restore(OPERATOR, SITE, "Shared Documents/sheet.csv")
        for name, content in (("big.bin", big_v2), ("sheet.csv", sheet)):
            target = outside / "exports" / name
            cli("file", "get", SITE, f"Shared Documents/{name}", str(target))
            assert hashlib.sha256(target.read_bytes()).digest() == hashlib.sha256(content).digest()
        with (outside / "exports" / "big-v1.bin").open("wb") as handle:
            rt.files.download(OPERATOR, SITE, "Shared Documents/big.bin", handle, version=1)
        assert (outside / "exports" / "big-v1.bin").read_bytes() == big

        cli("mailbox", "export", "alice@contoso.com", str(outside / "exports" / "alice.mbox"))
        mail.export_messages(
            OPERATOR, "bob@contoso.com", outside / "exports" / "bob-eml", fmt="eml"
        )
        mail.export_messages(
            OPERATOR, "carol@contoso.com", outside / "exports" / "carol-md", fmt="maildir"
        )
        exported = mailbox.mbox(str(outside / "exports" / "alice.mbox"), create=False)
        try:
            assert [exported.get_bytes(k) for k in exported.iterkeys()] == [
                *alice_stored,
                *single,
            ]
        finally:
            exported.close()
        for vault, key in ((VAULT_A, KEY_A), (VAULT_B, KEY_B)):
            cli("key", "backup", vault, key, "--out", str(outside / "backups" / f"{key}.backup"))
        assert cli("audit", "verify")["Ok"] is True
        records = cli("audit", "show", "--limit", "100000")
        assert {"KeyImport", "KeyBackup", "KeyUnwrap"} <= {r["Operation"] for r in records}
        assert rt.audit_log.verify(OPERATOR).ok

        src.keys += derived_keys(rt)
        scanner = src.scanner()
        scan_home(scanner, home, report)
        scan_rows(scanner, effective_url, report)
    finally:
        rt.close()

    # ---- after everything closed: the home folder, the rows, the temp folder, the backups
    scan_home(scanner, home, report)
    scan_rows(scanner, effective_url, report)
    everything = src.scanner()
    temp_files = scan_outside(everything, [temp], "the temp folder")
    backups = sorted((outside / "backups").iterdir())
    assert len(backups) == 2 and all(p.stat().st_size > 1000 for p in backups)
    key_scanner = Scanner([*src.keys, *src.confined])
    assert scan_outside(key_scanner, backups, "the key backups") == 2

    # the exports are in the clear by design: proof the scanner would have seen the canaries
    mail_canaries = Scanner([n for n in src.canaries if not n.label.startswith("CANARY-FILE")])
    seen: set[str] = set()
    for path in sorted((outside / "exports").rglob("*")):
        if path.is_file():
            seen |= mail_canaries.labels(path.read_bytes())
    # every mail canary but those of the one deleted item
    assert seen == {n.label for n in mail_canaries.needles} - mail_canaries.labels(gone)
    assert mail_canaries.labels(gone)
    # and the content itself: tiles of every (small) message but the deleted one
    messages = [(label, data) for label, data in src.documents if len(data) < 100_000]
    tiles = Scanner([], messages)
    seen = set()
    for path in sorted((outside / "exports").rglob("*")):
        if path.is_file() and path.suffix != ".bin" and path.name != "sheet.csv":
            seen |= {label.split("[")[0] for label in tiles.labels(path.read_bytes())}
    gone_docs = {label.split("[")[0] for label in tiles.labels(gone)}
    assert seen >= {label for label, _ in messages} - gone_docs
    assert len(messages) > 40 and len(gone_docs) >= 1
    if db_backend != "sqlite":
        assert not (home / "customerkey.db").exists()  # the server used PostgreSQL too

    if db_backend == "sqlite":
        assert report.wal_bytes > 0, "no scan saw a SQLite WAL"
    assert report.files["blobs"] > 0 and report.files["token-keys"] > 0
    print(
        f"\nscanned the home folder {report.scans} times ({report.bytes / MIB:.1f} MiB, "
        f"largest WAL {report.wal_bytes} bytes), {report.rows} database values, "
        f"{temp_files} temp files, the serve log ({len(log)} bytes) and {len(backups)} "
        f"backups, for {len(scanner.needles)} needles and {scanner.tiles} content tiles"
    )
