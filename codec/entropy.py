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

import numpy as np
import torch
from torch import Tensor

__all__ = ["FrequencyTable", "encode_symbols", "decode_symbols", "encode_columns", "decode_columns", "encode_tile", "decode_tile", "packed_bits", "PACKED", "RANGE"]

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


PACKED, RANGE = 0, 1  # the tag byte that starts a tile's payload


def encode_tile(columns: np.ndarray | Tensor, sizes: list[int], tables: list[FrequencyTable] | None = None) -> bytes:
    """One tile's payload: a tag byte, then its columns range-coded or bit-packed, whichever is smaller.

    Range coding wins on data like the tables' training data; on data far from it (a rare
    code can cost more than ``log2 K`` bits), bit packing caps the payload at the nominal
    bits, so a tile never costs more than ``ceil(count * sum(log2 K) / 8) + 1`` bytes.
    """
    packed = bytes([PACKED]) + encode_columns(columns, sizes, None)
    if tables is None:
        return packed
    ranged = bytes([RANGE]) + encode_columns(columns, sizes, tables)
    return ranged if len(ranged) <= len(packed) else packed


def decode_tile(data: bytes, count: int, sizes: list[int], tables: list[FrequencyTable] | None = None) -> np.ndarray:
    """Inverse of :func:`encode_tile` -> ``(count, len(sizes))`` int64; ``ValueError`` if corrupt."""
    if not data:
        raise ValueError("empty tile payload")
    tag, body = data[0], data[1:]
    if tag == PACKED:
        return decode_columns(body, count, sizes, None)
    if tag == RANGE and tables is not None:
        return decode_columns(body, count, sizes, tables)
    raise ValueError(f"unknown payload coding tag {tag}")


def min_tile_bits(data: bytes, sizes: list[int], tables: list[FrequencyTable] | None) -> float:
    """Fewest bits per position a tile's payload can spend (used to bound what a header may claim)."""
    if data and data[0] == RANGE and tables is not None:
        return sum(-math.log2(float(t.counts.max()) / float(t.counts.sum())) for t in tables)
    return float(sum(packed_bits(k) for k in sizes))
