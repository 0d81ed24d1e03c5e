"""The customerkey envelope: segmented AES-256-GCM with a versioned header and key commitment.

This module owns the envelope wire format, used for mailbox items, file chunks, vault key
material at rest and backup blobs. Every envelope names the key (id and version) that sealed it,
derives its own item key from that key and a random salt, commits to the key, and splits the
plaintext into segments sealed in the STREAM construction (as in Tink's streaming AEAD and the
AWS Encryption SDK's frames), so truncation, extension, reordering and splicing are detected and
content can be sealed and opened without holding it whole in memory.

Wire format, version 1 (all integers unsigned big-endian)::

    offset     size  field
    0          3     magic b"CKE"
    3          1     format version, 0x01
    4          2     K = length of the key id in bytes, 1..65535
    6          K     key id, UTF-8
    6+K        1     V = length of the key version in bytes, 0..255
    7+K        V     key version, UTF-8 (may be empty)
    7+K+V      32    salt, random per envelope
    39+K+V     4     S = segment size (plaintext bytes per full segment), 4096..16777216
    43+K+V     7     nonce prefix, random per envelope
    50+K+V     32    key commitment
    82+K+V           end of header; H = 82 + K + V

    H          ...   segments 0..N-1, each = AES-256-GCM ciphertext || 16-byte tag

Key derivation, once per envelope::

    okm = HKDF-SHA256(ikm=key (32 bytes), salt=salt, info=b"customerkey/envelope/v1", L=64)
    item_key   = okm[0:32]    the AES-256-GCM key for every segment of this envelope
    commitment = okm[32:64]   stored in the header; checked (constant time) before any decryption

Because each envelope has its own item key, the 2^32 random-nonce limit of a GCM key never
applies, and the commitment makes an envelope open under one key only.

Segments: a plaintext of P bytes is cut into N = P // S + 1 segments. Every segment but the last
holds exactly S plaintext bytes; the last holds P mod S bytes, so it is always shorter than S and
may be empty (a zero-length plaintext is one empty last segment). A reader can therefore tell the
last segment by its length alone: a chunk of S + 16 bytes is never last. Ciphertext length is
exactly H + P + 16 * N (see ``sealed_size``). At most 2^32 segments.

For segment i (0-based), with last = 1 for the final segment and 0 otherwise::

    nonce = nonce_prefix (7) || i as u32 (4) || last as u8 (1)            12 bytes
    aad   = header bytes (all H bytes) || encode_context(context)

so the header (key id, version, salt, segment size, prefix, commitment) and the caller's context
are bound to every segment.

Context encoding (``encode_context``): the mapping's entries sorted by key (code point order,
which is also UTF-8 byte order), encoded as ``u32 count`` then, per entry,
``u32 len(key) || key || u32 len(value) || value`` with keys and values in UTF-8. An empty
context encodes as four zero bytes.

Every failure to open (malformed header, commitment mismatch, wrong key, wrong context, a
tampered, truncated, extended, reordered or spliced segment) raises ``DecryptionFailed()`` with
the same message. Caller mistakes (a key of the wrong length, a segment size out of range, an id
that does not fit its length field) raise ``ValueError`` or ``TypeError``: they are programming
errors, not decryption failures. So is a non-blocking stream that has no data to give (the
streaming functions need blocking ones): ``BlockingIOError``, never a truncated envelope.

``seal`` and ``seal_stream`` accept keyword-only ``_salt`` and ``_nonce_prefix``. They exist only so
the known-answer vectors in ``tests/vectors`` can be reproduced byte for byte; production callers
must never pass them.

Length: one wire format (fixed, streamed and sealed forms) with its full specification in this
docstring; splitting it would separate the format from its only reader and writer.
"""

from __future__ import annotations

import hmac
import io
import os
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import BinaryIO

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from customerkey.errors import DecryptionFailed
from customerkey.rng import Rng, SystemRng

__all__ = [
    "DEFAULT_SEGMENT_SIZE",
    "FORMAT_VERSION",
    "KEY_SIZE",
    "MAGIC",
    "MAX_SEGMENT_SIZE",
    "MIN_SEGMENT_SIZE",
    "TAG_SIZE",
    "EnvelopeHeader",
    "encode_context",
    "open_sealed",
    "open_stream",
    "parse_header",
    "read_header",
    "seal",
    "seal_stream",
    "sealed_size",
]

MAGIC = b"CKE"
FORMAT_VERSION = 1
KEY_SIZE = 32
SALT_SIZE = 32
NONCE_PREFIX_SIZE = 7
COMMITMENT_SIZE = 32
TAG_SIZE = 16
DEFAULT_SEGMENT_SIZE = 1 << 20
MIN_SEGMENT_SIZE = 4096
MAX_SEGMENT_SIZE = 1 << 24
MAX_SEGMENTS = 1 << 32
MAX_KEY_ID_BYTES = 0xFFFF
MAX_KEY_VERSION_BYTES = 0xFF

_HKDF_INFO = b"customerkey/envelope/v1"
_SHA256 = hashes.SHA256()
_PREFIX = struct.Struct(">3sBH")
_TAIL = struct.Struct(f">{SALT_SIZE}sI{NONCE_PREFIX_SIZE}s{COMMITMENT_SIZE}s")
_NONCE = struct.Struct(f">{NONCE_PREFIX_SIZE}sIB")
_U32 = struct.Struct(">I")
_FIXED_HEADER_BYTES = _PREFIX.size + 1 + _TAIL.size
_EMPTY_CONTEXT: Mapping[str, str] = MappingProxyType({})
_EMPTY_CONTEXT_BYTES = _U32.pack(0)
_SYSTEM_RNG = SystemRng()
# A one-segment plaintext shorter than this is sealed with plain encrypt/decrypt, which is
# fastest for small items; larger ones are written in place (see _output_buffer).
_SMALL = 1 << 16


@dataclass(frozen=True, slots=True)
class EnvelopeHeader:
    """The parsed header of an envelope; ``to_bytes`` gives back the exact wire bytes.

    Obtain one from ``parse_header`` or ``read_header``, which validate every field.
    """

    key_id: str
    key_version: str
    salt: bytes
    segment_size: int
    nonce_prefix: bytes
    commitment: bytes

    @property
    def header_length(self) -> int:
        """Length in bytes of the header on the wire; the first segment starts here."""
        return (
            _FIXED_HEADER_BYTES
            + len(self.key_id.encode("utf-8"))
            + len(self.key_version.encode("utf-8"))
        )

    def to_bytes(self) -> bytes:
        return _pack_header(
            self.key_id.encode("utf-8"),
            self.key_version.encode("utf-8"),
            self.salt,
            self.segment_size,
            self.nonce_prefix,
            self.commitment,
        )


def encode_context(context: Mapping[str, str]) -> bytes:
    """The canonical bytes of a context mapping, as described in the module docstring."""
    if not context:
        return _EMPTY_CONTEXT_BYTES
    pack = _U32.pack
    parts = [pack(len(context))]
    try:
        # Code point order of the str keys is the byte order of their UTF-8 encodings.
        for name in sorted(context):
            name_bytes = name.encode()
            value_bytes = context[name].encode()
            parts += (pack(len(name_bytes)), name_bytes, pack(len(value_bytes)), value_bytes)
    except (AttributeError, TypeError, UnicodeEncodeError):
        raise _context_error(context) from None
    return b"".join(parts)


def _context_error(context: Mapping[str, str]) -> Exception:
    for name, value in context.items():
        if not isinstance(name, str) or not isinstance(value, str):
            return TypeError("context keys and values must be str")
    for name, value in context.items():
        for what, text in (("context key", name), ("context value", value)):
            try:
                text.encode()
            except UnicodeEncodeError:
                return ValueError(f"{what} is not encodable as UTF-8: {text!r}")
    return ValueError("context is not encodable")


def parse_header(data: bytes) -> EnvelopeHeader:
    """Parse the header at the start of ``data`` (which may hold the whole envelope).

    Lets a caller learn which key (id, version) sealed an envelope before choosing the key.
    Raises ``DecryptionFailed`` if the header is malformed or incomplete.
    """
    return _parse_header(memoryview(data))[0]


def read_header(src: BinaryIO) -> EnvelopeHeader:
    """Read exactly one header from ``src``, leaving it positioned at the first segment.

    Raises ``DecryptionFailed`` if the header is malformed or the stream ends inside it.
    """
    start = _read_exact(src, _PREFIX.size)
    if len(start) < _PREFIX.size:
        raise DecryptionFailed()
    magic, version, key_id_len = _PREFIX.unpack(start)
    if magic != MAGIC or version != FORMAT_VERSION or key_id_len == 0:
        raise DecryptionFailed()
    middle = _read_exact(src, key_id_len + 1)
    if len(middle) < key_id_len + 1:
        raise DecryptionFailed()
    rest_len = middle[-1] + _TAIL.size
    rest = _read_exact(src, rest_len)
    if len(rest) < rest_len:
        raise DecryptionFailed()
    return _parse_header(memoryview(b"".join((start, middle, rest))))[0]


def sealed_size(
    plaintext_len: int,
    *,
    key_id: str,
    key_version: str,
    segment_size: int = DEFAULT_SEGMENT_SIZE,
) -> int:
    """Exact length of the envelope ``seal`` produces for a plaintext of ``plaintext_len`` bytes."""
    if not isinstance(plaintext_len, int) or isinstance(plaintext_len, bool):
        raise TypeError(f"plaintext_len must be int, got {type(plaintext_len).__name__}")
    if plaintext_len < 0:
        raise ValueError(f"plaintext_len must not be negative, got {plaintext_len}")
    header_len = (
        _FIXED_HEADER_BYTES + len(_encode_key_id(key_id)) + len(_encode_key_version(key_version))
    )
    _check_segment_size(segment_size)
    segments = _segment_count(plaintext_len, segment_size)
    return header_len + plaintext_len + TAG_SIZE * segments


def seal(
    key: bytes,
    plaintext: bytes,
    *,
    key_id: str,
    key_version: str,
    context: Mapping[str, str] = _EMPTY_CONTEXT,
    segment_size: int = DEFAULT_SEGMENT_SIZE,
    rng: Rng = _SYSTEM_RNG,
    _salt: bytes | None = None,
    _nonce_prefix: bytes | None = None,
) -> bytes:
    """Seal ``plaintext`` under ``key`` (32 bytes) into one envelope.

    ``key_id`` and ``key_version`` name ``key`` in the header; ``context`` is bound to every
    segment and must be given again to open. ``_salt`` and ``_nonce_prefix`` are for
    known-answer tests only.
    """
    header, prefix, aead, aad = _begin_seal(
        key, key_id, key_version, context, segment_size, rng, _salt, _nonce_prefix
    )
    size = len(plaintext)
    full_segments = _segment_count(size, segment_size) - 1
    if full_segments == 0 and size < _SMALL:
        return header + aead.encrypt(_NONCE.pack(prefix, 0, 1), plaintext, aad)
    source = memoryview(plaintext)
    header_len = len(header)
    out = _output_buffer(header_len + size + TAG_SIZE * (full_segments + 1))
    with out.getbuffer() as view:
        view[:header_len] = header
        src_pos = 0
        dst_pos = header_len
        for index in range(full_segments):
            src_end = src_pos + segment_size
            dst_end = dst_pos + segment_size + TAG_SIZE
            nonce = _NONCE.pack(prefix, index, 0)
            aead.encrypt_into(nonce, source[src_pos:src_end], aad, view[dst_pos:dst_end])
            src_pos = src_end
            dst_pos = dst_end
        nonce = _NONCE.pack(prefix, full_segments, 1)
        aead.encrypt_into(nonce, source[src_pos:], aad, view[dst_pos:])
    return out.getvalue()


def open_sealed(
    key: bytes,
    ciphertext: bytes,
    *,
    context: Mapping[str, str] = _EMPTY_CONTEXT,
) -> bytes:
    """Open an envelope made by ``seal`` (or ``seal_stream``) and return the whole plaintext.

    Checks the key commitment first, then every segment; returns nothing unless all of them
    authenticate. Any failure raises ``DecryptionFailed()``.
    """
    _check_key(key)
    context_bytes = encode_context(context)
    source = memoryview(ciphertext)
    header, header_len = _parse_header(source)
    aead = _open_key(key, header)
    aad = bytes(source[:header_len]) + context_bytes
    body = source[header_len:]
    segment_size = header.segment_size
    chunk = segment_size + TAG_SIZE
    full_segments, last_len = divmod(len(body), chunk)
    if last_len < TAG_SIZE or full_segments >= MAX_SEGMENTS:
        raise DecryptionFailed()
    prefix = header.nonce_prefix
    size = full_segments * segment_size + last_len - TAG_SIZE
    try:
        if full_segments == 0 and size < _SMALL:
            return aead.decrypt(_NONCE.pack(prefix, 0, 1), body, aad)
        out = _output_buffer(size)
        with out.getbuffer() as view:
            src_pos = 0
            dst_pos = 0
            for index in range(full_segments):
                src_end = src_pos + chunk
                dst_end = dst_pos + segment_size
                nonce = _NONCE.pack(prefix, index, 0)
                aead.decrypt_into(nonce, body[src_pos:src_end], aad, view[dst_pos:dst_end])
                src_pos = src_end
                dst_pos = dst_end
            nonce = _NONCE.pack(prefix, full_segments, 1)
            aead.decrypt_into(nonce, body[src_pos:], aad, view[dst_pos:])
    except InvalidTag:
        raise DecryptionFailed() from None
    return out.getvalue()


def seal_stream(
    key: bytes,
    src: BinaryIO,
    dst: BinaryIO,
    *,
    key_id: str,
    key_version: str,
    context: Mapping[str, str] = _EMPTY_CONTEXT,
    segment_size: int = DEFAULT_SEGMENT_SIZE,
    rng: Rng = _SYSTEM_RNG,
    _salt: bytes | None = None,
    _nonce_prefix: bytes | None = None,
) -> int:
    """Seal everything ``src`` yields until EOF into ``dst``; return the bytes written.

    Reads ``segment_size`` bytes at a time (retrying short reads) into one reused buffer, so it
    holds two segment-sized buffers whatever the input length. The output is byte-identical to
    ``seal`` of the same plaintext with the same salt and nonce prefix. ``src`` must be blocking.
    """
    header, prefix, aead, aad = _begin_seal(
        key, key_id, key_version, context, segment_size, rng, _salt, _nonce_prefix
    )
    plain, sealed = _segment_buffers(segment_size)
    written = _write_all(dst, header)
    index = 0
    while True:
        got = _fill(src, plain)
        last = got < segment_size
        if not last and index == MAX_SEGMENTS - 1:
            raise ValueError("plaintext too long: more than 2**32 segments")
        nonce = _NONCE.pack(prefix, index, last)
        aead.encrypt_into(nonce, plain[:got], aad, sealed[: got + TAG_SIZE])
        written += _write_all(dst, sealed[: got + TAG_SIZE])
        if last:
            return written
        index += 1


def open_stream(
    key: bytes,
    src: BinaryIO,
    dst: BinaryIO,
    *,
    context: Mapping[str, str] = _EMPTY_CONTEXT,
) -> int:
    """Open an envelope read from ``src`` into ``dst``; return the plaintext bytes written.

    Each segment is authenticated before any of its bytes reach ``dst``, so ``dst`` never
    receives an unauthenticated byte. The envelope as a whole is only known to be complete when
    this returns: on ``DecryptionFailed`` (including a stream truncated at a segment boundary,
    which is detected at its end) ``dst`` may already hold the plaintext of earlier, authentic
    segments, and the caller must discard it.
    """
    _check_key(key)
    context_bytes = encode_context(context)
    header = read_header(src)
    aead = _open_key(key, header)
    aad = header.to_bytes() + context_bytes
    prefix = header.nonce_prefix
    segment_size = header.segment_size
    chunk = segment_size + TAG_SIZE
    # An envelope shorter than one full segment (most mail items) gets buffers of its own size:
    # two segment-sized ones (2 MiB by default, zero-filled) cost more than opening it.
    remaining = _remaining(src)
    small = remaining is not None and remaining < chunk
    if small:
        assert remaining is not None
        plain, sealed = _small_buffers(remaining)
    else:
        plain, sealed = _segment_buffers(segment_size)
    written = 0
    index = 0
    while True:
        got = _fill(src, sealed)
        if small and got == len(sealed):
            # The stream holds more than it said (it grew): go on with full-size buffers.
            small = False
            plain, bigger = _segment_buffers(segment_size)
            bigger[:got] = sealed[:got]
            sealed = bigger
            got += _fill(src, sealed[got:])
        last = got < chunk
        if got < TAG_SIZE or (not last and index == MAX_SEGMENTS - 1):
            raise DecryptionFailed()
        size = got - TAG_SIZE
        try:
            aead.decrypt_into(_NONCE.pack(prefix, index, last), sealed[:got], aad, plain[:size])
        except InvalidTag:
            raise DecryptionFailed() from None
        written += _write_all(dst, plain[:size])
        if last:
            return written
        index += 1


def _begin_seal(
    key: bytes,
    key_id: str,
    key_version: str,
    context: Mapping[str, str],
    segment_size: int,
    rng: Rng,
    salt: bytes | None,
    nonce_prefix: bytes | None,
) -> tuple[bytes, bytes, AESGCM, bytes]:
    """Validate the arguments; return (header bytes, nonce prefix, item AEAD, segment AAD)."""
    _check_key(key)
    key_id_bytes = _encode_key_id(key_id)
    key_version_bytes = _encode_key_version(key_version)
    _check_segment_size(segment_size)
    context_bytes = encode_context(context)
    if salt is None and nonce_prefix is None:
        fresh = rng.token_bytes(SALT_SIZE + NONCE_PREFIX_SIZE)
        salt, nonce_prefix = fresh[:SALT_SIZE], fresh[SALT_SIZE:]
    else:
        if salt is None:
            salt = rng.token_bytes(SALT_SIZE)
        if nonce_prefix is None:
            nonce_prefix = rng.token_bytes(NONCE_PREFIX_SIZE)
        _check_length("_salt", salt, SALT_SIZE)
        _check_length("_nonce_prefix", nonce_prefix, NONCE_PREFIX_SIZE)
    aead, commitment = _derive(key, salt)
    header = _pack_header(
        key_id_bytes, key_version_bytes, salt, segment_size, nonce_prefix, commitment
    )
    return header, nonce_prefix, aead, header + context_bytes


def _derive(key: bytes, salt: bytes) -> tuple[AESGCM, bytes]:
    hkdf = HKDF(algorithm=_SHA256, length=2 * KEY_SIZE, salt=salt, info=_HKDF_INFO)
    okm = hkdf.derive(key)
    return AESGCM(okm[:KEY_SIZE]), okm[KEY_SIZE:]


def _open_key(key: bytes, header: EnvelopeHeader) -> AESGCM:
    aead, commitment = _derive(key, header.salt)
    if not hmac.compare_digest(commitment, header.commitment):
        raise DecryptionFailed()
    return aead


def _pack_header(
    key_id: bytes,
    key_version: bytes,
    salt: bytes,
    segment_size: int,
    nonce_prefix: bytes,
    commitment: bytes,
) -> bytes:
    return b"".join(
        (
            _PREFIX.pack(MAGIC, FORMAT_VERSION, len(key_id)),
            key_id,
            bytes((len(key_version),)),
            key_version,
            _TAIL.pack(salt, segment_size, nonce_prefix, commitment),
        )
    )


def _parse_header(data: memoryview) -> tuple[EnvelopeHeader, int]:
    """The header at the start of ``data`` and its length in bytes."""
    size = len(data)
    if size < _FIXED_HEADER_BYTES:
        raise DecryptionFailed()
    magic, version, key_id_len = _PREFIX.unpack_from(data, 0)
    if magic != MAGIC or version != FORMAT_VERSION or key_id_len == 0:
        raise DecryptionFailed()
    offset = _PREFIX.size + key_id_len
    if size < offset + 1:
        raise DecryptionFailed()
    key_version_len = data[offset]
    tail_offset = offset + 1 + key_version_len
    if size < tail_offset + _TAIL.size:
        raise DecryptionFailed()
    salt, segment_size, nonce_prefix, commitment = _TAIL.unpack_from(data, tail_offset)
    if not MIN_SEGMENT_SIZE <= segment_size <= MAX_SEGMENT_SIZE:
        raise DecryptionFailed()
    try:
        key_id = str(data[_PREFIX.size : offset], "utf-8")
        key_version = str(data[offset + 1 : tail_offset], "utf-8")
    except UnicodeDecodeError:
        raise DecryptionFailed() from None
    header = EnvelopeHeader(key_id, key_version, salt, segment_size, nonce_prefix, commitment)
    return header, tail_offset + _TAIL.size


def _segment_count(plaintext_len: int, segment_size: int) -> int:
    count = plaintext_len // segment_size + 1
    if count > MAX_SEGMENTS:
        raise ValueError("plaintext too long: more than 2**32 segments")
    return count


def _check_key(key: bytes) -> None:
    if not isinstance(key, bytes | bytearray):
        raise TypeError(f"key must be bytes, got {type(key).__name__}")
    if len(key) != KEY_SIZE:
        raise ValueError(f"key must be {KEY_SIZE} bytes, got {len(key)}")


def _check_segment_size(segment_size: int) -> None:
    # A float would otherwise get as far as struct.pack; a bool is an int to isinstance.
    if not isinstance(segment_size, int) or isinstance(segment_size, bool):
        raise TypeError(f"segment_size must be int, got {type(segment_size).__name__}")
    if not MIN_SEGMENT_SIZE <= segment_size <= MAX_SEGMENT_SIZE:
        raise ValueError(f"segment_size must be between {MIN_SEGMENT_SIZE} and {MAX_SEGMENT_SIZE}")


def _check_length(name: str, value: bytes, size: int) -> None:
    if not isinstance(value, bytes | bytearray):
        raise TypeError(f"{name} must be bytes, got {type(value).__name__}")
    if len(value) != size:
        raise ValueError(f"{name} must be {size} bytes, got {len(value)}")


def _encode_key_id(key_id: str) -> bytes:
    if not isinstance(key_id, str):
        raise TypeError(f"key_id must be str, got {type(key_id).__name__}")
    encoded = _utf8(key_id, "key_id")
    if not 1 <= len(encoded) <= MAX_KEY_ID_BYTES:
        raise ValueError(
            f"key_id must be 1 to {MAX_KEY_ID_BYTES} bytes of UTF-8, got {len(encoded)}"
        )
    return encoded


def _encode_key_version(key_version: str) -> bytes:
    if not isinstance(key_version, str):
        raise TypeError(f"key_version must be str, got {type(key_version).__name__}")
    encoded = _utf8(key_version, "key_version")
    if len(encoded) > MAX_KEY_VERSION_BYTES:
        raise ValueError(
            f"key_version must be at most {MAX_KEY_VERSION_BYTES} bytes of UTF-8"
            f", got {len(encoded)}"
        )
    return encoded


def _utf8(value: str, what: str) -> bytes:
    try:
        return value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(f"{what} is not encodable as UTF-8: {value!r}") from None


def _output_buffer(size: int) -> io.BytesIO:
    """A zero-filled BytesIO of ``size`` bytes (``size`` > 0) to fill through ``getbuffer()``.

    Large results are written in place and handed out by ``getvalue()``, which CPython returns
    without copying. Assembling them from per-segment ``bytes`` instead costs a second large
    allocation, and the allocator returns those pages to the OS between calls, so every call
    page-faults: that alone ran 1 MiB seals at about an eighth of raw AES-GCM speed.
    """
    out = io.BytesIO()
    out.seek(size - 1)
    out.write(b"\0")
    return out


def _segment_buffers(segment_size: int) -> tuple[memoryview, memoryview]:
    """Reusable (plaintext, sealed) segment buffers, carved from one allocation.

    One allocation rather than two because two large live buffers make the allocator hand
    pages back to the OS after every call, and faulting them in again dominated 1 MiB streams.
    """
    both = memoryview(bytearray(2 * segment_size + TAG_SIZE))
    return both[:segment_size], both[segment_size:]


def _small_buffers(size: int) -> tuple[memoryview, memoryview]:
    """(plaintext, sealed) buffers for an envelope body of ``size`` bytes, one byte longer than
    needed so that ``_fill`` filling the sealed one whole shows the stream held more."""
    both = memoryview(bytearray(2 * size + 2))
    return both[: size + 1], both[size + 1 :]


def _remaining(src: BinaryIO) -> int | None:
    """How many bytes ``src`` holds from its position on, when that is cheap to know."""
    try:
        position = src.tell()
        try:
            return os.fstat(src.fileno()).st_size - position
        except (AttributeError, OSError):
            pass
        if isinstance(src, io.BytesIO):
            return len(src.getbuffer()) - position
    except (AttributeError, OSError, ValueError):
        pass
    return None


def _fill(src: BinaryIO, buffer: memoryview) -> int:
    """Fill ``buffer`` from ``src``, retrying short reads; less than full only at end of stream."""
    readinto = getattr(src, "readinto", None)
    size = len(buffer)
    got = 0
    while got < size:
        if readinto is not None:
            count = readinto(buffer[got:])
        else:
            data = src.read(size - got)
            count = None if data is None else len(data)
            if count:
                buffer[got : got + count] = data
        if count is None:
            # A non-blocking stream with no data now; treating it as EOF would end the envelope.
            raise BlockingIOError("stream returned no data without reaching EOF")
        if count == 0:
            break
        got += count
    return got


def _read_exact(src: BinaryIO, size: int) -> bytes:
    """Read ``size`` bytes, retrying short reads; fewer only at end of stream."""
    data = _read_some(src, size)
    if len(data) == size or not data:
        return data
    buffer = bytearray(data)
    while len(buffer) < size:
        more = _read_some(src, size - len(buffer))
        if not more:
            break
        buffer += more
    return bytes(buffer)


def _read_some(src: BinaryIO, size: int) -> bytes:
    data = src.read(size)
    if data is None:
        # As in _fill: a non-blocking stream with no data now is neither EOF nor tampering.
        raise BlockingIOError("stream returned no data without reaching EOF")
    return data


def _write_all(dst: BinaryIO, data: bytes | memoryview) -> int:
    written = dst.write(data)
    if written < len(data):
        # Raw (unbuffered) streams may accept only part of a write.
        view = memoryview(data)
        while written < len(data):
            written += dst.write(view[written:])
    return len(data)
