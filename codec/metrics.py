"""Quality metrics: PSNR and MS-SSIM (images), SI-SDR and mel distance (audio), code statistics.

Every signal metric returns one value per item ``(B,)``; average as you need.
"""

from __future__ import annotations

import torch
from torch import Tensor

from codec.losses import ms_ssim
from codec.quant.base import code_metrics

__all__ = ["psnr", "ms_ssim", "si_sdr", "mel_distance", "codebook_usage"]


def psnr(x: Tensor, x_hat: Tensor, data_range: float = 1.0) -> Tensor:
    """Peak signal-to-noise ratio in dB per item; inputs ``(B, ...)`` in ``[0, data_range]``."""
    mse = (x.float() - x_hat.float()).pow(2).flatten(1).mean(1)
    return 10.0 * torch.log10(data_range**2 / mse.clamp_min(1e-12))


def si_sdr(ref: Tensor, est: Tensor, eps: float = 1e-8) -> Tensor:
    """Scale-invariant signal-to-distortion ratio in dB per item (Le Roux et al. 2019).

    Inputs ``(B, ..., T)``; each item is flattened and made zero-mean.
    """
    r = ref.float().flatten(1)
    e = est.float().flatten(1)
    r = r - r.mean(1, keepdim=True)
    e = e - e.mean(1, keepdim=True)
    scale = (e * r).sum(1, keepdim=True) / (r.pow(2).sum(1, keepdim=True) + eps)
    target = scale * r
    noise = e - target
    return 10.0 * torch.log10((target.pow(2).sum(1) + eps) / (noise.pow(2).sum(1) + eps))


def mel_distance(ref: Tensor, est: Tensor, sample_rate: int, n_fft: int = 1024, n_mels: int = 80) -> Tensor:
    """Mean absolute difference of log10 mel spectrograms per item; waveforms ``(B, C, T)``."""
    import torchaudio

    mel = torchaudio.transforms.MelSpectrogram(
        sample_rate=sample_rate, n_fft=n_fft, hop_length=n_fft // 4, n_mels=n_mels, power=1.0
    ).to(ref.device)
    a = torch.log10(mel(ref.float()).clamp_min(1e-5))
    b = torch.log10(mel(est.float()).clamp_min(1e-5))
    return (a - b).abs().flatten(1).mean(1)


def codebook_usage(codes: Tensor, codebook_size: int) -> dict[str, Tensor]:
    """Perplexity and fraction of used codes over all (non-negative) entries of ``codes``."""
    flat = codes.reshape(-1)
    flat = flat[flat >= 0]
    return code_metrics(torch.bincount(flat, minlength=codebook_size), codebook_size)
