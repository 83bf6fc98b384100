"""Collective helpers that keep codebooks identical across data-parallel ranks.

When ``torch.distributed`` is initialised with more than one process, EMA statistics are
summed over ranks and random choices (k-means seeds, dead-code replacements) are made on rank 0
and broadcast. Without a process group every helper is a no-op, so single-process code pays
nothing.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor

__all__ = ["is_distributed", "all_reduce_sum_", "broadcast_", "rank"]


def is_distributed() -> bool:
    """True when a process group with more than one rank is initialised."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def all_reduce_sum_(*tensors: Tensor) -> None:
    """Sum each tensor in place over all ranks, in one collective (tensors are packed flat)."""
    if not is_distributed() or not tensors:
        return
    flat = torch.cat([t.reshape(-1).float() for t in tensors])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    offset = 0
    for t in tensors:
        n = t.numel()
        t.copy_(flat[offset : offset + n].view_as(t))
        offset += n


def broadcast_(tensor: Tensor, src: int = 0) -> None:
    """Overwrite ``tensor`` on every rank with rank ``src``'s value."""
    if is_distributed():
        dist.broadcast(tensor, src=src)
