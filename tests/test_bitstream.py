"""The .vqc container: golden bytes, round trips, and every way a file can be wrong."""

import json
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest

from codec.bitstream import (
    FORMAT_VERSION,
    HEADER_DICTIONARY,
    MAGIC,
    BitstreamError,
    decode_record,
    encode_record,
    read_container,
    write_container,
)

GOLDEN = Path(__file__).parent / "golden" / "container_v5.vqc"
GOLDEN_V4 = Path(__file__).parent / "golden" / "container_v4.vqc"
GOLDEN_V3 = Path(__file__).parent / "golden" / "container_v3.vqc"
GOLDEN_V2 = Path(__file__).parent / "golden" / "container_v2.vqc"
GOLDEN_V1 = Path(__file__).parent / "golden" / "container_v1.vqc"
GOLDEN_HEADER = {"modality": "audio", "rate": "n2", "shape": [1, 2, 100]}  # of versions 1-3
GOLDEN_HEADER_V4 = {"envelope": "band-energy-context", **GOLDEN_HEADER}
GOLDEN_CHUNKS = [b"hello", b"", bytes(range(10))]


def _deflate(data: bytes) -> bytes:
    c = zlib.compressobj(9, zlib.DEFLATED, -15, zdict=HEADER_DICTIONARY)
    return c.compress(data) + c.flush()


def _frame(head: bytes, tail: bytes = b"\x00") -> bytes:
    """A version-2 file with raw header bytes (already compressed) and a raw tail."""
    assert len(head) < 128
    return MAGIC + bytes([2, len(head)]) + head + struct.pack("<I", zlib.crc32(head)) + tail


def test_golden_file_pins_the_format():
    # A change here is a format change: bump FORMAT_VERSION and add a new golden file.
    data = GOLDEN.read_bytes()
    assert write_container(GOLDEN_HEADER_V4, GOLDEN_CHUNKS) == data
    assert read_container(data) == (GOLDEN_HEADER_V4, GOLDEN_CHUNKS)
    assert data[:5] == MAGIC + bytes([FORMAT_VERSION]) == b"\x89VQC\x05"
    # the record, spelled out: 4 fields; envelope (key 10) = symbol 32 "band-energy-context" (new
    # in version 4; version 5 has version 4's record); modality (key 0) = symbol 0 "audio"; a literal key (31) "rate" = the string
    # "n2"; shape (key 5) = unsigned integers 1, 2, 100
    record = bytes.fromhex("04 5120 0100 fa0472617465 026e32 2b03010264")
    assert data[5:6 + len(record)] == bytes([len(record)]) + record
    # then 3 chunks with their lengths, and the CRC-32 of everything before it
    assert data[6 + len(record) :] == b"\x03\x05hello\x00\x0a" + bytes(range(10)) + struct.pack("<I", zlib.crc32(data[:-4]))


def test_versions_1_to_4_are_still_read():
    assert read_container(GOLDEN_V4.read_bytes()) == (GOLDEN_HEADER_V4, GOLDEN_CHUNKS)
    assert write_container(GOLDEN_HEADER_V4, GOLDEN_CHUNKS, version=4) == GOLDEN_V4.read_bytes()
    assert GOLDEN_V4.read_bytes()[5:-4] == GOLDEN.read_bytes()[5:-4]  # only the version byte (and the CRC) differ
    assert read_container(GOLDEN_V3.read_bytes()) == (GOLDEN_HEADER, GOLDEN_CHUNKS)
    assert write_container(GOLDEN_HEADER, GOLDEN_CHUNKS, version=3) == GOLDEN_V3.read_bytes()
    assert read_container(GOLDEN_V2.read_bytes()) == (GOLDEN_HEADER, GOLDEN_CHUNKS)
    assert write_container(GOLDEN_HEADER, GOLDEN_CHUNKS, version=2) == GOLDEN_V2.read_bytes()
    assert read_container(GOLDEN_V1.read_bytes()) == (GOLDEN_HEADER, GOLDEN_CHUNKS)
    assert write_container(GOLDEN_HEADER, GOLDEN_CHUNKS, version=1) == GOLDEN_V1.read_bytes()


def test_the_header_is_compact():
    # the header of a real file: a 3.5 s speech clip coded by audio-v9 with band energies
    header = {"coding": "range", "envelope": "band-energy-context", "modality": "audio",
              "model": {"name": "audio-v9", "sha256": "08a0305d888964a7"}, "rate_point": "k1024-n1", "sample_rate": 24000,
              "shape": [1, 1, 83871], "tiles": {"overlap": [0], "size": [83871]},
              "source": {"channels": 1, "format": "OGG", "frames": 77056, "sample_rate": 22050, "subtype": "VORBIS"}}
    v1, v2, v3, v4 = (write_container(header, [b""], version=v) for v in (1, 2, 3, 4))
    assert write_container(header, [b""]) == v4[:4] + b"\x05" + v4[5:-4] + write_container(header, [b""])[-4:]
    assert len(v4) == len(v3) - 19 == 88 and 120 < len(v2) < 330 < len(v1)  # the envelope's name: one symbol
    assert read_container(v4) == read_container(v3) == read_container(v2) == read_container(v1) == (header, [b""])
    # as the codec writes it in version 4 (codec.model.compact_header, an 8-digit hash): 60 bytes
    # of header and 72 in all, where version 3 took 107 (0.08 kbps of this clip)
    from codec.model import compact_header, complete_header

    full = {**header, "model": {**header["model"], "sha256": "08a0305d"}}
    short = compact_header(full)
    assert set(header) - set(short) == {"coding", "tiles"}
    assert complete_header(short) == full
    assert len(encode_record(short)) == 60 and len(write_container(short, [b""])) == 72
    # and in version 5, with the model that wrote it (audio-v9, bundled): 39 and 51 bytes; the model
    # restores modality, sample rate, shape (from the source record) and the rate point's name
    import codec

    model = codec.load_model("audio-v9")
    shorter = compact_header(full, model)
    assert set(short) - set(shorter) == {"modality", "sample_rate", "shape"}
    assert shorter["rate_point"] == model.point_names().index("k1024-n1") == 0
    assert model.complete_header(shorter) == full
    assert len(encode_record(shorter)) == 39 and len(write_container(shorter, [b""])) == 51


def test_version_3_records_know_only_their_symbols():
    value = {"envelope": "band-energy-context"}
    assert len(encode_record(value, 3)) == len(encode_record(value, 4)) + 19  # a plain string in version 3
    assert decode_record(encode_record(value, 3), 3) == decode_record(encode_record(value, 4), 4) == value
    with pytest.raises(BitstreamError, match="unknown symbol"):
        decode_record(encode_record(value, 4), 3)
    for bad in (2, 6):
        with pytest.raises(ValueError, match="versions 3 to 5"):
            encode_record(value, bad)


@pytest.mark.parametrize("value", [
    {},
    {"a": 1, "nested": {"b": [1.5, "x", -3, True, False, None, [], {}, [0, 1]]}},
    {"f": 1.0, "i": 1, "big": 2**62, "neg": -(2**40), "e": "", "hex": "00ff", "HEX": "00FF", "odd": "abc", "ü": "ß"},
    {"modality": "image", "model": {"name": "x", "sha256": "0123456789abcdef"}, "shape": [1, 3, 4, 5], "mode": "RGB"},
])
def test_records_round_trip_exactly(value):
    back = decode_record(encode_record(value))
    assert back == value
    assert json.dumps(back, sort_keys=True) == json.dumps(value, sort_keys=True)  # 1.0 stays a float, True a bool


@pytest.mark.parametrize("value", [{"x": float("nan")}, {"x": float("inf")}, {"x": object()}, {1: 2}, [1]])
def test_records_refuse_what_json_would(value):
    with pytest.raises(ValueError):
        encode_record(value)


@pytest.mark.parametrize("raw,match", [
    (b"", "truncated"),
    (b"\x01", "count exceeds"),
    (b"\x01\x01\x7f", "unknown symbol"),
    (b"\x01\xf0\x00", "unknown field"),
    (b"\x01\x9f\x00", "unknown field"),
    (b"\x02\x00\x01\x00\x01", "twice"),
    (b"\x01\xfa\x01\xff\x00", "not UTF-8"),
    (b"\x01\x07\x09", "unknown value type|unreadable"),
    (b"\x01\x07\x04" + struct.pack("<d", float("nan")), "not finite"),
    (b"\x01\x00" + b"\xff" * 12, "malformed integer"),
    (b"\x01\x00\x00\x00", "trailing"),
    (b"\x01\x06" + b"\x01\x06" * 40 + b"\x00", "deeper"),
])
def test_malformed_records_are_refused(raw, match):
    with pytest.raises(BitstreamError, match=match):
        decode_record(raw)


def test_round_trip_with_many_chunks():
    chunks = [bytes(np.random.default_rng(i).integers(0, 256, i * 7, dtype=np.uint8)) for i in range(50)]
    header = {"a": 1, "nested": {"b": [1.5, "x"]}}
    assert read_container(write_container(header, chunks)) == (header, chunks)


@pytest.mark.parametrize(
    "mutate,match",
    [
        (lambda d: b"RIFF" + d[4:], "bad magic"),
        (lambda d: b"", "bad magic"),
        (lambda d: d[:4] + bytes([6]) + d[5:], "unsupported .vqc version 6"),
        (lambda d: d[:10], "truncated|checksum"),
        (lambda d: d[:-1], "truncated"),
        (lambda d: d + b"\x00", "unexpected bytes"),
        (lambda d: d[:5] + b"\xff\xff\xff\xff\x0f" + d[6:], "header length"),
        (lambda d: d[:5] + b"\xff\xff\xff\xff\xff\x01" + d[6:], "malformed header length"),
        (lambda d: d[:10] + bytes([d[10] ^ 1]) + d[11:], "checksum"),
        (lambda d: d[:-3] + bytes([d[-3] ^ 4]) + d[-2:], "checksum"),
        (lambda d: d[:-10] + bytes([d[-10] ^ 4]) + d[-9:], "checksum"),
    ],
)
@pytest.mark.parametrize("golden", [GOLDEN, GOLDEN_V4, GOLDEN_V3, GOLDEN_V2])
def test_bad_files_fail_with_a_clear_error(golden, mutate, match):
    data = golden.read_bytes()
    with pytest.raises(BitstreamError, match=match):
        read_container(mutate(data))


def _frame_v3(record: bytes, tail: bytes = b"\x00") -> bytes:
    """A version-3 file with raw header bytes and a raw tail, and a valid checksum."""
    assert len(record) < 128
    data = MAGIC + bytes([3, len(record)]) + record + tail
    return data + struct.pack("<I", zlib.crc32(data))


def test_huge_counts_are_refused_before_allocating():
    head = _deflate(b"{}")
    with pytest.raises(BitstreamError, match="does not fit"):
        read_container(_frame(head, b"\xff\xff\xff\xff\x0f"))
    with pytest.raises(BitstreamError, match="truncated"):
        read_container(_frame(head, b"\x01\x80\x80\x80\x80\x08" + b"\x00" * 8))
    with pytest.raises(BitstreamError, match="does not fit"):
        read_container(_frame_v3(b"\x00", b"\xff\xff\xff\xff\x0f"))
    with pytest.raises(BitstreamError, match="truncated"):
        read_container(_frame_v3(b"\x00", b"\x01\x80\x80\x80\x80\x08" + b"\x00" * 8))
    with pytest.raises(BitstreamError, match="count exceeds"):  # a record claiming 2**35 fields
        read_container(_frame_v3(b"\x80\x80\x80\x80\x80\x01"))


def test_the_checksum_is_verified_before_the_header_is_read():
    data = bytearray(_frame_v3(b"\x01\x01\x7f"))  # an unknown symbol, under a valid checksum
    with pytest.raises(BitstreamError, match="unknown symbol"):
        read_container(bytes(data))
    data[-1] ^= 1
    with pytest.raises(BitstreamError, match="checksum mismatch"):
        read_container(bytes(data))


def test_header_must_be_a_json_object():
    for head in (b"[1, 2]", b"\xff\xfe", b"{not json", b"[" * 5000 + b"]" * 5000):
        with pytest.raises(BitstreamError, match="header"):
            read_container(_frame(_deflate(head)))
    with pytest.raises(BitstreamError, match="header"):
        read_container(_frame(b"\x00garbage"))  # not DEFLATE


def test_a_header_bomb_is_refused_in_bounded_memory():
    bomb = _deflate(b'{"a":"' + b"x" * 10_000_000 + b'"}')
    assert len(bomb) < 20_000
    data = MAGIC + bytes([2]) + bytes([0x80 | (len(bomb) & 0x7F), len(bomb) >> 7]) + bomb
    data += struct.pack("<I", zlib.crc32(bomb)) + b"\x00"
    with pytest.raises(BitstreamError, match="inflates beyond"):
        read_container(data)


@pytest.mark.parametrize("version", [2, 3, 4, 5])
def test_random_corruptions_never_crash_or_pass_silently(version):
    good = write_container({"k": list(range(20)), "s": "text"}, [bytes(range(200)), b"x" * 300], version=version)
    rng = np.random.default_rng(0)
    for _ in range(300):
        bad = bytearray(good)
        for _ in range(int(rng.integers(1, 4))):
            bad[int(rng.integers(len(bad)))] = int(rng.integers(256))
        if rng.random() < 0.3:
            bad = bad[: int(rng.integers(len(bad)))]
        if bytes(bad) == good:
            continue
        with pytest.raises(BitstreamError):
            read_container(bytes(bad))
