"""The audit chain: what each record's ``hash`` is, and the check that walks a chain.

A record's canonical form is the compact, key-sorted JSON of its fields (sequence number,
time with microseconds, principal, operation, result, vault, key, version, request id,
details, and, when set, its scope: tenant, vault id, actor id, subject id; records written
before scopes existed hash without them). Its ``hash`` chains it to the record before it
(the first record chains to 64 zeros), in one of two versions, stored per record (``chain``):

- ``0`` (``PLAIN``), records written before migration 0010::

      hash = hex(SHA-256(prev_hash | canonical))

  Anyone who can write the database can recompute these, so a plain chain proves nothing to
  someone who doubts the database.

- ``1`` (``KEYED``), every record since::

      chain_key = HKDF-SHA256(ikm=master_key, salt=b"customerkey/audit-chain",
                              info=b"customerkey audit chain v1", length=32)
      hash = hex(HMAC-SHA256(chain_key, prev_hash | canonical))

  where the canonical form also holds ``"chain": 1``, so turning a keyed record into a plain
  one changes what it hashes. Without the master key nobody can compute a keyed hash, so an
  edited, inserted or reordered keyed record is detected even when the whole chain after it
  was rebuilt.

The stored version is a label: a record labelled plain whose hash is the keyed HMAC counts as
keyed (taking migration 0010 down and up again resets every label to plain). Once a keyed
record appears every later record must be keyed: a plain record after it is a
downgrade and ``ChainCheck`` reports it. What a rebuilt chain can still do without the key is
drop its tail, or turn *every* keyed record back into a plain one; only a signed checkpoint
kept outside the database (``audit.checkpoints``) detects those, and ``ChainCheck`` compares
the chain with the checkpoints it is given. This module is pure: no database, no clock.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from cryptography.hazmat.primitives.hashes import SHA256
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

GENESIS_HASH = "0" * 64
PLAIN = 0
KEYED = 1
CHAIN_KEY_SALT = b"customerkey/audit-chain"
CHAIN_KEY_INFO = b"customerkey audit chain v1"
# ``ChainCheck`` stops listing problems after this many (the first ones say what happened).
MAX_PROBLEMS = 20
_SCOPE = ("tenant", "vault_id", "actor_id", "subject_id")


class ChainKey:
    """The HMAC key of the keyed chain, derived from the master key (never stored)."""

    def __init__(self, master_key: bytes) -> None:
        if len(master_key) != 32:
            raise ValueError(f"master key must be 32 bytes, got {len(master_key)}")
        self._key = HKDF(
            algorithm=SHA256(), length=32, salt=CHAIN_KEY_SALT, info=CHAIN_KEY_INFO
        ).derive(master_key)

    def mac(self, data: bytes) -> str:
        return hmac.new(self._key, data, hashlib.sha256).hexdigest()


class ChainFields(Protocol):
    """What a record's hash covers (an ``AuditRow``, an ``AuditRecord``)."""

    @property
    def seq(self) -> int: ...

    @property
    def time(self) -> datetime: ...

    @property
    def principal(self) -> str: ...

    @property
    def operation(self) -> str: ...

    @property
    def result(self) -> str: ...

    @property
    def vault(self) -> str | None: ...

    @property
    def key(self) -> str | None: ...

    @property
    def version(self) -> str | None: ...

    @property
    def request_id(self) -> str | None: ...

    @property
    def details(self) -> Mapping[str, Any]: ...

    @property
    def tenant(self) -> str | None: ...

    @property
    def vault_id(self) -> str | None: ...

    @property
    def actor_id(self) -> str | None: ...

    @property
    def subject_id(self) -> str | None: ...


def fields(record: ChainFields) -> dict[str, Any]:
    """Every field a record's hash may cover, by name (scope fields None when unset): what
    ``canonical`` hashes and what an export writes, so a line can be re-hashed on its own."""
    return {
        "seq": record.seq,
        "time": record.time.isoformat(timespec="microseconds"),
        "principal": record.principal,
        "operation": record.operation,
        "result": record.result,
        "vault": record.vault,
        "key": record.key,
        "version": record.version,
        "request_id": record.request_id,
        "details": dict(record.details),
        **{name: getattr(record, name) for name in _SCOPE},
    }


def canonical(record: ChainFields, chain: int) -> bytes:
    """The bytes a record's hash covers, in chain version ``chain``: scope fields only when
    set (records written before scopes existed hash without them)."""
    body = {k: v for k, v in fields(record).items() if k not in _SCOPE or v is not None}
    if chain != PLAIN:
        body["chain"] = chain
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def plain_hash(prev_hash: str, data: bytes) -> str:
    return hashlib.sha256(prev_hash.encode("ascii") + data).hexdigest()


def record_hash(record: ChainFields, prev_hash: str, chain: int, key: ChainKey | None) -> str:
    """The hash ``record`` must carry after ``prev_hash`` in chain version ``chain``."""
    data = canonical(record, chain)
    if chain == PLAIN:
        return plain_hash(prev_hash, data)
    if chain != KEYED:
        raise ValueError(f"unknown audit chain version {chain}")
    if key is None:
        raise ValueError("a keyed audit record needs the chain key")
    return key.mac(prev_hash.encode("ascii") + data)


class ChainedRecord(ChainFields, Protocol):
    @property
    def prev_hash(self) -> str: ...

    @property
    def hash(self) -> str: ...

    @property
    def chain(self) -> int: ...


@dataclass
class ChainCheck:
    """Walks a chain record by record (``feed``), then ``finish`` compares it with the signed
    checkpoints it was given (``{seq: head hash}``; seq 0 is the empty log)."""

    key: ChainKey | None
    checkpoints: Mapping[int, str] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    records: int = 0
    legacy: int = 0
    keyed_from: int | None = None
    head_seq: int = 0
    head: str = GENESIS_HASH
    checkpoints_matched: int = 0

    @property
    def full(self) -> bool:
        return len(self.problems) >= MAX_PROBLEMS

    def _problem(self, text: str) -> None:
        if not self.full:
            self.problems.append(text)
            if self.full:
                self.problems.append(f"stopped after {MAX_PROBLEMS} problems")

    def _version(self, row: ChainedRecord) -> int:
        """The chain version ``row`` was written in. The stored one, except that a record
        stored as plain whose hash is the keyed HMAC is keyed: only the key's holder made it,
        and a migration taken down and up again (which drops and re-adds the column, as 0)
        leaves keyed records labelled plain."""
        if row.chain != PLAIN or self.key is None:
            return row.chain
        if record_hash(row, row.prev_hash, PLAIN, None) == row.hash:
            return PLAIN
        if record_hash(row, row.prev_hash, KEYED, self.key) == row.hash:
            return KEYED
        return PLAIN

    def feed(self, row: ChainedRecord) -> None:
        self.records += 1
        expected_seq = self.head_seq + 1
        if row.seq != expected_seq:
            self._problem(f"record {row.seq}: expected sequence number {expected_seq}")
        if row.prev_hash != self.head:
            self._problem(f"record {row.seq}: does not chain to the record before it")
        version = self._version(row)
        if version == PLAIN:
            self.legacy += 1
            if self.keyed_from is not None:
                self._problem(
                    f"record {row.seq}: not keyed, but the chain is keyed from record "
                    f"{self.keyed_from} on (downgraded to a plain hash)"
                )
        elif version == KEYED and self.keyed_from is None:
            self.keyed_from = row.seq
        if version not in (PLAIN, KEYED):
            self._problem(f"record {row.seq}: unknown chain version {version}")
        elif version == KEYED and self.key is None:
            self._problem(f"record {row.seq}: keyed, and this check was given no chain key")
        elif record_hash(row, row.prev_hash, version, self.key) != row.hash:
            self._problem(f"record {row.seq}: contents do not match its hash")
        signed = self.checkpoints.get(row.seq)
        if signed is not None:
            if signed == row.hash:
                self.checkpoints_matched += 1
            else:
                self._problem(
                    f"record {row.seq}: its hash is not the head a signed checkpoint recorded "
                    "(the log was rewritten after the checkpoint)"
                )
        self.head_seq, self.head = row.seq, row.hash

    def finish(self) -> list[str]:
        if self.checkpoints.get(0, GENESIS_HASH) != GENESIS_HASH:
            self._problem("a signed checkpoint of the empty log names a head other than genesis")
        elif 0 in self.checkpoints:
            self.checkpoints_matched += 1
        beyond = sorted(seq for seq in self.checkpoints if seq > self.head_seq)
        if beyond:
            self._problem(
                f"the log ends at record {self.head_seq}, but a signed checkpoint recorded "
                f"{beyond[-1]} records: records were cut off the end"
            )
        return self.problems


def check_chain(
    rows: Iterable[ChainedRecord],
    key: ChainKey | None,
    checkpoints: Mapping[int, str] | None = None,
) -> ChainCheck:
    """Walk ``rows`` (oldest first) and return the finished check."""
    check = ChainCheck(key=key, checkpoints=dict(checkpoints or {}))
    for row in rows:
        check.feed(row)
        if check.full:
            break
    check.finish()
    return check
