"""A codebook and its maintenance: initialisation, EMA updates, dead-code restarts.

Shared by the variants that look codes up by nearest neighbour (``vq``, ``adaptive``, and the
base codebook of ``raq``). The update rules follow van den Oord et al. 2017 ("Neural Discrete
Representation Learning", appendix) as summarised in seed 001:

    N_k <- gamma * N_k + (1 - gamma) * n_k
    m_k <- gamma * m_k + (1 - gamma) * sum_{i: k_i = k} z_i
    N~_k = (N_k + eps) / (sum_j N_j + K * eps) * sum_j N_j        (Laplace smoothing)
    e_k = m_k / N~_k

Under ``torch.distributed`` ``n_k`` and the sums are all-reduced first, so every rank applies the
update of the concatenated batch and the codebooks stay identical.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from codec.quant.distributed import all_reduce_sum_, broadcast_, is_distributed
from codec.quant.search import Metric, cluster_stats, kmeans, nearest_code, sample_rows

__all__ = ["Codebook", "CodebookUpdate", "CodebookInit"]

CodebookUpdate = Literal["ema", "loss"]
CodebookInit = Literal["random", "kmeans"]


class Codebook(nn.Module):
    """``K`` codewords of dimension ``D`` with their running statistics.

    Args:
        num_codes: ``K``.
        dim: ``D``.
        update: ``"ema"`` (codewords are buffers moved by EMA with Laplace smoothing) or ``"loss"``
            (codewords are an ``nn.Parameter`` trained by the codebook loss).
        decay: EMA decay ``gamma`` (also used for the usage statistics in ``"loss"`` mode).
        epsilon: Laplace smoothing ``eps``.
        init: ``"random"`` (Kaiming-uniform) or ``"kmeans"`` on the first training batch.
        kmeans_iters: Lloyd iterations for ``"kmeans"``.
        dead_code_threshold: codes whose EMA count ``N_k`` falls below this are replaced by random
            batch vectors (0 disables).
        metric: ``"euclidean"`` or ``"cosine"`` (codewords kept L2-normalised).
        max_bytes: memory bound of the nearest-code search.
    """

    def __init__(
        self,
        num_codes: int,
        dim: int,
        *,
        update: CodebookUpdate = "ema",
        decay: float = 0.99,
        epsilon: float = 1e-5,
        init: CodebookInit = "random",
        kmeans_iters: int = 10,
        dead_code_threshold: float = 0.0,
        metric: Metric = "euclidean",
        max_bytes: int | None = None,
    ) -> None:
        super().__init__()
        if num_codes < 1:
            raise ValueError(f"codebook_size must be >= 1, got {num_codes}")
        if update not in ("ema", "loss"):
            raise ValueError(f"update must be 'ema' or 'loss', got {update!r}")
        if init not in ("random", "kmeans"):
            raise ValueError(f"init must be 'random' or 'kmeans', got {init!r}")
        if metric not in ("euclidean", "cosine"):
            raise ValueError(f"metric must be 'euclidean' or 'cosine', got {metric!r}")
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"decay must be in [0, 1), got {decay}")
        self.num_codes = int(num_codes)
        self.dim = int(dim)
        self.update_rule = update
        self.decay = float(decay)
        self.epsilon = float(epsilon)
        self.init = init
        self.kmeans_iters = int(kmeans_iters)
        self.dead_code_threshold = float(dead_code_threshold)
        self.metric: Metric = metric
        self.max_bytes = max_bytes

        weight = torch.empty(num_codes, dim)
        nn.init.kaiming_uniform_(weight, a=math.sqrt(5))
        if metric == "cosine":
            weight = F.normalize(weight, dim=-1)
        if update == "loss":
            self.weight = nn.Parameter(weight)
        else:
            self.register_buffer("weight", weight)
            self.register_buffer("embed_sum", weight.clone())
        # EMA of per-code counts; kept in both modes (usage statistics, dead-code detection).
        self.register_buffer("cluster_size", torch.ones(num_codes))
        self.register_buffer("initialized", torch.tensor(False))

    def strip_training_state(self) -> None:
        """Leave the EMA sums (training state) out of the saved weights; they cannot be trained after."""
        if "embed_sum" in self._buffers:
            self._non_persistent_buffers_set.add("embed_sum")

    # -- lookup ---------------------------------------------------------------------------------
    def search(self, h: Tensor) -> Tensor:
        """Nearest codeword index for each row of ``h`` ``(M, D)`` -> ``(M,)`` long."""
        idx, _ = nearest_code(h, self.weight, metric=self.metric, max_bytes=self.max_bytes)
        return idx

    def lookup(self, idx: Tensor) -> Tensor:
        """Codewords for integer codes of any shape -> ``(*idx.shape, D)`` float32."""
        return F.embedding(idx, self.weight)

    def prepare(self, h: Tensor) -> Tensor:
        """Tokens as the codebook compares them: normalised for ``"cosine"``, unchanged otherwise."""
        return F.normalize(h, dim=-1) if self.metric == "cosine" else h

    # -- maintenance (training only) --------------------------------------------------------------
    @torch.no_grad()
    def maybe_init(self, h: Tensor) -> None:
        """Initialise from the first training batch ``h`` ``(M, D)`` (k-means) or sync the random init."""
        if bool(self.initialized):
            return
        if self.init == "kmeans":
            centroids, _ = kmeans(
                h, self.num_codes, iters=self.kmeans_iters, metric=self.metric, max_bytes=self.max_bytes
            )
            self.weight.data.copy_(centroids)
        else:
            broadcast_(self.weight.data, src=0)
        self._reset_ema_state()
        self.initialized.fill_(True)

    def _reset_ema_state(self) -> None:
        self.cluster_size.fill_(1.0)
        if self.update_rule == "ema":
            self.embed_sum.copy_(self.weight)

    @torch.no_grad()
    def update(self, h: Tensor, idx: Tensor) -> Tensor:
        """One training step of statistics (and, for ``"ema"``, of the codewords).

        Args:
            h: tokens ``(M, D)`` as compared (see :meth:`prepare`), detached.
            idx: their codes ``(M,)``.

        Returns:
            this rank's per-code counts ``(K,)`` (for batch metrics).
        """
        counts, sums = cluster_stats(h, idx, self.num_codes)
        local = counts.clone()
        if self.update_rule == "ema":
            all_reduce_sum_(counts, sums)
            self.cluster_size.mul_(self.decay).add_(counts, alpha=1 - self.decay)
            self.embed_sum.mul_(self.decay).add_(sums, alpha=1 - self.decay)
            n = self.cluster_size.sum()
            smoothed = (self.cluster_size + self.epsilon) / (n + self.num_codes * self.epsilon) * n
            new = self.embed_sum / smoothed.unsqueeze(1)
            if self.metric == "cosine":
                new = F.normalize(new, dim=-1)
            self.weight.copy_(new)
        else:
            all_reduce_sum_(counts)
            self.cluster_size.mul_(self.decay).add_(counts, alpha=1 - self.decay)
        return local

    @torch.no_grad()
    def restart_dead(self, h: Tensor) -> int:
        """Replace codes whose EMA count is below the threshold by vectors of ``h`` ``(M, D)``.

        Vectors are drawn without replacement when the batch has enough tokens, with replacement
        otherwise (memory O(dead codes)). Returns the number of codes replaced.
        """
        if self.dead_code_threshold <= 0:
            return 0
        dead = self.cluster_size < self.dead_code_threshold
        n_dead = int(dead.sum())
        if n_dead == 0 or (h.shape[0] == 0 and not is_distributed()):
            return 0
        new = self.prepare(sample_rows(h, n_dead))
        self.weight.data[dead] = new
        self.cluster_size[dead] = self.dead_code_threshold
        if self.update_rule == "ema":
            self.embed_sum[dead] = new * self.dead_code_threshold
        return n_dead

    def extra_repr(self) -> str:
        return (
            f"num_codes={self.num_codes}, dim={self.dim}, update={self.update_rule}, "
            f"metric={self.metric}, init={self.init}, dead_code_threshold={self.dead_code_threshold}"
        )
