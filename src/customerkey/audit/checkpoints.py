"""Signed checkpoints of the audit chain: what they hold, how they are signed and checked.

A checkpoint says "the audit log of this installation held ``seq`` records and its newest
record's hash was ``head``", signed with Ed25519. Kept outside the database (``audit.sinks``),
it lets ``customerkey audit verify --checkpoint FILE`` detect what the keyed chain alone
cannot: records cut off the end (``seq`` is missing) and a chain rewritten from before the
checkpoint (the hash at ``seq`` differs; nobody without the master key can make a keyed chain
arrive at the same head).

The signing key is derived from the master key, so every host holding it signs alike and
nothing is stored::

    seed = HKDF-SHA256(ikm=master_key, salt=b"customerkey/audit-checkpoint",
                       info=b"customerkey audit checkpoint signing v1", length=32)
    private key = Ed25519 from the 32-byte seed

Its public key (``customerkey audit public-key``, PEM) is public: give it to whoever keeps the
checkpoints so they can check them without anything else. A checkpoint is one JSON object
(one line in a file, the message of a syslog line, the body of a webhook POST)::

    {"type": "customerkey.audit.checkpoint", "v": 1, "seq": 1234, "head": "<64 hex>",
     "time": "2026-12-20T09:00:00.000000+00:00", "installation": "<master key id>",
     "key_id": "<16 hex>", "signature": "<base64url, no padding>"}

``signature`` is Ed25519 over the compact, key-sorted JSON (UTF-8) of every other field;
``key_id`` is the first 16 hex digits of SHA-256 over the raw 32-byte public key.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.hashes import SHA256
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from customerkey.errors import BadParameter

CHECKPOINT_TYPE = "customerkey.audit.checkpoint"
CHECKPOINT_VERSION = 1
SIGNING_SALT = b"customerkey/audit-checkpoint"
SIGNING_INFO = b"customerkey audit checkpoint signing v1"
_HEX = frozenset("0123456789abcdef")


class InvalidCheckpoint(BadParameter):
    """A checkpoint is malformed, or its signature is not this installation's."""

    code = "InvalidCheckpoint"


@dataclass(frozen=True)
class Checkpoint:
    seq: int
    head: str
    time: str
    installation: str
    key_id: str
    signature: str = ""

    def signed_body(self) -> dict[str, Any]:
        body = asdict(self)
        del body["signature"]
        return {"type": CHECKPOINT_TYPE, "v": CHECKPOINT_VERSION, **body}

    def to_json(self) -> str:
        return json.dumps(
            {**self.signed_body(), "signature": self.signature},
            sort_keys=True,
            separators=(",", ":"),
        )


def _message(checkpoint: Checkpoint) -> bytes:
    return json.dumps(
        checkpoint.signed_body(), sort_keys=True, separators=(",", ":"), ensure_ascii=False
    ).encode()


def key_id_of(public_key: Ed25519PublicKey) -> str:
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class CheckpointSigner:
    """Signs checkpoints with the installation's checkpoint key, and checks them."""

    def __init__(self, master_key: bytes, installation: str) -> None:
        if len(master_key) != 32:
            raise ValueError(f"master key must be 32 bytes, got {len(master_key)}")
        seed = HKDF(algorithm=SHA256(), length=32, salt=SIGNING_SALT, info=SIGNING_INFO).derive(
            master_key
        )
        self._private = Ed25519PrivateKey.from_private_bytes(seed)
        self.public_key = self._private.public_key()
        self.key_id = key_id_of(self.public_key)
        self.installation = installation

    def public_key_pem(self) -> str:
        return self.public_key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ).decode("ascii")

    def sign(self, seq: int, head: str, time: datetime) -> Checkpoint:
        unsigned = Checkpoint(
            seq=seq,
            head=head,
            time=time.isoformat(timespec="microseconds"),
            installation=self.installation,
            key_id=self.key_id,
        )
        signature = _b64(self._private.sign(_message(unsigned)))
        return Checkpoint(**{**asdict(unsigned), "signature": signature})

    def check(self, checkpoint: Checkpoint) -> None:
        """Raise ``InvalidCheckpoint`` unless this installation's key signed ``checkpoint``."""
        check_signature(checkpoint, self.public_key)


def check_signature(checkpoint: Checkpoint, public_key: Ed25519PublicKey) -> None:
    try:
        public_key.verify(_unb64(checkpoint.signature), _message(checkpoint))
    except (InvalidSignature, ValueError, binascii.Error):
        raise InvalidCheckpoint(
            f"The checkpoint of record {checkpoint.seq} is not signed by this installation's "
            "checkpoint key (forged, altered, or another installation's)."
        ) from None


def parse_checkpoint(text: str) -> Checkpoint:
    """One checkpoint from its JSON; ``InvalidCheckpoint`` when it is not one."""
    try:
        data = json.loads(text)
    except ValueError:
        raise InvalidCheckpoint("A checkpoint is not valid JSON.") from None
    if not isinstance(data, dict) or data.get("type") != CHECKPOINT_TYPE:
        raise InvalidCheckpoint(f"A checkpoint must be a JSON object of type {CHECKPOINT_TYPE}.")
    if data.get("v") != CHECKPOINT_VERSION:
        raise InvalidCheckpoint(f"Unknown checkpoint version {data.get('v')!r}.")
    seq, head = data.get("seq"), data.get("head")
    if not isinstance(seq, int) or isinstance(seq, bool) or not 0 <= seq < 2**62:
        raise InvalidCheckpoint("A checkpoint's seq must be a record count.")
    if not isinstance(head, str) or len(head) != 64 or not set(head) <= _HEX:
        raise InvalidCheckpoint("A checkpoint's head must be 64 hex digits.")
    fields = ("time", "installation", "key_id", "signature")
    if not all(isinstance(data.get(name), str) for name in fields):
        raise InvalidCheckpoint(f"A checkpoint needs {', '.join(fields)} as strings.")
    return Checkpoint(seq=seq, head=head, **{name: data[name] for name in fields})


def read_checkpoints(path: Path) -> list[Checkpoint]:
    """Every checkpoint in ``path``: JSON lines (as the file sink writes them) or one JSON
    object. Blank lines are skipped; any other line that is not a checkpoint is an error."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise InvalidCheckpoint(f"{path} is not a checkpoint file (not UTF-8 text).") from None
    stripped = text.strip()
    if stripped.startswith("{") and "\n" in stripped:
        try:
            return [parse_checkpoint(json.dumps(json.loads(stripped)))]
        except ValueError:
            pass  # not one (pretty-printed) object: JSON lines
    found: list[Checkpoint] = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            found.append(parse_checkpoint(line))
        except InvalidCheckpoint as exc:
            raise InvalidCheckpoint(f"{path}, line {number}: {exc.message}") from None
    if not found:
        raise InvalidCheckpoint(f"{path} holds no checkpoint.")
    return found
