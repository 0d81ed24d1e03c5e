"""Property-based fuzzing of the parsers that take untrusted bytes: only the defined errors,
never a crash or a hang."""

from __future__ import annotations

import contextlib
import io
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from customerkey.clock import from_unix
from customerkey.crypto.aead import open_sealed, open_stream, parse_header, seal
from customerkey.errors import DecryptionFailed, InvalidBackup
from customerkey.vault.backup import (
    BackupHeader,
    BackupVersion,
    KeyBackup,
    decode_backup,
    encode_backup,
    read_backup_header,
)
from customerkey.workloads.mail import formats

KEY = bytes(range(32))
FAST = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _sealed() -> bytes:
    return seal(
        KEY,
        b"hello world" * 500,
        key_id="k",
        key_version="1",
        context={"a": "b"},
        segment_size=4096,
    )


SEALED = _sealed()


@FAST
@given(st.binary(max_size=2048))
def test_random_bytes_never_open_and_raise_only_decryption_failed(data: bytes) -> None:
    for attempt in (
        lambda: parse_header(data),
        lambda: open_sealed(KEY, data, context={"a": "b"}),
        lambda: open_stream(KEY, io.BytesIO(data), io.BytesIO(), context={"a": "b"}),
    ):
        try:
            attempt()
        except DecryptionFailed as failure:
            assert str(failure) == "Decryption failed."


@FAST
@given(
    st.integers(min_value=0, max_value=len(SEALED) - 1),
    st.integers(1, 255),
    st.integers(0, len(SEALED)),
)
def test_mutated_envelopes_fail_closed(position: int, flip: int, cut: int) -> None:
    mutated = bytearray(SEALED)
    mutated[position] ^= flip
    for candidate in (bytes(mutated), SEALED[:cut] if cut < len(SEALED) else bytes(mutated)):
        try:
            open_sealed(KEY, candidate, context={"a": "b"})
        except DecryptionFailed:
            continue
        raise AssertionError("a modified envelope opened")


def _backup() -> bytes:
    now = from_unix(1_700_000_000)
    version = BackupVersion(
        version="a" * 32,
        seq=1,
        kty="RSA",
        key_size=2048,
        key_ops=("wrapKey",),
        enabled=True,
        not_before=None,
        expires=None,
        created=now,
        updated=now,
        tags={},
        exportable=False,
        imported=False,
        n="AQAB",
        e="AQAB",
        private_der=b"\x30\x00",
    )
    backup = KeyBackup(
        header=BackupHeader(name="k", subscription="s", region="r", created=now),
        rotation_policy=None,
        versions=(version,),
    )
    return encode_backup(backup, master_key=KEY, master_key_id="m")


BACKUP = _backup()


@FAST
@given(st.binary(max_size=1024))
def test_random_backup_blobs_raise_only_invalid_backup(data: bytes) -> None:
    for attempt in (lambda: read_backup_header(data), lambda: decode_backup(data, master_key=KEY)):
        with contextlib.suppress(InvalidBackup):
            attempt()


@FAST
@given(st.integers(0, len(BACKUP) - 1), st.integers(1, 255))
def test_mutated_backups_are_rejected(position: int, flip: int) -> None:
    mutated = bytearray(BACKUP)
    mutated[position] ^= flip
    try:
        decode_backup(bytes(mutated), master_key=KEY)
    except InvalidBackup:
        return
    raise AssertionError("a modified backup decoded")


def test_intact_backup_decodes() -> None:
    assert decode_backup(BACKUP, master_key=KEY).versions[0].version == "a" * 32


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=4096), st.sampled_from(["mbox", "eml"]))
def test_importer_readers_take_any_bytes(data: bytes, fmt: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / ("in.mbox" if fmt == "mbox" else "in.eml")
        path.write_bytes(data)
        total = formats.count_messages(path, fmt)
        messages = list(formats.read_messages(path, fmt))
        assert total == len(messages)
        for folder, message in messages:
            assert folder == "Inbox" and isinstance(message, bytes)
            formats.received_time(message, from_unix(0))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.binary(max_size=512), max_size=5))
def test_maildir_reader_takes_any_files(files: list[bytes]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "md"
        for sub in ("cur", "new", "tmp"):
            (root / sub).mkdir(parents=True)
        for i, data in enumerate(files):
            (root / "new" / f"{i}.host").write_bytes(data)
        messages = list(formats.read_messages(root, "maildir"))
        assert sorted(m for _, m in messages) == sorted(files)
