"""The modality-agnostic quantizer core.

Every quantizer maps tokens ``(B, N, D)`` to a :class:`QuantizerOutput` and exposes
``encode``/``decode``/``codebook_size``/``bits_per_token`` (see :mod:`codec.quant.base`).
Build one by name::

    from codec.quant import get_quantizer, list_quantizers
    q = get_quantizer("vq", dim=64, codebook_size=1024, update="ema", dead_code_threshold=2)
"""

from __future__ import annotations

from typing import Any, Callable

from codec.quant.base import Quantizer, QuantizerOutput, channel_first, code_metrics
from codec.quant.codebook import Codebook
from codec.registry import Registry

__all__ = [
    "Quantizer",
    "QuantizerOutput",
    "Codebook",
    "channel_first",
    "code_metrics",
    "get_quantizer",
    "list_quantizers",
    "register_quantizer",
]

_REGISTRY: Registry[Quantizer] = Registry("quantizer")


def register_quantizer(name: str) -> Callable[[Callable[..., Quantizer]], Callable[..., Quantizer]]:
    """Register a quantizer constructor taking ``dim=`` and ``codebook_size=`` keywords.

    Registering a name twice raises ``ValueError``.
    """
    return _REGISTRY.register(name)


def get_quantizer(name: str, *, dim: int, codebook_size: int, **kwargs: Any) -> Quantizer:
    """Build the quantizer registered as ``name``.

    Args:
        name: one of :func:`list_quantizers`.
        dim: token dimension ``D``.
        codebook_size: codes per codebook (``fsq``: target size its levels are derived from;
            ``rvq``: per level; ``adaptive``: with ``dim``, the capacity ``W = dim * codebook_size``).
        **kwargs: variant options (see each class).
    """
    return _REGISTRY.get(name, dim=dim, codebook_size=codebook_size, **kwargs)


def list_quantizers() -> list[str]:
    """Names of the registered quantizers, sorted."""
    return _REGISTRY.names()


def _register_builtins() -> None:
    from codec.quant.adaptive import AdaptiveQuantizer
    from codec.quant.fsq import FSQ
    from codec.quant.gumbel import GumbelQuantizer
    from codec.quant.raq import RAQ
    from codec.quant.rvq import ResidualVQ
    from codec.quant.simvq import SimVQ
    from codec.quant.vq import VectorQuantizer

    for name, cls in [
        ("vq", VectorQuantizer),
        ("gumbel", GumbelQuantizer),
        ("simvq", SimVQ),
        ("rvq", ResidualVQ),
        ("fsq", FSQ),
        ("adaptive", AdaptiveQuantizer),
        ("raq", RAQ),
    ]:
        register_quantizer(name)(cls)


_register_builtins()
