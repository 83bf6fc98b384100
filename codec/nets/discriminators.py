"""Discriminators for adversarial training (optional in the recipes).

* ``audio-msstft``: the multi-scale STFT discriminator of EnCodec (Défossez et al. 2022,
  arXiv 2210.13438): one 2D conv net per STFT resolution, over real and imaginary parts.
* ``image-patchgan``: the PatchGAN of pix2pix (Isola et al. 2017, arXiv 1611.07004), as used by
  VQGAN, with GroupNorm instead of BatchNorm so it behaves the same under DDP and small batches.

Every discriminator returns ``(logits, features)``: a list of logit maps (one per sub-network)
and, for each sub-network, the list of its intermediate feature maps (for feature matching).
"""

from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import torch
from torch import Tensor, nn
from torch.nn.utils.parametrizations import weight_norm

from codec.registry import Registry

__all__ = [
    "MultiScaleSTFTDiscriminator",
    "PatchGANDiscriminator",
    "get_discriminator",
    "list_discriminators",
]

_REGISTRY: Registry[nn.Module] = Registry("discriminator")


def get_discriminator(name: str, **kwargs: Any) -> nn.Module:
    return _REGISTRY.get(name, **kwargs)


def list_discriminators() -> list[str]:
    return _REGISTRY.names()


def _register(name: str) -> Callable[[type], type]:
    def deco(cls: type) -> type:
        _REGISTRY.register(name)(cls)
        return cls

    return deco


class _STFTDiscriminator(nn.Module):
    def __init__(self, n_fft: int, channels: int, dilations: Sequence[int] = (1, 2, 4)) -> None:
        super().__init__()
        self.n_fft = n_fft
        self.hop = n_fft // 4
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)
        convs = [weight_norm(nn.Conv2d(2, channels, (3, 9), padding=(1, 4)))]
        for d in dilations:
            convs.append(weight_norm(nn.Conv2d(channels, channels, (3, 9), stride=(1, 2), dilation=(d, 1), padding=(d, 4))))
        convs.append(weight_norm(nn.Conv2d(channels, channels, (3, 3), padding=(1, 1))))
        self.convs = nn.ModuleList(convs)
        self.post = weight_norm(nn.Conv2d(channels, 1, (3, 3), padding=(1, 1)))
        self.act = nn.LeakyReLU(0.2)

    def forward(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:
        spec = torch.stft(
            x.squeeze(1).float(), self.n_fft, self.hop, window=self.window, normalized=True, return_complex=True
        )  # (B, F, frames)
        h = torch.stack([spec.real, spec.imag], dim=1).transpose(2, 3)  # (B, 2, frames, F)
        feats = []
        for conv in self.convs:
            h = self.act(conv(h))
            feats.append(h)
        return self.post(h), feats


@_register("audio-msstft")
class MultiScaleSTFTDiscriminator(nn.Module):
    """STFT discriminators at several FFT sizes; input ``(B, 1, T)`` waveforms."""

    def __init__(self, channels: int = 32, n_ffts: Sequence[int] = (2048, 1024, 512, 256, 128)) -> None:
        super().__init__()
        self.discriminators = nn.ModuleList([_STFTDiscriminator(n, channels) for n in n_ffts])

    def forward(self, x: Tensor) -> tuple[list[Tensor], list[list[Tensor]]]:
        logits, feats = [], []
        for d in self.discriminators:
            lg, ft = d(x)
            logits.append(lg)
            feats.append(ft)
        return logits, feats


@_register("image-patchgan")
class PatchGANDiscriminator(nn.Module):
    """``n_layers`` strided 4x4 convs; one logit per overlapping patch. Input ``(B, C, H, W)``."""

    def __init__(self, in_channels: int = 3, channels: int = 64, n_layers: int = 3) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Sequential(nn.Conv2d(in_channels, channels, 4, 2, 1), nn.LeakyReLU(0.2))]
        c = channels
        for i in range(1, n_layers + 1):
            c_next = channels * min(2**i, 8)
            stride = 2 if i < n_layers else 1
            layers.append(
                nn.Sequential(
                    nn.Conv2d(c, c_next, 4, stride, 1, bias=False),
                    nn.GroupNorm(math.gcd(32, c_next), c_next),
                    nn.LeakyReLU(0.2),
                )
            )
            c = c_next
        self.layers = nn.ModuleList(layers)
        self.post = nn.Conv2d(c, 1, 4, 1, 1)

    def forward(self, x: Tensor) -> tuple[list[Tensor], list[list[Tensor]]]:
        h = x * 2.0 - 1.0  # images in [0, 1], like the codec's inputs
        feats = []
        for layer in self.layers:
            h = layer(h)
            feats.append(h)
        return [self.post(h)], [feats]
