"""Training losses: reconstruction, perceptual-structure, spectral and adversarial.

* L1 / L2 reconstruction.
* MS-SSIM (Wang, Simoncelli, Bovik 2003): loss ``1 - MS-SSIM`` for images in ``[0, 1]``.
* Multi-resolution mel loss (DAC, arXiv 2306.06546) and multi-resolution STFT loss
  (Yamamoto et al. 2020, Parallel WaveGAN, arXiv 1910.11480) for waveforms, with torchaudio
  transforms.
* A loudness-disturbance loss after the perceptual model of PESQ (ITU-T P.862; Rix et al. 2001):
  Bark-band power, Zwicker loudness, symmetric and asymmetric disturbances with a dead zone, an
  L6 norm over 320 ms and an L2 over time. Formula-based bands and hearing threshold, no time
  alignment: a training loss, not a PESQ score.
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
    "LoudnessDisturbanceLoss",
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


def _bark(f_hz: Tensor) -> Tensor:
    """Traunmüller's critical-band rate in Bark."""
    return 26.81 * f_hz / (1960.0 + f_hz) - 0.53


def _hearing_threshold_db(f_hz: Tensor) -> Tensor:
    """Terhardt's threshold in quiet, dB SPL."""
    f = (f_hz / 1000.0).clamp_min(0.02)
    return 3.64 * f ** -0.8 - 6.5 * torch.exp(-0.6 * (f - 3.3) ** 2) + 1e-3 * f**4


class LoudnessDisturbanceLoss(nn.Module):
    """PESQ's disturbance terms as a differentiable loss between waveforms ``(B, 1, T)``.

    The perceptual model of P.862 (Rix, Beerends, Hollier, Hekstra 2001): 32 ms Hann frames with
    50 % overlap; power in ``n_bands`` bands of equal width in Bark between ``f_min_hz`` and
    ``f_max_hz``; both signals brought to the same mean power (an overall gain is not an error);
    the reference's bands equalised towards the degraded signal's long-term spectrum and the
    degraded frames towards the reference's short-term power (both clamped, as P.862 does);
    Zwicker loudness ``((0.5 + 0.5 P / P0)^0.23 - 1) P0^0.23`` above the hearing threshold ``P0``
    (Terhardt's curve, the mean band power placed at ``band_level_db`` SPL); the loudness
    difference less a dead zone of a quarter of the smaller loudness. Per frame: the L2 over bands
    (symmetric) and the L1 of the difference scaled by ``(P_deg / P_ref)^1.2`` where that is at
    least 3, capped at 12 (asymmetric: added energy weighs more than missing energy). Over time:
    L6 over 20-frame windows (320 ms, half overlap), then L2. The loss is
    ``0.1 d_sym + 0.0309 d_asym``, P.862's combination. Bands and threshold are formulas, not
    P.862's tables, and there is no time alignment: use it as a training term beside a spectral
    loss, and score with a real PESQ.

    Shapes: ``x``, ``x_hat`` ``(B, 1, T)`` (or ``(B, T)``) -> a scalar.
    """

    def __init__(self, sample_rate: int, n_bands: int = 49, f_min_hz: float = 100.0, f_max_hz: float = 8000.0,
                 band_level_db: float = 62.0) -> None:
        super().__init__()
        self.n_fft = max(32, round(0.032 * sample_rate))
        self.register_buffer("window", torch.hann_window(self.n_fft), persistent=False)
        freqs = torch.arange(self.n_fft // 2 + 1) * sample_rate / self.n_fft
        f_max_hz = min(f_max_hz, sample_rate / 2)
        edges = torch.linspace(float(_bark(torch.tensor(f_min_hz))), float(_bark(torch.tensor(f_max_hz))), n_bands + 1)
        z = _bark(freqs)
        band = torch.bucketize(z, edges) - 1
        inside = (band >= 0) & (band < n_bands) & (freqs >= f_min_hz) & (freqs <= f_max_hz)
        fbank = torch.zeros(n_bands, freqs.numel())
        fbank[band[inside], torch.nonzero(inside).squeeze(1)] = 1.0
        if bool((fbank.sum(1) == 0).any()):  # a band narrower than a bin: take the nearest bin
            centres = 0.5 * (edges[1:] + edges[:-1])
            for k in torch.nonzero(fbank.sum(1) == 0).squeeze(1).tolist():
                fbank[k, int((z - centres[k]).abs().argmin())] = 1.0
        self.register_buffer("fbank", fbank, persistent=False)
        centre_hz = (fbank * freqs).sum(1) / fbank.sum(1)
        threshold = 10.0 ** ((_hearing_threshold_db(centre_hz) - band_level_db) / 10.0)
        self.register_buffer("threshold", threshold, persistent=False)
        # P.862's loudness exponent, a little larger below 4 Bark
        exponent = 0.23 * (6.0 / (_bark(centre_hz) + 2.0)).clamp(1.0, 2.0) ** 0.15
        self.register_buffer("exponent", exponent, persistent=False)

    def _band_power(self, x: Tensor) -> Tensor:
        spec = torch.stft(x, self.n_fft, self.n_fft // 2, window=self.window, center=False, return_complex=True)
        return torch.einsum("kf,bfn->bnk", self.fbank, spec.real**2 + spec.imag**2)  # (B, N, K)

    def _loudness(self, p: Tensor) -> Tensor:
        t, e = self.threshold, self.exponent
        return t**e * ((0.5 + 0.5 * p.clamp_min(t) / t) ** e - 1.0)

    def forward(self, x: Tensor, x_hat: Tensor) -> Tensor:
        x, x_hat = x.reshape(-1, x.shape[-1]).float(), x_hat.reshape(-1, x_hat.shape[-1]).float()
        if x.shape[-1] < self.n_fft:
            raise ValueError(f"signals must be at least {self.n_fft} samples long, got {x.shape[-1]}")
        ref, deg = self._band_power(x), self._band_power(x_hat)
        ref = ref / ref.mean(dim=(1, 2), keepdim=True).clamp_min(1e-12)
        deg = deg / deg.mean(dim=(1, 2), keepdim=True).clamp_min(1e-12)
        audible = ref > 100.0 * self.threshold  # the bands and frames P.862 averages over
        floor = 1e3 * self.threshold
        long_term_ref, long_term_deg = (p.mul(audible).mean(dim=1, keepdim=True) for p in (ref, deg))
        ref = ref * ((long_term_deg + floor) / (long_term_ref + floor)).clamp(0.01, 100.0)
        frame_ref, frame_deg = (p.mul(p > self.threshold).sum(dim=2, keepdim=True) for p in (ref, deg))
        gain = ((frame_ref + 1e-3) / (frame_deg + 1e-3)).clamp(3e-4, 5.0)
        gain = torch.cat([gain[:, :1], 0.8 * gain[:, 1:] + 0.2 * gain[:, :-1]], dim=1)
        deg = deg * gain
        loud_ref, loud_deg = self._loudness(ref), self._loudness(deg)
        diff = loud_deg - loud_ref
        dead = 0.25 * torch.minimum(loud_ref, loud_deg)
        diff = diff.sign() * (diff.abs() - dead).clamp_min(0.0)
        ratio = ((deg + 50.0 * self.threshold) / (ref + 50.0 * self.threshold)) ** 1.2
        ratio = torch.where(ratio < 3.0, torch.zeros_like(ratio), ratio.clamp_max(12.0))
        n_bands = diff.shape[-1]
        d_sym = diff.square().mean(dim=-1).clamp_min(1e-12).sqrt() * n_bands**0.5  # (B, N)
        d_asym = (diff.abs() * ratio).sum(dim=-1)
        total = x.new_zeros(())
        for weight, d in ((0.1, d_sym), (0.0309, d_asym)):
            n = d.shape[1]
            size = min(20, n)
            windows = d.unfold(1, size, max(1, size // 2))  # (B, W, size)
            per_window = windows.pow(6).mean(dim=-1).clamp_min(1e-30).pow(1.0 / 6.0)
            total = total + weight * per_window.square().mean(dim=1).sqrt().mean()
        return total


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
