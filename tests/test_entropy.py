"""Integer frequency tables, range coding and the bit-packing fallback."""

import math

import numpy as np
import pytest
import torch

from codec.entropy import FrequencyTable, decode_symbols, encode_symbols, packed_bits


def test_range_coding_round_trips_and_approaches_the_entropy():
    rng = np.random.default_rng(0)
    p = rng.dirichlet(np.full(64, 0.3))
    symbols = rng.choice(64, size=20_000, p=p)
    table = FrequencyTable.from_codes(symbols, 64)
    data = encode_symbols(symbols, 64, table)
    assert np.array_equal(decode_symbols(data, symbols.size, 64, table), symbols)
    bits = 8 * len(data) / symbols.size
    assert bits <= table.bits_per_symbol() * 1.01 + 64 / symbols.size  # within 1 % plus a few words
    assert bits < packed_bits(64) * 0.8  # the point of entropy coding: far below 6 bits


def test_symbols_never_seen_are_still_encodable():
    table = FrequencyTable.from_codes(np.zeros(100, dtype=np.int64), 1000)  # only symbol 0 observed
    symbols = np.array([0, 999, 500, 0, 1])
    assert np.array_equal(decode_symbols(encode_symbols(symbols, 1000, table), 5, 1000, table), symbols)


@pytest.mark.parametrize("k", [2, 3, 1000, 1024, 262_144])
def test_bit_packing_fallback(k):
    rng = np.random.default_rng(1)
    symbols = rng.integers(0, k, 777)
    data = encode_symbols(torch.from_numpy(symbols), k)
    assert len(data) == math.ceil(777 * packed_bits(k) / 8)
    assert np.array_equal(decode_symbols(data, 777, k), symbols)
    with pytest.raises(ValueError, match="expected"):
        decode_symbols(data[:-1], 777, k)


def test_tables_round_trip_through_tensors_and_reject_bad_input():
    table = FrequencyTable.from_codes(torch.tensor([[1, 2, -1], [2, 2, 0]]), 4, prior=1)
    assert table.counts.tolist() == [2, 2, 4, 1]
    assert FrequencyTable.from_tensor(table.to_tensor()).counts.tolist() == [2, 2, 4, 1]
    with pytest.raises(ValueError):
        FrequencyTable(np.array([1, 0, 3]))
    with pytest.raises(ValueError, match="out of range"):
        encode_symbols(np.array([4]), 4)
    with pytest.raises(ValueError, match="multiple of 4"):
        decode_symbols(b"abc", 3, 4, table)
    with pytest.raises(ValueError, match="count"):
        decode_symbols(b"", -1, 4)
    assert encode_symbols(np.array([], dtype=np.int64), 4, table) == b""
    assert decode_symbols(b"", 0, 4, table).size == 0


def test_corrupt_range_coded_payloads_fail_cleanly_or_decode_in_range():
    rng = np.random.default_rng(2)
    table = FrequencyTable.from_codes(rng.integers(0, 16, 5000), 16)
    data = bytearray(encode_symbols(rng.integers(0, 16, 2000), 16, table))
    for _ in range(200):
        bad = bytearray(data)
        bad[rng.integers(len(bad))] ^= 1 << int(rng.integers(8))
        cut = bytes(bad[: 4 * int(rng.integers(1, len(bad) // 4 + 1))])
        try:
            out = decode_symbols(cut, 2000, 16, table)
        except ValueError:
            continue
        assert out.shape == (2000,) and out.min() >= 0 and out.max() < 16


def test_a_tile_never_costs_more_than_its_nominal_bits():
    """Codes the tables call rare would cost more than log2 K bits each: the tile falls back to packing."""
    from codec.entropy import PACKED, RANGE, decode_tile, encode_tile

    rng = np.random.default_rng(0)
    sizes = [256, 256]
    skewed = FrequencyTable(np.array([10_000] + [1] * 255))
    typical = np.zeros((500, 2), dtype=np.int64)
    rare = rng.integers(1, 256, (500, 2))
    for cols, tag in ((typical, RANGE), (rare, PACKED)):
        data = encode_tile(cols, sizes, [skewed, skewed])
        assert data[0] == tag and len(data) <= 1 + (500 * 16 + 7) // 8
        assert np.array_equal(decode_tile(data, 500, sizes, [skewed, skewed]), cols)
    with pytest.raises(ValueError, match="tag"):
        decode_tile(bytes([RANGE]) + b"\0" * 8, 500, sizes, None)  # range-coded, but no tables
    with pytest.raises(ValueError, match="empty"):
        decode_tile(b"", 1, sizes)
