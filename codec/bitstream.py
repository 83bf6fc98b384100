"""The ``.vqc`` container: magic, version, a checksummed header, checksummed payload chunks.

Layout (all integers little-endian)::

    magic      4 bytes   b"\\x89VQC"  (the high byte catches 7-bit transfers, as in PNG)
    version    1 byte    FORMAT_VERSION
    header     u32 length, then that many bytes of UTF-8 JSON (an object), then u32 CRC-32 of them
    chunks     u32 count, then per chunk: u32 length, the bytes, u32 CRC-32 of them

Every length is checked against hard limits and against the bytes actually present **before**
anything is allocated, so a hostile or truncated file fails with :class:`BitstreamError`
(a ``ValueError``) quickly and in bounded memory. No pickle; the header is plain JSON whose
fields the codec validates. What the header and chunks mean (modality, model hash, rate point,
shapes, code layout) is defined by the codec that writes them.
"""

from __future__ import annotations

import json
import struct
import zlib
from typing import Any, Sequence

__all__ = ["BitstreamError", "MAGIC", "FORMAT_VERSION", "write_container", "read_container"]

MAGIC = b"\x89VQC"
FORMAT_VERSION = 1
MAX_HEADER_BYTES = 64 * 1024
MAX_CHUNKS = 1 << 20
MAX_CHUNK_BYTES = 1 << 31

_U32 = struct.Struct("<I")


class BitstreamError(ValueError):
    """A file that is not a valid ``.vqc`` stream of a version this build reads."""


def _crc(data: bytes) -> int:
    return zlib.crc32(data) & 0xFFFFFFFF


def write_container(header: dict[str, Any], chunks: Sequence[bytes]) -> bytes:
    """Serialise a header (JSON-able dict) and payload chunks into one ``.vqc`` byte string."""
    head = json.dumps(header, separators=(",", ":"), sort_keys=True, allow_nan=False).encode()
    if len(head) > MAX_HEADER_BYTES:
        raise ValueError(f"header of {len(head)} bytes exceeds {MAX_HEADER_BYTES}")
    if len(chunks) > MAX_CHUNKS:
        raise ValueError(f"{len(chunks)} chunks exceed {MAX_CHUNKS}")
    parts = [MAGIC, bytes([FORMAT_VERSION]), _U32.pack(len(head)), head, _U32.pack(_crc(head)), _U32.pack(len(chunks))]
    for chunk in chunks:
        chunk = bytes(chunk)
        if len(chunk) > MAX_CHUNK_BYTES:
            raise ValueError("chunk too large")
        parts += [_U32.pack(len(chunk)), chunk, _U32.pack(_crc(chunk))]
    return b"".join(parts)


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = memoryview(data)
        self.pos = 0

    def take(self, n: int, what: str) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise BitstreamError(f"truncated file: {what} needs {n} bytes, {len(self.data) - self.pos} left")
        out = self.data[self.pos : self.pos + n].tobytes()
        self.pos += n
        return out

    def u32(self, what: str) -> int:
        return _U32.unpack(self.take(4, what))[0]


def read_container(data: bytes) -> tuple[dict[str, Any], list[bytes]]:
    """Parse and verify a ``.vqc`` byte string -> ``(header, chunks)``.

    Raises :class:`BitstreamError` for a foreign file, an unknown version, a truncated or
    corrupted file (any CRC mismatch), or limits exceeded.
    """
    r = _Reader(data)
    if len(data) < 5 or r.take(4, "magic") != MAGIC:
        raise BitstreamError("not a .vqc file (bad magic bytes)")
    version = r.take(1, "version")[0]
    if version != FORMAT_VERSION:
        raise BitstreamError(f"unsupported .vqc version {version} (this build reads version {FORMAT_VERSION})")
    n = r.u32("header length")
    if n > MAX_HEADER_BYTES:
        raise BitstreamError(f"header length {n} exceeds {MAX_HEADER_BYTES} bytes")
    head = r.take(n, "header")
    if r.u32("header checksum") != _crc(head):
        raise BitstreamError("header checksum mismatch: the file is corrupt")
    try:
        header = json.loads(head.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise BitstreamError(f"unreadable header ({err})") from None
    if not isinstance(header, dict):
        raise BitstreamError("header is not a JSON object")
    count = r.u32("chunk count")
    # each chunk needs at least 8 bytes of framing: bound the count by what the file holds
    if count > MAX_CHUNKS or count * 8 > len(data) - r.pos:
        raise BitstreamError(f"chunk count {count} does not fit the file")
    chunks = []
    for i in range(count):
        size = r.u32(f"chunk {i} length")
        chunk = r.take(size, f"chunk {i}")
        if r.u32(f"chunk {i} checksum") != _crc(chunk):
            raise BitstreamError(f"chunk {i} checksum mismatch: the file is corrupt")
        chunks.append(chunk)
    if r.pos != len(data):
        raise BitstreamError(f"{len(data) - r.pos} unexpected bytes after the last chunk")
    return header, chunks
