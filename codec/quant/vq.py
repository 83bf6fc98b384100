"""Nearest-code vector quantization (VQ-VAE) with a choice of gradient estimator and codebook update.

Papers:
    * van den Oord, Vinyals, Kavukcuoglu 2017, "Neural Discrete Representation Learning"
      (arXiv 1711.00937): nearest-code lookup, straight-through estimator, codebook loss and
      commitment loss ``beta * ||z - sg(q)||^2`` (beta = 0.25), EMA codebook updates with Laplace
      smoothing (seed 001).
    * Fifty et al. 2024, "Restructuring Vector Quantization with the Rotation Trick"
      (arXiv 2410.06424): the rotation-trick gradient estimator.
    * Yu et al. 2022, "Vector-quantized Image Modeling with Improved VQGAN" (arXiv 2110.04627):
      factorised low-dimensional lookup (``codebook_dim``) and cosine (l2-normalised) codes.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn
import torch.nn.functional as F

from codec.quant.base import Quantizer, QuantizerOutput, code_metrics, flatten_tokens, mse
from codec.quant.codebook import Codebook, CodebookInit, CodebookUpdate
from codec.quant.search import Metric

__all__ = ["VectorQuantizer", "straight_through", "rotation_trick", "Estimator"]

Estimator = Literal["ste", "rotation"]


def straight_through(e: Tensor, q: Tensor) -> Tensor:
    """Straight-through estimator: the value of ``q``, the gradient of the identity w.r.t. ``e``.

    Written ``q + (e - sg(e))`` rather than ``e + sg(q - e)`` so the forward value is *exactly*
    ``q`` (``e - e == 0`` in IEEE arithmetic); no gradient reaches ``q``.

    Args:
        e: encoder tokens ``(M, D)``.
        q: selected codewords ``(M, D)``.
    """
    return q.detach() + (e - e.detach())


def rotation_trick(e: Tensor, q: Tensor, eps: float = 1e-6) -> Tensor:
    """Rotation-trick estimator (Fifty et al. 2024, section 4.2).

    Forward value: ``q`` exactly. Backward: the encoder receives ``lam * R^T g`` where, with all
    factors detached and computed in float32,

        lam = ||q|| / ||e||,   e^ = e / ||e||,   q^ = q / ||q||,   r = (e^ + q^) / ||e^ + q^||,
        R = I - 2 r r^T + 2 q^ e^T        (the rotation taking e^ to q^),

    i.e. ``q~ = lam * R e`` is the rotated-and-rescaled encoder output. ``R^T`` rotates the
    gradient at ``q`` back into ``e``'s frame, preserving the angle between gradient and codeword.

    Args:
        e: encoder tokens ``(M, D)``.
        q: selected codewords ``(M, D)``.
    """
    with torch.autocast(device_type=e.device.type, enabled=False):
        ef = e.float()
        qf = q.detach().float()
        e_norm = ef.detach().norm(dim=-1, keepdim=True).clamp_min(eps)
        q_norm = qf.norm(dim=-1, keepdim=True).clamp_min(eps)
        e_hat = ef.detach() / e_norm
        q_hat = qf / q_norm
        r = F.normalize(e_hat + q_hat, dim=-1)
        lam = q_norm / e_norm
        # lam * (I - 2 r r^T + 2 q^ e^T) e, row-wise
        rotated = lam * (
            ef - 2.0 * r * (r * ef).sum(-1, keepdim=True) + 2.0 * q_hat * (e_hat * ef).sum(-1, keepdim=True)
        )
        return qf + (rotated - rotated.detach())


class VectorQuantizer(Quantizer):
    """Nearest-code VQ: ``k* = argmin_k ||z - e_k||``, ``z_q = e_k*``.

    Args:
        dim: token dimension ``D``.
        codebook_size: number of codes ``K``.
        codebook_dim: if set and different from ``dim``, tokens are projected to this dimension
            for the lookup and back afterwards (factorised codes; the projections are learned).
        estimator: ``"ste"`` (straight-through) or ``"rotation"`` (rotation trick).
        update: ``"ema"`` (EMA with Laplace smoothing) or ``"loss"`` (codebook loss
            ``||sg(z) - q||^2``).
        beta: commitment weight (loss term ``commitment = beta * ||z - sg(q)||^2``).
        decay: EMA decay ``gamma``.
        epsilon: Laplace smoothing constant.
        init: ``"random"`` or ``"kmeans"`` (on the first training batch).
        kmeans_iters: Lloyd iterations for k-means init.
        dead_code_threshold: restart codes whose EMA count falls below this (0 disables).
        metric: ``"euclidean"`` or ``"cosine"``.
        max_bytes: memory bound of the nearest-code search.

    Shapes:
        ``forward``/``encode`` take ``z`` ``(*, D)``; ``codes`` are ``(*,)`` long;
        ``decode(codes)`` returns ``(*, D)`` float32.

    Loss terms: ``commitment`` always; ``codebook`` when ``update="loss"``. Metrics add
    ``restarted``, the number of dead codes replaced in this step.
    """

    def __init__(
        self,
        dim: int,
        codebook_size: int = 1024,
        *,
        codebook_dim: int | None = None,
        estimator: Estimator = "ste",
        update: CodebookUpdate = "ema",
        beta: float = 0.25,
        decay: float = 0.99,
        epsilon: float = 1e-5,
        init: CodebookInit = "random",
        kmeans_iters: int = 10,
        dead_code_threshold: float = 0.0,
        metric: Metric = "euclidean",
        max_bytes: int | None = None,
    ) -> None:
        super().__init__(dim)
        if estimator not in ("ste", "rotation"):
            raise ValueError(f"estimator must be 'ste' or 'rotation', got {estimator!r}")
        self.estimator: Estimator = estimator
        self.beta = float(beta)
        lookup_dim = int(codebook_dim) if codebook_dim else dim
        self.project_in: nn.Module = nn.Linear(dim, lookup_dim) if lookup_dim != dim else nn.Identity()
        self.project_out: nn.Module = nn.Linear(lookup_dim, dim) if lookup_dim != dim else nn.Identity()
        self.codebook = Codebook(
            codebook_size,
            lookup_dim,
            update=update,
            decay=decay,
            epsilon=epsilon,
            init=init,
            kmeans_iters=kmeans_iters,
            dead_code_threshold=dead_code_threshold,
            metric=metric,
            max_bytes=max_bytes,
        )

    @property
    def codebook_size(self) -> int:
        return self.codebook.num_codes

    @property
    def initialized(self) -> bool:
        return bool(self.codebook.initialized)

    def forward(self, z: Tensor) -> QuantizerOutput:
        self._check_tokens(z)
        x, lead = flatten_tokens(z)
        h = self.codebook.prepare(self.project_in(x))
        cb = self.codebook
        if self.training:
            cb.maybe_init(h.detach())
        idx = cb.search(h)
        q = cb.lookup(idx)  # (M, Dc) float32; carries the codebook-loss gradient in "loss" mode

        hf = h.float()
        loss = {"commitment": self.beta * mse(hf, q.detach())}
        if cb.update_rule == "loss":
            loss["codebook"] = mse(q, hf.detach())

        restarted = 0
        if self.training:
            counts = cb.update(h.detach(), idx)
            restarted = cb.restart_dead(h.detach())
        else:
            counts = torch.bincount(idx, minlength=cb.num_codes)

        est = rotation_trick(h, q) if self.estimator == "rotation" else straight_through(h, q)
        z_q = self.project_out(est).to(z.dtype).reshape(*lead, self.dim)
        return QuantizerOutput(
            z_q=z_q,
            codes=idx.reshape(lead),
            loss=loss,
            metrics={**code_metrics(counts, cb.num_codes), "restarted": torch.tensor(float(restarted))},
        )

    @torch.no_grad()
    def encode(self, z: Tensor) -> Tensor:
        self._check_tokens(z)
        x, lead = flatten_tokens(z)
        return self.codebook.search(self.codebook.prepare(self.project_in(x))).reshape(lead)

    def decode(self, codes: Tensor) -> Tensor:
        self._check_codes(codes, self.codebook_size)
        flat = codes.reshape(-1).long()
        q = self.project_out(self.codebook.lookup(flat))
        return q.reshape(*codes.shape, self.dim)
