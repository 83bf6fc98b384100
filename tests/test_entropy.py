"""Integer frequency tables, range coding and the bit-packing fallback."""

import math

import numpy as np
import pytest
import torch

from codec.entropy import (
    CONTEXT,
    ColumnContexts,
    ContextTable,
    cluster_contexts,
    FrequencyTable,
    decode_context_columns,
    decode_symbols,
    decode_tile,
    encode_context_columns,
    encode_symbols,
    encode_tile,
    fit_column_contexts,
    packed_bits,
)


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


# -- context tables ------------------------------------------------------------------------------


def _markov_grid(rng, grid, k, stay=0.9, levels=2):
    """Codes that mostly repeat the previous position's code along the last axis (and, at level 1,
    follow level 0): the structure context tables are for."""
    g = np.zeros((*grid, levels), dtype=np.int64)
    flat = g.reshape(-1, grid[-1], levels)
    for row in flat:
        for t in range(grid[-1]):
            row[t, 0] = row[t - 1, 0] if t and rng.random() < stay else rng.integers(k)
    g[..., 1] = np.where(rng.random(grid) < stay, (g[..., 0] * 3) % k, rng.integers(0, k, grid))
    return g


@pytest.mark.parametrize("grid", [(2, 50), (1, 12, 9), (3, 1, 7), (1, 1, 1)])
def test_context_coding_round_trips_on_1d_and_2d_grids(grid):
    rng = np.random.default_rng(0)
    k = 16
    train = [_markov_grid(rng, grid if math.prod(grid) > 20 else (2, 40), k) for _ in range(8)]
    contexts = [fit_column_contexts(train, c, [k, k]) for c in range(2)]
    assert all(c is not None for c in contexts)
    assert "level" in contexts[1].tables
    g = _markov_grid(rng, grid, k)
    tables = [FrequencyTable.from_codes(g[..., c], k) for c in range(2)]
    cols = g.reshape(-1, 2)
    data = encode_context_columns(cols, grid, [k, k], tables, contexts)
    out = decode_context_columns(data, grid, [k, k], tables, contexts)
    np.testing.assert_array_equal(out, cols)
    tile = encode_tile(cols, [k, k], tables, grid=grid, contexts=contexts)
    np.testing.assert_array_equal(decode_tile(tile, len(cols), [k, k], tables, grid=grid, contexts=contexts), cols)


def test_context_tables_beat_the_marginal_on_correlated_codes_and_are_skipped_on_iid_codes():
    rng = np.random.default_rng(1)
    k, grid = 32, (1, 16, 16)
    train = [_markov_grid(rng, grid, k) for _ in range(8)]
    contexts = [fit_column_contexts(train, c, [k, k]) for c in range(2)]
    g = _markov_grid(rng, grid, k)
    tables = [FrequencyTable.from_codes(np.concatenate([t[..., c].ravel() for t in train]), k) for c in range(2)]
    cols = g.reshape(-1, 2)
    plain = encode_tile(cols, [k, k], tables)
    ctx = encode_tile(cols, [k, k], tables, grid=grid, contexts=contexts)
    assert ctx[0] == CONTEXT and len(ctx) < 0.6 * len(plain)
    iid = [rng.integers(0, k, (*grid, 2)) for _ in range(8)]
    assert fit_column_contexts(iid, 0, [k, k]) is None
    assert fit_column_contexts(train, 0, [k, k], max_symbols=16) is None  # tables too large: none


def test_context_payloads_that_are_corrupt_fail_cleanly():
    rng = np.random.default_rng(2)
    k, grid = 8, (1, 10, 10)
    train = [_markov_grid(rng, grid, k) for _ in range(6)]
    contexts = [fit_column_contexts(train, c, [k, k]) for c in range(2)]
    tables = [FrequencyTable.from_codes(train[0][..., c], k) for c in range(2)]
    data = encode_context_columns(train[0].reshape(-1, 2), grid, [k, k], tables, contexts)
    for bad in (data[:-4], data[:3], b"\xff" * len(data), bytes(len(data))):
        try:
            out = decode_context_columns(bad, grid, [k, k], tables, contexts)
        except ValueError:
            continue
        assert out.min() >= 0 and out.max() < k  # garbage in, codes in range out: never a crash
    with pytest.raises(ValueError, match="tag"):
        decode_tile(bytes([CONTEXT]) + data, 100, [k, k], tables)  # no context tables: refused
    with pytest.raises(ValueError):
        decode_context_columns(data, grid, [k, k + 1], tables, contexts)  # tables of another alphabet


def test_context_tables_validate_their_integers():
    with pytest.raises(ValueError):
        ContextTable(np.zeros((3, 4), dtype=np.int64))
    with pytest.raises(ValueError):
        ContextTable(np.full((3, 4), 1 << 20))
    t = ContextTable(np.arange(1, 13).reshape(3, 4))
    assert t.num_contexts == 2 and t.num_symbols == 4
    assert np.array_equal(ContextTable.from_tensor(t.to_tensor()).rows, t.rows)
    with pytest.raises(ValueError, match="unknown context source"):
        ColumnContexts({"diagonal": t}).check(0, [4], 2)


def _grouped_grid(rng, length, k, groups, rows=4):
    """1-D code sequences whose next code depends only on the group (``code * groups // k``) of
    the previous one: each group prefers its own band of codes."""
    g = np.zeros((rows, length, 1), dtype=np.int64)
    band = k // groups
    for r in range(rows):
        for t in range(length):
            grp = g[r, t - 1, 0] * groups // k if t else 0
            g[r, t, 0] = (grp * band + rng.integers(band)) if rng.random() < 0.8 else rng.integers(k)
    return g


def test_bucketed_context_tables_find_the_groups_and_stay_small():
    rng = np.random.default_rng(3)
    k, groups = 64, 4
    train = [_grouped_grid(rng, 400, k, groups) for _ in range(8)]
    sym = np.concatenate([g[:, 1:, 0].ravel() for g in train])
    ctx = np.concatenate([g[:, :-1, 0].ravel() for g in train])
    buckets = cluster_contexts(sym, ctx, k, k, groups)
    truth = np.arange(k) * groups // k
    # the same partition up to relabelling
    assert len({(int(a), int(b)) for a, b in zip(buckets, truth)}) == groups
    full = fit_column_contexts(train, 0, [k])
    small = fit_column_contexts(train, 0, [k], buckets=groups)
    assert full is not None and small is not None
    t = small.tables["prev0"]
    assert t.rows.shape == (groups + 1, k) and t.num_contexts == k and t.buckets.shape == (k,)
    test = _grouped_grid(rng, 400, k, groups)
    tables = [FrequencyTable.from_codes(np.concatenate([g.ravel() for g in train]), k)]
    sizes = {name: len(encode_context_columns(test.reshape(-1, 1), test.shape[:2], [k], tables, [cc]))
             for name, cc in (("full", full), ("bucketed", small))}
    plain = len(encode_tile(test.reshape(-1, 1), [k], tables))
    assert sizes["bucketed"] < 0.88 * plain and sizes["bucketed"] <= 1.03 * sizes["full"]
    data = encode_tile(test.reshape(-1, 1), [k], tables, grid=test.shape[:2], contexts=[small])
    out = decode_tile(data, test.size, [k], tables, grid=test.shape[:2], contexts=[small])
    np.testing.assert_array_equal(out, test.reshape(-1, 1))
    again = ContextTable.from_tensor(t.to_tensor(), t.buckets_tensor())
    assert np.array_equal(again.rows, t.rows) and np.array_equal(again.buckets, t.buckets)


def test_bucketed_contexts_open_large_alphabets_and_validate_their_map():
    rng = np.random.default_rng(4)
    k = 512
    train = [_grouped_grid(rng, 300, k, 8, rows=2) for _ in range(8)]
    assert fit_column_contexts(train, 0, [k]) is None  # beyond max_symbols without buckets
    cc = fit_column_contexts(train, 0, [k], max_symbols=1024, buckets=8)
    assert cc is not None and cc.tables["prev0"].rows.shape == (9, k)
    rows = np.ones((3, 4), dtype=np.int64)
    assert ContextTable(rows, np.array([0, 1, 1, 0, 0])).num_contexts == 5
    for bad in (np.array([0, 2]), np.array([-1, 0]), np.zeros((2, 2), dtype=np.int64), np.array([0.5])):
        with pytest.raises(ValueError, match="buckets"):
            ContextTable(rows, bad)
    with pytest.raises(ValueError, match="num_buckets"):
        cluster_contexts(np.zeros(4, dtype=np.int64), np.zeros(4, dtype=np.int64), 4, 4, 4)


def test_precomputed_row_mixtures_are_bit_identical_to_summing_rows():
    from codec.entropy import _context_probs, _mixtures

    rng = np.random.default_rng(5)
    k = 64
    cc = ColumnContexts({
        "prev0": ContextTable(rng.integers(1, 5000, (9, k)), rng.integers(0, 8, 300)),
        "level": ContextTable(rng.integers(1, 5000, (17, k))),
    })
    probs, index = _mixtures(cc)
    ctx = {"prev0": rng.integers(0, 301, 500), "level": rng.integers(0, 17, 500)}
    looked_up = probs[sum(lookup[ctx[src]] * stride for src, lookup, stride in index)]
    assert np.array_equal(looked_up, _context_probs(cc, ctx))  # the same floats, not merely close
    wide = ColumnContexts({"prev0": ContextTable(np.ones((1025, 1024), dtype=np.int64)),
                           "prev1": ContextTable(np.ones((1025, 1024), dtype=np.int64))})
    assert _mixtures(wide) is None  # too many combinations: rows are summed per symbol instead


# -- variable depth ------------------------------------------------------------------------------


def _with_depths(g, rng, low=0):
    """``g`` ``(B, *S, L)`` with the levels past a depth in ``[low, L]`` per position set to -1,
    the depths in runs (as a rate allocation gives them)."""
    levels = g.shape[-1]
    depth = np.repeat(rng.integers(low, levels + 1, size=-(-g[..., 0].size // 5)), 5)[: g[..., 0].size]
    cols = g.reshape(-1, levels).copy()
    cols[np.arange(levels)[None, :] >= depth[:, None]] = -1
    return cols, depth


@pytest.mark.parametrize("grid", [(2, 50), (1, 12, 9), (3, 1, 7), (1, 1, 1)])
@pytest.mark.parametrize("with_contexts", [False, True])
def test_variable_depth_round_trips_with_and_without_contexts(grid, with_contexts):
    from codec.entropy import DEPTH_CONTEXT, DEPTH_RANGE, decode_depth_columns, depths_of, encode_depth_columns

    rng = np.random.default_rng(0)
    k = 16
    train = [_markov_grid(rng, grid if math.prod(grid) > 20 else (2, 40), k) for _ in range(8)]
    contexts = [fit_column_contexts(train, c, [k, k]) for c in range(2)] if with_contexts else None
    g = _markov_grid(rng, grid, k)
    tables = [FrequencyTable.from_codes(g[..., c], k) for c in range(2)]
    cols, depth = _with_depths(g, rng)
    np.testing.assert_array_equal(depths_of(cols), depth)
    data = encode_depth_columns(cols, grid, [k, k], tables, contexts)
    np.testing.assert_array_equal(decode_depth_columns(data, grid, [k, k], tables, contexts), cols)
    tile = encode_tile(cols, [k, k], tables, grid=grid, contexts=contexts)
    assert tile[0] in ((DEPTH_RANGE, DEPTH_CONTEXT) if with_contexts else (DEPTH_RANGE,))
    np.testing.assert_array_equal(decode_tile(tile, len(cols), [k, k], tables, grid=grid, contexts=contexts), cols)


def test_variable_depth_costs_what_its_codes_and_depths_cost():
    from codec.entropy import DEPTH_RANGE, RANGE, min_tile_bits

    rng = np.random.default_rng(1)
    k, grid = 64, (1, 400)
    g = rng.integers(0, k, (*grid, 3))
    tables = [FrequencyTable.from_codes(g[..., c], k) for c in range(3)]
    full = encode_tile(g.reshape(-1, 3), [k] * 3, tables, grid=grid)
    cols, _ = _with_depths(g, rng)
    present = int((cols >= 0).sum())
    shallow = encode_tile(cols, [k] * 3, tables, grid=grid)
    assert full[0] == RANGE and shallow[0] == DEPTH_RANGE
    # the codes present cost log2(64) bits each; depths in runs of 5 cost well under a bit each
    assert 8 * len(shallow) < present * 6 + 400 * 0.9 + 64
    none = np.full((400, 3), -1)
    empty = encode_tile(none, [k] * 3, tables, grid=grid)
    assert len(empty) < 16  # 400 positions without a level: the depths alone, nearly free
    np.testing.assert_array_equal(decode_tile(empty, 400, [k] * 3, tables, grid=grid), none)
    assert 0 < min_tile_bits(empty, [k] * 3, tables) < 0.01  # a bound the header check can still use


def test_variable_depth_refuses_gaps_and_missing_tables():
    from codec.entropy import depths_of

    with pytest.raises(ValueError, match="last levels"):
        depths_of(np.array([[3, -1, 2]]))
    with pytest.raises(ValueError, match="out of range"):
        encode_tile(np.array([[3, -2]]), [8, 8], [FrequencyTable.from_codes(np.arange(8), 8)] * 2, grid=(1, 1))
    with pytest.raises(ValueError, match="frequency tables"):
        encode_tile(np.array([[3, -1]]), [8, 8])
