"""Stream helpers of uploads and downloads: a source with a one-byte look-ahead (so an upload
knows when its input ended), a reader of at most one chunk of it, and a byte-counting writer."""

from __future__ import annotations

from typing import BinaryIO


class _Source:
    """A source stream with a one-byte look-ahead, so an upload knows when the input ended."""

    def __init__(self, src: BinaryIO) -> None:
        self._src = src
        self._ahead = b""

    def at_eof(self) -> bool:
        if self._ahead:
            return False
        self._ahead = self._read(1)
        return not self._ahead

    def _read(self, size: int) -> bytes:
        data = self._src.read(size)
        if data is None:
            raise BlockingIOError("the upload stream returned no data without reaching EOF")
        return data

    def readinto(self, buffer: memoryview, limit: int) -> int:
        size = min(len(buffer), limit)
        if size <= 0:
            return 0
        offset = 0
        if self._ahead:
            buffer[0] = self._ahead[0]
            self._ahead = b""
            offset = 1
            if size == 1:
                return 1
        readinto = getattr(self._src, "readinto", None)
        if readinto is not None:
            count = readinto(buffer[offset:size])
            if count is None:
                raise BlockingIOError("the upload stream returned no data without reaching EOF")
            return offset + int(count)
        data = self._read(size - offset)
        buffer[offset : offset + len(data)] = data
        return offset + len(data)


class _ChunkReader:
    """At most ``limit`` bytes of a ``_Source``: what one chunk envelope seals."""

    def __init__(self, source: _Source, limit: int) -> None:
        self._source = source
        self._left = limit
        self.count = 0

    def readinto(self, buffer: memoryview | bytearray) -> int:
        view = memoryview(buffer).cast("B")
        got = self._source.readinto(view, self._left)
        self._left -= got
        self.count += got
        return got

    def read(self, size: int = -1) -> bytes:
        size = self._left if size < 0 else min(size, self._left)
        buffer = bytearray(size)
        got = self.readinto(buffer)
        return bytes(buffer[:got])


class _Counting:
    """A write-only wrapper that counts bytes on their way to ``dst``."""

    def __init__(self, dst: BinaryIO) -> None:
        self._dst = dst
        self.count = 0

    def write(self, data: bytes | memoryview) -> int:
        self._dst.write(data)
        self.count += len(data)
        return len(data)
