"""Entropy coding of code indices: integer frequency tables and a range coder.

A :class:`FrequencyTable` holds integer counts (every symbol at least 1, so any code can be
written). Symbols are range-coded with constriction's ``RangeEncoder`` under the categorical
model ``counts / sum(counts)``; constriction quantizes that model to fixed point
deterministically, so the decoded symbols depend only on the integers in the table and in the
stream — a file written on one machine decodes to the same codes on any other. Without a table,
symbols are bit-packed at ``ceil(log2 K)`` bits each.

Tables are computed from training-data codes when a model is exported and stored with its
weights (:meth:`FrequencyTable.to_tensor`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np
import torch
from torch import Tensor

__all__ = ["FrequencyTable", "encode_symbols", "decode_symbols", "encode_columns", "decode_columns", "encode_tile", "decode_tile", "packed_bits", "PACKED", "RANGE", "CONTEXT",
           "ContextTable", "ColumnContexts", "cluster_contexts", "fit_column_contexts", "encode_context_columns", "decode_context_columns",
           "DEPTH_RANGE", "DEPTH_CONTEXT", "depths_of", "encode_depth_columns", "decode_depth_columns"]

MAX_SYMBOLS = 1 << 28  # a hard bound on symbols in one call, checked before allocating


@dataclass(frozen=True)
class FrequencyTable:
    """Integer counts ``(K,)`` of a code alphabet, all >= 1."""

    counts: np.ndarray

    def __post_init__(self) -> None:
        c = np.asarray(self.counts)
        if c.ndim != 1 or c.size < 1 or not np.issubdtype(c.dtype, np.integer) or (c < 1).any():
            raise ValueError("a frequency table is a 1-D array of integer counts >= 1")
        object.__setattr__(self, "counts", c.astype(np.int64))

    @classmethod
    def from_codes(cls, codes: Tensor | np.ndarray, num_symbols: int, prior: int = 1) -> "FrequencyTable":
        """Counts of ``codes`` (negative entries ignored) plus ``prior`` per symbol (Laplace)."""
        flat = np.asarray(codes.cpu() if isinstance(codes, Tensor) else codes).reshape(-1)
        flat = flat[flat >= 0]
        if flat.size and flat.max() >= num_symbols:
            raise ValueError(f"code {int(flat.max())} out of range for {num_symbols} symbols")
        return cls(np.bincount(flat.astype(np.int64), minlength=num_symbols) + int(prior))

    @property
    def num_symbols(self) -> int:
        return int(self.counts.size)

    def probabilities(self) -> np.ndarray:
        return self.counts / self.counts.sum(dtype=np.float64)

    def bits_per_symbol(self) -> float:
        """Entropy of the table in bits (what a long stream of its own statistics costs per symbol)."""
        p = self.probabilities()
        return float(-(p * np.log2(p)).sum())

    def to_tensor(self) -> Tensor:
        return torch.from_numpy(self.counts.copy())

    @classmethod
    def from_tensor(cls, t: Tensor) -> "FrequencyTable":
        return cls(t.detach().cpu().numpy())


def packed_bits(num_symbols: int) -> int:
    """Bits per symbol of the fixed-width fallback."""
    return max(1, math.ceil(math.log2(num_symbols)))


def _model(table: FrequencyTable):
    import constriction

    return constriction.stream.model.Categorical(table.probabilities(), perfect=False)


def encode_symbols(symbols: np.ndarray | Tensor, num_symbols: int, table: FrequencyTable | None = None) -> bytes:
    """Symbols in ``[0, num_symbols)`` -> bytes (range-coded with ``table``, else bit-packed)."""
    s = np.asarray(symbols.cpu() if isinstance(symbols, Tensor) else symbols).reshape(-1).astype(np.int64)
    if s.size > MAX_SYMBOLS:
        raise ValueError(f"too many symbols ({s.size})")
    if s.size and (s.min() < 0 or s.max() >= num_symbols):
        raise ValueError(f"symbols out of range [0, {num_symbols})")
    if table is not None:
        if table.num_symbols != num_symbols:
            raise ValueError(f"table has {table.num_symbols} symbols, expected {num_symbols}")
        if s.size == 0:
            return b""
        import constriction

        enc = constriction.stream.queue.RangeEncoder()
        enc.encode(s.astype(np.int32), _model(table))
        return enc.get_compressed().astype("<u4").tobytes()
    bits = packed_bits(num_symbols)
    shifts = np.arange(bits - 1, -1, -1, dtype=np.int64)
    matrix = ((s[:, None] >> shifts) & 1).astype(np.uint8)
    return np.packbits(matrix.reshape(-1)).tobytes()


def decode_symbols(
    data: bytes, count: int, num_symbols: int, table: FrequencyTable | None = None
) -> np.ndarray:
    """Inverse of :func:`encode_symbols`: ``count`` symbols (int64) from ``data``.

    Raises ``ValueError`` on inconsistent input (wrong length, symbols out of range) instead of
    allocating or looping beyond what ``count`` allows.
    """
    if not 0 <= count <= MAX_SYMBOLS:
        raise ValueError(f"symbol count {count} out of bounds")
    if table is not None:
        if table.num_symbols != num_symbols:
            raise ValueError(f"table has {table.num_symbols} symbols, expected {num_symbols}")
        if count == 0:
            return np.zeros(0, dtype=np.int64)
        if len(data) % 4 or not data:
            raise ValueError("range-coded payload must be a non-empty multiple of 4 bytes")
        import constriction

        words = np.frombuffer(data, dtype="<u4").astype(np.uint32)
        try:
            out = np.asarray(constriction.stream.queue.RangeDecoder(words).decode(_model(table), count))
        except Exception as err:  # constriction reports a corrupt stream as a generic error
            raise ValueError(f"corrupt range-coded payload ({err})") from None
        out = out.astype(np.int64)
    else:
        bits = packed_bits(num_symbols)
        need = (count * bits + 7) // 8
        if len(data) != need:
            raise ValueError(f"bit-packed payload has {len(data)} bytes, expected {need}")
        flat = np.unpackbits(np.frombuffer(data, dtype=np.uint8))[: count * bits].reshape(count, bits)
        out = (flat.astype(np.int64) << np.arange(bits - 1, -1, -1, dtype=np.int64)).sum(1)
    if out.size and (out.min() < 0 or out.max() >= num_symbols):
        raise ValueError("decoded symbols out of range: corrupt payload")
    return out


def encode_columns(
    columns: np.ndarray | Tensor, sizes: list[int], tables: list[FrequencyTable] | None = None
) -> bytes:
    """Code columns ``(count, n)`` of symbols into **one** stream, column after column.

    Column ``c`` holds symbols in ``[0, sizes[c])``. With ``tables`` (one per column) every column
    goes through one range coder (one 32-bit word of flush for the whole stream, not per column);
    without, each column is bit-packed at its own width and the bits are concatenated.
    """
    a = np.asarray(columns.cpu() if isinstance(columns, Tensor) else columns).astype(np.int64)
    if a.ndim != 2 or a.shape[1] != len(sizes):
        raise ValueError(f"columns must be (count, {len(sizes)}), got {a.shape}")
    if a.size > MAX_SYMBOLS:
        raise ValueError(f"too many symbols ({a.size})")
    for c, k in enumerate(sizes):
        if a.shape[0] and (a[:, c].min() < 0 or a[:, c].max() >= k):
            raise ValueError(f"column {c}: symbols out of range [0, {k})")
    if tables is not None:
        if len(tables) != len(sizes) or any(t.num_symbols != k for t, k in zip(tables, sizes)):
            raise ValueError("one table per column, each with that column's alphabet size")
        if a.shape[0] == 0:
            return b""
        import constriction

        enc = constriction.stream.queue.RangeEncoder()
        for c, table in enumerate(tables):
            enc.encode(a[:, c].astype(np.int32), _model(table))
        return enc.get_compressed().astype("<u4").tobytes()
    bits = [packed_bits(k) for k in sizes]
    planes = [((a[:, c : c + 1] >> np.arange(b - 1, -1, -1, dtype=np.int64)) & 1).reshape(-1) for c, b in enumerate(bits)]
    return np.packbits(np.concatenate(planes).astype(np.uint8) if planes else np.zeros(0, np.uint8)).tobytes()


def decode_columns(
    data: bytes, count: int, sizes: list[int], tables: list[FrequencyTable] | None = None
) -> np.ndarray:
    """Inverse of :func:`encode_columns`: ``(count, len(sizes))`` int64 symbols from ``data``.

    Raises ``ValueError`` on an inconsistent or corrupt stream, within bounded time and memory.
    """
    if not 0 <= count or count * max(1, len(sizes)) > MAX_SYMBOLS:
        raise ValueError(f"symbol count {count} out of bounds")
    out = np.zeros((count, len(sizes)), dtype=np.int64)
    if tables is not None:
        if len(tables) != len(sizes) or any(t.num_symbols != k for t, k in zip(tables, sizes)):
            raise ValueError("one table per column, each with that column's alphabet size")
        if count == 0:
            if data:
                raise ValueError("payload for an empty signal must be empty")
            return out
        if len(data) % 4 or not data:
            raise ValueError("range-coded payload must be a non-empty multiple of 4 bytes")
        import constriction

        dec = constriction.stream.queue.RangeDecoder(np.frombuffer(data, dtype="<u4").astype(np.uint32))
        try:
            for c, table in enumerate(tables):
                out[:, c] = np.asarray(dec.decode(_model(table), count))
        except Exception as err:  # constriction reports a corrupt stream as a generic error
            raise ValueError(f"corrupt range-coded payload ({err})") from None
    else:
        bits = [packed_bits(k) for k in sizes]
        need = (count * sum(bits) + 7) // 8
        if len(data) != need:
            raise ValueError(f"bit-packed payload has {len(data)} bytes, expected {need}")
        flat = np.unpackbits(np.frombuffer(data, dtype=np.uint8))
        pos = 0
        for c, b in enumerate(bits):
            plane = flat[pos : pos + count * b].reshape(count, b).astype(np.int64)
            out[:, c] = (plane << np.arange(b - 1, -1, -1, dtype=np.int64)).sum(1)
            pos += count * b
    for c, k in enumerate(sizes):
        if count and (out[:, c].min() < 0 or out[:, c].max() >= k):
            raise ValueError("decoded symbols out of range: corrupt payload")
    return out


PACKED, RANGE = 0, 1  # the tag byte that starts a tile's payload (CONTEXT, DEPTH_RANGE and DEPTH_CONTEXT below)


def encode_tile(
    columns: np.ndarray | Tensor, sizes: list[int], tables: list[FrequencyTable] | None = None,
    grid: tuple[int, ...] | None = None, contexts: list[ColumnContexts | None] | None = None,
) -> bytes:
    """One tile's payload: a tag byte, then its columns bit-packed, range-coded, or range-coded
    with context tables (``grid`` ``(B, *S)`` and ``contexts`` given), whichever is smallest.

    Range coding wins on data like the tables' training data; on data far from it (a rare
    code can cost more than ``log2 K`` bits), bit packing caps the payload at the nominal
    bits, so a tile never costs more than ``ceil(count * sum(log2 K) / 8) + 1`` bytes.

    Columns whose positions leave out their last levels (``-1``, a variable depth) need
    ``tables`` and ``grid``: they are range-coded with their depths (:func:`encode_depth_columns`),
    with or without the context tables, whichever is smaller.
    """
    a = np.asarray(columns.cpu() if isinstance(columns, Tensor) else columns)
    if a.size and a.min() < 0:
        if tables is None or grid is None:
            raise ValueError("codes of a variable depth (-1 entries) need frequency tables and the code grid")
        best = bytes([DEPTH_RANGE]) + encode_depth_columns(a, grid, sizes, tables)
        if contexts is not None and any(c is not None for c in contexts):
            best = min(best, bytes([DEPTH_CONTEXT]) + encode_depth_columns(a, grid, sizes, tables, contexts), key=len)
        return best
    packed = bytes([PACKED]) + encode_columns(columns, sizes, None)
    if tables is None:
        return packed
    best = min(packed, bytes([RANGE]) + encode_columns(columns, sizes, tables), key=len)
    if contexts is not None and grid is not None and any(c is not None for c in contexts):
        ctx = bytes([CONTEXT]) + encode_context_columns(columns, grid, sizes, tables, contexts)
        best = min(best, ctx, key=len)
    return best


def decode_tile(
    data: bytes, count: int, sizes: list[int], tables: list[FrequencyTable] | None = None,
    grid: tuple[int, ...] | None = None, contexts: list[ColumnContexts | None] | None = None,
) -> np.ndarray:
    """Inverse of :func:`encode_tile` -> ``(count, len(sizes))`` int64; ``ValueError`` if corrupt."""
    if not data:
        raise ValueError("empty tile payload")
    tag, body = data[0], data[1:]
    if tag == PACKED:
        return decode_columns(body, count, sizes, None)
    if tag == RANGE and tables is not None:
        return decode_columns(body, count, sizes, tables)
    if tag == CONTEXT and tables is not None and contexts is not None and grid is not None:
        if math.prod(grid) != count:
            raise ValueError(f"grid {grid} does not hold {count} positions")
        return decode_context_columns(body, grid, sizes, tables, contexts)
    if tag in (DEPTH_RANGE, DEPTH_CONTEXT) and tables is not None and grid is not None:
        if math.prod(grid) != count:
            raise ValueError(f"grid {grid} does not hold {count} positions")
        if tag == DEPTH_CONTEXT and contexts is None:
            raise ValueError("payload coded with context tables, but the model has none")
        return decode_depth_columns(body, grid, sizes, tables, contexts if tag == DEPTH_CONTEXT else None)
    raise ValueError(f"unknown payload coding tag {tag}")


def min_tile_bits(
    data: bytes, sizes: list[int], tables: list[FrequencyTable] | None,
    contexts: list[ColumnContexts | None] | None = None,
) -> float:
    """Fewest bits per position a tile's payload can spend (used to bound what a header may claim)."""
    def marginal(t: FrequencyTable) -> float:
        return -math.log2(float(t.counts.max()) / float(t.counts.sum()))

    if data and data[0] == RANGE and tables is not None:
        return sum(marginal(t) for t in tables)
    if data and data[0] == CONTEXT and tables is not None and contexts is not None:
        return sum(marginal(t) if c is None else c.min_bits() for t, c in zip(tables, contexts))
    if data and data[0] in (DEPTH_RANGE, DEPTH_CONTEXT) and tables is not None:
        # a position may code no level at all: only its depth symbol is bounded below
        return -math.log2(1 - len(sizes) / DEPTH_COUNT_LIMIT)
    return float(sum(packed_bits(k) for k in sizes))


# -- context modelling -------------------------------------------------------------------------
#
# A code grid ``(B, *S, L)`` (batch, spatial axes, levels) has strong dependencies a per-column
# table cannot use: neighbouring image tokens and consecutive audio frames often share codes,
# and a residual level depends on the level before it. A column may therefore carry *context
# tables*, one per source:
#
#   ``"prev<a>"`` -- the code one step back along spatial axis ``a`` (the token above / to the
#                    left; the previous audio frame), same column;
#   ``"level"``   -- the code of the previous column at the same position.
#
# Each table holds integer rows ``(K_ctx + 1, K)``: row ``c`` is the distribution of a symbol
# whose context symbol is ``c``, scaled to sum to about ``CONTEXT_SCALE``; the last row is used
# where the context does not exist (the grid's first row/column/frame). A symbol's model is the
# **sum** of its sources' rows (an equal-weight mixture), computed in int64 and divided once by
# its exact integer total, so encoder and decoder derive bit-identical probabilities from
# integers alone. Symbols are coded in wavefront order (by the sum of their spatial indices),
# so the decoder can decode every position of one wavefront in a single vectorised call.

CONTEXT_SCALE = 1 << 16
CONTEXT_MAX = (1 << 16) - 1  # entries are stored as uint16
MAX_CONTEXT_PROBS = 1 << 22  # probability-matrix entries per coder call (bounds memory)


@dataclass(frozen=True)
class ContextTable:
    """Integer rows ``(R + 1, K)``, all >= 1: a symbol's distribution given a context symbol.

    Without ``buckets``, context symbol ``c`` selects row ``c`` (``R = K_ctx``). With ``buckets``
    (``(K_ctx,)`` ints in ``[0, R)``), it selects row ``buckets[c]``: context symbols that predict
    alike share a row, so a table over a large alphabet stays small (``R`` rows instead of
    ``K_ctx``). Row ``R`` is the "none" row either way.
    """

    rows: np.ndarray
    buckets: np.ndarray | None = None

    def __post_init__(self) -> None:
        r = np.asarray(self.rows)
        if r.ndim != 2 or r.shape[0] < 2 or r.shape[1] < 1 or not np.issubdtype(r.dtype, np.integer) or (r < 1).any():
            raise ValueError("a context table is a 2-D array of integer counts >= 1 with at least 2 rows")
        if (r > CONTEXT_MAX).any():
            raise ValueError("context table entries out of range")
        object.__setattr__(self, "rows", r.astype(np.int64))
        if self.buckets is not None:
            b = np.asarray(self.buckets)
            if b.ndim != 1 or b.size < 1 or not np.issubdtype(b.dtype, np.integer) or b.min() < 0 or b.max() >= r.shape[0] - 1:
                raise ValueError(f"context buckets must be a 1-D array of row indices in [0, {r.shape[0] - 1})")
            object.__setattr__(self, "buckets", b.astype(np.int64))
        lookup = np.arange(r.shape[0]) if self.buckets is None else np.append(self.buckets, r.shape[0] - 1)
        object.__setattr__(self, "_lookup", lookup)

    @property
    def num_symbols(self) -> int:
        return int(self.rows.shape[1])

    @property
    def num_contexts(self) -> int:
        """Context symbols ``0 .. num_contexts - 1``; ``num_contexts`` itself means "none"."""
        return int(self.rows.shape[0] - 1 if self.buckets is None else self.buckets.size)

    def select(self, contexts: np.ndarray) -> np.ndarray:
        """The rows ``(..., K)`` of context symbols ``contexts`` (values ``0 .. num_contexts``)."""
        return self.rows[self._lookup[contexts]]

    @classmethod
    def fit(cls, symbols: np.ndarray, contexts: np.ndarray, num_symbols: int, num_contexts: int,
            strength: float = 32.0, num_buckets: int | None = None) -> "ContextTable":
        """Rows from paired ``symbols`` and ``contexts`` (``num_contexts`` = none), smoothed toward the
        marginal with ``strength`` pseudo-counts: ``(n(c, s) + strength * p(s)) / (n(c) + strength)``.

        With ``num_buckets < num_contexts``, context symbols are first clustered into that many
        buckets by their conditional distributions (:func:`cluster_contexts`)."""
        s = np.asarray(symbols, dtype=np.int64).reshape(-1)
        c = np.asarray(contexts, dtype=np.int64).reshape(-1)
        buckets = None
        if num_buckets is not None and num_buckets < num_contexts:
            buckets = cluster_contexts(s, c, num_symbols, num_contexts, num_buckets, strength)
            c = np.append(buckets, num_buckets)[c]
            num_contexts = num_buckets
        marg = np.bincount(s, minlength=num_symbols).astype(np.float64) + 1.0
        marg /= marg.sum()
        n = np.bincount(c * num_symbols + s, minlength=(num_contexts + 1) * num_symbols)
        n = n.reshape(num_contexts + 1, num_symbols).astype(np.float64)
        n[num_contexts] += np.bincount(s, minlength=num_symbols)  # "none" row: the marginal
        p = (n + strength * marg[None]) / (n.sum(1, keepdims=True) + strength)
        return cls(np.clip(np.rint(p * CONTEXT_SCALE), 1, CONTEXT_MAX).astype(np.int64), buckets)

    def to_tensor(self) -> Tensor:
        """The rows as uint16 (the buckets, if any: :meth:`buckets_tensor`)."""
        return torch.from_numpy(self.rows.astype(np.uint16))

    def buckets_tensor(self) -> Tensor | None:
        return None if self.buckets is None else torch.from_numpy(self.buckets.astype(np.uint16))

    @classmethod
    def from_tensor(cls, t: Tensor, buckets: Tensor | None = None) -> "ContextTable":
        b = None if buckets is None else buckets.detach().cpu().numpy().astype(np.int64)
        return cls(t.detach().cpu().numpy().astype(np.int64), b)


def cluster_contexts(symbols: np.ndarray, contexts: np.ndarray, num_symbols: int, num_contexts: int,
                     num_buckets: int, strength: float = 32.0, iterations: int = 25, restarts: int = 4) -> np.ndarray:
    """Group context symbols into ``num_buckets`` buckets that predict alike -> ``(num_contexts,)`` ints.

    Lloyd iterations under the coding cost: each context symbol goes to the bucket whose smoothed
    distribution codes its observed symbols in the fewest bits (``-sum_s n(c, s) log p_b(s)``),
    then bucket distributions are recomputed from their members' counts; a bucket left empty is
    re-seeded with the context coded worst. The starting groups come from count-weighted k-means
    on the contexts' correspondence-analysis coordinates (their conditional distributions mapped
    so that Euclidean distance is the chi-square distance, truncated to ``num_buckets``
    dimensions, which denoises sparse counts); of ``restarts`` starts drawn from fixed generators
    (the result is a function of the data alone), the clustering with the lowest cost is kept.
    Context symbols never observed go to the bucket closest to the marginal.
    """
    if not 1 <= num_buckets < num_contexts:
        raise ValueError(f"num_buckets must be in [1, {num_contexts}), got {num_buckets}")
    s = np.asarray(symbols, dtype=np.int64).reshape(-1)
    c = np.asarray(contexts, dtype=np.int64).reshape(-1)
    keep = c < num_contexts
    n = np.bincount(c[keep] * num_symbols + s[keep], minlength=num_contexts * num_symbols)
    n = n.reshape(num_contexts, num_symbols).astype(np.float64)
    total = n.sum(1)
    marg = n.sum(0) + 1.0
    marg /= marg.sum()

    def log_probs(counts: np.ndarray) -> np.ndarray:
        return np.log((counts + strength * marg[None]) / (counts.sum(1, keepdims=True) + strength))

    unseen = total == 0
    # correspondence analysis: row profiles mapped so that Euclidean distance is their chi-square
    # distance, keeping the leading dimensions (which denoises sparse counts)
    seen = np.flatnonzero(~unseen)
    pr = n[seen] / n.sum()
    r, cm = pr.sum(1), pr.sum(0)
    u, sv, _ = np.linalg.svd((pr - np.outer(r, cm)) / np.sqrt(r)[:, None] / np.sqrt(np.maximum(cm, 1e-300))[None],
                             full_matrices=False)
    d = max(1, min(num_buckets, sv.size))
    f = u[:, :d] * sv[:d] / np.sqrt(r)[:, None]

    def embedded_groups(rng: np.random.Generator) -> np.ndarray:
        # count-weighted k-means++ on the coordinates
        centres = f[[int(rng.choice(seen.size, p=r / r.sum()))]]
        for _ in range(1, num_buckets):
            dist = ((f[:, None] - centres[None]) ** 2).sum(-1).min(1) * r
            centres = np.vstack([centres, f[int(rng.choice(seen.size, p=dist / dist.sum()))] if dist.sum() > 0 else f[:1]])
        for _ in range(iterations):
            lab = ((f[:, None] - centres[None]) ** 2).sum(-1).argmin(1)
            for b in range(num_buckets):
                m = lab == b
                if m.any():
                    centres[b] = (f[m] * r[m, None]).sum(0) / r[m].sum()
        full = np.zeros(num_contexts, dtype=np.int64)
        full[seen] = lab
        return full

    def lloyd(groups: np.ndarray) -> tuple[float, np.ndarray]:
        logp = log_probs(np.eye(num_buckets)[groups].T @ n)
        assign = np.full(num_contexts, -1, dtype=np.int64)
        cost = -n @ logp.T
        for _ in range(iterations):
            new = cost.argmin(1)
            if unseen.any():
                new[unseen] = int((-marg @ logp.T).argmin())
            empty = np.setdiff1d(np.arange(num_buckets), new)
            if empty.size:  # re-seed: the contexts that cost most under their bucket
                worst = np.argsort(-(cost[np.arange(num_contexts), new]), kind="stable")[: empty.size]
                new[worst] = empty[: worst.size]
            if np.array_equal(new, assign):
                break
            assign = new
            logp = log_probs(np.eye(num_buckets)[assign].T @ n)
            cost = -n @ logp.T
        return float(cost[np.arange(num_contexts), assign].sum()), assign

    # a few starts, the cheapest clustering wins; fixed generators make it a function of the data
    runs = [lloyd(embedded_groups(np.random.default_rng(i))) for i in range(restarts)]
    return min(runs, key=lambda r: r[0])[1]


@dataclass(frozen=True)
class ColumnContexts:
    """The context tables of one code column: ``{source: table}`` (sources as above)."""

    tables: dict[str, ContextTable]

    def check(self, column: int, sizes: list[int], spatial_axes: int) -> None:
        for source, table in self.tables.items():
            if table.num_symbols != sizes[column]:
                raise ValueError(f"context table {source!r} of column {column} has {table.num_symbols} symbols, expected {sizes[column]}")
            if source == "level":
                if column == 0 or table.num_contexts != sizes[column - 1]:
                    raise ValueError(f"context 'level' of column {column} does not match the previous column")
            elif source.startswith("prev") and source[4:].isdigit() and int(source[4:]) < spatial_axes:
                if table.num_contexts != sizes[column]:
                    raise ValueError(f"context {source!r} of column {column} must have {sizes[column]} contexts")
            else:
                raise ValueError(f"unknown context source {source!r}")

    def min_bits(self) -> float:
        """A lower bound on the bits any symbol of this column costs."""
        top = sum(int(t.rows.max()) for t in self.tables.values())
        low = sum(int(t.rows.sum(1).min()) for t in self.tables.values())
        return max(0.0, -math.log2(min(1.0, top / low)))

    @cached_property
    def _mixture(self) -> tuple[np.ndarray, list[tuple[str, np.ndarray, int]]] | None:
        return _mixtures(self)  # computed once per column's tables, not once per tile

    def probs(self, ctx: dict[str, np.ndarray]) -> np.ndarray:
        """Symbol probabilities ``(N, K)`` given each source's context symbols ``(N,)``: a row of
        the precomputed mixtures where they are small, else the rows summed per symbol (the same
        floats either way)."""
        mix = self._mixture
        if mix is None:
            return _context_probs(self, ctx)
        return mix[0][sum(lookup[ctx[src]] * stride for src, lookup, stride in mix[1])]


def context_symbols(grid_codes: np.ndarray, column: int, source: str, none: int) -> np.ndarray:
    """Context symbol of every position of ``grid_codes`` ``(B, *S, L)`` for ``source`` (``none`` where absent)."""
    col = grid_codes[..., column]
    if source == "level":
        return grid_codes[..., column - 1].copy()
    axis = 1 + int(source[4:])
    out = np.full(col.shape, none, dtype=np.int64)
    src = [slice(None)] * col.ndim
    dst = [slice(None)] * col.ndim
    src[axis], dst[axis] = slice(0, -1), slice(1, None)
    out[tuple(dst)] = col[tuple(src)]
    return out


def _context_probs(contexts: ColumnContexts, ctx: dict[str, np.ndarray]) -> np.ndarray:
    rows = None
    for source, table in contexts.tables.items():
        r = table.select(ctx[source])
        rows = r if rows is None else rows + r
    assert rows is not None
    return rows / rows.sum(1, keepdims=True)


MAX_MIXTURE_ENTRIES = 1 << 20  # a column's precomputed row combinations, at most (8 MB of float64)


def _mixtures(contexts: ColumnContexts) -> tuple[np.ndarray, list[tuple[str, np.ndarray, int]]] | None:
    """The probabilities of every combination of the sources' rows, where that is small (bucketed
    tables): ``(probs (prod(rows), K), [(source, lookup, stride)])``, so a symbol's model is one
    row lookup. The same integer sums and division as :func:`_context_probs`, so the same floats."""
    tables = list(contexts.tables.items())
    k = tables[0][1].num_symbols
    counts = [t.rows.shape[0] for _, t in tables]
    if math.prod(counts) * k > MAX_MIXTURE_ENTRIES:
        return None
    rows = tables[0][1].rows
    for _, t in tables[1:]:
        rows = (rows[:, None, :] + t.rows[None, :, :]).reshape(-1, k)
    index = [(src, t._lookup, math.prod(counts[i + 1 :])) for i, (src, t) in enumerate(tables)]
    return rows / rows.sum(1, keepdims=True), index


def _wavefront(grid: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Flat positions of a ``(B, *S)`` grid sorted by the sum of spatial indices, the wavefront
    sizes, and the index of every position along every axis ``(len(grid), prod(grid))``."""
    idx = np.indices(grid, dtype=np.int64).reshape(len(grid), -1)
    d = idx[1:].sum(0) if len(grid) > 1 else np.zeros(idx.shape[1], dtype=np.int64)
    order = np.argsort(d, kind="stable")
    return order, np.bincount(d, minlength=int(d.max()) + 1 if d.size else 0), idx


def _check_contexts(contexts: list[ColumnContexts | None], sizes: list[int], grid: tuple[int, ...]) -> None:
    if len(contexts) != len(sizes):
        raise ValueError("one context entry (or None) per column")
    for c, cc in enumerate(contexts):
        if cc is not None:
            cc.check(c, sizes, len(grid) - 1)


def encode_context_columns(
    columns: np.ndarray | Tensor, grid: tuple[int, ...], sizes: list[int], tables: list[FrequencyTable],
    contexts: list[ColumnContexts | None],
) -> bytes:
    """Columns ``(prod(grid), n)`` of a code grid ``grid = (B, *S)`` -> one range-coded stream.

    A column with context tables is coded in wavefront order under the mixture of its sources'
    rows; one without is coded under its frequency table, as :func:`encode_columns` does.
    """
    import constriction

    a = _checked_columns(columns, grid, sizes, allow_absent=False)
    _check_contexts(contexts, sizes, grid)
    if a.shape[0] == 0:
        return b""
    enc = constriction.stream.queue.RangeEncoder()
    _encode_grid_columns(enc, a, grid, tables, contexts, None)
    return enc.get_compressed().astype("<u4").tobytes()


def _checked_columns(columns: np.ndarray | Tensor, grid: tuple[int, ...], sizes: list[int], allow_absent: bool) -> np.ndarray:
    """``columns`` as int64 ``(prod(grid), n)``, every symbol in its column's range (or ``-1``
    for a level a position leaves out, where ``allow_absent``)."""
    a = np.asarray(columns.cpu() if isinstance(columns, Tensor) else columns).astype(np.int64)
    count = math.prod(grid)
    if a.ndim != 2 or a.shape != (count, len(sizes)):
        raise ValueError(f"columns must be ({count}, {len(sizes)}), got {a.shape}")
    low = -1 if allow_absent else 0
    for c, k in enumerate(sizes):
        if count and (a[:, c].min() < low or a[:, c].max() >= k):
            raise ValueError(f"column {c}: symbols out of range [0, {k})")
    return a


def _encode_grid_columns(enc: Any, a: np.ndarray, grid: tuple[int, ...], tables: list[FrequencyTable],
                         contexts: list[ColumnContexts | None], depths: np.ndarray | None) -> None:
    """Code the columns ``a`` ``(prod(grid), n)`` into ``enc``; with ``depths`` ``(prod(grid),)``,
    column ``c`` only at the positions deeper than ``c`` (a context there without it: "none")."""
    import constriction

    count = a.shape[0]
    g = a.reshape(*grid, a.shape[1])
    order, _, _ = _wavefront(grid)
    family = constriction.stream.model.Categorical(perfect=False)
    for c, (table, cc) in enumerate(zip(tables, contexts)):
        if cc is None:
            sym = a[:, c] if depths is None else a[depths > c, c]
            enc.encode(sym.astype(np.int32), _model(table))
            continue
        pos = order if depths is None else order[depths[order] > c]
        ctx = {}
        for src, t in cc.tables.items():
            v = context_symbols(g, c, src, t.num_contexts).reshape(-1)[pos]
            ctx[src] = np.where(v < 0, t.num_contexts, v)  # a neighbour without this level
        sym = a[pos, c]
        step = max(1, MAX_CONTEXT_PROBS // table.num_symbols)
        for i in range(0, pos.size, step):
            probs = cc.probs({s: v[i : i + step] for s, v in ctx.items()})
            enc.encode(sym[i : i + step].astype(np.int32), family, probs)


def decode_context_columns(
    data: bytes, grid: tuple[int, ...], sizes: list[int], tables: list[FrequencyTable],
    contexts: list[ColumnContexts | None],
) -> np.ndarray:
    """Inverse of :func:`encode_context_columns` -> ``(prod(grid), n)`` int64; ``ValueError`` if corrupt."""
    return _decode_stream(data, grid, sizes, tables, contexts, depth_levels=None)


def _decode_stream(data: bytes, grid: tuple[int, ...], sizes: list[int], tables: list[FrequencyTable],
                   contexts: list[ColumnContexts | None], depth_levels: int | None) -> np.ndarray:
    """The columns of a range-coded stream of a ``grid``; with ``depth_levels`` (``n``), the
    stream starts with every position's depth (:func:`encode_depth_columns`) and the levels a
    position leaves out come back as ``-1``."""
    import constriction

    count = math.prod(grid)
    if not 0 <= count or count * max(1, len(sizes)) > MAX_SYMBOLS:
        raise ValueError(f"symbol count {count} out of bounds")
    _check_contexts(contexts, sizes, grid)
    out = np.zeros((*grid, len(sizes)), dtype=np.int64)
    if count == 0:
        if data:
            raise ValueError("payload for an empty signal must be empty")
        return out.reshape(0, len(sizes))
    if len(data) % 4 or not data:
        raise ValueError("range-coded payload must be a non-empty multiple of 4 bytes")
    dec = constriction.stream.queue.RangeDecoder(np.frombuffer(data, dtype="<u4").astype(np.uint32))
    family = constriction.stream.model.Categorical(perfect=False)
    flat = out.reshape(count, len(sizes))  # a view: writes land in ``out``
    order, fronts, idx = _wavefront(grid)
    bounds = np.concatenate([[0], np.cumsum(fronts)])
    strides = np.array([math.prod(grid[a + 1 :]) for a in range(len(grid))], dtype=np.int64)
    try:
        depths = None if depth_levels is None else _decode_depths(dec, family, grid, depth_levels)
        if depths is not None:
            flat[np.arange(len(sizes))[None, :] >= depths[:, None]] = -1
        for c, (table, cc) in enumerate(zip(tables, contexts)):
            if cc is None:
                rows = slice(None) if depths is None else depths > c
                flat[rows, c] = np.asarray(dec.decode(_model(table), count if depths is None else int(rows.sum())))
                continue
            # context symbols are decoded symbols of this column or the previous one, in range by
            # construction (the tables were checked against ``sizes``); checked once per column
            if "level" in cc.tables and (flat[:, c - 1].min() < -1 or flat[:, c - 1].max() > cc.tables["level"].num_contexts):
                raise ValueError("context out of range")
            for w in range(len(fronts)):
                pos = order[bounds[w] : bounds[w + 1]]
                if depths is not None:
                    pos = pos[depths[pos] > c]
                    if pos.size == 0:
                        continue
                ctx = {}
                for src, t in cc.tables.items():
                    if src == "level":
                        ctx[src] = flat[pos, c - 1]
                    else:
                        axis = 1 + int(src[4:])
                        has = idx[axis, pos] > 0
                        v = np.full(pos.size, t.num_contexts, dtype=np.int64)
                        v[has] = flat[pos[has] - strides[axis], c]
                        # a neighbour without this level (variable depth only: other codes are >= 0)
                        ctx[src] = v if depths is None else np.where(v < 0, t.num_contexts, v)
                flat[pos, c] = np.asarray(dec.decode(family, cc.probs(ctx)))
    except ValueError:
        raise
    except Exception as err:  # constriction reports a corrupt stream as a generic error
        raise ValueError(f"corrupt range-coded payload ({err})") from None
    for c, k in enumerate(sizes):
        if flat[:, c].min() < (0 if depth_levels is None else -1) or flat[:, c].max() >= k:
            raise ValueError("decoded symbols out of range: corrupt payload")
    return flat


# -- variable depth ----------------------------------------------------------------------------
#
# A residual code grid may stop at a different level at every position: position ``i`` codes
# levels ``0 .. depth[i] - 1`` and leaves out the rest (``-1`` in the columns), so a rate target
# can spend its bits where they reduce distortion most (the depth allocation of
# :meth:`codec.model.Codec.compress_detailed`). Such a payload codes the depths first, one
# symbol in ``[0, n]`` per position in flat order under an adaptive model: integer counts per
# context (the depth one step back along the last axis; "none" at the start of a row), each
# starting at 1, raised by :data:`DEPTH_INCREMENT` after every symbol and halved when a row's
# total passes :data:`DEPTH_COUNT_LIMIT`, so encoder and decoder derive the same probabilities
# from integers alone. Every column follows at the positions that have it, as in
# :func:`encode_context_columns`; a context at a neighbour without that level is "none".

DEPTH_RANGE, DEPTH_CONTEXT = 3, 4  # tile payload tags: variable depth, columns under frequency / context tables
DEPTH_INCREMENT = 2
DEPTH_COUNT_LIMIT = 1 << 10  # a row's total stays at most this: the most likely depth costs >= ~n/1024/ln 2 bits


def depths_of(columns: np.ndarray | Tensor) -> np.ndarray:
    """Codes ``(count, n)`` with ``-1`` for the levels a position leaves out -> depths ``(count,)``.

    ``ValueError`` unless every position leaves out only its last levels.
    """
    a = np.asarray(columns.cpu() if isinstance(columns, Tensor) else columns).astype(np.int64)
    if a.ndim != 2:
        raise ValueError(f"columns must be (count, n), got {a.shape}")
    present = a >= 0
    depths = present.sum(1)
    if not np.array_equal(present, np.arange(a.shape[1])[None, :] < depths[:, None]):
        raise ValueError("a position may only leave out its last levels (a -1 followed by a code)")
    return depths


def _depth_contexts(grid: tuple[int, ...]) -> np.ndarray:
    """Per flat position, whether the position before it in flat order is its predecessor along the last axis."""
    count = math.prod(grid)
    return (np.arange(count) % grid[-1]) > 0 if count else np.zeros(0, dtype=bool)


def _depth_row_update(counts: np.ndarray, row: int, symbol: int) -> None:
    counts[row, symbol] += DEPTH_INCREMENT
    if counts[row].sum() > DEPTH_COUNT_LIMIT:
        counts[row] = (counts[row] + 1) // 2


def _encode_depths(enc: Any, family: Any, depths: np.ndarray, grid: tuple[int, ...], levels: int) -> None:
    counts = np.ones((levels + 2, levels + 1), dtype=np.int64)  # row levels + 1: no predecessor
    follows = _depth_contexts(grid)
    probs = np.empty((depths.size, levels + 1), dtype=np.float64)
    for i, d in enumerate(depths.tolist()):
        row = depths[i - 1] if follows[i] else levels + 1
        probs[i] = counts[row] / counts[row].sum()
        _depth_row_update(counts, row, d)
    enc.encode(depths.astype(np.int32), family, probs)


def _decode_depths(dec: Any, family: Any, grid: tuple[int, ...], levels: int) -> np.ndarray:
    counts = np.ones((levels + 2, levels + 1), dtype=np.int64)
    follows = _depth_contexts(grid)
    depths = np.zeros(math.prod(grid), dtype=np.int64)
    for i in range(depths.size):
        row = int(depths[i - 1]) if follows[i] else levels + 1
        d = int(np.asarray(dec.decode(family, (counts[row] / counts[row].sum())[None]))[0])
        if not 0 <= d <= levels:
            raise ValueError("decoded depth out of range: corrupt payload")
        depths[i] = d
        _depth_row_update(counts, row, d)
    return depths


def encode_depth_columns(
    columns: np.ndarray | Tensor, grid: tuple[int, ...], sizes: list[int], tables: list[FrequencyTable],
    contexts: list[ColumnContexts | None] | None = None,
) -> bytes:
    """Columns ``(prod(grid), n)`` of a code grid ``(B, *S)`` whose positions may leave out their
    last levels (``-1``) -> one range-coded stream: the depths, then the codes present (under
    ``contexts`` where given, else under ``tables``)."""
    import constriction

    a = _checked_columns(columns, grid, sizes, allow_absent=True)
    depths = depths_of(a)
    contexts = contexts if contexts is not None else [None] * len(sizes)
    _check_contexts(contexts, sizes, grid)
    if a.shape[0] == 0:
        return b""
    enc = constriction.stream.queue.RangeEncoder()
    family = constriction.stream.model.Categorical(perfect=False)
    _encode_depths(enc, family, depths, grid, len(sizes))
    _encode_grid_columns(enc, a, grid, tables, contexts, depths)
    return enc.get_compressed().astype("<u4").tobytes()


def decode_depth_columns(
    data: bytes, grid: tuple[int, ...], sizes: list[int], tables: list[FrequencyTable],
    contexts: list[ColumnContexts | None] | None = None,
) -> np.ndarray:
    """Inverse of :func:`encode_depth_columns` -> ``(prod(grid), n)`` int64, ``-1`` where a
    position leaves a level out; ``ValueError`` if corrupt."""
    contexts = contexts if contexts is not None else [None] * len(sizes)
    return _decode_stream(data, grid, sizes, tables, contexts, depth_levels=len(sizes))


CONTEXT = 2  # tile payload tag: range-coded with context tables


def fit_column_contexts(
    grids: list[np.ndarray], column: int, sizes: list[int], strength: float = 32.0,
    max_symbols: int = 256, min_gain: float = 0.01, buckets: int | None = None,
) -> ColumnContexts | None:
    """Choose and fit the context tables of one column from code grids ``(B, *S, L)``.

    Every combination of the available sources (previous position along each spatial axis,
    the previous column) is fitted on the first three quarters of ``grids`` and scored by
    cross-entropy on the rest; the best is refitted on all grids and returned if it saves at
    least ``min_gain`` (relative) over the column's marginal table, else ``None``. Columns with
    more than ``max_symbols`` symbols get no tables. A table is ``R * K`` integers: without
    ``buckets``, ``R`` is the context's alphabet, so a context over more than ``max_symbols``
    symbols is not used; with ``buckets``, contexts over more symbols than that are clustered
    into ``buckets`` rows (:func:`cluster_contexts`), which keeps tables for 1024-code
    alphabets small (``(buckets + 1) * K``).
    """
    from itertools import combinations

    k = sizes[column]
    spatial = grids[0].ndim - 2 if grids else 0
    sources = [f"prev{a}" for a in range(spatial)] if k <= max_symbols else []
    if column > 0 and k <= max_symbols and (buckets is not None or sizes[column - 1] <= max_symbols):
        sources.append("level")
    if not sources or len(grids) < 2:
        return None
    none = {s: (sizes[column - 1] if s == "level" else k) for s in sources}
    rows = {s: (buckets if buckets is not None and buckets < none[s] else None) for s in sources}

    def collect(gs: list[np.ndarray]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        sym = np.concatenate([g[..., column].reshape(-1) for g in gs])
        ctx = {s: np.concatenate([context_symbols(g, column, s, none[s]).reshape(-1) for g in gs]) for s in sources}
        return sym, ctx

    cut = max(1, (3 * len(grids)) // 4)
    tr_s, tr_c = collect(grids[:cut])
    te_s, te_c = collect(grids[cut:])
    if te_s.size == 0:
        return None
    marg = FrequencyTable.from_codes(tr_s, k).probabilities()
    best_bits, best = float(-np.log2(marg[te_s]).mean()), None
    base = best_bits
    fitted = {s: ContextTable.fit(tr_s, tr_c[s], k, none[s], strength, rows[s]) for s in sources}
    for n in range(1, len(sources) + 1):
        for combo in combinations(sources, n):
            cc = ColumnContexts({s: fitted[s] for s in combo})
            p = np.concatenate([
                cc.probs({s: te_c[s][i : i + 4096] for s in combo})[np.arange(min(4096, te_s.size - i)), te_s[i : i + 4096]]
                for i in range(0, te_s.size, 4096)
            ])
            bits = float(-np.log2(p).mean())
            if bits < best_bits:
                best_bits, best = bits, combo
    if best is None or best_bits > base * (1 - min_gain):
        return None
    all_s = np.concatenate([tr_s, te_s])  # the same positions as collect(grids), not recomputed
    all_c = {s: np.concatenate([tr_c[s], te_c[s]]) for s in sources}
    return ColumnContexts({s: ContextTable.fit(all_s, all_c[s], k, none[s], strength, rows[s]) for s in best})
