"""SimVQ: a frozen random codebook reparameterised by one learned linear map.

Paper: Zhu et al. 2024, "Addressing Representation Collapse in Vector Quantized Models with One
Linear Layer" (arXiv 2411.02038); seed 002. The effective codebook is ``E = C W`` with
``C ~ N(0, D^-1/2)`` frozen (optionally trainable) and ``W`` a learned ``D x D`` matrix (or a
diagonal, the variant the seed reports as "between VQ and SimVQ"). Because every codeword moves
when ``W`` moves, unused codes are pulled along with used ones and utilisation stays high.

Unlike the official implementation, :meth:`SimVQ.decode` applies ``W``: codes decode to the same
vectors ``forward`` produced.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

from codec.quant.base import Quantizer, QuantizerOutput, code_metrics, flatten_tokens, mse
from codec.quant.search import nearest_code
from codec.quant.vq import Estimator, rotation_trick, straight_through

__all__ = ["SimVQ"]


class SimVQ(Quantizer):
    """Nearest-code VQ over the codebook ``E = C W``.

    Args:
        dim: token dimension ``D``.
        codebook_size: ``K``.
        linear: ``"full"`` (``W`` is ``D x D``) or ``"diagonal"`` (``W = diag(w)``, ``w`` init 1).
        train_codes: also train ``C`` (the seed reports similar results; off by default).
        beta: commitment weight; loss terms are ``codebook = ||E_k - sg(z)||^2`` (trains ``W``)
            and ``commitment = beta * ||z - sg(E_k)||^2``.
        estimator: ``"ste"`` or ``"rotation"``.
        max_bytes: memory bound of the nearest-code search.

    Shapes: ``z`` ``(*, D)`` -> ``codes`` ``(*,)``.
    """

    def __init__(
        self,
        dim: int,
        codebook_size: int = 1024,
        *,
        linear: Literal["full", "diagonal"] = "full",
        train_codes: bool = False,
        beta: float = 0.25,
        estimator: Estimator = "ste",
        max_bytes: int | None = None,
    ) -> None:
        super().__init__(dim)
        if linear not in ("full", "diagonal"):
            raise ValueError(f"linear must be 'full' or 'diagonal', got {linear!r}")
        if estimator not in ("ste", "rotation"):
            raise ValueError(f"estimator must be 'ste' or 'rotation', got {estimator!r}")
        self.num_codes = int(codebook_size)
        self.linear = linear
        self.beta = float(beta)
        self.estimator: Estimator = estimator
        self.max_bytes = max_bytes
        codes = torch.randn(codebook_size, dim) * dim**-0.5
        if train_codes:
            self.codes = nn.Parameter(codes)
        else:
            self.register_buffer("codes", codes)
        if linear == "full":
            self.W = nn.Linear(dim, dim, bias=False)
        else:
            self.w = nn.Parameter(torch.ones(dim))

    @property
    def codebook_size(self) -> int:
        return self.num_codes

    def effective_codebook(self) -> Tensor:
        """``E = C W`` ``(K, D)``, float32."""
        with torch.autocast(device_type=self.codes.device.type, enabled=False):
            c = self.codes.float()
            return self.W(c) if self.linear == "full" else c * self.w.float()

    def forward(self, z: Tensor) -> QuantizerOutput:
        self._check_tokens(z)
        x, lead = flatten_tokens(z)
        e = self.effective_codebook()
        idx, _ = nearest_code(x, e, max_bytes=self.max_bytes)
        q = e[idx]
        xf = x.float()
        loss = {
            "codebook": mse(q, xf.detach()),
            "commitment": self.beta * mse(xf, q.detach()),
        }
        est = rotation_trick(x, q) if self.estimator == "rotation" else straight_through(x, q)
        counts = torch.bincount(idx, minlength=self.num_codes)
        return QuantizerOutput(
            z_q=est.to(z.dtype).reshape(*lead, self.dim),
            codes=idx.reshape(lead),
            loss=loss,
            metrics=code_metrics(counts, self.num_codes),
        )

    @torch.no_grad()
    def encode(self, z: Tensor) -> Tensor:
        self._check_tokens(z)
        x, lead = flatten_tokens(z)
        idx, _ = nearest_code(x, self.effective_codebook(), max_bytes=self.max_bytes)
        return idx.reshape(lead)

    def decode(self, codes: Tensor) -> Tensor:
        self._check_codes(codes, self.num_codes)
        # E = C W first, then the lookup: identical numbers to forward's E[idx].
        return self.effective_codebook()[codes.long()]
