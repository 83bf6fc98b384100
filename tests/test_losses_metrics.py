"""Losses and metrics against their definitions."""

import math

import torch

from codec.losses import (
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
