"""1D waveform encoder/decoder of the SEANet family (EnCodec, DAC).

Papers: Tagliasacchi et al. 2020 (SEANet, arXiv 2009.02095); Défossez et al. 2022, "High
Fidelity Neural Audio Compression" (EnCodec, arXiv 2210.13438); Kumar et al. 2023 (DAC,
arXiv 2306.06546) for the Snake activation ``x + sin^2(alpha x) / alpha``.

Strided convolutions with dilated residual units, weight normalisation throughout. With strides
``(2, 4, 5, 8)`` the hop is 320 samples: 75 latent frames per second at 24 kHz.

Input convention: ``(B, C, T)`` float waveforms at the model's ``sample_rate`` in ``[-1, 1]``.

* **Channels**: the network is mono. Multichannel audio is coded **per channel**: ``prepare``
  folds ``C`` into the batch and ``restore`` unfolds it, so a stereo file costs twice the tokens
  (the codec's rate accounting multiplies by the channel count).
* **Length**: any ``T >= 1``; zero-padded at the end to a multiple of the hop, cropped after
  decoding.
* **Sample rate**: :func:`resample` converts any input rate to the model's with torchaudio and
  back (``codec.io`` and the CLI apply it; the network itself only sees its own rate).
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import Tensor, nn
from torch.nn.utils.parametrizations import weight_norm

from codec.nets.base import Decoder, Encoder, NetworkPair, PadInfo

__all__ = ["AudioEncoder", "AudioDecoder", "Snake1d", "build_audio_seanet", "resample"]


def resample(wav: Tensor, from_rate: int, to_rate: int) -> Tensor:
    """Band-limited resampling of ``(..., T)`` with torchaudio (a no-op when the rates match)."""
    if from_rate == to_rate:
        return wav
    if from_rate <= 0 or to_rate <= 0:
        raise ValueError(f"sample rates must be positive, got {from_rate} -> {to_rate}")
    import torchaudio.functional as AF

    g = math.gcd(int(from_rate), int(to_rate))
    return AF.resample(wav, int(from_rate) // g, int(to_rate) // g)


class Snake1d(nn.Module):
    """Snake activation with a learned per-channel frequency ``alpha`` (DAC)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.alpha = nn.Parameter(torch.ones(1, channels, 1))

    def forward(self, x: Tensor) -> Tensor:
        return x + (self.alpha + 1e-9).reciprocal() * torch.sin(self.alpha * x).pow(2)


def _act(name: str, channels: int) -> nn.Module:
    if name == "elu":
        return nn.ELU()
    if name == "snake":
        return Snake1d(channels)
    raise ValueError(f"activation must be 'elu' or 'snake', got {name!r}")


def _conv(c_in: int, c_out: int, kernel: int, stride: int = 1, dilation: int = 1, padding: int | None = None) -> nn.Module:
    pad = dilation * (kernel - 1) // 2 if padding is None else padding
    return weight_norm(nn.Conv1d(c_in, c_out, kernel, stride=stride, dilation=dilation, padding=pad))


class ResidualUnit1d(nn.Module):
    def __init__(self, c: int, dilation: int, activation: str) -> None:
        super().__init__()
        self.body = nn.Sequential(
            _act(activation, c), _conv(c, c // 2, 7, dilation=dilation), _act(activation, c // 2), _conv(c // 2, c, 1)
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


def _down(c_in: int, c_out: int, stride: int) -> nn.Module:
    # kernel 2s, padding ceil(s/2): output length is exactly T / s for T a multiple of s
    return _conv(c_in, c_out, 2 * stride, stride=stride, padding=(stride + 1) // 2)


def _up(c_in: int, c_out: int, stride: int) -> nn.Module:
    return weight_norm(
        nn.ConvTranspose1d(
            c_in, c_out, 2 * stride, stride=stride, padding=(stride + 1) // 2, output_padding=stride % 2
        )
    )


class AudioEncoder(Encoder):
    """Mono waveform ``(B, 1, T)`` -> latent ``(B, latent_dim, T / hop)``.

    Args:
        channels: width of the first stage (doubled after each downsampling).
        strides: downsampling per stage; ``hop_length = prod(strides)``.
        latent_dim: channels of the latent map (token dimension).
        sample_rate: the rate the model works at (Hz).
        activation: ``"elu"`` (EnCodec) or ``"snake"`` (DAC).
        dilations: dilations of the residual units in each stage.
    """

    modality = "audio"

    def __init__(
        self,
        channels: int = 32,
        strides: Sequence[int] = (2, 4, 5, 8),
        latent_dim: int = 64,
        sample_rate: int = 24000,
        activation: str = "elu",
        dilations: Sequence[int] = (1, 3, 9),
    ) -> None:
        super().__init__()
        self.latent_dim = latent_dim
        self.sample_rate = int(sample_rate)
        self.strides = tuple(int(s) for s in strides)
        self.stride = math.prod(self.strides)
        layers: list[nn.Module] = [_conv(1, channels, 7)]
        c = channels
        for s in self.strides:
            layers += [ResidualUnit1d(c, d, activation) for d in dilations]
            layers += [_act(activation, c), _down(c, 2 * c, s)]
            c *= 2
        layers += [_act(activation, c), _conv(c, latent_dim, 3)]
        self.net = nn.Sequential(*layers)

    @property
    def hop_length(self) -> int:
        return self.stride

    @property
    def frame_rate_hz(self) -> float:
        return self.sample_rate / self.stride

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)

    def prepare(self, x: Tensor) -> tuple[Tensor, PadInfo]:
        if x.dim() != 3:
            raise ValueError(f"expected waveforms (B, C, T), got {tuple(x.shape)}")
        b, c, t = x.shape
        if t < 1 or c < 1:
            raise ValueError(f"empty waveform {tuple(x.shape)}")
        pad = (-t) % self.stride
        y = x.float().reshape(b * c, 1, t)  # per-channel coding
        if pad:
            y = torch.nn.functional.pad(y, (0, pad))
        return y, PadInfo(shape=(b, c, t), padded=(t + pad,))

    def restore(self, x: Tensor, info: PadInfo) -> Tensor:
        b, c, t = info.shape
        return x[..., :t].reshape(b, c, t)

    def latent_batch(self, shape: tuple[int, ...]) -> int:
        return int(shape[0]) * int(shape[1])  # per-channel coding

    def tokens_per_unit(self) -> float:
        return self.frame_rate_hz


class AudioDecoder(Decoder):
    """Latent ``(B, latent_dim, F)`` -> ``(B, 1, F * hop)`` in ``(-1, 1)`` (mirror of the encoder)."""

    def __init__(
        self,
        channels: int = 32,
        strides: Sequence[int] = (2, 4, 5, 8),
        latent_dim: int = 64,
        activation: str = "elu",
        dilations: Sequence[int] = (1, 3, 9),
    ) -> None:
        super().__init__()
        c = channels * 2 ** len(strides)
        layers: list[nn.Module] = [_conv(latent_dim, c, 7)]
        for s in reversed(tuple(strides)):
            layers += [_act(activation, c), _up(c, c // 2, s)]
            c //= 2
            layers += [ResidualUnit1d(c, d, activation) for d in dilations]
        layers += [_act(activation, c), _conv(c, 1, 7), nn.Tanh()]
        self.net = nn.Sequential(*layers)

    def forward(self, z: Tensor) -> Tensor:
        return self.net(z)


def build_audio_seanet(
    channels: int = 32,
    strides: Sequence[int] = (2, 4, 5, 8),
    latent_dim: int = 64,
    sample_rate: int = 24000,
    activation: str = "elu",
    dilations: Sequence[int] = (1, 3, 9),
) -> NetworkPair:
    """The ``audio-seanet`` pair. Defaults: 24 kHz, hop 320 (75 frames/s), 64 latent channels."""
    return NetworkPair(
        encoder=AudioEncoder(channels, strides, latent_dim, sample_rate, activation, dilations),
        decoder=AudioDecoder(channels, strides, latent_dim, activation, dilations),
        config={
            "channels": channels, "strides": list(strides), "latent_dim": latent_dim,
            "sample_rate": sample_rate, "activation": activation, "dilations": list(dilations),
        },
    )
