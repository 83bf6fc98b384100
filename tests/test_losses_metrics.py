"""Losses and metrics against their definitions."""

import math

import torch

import pytest

from codec.losses import (
    LoudnessDisturbanceLoss,
    MultiResolutionMelLoss,
    MultiResolutionSTFTLoss,
    feature_matching_loss,
    hinge_discriminator_loss,
    hinge_generator_loss,
    ms_ssim,
    reconstruction_loss,
    ssim,
)
from codec.metrics import codebook_usage, mel_distance, psnr, si_sdr


def test_psnr_matches_definition():
    x = torch.rand(2, 3, 8, 8)
    y = x + 0.1
    torch.testing.assert_close(psnr(x, y), torch.full((2,), 20.0))


def test_ssim_and_ms_ssim_behave():
    x = torch.rand(2, 3, 200, 180)
    torch.testing.assert_close(ms_ssim(x, x), torch.ones(2))
    torch.testing.assert_close(ssim(x, x), torch.ones(2))
    noisy = (x + 0.1 * torch.randn_like(x)).clamp(0, 1)
    noisier = (x + 0.3 * torch.randn_like(x)).clamp(0, 1)
    assert (ms_ssim(x, noisy) > ms_ssim(x, noisier)).all()
    assert (ms_ssim(x, noisy) < 1).all()
    # tiny images use fewer scales but still work
    small = torch.rand(1, 3, 3, 2)
    assert torch.isfinite(ms_ssim(small, small.flip(-1))).all()


def test_si_sdr_is_scale_invariant_and_matches_snr():
    ref = torch.randn(3, 1000)
    noise = torch.randn(3, 1000)
    noise = noise - (noise * ref).sum(1, keepdim=True) / (ref * ref).sum(1, keepdim=True) * ref  # orthogonal
    est = ref + 0.1 * noise
    expected = 10 * torch.log10(ref.pow(2).sum(1) / (0.1 * noise).pow(2).sum(1))
    torch.testing.assert_close(si_sdr(ref - ref.mean(1, keepdim=True) + ref.mean(1, keepdim=True), est), expected, rtol=1e-3, atol=1e-2)
    torch.testing.assert_close(si_sdr(ref, 3.0 * est), si_sdr(ref, est), rtol=1e-4, atol=1e-4)


def test_spectral_losses_are_zero_on_identity_and_grow_with_distortion():
    x = torch.randn(2, 1, 8000) * 0.1
    mel = MultiResolutionMelLoss(16000)
    stft = MultiResolutionSTFTLoss()
    assert float(mel(x, x)) < 1e-6 and float(stft(x, x)) < 1e-6
    assert float(mel(x, 0.5 * x)) < float(mel(x, 0.1 * x))
    assert float(stft(x, x + 0.01 * torch.randn_like(x))) < float(stft(x, x + 0.1 * torch.randn_like(x)))
    assert float(mel_distance(x, x, 16000).max()) == 0.0


def _speech_like(seconds: float = 1.0, sr: int = 16000) -> torch.Tensor:
    """A harmonic tone (150 Hz, 20 harmonics) with a syllable-rate envelope: (1, 1, T)."""
    t = torch.arange(int(seconds * sr)) / sr
    tone = sum(torch.sin(2 * math.pi * 150 * h * t) / h for h in range(1, 21))
    return (0.1 * tone * (0.55 + 0.45 * torch.sin(2 * math.pi * 4 * t)))[None, None]


def test_loudness_disturbance_loss_follows_pesq_model():
    x = _speech_like()
    loss = LoudnessDisturbanceLoss(16000)
    assert float(loss(x, x)) < 1e-4
    # an overall gain is not an error (P.862 aligns levels); a dead zone forgives small changes
    assert float(loss(x, 3.0 * x)) < 1e-3
    torch.manual_seed(0)
    noise = torch.randn_like(x) * x.std()
    small, large = float(loss(x, x + 0.03 * noise)), float(loss(x, x + 0.3 * noise))
    assert 0 < small < large
    # asymmetric: energy added in the harmonics' gaps costs more than as much energy taken away
    # from the signal (here: its harmonics above 1.5 kHz)
    keep = torch.fft.rfftfreq(x.shape[-1], 1 / 16000) < 1500
    lowpassed = torch.fft.irfft(torch.fft.rfft(x) * keep, n=x.shape[-1])
    removed = x - lowpassed
    added_noise = noise / noise.norm() * removed.norm()
    assert float(loss(x, x + added_noise)) > float(loss(x, lowpassed))
    # differentiable, finite gradients, also through silence
    y = torch.cat([x, torch.zeros_like(x)], dim=-1).requires_grad_(True)
    loss(torch.cat([x, torch.zeros_like(x)], dim=-1), y + 0.03 * torch.randn_like(y)).backward()
    assert y.grad is not None and torch.isfinite(y.grad).all() and y.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="at least"):
        loss(x[..., :100], x[..., :100])



def test_narrowband_loudness_loss_hears_only_the_telephone_band():
    """Bands up to 4 kHz (as narrow-band PESQ hears 8 kHz speech): noise above them changes
    nothing, noise inside costs as the wide-band term's does."""
    x = _speech_like(sr=24000)
    wide, narrow = LoudnessDisturbanceLoss(24000), LoudnessDisturbanceLoss(24000, n_bands=42, f_max_hz=4000.0)
    torch.manual_seed(0)
    noise = torch.randn_like(x) * x.std()
    freqs = torch.fft.rfftfreq(x.shape[-1], 1 / 24000)
    high = torch.fft.irfft(torch.fft.rfft(noise) * (freqs > 5000), n=x.shape[-1])
    low = torch.fft.irfft(torch.fft.rfft(noise) * (freqs < 3000), n=x.shape[-1])
    assert float(narrow(x, x + 0.3 * high)) < 1e-5 < float(wide(x, x + 0.3 * high))
    assert float(narrow(x, x + 0.3 * low)) > float(narrow(x, x + 0.03 * low)) > 0

def test_adversarial_losses():
    real, fake = [torch.full((2, 4), 2.0)], [torch.full((2, 4), -2.0)]
    assert float(hinge_discriminator_loss(real, fake)) == 0.0
    assert math.isclose(float(hinge_generator_loss(fake)), 3.0)
    feats = [[torch.ones(2, 3), 2 * torch.ones(2, 3)]]
    assert float(feature_matching_loss(feats, feats)) == 0.0
    shifted = [[torch.ones(2, 3) * 1.5, 2 * torch.ones(2, 3)]]
    assert math.isclose(float(feature_matching_loss(feats, shifted)), 0.25)


def test_reconstruction_and_usage():
    x, y = torch.zeros(4), torch.full((4,), 0.5)
    assert float(reconstruction_loss(x, y, "l1")) == 0.5 and float(reconstruction_loss(x, y, "l2")) == 0.25
    m = codebook_usage(torch.tensor([[0, 1, -1], [1, 1, 3]]), 8)
    assert math.isclose(float(m["usage"]), 3 / 8)
