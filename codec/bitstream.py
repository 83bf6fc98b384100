"""The ``.vqc`` container: magic, version, a compact header, payload chunks, one checksum.

Layout of versions 3 to 5 (5 is the one written)::

    magic      4 bytes   b"\\x89VQC"  (the high byte catches 7-bit transfers, as in PNG)
    version    1 byte    5
    header     varint length, then that many bytes: the header object as a binary record
               (:func:`encode_record`)
    chunks     varint count, then per chunk: varint length, the bytes
    checksum   u32 CRC-32 of every byte before it, magic included

Varints are unsigned LEB128 (at most 5 bytes for lengths and counts); u32 is little-endian.
The record codes each field as one byte (a key's index in :data:`RECORD_KEYS` and a value type)
and a compact value: unsigned varints, strings from :data:`RECORD_SYMBOLS` as one index,
lowercase hex strings as their bytes. Both tables are part of the format. Version 4 is version 3
with one more symbol (``"band-energy-context"``, the name of the bundled audio models' side
information) and headers the codec writes without the fields a reader can infer (the codec's
:func:`codec.model.complete_header`: the payload coding when it is ``"range"``, the tiling when
the signal is one tile, 8 hex digits of the weights' hash instead of 16). Version 5 has version
4's record and leaves out, besides, what the model named in the header implies
(:meth:`codec.model.Codec.complete_header`): the modality, the audio sample rate, an audio
signal's shape (it follows from the source record) and the rate point's name (an index among
the model's point names instead): a real audio header with its source record takes 39 bytes
and the whole framing of a file 51, where version 4 took 60 and 72. Every byte counts at low
rates: 1 kbps is 125 bytes a second, so the 21 bytes version 5 saves over version 4 are
0.048 kbps of a 3.5 s clip, 4 % of a 1.2 kbps file; version 2 spent ~135 bytes on the same header.
A reader needs the model to complete a version-5 header; the version byte tells an older build
that it cannot.

Versions 1 and 2 are still read. They framed the header as JSON (v2: raw-DEFLATE compressed
with the preset dictionary :data:`HEADER_DICTIONARY`; v1: plain, with u32 lengths) followed by
its CRC-32, and gave every chunk its own CRC-32.

Every length is checked against hard limits and against the bytes actually present **before**
anything is allocated (a header holds at most ``MAX_HEADER_BYTES``), so a hostile or truncated
file fails with :class:`BitstreamError` (a ``ValueError``) quickly and in bounded memory. The
checksum is verified before the header is parsed. No pickle; the header holds only JSON values
(objects, lists, strings, numbers, booleans, null), whose fields the codec validates. What the
header and chunks mean (modality, model hash, rate point, shapes, tiles) is defined by the codec
that writes them.
"""

from __future__ import annotations

import json
import struct
import zlib
from typing import Any, Sequence

__all__ = ["BitstreamError", "MAGIC", "FORMAT_VERSION", "READ_VERSIONS", "write_container", "read_container",
           "encode_record", "decode_record"]

MAGIC = b"\x89VQC"
FORMAT_VERSION = 5
READ_VERSIONS = (1, 2, 3, 4, 5)
MAX_HEADER_BYTES = 64 * 1024
MAX_CHUNKS = 1 << 20
MAX_CHUNK_BYTES = 1 << 31

#: Preset dictionary of the version-2 header (part of that format: never edit).
HEADER_DICTIONARY = (
    b'"tiles":{"overlap":[0],"size":[768,768]},"tiles":{"overlap":[2400],"size":[240000]}}'
    b'"source":{"bit_depth":8,"format":"JPEG","format":"PNG","mode":"RGB","mode":"L"},'
    b'"source":{"channels":2,"channels":1,"format":"FLAC","format":"OGG","format":"WAV","frames":'
    b'"sample_rate":16000,"sample_rate":48000,"sample_rate":44100,"subtype":"PCM_24","subtype":"PCM_16"},'
    b'"shape":[1,3,"shape":[1,2,"shape":[1,1,"sample_rate":24000,"rate_point":"k1024-n8","rate_point":"n'
    b'{"coding":"packed","coding":"range","modality":"image","modality":"audio",'
    b'"model":{"name":"image-v1","name":"audio-v1","sha256":"'
)

#: Field names a record (versions 3 to 5) codes by index (part of the format: append only, in a new version).
RECORD_KEYS = (
    "modality", "model", "name", "sha256", "rate_point", "shape", "coding", "tiles", "size", "overlap",
    "envelope", "sample_rate", "source", "channels", "frames", "format", "subtype", "mode", "bit_depth",
)
#: String values a record codes by index (part of the format, like :data:`RECORD_KEYS`): version 3
#: knows the first 32, versions 4 and 5 all of them.
RECORD_SYMBOLS = (
    "audio", "image", "range", "packed", "band-energy",
    "WAV", "FLAC", "OGG", "MP3", "AIFF", "RAW", "PCM_16", "PCM_24", "PCM_32", "PCM_U8", "PCM_S8", "FLOAT", "DOUBLE",
    "VORBIS", "OPUS", "MPEG_LAYER_III", "ALAW", "ULAW",
    "RGB", "L", "PNG", "JPEG", "WEBP", "BMP", "TIFF", "GIF", "PPM",
    # version 4
    "band-energy-context",
)
_SYMBOL_COUNT = {3: 32, 4: len(RECORD_SYMBOLS), 5: len(RECORD_SYMBOLS)}  # the symbols each record version knows
_SYMBOL_INDEX = {version: {v: i for i, v in enumerate(RECORD_SYMBOLS[:count])} for version, count in _SYMBOL_COUNT.items()}
_KEY_INDEX = {k: i for i, k in enumerate(RECORD_KEYS)}
_LITERAL_KEY = 31  # the key byte's index that says the key's name follows as a string
# value types (the low 3 bits of a field's byte)
_UINT, _SYMBOL, _STR, _UINTS, _OBJECT, _HEX, _LIST, _OTHER = range(8)
# _OTHER's second byte
_FALSE, _TRUE, _NULL, _NEG, _FLOAT = range(5)
_F64 = struct.Struct("<d")
MAX_RECORD_DEPTH = 16
_HEX_DIGITS = frozenset("0123456789abcdef")


def encode_record(value: dict[str, Any], version: int = FORMAT_VERSION) -> bytes:
    """A JSON-able object -> its compact binary record (the header of versions 3 to 5).

    An object is a varint field count, then per field (sorted by name) one byte ``key << 3 | type`` (key: the
    name's index in :data:`RECORD_KEYS`, or 31 and the name as a string after the byte) and the
    value. Types: 0 unsigned integer (varint); 1 a string of :data:`RECORD_SYMBOLS` (varint
    index); 2 string (varint length, UTF-8); 3 list of unsigned integers (varint count,
    varints); 4 object; 5 lowercase hex string of even length (varint byte count, the bytes);
    6 list (varint count, then per item a type byte and its value); 7 one more byte: false, true,
    null, a negative integer (varint of ``-1 - n``) or a float (IEEE 754 double). Round trips
    exactly, booleans and the distinction between ``1`` and ``1.0`` included. ``version``: which
    symbols it may use (3: the first 32 of :data:`RECORD_SYMBOLS`).
    """
    if not isinstance(value, dict):
        raise ValueError("a header record is an object")
    if version not in _SYMBOL_COUNT:
        raise ValueError(f"records are versions 3 to 5, not {version}")
    out = bytearray()
    _object(out, value, 0, _SYMBOL_INDEX[version])
    return bytes(out)


def _object(out: bytearray, obj: dict[str, Any], depth: int, symbols: dict[str, int]) -> None:
    if depth > MAX_RECORD_DEPTH:
        raise ValueError(f"header nests deeper than {MAX_RECORD_DEPTH}")
    if not all(isinstance(key, str) for key in obj):
        raise ValueError(f"header keys are strings, not {next(k for k in obj if not isinstance(k, str))!r}")
    out += _varint(len(obj))
    for key, item in sorted(obj.items()):  # canonical: the same object always gives the same bytes
        kind, payload = _value(item, depth, symbols)
        index = _KEY_INDEX.get(key)
        if index is None:
            out.append(_LITERAL_KEY << 3 | kind)
            _string(out, key)
        else:
            out.append(index << 3 | kind)
        out += payload


def _string(out: bytearray, text: str) -> None:
    raw = text.encode("utf-8")
    out += _varint(len(raw)) + raw


def _is_uint(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def _value(v: Any, depth: int, symbols: dict[str, int]) -> tuple[int, bytes]:
    out = bytearray()
    if isinstance(v, bool):
        return _OTHER, bytes([_TRUE if v else _FALSE])
    if v is None:
        return _OTHER, bytes([_NULL])
    if isinstance(v, int):
        return (_UINT, _varint(v)) if v >= 0 else (_OTHER, bytes([_NEG]) + _varint(-1 - v))
    if isinstance(v, float):
        if v != v or v in (float("inf"), float("-inf")):
            raise ValueError("header numbers must be finite")
        return _OTHER, bytes([_FLOAT]) + _F64.pack(v)
    if isinstance(v, str):
        if v in symbols:
            return _SYMBOL, _varint(symbols[v])
        if v and len(v) % 2 == 0 and set(v) <= _HEX_DIGITS:
            raw = bytes.fromhex(v)
            return _HEX, _varint(len(raw)) + raw
        _string(out, v)
        return _STR, bytes(out)
    if isinstance(v, (list, tuple)):
        out += _varint(len(v))
        if v and all(_is_uint(x) for x in v):
            for x in v:
                out += _varint(x)
            return _UINTS, bytes(out)
        for x in v:
            kind, payload = _value(x, depth + 1, symbols)
            out.append(kind)
            out += payload
        return _LIST, bytes(out)
    if isinstance(v, dict):
        _object(out, v, depth + 1, symbols)
        return _OBJECT, bytes(out)
    raise ValueError(f"a header holds JSON values, not {type(v).__name__}")


def decode_record(data: bytes, version: int = FORMAT_VERSION) -> dict[str, Any]:
    """The object of a binary record (:func:`encode_record`) of ``version`` (3 to 5);
    :class:`BitstreamError` if malformed."""
    if version not in _SYMBOL_COUNT:
        raise ValueError(f"records are versions 3 to 5, not {version}")
    r = _Reader(data, version)
    obj = _read_object(r, 0)
    if r.pos != len(r.data):
        raise BitstreamError("unreadable header (trailing bytes)")
    return obj


def _read_uint(r: "_Reader") -> int:
    return r.varint("integer in the header", 10)


def _count(r: "_Reader", each: int = 1) -> int:
    """A varint count of items of at least ``each`` bytes, bounded by the bytes left."""
    n = _read_uint(r)
    if n * each > len(r.data) - r.pos:
        raise BitstreamError("unreadable header (a count exceeds its bytes)")
    return n


def _read_text(r: "_Reader") -> str:
    raw = r.take(_count(r), "header string")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise BitstreamError("unreadable header (a string is not UTF-8)") from None


def _read_object(r: "_Reader", depth: int) -> dict[str, Any]:
    if depth > MAX_RECORD_DEPTH:
        raise BitstreamError(f"unreadable header (nested deeper than {MAX_RECORD_DEPTH})")
    obj: dict[str, Any] = {}
    for _ in range(_count(r, 2)):
        byte = r.take(1, "header field")[0]
        index = byte >> 3
        if index == _LITERAL_KEY:
            key = _read_text(r)
        elif index < len(RECORD_KEYS):
            key = RECORD_KEYS[index]
        else:
            raise BitstreamError(f"unreadable header (unknown field {index})")
        if key in obj:
            raise BitstreamError(f"unreadable header (field {key!r} twice)")
        obj[key] = _read_value(r, byte & 7, depth)
    return obj


def _read_value(r: "_Reader", kind: int, depth: int) -> Any:
    if kind == _UINT:
        return _read_uint(r)
    if kind == _SYMBOL:
        index = _read_uint(r)
        if index >= _SYMBOL_COUNT[r.version]:
            raise BitstreamError(f"unreadable header (unknown symbol {index})")
        return RECORD_SYMBOLS[index]
    if kind == _STR:
        return _read_text(r)
    if kind == _UINTS:
        return [_read_uint(r) for _ in range(_count(r))]
    if kind == _OBJECT:
        return _read_object(r, depth + 1)
    if kind == _HEX:
        return r.take(_count(r), "header hex string").hex()
    if kind == _LIST:
        if depth + 1 > MAX_RECORD_DEPTH:
            raise BitstreamError(f"unreadable header (nested deeper than {MAX_RECORD_DEPTH})")
        items = []
        for _ in range(_count(r, 2)):
            items.append(_read_value(r, r.take(1, "header list item")[0], depth + 1))
        return items
    if kind == _OTHER:
        tag = r.take(1, "header value")[0]
        if tag in (_FALSE, _TRUE, _NULL):
            return (False, True, None)[tag]
        if tag == _NEG:
            return -1 - _read_uint(r)
        if tag == _FLOAT:
            v = _F64.unpack(r.take(8, "header number"))[0]
            if v != v or v in (float("inf"), float("-inf")):
                raise BitstreamError("unreadable header (a number is not finite)")
            return v
    raise BitstreamError(f"unreadable header (unknown value type {kind})")


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
    if version not in READ_VERSIONS:
        raise ValueError(f"cannot write .vqc version {version}")
    if version >= 3:
        head = encode_record(header, version)
    else:
        head = json.dumps(header, separators=(",", ":"), sort_keys=True, allow_nan=False).encode()
    if len(head) > MAX_HEADER_BYTES:
        raise ValueError(f"header of {len(head)} bytes exceeds {MAX_HEADER_BYTES}")
    if len(chunks) > MAX_CHUNKS:
        raise ValueError(f"{len(chunks)} chunks exceed {MAX_CHUNKS}")
    return _frame(version, _deflate(head) if version == 2 else head, chunks)


def _frame(version: int, head: bytes, chunks: Sequence[bytes]) -> bytes:
    """The bytes of a file of ``version`` from its header as stored (v2: already compressed) and chunks."""
    size = _U32.pack if version == 1 else _varint
    framed = version < 3  # versions 1 and 2: a CRC-32 after the header and after every chunk
    parts = [MAGIC, bytes([version]), size(len(head)), head]
    parts += [_U32.pack(_crc(head))] if framed else []
    parts.append(size(len(chunks)))
    for chunk in chunks:
        chunk = bytes(chunk)
        if len(chunk) > MAX_CHUNK_BYTES:
            raise ValueError("chunk too large")
        parts += [size(len(chunk)), chunk] + ([_U32.pack(_crc(chunk))] if framed else [])
    out = b"".join(parts)
    return out if framed else out + _U32.pack(_crc(out))


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
        return self.u32(what) if self.version == 1 else self.varint(what)

    def varint(self, what: str, max_bytes: int = 5) -> int:
        """An unsigned LEB128 of at most ``max_bytes`` bytes."""
        n, shift = 0, 0
        for _ in range(max_bytes):
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
    framed = version < 3
    # versions 3 to 5: the framing is read within the bytes before the final checksum
    r = _Reader(data if framed else memoryview(data)[: max(5, len(data) - 4)], version)
    r.pos = 5
    n = r.size("header length")
    if n > MAX_HEADER_BYTES:
        raise BitstreamError(f"header length {n} exceeds {MAX_HEADER_BYTES} bytes")
    head = r.take(n, "header")
    if framed and r.u32("header checksum") != _crc(head):
        raise BitstreamError("header checksum mismatch: the file is corrupt")
    count = r.size("chunk count")
    # each chunk needs at least 1 byte of framing (v2: 5, v1: 8): bound the count by what the file holds
    if count > MAX_CHUNKS or count * {1: 8, 2: 5}.get(version, 1) > len(r.data) - r.pos:
        raise BitstreamError(f"chunk count {count} does not fit the file")
    chunks = []
    for i in range(count):
        size = r.size(f"chunk {i} length")
        chunk = r.take(size, f"chunk {i}")
        if framed and r.u32(f"chunk {i} checksum") != _crc(chunk):
            raise BitstreamError(f"chunk {i} checksum mismatch: the file is corrupt")
        chunks.append(chunk)
    if r.pos != len(r.data):
        raise BitstreamError(f"{len(r.data) - r.pos} unexpected bytes after the last chunk")
    if not framed:
        if len(data) < r.pos + 4:
            raise BitstreamError("truncated file: the checksum needs 4 bytes")
        if _U32.unpack(bytes(data[r.pos : r.pos + 4]))[0] != _crc(bytes(data[: r.pos])):
            raise BitstreamError("checksum mismatch: the file is corrupt")
        return decode_record(head, version), chunks
    if version == 2:
        head = _inflate(head)
    try:
        header = json.loads(head.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as err:
        raise BitstreamError(f"unreadable header ({err})") from None
    if not isinstance(header, dict):
        raise BitstreamError("header is not a JSON object")
    return header, chunks
