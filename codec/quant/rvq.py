"""Residual vector quantization with quantizer dropout.

Papers:
    * Zeghidour et al. 2021, "SoundStream: An End-to-End Neural Audio Codec" (arXiv 2107.03312):
      residual VQ, and quantizer dropout so that one model serves every prefix of levels.
    * Kumar et al. 2023, "High-Fidelity Audio Compression with Improved RVQGAN" (DAC,
      arXiv 2306.06546): dropout applied to a fraction of the samples only.

    * Babenko & Lempitsky 2014, "Additive Quantization for Extreme Vector Compression" (CVPR) and
      Liu et al. 2015, "Improved Residual Vector Quantization for High-dimensional Approximate
      Nearest Neighbor Search" (AAAI): beam search over residual codes at encoding time.

Level ``l`` quantizes the residual left by levels ``0..l-1``: ``r_0 = z``,
``z_q = sum_l Q_l(r_l)``, ``r_{l+1} = r_l - sg(Q_l(r_l))``. Any registered quantizer with scalar
codes (``vq``, ``simvq``, ``gumbel``, ``fsq``, ...) can serve as the level quantizer.

Encoding is greedy by default (each level picks its own code for the residual it is given).
``encode(..., beam_size=B)`` keeps the ``B`` code prefixes with the smallest residual after
each level instead, and returns the prefix with the smallest final error ``|z - z_q|^2``: the
decoder is unchanged, so a beam is a pure encoder-side choice that any reader decodes.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import torch
from torch import Tensor, nn

from codec.quant.base import Quantizer, QuantizerOutput

__all__ = ["ResidualVQ", "MAX_BEAM_SIZE", "MAX_BEAM_ALPHABET"]

#: Largest beam ``encode`` accepts.
MAX_BEAM_SIZE = 64
#: Largest level alphabet a beam search enumerates (its codewords are all decoded once).
MAX_BEAM_ALPHABET = 1 << 16
#: Bound on the float32 distance buffer of one beam step (tokens are processed in slices).
_BEAM_TILE_BYTES = 32 * 2**20


class ResidualVQ(Quantizer):
    """A stack of quantizers over successive residuals.

    Args:
        dim: token dimension ``D``.
        codebook_size: codes per level (an int for every level, or one int per level).
        num_levels: number of levels ``L`` (ignored if ``codebook_size`` is a sequence).
        quantizer: registered name of the level quantizer (default ``"vq"``).
        quantizer_dropout: fraction of samples that, in training, use a random number of levels
            ``n ~ U{min_levels, L}`` (0 disables; 1 is SoundStream's every-sample dropout).
        min_levels: fewest levels dropout keeps.
        **level_kwargs: passed to every level quantizer (e.g. ``update="ema"``,
            ``dead_code_threshold=2``).

    Shapes: ``z`` ``(B, N, D)`` (or ``(B, D)``: one token per sample) -> ``codes`` ``(B, N, L)``
    long; in training a level dropped for a sample has code ``-1``. ``encode(z, num_levels=n)``
    returns ``(B, N, n)``; ``decode`` uses as many levels as ``codes`` has columns and skips
    ``-1`` entries. Loss terms are the level terms summed over levels.

    Level settings (e.g. ``codebook_size=K~`` when the levels are ``raq``) are passed to every
    level by ``forward``/``encode``/``decode``, so rate points are depth x level setting: residual
    depth and RAQ compose into one ladder of rates.

    Dropout is sample-wise: a dropped level is not run on that sample at all, so EMA statistics
    only see the samples a level actually quantizes. Dropout starts once every level's codebook
    is initialised (the first training batch always uses all levels).
    """

    def __init__(
        self,
        dim: int,
        codebook_size: int | Sequence[int] = 1024,
        *,
        num_levels: int = 8,
        quantizer: str = "vq",
        quantizer_dropout: float = 0.5,
        min_levels: int = 1,
        **level_kwargs: Any,
    ) -> None:
        super().__init__(dim)
        from codec.quant import get_quantizer  # registry lives in the package

        sizes = [int(codebook_size)] * num_levels if isinstance(codebook_size, int) else [int(k) for k in codebook_size]
        if not sizes:
            raise ValueError("rvq needs at least one level")
        if not 1 <= min_levels <= len(sizes):
            raise ValueError(f"min_levels must be in [1, {len(sizes)}], got {min_levels}")
        if not 0.0 <= quantizer_dropout <= 1.0:
            raise ValueError(f"quantizer_dropout must be in [0, 1], got {quantizer_dropout}")
        self.levels = nn.ModuleList(
            [get_quantizer(quantizer, dim=dim, codebook_size=k, **level_kwargs) for k in sizes]
        )
        for level in self.levels:
            if not getattr(level, "scalar_codes", True):
                raise ValueError(f"rvq levels need one code per token; {quantizer!r} has more")
        self.quantizer_dropout = float(quantizer_dropout)
        self.min_levels = int(min_levels)

    scalar_codes = False
    beam_search = True

    @property
    def num_levels(self) -> int:
        return len(self.levels)

    @property
    def codebook_size(self) -> int:
        """Codes per level for the first level (see :attr:`codebook_sizes` for all)."""
        return self.levels[0].codebook_size

    @property
    def codebook_sizes(self) -> list[int]:
        return [q.codebook_size for q in self.levels]

    @property
    def bits_per_token(self) -> float:
        return self.bits_at(self.num_levels)

    def bits_at(self, num_levels: int) -> float:
        """Nominal bits per token when the first ``num_levels`` levels are used."""
        return sum(math.log2(k) for k in self.codebook_sizes[:num_levels])

    def rate_settings(self) -> list[dict[str, int]]:
        """Every depth, times every setting of the level quantizer (RAQ levels: every codebook size)."""
        return [
            {"num_levels": n, **level}
            for n in range(self.min_levels, self.num_levels + 1)
            for level in self.levels[0].rate_settings()
        ]

    def bits_per_token_at(self, num_levels: int | None = None, **level_setting: int) -> float:  # type: ignore[override]
        n = self.num_levels if num_levels is None else num_levels
        if not level_setting:
            return self.bits_at(n)
        return sum(level.bits_per_token_at(**level_setting) for level in self.levels[:n])

    def alphabet_sizes(self, num_levels: int | None = None, **level_setting: int) -> list[int]:  # type: ignore[override]
        n = self.num_levels if num_levels is None else num_levels
        return [level.alphabet_sizes(**level_setting)[0] for level in self.levels[:n]]

    def training_settings(self) -> list[dict[str, int]]:
        """The level quantizer's (e.g. RAQ: base + one sampled codebook size, shared by all levels)."""
        return self.levels[0].training_settings()

    def _levels_per_sample(self, b: int, device: torch.device) -> Tensor:
        n = torch.full((b,), self.num_levels, dtype=torch.long, device=device)
        if not self.training or self.quantizer_dropout <= 0 or self.num_levels == 1:
            return n
        if not all(level.initialized for level in self.levels):
            return n
        drop = torch.rand(b, device=device) < self.quantizer_dropout
        rand_n = torch.randint(self.min_levels, self.num_levels + 1, (b,), device=device)
        return torch.where(drop, rand_n, n)

    @staticmethod
    def _as_samples(z: Tensor) -> tuple[Tensor, torch.Size]:
        if z.dim() < 2:
            raise ValueError(f"rvq expects (B, N, D) or (B, D) tokens, got {tuple(z.shape)}")
        lead = z.shape[:-1]
        return z.reshape(z.shape[0], math.prod(z.shape[1:-1]), z.shape[-1]), lead

    def forward(self, z: Tensor, **level_setting: int) -> QuantizerOutput:
        self._check_tokens(z)
        x, lead = self._as_samples(z)
        b, n_tok, _ = x.shape
        n_used = self._levels_per_sample(b, x.device)
        residual = x
        z_q = torch.zeros_like(x)
        codes = torch.full((b, n_tok, self.num_levels), -1, dtype=torch.long, device=x.device)
        losses: dict[str, Tensor] = {}
        per_level: dict[str, list[Tensor]] = {}
        for l, level in enumerate(self.levels):
            active = n_used > l
            all_active = bool(active.all())
            if all_active:
                out = level(residual, **level_setting)
                z_q = z_q + out.z_q
                residual = residual - out.z_q.detach()
                codes[..., l] = out.codes
            else:
                rows = active.nonzero().squeeze(1)
                out = level(residual.index_select(0, rows), **level_setting)  # may be empty: collectives still run
                z_q = z_q.index_add(0, rows, out.z_q)
                residual = residual.index_add(0, rows, -out.z_q.detach())
                codes[rows, :, l] = out.codes
            for name, value in out.loss.items():
                losses[name] = losses[name] + value if name in losses else value
            for name, value in out.metrics.items():
                per_level.setdefault(name, []).append(value)
        metrics = {name: torch.stack(values).mean() for name, values in per_level.items()}
        for l, value in enumerate(per_level.get("perplexity", [])):
            metrics[f"perplexity_level{l}"] = value
        metrics["levels_used"] = n_used.float().mean()
        return QuantizerOutput(
            z_q=z_q.reshape(*lead, self.dim),
            codes=codes.reshape(*lead, self.num_levels),
            loss=losses,
            metrics=metrics,
        )

    @torch.no_grad()
    def encode(self, z: Tensor, num_levels: int | None = None, *, beam_size: int = 1, **level_setting: int) -> Tensor:
        """Codes of the first ``num_levels`` levels (all by default): ``(*, num_levels)``.

        ``beam_size`` 1 is greedy residual encoding. A larger beam searches code prefixes for the
        smallest final error ``|z - decode(codes)|^2`` (see the module docstring) and keeps, token
        by token, whichever of its result and the greedy codes has the smaller error, so a beam is
        never worse than greedy; it costs about ``beam_size`` times the codebook search.
        """
        self._check_tokens(z)
        n = self.num_levels if num_levels is None else int(num_levels)
        if not 1 <= n <= self.num_levels:
            raise ValueError(f"num_levels must be in [1, {self.num_levels}], got {num_levels}")
        if isinstance(beam_size, bool) or not isinstance(beam_size, int) or not 1 <= beam_size <= MAX_BEAM_SIZE:
            raise ValueError(f"beam_size must be an int in [1, {MAX_BEAM_SIZE}], got {beam_size!r}")
        x, lead = self._as_samples(z)
        residual = x
        codes = []
        for level in self.levels[:n]:
            c = level.encode(residual, **level_setting)
            residual = residual - level.decode(c, **level_setting).to(residual.dtype)
            codes.append(c)
        greedy = torch.stack(codes, dim=-1).reshape(-1, n)
        if beam_size > 1:
            beam, beam_error = self._beam_encode(x, n, beam_size, level_setting)
            # per token, the beam's codes only where they leave a smaller error than the greedy ones
            better = beam_error < residual.reshape(-1, self.dim).float().square().sum(-1)
            greedy = torch.where(better.unsqueeze(-1), beam, greedy)
        return greedy.reshape(*lead, n)

    def _beam_encode(self, x: Tensor, n: int, beam_size: int, level_setting: dict[str, int]) -> tuple[Tensor, Tensor]:
        """``x`` ``(B, N, D)`` -> ``(B * N, n)`` codes by beam search over the first ``n`` levels,
        and their final squared errors ``(B * N,)``."""
        tokens = x.reshape(-1, self.dim).float()
        if tokens.shape[0] == 0:
            return tokens.new_empty(0, n, dtype=torch.long), tokens.new_empty(0)
        books = []
        for level, k in zip(self.levels[:n], self.alphabet_sizes(n, **level_setting)):
            if k > MAX_BEAM_ALPHABET:
                raise ValueError(f"beam search enumerates every code of a level; {k} codes exceed {MAX_BEAM_ALPHABET}")
            every = torch.arange(k, device=tokens.device)
            books.append(level.decode(every, **level_setting).float().reshape(k, self.dim))
        widest = max(book.shape[0] for book in books) * beam_size
        rows = max(1, _BEAM_TILE_BYTES // (4 * widest))
        parts = [self._beam_slice(part, books, beam_size) for part in tokens.split(rows)]
        return torch.cat([c for c, _ in parts]), torch.cat([e for _, e in parts])

    @staticmethod
    def _beam_slice(x: Tensor, books: list[Tensor], beam_size: int) -> tuple[Tensor, Tensor]:
        """Beam search for tokens ``x`` ``(M, D)`` over codebooks ``(K_l, D)`` -> ``(M, L)`` codes, ``(M,)`` errors."""
        with torch.autocast(device_type=x.device.type, enabled=False):
            m, d = x.shape
            residual = x.unsqueeze(1)  # (M, beams, D): one beam before the first level
            error = residual.square().sum(-1)  # (M, beams): |residual|^2
            parents, picks = [], []
            for book in books:
                k = book.shape[0]
                # |r - c|^2 for every beam and code: (M, beams, K)
                dist = error.unsqueeze(-1) - 2.0 * residual @ book.T + book.square().sum(-1)
                width = min(beam_size, dist.shape[1] * k)
                _, flat = dist.reshape(m, -1).topk(width, dim=1, largest=False, sorted=True)
                parent, code = flat // k, flat % k
                residual = residual.gather(1, parent.unsqueeze(-1).expand(-1, -1, d)) - book[code]
                error = residual.square().sum(-1)  # recomputed, not accumulated: no drift
                parents.append(parent)
                picks.append(code)
            beam = error.argmin(dim=1, keepdim=True)  # (M, 1)
            best = error.gather(1, beam).squeeze(1)
            codes = []
            for parent, code in zip(reversed(parents), reversed(picks)):
                codes.append(code.gather(1, beam))
                beam = parent.gather(1, beam)
            return torch.cat(codes[::-1], dim=1), best

    def decode(self, codes: Tensor, num_levels: int | None = None, **level_setting: int) -> Tensor:
        """``(*, n)`` codes, ``n <= L`` -> ``(*, D)``; ``-1`` entries contribute nothing.

        ``num_levels``, if given, must equal ``n`` (a consistency check for callers that know it).
        """
        n = codes.shape[-1]
        if num_levels is not None and num_levels != n:
            raise ValueError(f"codes have {n} levels, expected num_levels={num_levels}")
        if not 1 <= n <= self.num_levels:
            raise ValueError(f"codes have {n} levels; this rvq has {self.num_levels}")
        self._check_integer(codes)
        if codes.numel() and int(codes.min()) < -1:
            raise ValueError(f"codes out of range: {int(codes.min())} (only -1 marks a dropped level)")
        out: Tensor | None = None
        for l in range(n):
            c = codes[..., l].long()
            valid = (c >= 0).unsqueeze(-1)
            part = self.levels[l].decode(c.clamp_min(0), **level_setting)
            part = torch.where(valid, part, torch.zeros_like(part))
            out = part.new_zeros(part.shape) + part if out is None else out + part
        assert out is not None
        return out
