"""Tiles: code long audio and large images as independent, overlapping pieces.

A :class:`TileGrid` cuts the spatial axes of a signal ``(1, C, *S)`` into tiles of at most
``tile`` samples/pixels per axis that overlap their neighbours by ``overlap`` (at most half a
tile, so no sample lies in more than two tiles per axis). Each tile is
encoded on its own (one payload chunk per tile in a ``.vqc`` file, decodable without the
others), so memory stays bounded by the tile size whatever the signal length. On decoding, the
overlaps are cross-faded with complementary raised-cosine ramps (``sin^2`` in, ``cos^2`` out,
which sum to exactly one), so the seams carry no level change and no click: both sides of an
overlap are reconstructions of the same samples.

Tiles are laid out row-major (last axis fastest); tile ``i`` of an axis starts at
``i * (tile - overlap)``; the last one ends at the signal's end and is longer than the overlap.
Nothing here knows about modalities: audio uses one axis, images two.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Iterator

import torch
from torch import Tensor

__all__ = ["TileGrid", "StreamResampler"]

MAX_RATIO_TERMS = 1 << 24  # bounds the resampling kernel to ~64 MiB


@dataclass(frozen=True)
class TileGrid:
    """Tiles over spatial ``size``: at most ``tile`` long per axis, ``overlap`` shared with neighbours."""

    size: tuple[int, ...]
    tile: tuple[int, ...]
    overlap: tuple[int, ...]

    def __post_init__(self) -> None:
        if not (len(self.size) == len(self.tile) == len(self.overlap)) or not self.size:
            raise ValueError("size, tile and overlap need one entry per spatial axis")
        for n, t, o in zip(self.size, self.tile, self.overlap):
            if n < 1 or t < 1 or o < 0 or (t < n and 2 * o > t):
                raise ValueError(f"invalid tiling: size {self.size}, tile {self.tile}, overlap {self.overlap}")

    @classmethod
    def plan(cls, size: tuple[int, ...], max_tile: int, overlap: int, stride: int = 1) -> "TileGrid":
        """One tile per axis where the signal fits in ``max_tile``; otherwise tiles of ``max_tile``
        (rounded down to a multiple of ``stride``) overlapping by ``overlap`` (rounded up to one)."""
        t = max(stride, max_tile // stride * stride)
        o = min(-(-overlap // stride) * stride, t // 2 // stride * stride)
        tiles = tuple(n if n <= t else t for n in size)
        overlaps = tuple(0 if n <= t else o for n in size)
        return cls(tuple(size), tiles, overlaps)

    def starts(self, axis: int) -> list[int]:
        n, t, o = self.size[axis], self.tile[axis], self.overlap[axis]
        if t >= n:
            return [0]
        step = t - o
        return [i * step for i in range(math.ceil((n - o) / step))]

    def spans(self, axis: int) -> list[tuple[int, int]]:
        n, t = self.size[axis], self.tile[axis]
        return [(s, min(s + t, n)) for s in self.starts(axis)]

    def __len__(self) -> int:
        return math.prod(len(self.starts(a)) for a in range(len(self.size)))

    def __iter__(self) -> Iterator[tuple[tuple[int, int], ...]]:
        """Per tile, ``((start, end), ...)`` for every axis, row-major."""
        return iter(itertools.product(*(self.spans(a) for a in range(len(self.size)))))

    def window(self, spans: tuple[tuple[int, int], ...]) -> Tensor | None:
        """Cross-fade weights of the tile at ``spans`` (broadcastable over ``(*S)``), None if all ones."""
        weights = []
        for axis, (start, end) in enumerate(spans):
            o = self.overlap[axis]
            w = torch.ones(end - start)
            if o and start > 0:  # fade in over the overlap with the previous tile
                w[:o] *= _ramp(o)
            if o and end < self.size[axis]:  # fade out over the overlap with the next tile
                w[-o:] *= _ramp(o).flip(0)
            shape = [1] * len(spans)
            shape[axis] = -1
            weights.append(w.reshape(shape))
        if all(self.overlap[a] == 0 or len(self.starts(a)) == 1 for a in range(len(spans))):
            return None
        out = weights[0]
        for w in weights[1:]:
            out = out * w
        return out

    def to_header(self) -> dict[str, list[int]]:
        return {"size": list(self.tile), "overlap": list(self.overlap)}


def _ramp(n: int) -> Tensor:
    """``sin^2`` rising over ``n`` samples; ``ramp + ramp.flip(0) == 1``."""
    return torch.sin((torch.arange(n, dtype=torch.float64) + 0.5) / n * (math.pi / 2)).pow(2).float()


class StreamResampler:
    """Band-limited resampling of a long ``(C, T)`` signal in bounded memory, block by block.

    Blocks start at multiples of ``from_rate / gcd`` input samples, which land exactly on
    multiples of ``to_rate / gcd`` output samples; each block is resampled with a margin of
    context on both sides and cropped, so the result matches resampling the whole signal (up to
    float rounding) without ever holding more than one block and its margins.
    """

    def __init__(self, from_rate: int, to_rate: int, block_seconds: float = 10.0) -> None:
        if from_rate <= 0 or to_rate <= 0:
            raise ValueError(f"sample rates must be positive, got {from_rate} -> {to_rate}")
        g = math.gcd(int(from_rate), int(to_rate))
        self.from_rate, self.to_rate = int(from_rate), int(to_rate)
        self.up, self.down = self.to_rate // g, self.from_rate // g  # out / in samples per aligned unit
        if self.up * self.down > MAX_RATIO_TERMS:  # the polyphase kernel holds up x down taps
            raise ValueError(
                f"cannot resample {from_rate} Hz <-> {to_rate} Hz: the exact ratio {self.up}/{self.down} "
                "is too fine (resample the file to a common rate such as 48000, 44100 or 16000 Hz first)"
            )
        self.block = max(1, round(block_seconds * from_rate / self.down)) * self.down
        # torchaudio's kernel spans ~6 zero crossings of the lower rate: 64 of them is ample context
        context = -(-64 * self.from_rate // min(self.from_rate, self.to_rate))
        self.margin = -(-context // self.down) * self.down

        self._buf: Tensor | None = None  # input samples from absolute position _buf_start on
        self._buf_start = 0
        self._done = 0  # input position up to which output has been produced (a multiple of down)

    def output_length(self, n: int) -> int:
        return -(-n * self.up // self.down)

    def _run(self, end: int, final: bool) -> Tensor:
        from codec.nets.audio import resample

        assert self._buf is not None
        a = max(self._buf_start, self._done - self.margin)
        b = self._buf_start + self._buf.shape[-1] if final else min(self._buf_start + self._buf.shape[-1], end + self.margin)
        x = self._buf[..., a - self._buf_start : b - self._buf_start]
        y = resample(x.float(), self.from_rate, self.to_rate)
        lo = (self._done - a) * self.up // self.down
        n_out = (self.output_length(b) if final else end * self.up // self.down) - self._done * self.up // self.down
        return y[..., lo : lo + n_out]

    def feed(self, x: Tensor) -> Tensor:
        """Push the next samples ``(C, n)``; returns the output that is final so far (maybe empty)."""
        self._buf = x if self._buf is None else torch.cat([self._buf, x], dim=-1)
        if self.up == self.down:
            out, self._buf = self._buf, None
            self._buf_start += out.shape[-1]
            return out
        outs = []
        while self._buf_start + self._buf.shape[-1] >= self._done + self.block + self.margin:
            outs.append(self._run(self._done + self.block, final=False))
            self._done += self.block
            drop = max(0, self._done - self.margin - self._buf_start)
            self._buf, self._buf_start = self._buf[..., drop:], self._buf_start + drop
        return torch.cat(outs, dim=-1) if outs else self._buf[..., :0].float()

    def flush(self) -> Tensor:
        """The rest of the output once the input has ended."""
        if self._buf is None or self.up == self.down:
            return torch.zeros(0) if self._buf is None else self._buf[..., :0]
        out = self._run(0, final=True) if self._buf_start + self._buf.shape[-1] > self._done else self._buf[..., :0].float()
        self._buf = None
        return out

    def blocks(self, x: Tensor) -> Iterator[Tensor]:
        """Yield the resampled signal of ``x`` ``(C, T)`` in consecutive pieces."""
        for s in range(0, x.shape[-1], self.block):
            y = self.feed(x[..., s : s + self.block])
            if y.shape[-1]:
                yield y
        y = self.flush()
        if y.shape[-1]:
            yield y

    def __call__(self, x: Tensor) -> Tensor:
        """Resample a whole ``(C, T)`` signal (block by block; a fresh resampler per call)."""
        fresh = StreamResampler.__new__(StreamResampler)
        fresh.__dict__.update(self.__dict__, _buf=None, _buf_start=0, _done=0)
        parts = list(fresh.blocks(x))
        return torch.cat(parts, dim=-1) if parts else x.float()[..., :0]
