"""The ``.vqc`` container: magic, version, a checksummed header, checksummed payload chunks.

Layout of version 2 (the one written)::

    magic      4 bytes   b"\\x89VQC"  (the high byte catches 7-bit transfers, as in PNG)
    version    1 byte    2
    header     varint length, then that many bytes: the header JSON (an object, compact,
               sorted keys), raw-DEFLATE compressed with a fixed preset dictionary of the
               field names and common values; then u32 CRC-32 of the compressed bytes
    chunks     varint count, then per chunk: varint length, the bytes, u32 CRC-32 of them

Varints are unsigned LEB128 (at most 5 bytes here); u32 is little-endian. The preset
dictionary (:data:`HEADER_DICTIONARY`) is part of the format: a typical audio header of ~330
bytes of JSON takes ~95 bytes, which matters at low rates on short inputs (1 kbps is 125 bytes a
second). Version 1 (u32 lengths, uncompressed JSON header) is still read.

Every length is checked against hard limits and against the bytes actually present **before**
anything is allocated (the header inflates to at most ``MAX_HEADER_BYTES``), so a hostile or
truncated file fails with :class:`BitstreamError` (a ``ValueError``) quickly and in bounded
memory. No pickle; the header is plain JSON whose fields the codec validates. What the header
and chunks mean (modality, model hash, rate point, shapes, tiles) is defined by the codec that
writes them.
"""

from __future__ import annotations

import json
import struct
import zlib
from typing import Any, Sequence

__all__ = ["BitstreamError", "MAGIC", "FORMAT_VERSION", "READ_VERSIONS", "write_container", "read_container"]

MAGIC = b"\x89VQC"
FORMAT_VERSION = 2
READ_VERSIONS = (1, 2)
MAX_HEADER_BYTES = 64 * 1024
MAX_CHUNKS = 1 << 20
MAX_CHUNK_BYTES = 1 << 31

#: Preset dictionary of header version 2 (part of the format: never edit, add a version instead).
HEADER_DICTIONARY = (
    b'"tiles":{"overlap":[0],"size":[768,768]},"tiles":{"overlap":[2400],"size":[240000]}}'
    b'"source":{"bit_depth":8,"format":"JPEG","format":"PNG","mode":"RGB","mode":"L"},'
    b'"source":{"channels":2,"channels":1,"format":"FLAC","format":"OGG","format":"WAV","frames":'
    b'"sample_rate":16000,"sample_rate":48000,"sample_rate":44100,"subtype":"PCM_24","subtype":"PCM_16"},'
    b'"shape":[1,3,"shape":[1,2,"shape":[1,1,"sample_rate":24000,"rate_point":"k1024-n8","rate_point":"n'
    b'{"coding":"packed","coding":"range","modality":"image","modality":"audio",'
    b'"model":{"name":"image-v1","name":"audio-v1","sha256":"'
)

_U32 = struct.Struct("<I")


class BitstreamError(ValueError):
    """A file that is not a valid ``.vqc`` stream of a version this build reads."""


def _crc(data: bytes) -> int:
    return zlib.crc32(data) & 0xFFFFFFFF


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _deflate(data: bytes) -> bytes:
    c = zlib.compressobj(9, zlib.DEFLATED, -15, zdict=HEADER_DICTIONARY)
    return c.compress(data) + c.flush()


def _inflate(data: bytes) -> bytes:
    d = zlib.decompressobj(-15, zdict=HEADER_DICTIONARY)
    try:
        out = d.decompress(data, MAX_HEADER_BYTES + 1)
    except zlib.error as err:
        raise BitstreamError(f"unreadable header ({err})") from None
    if len(out) > MAX_HEADER_BYTES or d.unconsumed_tail:
        raise BitstreamError(f"header inflates beyond {MAX_HEADER_BYTES} bytes")
    if not d.eof or d.unused_data:
        raise BitstreamError("unreadable header (incomplete or trailing compressed data)")
    return out


def write_container(header: dict[str, Any], chunks: Sequence[bytes], version: int = FORMAT_VERSION) -> bytes:
    """Serialise a header (JSON-able dict) and payload chunks into one ``.vqc`` byte string."""
    head = json.dumps(header, separators=(",", ":"), sort_keys=True, allow_nan=False).encode()
    if len(head) > MAX_HEADER_BYTES:
        raise ValueError(f"header of {len(head)} bytes exceeds {MAX_HEADER_BYTES}")
    if len(chunks) > MAX_CHUNKS:
        raise ValueError(f"{len(chunks)} chunks exceed {MAX_CHUNKS}")
    if version not in READ_VERSIONS:
        raise ValueError(f"cannot write .vqc version {version}")
    size = _U32.pack if version == 1 else _varint
    if version == 2:
        head = _deflate(head)
    parts = [MAGIC, bytes([version]), size(len(head)), head, _U32.pack(_crc(head)), size(len(chunks))]
    for chunk in chunks:
        chunk = bytes(chunk)
        if len(chunk) > MAX_CHUNK_BYTES:
            raise ValueError("chunk too large")
        parts += [size(len(chunk)), chunk, _U32.pack(_crc(chunk))]
    return b"".join(parts)


class _Reader:
    def __init__(self, data: bytes, version: int) -> None:
        self.data = memoryview(data)
        self.pos = 0
        self.version = version

    def take(self, n: int, what: str) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise BitstreamError(f"truncated file: {what} needs {n} bytes, {len(self.data) - self.pos} left")
        out = self.data[self.pos : self.pos + n].tobytes()
        self.pos += n
        return out

    def u32(self, what: str) -> int:
        return _U32.unpack(self.take(4, what))[0]

    def size(self, what: str) -> int:
        if self.version == 1:
            return self.u32(what)
        n, shift = 0, 0
        for _ in range(5):
            byte = self.take(1, what)[0]
            n |= (byte & 0x7F) << shift
            if not byte & 0x80:
                return n
            shift += 7
        raise BitstreamError(f"malformed {what}")


def read_container(data: bytes) -> tuple[dict[str, Any], list[bytes]]:
    """Parse and verify a ``.vqc`` byte string -> ``(header, chunks)``.

    Raises :class:`BitstreamError` for a foreign file, an unknown version, a truncated or
    corrupted file (any CRC mismatch), or limits exceeded.
    """
    if len(data) < 5 or bytes(data[:4]) != MAGIC:
        raise BitstreamError("not a .vqc file (bad magic bytes)")
    version = data[4]
    if version not in READ_VERSIONS:
        raise BitstreamError(f"unsupported .vqc version {version} (this build reads versions {', '.join(map(str, READ_VERSIONS))})")
    r = _Reader(data, version)
    r.pos = 5
    n = r.size("header length")
    if n > MAX_HEADER_BYTES:
        raise BitstreamError(f"header length {n} exceeds {MAX_HEADER_BYTES} bytes")
    head = r.take(n, "header")
    if r.u32("header checksum") != _crc(head):
        raise BitstreamError("header checksum mismatch: the file is corrupt")
    if version == 2:
        head = _inflate(head)
    try:
        header = json.loads(head.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as err:
        raise BitstreamError(f"unreadable header ({err})") from None
    if not isinstance(header, dict):
        raise BitstreamError("header is not a JSON object")
    count = r.size("chunk count")
    # each chunk needs at least 5 (v1: 8) bytes of framing: bound the count by what the file holds
    if count > MAX_CHUNKS or count * (8 if version == 1 else 5) > len(data) - r.pos:
        raise BitstreamError(f"chunk count {count} does not fit the file")
    chunks = []
    for i in range(count):
        size = r.size(f"chunk {i} length")
        chunk = r.take(size, f"chunk {i}")
        if r.u32(f"chunk {i} checksum") != _crc(chunk):
            raise BitstreamError(f"chunk {i} checksum mismatch: the file is corrupt")
        chunks.append(chunk)
    if r.pos != len(data):
        raise BitstreamError(f"{len(data) - r.pos} unexpected bytes after the last chunk")
    return header, chunks
