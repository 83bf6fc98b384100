"""The .vqc container: golden bytes, round trips, and every way a file can be wrong."""

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest

from codec.bitstream import FORMAT_VERSION, MAGIC, BitstreamError, read_container, write_container

GOLDEN = Path(__file__).parent / "golden" / "container_v1.vqc"
GOLDEN_HEADER = {"modality": "audio", "rate": "n2", "shape": [1, 2, 100]}
GOLDEN_CHUNKS = [b"hello", b"", bytes(range(10))]


def test_golden_file_pins_the_format():
    # A change here is a format change: bump FORMAT_VERSION and add a new golden file.
    assert write_container(GOLDEN_HEADER, GOLDEN_CHUNKS) == GOLDEN.read_bytes()
    assert read_container(GOLDEN.read_bytes()) == (GOLDEN_HEADER, GOLDEN_CHUNKS)
    assert GOLDEN.read_bytes()[:5] == MAGIC + bytes([FORMAT_VERSION]) == b"\x89VQC\x01"


def test_round_trip_with_many_chunks():
    chunks = [bytes(np.random.default_rng(i).integers(0, 256, i * 7, dtype=np.uint8)) for i in range(50)]
    header = {"a": 1, "nested": {"b": [1.5, "x"]}}
    assert read_container(write_container(header, chunks)) == (header, chunks)


@pytest.mark.parametrize(
    "mutate,match",
    [
        (lambda d: b"RIFF" + d[4:], "bad magic"),
        (lambda d: b"", "bad magic"),
        (lambda d: d[:4] + bytes([2]) + d[5:], "unsupported .vqc version 2"),
        (lambda d: d[:10], "truncated|checksum"),
        (lambda d: d[:-1], "truncated"),
        (lambda d: d + b"\x00", "unexpected bytes"),
        (lambda d: d[:5] + struct.pack("<I", 10**9) + d[9:], "header length"),
        (lambda d: d[:20] + bytes([d[20] ^ 1]) + d[21:], "checksum"),
        (lambda d: d[:-3] + bytes([d[-3] ^ 4]) + d[-2:], "checksum"),
    ],
)
def test_bad_files_fail_with_a_clear_error(mutate, match):
    with pytest.raises(BitstreamError, match=match):
        read_container(mutate(GOLDEN.read_bytes()))


def test_huge_counts_are_refused_before_allocating():
    head = b"{}"
    data = MAGIC + bytes([FORMAT_VERSION]) + struct.pack("<I", 2) + head + struct.pack("<I", zlib.crc32(head))
    with pytest.raises(BitstreamError, match="does not fit"):
        read_container(data + struct.pack("<I", 2**32 - 1))
    with pytest.raises(BitstreamError, match="truncated"):
        read_container(data + struct.pack("<I", 1) + struct.pack("<I", 2**31) + b"\x00" * 8)


def test_header_must_be_a_json_object():
    for head in (b"[1, 2]", b"\xff\xfe", b"{not json"):
        data = MAGIC + bytes([FORMAT_VERSION]) + struct.pack("<I", len(head)) + head
        data += struct.pack("<I", zlib.crc32(head)) + struct.pack("<I", 0)
        with pytest.raises(BitstreamError, match="header"):
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
