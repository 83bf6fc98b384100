"""Adaptive multi-codebook quantization: each token picks the codebook shape that suits it.

Paper: "Balance of Number of Embedding and their Dimensions in Vector Quantization"
(arXiv 2407.04939; seed 000). Several EMA codebooks share one capacity ``W = N_i x D_i``
(e.g. ``W = 65536``: ``[512, 128]`` ... ``[65536, 1]``). For codebook ``i`` a token of dimension
``D`` is split into ``D / D_i`` sub-vectors, each quantized to one of ``N_i`` codewords.
Multi-head attention between the token (query) and learned codebook descriptors (keys) scores the
codebooks, and a straight-through Gumbel-Softmax picks one per token:

    z_q = sum_i y_i * Q_i(z),    y = GumbelSoftmax_hard(scores(z) / tau).

The encoder receives the straight-through gradient of the chosen codebook; the scorer receives
``g . Q_i(z)`` through the soft part of ``y``. Each codebook's EMA statistics use only the tokens
that chose it.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from codec.quant.base import Quantizer, QuantizerOutput, code_metrics, flatten_tokens, mse
from codec.quant.codebook import Codebook, CodebookInit
from codec.quant.distributed import all_reduce_sum_
from codec.quant.vq import straight_through

__all__ = ["AdaptiveQuantizer", "equal_capacity_codebooks"]


def equal_capacity_codebooks(dim: int, capacity: int, max_codebooks: int = 4) -> list[tuple[int, int]]:
    """``[(N_i, D_i)]`` with ``N_i * D_i = capacity``, ``D_i = dim / 2^j`` dividing ``dim``.

    E.g. ``dim=64, capacity=64*512`` -> ``[(512, 64), (1024, 32), (2048, 16), (4096, 8)]``.
    """
    out: list[tuple[int, int]] = []
    d = dim
    while d >= 1 and len(out) < max_codebooks:
        if dim % d == 0 and capacity % d == 0:
            out.append((capacity // d, d))
        if d == 1:
            break
        d //= 2
    if not out:
        raise ValueError(f"no codebook shape divides dim={dim} with capacity={capacity}")
    return out


class _CodebookScorer(nn.Module):
    """Multi-head scaled dot-product scores between tokens and learned codebook descriptors.

    ``scores[m, i] = mean_h <W_q z_m, W_k c_i>_h / sqrt(d_h)``: the attention logits of a
    one-query, ``C``-key attention, one logit per codebook.
    """

    def __init__(self, dim: int, num_codebooks: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.query = nn.Linear(dim, dim)
        self.key = nn.Linear(dim, dim)
        self.descriptors = nn.Parameter(torch.randn(num_codebooks, dim) * dim**-0.5)

    def forward(self, x: Tensor) -> Tensor:
        m = x.shape[0]
        q = self.query(x).view(m, self.num_heads, self.head_dim)
        k = self.key(self.descriptors).view(-1, self.num_heads, self.head_dim)
        return torch.einsum("mhd,chd->mc", q, k) / (self.num_heads * math.sqrt(self.head_dim))


class AdaptiveQuantizer(Quantizer):
    """Per-token choice among equal-capacity codebooks of different shapes.

    Args:
        dim: token dimension ``D``.
        codebook_size: with ``dim``, sets the capacity ``W = dim * codebook_size`` unless
            ``capacity`` is given.
        capacity: ``W``.
        codebooks: explicit ``[(N_i, D_i), ...]``; each ``D_i`` must divide ``dim``. Default:
            :func:`equal_capacity_codebooks` (up to ``max_codebooks`` shapes, largest ``D_i`` first).
        max_codebooks: number of shapes in the default set.
        num_heads: attention heads of the scorer (must divide ``dim``; reduced if it does not).
        temperature: Gumbel-Softmax temperature.
        beta: commitment weight.
        decay, epsilon, init, dead_code_threshold, max_bytes: per-codebook EMA settings
            (see :class:`~codec.quant.codebook.Codebook`).

    Code layout: ``codes`` is ``(*, 1 + S)`` long with ``S = max_i D / D_i``: column 0 is the
    chosen codebook ``i``, columns ``1 .. D/D_i`` its sub-codes in sub-vector order, the rest
    ``-1``. ``bits_per_token`` is the mean cost ``log2(C) + sum_i p_i (D/D_i) log2(N_i)`` under
    the running selection frequencies ``p`` (variable-length codes: this is a mean); the batch
    mean is in ``metrics["bits_per_token"]``.

    Loss terms: ``commitment``.
    """

    def __init__(
        self,
        dim: int,
        codebook_size: int = 512,
        *,
        capacity: int | None = None,
        codebooks: Sequence[tuple[int, int]] | None = None,
        max_codebooks: int = 4,
        num_heads: int = 4,
        temperature: float = 1.0,
        beta: float = 0.25,
        decay: float = 0.99,
        epsilon: float = 1e-5,
        init: CodebookInit = "random",
        dead_code_threshold: float = 0.0,
        max_bytes: int | None = None,
    ) -> None:
        super().__init__(dim)
        if codebooks is None:
            w = int(capacity) if capacity is not None else dim * int(codebook_size)
            codebooks = equal_capacity_codebooks(dim, w, max_codebooks)
        shapes = [(int(n), int(d)) for n, d in codebooks]
        for n, d in shapes:
            if d < 1 or dim % d != 0 or n < 1:
                raise ValueError(f"codebook shape [{n}, {d}] does not split dim={dim}")
        self.shapes = shapes
        self.books = nn.ModuleList(
            [
                Codebook(
                    n, d, update="ema", decay=decay, epsilon=epsilon, init=init,
                    dead_code_threshold=dead_code_threshold, max_bytes=max_bytes,
                )
                for n, d in shapes
            ]
        )
        heads = max(h for h in range(1, max(1, num_heads) + 1) if dim % h == 0 and h <= num_heads)
        self.scorer = _CodebookScorer(dim, len(shapes), heads)
        self.temperature = float(temperature)
        self.beta = float(beta)
        self.max_subcodes = max(dim // d for _, d in shapes)
        self.register_buffer("selection_freq", torch.full((len(shapes),), 1.0 / len(shapes)))
        self.selection_decay = float(decay)

    scalar_codes = False

    @property
    def num_codebooks(self) -> int:
        return len(self.shapes)

    @property
    def codebook_size(self) -> int:
        """Total number of codewords over all codebooks."""
        return sum(n for n, _ in self.shapes)

    def bits_for(self, i: int) -> float:
        """Bits of a token coded with codebook ``i`` (selector id included)."""
        n, d = self.shapes[i]
        return math.log2(self.num_codebooks) + (self.dim // d) * math.log2(n)

    @property
    def bits_per_token(self) -> float:
        p = self.selection_freq.float()
        return float(sum(p[i] * self.bits_for(i) for i in range(self.num_codebooks)))

    def alphabet_sizes(self, **setting: int) -> list[int]:
        raise NotImplementedError("adaptive codes have a variable layout; the .vqc format does not carry them yet")

    def _split(self, x: Tensor, i: int) -> Tensor:
        return x.reshape(-1, self.shapes[i][1])

    def forward(self, z: Tensor) -> QuantizerOutput:
        self._check_tokens(z)
        x, lead = flatten_tokens(z)
        m = x.shape[0]
        logits = self.scorer(x).float()
        if not self.training:
            sel = logits.argmax(-1)
            codes = self._encode_flat(x, sel)
            q = self._decode_flat(codes)
            z_q = straight_through(x, q)
            loss = {"commitment": self.beta * mse(x.float(), q)}
            return self._output(z, lead, z_q, codes, loss, sel)

        y = F.gumbel_softmax(logits, tau=self.temperature, hard=True, dim=-1) if m else logits
        sel = y.argmax(-1)
        codes = torch.full((m, 1 + self.max_subcodes), -1, dtype=torch.long, device=x.device)
        codes[:, 0] = sel
        z_q = x.new_zeros(x.shape, dtype=torch.float32)
        hard = x.new_zeros(x.shape, dtype=torch.float32)
        for i, book in enumerate(self.books):
            s = self.dim // self.shapes[i][1]
            h = self._split(x.detach(), i)
            book.maybe_init(h)
            idx = book.search(h)
            q = book.lookup(idx).view(m, self.dim)
            z_q = z_q + y[:, i : i + 1] * straight_through(x, q)
            chosen = sel == i
            hard = torch.where(chosen.unsqueeze(1), q, hard)
            idx2 = idx.view(m, s)
            codes[chosen, 1 : 1 + s] = idx2[chosen]
            h_sel = h.view(m, s, self.shapes[i][1])[chosen].reshape(-1, self.shapes[i][1])
            book.update(h_sel, idx2[chosen].reshape(-1))
            book.restart_dead(h_sel)
        with torch.no_grad():
            counts = torch.bincount(sel, minlength=self.num_codebooks).float()
            all_reduce_sum_(counts)
            if counts.sum() > 0:
                self.selection_freq.mul_(self.selection_decay).add_(
                    counts / counts.sum(), alpha=1 - self.selection_decay
                )
        loss = {"commitment": self.beta * mse(x.float(), hard)}
        return self._output(z, lead, z_q, codes, loss, sel)

    def _output(
        self, z: Tensor, lead: torch.Size, z_q: Tensor, codes: Tensor, loss: dict[str, Tensor], sel: Tensor
    ) -> QuantizerOutput:
        offsets = [0]
        for n, _ in self.shapes[:-1]:
            offsets.append(offsets[-1] + n)
        flat_codes = []
        for i, (_, d) in enumerate(self.shapes):
            rows = codes[sel == i, 1 : 1 + self.dim // d]
            flat_codes.append(rows.reshape(-1) + offsets[i])
        counts = torch.bincount(torch.cat(flat_codes), minlength=self.codebook_size)
        sel_counts = torch.bincount(sel, minlength=self.num_codebooks).float()
        bits = torch.tensor([self.bits_for(i) for i in range(self.num_codebooks)], device=z.device)
        metrics = code_metrics(counts, self.codebook_size)
        sel_metrics = code_metrics(sel_counts, self.num_codebooks)
        metrics["selection_perplexity"] = sel_metrics["perplexity"]
        metrics["bits_per_token"] = (
            (sel_counts * bits).sum() / sel_counts.sum() if sel.numel() else bits.new_zeros(())
        )
        return QuantizerOutput(
            z_q=z_q.to(z.dtype).reshape(*lead, self.dim),
            codes=codes.reshape(*lead, 1 + self.max_subcodes),
            loss=loss,
            metrics=metrics,
        )

    def _encode_flat(self, x: Tensor, sel: Tensor) -> Tensor:
        m = x.shape[0]
        codes = torch.full((m, 1 + self.max_subcodes), -1, dtype=torch.long, device=x.device)
        codes[:, 0] = sel
        for i, book in enumerate(self.books):
            rows = (sel == i).nonzero().squeeze(1)
            if rows.numel() == 0:
                continue
            s = self.dim // self.shapes[i][1]
            idx = book.search(self._split(x.index_select(0, rows), i))
            codes[rows, 1 : 1 + s] = idx.view(-1, s)
        return codes

    def _decode_flat(self, codes: Tensor) -> Tensor:
        m = codes.shape[0]
        out = torch.zeros(m, self.dim, dtype=torch.float32, device=codes.device)
        sel = codes[:, 0]
        for i, book in enumerate(self.books):
            rows = (sel == i).nonzero().squeeze(1)
            if rows.numel() == 0:
                continue
            s = self.dim // self.shapes[i][1]
            sub = codes.index_select(0, rows)[:, 1 : 1 + s]
            out[rows] = book.lookup(sub.clamp_min(0)).reshape(-1, self.dim)
        return out

    @torch.no_grad()
    def encode(self, z: Tensor) -> Tensor:
        self._check_tokens(z)
        x, lead = flatten_tokens(z)
        sel = self.scorer(x).float().argmax(-1)
        return self._encode_flat(x, sel).reshape(*lead, 1 + self.max_subcodes)

    def decode(self, codes: Tensor) -> Tensor:
        if codes.shape[-1] != 1 + self.max_subcodes:
            raise ValueError(f"adaptive codes must end in {1 + self.max_subcodes} columns, got {codes.shape[-1]}")
        self._check_codes(codes[..., 0], self.num_codebooks)
        for i, (n, d) in enumerate(self.shapes):
            rows = codes[..., 0] == i
            self._check_codes(codes[rows][:, 1 : 1 + self.dim // d], n)
        flat = codes.reshape(-1, codes.shape[-1]).long()
        return self._decode_flat(flat).reshape(*codes.shape[:-1], self.dim)
