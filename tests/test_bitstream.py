"""The .vqc container: golden bytes, round trips, and every way a file can be wrong."""

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest

from codec.bitstream import FORMAT_VERSION, HEADER_DICTIONARY, MAGIC, BitstreamError, read_container, write_container

GOLDEN = Path(__file__).parent / "golden" / "container_v2.vqc"
GOLDEN_V1 = Path(__file__).parent / "golden" / "container_v1.vqc"
GOLDEN_HEADER = {"modality": "audio", "rate": "n2", "shape": [1, 2, 100]}
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
    assert write_container(GOLDEN_HEADER, GOLDEN_CHUNKS) == GOLDEN.read_bytes()
    assert read_container(GOLDEN.read_bytes()) == (GOLDEN_HEADER, GOLDEN_CHUNKS)
    assert GOLDEN.read_bytes()[:5] == MAGIC + bytes([FORMAT_VERSION]) == b"\x89VQC\x02"


def test_version_1_files_are_still_read():
    assert read_container(GOLDEN_V1.read_bytes()) == (GOLDEN_HEADER, GOLDEN_CHUNKS)
    assert write_container(GOLDEN_HEADER, GOLDEN_CHUNKS, version=1) == GOLDEN_V1.read_bytes()


def test_the_header_is_compressed():
    header = {"coding": "range", "modality": "audio", "model": {"name": "audio-v1", "sha256": "ab" * 32},
              "rate_point": "k1024-n4", "sample_rate": 24000, "shape": [1, 1, 72000], "tiles": {"overlap": [0], "size": [72000]},
              "source": {"channels": 1, "format": "WAV", "frames": 132300, "sample_rate": 44100, "subtype": "PCM_16"}}
    v1, v2 = write_container(header, [b""], version=1), write_container(header, [b""])
    assert len(v2) < 140 < 330 < len(v1)


def test_round_trip_with_many_chunks():
    chunks = [bytes(np.random.default_rng(i).integers(0, 256, i * 7, dtype=np.uint8)) for i in range(50)]
    header = {"a": 1, "nested": {"b": [1.5, "x"]}}
    assert read_container(write_container(header, chunks)) == (header, chunks)


@pytest.mark.parametrize(
    "mutate,match",
    [
        (lambda d: b"RIFF" + d[4:], "bad magic"),
        (lambda d: b"", "bad magic"),
        (lambda d: d[:4] + bytes([3]) + d[5:], "unsupported .vqc version 3"),
        (lambda d: d[:10], "truncated|checksum"),
        (lambda d: d[:-1], "truncated"),
        (lambda d: d + b"\x00", "unexpected bytes"),
        (lambda d: d[:5] + b"\xff\xff\xff\xff\x0f" + d[6:], "header length"),
        (lambda d: d[:5] + b"\xff\xff\xff\xff\xff\x01" + d[6:], "malformed header length"),
        (lambda d: d[:10] + bytes([d[10] ^ 1]) + d[11:], "checksum"),
        (lambda d: d[:-3] + bytes([d[-3] ^ 4]) + d[-2:], "checksum"),
    ],
)
def test_bad_files_fail_with_a_clear_error(mutate, match):
    with pytest.raises(BitstreamError, match=match):
        read_container(mutate(GOLDEN.read_bytes()))


def test_huge_counts_are_refused_before_allocating():
    head = _deflate(b"{}")
    with pytest.raises(BitstreamError, match="does not fit"):
        read_container(_frame(head, b"\xff\xff\xff\xff\x0f"))
    with pytest.raises(BitstreamError, match="truncated"):
        read_container(_frame(head, b"\x01\x80\x80\x80\x80\x08" + b"\x00" * 8))


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


def test_random_corruptions_never_crash_or_pass_silently():
    good = write_container({"k": list(range(20))}, [bytes(range(200)), b"x" * 300])
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
