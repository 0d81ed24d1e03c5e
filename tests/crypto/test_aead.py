"""The segmented AES-256-GCM envelope: round trips, streaming, tampering, validation."""

from __future__ import annotations

import io
import re
import struct
from collections.abc import Mapping
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, BinaryIO, cast

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from customerkey.crypto import aead
from customerkey.crypto.aead import (
    EnvelopeHeader,
    encode_context,
    open_sealed,
    open_stream,
    parse_header,
    read_header,
    seal,
    seal_stream,
    sealed_size,
)
from customerkey.errors import DecryptionFailed
from customerkey.rng import SeededRng

KEY = bytes(range(32))
OTHER_KEY = bytes(range(1, 33))
KEY_ID = "https://contoso-a1.vault.localhost/keys/dep-root"
KEY_VERSION = "0f1e2d3c4b5a69788796a5b4c3d2e1f0"
SEG = 4096
CONTEXT = {"tenant": "contoso", "container": "mbx-0001", "item": "AAMkAD-42"}
FAILED = DecryptionFailed().message


def _raises(kind: type[Exception], message: str) -> AbstractContextManager[Any]:
    """``pytest.raises`` that wants exactly ``message``, not a message merely containing it."""
    return pytest.raises(kind, match=f"^{re.escape(message)}$")


def _plaintext(size: int, seed: int = 7) -> bytes:
    return SeededRng(seed).token_bytes(size)


def _seal(
    plaintext: bytes,
    *,
    key: bytes = KEY,
    context: Mapping[str, str] = CONTEXT,
    segment_size: int = SEG,
    key_id: str = KEY_ID,
    key_version: str = KEY_VERSION,
    seed: int = 1,
) -> bytes:
    return seal(
        key,
        plaintext,
        key_id=key_id,
        key_version=key_version,
        context=context,
        segment_size=segment_size,
        rng=SeededRng(seed),
    )


def _open_via_stream(
    ciphertext: bytes, *, key: bytes = KEY, context: Mapping[str, str] = CONTEXT
) -> bytes:
    out = io.BytesIO()
    written = open_stream(key, io.BytesIO(ciphertext), out, context=context)
    assert written == len(out.getvalue())
    return out.getvalue()


def _assert_fails(ciphertext: bytes, **kwargs: object) -> None:
    """Both openers reject ``ciphertext`` with the one, uninformative message."""
    with pytest.raises(DecryptionFailed) as one_shot:
        open_sealed(
            cast(bytes, kwargs.get("key", KEY)),
            ciphertext,
            context=cast(Mapping[str, str], kwargs.get("context", CONTEXT)),
        )
    with pytest.raises(DecryptionFailed) as streamed:
        _open_via_stream(ciphertext, **kwargs)  # type: ignore[arg-type]
    assert str(one_shot.value) == str(streamed.value) == FAILED
    for caught in (one_shot.value, streamed.value):
        # No chained exception may carry the reason (an InvalidTag, a struct error, ...).
        assert caught.__cause__ is None
        assert caught.__context__ is None or caught.__suppress_context__


class ShortReads(io.RawIOBase):
    """A source that hands out at most ``step`` bytes per call, like a socket or pipe."""

    def __init__(self, data: bytes, step: int) -> None:
        self._data = memoryview(data)
        self._pos = 0
        self._step = step

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: object) -> int:
        view = memoryview(cast(bytes, buffer)).cast("B")
        chunk = self._data[self._pos : self._pos + min(self._step, len(view))]
        view[: len(chunk)] = chunk
        self._pos += len(chunk)
        return len(chunk)


class ReadOnlySource:
    """Only ``read(n)``, short every time, no ``readinto``."""

    def __init__(self, data: bytes, step: int) -> None:
        self._data = data
        self._pos = 0
        self._step = step

    def read(self, n: int = -1) -> bytes:
        n = min(n, self._step)
        chunk = self._data[self._pos : self._pos + n]
        self._pos += len(chunk)
        return chunk


class TrickleWriter(io.RawIOBase):
    """A raw sink that accepts at most ``step`` bytes per write."""

    def __init__(self, step: int) -> None:
        self.data = bytearray()
        self._step = step

    def writable(self) -> bool:
        return True

    def write(self, b: object) -> int:
        chunk = bytes(memoryview(cast(bytes, b))[: self._step])
        self.data += chunk
        return len(chunk)


# --- round trips -------------------------------------------------------------------------

SIZES = [0, 1, SEG - 1, SEG, SEG + 1, 2 * SEG, 3 * SEG + 17, 70_000]


@pytest.mark.parametrize("size", SIZES)
def test_round_trip_one_shot(size: int) -> None:
    plaintext = _plaintext(size)
    ciphertext = _seal(plaintext)
    assert open_sealed(KEY, ciphertext, context=CONTEXT) == plaintext
    assert len(ciphertext) == sealed_size(
        size, key_id=KEY_ID, key_version=KEY_VERSION, segment_size=SEG
    )
    header = parse_header(ciphertext)
    segments = (len(ciphertext) - header.header_length - size) // aead.TAG_SIZE
    assert segments == size // SEG + 1


@pytest.mark.parametrize("size", SIZES)
def test_stream_matches_one_shot_both_ways(size: int) -> None:
    plaintext = _plaintext(size)
    one_shot = _seal(plaintext, seed=3)
    out = io.BytesIO()
    written = seal_stream(
        KEY,
        io.BytesIO(plaintext),
        out,
        key_id=KEY_ID,
        key_version=KEY_VERSION,
        context=CONTEXT,
        segment_size=SEG,
        rng=SeededRng(3),
    )
    assert out.getvalue() == one_shot
    assert written == len(one_shot)
    assert _open_via_stream(one_shot) == plaintext
    assert open_sealed(KEY, out.getvalue(), context=CONTEXT) == plaintext


def test_default_segment_size_round_trip() -> None:
    plaintext = _plaintext((1 << 20) + 5)
    ciphertext = seal(KEY, plaintext, key_id="k", key_version="1")
    header = parse_header(ciphertext)
    assert header.segment_size == aead.DEFAULT_SEGMENT_SIZE == 1 << 20
    assert len(ciphertext) == header.header_length + len(plaintext) + 2 * aead.TAG_SIZE
    assert open_sealed(KEY, ciphertext) == plaintext
    assert _open_via_stream(ciphertext, context={}) == plaintext


def test_empty_context_is_the_default() -> None:
    ciphertext = seal(KEY, b"x", key_id="k", key_version="v")
    assert open_sealed(KEY, ciphertext) == b"x"
    assert open_sealed(KEY, ciphertext, context={}) == b"x"


@pytest.mark.parametrize("source", ["raw-short-reads", "read-only-short-reads"])
@pytest.mark.parametrize("step", [1, 7, SEG - 1, SEG + 3])
def test_stream_tolerates_short_reads(source: str, step: int) -> None:
    plaintext = _plaintext(3 * SEG + 100)
    expected = _seal(plaintext, seed=5)

    def make(data: bytes) -> BinaryIO:
        if source == "raw-short-reads":
            return cast(BinaryIO, ShortReads(data, step))
        return cast(BinaryIO, ReadOnlySource(data, step))

    out = io.BytesIO()
    seal_stream(
        KEY,
        make(plaintext),
        out,
        key_id=KEY_ID,
        key_version=KEY_VERSION,
        context=CONTEXT,
        segment_size=SEG,
        rng=SeededRng(5),
    )
    assert out.getvalue() == expected
    opened = io.BytesIO()
    assert open_stream(KEY, make(expected), opened, context=CONTEXT) == len(plaintext)
    assert opened.getvalue() == plaintext


def test_stream_handles_partial_writes() -> None:
    plaintext = _plaintext(2 * SEG + 9)
    expected = _seal(plaintext, seed=9)
    sink = TrickleWriter(1000)
    written = seal_stream(
        KEY,
        io.BytesIO(plaintext),
        cast(BinaryIO, sink),
        key_id=KEY_ID,
        key_version=KEY_VERSION,
        context=CONTEXT,
        segment_size=SEG,
        rng=SeededRng(9),
    )
    assert bytes(sink.data) == expected and written == len(expected)
    plain_sink = TrickleWriter(333)
    assert open_stream(KEY, io.BytesIO(expected), cast(BinaryIO, plain_sink), context=CONTEXT)
    assert bytes(plain_sink.data) == plaintext


def test_seal_stream_reads_one_segment_at_a_time() -> None:
    requests: list[int] = []

    class Recording(io.BytesIO):
        def readinto(self, buffer: object) -> int:
            requests.append(len(memoryview(cast(bytes, buffer))))
            return super().readinto(cast(bytearray, buffer))

    seal_stream(
        KEY,
        Recording(_plaintext(5 * SEG)),
        io.BytesIO(),
        key_id="k",
        key_version="v",
        segment_size=SEG,
    )
    assert max(requests) == SEG


def test_each_seal_is_fresh() -> None:
    first = seal(KEY, b"same", key_id="k", key_version="v")
    second = seal(KEY, b"same", key_id="k", key_version="v")
    assert first != second
    assert parse_header(first).salt != parse_header(second).salt
    assert parse_header(first).nonce_prefix != parse_header(second).nonce_prefix
    assert _seal(b"same", seed=4) == _seal(b"same", seed=4)


def test_unicode_ids_and_context() -> None:
    context = {"tenant": "Ünïcødé", "é": "ü", "": ""}
    ciphertext = _seal(b"hi", key_id="clé-🔑", key_version="", context=context)
    header = parse_header(ciphertext)
    assert (header.key_id, header.key_version) == ("clé-🔑", "")
    assert open_sealed(KEY, ciphertext, context=dict(reversed(context.items()))) == b"hi"


# --- header ------------------------------------------------------------------------------


def test_parse_header_names_the_key() -> None:
    ciphertext = _seal(_plaintext(10), seed=11)
    header = parse_header(ciphertext)
    assert isinstance(header, EnvelopeHeader)
    assert header.key_id == KEY_ID
    assert header.key_version == KEY_VERSION
    assert header.segment_size == SEG
    assert len(header.salt) == 32 and len(header.nonce_prefix) == 7
    assert len(header.commitment) == 32
    assert header.header_length == 82 + len(KEY_ID) + len(KEY_VERSION)
    assert header.to_bytes() == ciphertext[: header.header_length]
    assert parse_header(ciphertext[: header.header_length]) == header


def test_header_layout_is_as_documented() -> None:
    ciphertext = _seal(b"", key_id="kid", key_version="v1")
    assert ciphertext[:4] == b"CKE\x01"
    assert ciphertext[4:6] == b"\x00\x03" and ciphertext[6:9] == b"kid"
    assert ciphertext[9:12] == b"\x02v1"
    assert struct.unpack(">I", ciphertext[44:48]) == (SEG,)
    assert len(ciphertext) == 82 + 3 + 2 + aead.TAG_SIZE


def test_read_header_leaves_stream_at_first_segment() -> None:
    ciphertext = _seal(_plaintext(100))
    src = io.BytesIO(ciphertext)
    header = read_header(src)
    assert src.tell() == header.header_length
    assert header == parse_header(ciphertext)
    short = cast(BinaryIO, ShortReads(ciphertext, 3))
    assert read_header(short) == header


def _header_with(**changes: object) -> bytes:
    fields: dict[str, object] = {
        "magic": b"CKE",
        "version": 1,
        "key_id": b"kid",
        "key_version": b"v",
        "salt": bytes(32),
        "segment_size": SEG,
        "nonce_prefix": bytes(7),
        "commitment": bytes(32),
    }
    fields.update(changes)
    key_id = cast(bytes, fields["key_id"])
    key_version = cast(bytes, fields["key_version"])
    return b"".join(
        (
            cast(bytes, fields["magic"]),
            bytes((cast(int, fields["version"]),)),
            struct.pack(">H", cast(int, fields.get("key_id_len", len(key_id)))),
            key_id,
            bytes((len(key_version),)),
            key_version,
            cast(bytes, fields["salt"]),
            struct.pack(">I", cast(int, fields["segment_size"])),
            cast(bytes, fields["nonce_prefix"]),
            cast(bytes, fields["commitment"]),
        )
    )


@pytest.mark.parametrize(
    "prefix",
    [
        pytest.param(b"CKF\x01\xff\xff", id="bad-magic"),
        pytest.param(b"CKE\x02\xff\xff", id="unknown-version"),
        pytest.param(b"CKE\x01\x00\x00", id="empty-key-id"),
    ],
)
def test_read_header_stops_at_a_bad_prefix(prefix: bytes) -> None:
    """A stream that is not an envelope is refused after its first 6 bytes, without waiting
    for the key id its length field announces (up to 64 KiB)."""
    src = io.BytesIO(prefix + bytes(70_000))
    with pytest.raises(DecryptionFailed) as caught:
        read_header(src)
    assert str(caught.value) == FAILED
    assert src.tell() == 6


def test_well_formed_synthetic_header_parses() -> None:
    header = parse_header(_header_with())
    assert (header.key_id, header.key_version, header.segment_size) == ("kid", "v", SEG)


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"CKE", id="magic-only"),
        pytest.param(_header_with(magic=b"CKF"), id="bad-magic"),
        pytest.param(_header_with(version=2), id="unknown-version"),
        pytest.param(_header_with(version=0), id="version-zero"),
        pytest.param(_header_with(key_id=b""), id="empty-key-id"),
        pytest.param(_header_with(key_id=b"\xff\xfe"), id="key-id-not-utf8"),
        pytest.param(_header_with(key_version=b"\xc3"), id="key-version-not-utf8"),
        pytest.param(_header_with(segment_size=4095), id="segment-too-small"),
        pytest.param(_header_with(segment_size=(1 << 24) + 1), id="segment-too-large"),
        pytest.param(_header_with(segment_size=0), id="segment-zero"),
        pytest.param(_header_with(key_id_len=500), id="key-id-length-past-end"),
        pytest.param(_header_with()[:-1], id="truncated-commitment"),
        pytest.param(_header_with()[:10], id="truncated-mid-header"),
    ],
)
def test_malformed_header_fails(data: bytes) -> None:
    with pytest.raises(DecryptionFailed) as parsed:
        parse_header(data)
    with pytest.raises(DecryptionFailed) as read:
        read_header(io.BytesIO(data))
    assert str(parsed.value) == str(read.value) == FAILED
    _assert_fails(data + bytes(40))


# --- tampering ---------------------------------------------------------------------------


def _regions(ciphertext: bytes) -> dict[str, tuple[int, int]]:
    """Byte ranges of every field and segment part of an envelope, by name."""
    header = parse_header(ciphertext)
    k = len(header.key_id.encode())
    v = len(header.key_version.encode())
    regions = {
        "magic": (0, 3),
        "format-version": (3, 4),
        "key-id-length": (4, 6),
        "key-id": (6, 6 + k),
        "key-version-length": (6 + k, 7 + k),
        "key-version": (7 + k, 7 + k + v),
        "salt": (7 + k + v, 39 + k + v),
        "segment-size": (39 + k + v, 43 + k + v),
        "nonce-prefix": (43 + k + v, 50 + k + v),
        "commitment": (50 + k + v, 82 + k + v),
    }
    pos = header.header_length
    index = 0
    while pos < len(ciphertext):
        end = min(pos + header.segment_size + aead.TAG_SIZE, len(ciphertext))
        regions[f"segment-{index}-body"] = (pos, end - aead.TAG_SIZE)
        regions[f"segment-{index}-tag"] = (end - aead.TAG_SIZE, end)
        pos = end
        index += 1
    return regions


TAMPER_PLAINTEXT = _plaintext(2 * SEG + 100, seed=21)
TAMPER_CIPHERTEXT = _seal(TAMPER_PLAINTEXT, seed=21)
TAMPER_REGIONS = _regions(TAMPER_CIPHERTEXT)


def _flip(data: bytes, position: int, mask: int = 0x01) -> bytes:
    changed = bytearray(data)
    changed[position] ^= mask
    return bytes(changed)


@pytest.mark.parametrize("region", sorted(TAMPER_REGIONS))
def test_tamper_each_region_fails(region: str) -> None:
    start, end = TAMPER_REGIONS[region]
    assert end > start, region
    for position in sorted({start, (start + end) // 2, end - 1}):
        for mask in (0x01, 0x80, 0xFF):
            _assert_fails(_flip(TAMPER_CIPHERTEXT, position, mask))


def test_tamper_every_byte_fails() -> None:
    ciphertext = _seal(_plaintext(SEG + 50, seed=22), key_id="k", key_version="1", seed=22)
    messages = set()
    for position in range(len(ciphertext)):
        with pytest.raises(DecryptionFailed) as caught:
            open_sealed(KEY, _flip(ciphertext, position), context=CONTEXT)
        messages.add(str(caught.value))
    assert messages == {FAILED}


def test_edited_key_id_fails_even_with_the_right_key() -> None:
    same_length = TAMPER_CIPHERTEXT.replace(b"dep-root", b"dep-r00t", 1)
    assert same_length != TAMPER_CIPHERTEXT
    assert parse_header(same_length).key_id.endswith("dep-r00t")
    _assert_fails(same_length)
    header = parse_header(TAMPER_CIPHERTEXT)
    other = EnvelopeHeader(
        "other-key",
        header.key_version,
        header.salt,
        header.segment_size,
        header.nonce_prefix,
        header.commitment,
    )
    _assert_fails(other.to_bytes() + TAMPER_CIPHERTEXT[header.header_length :])
    bumped = EnvelopeHeader(
        header.key_id,
        "ffffffffffffffffffffffffffffffff",
        header.salt,
        header.segment_size,
        header.nonce_prefix,
        header.commitment,
    )
    _assert_fails(bumped.to_bytes() + TAMPER_CIPHERTEXT[header.header_length :])


def test_changed_segment_size_fails() -> None:
    header = parse_header(TAMPER_CIPHERTEXT)
    for size in (SEG * 2, SEG + 16):
        edited = EnvelopeHeader(
            header.key_id,
            header.key_version,
            header.salt,
            size,
            header.nonce_prefix,
            header.commitment,
        )
        _assert_fails(edited.to_bytes() + TAMPER_CIPHERTEXT[header.header_length :])


# --- truncation, extension, reordering, splicing ----------------------------------------

CHUNK = SEG + aead.TAG_SIZE
BODY = parse_header(TAMPER_CIPHERTEXT).header_length


@pytest.mark.parametrize(
    "length",
    [
        pytest.param(0, id="nothing"),
        pytest.param(BODY - 1, id="inside-header"),
        pytest.param(BODY, id="header-only"),
        pytest.param(BODY + 15, id="shorter-than-a-tag"),
        pytest.param(BODY + 100, id="mid-first-segment"),
        pytest.param(BODY + CHUNK - 1, id="first-segment-minus-one"),
        pytest.param(BODY + CHUNK, id="after-first-segment"),
        pytest.param(BODY + CHUNK + 1, id="one-byte-into-second"),
        pytest.param(BODY + 2 * CHUNK, id="drop-last-segment"),
        pytest.param(BODY + 2 * CHUNK + 16, id="last-segment-tag-only"),
        pytest.param(len(TAMPER_CIPHERTEXT) - 1, id="last-byte"),
    ],
)
def test_truncation_fails(length: int) -> None:
    _assert_fails(TAMPER_CIPHERTEXT[:length])


@pytest.mark.parametrize(
    "suffix",
    [
        pytest.param(b"\x00", id="one-byte"),
        pytest.param(bytes(16), id="empty-segment-sized"),
        pytest.param(TAMPER_CIPHERTEXT[-(100 + 16) :], id="last-segment-again"),
        pytest.param(TAMPER_CIPHERTEXT[BODY : BODY + CHUNK], id="first-segment-again"),
    ],
)
def test_extension_fails(suffix: bytes) -> None:
    _assert_fails(TAMPER_CIPHERTEXT + suffix)


def test_reordered_segments_fail() -> None:
    first = TAMPER_CIPHERTEXT[BODY : BODY + CHUNK]
    second = TAMPER_CIPHERTEXT[BODY + CHUNK : BODY + 2 * CHUNK]
    rest = TAMPER_CIPHERTEXT[BODY + 2 * CHUNK :]
    _assert_fails(TAMPER_CIPHERTEXT[:BODY] + second + first + rest)


def test_dropped_middle_segment_fails() -> None:
    _assert_fails(TAMPER_CIPHERTEXT[: BODY + CHUNK] + TAMPER_CIPHERTEXT[BODY + 2 * CHUNK :])


def test_splice_between_items_with_same_key_fails() -> None:
    other_plaintext = _plaintext(2 * SEG + 100, seed=23)
    other = _seal(other_plaintext, seed=23)
    assert open_sealed(KEY, other, context=CONTEXT) == other_plaintext
    middle = slice(BODY + CHUNK, BODY + 2 * CHUNK)
    spliced = TAMPER_CIPHERTEXT[: middle.start] + other[middle] + TAMPER_CIPHERTEXT[middle.stop :]
    _assert_fails(spliced)
    _assert_fails(other[:BODY] + TAMPER_CIPHERTEXT[BODY:])
    _assert_fails(TAMPER_CIPHERTEXT[: BODY + 2 * CHUNK] + other[BODY + 2 * CHUNK :])


def test_splice_with_same_nonce_material_still_fails_under_other_context() -> None:
    left = _seal(b"a" * 10, context={"item": "1"}, seed=30)
    right = _seal(b"a" * 10, context={"item": "2"}, seed=30)
    assert left[:BODY] == right[:BODY]
    _assert_fails(left, context={"item": "2"})
    assert open_sealed(KEY, right, context={"item": "2"}) == b"a" * 10


# --- wrong key, wrong context ------------------------------------------------------------


def test_wrong_key_fails() -> None:
    _assert_fails(TAMPER_CIPHERTEXT, key=OTHER_KEY)
    _assert_fails(TAMPER_CIPHERTEXT, key=bytes(32))


@pytest.mark.parametrize(
    "context",
    [
        pytest.param({**CONTEXT, "item": "AAMkAD-43"}, id="changed-value"),
        pytest.param({**CONTEXT, "extra": ""}, id="added-key"),
        pytest.param({k: v for k, v in CONTEXT.items() if k != "item"}, id="removed-key"),
        pytest.param({}, id="empty"),
        pytest.param(
            {"Tenant": "contoso", "container": "mbx-0001", "item": "AAMkAD-42"}, id="case"
        ),
    ],
)
def test_wrong_context_fails(context: dict[str, str]) -> None:
    _assert_fails(TAMPER_CIPHERTEXT, context=context)


def test_context_given_at_seal_is_required_to_open() -> None:
    ciphertext = _seal(b"data", context={})
    _assert_fails(ciphertext, context={"tenant": "contoso"})


def test_context_insertion_order_does_not_matter() -> None:
    reordered = dict(reversed(list(CONTEXT.items())))
    assert open_sealed(KEY, TAMPER_CIPHERTEXT, context=reordered) == TAMPER_PLAINTEXT


# --- streaming failure semantics --------------------------------------------------------


def test_open_stream_writes_only_authenticated_segments() -> None:
    tampered = _flip(TAMPER_CIPHERTEXT, BODY + CHUNK + 5)
    out = io.BytesIO()
    with pytest.raises(DecryptionFailed):
        open_stream(KEY, io.BytesIO(tampered), out, context=CONTEXT)
    assert out.getvalue() == TAMPER_PLAINTEXT[:SEG]


def test_open_stream_detects_truncation_at_the_end() -> None:
    out = io.BytesIO()
    with pytest.raises(DecryptionFailed):
        open_stream(KEY, io.BytesIO(TAMPER_CIPHERTEXT[: BODY + 2 * CHUNK]), out, context=CONTEXT)
    assert out.getvalue() == TAMPER_PLAINTEXT[: 2 * SEG]


def test_open_stream_writes_nothing_when_the_key_is_wrong() -> None:
    out = io.BytesIO()
    with pytest.raises(DecryptionFailed):
        open_stream(OTHER_KEY, io.BytesIO(TAMPER_CIPHERTEXT), out, context=CONTEXT)
    assert out.getvalue() == b""


# --- context encoding --------------------------------------------------------------------


def test_encode_context_is_canonical() -> None:
    assert encode_context({}) == b"\x00\x00\x00\x00"
    assert encode_context({"b": "2", "a": "1"}) == (
        b"\x00\x00\x00\x02\x00\x00\x00\x01a\x00\x00\x00\x011\x00\x00\x00\x01b\x00\x00\x00\x012"
    )
    assert encode_context({"a": "1", "b": "2"}) == encode_context({"b": "2", "a": "1"})
    assert encode_context({"a": "bc"}) != encode_context({"ab": "c"})
    assert encode_context({"a": ""}) != encode_context({})
    assert (
        encode_context({"é": "x"}) == b"\x00\x00\x00\x01\x00\x00\x00\x02\xc3\xa9\x00\x00\x00\x01x"
    )


def test_encode_context_rejects_non_strings() -> None:
    with _raises(TypeError, "context keys and values must be str"):
        encode_context(cast(Mapping[str, str], {"a": 1}))
    with _raises(TypeError, "context keys and values must be str"):
        encode_context(cast(Mapping[str, str], {"a": "1", 2: "b"}))
    with _raises(ValueError, "context value is not encodable as UTF-8: '\\ud800'"):
        encode_context({"a": "\ud800"})
    with _raises(ValueError, "context key is not encodable as UTF-8: '\\udcff'"):
        encode_context({"ok": "fine", "\udcff": "x"})


def test_encode_context_reports_an_unencodable_mapping_it_cannot_explain() -> None:
    class Flaky(dict[str, str]):
        """Fails while being encoded, yet every entry encodes when looked at again."""

        def __getitem__(self, name: str) -> str:
            raise TypeError("not now")

    with _raises(ValueError, "context is not encodable"):
        encode_context(Flaky({"a": "b"}))


# --- caller mistakes are ValueError / TypeError, not DecryptionFailed -------------------


def test_key_length_is_checked() -> None:
    with _raises(ValueError, "key must be 32 bytes, got 16"):
        seal(bytes(16), b"x", key_id="k", key_version="v")
    with _raises(ValueError, "key must be 32 bytes, got 31"):
        open_sealed(bytes(31), TAMPER_CIPHERTEXT)
    with _raises(ValueError, "key must be 32 bytes, got 0"):
        open_stream(b"", io.BytesIO(TAMPER_CIPHERTEXT), io.BytesIO())
    with _raises(ValueError, "key must be 32 bytes, got 33"):
        seal_stream(bytes(33), io.BytesIO(), io.BytesIO(), key_id="k", key_version="v")
    with _raises(TypeError, "key must be bytes, got str"):
        seal(cast(bytes, "k" * 32), b"x", key_id="k", key_version="v")
    with _raises(TypeError, "key must be bytes, got memoryview"):
        open_sealed(cast(bytes, memoryview(KEY)), TAMPER_CIPHERTEXT)
    # bytearray keys are accepted.
    assert open_sealed(cast(bytes, bytearray(KEY)), TAMPER_CIPHERTEXT, context=CONTEXT) == (
        TAMPER_PLAINTEXT
    )


@pytest.mark.parametrize("segment_size", [0, 4095, (1 << 24) + 1, -1])
def test_segment_size_is_checked(segment_size: int) -> None:
    message = "segment_size must be between 4096 and 16777216"
    with _raises(ValueError, message):
        seal(KEY, b"x", key_id="k", key_version="v", segment_size=segment_size)
    with _raises(ValueError, message):
        seal_stream(
            KEY, io.BytesIO(), io.BytesIO(), key_id="k", key_version="v", segment_size=segment_size
        )
    with _raises(ValueError, message):
        sealed_size(1, key_id="k", key_version="v", segment_size=segment_size)


@pytest.mark.parametrize(
    "segment_size,type_name",
    [(4096.0, "float"), (True, "bool"), ("4096", "str"), (None, "NoneType")],
)
def test_segment_size_must_be_an_int(segment_size: object, type_name: str) -> None:
    message = f"segment_size must be int, got {type_name}"
    size = cast(int, segment_size)
    with _raises(TypeError, message):
        seal(KEY, b"x", key_id="k", key_version="v", segment_size=size)
    with _raises(TypeError, message):
        seal_stream(KEY, io.BytesIO(), io.BytesIO(), key_id="k", key_version="v", segment_size=size)
    with _raises(TypeError, message):
        sealed_size(1, key_id="k", key_version="v", segment_size=size)


@pytest.mark.parametrize("size", [4096, 1 << 24])
def test_segment_size_bounds_are_accepted(size: int) -> None:
    plaintext = _plaintext(4097)  # two segments of the smallest size, one of the largest
    ciphertext = seal(KEY, plaintext, key_id="k", key_version="", segment_size=size)
    assert parse_header(ciphertext).segment_size == size
    assert len(ciphertext) == 83 + 4097 + aead.TAG_SIZE * (4097 // size + 1)
    assert open_sealed(KEY, ciphertext) == plaintext
    assert _open_via_stream(ciphertext, context={}) == plaintext


def test_ids_are_checked() -> None:
    with _raises(ValueError, "key_id must be 1 to 65535 bytes of UTF-8, got 0"):
        seal(KEY, b"x", key_id="", key_version="v")
    with _raises(ValueError, "key_id must be 1 to 65535 bytes of UTF-8, got 65536"):
        seal(KEY, b"x", key_id="k" * 65536, key_version="v")
    with _raises(ValueError, "key_id must be 1 to 65535 bytes of UTF-8, got 65536"):
        seal(KEY, b"x", key_id="\u00e9" * 32768, key_version="v")  # counted in bytes
    with _raises(ValueError, "key_version must be at most 255 bytes of UTF-8, got 256"):
        seal(KEY, b"x", key_id="k", key_version="v" * 256)
    with _raises(ValueError, "key_id is not encodable as UTF-8: '\\udcff'"):
        seal(KEY, b"x", key_id="\udcff", key_version="v")
    with _raises(ValueError, "key_version is not encodable as UTF-8: 'v\\ud800'"):
        seal(KEY, b"x", key_id="k", key_version="v\ud800")
    with _raises(TypeError, "key_id must be str, got bytes"):
        seal(KEY, b"x", key_id=cast(str, b"k"), key_version="v")
    with _raises(TypeError, "key_version must be str, got int"):
        seal(KEY, b"x", key_id="k", key_version=cast(str, 1))
    long_id = "k" * 65535
    ciphertext = seal(KEY, b"x", key_id=long_id, key_version="v" * 255)
    assert parse_header(ciphertext).key_id == long_id
    assert len(ciphertext) == sealed_size(
        1, key_id=long_id, key_version="v" * 255, segment_size=aead.DEFAULT_SEGMENT_SIZE
    )


def test_test_hooks_are_checked() -> None:
    with _raises(ValueError, "_salt must be 32 bytes, got 31"):
        seal(KEY, b"x", key_id="k", key_version="v", _salt=bytes(31))
    with _raises(ValueError, "_nonce_prefix must be 7 bytes, got 8"):
        seal(KEY, b"x", key_id="k", key_version="v", _nonce_prefix=bytes(8))
    with _raises(TypeError, "_salt must be bytes, got str"):
        seal(KEY, b"x", key_id="k", key_version="v", _salt=cast(bytes, "s" * 32))
    fixed = {"_salt": bytes(32), "_nonce_prefix": bytes(7)}
    assert seal(KEY, b"x", key_id="k", key_version="v", **fixed) == seal(  # type: ignore[arg-type]
        KEY,
        b"x",
        key_id="k",
        key_version="v",
        **fixed,  # type: ignore[arg-type]
    )


def test_sealed_size() -> None:
    assert sealed_size(0, key_id="k", key_version="", segment_size=SEG) == 83 + 16
    assert sealed_size(SEG, key_id="k", key_version="", segment_size=SEG) == 83 + SEG + 32
    assert sealed_size(SEG - 1, key_id="k", key_version="", segment_size=SEG) == 83 + SEG - 1 + 16
    assert sealed_size(5, key_id="kid", key_version="v1") == 82 + 3 + 2 + 5 + 16
    with _raises(ValueError, "plaintext_len must not be negative, got -1"):
        sealed_size(-1, key_id="k", key_version="", segment_size=SEG)
    with _raises(TypeError, "plaintext_len must be int, got float"):
        sealed_size(1.0, key_id="k", key_version="", segment_size=SEG)  # type: ignore[arg-type]
    with _raises(TypeError, "key_id must be str, got NoneType"):
        sealed_size(1, key_id=cast(str, None), key_version="")


# --- the fresh salt and nonce prefix ------------------------------------------------------


class CountingRng:
    """Hands out 0, 1, 2, ... as bytes and records how many bytes each call asked for."""

    def __init__(self) -> None:
        self.requests: list[int] = []
        self._next = 0

    def token_bytes(self, n: int) -> bytes:
        self.requests.append(n)
        start = self._next
        self._next += n
        return bytes(range(start, start + n))

    def randbelow(self, n: int) -> int:
        raise AssertionError("sealing never asks for a number")


def test_salt_and_nonce_prefix_come_from_one_draw_of_39_bytes() -> None:
    rng = CountingRng()
    header = parse_header(seal(KEY, b"x", key_id="k", key_version="v", rng=rng))
    assert rng.requests == [39]
    assert header.salt == bytes(range(32))
    assert header.nonce_prefix == bytes(range(32, 39))
    streamed = CountingRng()
    out = io.BytesIO()
    seal_stream(KEY, io.BytesIO(b"x"), out, key_id="k", key_version="v", rng=streamed)
    assert streamed.requests == [39]
    assert parse_header(out.getvalue()) == header


def test_a_test_hook_given_alone_draws_only_the_other_value() -> None:
    rng = CountingRng()
    salt = bytes(range(100, 132))
    header = parse_header(seal(KEY, b"x", key_id="k", key_version="v", rng=rng, _salt=salt))
    assert rng.requests == [7]
    assert (header.salt, header.nonce_prefix) == (salt, bytes(range(7)))
    rng = CountingRng()
    prefix = bytes(range(200, 207))
    header = parse_header(
        seal(KEY, b"x", key_id="k", key_version="v", rng=rng, _nonce_prefix=prefix)
    )
    assert rng.requests == [32]
    assert (header.salt, header.nonce_prefix) == (bytes(range(32)), prefix)


def test_the_nonce_prefix_is_the_one_every_segment_uses() -> None:
    """Open the segments by hand with the header's prefix: the prefix in the header is the
    one the segments were sealed with, never a constant."""
    rng = CountingRng()
    plaintext = _plaintext(SEG + 5)
    ciphertext = seal(KEY, plaintext, key_id="k", key_version="v", segment_size=SEG, rng=rng)
    header = parse_header(ciphertext)
    okm = HKDF(hashes.SHA256(), 64, header.salt, b"customerkey/envelope/v1").derive(KEY)
    gcm = AESGCM(okm[:32])
    aad = ciphertext[: header.header_length] + encode_context({})
    body = ciphertext[header.header_length :]
    first = gcm.decrypt(bytes(range(32, 39)) + b"\x00\x00\x00\x00\x00", body[:CHUNK], aad)
    last = gcm.decrypt(bytes(range(32, 39)) + b"\x00\x00\x00\x01\x01", body[CHUNK:], aad)
    assert first + last == plaintext


# --- truncated headers -------------------------------------------------------------------


@pytest.mark.parametrize("key_id_length", [1, 75, 76, 77, 300])
@pytest.mark.parametrize(
    "key_version", [pytest.param("", id="no-version"), pytest.param("v" * 255, id="long-version")]
)
def test_every_truncation_of_a_header_fails_alike(key_id_length: int, key_version: str) -> None:
    """Every cut inside the header, including right after the key id (where the version
    length byte is missing: past the fixed header size once the key id is 76 bytes or
    longer) and right after the version."""
    ciphertext = _seal(b"", key_id="k" * key_id_length, key_version=key_version, seed=50)
    header_length = 82 + key_id_length + len(key_version)
    assert parse_header(ciphertext).header_length == header_length
    for length in range(header_length):
        data = ciphertext[:length]
        with pytest.raises(DecryptionFailed) as parsed:
            parse_header(data)
        with pytest.raises(DecryptionFailed) as read:
            read_header(io.BytesIO(data))
        with pytest.raises(DecryptionFailed) as short:
            read_header(cast(BinaryIO, ShortReads(data, 5)))
        for caught in (parsed, read, short):
            assert str(caught.value) == FAILED
            assert caught.value.__context__ is None


def test_a_key_id_length_past_the_end_fails_at_each_boundary() -> None:
    header = _header_with(key_id=b"k" * 100)
    # The key id length claims one more byte than there is before the version length byte.
    for claimed in (101, 100 + 1 + 1 + 1, len(header)):
        edited = header[:4] + struct.pack(">H", claimed) + header[6:]
        with pytest.raises(DecryptionFailed):
            parse_header(edited)
        with pytest.raises(DecryptionFailed):
            read_header(io.BytesIO(edited))


# --- sources that are not ordinary files -------------------------------------------------


class NothingYet:
    """A non-blocking source: ``read`` hands out ``data`` ``step`` bytes at a time, then
    returns None (no data now, not EOF) instead of b""."""

    def __init__(self, data: bytes, step: int = 1 << 30) -> None:
        self._data = data
        self._pos = 0
        self._step = step

    def read(self, n: int = -1) -> bytes | None:
        chunk = self._data[self._pos : self._pos + min(n, self._step)]
        self._pos += len(chunk)
        return chunk or None


NO_DATA = "stream returned no data without reaching EOF"


@pytest.mark.parametrize(
    "available",
    [
        pytest.param(0, id="nothing"),
        pytest.param(4, id="inside-the-prefix"),
        pytest.param(8, id="inside-the-key-id"),
        pytest.param(BODY - 1, id="inside-the-tail"),
        pytest.param(BODY, id="header-only"),
        pytest.param(BODY + 100, id="inside-a-segment"),
    ],
)
def test_a_non_blocking_source_without_data_is_not_end_of_stream(available: int) -> None:
    for step in (3, 1 << 30):
        source = cast(BinaryIO, NothingYet(TAMPER_CIPHERTEXT[:available], step))
        with _raises(BlockingIOError, NO_DATA):
            open_stream(KEY, source, io.BytesIO(), context=CONTEXT)
    if available < BODY:
        with _raises(BlockingIOError, NO_DATA):
            read_header(cast(BinaryIO, NothingYet(TAMPER_CIPHERTEXT[:available])))


def test_a_non_blocking_read_only_source_is_not_end_of_stream_when_sealing() -> None:
    with _raises(BlockingIOError, NO_DATA):
        seal_stream(
            KEY,
            cast(BinaryIO, NothingYet(b"0123456789", step=4)),
            io.BytesIO(),
            key_id="k",
            key_version="v",
            segment_size=SEG,
        )


class GrowingFile(io.FileIO):
    """A file another writer appends ``rest`` to just as the body starts being read, after
    its size was looked at."""

    def __init__(self, path: Path, rest: bytes) -> None:
        super().__init__(path, "r")
        self._path = path
        self._rest = rest

    def readinto(self, buffer: Any) -> int | None:
        if self._rest:
            with open(self._path, "ab") as writer:
                writer.write(self._rest)
            self._rest = b""
        return super().readinto(buffer)


@pytest.mark.parametrize(
    "size", [pytest.param(100, id="still-one-segment"), pytest.param(2 * SEG + 50, id="3-segments")]
)
@pytest.mark.parametrize("present", [1, 10, 116])
def test_open_stream_reads_a_file_that_grows_while_it_is_read(
    tmp_path: Path, size: int, present: int
) -> None:
    plaintext = _plaintext(size, seed=60)
    ciphertext = _seal(plaintext, seed=60)
    cut = BODY + present
    path = tmp_path / "growing.cke"
    path.write_bytes(ciphertext[:cut])
    out = io.BytesIO()
    with GrowingFile(path, ciphertext[cut:]) as source:
        assert open_stream(KEY, cast(BinaryIO, source), out, context=CONTEXT) == size
    assert out.getvalue() == plaintext


def test_open_stream_of_a_grown_file_still_detects_tampering(tmp_path: Path) -> None:
    ciphertext = _flip(TAMPER_CIPHERTEXT, BODY + CHUNK + 7)
    path = tmp_path / "growing.cke"
    path.write_bytes(ciphertext[: BODY + 10])
    out = io.BytesIO()
    with (
        GrowingFile(path, ciphertext[BODY + 10 :]) as source,
        pytest.raises(DecryptionFailed),
    ):
        open_stream(KEY, cast(BinaryIO, source), out, context=CONTEXT)
    assert out.getvalue() == TAMPER_PLAINTEXT[:SEG]


class RecordingFile(io.FileIO):
    def __init__(self, path: Path) -> None:
        super().__init__(path, "r")
        self.requests: list[int] = []

    def readinto(self, buffer: Any) -> int | None:
        self.requests.append(len(memoryview(buffer)))
        return super().readinto(buffer)


class RecordingBytes(io.BytesIO):
    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.requests: list[int] = []

    def readinto(self, buffer: Any) -> int:
        self.requests.append(len(memoryview(buffer)))
        return super().readinto(buffer)


def test_open_stream_sizes_its_buffers_to_a_small_envelope(tmp_path: Path) -> None:
    """A body shorter than one segment is read into a buffer one byte longer than the body
    (so a stream that grew shows itself); a longer or unsized one into a segment buffer."""
    small = _seal(b"m" * 100)
    path = tmp_path / "small.cke"
    path.write_bytes(small)
    with RecordingFile(path) as on_disk:
        assert open_stream(KEY, cast(BinaryIO, on_disk), io.BytesIO(), context=CONTEXT) == 100
    in_memory = RecordingBytes(small)
    assert open_stream(KEY, in_memory, io.BytesIO(), context=CONTEXT) == 100
    assert on_disk.requests[0] == in_memory.requests[0] == 116 + 1
    # The header was read first: the remaining size is counted from where the body starts.
    offset = RecordingBytes(b"junk" + small)
    offset.seek(4)
    assert open_stream(KEY, offset, io.BytesIO(), context=CONTEXT) == 100
    assert offset.requests[0] == 117
    large = RecordingBytes(TAMPER_CIPHERTEXT)
    assert open_stream(KEY, large, io.BytesIO(), context=CONTEXT) == len(TAMPER_PLAINTEXT)
    assert large.requests[0] == CHUNK
    exact = _seal(_plaintext(SEG), seed=61)  # a full segment and an empty last one
    whole = RecordingBytes(exact)
    assert open_stream(KEY, whole, io.BytesIO(), context=CONTEXT) == SEG
    assert whole.requests[0] == CHUNK


# --- the 2**32 segment cap ---------------------------------------------------------------


def test_sealed_size_at_the_segment_cap() -> None:
    most = (1 << 32) * SEG - 1  # 2**32 - 1 full segments and a last one of SEG - 1 bytes
    assert sealed_size(most, key_id="k", key_version="", segment_size=SEG) == (
        83 + most + 16 * (1 << 32)
    )
    with _raises(ValueError, "plaintext too long: more than 2**32 segments"):
        sealed_size(most + 1, key_id="k", key_version="", segment_size=SEG)


@pytest.fixture
def three_segments_at_most(monkeypatch: pytest.MonkeyPatch) -> None:
    """The cap lowered to 3 segments, so the code paths at the cap run on small inputs."""
    monkeypatch.setattr(aead, "MAX_SEGMENTS", 3)


FOUR_SEGMENTS = _seal(_plaintext(3 * SEG, seed=62), seed=62)
THREE_SEGMENTS = _seal(_plaintext(3 * SEG - 1, seed=63), seed=63)


@pytest.mark.usefixtures("three_segments_at_most")
def test_sealing_past_the_segment_cap_is_refused() -> None:
    message = "plaintext too long: more than 2**32 segments"
    with _raises(ValueError, message):
        _seal(_plaintext(3 * SEG))
    with _raises(ValueError, message):
        seal_stream(
            KEY,
            io.BytesIO(_plaintext(3 * SEG)),
            io.BytesIO(),
            key_id=KEY_ID,
            key_version=KEY_VERSION,
            segment_size=SEG,
        )
    with _raises(ValueError, message):
        sealed_size(3 * SEG, key_id="k", key_version="", segment_size=SEG)
    out = io.BytesIO()
    written = seal_stream(
        KEY,
        io.BytesIO(_plaintext(3 * SEG - 1, seed=63)),
        out,
        key_id=KEY_ID,
        key_version=KEY_VERSION,
        context=CONTEXT,
        segment_size=SEG,
        rng=SeededRng(63),
    )
    assert out.getvalue() == THREE_SEGMENTS and written == len(THREE_SEGMENTS)


@pytest.mark.usefixtures("three_segments_at_most")
def test_opening_past_the_segment_cap_fails() -> None:
    _assert_fails(FOUR_SEGMENTS)
    plaintext = _plaintext(3 * SEG - 1, seed=63)
    assert open_sealed(KEY, THREE_SEGMENTS, context=CONTEXT) == plaintext
    assert _open_via_stream(THREE_SEGMENTS) == plaintext


# --- properties --------------------------------------------------------------------------


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    plaintext=st.binary(max_size=3 * 4096 + 50),
    segment_size=st.integers(min_value=4096, max_value=6000),
    context=st.dictionaries(st.text(max_size=5), st.text(max_size=5), max_size=3),
    seed=st.integers(min_value=0, max_value=2**32),
)
def test_property_round_trip(
    plaintext: bytes, segment_size: int, context: dict[str, str], seed: int
) -> None:
    ciphertext = seal(
        KEY,
        plaintext,
        key_id="k",
        key_version="v",
        context=context,
        segment_size=segment_size,
        rng=SeededRng(seed),
    )
    assert len(ciphertext) == sealed_size(
        len(plaintext), key_id="k", key_version="v", segment_size=segment_size
    )
    assert open_sealed(KEY, ciphertext, context=context) == plaintext
    streamed = io.BytesIO()
    seal_stream(
        KEY,
        cast(BinaryIO, ShortReads(plaintext, 1000)),
        streamed,
        key_id="k",
        key_version="v",
        context=context,
        segment_size=segment_size,
        rng=SeededRng(seed),
    )
    assert streamed.getvalue() == ciphertext
    assert _open_via_stream(ciphertext, context=context) == plaintext


PROPERTY_CIPHERTEXT = _seal(_plaintext(2 * SEG + 33, seed=40), seed=40)


@settings(max_examples=300, deadline=None)
@given(
    position=st.integers(min_value=0, max_value=len(PROPERTY_CIPHERTEXT) - 1),
    mask=st.integers(min_value=1, max_value=255),
)
def test_property_any_single_byte_change_fails(position: int, mask: int) -> None:
    _assert_fails(_flip(PROPERTY_CIPHERTEXT, position, mask))


def test_non_blocking_source_is_not_mistaken_for_end_of_stream() -> None:
    class WouldBlock(io.RawIOBase):
        def __init__(self) -> None:
            self._calls = 0

        def readable(self) -> bool:
            return True

        def readinto(self, buffer: object) -> int | None:
            self._calls += 1
            if self._calls == 1:
                memoryview(cast(bytearray, buffer))[:10] = b"0123456789"
                return 10
            return None

    with pytest.raises(BlockingIOError):
        seal_stream(
            KEY,
            cast(BinaryIO, WouldBlock()),
            io.BytesIO(),
            key_id="k",
            key_version="v",
            segment_size=SEG,
        )
