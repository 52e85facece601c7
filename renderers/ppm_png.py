"""A binary PPM (P6) byte stream -> PNG, encoded as it arrives.

pdftoppm's own PNG output (libpng: adaptive row filters, zlib level 6) cost about twice its rasterisation at
300 dpi. Rows here go unfiltered through zlib at a low level, which for rendered documents (mostly flat colour)
is several times cheaper and only somewhat larger. The stream is never held whole: memory stays at one read
chunk plus the compressed output, whatever the page's shape (a 1-pixel-high page can have a 250 MB row).
"""

from __future__ import annotations

import re
import struct
import zlib

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_HEADER = re.compile(rb"P6\s+(\d+)\s+(\d+)\s+(\d+)\s")  # exactly one whitespace byte ends the header
_PARTIAL_HEADER = re.compile(rb"P?|P6[\s\d]*")
MAX_HEADER_BYTES = 64


class PpmError(ValueError):
    """The stream is not the 8-bit P6 image it should be (or is truncated)."""


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


class PpmToPng:
    """feed() the PPM bytes as they come, then finish() -> PNG bytes (RGB, 8 bits, filter 0 on every row)."""

    def __init__(self, level: int = 1):
        self._head = b""
        self._zip = zlib.compressobj(level)
        self._parts: list[bytes] = []
        self.size: tuple[int, int] | None = None
        self._row_bytes = 0
        self._left = 0  # pixel bytes still expected
        self._in_row = 0  # bytes of the current row already fed

    def feed(self, data: bytes) -> None:
        view = memoryview(data)
        if self.size is None:
            self._head += bytes(view)
            match = _HEADER.match(self._head)
            if match is None or match.group(3) != b"255":
                if match or len(self._head) >= MAX_HEADER_BYTES or not _PARTIAL_HEADER.fullmatch(self._head):
                    raise PpmError(f"not an 8-bit binary PPM: {self._head[:20]!r}")
                return
            width, height = int(match.group(1)), int(match.group(2))
            if width <= 0 or height <= 0:
                raise PpmError(f"empty image ({width}x{height})")
            self.size = (width, height)
            self._row_bytes, self._left = 3 * width, 3 * width * height
            view, self._head = memoryview(self._head)[match.end() :], b""
        if len(view) > self._left:
            raise PpmError("more pixel data than the header announces")
        self._left -= len(view)
        compress, parts = self._zip.compress, self._parts
        while view:
            if self._in_row == 0:
                parts.append(compress(b"\x00"))
            take = min(len(view), self._row_bytes - self._in_row)
            parts.append(compress(view[:take]))
            view = view[take:]
            self._in_row = (self._in_row + take) % self._row_bytes

    def finish(self) -> bytes:
        if self.size is None or self._left:
            raise PpmError("the image is truncated")
        width, height = self.size
        self._parts.append(self._zip.flush())
        header = _chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
        return PNG_SIGNATURE + header + _chunk(b"IDAT", b"".join(self._parts)) + _chunk(b"IEND", b"")
