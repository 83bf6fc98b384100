"""RAQ: rate-adaptive quantization — one base codebook, codebooks of any size generated from it.

Paper: Seo & Kang 2024, "Rate-Adaptive Quantization: A Multi-Rate Codebook Adaptation for
Vector Quantization-based Generative Models" (arXiv 2405.14222; seed 003; official code
JiwanSeo/RAQ-VAE).

A base VQ (EMA by default, as in the paper) learns ``K`` codewords. An adapter turns them into a
codebook of any size ``K~``:

* ``adapter="seq2seq"`` (the paper's main method): :class:`Seq2SeqCodebookGenerator`, an LSTM
  encoder over the ``K`` base codewords and an LSTM decoder, started from the encoder's final
  state, that runs ``K~`` steps and emits one codeword per step. ``K~`` enters only through the
  number of decoding steps. Trained with cross-forcing (see :func:`cross_forcing_sources`).
* ``adapter="dkm"`` (the model-based variant, no parameters): differentiable k-means
  (:func:`dkm`) shrinks the base codebook to ``K~ < K``; inverse DKM (:func:`ikm`) grows it to
  ``K~ > K``.

Training (``forward`` with a ``codebook_size`` setting) quantizes with the adapted codebook; the
:class:`~codec.model.Codec` asks :meth:`RAQ.training_settings` for the base and one sampled
``K~`` per step and adds both reconstructions and both sets of VQ terms. At inference
:meth:`RAQ.set_codebook_size` (or the ``codebook_size=`` setting of ``encode``/``decode``)
uses a cached adapted codebook; :meth:`RAQ.publish` stores the codebooks of the published rate
points in buffers, so exported weights decode without regenerating anything.
"""

from __future__ import annotations

import math
from typing import Any, Literal, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from codec.quant.base import Quantizer, QuantizerOutput, code_metrics, flatten_tokens, mse
from codec.quant.search import nearest_code
from codec.quant.vq import VectorQuantizer, straight_through

__all__ = ["RAQ", "Seq2SeqCodebookGenerator", "cross_forcing_sources", "dkm", "ikm", "mmd"]

Forcing = Literal["paper", "official"]


def cross_forcing_sources(base_size: int, steps: int, forcing: Forcing = "paper") -> list[tuple[str, int]]:
    """Where each decoder input comes from, step by step.

    Step ``t`` (0-based) emits output ``o_t``. Its input is ``("start", 0)`` for ``t = 0``; for
    ``t + 1`` it is

    * ``("base", t // 2)``, the base codeword ``e_{t/2}`` (teacher), when ``t < 2K`` and ``t`` is
      even — in both versions;
    * otherwise ``("output", t)``, the decoder's own output ``o_t`` (free-running) in the
      **paper** version (Seo & Kang 2024, section 3.1), or ``("position", t + 1)``, the learned
      position embedding of step ``t + 1``, in the **official-code** version.

    E.g. ``K = 2, K~ = 6``: paper ``start, e0, o1, e1, o3, o4``; official ``start, e0, p2, e1, p4, p5``.
    """
    if forcing not in ("paper", "official"):
        raise ValueError(f"forcing must be 'paper' or 'official', got {forcing!r}")
    sources: list[tuple[str, int]] = [("start", 0)]
    for t in range(steps - 1):
        if t < 2 * base_size and t % 2 == 0:
            sources.append(("base", t // 2))
        elif forcing == "paper":
            sources.append(("output", t))
        else:
            sources.append(("position", t + 1))
    return sources[:steps]


class Seq2SeqCodebookGenerator(nn.Module):
    """LSTM encoder-decoder that maps ``K`` base codewords to ``K~`` adapted codewords.

    Args:
        dim: codeword dimension ``D`` (= LSTM hidden size).
        max_codebook_size: longest decoder run (size of the position-embedding table).
        num_layers: LSTM layers (paper: 2).
        dropout: dropout between LSTM layers (paper: 0.5).
        forcing: ``"paper"`` or ``"official"`` decoder inputs (:func:`cross_forcing_sources`).

    With ``D = 64`` and ``max_codebook_size = 2048`` it has about 270k parameters.
    """

    def __init__(
        self, dim: int, max_codebook_size: int = 2048, num_layers: int = 2, dropout: float = 0.5,
        forcing: Forcing = "paper",
    ) -> None:
        super().__init__()
        if forcing not in ("paper", "official"):
            raise ValueError(f"forcing must be 'paper' or 'official', got {forcing!r}")
        self.dim = dim
        self.max_codebook_size = int(max_codebook_size)
        self.forcing: Forcing = forcing
        self.encoder = nn.LSTM(dim, dim, num_layers, dropout=dropout, batch_first=True)
        self.decoder = nn.LSTM(dim, dim, num_layers, dropout=dropout, batch_first=True)
        self.start = nn.Parameter(torch.randn(dim) * dim**-0.5)
        self.position = nn.Embedding(self.max_codebook_size + 1, dim)
        self.out = nn.Linear(dim, dim)

    def forward(self, base: Tensor, size: int) -> Tensor:
        """``base`` ``(K, D)`` -> adapted codebook ``(size, D)``."""
        if not 1 <= size <= self.max_codebook_size:
            raise ValueError(f"codebook size must be in [1, {self.max_codebook_size}], got {size}")
        with torch.autocast(device_type=base.device.type, enabled=False):
            base = base.float()
            k = base.shape[0]
            _, state = self.encoder(base.unsqueeze(0))
            sources = cross_forcing_sources(k, size, self.forcing)
            if self.forcing == "official":
                # every input is known in advance: one LSTM call over the whole sequence
                inputs = torch.stack([self._input(src, i, base, None) for src, i in sources]).unsqueeze(0)
                hidden, _ = self.decoder(inputs, state)
                return self.out(hidden.squeeze(0))
            outputs: list[Tensor] = []
            for src, i in sources:  # free-running feeds outputs back: step by step
                x = self._input(src, i, base, outputs)
                hidden, state = self.decoder(x.view(1, 1, -1), state)
                outputs.append(self.out(hidden.view(-1)))
            return torch.stack(outputs)

    def _input(self, source: str, index: int, base: Tensor, outputs: list[Tensor] | None) -> Tensor:
        if source == "start":
            return self.start
        if source == "base":
            return base[index]
        if source == "position":
            return self.position.weight[index]
        assert outputs is not None
        return outputs[index]


# -- model-based adaptation -------------------------------------------------------------------------
def dkm(
    points: Tensor, init: Tensor, tau: float = 0.01, iters: int = 200, tol: float = 1e-6
) -> tuple[Tensor, Tensor]:
    """Differentiable k-means (Cho et al. 2022, "DKM: Differentiable k-Means Clustering Layer").

    Soft assignments ``A = softmax(-||p - c|| / tau)`` over centres, centres
    ``c = A^T p / sum(A)``, iterated from ``init`` until the centres move less than ``tol``
    or ``iters`` iterations. As ``tau -> 0`` this is Lloyd's k-means.

    Args:
        points: ``(K, D)``.
        init: initial centres ``(M, D)``.

    Returns:
        ``(centres (M, D), assignments (K, M))``; differentiable w.r.t. ``points`` and ``init``.
    """
    centres = init
    attn = points.new_zeros(points.shape[0], init.shape[0])
    for _ in range(iters):
        dist = torch.cdist(points, centres)
        attn = torch.softmax(-dist / tau, dim=1)
        new = (attn.t() @ points) / attn.sum(0).clamp_min(1e-12).unsqueeze(1)
        # empty soft clusters keep their centre
        new = torch.where(attn.sum(0, keepdim=True).t() > 1e-8, new, centres)
        moved = (new - centres).abs().max()
        centres = new
        if moved < tol:
            break
    return centres, attn


def _farthest_first(points: Tensor, m: int) -> Tensor:
    """Deterministic k-means++-like seeding: start at the point nearest the mean, add the farthest."""
    idx = [int(torch.cdist(points.mean(0, keepdim=True), points).argmin())]
    d = torch.cdist(points[idx[-1]].unsqueeze(0), points).squeeze(0)
    for _ in range(1, m):
        idx.append(int(d.argmax()))
        d = torch.minimum(d, torch.cdist(points[idx[-1]].unsqueeze(0), points).squeeze(0))
    return points[idx]


def mmd(x: Tensor, y: Tensor, scales: Sequence[float] = (0.1, 0.2, 0.5, 1.0, 2.0)) -> Tensor:
    """Squared maximum mean discrepancy with a sum of Gaussian kernels.

    Bandwidths are ``scales`` times the median pairwise distance of ``y`` (multi-scale kernel).
    """
    with torch.no_grad():
        d_yy = torch.cdist(y, y)
        med = d_yy[d_yy > 0].median() if (d_yy > 0).any() else torch.tensor(1.0, device=y.device)
    def k(a: Tensor, b: Tensor) -> Tensor:
        d2 = torch.cdist(a, b).pow(2)
        return sum(torch.exp(-d2 / (2 * (s * med) ** 2)) for s in scales)  # type: ignore[return-value]
    return k(x, x).mean() + k(y, y).mean() - 2 * k(x, y).mean()


def ikm(
    base: Tensor, size: int, tau: float = 0.01, steps: int = 300, lr: float = 1e-2, l2: float = 1e-4,
    dkm_iters: int = 10, seed: int = 0,
) -> Tensor:
    """Inverse DKM: ``size > K`` new codewords whose DKM back to ``K`` clusters matches ``base``.

    The new codewords start as copies of the base codewords (cycled) plus small noise and are
    optimised with Adam on ``MMD^2(DKM(X -> K, init=base), base) + l2 * mean ||X||^2``.
    """
    k, d = base.shape
    if size <= k:
        raise ValueError(f"ikm grows a codebook: size {size} must exceed K = {k}")
    g = torch.Generator(device="cpu").manual_seed(seed)
    base = base.detach().float()
    spread = base.std(0, keepdim=True).clamp_min(1e-6)
    noise = torch.randn(size, d, generator=g).to(base.device) * 0.05 * spread
    x = (base[torch.arange(size, device=base.device) % k] + noise).requires_grad_(True)
    opt = torch.optim.Adam([x], lr=lr * float(spread.mean()))
    with torch.enable_grad():
        for _ in range(steps):
            centres, _ = dkm(x, base, tau=tau, iters=dkm_iters, tol=0.0)
            loss = mmd(centres, base) + l2 * x.pow(2).sum(1).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
    return x.detach()


class RAQ(Quantizer):
    """Rate-adaptive quantizer: a base VQ plus codebooks of any size generated from it.

    Args:
        dim: token dimension ``D``.
        codebook_size: base codebook size ``K`` (paper: 128 on CIFAR10).
        min_codebook_size, max_codebook_size: range of ``K~`` sampled in training and offered as
            rate points (paper: 8 - 1024).
        rate_points: the published sizes (default: the powers of two in the range, plus ``K``).
        adapter: ``"seq2seq"`` (trained generator) or ``"dkm"`` (DKM / inverse DKM, no parameters).
        forcing: cross-forcing inputs of the generator, ``"paper"`` or ``"official"``.
        base: registered name of the base quantizer (``"vq"``; its ``codebook`` is adapted).
        base_kwargs: options of the base quantizer (default EMA updates).
        beta: commitment weight for the adapted codebook.
        sample: how training draws ``K~``: ``"uniform"`` over integers or ``"log"`` (log-uniform).
        tau: DKM temperature.

    Settings: ``codebook_size=K~`` (``encode``, ``decode``, ``forward``); none means the base.
    Codes are ``(*,)`` indices into the codebook of that size; ``bits_per_token_at(codebook_size=
    K~) = log2(K~)``. Loss terms of an adapted pass: ``codebook`` (trains the generator) and
    ``commitment``; of a base pass: the base quantizer's terms.
    """

    def __init__(
        self,
        dim: int,
        codebook_size: int = 128,
        *,
        min_codebook_size: int = 8,
        max_codebook_size: int = 1024,
        rate_points: Sequence[int] | None = None,
        adapter: Literal["seq2seq", "dkm"] = "seq2seq",
        forcing: Forcing = "paper",
        base: str = "vq",
        base_kwargs: dict[str, Any] | None = None,
        beta: float = 0.25,
        sample: Literal["uniform", "log"] = "uniform",
        tau: float = 0.01,
    ) -> None:
        super().__init__(dim)
        if not 2 <= min_codebook_size <= max_codebook_size:
            raise ValueError("need 2 <= min_codebook_size <= max_codebook_size")
        if adapter not in ("seq2seq", "dkm"):
            raise ValueError(f"adapter must be 'seq2seq' or 'dkm', got {adapter!r}")
        if sample not in ("uniform", "log"):
            raise ValueError(f"sample must be 'uniform' or 'log', got {sample!r}")
        from codec.quant import get_quantizer

        kwargs = {"update": "ema", **(base_kwargs or {})}
        self.base = get_quantizer(base, dim=dim, codebook_size=codebook_size, **kwargs)
        if not isinstance(self.base, VectorQuantizer) or not isinstance(self.base.project_in, nn.Identity):
            raise ValueError("RAQ adapts the codebook of a 'vq' base quantizer without codebook_dim")
        self.base_size = int(codebook_size)
        self.min_size = int(min_codebook_size)
        self.max_size = int(max_codebook_size)
        if rate_points is None:
            sizes = {2**i for i in range(int(math.log2(self.min_size)), int(math.log2(self.max_size)) + 1)}
            sizes = {s for s in sizes if self.min_size <= s <= self.max_size} | {self.base_size}
        else:
            sizes = {int(s) for s in rate_points}
        if any(s < 2 for s in sizes):
            raise ValueError("rate point codebook sizes must be >= 2")
        self.published_sizes = sorted(sizes)
        self.adapter = adapter
        self.beta = float(beta)
        self.sample = sample
        self.tau = float(tau)
        self.generator = (
            Seq2SeqCodebookGenerator(dim, max(self.max_size, max(self.published_sizes)), forcing=forcing)
            if adapter == "seq2seq" else None
        )
        total = sum(s for s in self.published_sizes if s != self.base_size)
        self.register_buffer("published", torch.zeros(total, dim))
        self.register_buffer("published_valid", torch.tensor(False))
        self._cache: dict[int, Tensor] = {}
        self._active: int | None = None

    # -- sizes and rates ------------------------------------------------------------------------
    @property
    def codebook_size(self) -> int:
        return self._active or self.base_size

    @property
    def initialized(self) -> bool:
        return self.base.initialized

    def set_codebook_size(self, size: int | None) -> None:
        """Make ``size`` the default for ``forward``/``encode``/``decode`` (None: the base ``K``)."""
        if size is not None:
            self.codebook(size)  # generate and cache now
        self._active = None if size in (None, self.base_size) else int(size)

    def rate_settings(self) -> list[dict[str, int]]:
        return [{"codebook_size": s} for s in self.published_sizes]

    def bits_per_token_at(self, codebook_size: int | None = None) -> float:  # type: ignore[override]
        return math.log2(codebook_size or self.codebook_size)

    def alphabet_sizes(self, codebook_size: int | None = None) -> list[int]:  # type: ignore[override]
        return [int(codebook_size or self.codebook_size)]

    def training_settings(self) -> list[dict[str, int]]:
        """The base pass and one adapted pass with ``K~`` drawn from the configured range."""
        if self.adapter == "dkm":
            return [{}]  # model-based RAQ adapts after training
        # torch's RNG, which the recipes seed per step: the draw is reproducible on resume
        if self.sample == "log":
            lo, hi = math.log2(self.min_size), math.log2(self.max_size)
            k = int(round(2 ** (lo + (hi - lo) * float(torch.rand(())))))
        else:
            k = int(torch.randint(self.min_size, self.max_size + 1, ()))
        return [{}, {"codebook_size": k}]

    # -- codebooks ------------------------------------------------------------------------------
    def codebook(self, size: int | None = None) -> Tensor:
        """The ``(size, D)`` codebook: base, published buffer, cache, or freshly adapted."""
        size = int(size or self.codebook_size)
        base = self.base.codebook.weight
        if size == self.base_size:
            return base
        if size < 2:
            raise ValueError(f"codebook size must be >= 2, got {size}")
        if not self.training:
            if bool(self.published_valid) and size in self.published_sizes:
                return self._published_slice(size)
            if size in self._cache:
                return self._cache[size]
        if self.adapter == "seq2seq":
            if self.generator is None:
                raise ValueError(f"codebook size {size} is not one of the published sizes {self.published_sizes} "
                                 "of this inference-only model")
            if size > self.generator.max_codebook_size:
                raise ValueError(f"codebook size {size} exceeds the generator's {self.generator.max_codebook_size}")
            book = self.generator(base.detach(), size)
        elif size < self.base_size:
            init = _farthest_first(base.detach().float(), size)
            book = dkm(base.detach().float(), init, tau=self.tau)[0]
        else:
            book = ikm(base.detach().float(), size, tau=self.tau)
        if not self.training:
            book = book.detach()
            self._cache[size] = book
        return book

    def _published_slice(self, size: int) -> Tensor:
        offset = 0
        for s in self.published_sizes:
            if s == self.base_size:
                continue
            if s == size:
                return self.published[offset : offset + s]
            offset += s
        raise KeyError(size)

    @torch.no_grad()
    def publish(self) -> None:
        """Generate the codebooks of every published size into buffers (saved with the weights).

        A stripped quantizer (no generator) keeps the codebooks it was published with."""
        if self.adapter == "seq2seq" and self.generator is None:
            if bool(self.published_valid):
                return
            raise RuntimeError("this RAQ quantizer has neither a codebook generator nor published codebooks")
        was_training = self.training
        self.eval()
        self.published_valid.fill_(False)
        self._cache.clear()
        offset = 0
        for s in self.published_sizes:
            if s == self.base_size:
                continue
            self.published[offset : offset + s] = self.codebook(s)
            offset += s
        self._cache.clear()
        nn.Module.train(self, was_training)  # restore the mode without invalidating what we just stored
        self.published_valid.fill_(True)

    def train(self, mode: bool = True) -> "RAQ":
        """Switching to training clears the cache and marks published codebooks stale (weights will move)."""
        if mode and self.adapter == "seq2seq" and self.generator is None:
            raise RuntimeError("this RAQ quantizer was stripped for inference (no codebook generator): "
                               "train from a training checkpoint instead")
        self._cache.clear()
        if mode:
            self.published_valid.fill_(False)
        return super().train(mode)

    def strip_training_state(self, publish: bool = True) -> None:
        """Keep only what decoding needs: the published codebooks replace the generator.

        With ``publish`` the codebooks of every rate point are generated first (from trained
        weights); without it (loading a stripped model) they come with the weights. Afterwards
        only the published sizes can be used, and the quantizer cannot be trained.
        """
        if publish:
            self.publish()
        self.generator = None

    # -- the contract -----------------------------------------------------------------------------
    def forward(self, z: Tensor, codebook_size: int | None = None) -> QuantizerOutput:
        size = codebook_size or self.codebook_size
        if size == self.base_size:
            return self.base(z)
        self._check_tokens(z)
        x, lead = flatten_tokens(z)
        book = self.codebook(size)
        idx, _ = nearest_code(x, book)
        q = F.embedding(idx, book)
        xf = x.float()
        loss = {"codebook": mse(q, xf.detach()), "commitment": self.beta * mse(xf, q.detach())}
        counts = torch.bincount(idx, minlength=size)
        return QuantizerOutput(
            z_q=straight_through(x, q).to(z.dtype).reshape(*lead, self.dim),
            codes=idx.reshape(lead),
            loss=loss,
            metrics={**code_metrics(counts, size), "codebook_size": torch.tensor(float(size))},
        )

    @torch.no_grad()
    def encode(self, z: Tensor, codebook_size: int | None = None) -> Tensor:
        size = codebook_size or self.codebook_size
        if size == self.base_size:
            return self.base.encode(z)
        self._check_tokens(z)
        x, lead = flatten_tokens(z)
        return nearest_code(x, self.codebook(size))[0].reshape(lead)

    def decode(self, codes: Tensor, codebook_size: int | None = None) -> Tensor:
        size = codebook_size or self.codebook_size
        if size == self.base_size:
            return self.base.decode(codes)
        self._check_codes(codes, size)
        return F.embedding(codes.reshape(-1).long(), self.codebook(size)).reshape(*codes.shape, self.dim)
