"""Analysis-by-synthesis code search: latents refined through the decoder before they are coded.

A VQ encoder picks, per token, the codes nearest the encoder's latent (greedily or with the
residual beam search of :meth:`codec.quant.ResidualVQ.encode`). That minimises the error of the
*latent*, not the error of what the decoder makes of the codes. Analysis-by-synthesis, the
principle of CELP speech coders, chooses codes by the decoded result instead. Here the latent
tokens of one tile are moved by Adam steps on the decoded signal's error, back-propagated
through the frozen decoder and through the quantizer with a straight-through estimator (at every
step the codes are what the encoder's own search gives for the moved latent), as in the
encoder-side latent optimisation of learned image codecs (Campos et al. 2019, "Content adaptive
optimization for neural image compression", arXiv 1906.01223; Yang et al. 2020, "Improving
inference for neural image compression", arXiv 2006.04240).

Every step's forward pass decodes exactly the codes the current latent quantizes to, so its
objective value is that of a real candidate. With a ``cost`` (the codec passes the entropy-coded
size of the tile), only candidates that cost at most ``1 + max_growth`` times the unrefined
codes are admissible; the codes kept are those of the best admissible candidate, the unrefined
codes (step 0) included. A refined tile is therefore never worse on the objective, and with
``max_growth = 0`` never larger than an unrefined one, so a file that fits a rate target
unrefined still fits it refined (the codec falls back to that where a larger allowance would
miss the target). The search is encoder-side only: the format, the entropy tables and decoding
are unchanged, and files decode with any build.

Objectives (:data:`OBJECTIVES`, chosen per model by the config key ``refine_loss``): ``l2``
(mean squared error: PSNR), ``l1``, and ``mel`` (L1 plus the multi-resolution mel loss the audio
recipe trains with).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from codec.losses import MultiResolutionMelLoss
from codec.registry import Registry

__all__ = ["OBJECTIVES", "Objective", "Candidate", "refine_candidates", "best_candidate", "refine_codes", "MAX_REFINE_STEPS"]

MAX_REFINE_STEPS = 1000

#: ``objective(target, recon) -> scalar``; lower is better
Objective = Callable[[Tensor, Tensor], Tensor]

#: objective builders ``(sample_rate, device) -> Objective``
OBJECTIVES: Registry[Objective] = Registry("refinement objective")


@OBJECTIVES.register("l1")
def _l1(sample_rate: int | None = None, device: torch.device | None = None) -> Objective:
    return lambda target, recon: F.l1_loss(recon.float(), target.float())


@OBJECTIVES.register("l2")
def _l2(sample_rate: int | None = None, device: torch.device | None = None) -> Objective:
    return lambda target, recon: F.mse_loss(recon.float(), target.float())


@OBJECTIVES.register("mel")
def _mel(sample_rate: int | None = None, device: torch.device | None = None) -> Objective:
    if not sample_rate:
        raise ValueError("the 'mel' refinement objective is for audio models (it needs a sample rate)")
    mel = MultiResolutionMelLoss(int(sample_rate)).to(device or "cpu")
    return lambda target, recon: F.l1_loss(recon.float(), target.float()) + mel(target, recon)


@dataclass(frozen=True)
class Candidate:
    """One candidate of a refinement: its codes, objective and cost (``None`` without a cost)."""

    codes: Tensor
    objective: float
    cost: float | None


def refine_candidates(
    tokens: Tensor,
    target: Tensor,
    *,
    quantize: Callable[[Tensor], Tensor],
    dequantize: Callable[[Tensor], Tensor],
    synthesize: Callable[[Tensor], Tensor],
    objective: Objective,
    steps: int,
    step_size: float,
    cost: Callable[[Tensor], float] | None = None,
) -> list[Candidate]:
    """Every candidate of ``steps`` refinement steps for one tile, the unrefined codes first.

    Args:
        tokens: the encoder's latent tokens ``(B, N, D)``.
        target: what the decoder should reproduce (the prepared signal, ``recon``'s shape).
        quantize: tokens ``(B, N, D)`` -> codes (the model's encoder search, no gradient).
        dequantize: codes -> quantized tokens ``(B, N, D)``.
        synthesize: quantized tokens ``(B, N, D)`` -> the decoder's reconstruction.
        objective: ``objective(target, recon)`` -> scalar, lower is better.
        steps: gradient steps (0: the unrefined codes alone).
        step_size: Adam's learning rate relative to the RMS of ``tokens``.
        cost: codes -> their cost (e.g. coded bytes), recorded per candidate.

    Only the tokens receive gradients; the networks' parameters are left untouched (no
    ``.grad`` is written). :func:`best_candidate` picks among the result.
    """
    if steps < 0 or steps > MAX_REFINE_STEPS:
        raise ValueError(f"refine steps must be in [0, {MAX_REFINE_STEPS}], got {steps}")
    if not step_size > 0:
        raise ValueError(f"refine step size must be positive, got {step_size}")
    with torch.no_grad():
        codes = quantize(tokens)
    scale = float(tokens.detach().float().pow(2).mean().sqrt()) or 1.0
    z = tokens.detach().clone().float().requires_grad_(True)
    opt = torch.optim.Adam([z], lr=step_size * scale)
    out: list[Candidate] = []
    seen: set[bytes] = set()
    with torch.enable_grad():
        for step in range(steps + 1):
            with torch.no_grad():
                hard = dequantize(codes).to(z.dtype)
            z_q = z + (hard - z).detach()  # straight-through: decodes exactly `codes`
            loss = objective(target, synthesize(z_q.to(tokens.dtype)))
            key = codes.cpu().numpy().tobytes()
            if key not in seen:  # an unchanged step adds no candidate
                seen.add(key)
                out.append(Candidate(codes, float(loss.detach()), cost(codes) if cost is not None else None))
            if step == steps:
                break
            (grad,) = torch.autograd.grad(loss, z)
            z.grad = grad
            opt.step()
            with torch.no_grad():
                codes = quantize(z.detach().to(tokens.dtype))
    return out


def best_candidate(candidates: list[Candidate], max_growth: float = 0.0) -> Candidate:
    """The candidate with the smallest objective among those costing at most ``1 + max_growth``
    times the first (unrefined) one; the first itself always qualifies."""
    first = candidates[0]
    limit = None if first.cost is None else first.cost * (1 + max_growth)
    allowed = [c for c in candidates[1:] if limit is None or (c.cost is not None and c.cost <= limit)]
    return min([first, *allowed], key=lambda c: c.objective)


def refine_codes(tokens: Tensor, target: Tensor, *, max_growth: float = 0.0, **search: Any) -> Tensor:
    """The codes of the best candidate: :func:`refine_candidates` with ``search`` (its keyword
    arguments), then :func:`best_candidate` with ``max_growth``."""
    return best_candidate(refine_candidates(tokens, target, **search), max_growth).codes
