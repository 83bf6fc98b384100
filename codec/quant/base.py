"""The quantizer contract shared by every variant.

A quantizer sees **tokens** ``z`` of shape ``(B, N, D)`` (any number of leading dimensions is
accepted: ``(*, D)``) and never knows whether they came from an image or a waveform. Channel-first
feature maps ``(B, D, *spatial)`` go through :func:`channel_first`.

Every variant implements

* ``forward(z) -> QuantizerOutput(z_q, codes, loss, metrics)`` (training and evaluation);
* ``encode(z) -> codes`` and ``decode(codes) -> z_q``, which agree *exactly* with ``forward`` in
  eval mode: ``torch.equal(q.decode(q.encode(z)), q(z).z_q)``;
* ``codebook_size`` and ``bits_per_token`` properties, so codecs can compute rates.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import Tensor, nn
import torch.nn.functional as F

__all__ = [
    "Quantizer",
    "QuantizerOutput",
    "channel_first",
    "code_metrics",
    "flatten_tokens",
    "mse",
]


@dataclass
class QuantizerOutput:
    """What every quantizer's ``forward`` returns.

    Attributes:
        z_q: quantized tokens, same shape and dtype as the input ``(*, D)``. Gradients reach the
            input through the variant's estimator (straight-through, rotation trick, Gumbel).
        codes: one integer tensor (``torch.long``): ``(*,)`` for single-codebook variants,
            ``(*, L)`` for ``rvq`` (one column per level, ``-1`` where a level was dropped) and
            ``(*, 1 + S)`` for ``adaptive`` (codebook id, then sub-codes, ``-1`` padded).
        loss: named scalar loss terms, already multiplied by the quantizer's own weights
            (e.g. ``beta`` for the commitment term); a trainer may re-weight them.
            ``sum(loss.values())`` is the quantizer's total loss.
        metrics: named scalar tensors, detached. Always holds ``perplexity`` (of the code
            distribution in the batch) and ``usage`` (fraction of codes used in the batch).
    """

    z_q: Tensor
    codes: Tensor
    loss: dict[str, Tensor] = field(default_factory=dict)
    metrics: dict[str, Tensor] = field(default_factory=dict)

    @property
    def total_loss(self) -> Tensor:
        """Sum of the loss terms (a zero scalar on ``z_q``'s device when there are none)."""
        if not self.loss:
            return self.z_q.new_zeros((), dtype=torch.float32)
        return torch.stack([v.float() for v in self.loss.values()]).sum()


class Quantizer(nn.Module):
    """Base class of every quantizer. Subclasses set ``self.dim`` and implement the contract.

    Args:
        dim: token dimension ``D``.
    """

    dim: int
    #: True when ``encode`` takes ``beam_size`` (a search over code sequences, e.g. ``rvq``)
    beam_search: bool = False

    def __init__(self, dim: int) -> None:
        super().__init__()
        if dim < 1:
            raise ValueError(f"dim must be >= 1, got {dim}")
        self.dim = int(dim)

    # -- the contract -------------------------------------------------------------------------
    def forward(self, z: Tensor) -> QuantizerOutput:  # pragma: no cover - abstract
        raise NotImplementedError

    def encode(self, z: Tensor) -> Tensor:  # pragma: no cover - abstract
        """Tokens ``(*, D)`` -> integer codes (layout documented by the variant)."""
        raise NotImplementedError

    def decode(self, codes: Tensor) -> Tensor:  # pragma: no cover - abstract
        """Integer codes -> quantized tokens ``(*, D)`` in float32."""
        raise NotImplementedError

    @property
    def codebook_size(self) -> int:  # pragma: no cover - abstract
        """Number of distinct codes a token can take (per level for ``rvq``)."""
        raise NotImplementedError

    @property
    def bits_per_token(self) -> float:
        """Nominal bits one token costs before entropy coding."""
        return math.log2(self.codebook_size)

    @property
    def initialized(self) -> bool:
        """False until a data-dependent initialisation (k-means on the first batch) has run."""
        return True

    # -- operating points (rates) -----------------------------------------------------------------
    def rate_settings(self) -> list[dict[str, int]]:
        """The settings this quantizer can encode at, cheapest first.

        Each is a dict of keyword arguments for ``encode``/``decode`` (``rvq``:
        ``{"num_levels": n}``); a single-rate quantizer has one empty setting.
        """
        return [{}]

    def alphabet_sizes(self, **setting: int) -> list[int]:
        """Number of possible values of each code column at a setting (what an entropy coder needs).

        One entry for single-codebook variants; one per level for ``rvq``.
        """
        if setting:
            raise TypeError(f"{type(self).__name__} has a single rate; got setting {setting}")
        return [self.codebook_size]

    def training_settings(self) -> list[dict[str, int]]:
        """Settings a codec trains each step, one decoder pass each (RAQ: base + a sampled size)."""
        return [{}]

    def bits_per_token_at(self, **setting: int) -> float:
        """Nominal bits per token at one of :meth:`rate_settings`."""
        if setting:
            raise TypeError(f"{type(self).__name__} has a single rate; got setting {setting}")
        return self.bits_per_token

    # -- helpers for subclasses ---------------------------------------------------------------
    def _check_tokens(self, z: Tensor) -> None:
        if z.dim() < 1 or z.shape[-1] != self.dim:
            raise ValueError(
                f"{type(self).__name__} expects tokens (*, {self.dim}), got {tuple(z.shape)}"
            )
        if not z.is_floating_point():
            raise TypeError(f"tokens must be floating point, got {z.dtype}")

    @staticmethod
    def _check_integer(codes: Tensor) -> None:
        if codes.is_floating_point() or codes.is_complex() or codes.dtype == torch.bool:
            raise TypeError(f"codes must be an integer tensor, got {codes.dtype}")

    @staticmethod
    def _check_codes(codes: Tensor, num_codes: int) -> None:
        """Reject non-integer or out-of-range codes with a clear error (not an index crash)."""
        Quantizer._check_integer(codes)
        if codes.numel():
            lo, hi = int(codes.min()), int(codes.max())
            if lo < 0 or hi >= num_codes:
                raise ValueError(f"codes out of range [0, {num_codes}): min {lo}, max {hi}")

    def extra_repr(self) -> str:
        return f"dim={self.dim}, codebook_size={self.codebook_size}"


def flatten_tokens(z: Tensor) -> tuple[Tensor, torch.Size]:
    """``(*, D)`` -> ``(M, D)`` plus the leading shape to restore with ``x.view(*lead, ...)``."""
    lead = z.shape[:-1]
    return z.reshape(-1, z.shape[-1]), lead


def mse(a: Tensor, b: Tensor) -> Tensor:
    """Mean squared error that is a (differentiable) zero on empty inputs instead of NaN."""
    if a.numel() == 0:
        return (a.sum() + b.sum()) * 0.0
    return F.mse_loss(a, b)


def code_metrics(counts: Tensor, codebook_size: int) -> dict[str, Tensor]:
    """Perplexity and usage of a batch from per-code counts ``(K,)``.

    ``perplexity = exp(H(p))`` with ``p = counts / counts.sum()`` (between 1 and K);
    ``usage`` = fraction of the K codes used at least once. Both are 0-d float32 tensors.
    """
    counts = counts.detach().float()
    total = counts.sum()
    if total <= 0:
        zero = counts.new_zeros(())
        return {"perplexity": zero, "usage": zero}
    p = counts / total
    entropy = -(p * torch.log(p.clamp_min(1e-12))).sum()
    return {
        "perplexity": entropy.exp(),
        "usage": (counts > 0).float().sum() / codebook_size,
    }


def channel_first(
    quantizer: Callable[[Tensor], QuantizerOutput] | Quantizer, z: Tensor
) -> QuantizerOutput:
    """Quantize a channel-first map ``(B, D, *spatial)`` (images ``(B, D, H, W)``, audio ``(B, D, T)``).

    Moves channels last, runs the quantizer on ``(B, N, D)`` tokens and restores the layout:
    ``z_q`` is ``(B, D, *spatial)``, ``codes`` is ``(B, *spatial)`` (plus the variant's trailing
    code dimension, if any).
    """
    if z.dim() < 3:
        raise ValueError(f"channel-first input must be (B, D, *spatial), got {tuple(z.shape)}")
    b, d, *spatial = z.shape
    tokens = z.reshape(b, d, -1).transpose(1, 2)
    out = quantizer(tokens)
    z_q = out.z_q.transpose(1, 2).reshape(b, d, *spatial)
    codes = out.codes.reshape(b, *spatial, *out.codes.shape[2:])
    return QuantizerOutput(z_q=z_q, codes=codes, loss=out.loss, metrics=out.metrics)
