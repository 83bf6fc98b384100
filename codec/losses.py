"""Training losses: reconstruction, perceptual-structure, spectral and adversarial.

* L1 / L2 reconstruction.
* MS-SSIM (Wang, Simoncelli, Bovik 2003): loss ``1 - MS-SSIM`` for images in ``[0, 1]``.
* Multi-resolution mel loss (DAC, arXiv 2306.06546) and multi-resolution STFT loss
  (Yamamoto et al. 2020, Parallel WaveGAN, arXiv 1910.11480) for waveforms, with torchaudio
  transforms.
* Hinge adversarial losses and EnCodec's relative feature-matching loss.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "reconstruction_loss",
    "ssim",
    "ms_ssim",
    "MultiResolutionMelLoss",
    "MultiResolutionSTFTLoss",
    "hinge_discriminator_loss",
    "hinge_generator_loss",
    "feature_matching_loss",
]

MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)


def reconstruction_loss(x: Tensor, x_hat: Tensor, kind: str = "l1") -> Tensor:
    """``"l1"`` (mean absolute) or ``"l2"`` (mean squared) error."""
    if kind == "l1":
        return F.l1_loss(x_hat, x)
    if kind == "l2":
        return F.mse_loss(x_hat, x)
    raise ValueError(f"kind must be 'l1' or 'l2', got {kind!r}")


def _gaussian_window(size: int, sigma: float, channels: int, device: torch.device) -> Tensor:
    coords = torch.arange(size, dtype=torch.float32, device=device) - (size - 1) / 2
    g = torch.exp(-(coords**2) / (2 * sigma**2))
    g = g / g.sum()
    return (g[:, None] * g[None, :]).expand(channels, 1, size, size).contiguous()


def _ssim_parts(x: Tensor, y: Tensor, window: Tensor, data_range: float) -> tuple[Tensor, Tensor]:
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    ch = x.shape[1]
    mu_x = F.conv2d(x, window, groups=ch)
    mu_y = F.conv2d(y, window, groups=ch)
    sxx = F.conv2d(x * x, window, groups=ch) - mu_x**2
    syy = F.conv2d(y * y, window, groups=ch) - mu_y**2
    sxy = F.conv2d(x * y, window, groups=ch) - mu_x * mu_y
    cs = (2 * sxy + c2) / (sxx + syy + c2)
    lum = (2 * mu_x * mu_y + c1) / (mu_x**2 + mu_y**2 + c1)
    return (lum * cs).flatten(1).mean(1), cs.flatten(1).mean(1)


def ssim(x: Tensor, y: Tensor, data_range: float = 1.0, window_size: int = 11, sigma: float = 1.5) -> Tensor:
    """SSIM per image ``(B,)`` for ``(B, C, H, W)`` inputs (Gaussian 11x11, sigma 1.5)."""
    size = min(window_size, x.shape[-1], x.shape[-2])
    size -= (size + 1) % 2  # odd
    window = _gaussian_window(size, sigma, x.shape[1], x.device)
    return _ssim_parts(x.float(), y.float(), window, data_range)[0]


def ms_ssim(
    x: Tensor,
    y: Tensor,
    data_range: float = 1.0,
    weights: Sequence[float] = MS_SSIM_WEIGHTS,
    window_size: int = 11,
) -> Tensor:
    """Multi-scale SSIM per image ``(B,)`` for ``(B, C, H, W)`` inputs.

    Five scales for images of at least 176 px on the short side; smaller images use as many
    scales as fit (the weights of the used scales renormalised), so any size >= 1 works.
    """
    x, y = x.float(), y.float()
    short = min(x.shape[-2:])
    scales = max(1, min(len(weights), int(math.floor(math.log2(max(short, 1) / window_size))) + 1))
    w = torch.tensor(weights[:scales], device=x.device)
    w = w / w.sum()
    vals = []
    for i in range(scales):
        size = min(window_size, x.shape[-1], x.shape[-2])
        size -= (size + 1) % 2
        window = _gaussian_window(size, 1.5, x.shape[1], x.device)
        s, cs = _ssim_parts(x, y, window, data_range)
        vals.append(s.clamp_min(1e-6) if i == scales - 1 else cs.clamp_min(1e-6))
        if i < scales - 1:
            x, y = F.avg_pool2d(x, 2, ceil_mode=True), F.avg_pool2d(y, 2, ceil_mode=True)
    return torch.prod(torch.stack(vals, dim=1) ** w, dim=1)


class MultiResolutionMelLoss(nn.Module):
    """Sum over FFT sizes of ``L1(log mel)`` + ``L1(mel)`` between waveforms ``(B, 1, T)``."""

    def __init__(
        self,
        sample_rate: int,
        n_ffts: Sequence[int] = (32, 64, 128, 256, 512, 1024, 2048),
        n_mels: Sequence[int] = (5, 10, 20, 40, 80, 160, 320),
        clamp_eps: float = 1e-5,
    ) -> None:
        super().__init__()
        import torchaudio

        self.eps = clamp_eps
        self.mels = nn.ModuleList(
            [
                torchaudio.transforms.MelSpectrogram(
                    sample_rate=sample_rate, n_fft=n, hop_length=n // 4, n_mels=m, power=1.0,
                    f_min=0.0, f_max=sample_rate / 2, center=True, norm="slaney", mel_scale="slaney",
                )
                for n, m in zip(n_ffts, n_mels)
            ]
        )

    def forward(self, x: Tensor, x_hat: Tensor) -> Tensor:
        total = x.new_zeros((), dtype=torch.float32)
        for mel in self.mels:
            a, b = mel(x.float()), mel(x_hat.float())
            total = total + F.l1_loss(torch.log10(b.clamp_min(self.eps)), torch.log10(a.clamp_min(self.eps)))
            total = total + F.l1_loss(b, a)
        return total


class MultiResolutionSTFTLoss(nn.Module):
    """Spectral convergence + log-magnitude L1, averaged over FFT sizes (Parallel WaveGAN)."""

    def __init__(self, n_ffts: Sequence[int] = (512, 1024, 2048)) -> None:
        super().__init__()
        self.n_ffts = tuple(n_ffts)
        for n in self.n_ffts:
            self.register_buffer(f"window_{n}", torch.hann_window(n), persistent=False)

    def forward(self, x: Tensor, x_hat: Tensor) -> Tensor:
        total = x.new_zeros((), dtype=torch.float32)
        for n in self.n_ffts:
            window = getattr(self, f"window_{n}")
            a = torch.stft(x.reshape(-1, x.shape[-1]).float(), n, n // 4, window=window, return_complex=True).abs()
            b = torch.stft(x_hat.reshape(-1, x.shape[-1]).float(), n, n // 4, window=window, return_complex=True).abs()
            sc = torch.linalg.norm(a - b) / torch.linalg.norm(a).clamp_min(1e-7)
            mag = F.l1_loss(torch.log(b.clamp_min(1e-7)), torch.log(a.clamp_min(1e-7)))
            total = total + sc + mag
        return total / len(self.n_ffts)


def hinge_discriminator_loss(real: Sequence[Tensor], fake: Sequence[Tensor]) -> Tensor:
    """``mean(relu(1 - D(x))) + mean(relu(1 + D(x_hat)))`` averaged over sub-discriminators."""
    terms = [F.relu(1 - r).mean() + F.relu(1 + f).mean() for r, f in zip(real, fake)]
    return torch.stack(terms).mean()


def hinge_generator_loss(fake: Sequence[Tensor]) -> Tensor:
    """``mean(relu(1 - D(x_hat)))`` averaged over sub-discriminators (EnCodec's generator term)."""
    return torch.stack([F.relu(1 - f).mean() for f in fake]).mean()


def feature_matching_loss(real: Sequence[Sequence[Tensor]], fake: Sequence[Sequence[Tensor]]) -> Tensor:
    """Relative L1 between discriminator features: ``mean_l |f_l(x) - f_l(x_hat)| / mean |f_l(x)|``."""
    terms = []
    for rs, fs in zip(real, fake):
        for r, f in zip(rs, fs):
            r = r.detach()
            terms.append(F.l1_loss(f, r) / r.abs().mean().clamp_min(1e-7))
    return torch.stack(terms).mean()
