"""Finite scalar quantization (FSQ).

Paper: Mentzer, Minnen, Agustsson, Tschannen 2023, "Finite Scalar Quantization: VQ-VAE Made
Simple" (arXiv 2309.15505). Each of ``d`` channels is bounded to ``L_i`` values and rounded with a
straight-through gradient; the implicit codebook is the product grid of ``prod(L_i)`` points. No
codebook, no codebook loss, no collapse.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import Tensor, nn

from codec.quant.base import Quantizer, QuantizerOutput, code_metrics, flatten_tokens

__all__ = ["FSQ", "levels_for_codebook_size"]

# Table 3 of the paper: recommended levels per target codebook size.
_PAPER_LEVELS: dict[int, list[int]] = {
    2**8: [8, 6, 5],
    2**10: [8, 5, 5, 5],
    2**12: [7, 5, 5, 5, 5],
    2**14: [8, 8, 8, 6, 5],
    2**16: [8, 8, 8, 5, 5, 5],
}


def levels_for_codebook_size(codebook_size: int) -> list[int]:
    """Levels whose product is as close as possible to ``codebook_size`` without exceeding it.

    Uses the paper's table where it has an entry; otherwise picks ``d ~ log(K)/log(6)`` channels
    of about ``K^(1/d)`` levels each and raises levels while the product still fits.
    """
    if codebook_size < 2:
        raise ValueError(f"codebook_size must be >= 2, got {codebook_size}")
    if codebook_size in _PAPER_LEVELS:
        return list(_PAPER_LEVELS[codebook_size])
    d = max(1, round(math.log(codebook_size) / math.log(6)))
    base = max(2, int(codebook_size ** (1.0 / d) + 1e-9))
    levels = [base] * d
    while math.prod(levels) > codebook_size and d > 1:  # base rounding can overshoot when d is large
        d -= 1
        levels = [max(2, int(codebook_size ** (1.0 / d) + 1e-9))] * d
    improved = True
    while improved:
        improved = False
        for i in range(d):
            trial = levels.copy()
            trial[i] += 1
            if math.prod(trial) <= codebook_size:
                levels = trial
                improved = True
    return sorted(levels, reverse=True)


class FSQ(Quantizer):
    """Finite scalar quantization over ``len(levels)`` channels.

    Args:
        dim: token dimension ``D``; projected to ``len(levels)`` channels and back when different.
        codebook_size: target ``K``; ignored when ``levels`` is given. The real codebook size is
            ``prod(levels)`` (<= the target), which is what :attr:`codebook_size` reports.
        levels: levels per channel, e.g. ``[8, 5, 5, 5]``.
        eps: shrink of the bound so that ``tanh`` never reaches a rounding boundary.

    Shapes: ``z`` ``(*, D)`` -> ``codes`` ``(*,)`` (mixed-radix index of the channel values).
    No loss terms.
    """

    def __init__(
        self,
        dim: int,
        codebook_size: int = 1024,
        *,
        levels: Sequence[int] | None = None,
        eps: float = 1e-3,
    ) -> None:
        super().__init__(dim)
        lv = list(levels) if levels is not None else levels_for_codebook_size(codebook_size)
        if not lv or any(int(level) < 2 for level in lv):
            raise ValueError(f"every FSQ level must be >= 2, got {lv}")
        self.levels = [int(level) for level in lv]
        n = len(self.levels)
        self.project_in: nn.Module = nn.Linear(dim, n) if n != dim else nn.Identity()
        self.project_out: nn.Module = nn.Linear(n, dim) if n != dim else nn.Identity()
        lt = torch.tensor(self.levels, dtype=torch.float32)
        basis = torch.cumprod(torch.tensor([1] + self.levels[:-1], dtype=torch.long), dim=0)
        self.register_buffer("_levels", lt, persistent=False)
        self.register_buffer("_basis", basis, persistent=False)
        self.register_buffer("_half_width", torch.floor(lt / 2), persistent=False)
        half_l = (lt - 1) * (1 + eps) / 2
        offset = torch.where(lt % 2 == 0, 0.5, 0.0)
        self.register_buffer("_half_l", half_l, persistent=False)
        self.register_buffer("_offset", offset, persistent=False)
        self.register_buffer("_shift", torch.atanh(offset / half_l), persistent=False)

    @property
    def codebook_size(self) -> int:
        return math.prod(self.levels)

    def _bound(self, h: Tensor) -> Tensor:
        return torch.tanh(h + self._shift) * self._half_l - self._offset

    def _quantize(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``(M, D)`` -> (normalised values ``(M, d)`` with STE gradient, codes ``(M,)``)."""
        with torch.autocast(device_type=x.device.type, enabled=False):
            h = self.project_in(x.float())
            bounded = self._bound(h)
            rounded = torch.round(bounded)
            # value exactly rounded / half_width; gradient of bounded / half_width
            values = rounded / self._half_width + (bounded - bounded.detach()) / self._half_width
            codes = ((rounded.detach() + self._half_width).long() * self._basis).sum(-1)
        return values, codes

    def _project_out(self, values: Tensor) -> Tensor:
        with torch.autocast(device_type=values.device.type, enabled=False):
            return self.project_out(values)

    def forward(self, z: Tensor) -> QuantizerOutput:
        self._check_tokens(z)
        x, lead = flatten_tokens(z)
        values, codes = self._quantize(x)
        z_q = self._project_out(values)
        counts = torch.bincount(codes, minlength=self.codebook_size)
        return QuantizerOutput(
            z_q=z_q.to(z.dtype).reshape(*lead, self.dim),
            codes=codes.reshape(lead),
            loss={},
            metrics=code_metrics(counts, self.codebook_size),
        )

    @torch.no_grad()
    def encode(self, z: Tensor) -> Tensor:
        self._check_tokens(z)
        x, lead = flatten_tokens(z)
        return self._quantize(x)[1].reshape(lead)

    def decode(self, codes: Tensor) -> Tensor:
        self._check_codes(codes, self.codebook_size)
        flat = codes.reshape(-1, 1).long()
        digits = (flat // self._basis) % self._levels.long()
        values = (digits - self._half_width.long()).float() / self._half_width
        return self._project_out(values).reshape(*codes.shape, self.dim)
