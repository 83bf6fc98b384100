"""Gumbel-Softmax quantization with a KL-to-uniform prior.

Papers:
    * Jang, Gu, Poole 2017, "Categorical Reparameterization with Gumbel-Softmax" (arXiv 1611.01144);
      Maddison et al. 2017, "The Concrete Distribution" (arXiv 1611.00712).
    * Ramesh et al. 2021, "Zero-Shot Text-to-Image Generation" (DALL-E dVAE, arXiv 2102.12092):
      temperature annealing ``tau = max(tau_min, tau_0 * exp(-r * step))`` and the KL term.
    * Seed 001: ``logits = projection(z)``, ``z_q = sum_k softmax_gumbel(logits / tau)_k e_k``,
      ``L_KL = sum_k q_k log(q_k K)`` with ``q = softmax(logits)``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from codec.quant.base import Quantizer, QuantizerOutput, code_metrics, flatten_tokens

__all__ = ["GumbelQuantizer"]


class GumbelQuantizer(Quantizer):
    """Codes sampled from ``softmax((logits + g) / tau)`` over a learned codebook.

    Args:
        dim: token dimension ``D``.
        codebook_size: ``K``.
        temperature: initial temperature ``tau_0``.
        min_temperature: floor ``tau_min`` of the annealing schedule.
        anneal_rate: ``r`` in ``tau = max(tau_min, tau_0 * exp(-r * step))``; call
            :meth:`set_step` from the training loop (0 keeps ``tau`` constant).
        hard: straight-through one-hot samples (forward value is a codeword) if True, soft
            mixtures of codewords if False.
        kl_weight: weight of the KL-to-uniform term (DALL-E / taming-transformers use 5e-4).

    In training the forward pass costs ``O(M K)`` memory: the logits over all codes are inherent
    to the method. In eval mode ``z_q`` is the codeword of ``argmax(logits)`` (no noise).

    Shapes: ``z`` ``(*, D)`` -> ``codes`` ``(*,)``. Loss terms: ``kl``.
    """

    def __init__(
        self,
        dim: int,
        codebook_size: int = 1024,
        *,
        temperature: float = 1.0,
        min_temperature: float = 1.0 / 16,
        anneal_rate: float = 0.0,
        hard: bool = True,
        kl_weight: float = 5e-4,
    ) -> None:
        super().__init__(dim)
        if codebook_size < 2:
            raise ValueError(f"codebook_size must be >= 2, got {codebook_size}")
        if temperature <= 0 or min_temperature <= 0:
            raise ValueError("temperatures must be positive")
        self.num_codes = int(codebook_size)
        self.proj = nn.Linear(dim, codebook_size)
        self.embed = nn.Embedding(codebook_size, dim)
        self.hard = bool(hard)
        self.kl_weight = float(kl_weight)
        self.tau_0 = float(temperature)
        self.tau_min = float(min_temperature)
        self.anneal_rate = float(anneal_rate)
        self.register_buffer("temperature", torch.tensor(float(temperature)))

    @property
    def codebook_size(self) -> int:
        return self.num_codes

    def temperature_at(self, step: int) -> float:
        """Annealed temperature ``max(tau_min, tau_0 * exp(-r * step))``."""
        return max(self.tau_min, self.tau_0 * math.exp(-self.anneal_rate * step))

    def set_step(self, step: int) -> None:
        """Move the temperature along the schedule (call once per optimisation step)."""
        self.temperature.fill_(self.temperature_at(step))

    def kl_to_uniform(self, logits: Tensor) -> Tensor:
        """``mean_tokens sum_k q_k log(q_k K)`` with ``q = softmax(logits)``; 0 when q is uniform."""
        if logits.shape[0] == 0:
            return logits.sum() * 0.0
        log_q = F.log_softmax(logits, dim=-1)
        q = log_q.exp()
        return (q * (log_q + math.log(self.num_codes))).sum(-1).mean()

    def forward(self, z: Tensor) -> QuantizerOutput:
        self._check_tokens(z)
        x, lead = flatten_tokens(z)
        with torch.autocast(device_type=x.device.type, enabled=False):
            logits = self.proj(x.float())
            if self.training:
                y = F.gumbel_softmax(logits, tau=float(self.temperature), hard=self.hard, dim=-1)
                idx = y.argmax(-1)
                z_q = y @ self.embed.weight
            else:
                idx = logits.argmax(-1)
                z_q = self.embed(idx)
            kl = self.kl_weight * self.kl_to_uniform(logits)
        counts = torch.bincount(idx, minlength=self.num_codes)
        return QuantizerOutput(
            z_q=z_q.to(z.dtype).reshape(*lead, self.dim),
            codes=idx.reshape(lead),
            loss={"kl": kl},
            metrics={**code_metrics(counts, self.num_codes), "temperature": self.temperature.detach().clone()},
        )

    @torch.no_grad()
    def encode(self, z: Tensor) -> Tensor:
        self._check_tokens(z)
        x, lead = flatten_tokens(z)
        with torch.autocast(device_type=x.device.type, enabled=False):
            return self.proj(x.float()).argmax(-1).reshape(lead)

    def decode(self, codes: Tensor) -> Tensor:
        self._check_codes(codes, self.num_codes)
        return self.embed(codes.long())
