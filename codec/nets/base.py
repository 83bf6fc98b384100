"""What every modality network pair provides to the :class:`~codec.model.Codec`.

An encoder maps a signal batch to a channel-first latent map ``(B, D, *S)``; the decoder maps the
(quantized) latent map back. Everything modality-specific lives on this side of the quantizer:
padding to the network's stride, cropping back, channel handling and the frame geometry needed
to turn bits per token into a rate.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import Tensor, nn

__all__ = ["NetworkPair", "PadInfo", "Encoder", "Decoder"]


@dataclass(frozen=True)
class PadInfo:
    """How a batch was padded/folded before encoding, so the decoder output can be restored."""

    shape: tuple[int, ...]  # original (B, C, *spatial)
    padded: tuple[int, ...]  # padded spatial size


class Encoder(nn.Module):
    """Base for modality encoders.

    Attributes:
        modality: ``"image"`` or ``"audio"`` (names the rate unit: bits per pixel or kbps).
        latent_dim: channels ``D`` of the latent map (the token dimension).
        stride: total downsampling per spatial axis (image ``factor``, audio ``hop_length``).
    """

    modality: str
    latent_dim: int
    stride: int

    def prepare(self, x: Tensor) -> tuple[Tensor, PadInfo]:  # pragma: no cover - abstract
        """Validate, fold channels as the network needs and pad to a multiple of ``stride``."""
        raise NotImplementedError

    def restore(self, x: Tensor, info: PadInfo) -> Tensor:  # pragma: no cover - abstract
        """Undo :meth:`prepare` on a decoder output: crop and unfold to ``info.shape``."""
        raise NotImplementedError

    def latent_batch(self, shape: tuple[int, ...]) -> int:
        """Batch size of the latent map for a signal of ``shape`` (audio folds channels into it)."""
        return int(shape[0])

    def tokens_per_unit(self) -> float:  # pragma: no cover - abstract
        """Tokens per pixel (image) or per second of one channel (audio)."""
        raise NotImplementedError


class Decoder(nn.Module):
    """Base for modality decoders: ``(B, D, *S)`` latent -> ``(B, C, *spatial)`` signal."""


@dataclass
class NetworkPair:
    """An encoder and its matching decoder, as built by :func:`codec.nets.get_network`."""

    encoder: Encoder
    decoder: Decoder
    config: dict[str, Any]
