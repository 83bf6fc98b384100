"""Train an audio codec: ``audio-seanet`` networks around any registered quantizer.

    python -m recipes.audio_codec --config debug                       # CPU, seconds, synthetic tones
    python -m recipes.audio_codec --config default --set data=data/audio --out runs/aud
    torchrun --nproc_per_node 4 -m recipes.audio_codec --config default --out runs/aud
    python -m recipes.audio_codec --config default --out runs/aud --resume   # continue a run
    python -m recipes.audio_codec --config default --out runs/aud --resume --stop-at 20000  # a segment

Loss: ``l1 * |x - x_hat| + mel * multi-resolution mel loss + quantizer terms`` and, from
``adv_start`` on when ``adv_weight > 0``, EnCodec's multi-scale STFT discriminator (hinge) with
feature matching. Training segments are mono, loudness-normalised, at the model's rate. The
loop itself (DDP, bf16, EMA, checkpoints, resume, export) is :mod:`recipes.loop`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import torch
from torch import Tensor

from codec.losses import LoudnessDisturbanceLoss, MultiResolutionMelLoss
from codec.metrics import mel_distance, si_sdr
from codec.model import Codec
from recipes.common import validation_points
from recipes.data import AudioData
from recipes.loop import RecipeHooks, TrainConfig, run_recipe


@dataclass(frozen=True)
class AudioCodecConfig(TrainConfig):
    """Train an audio codec."""

    data: str = "data/audio"
    out: str = "runs/audio_codec"
    network: str = "audio-seanet"
    network_kwargs: dict[str, Any] = field(
        default_factory=lambda: dict(channels=32, strides=[2, 4, 5, 8], latent_dim=64, sample_rate=24000,
                                     activation="elu")
    )
    quantizer_kwargs: dict[str, Any] = field(
        default_factory=lambda: dict(codebook_size=1024, num_levels=8, quantizer_dropout=0.5,
                                     dead_code_threshold=1.0, init="kmeans")
    )
    segment_seconds: float = 1.0
    mel_weight: float = 1.0
    # weight of the loudness-disturbance term (codec.losses.LoudnessDisturbanceLoss, PESQ's
    # perceptual model); 0 leaves it out
    loudness_weight: float = 0.0
    # the same term over the telephone band only (42 bands, 100 Hz - 4 kHz, as narrow-band PESQ
    # hears an 8 kHz signal); 0 leaves it out
    narrowband_loudness_weight: float = 0.0
    # data mix and augmentation (recipes.data.AudioData): {"speech": 0.8, ...} by source-folder prefix
    source_weights: dict[str, float] = field(default_factory=dict)
    gain_db: float = 0.0
    telephone_prob: float = 0.0
    val_clips: int = 8
    val_seconds: float = 5.0

    def validate(self) -> None:
        super().validate()
        if self.segment_seconds <= 0:
            raise ValueError("segment_seconds must be positive")
        if self.loudness_weight < 0 or self.narrowband_loudness_weight < 0:
            raise ValueError("loudness_weight and narrowband_loudness_weight must be >= 0")


PRESETS = {
    "default": AudioCodecConfig(),
    # Runs on a CPU in seconds: tiny networks, 0.2 s segments at 16 kHz, synthetic tones unless data= is set.
    "debug": AudioCodecConfig(
        data="synthetic",
        out="runs/audio_debug",
        network_kwargs=dict(channels=4, strides=[2, 4, 5], latent_dim=8, sample_rate=16000, activation="snake"),
        quantizer_kwargs=dict(codebook_size=64, num_levels=3, quantizer_dropout=0.5, dead_code_threshold=1.0),
        segment_seconds=0.2, batch_size=4, steps=8, warmup_steps=2, val_every=4, val_clips=2, val_seconds=0.5,
        log_every=2, checkpoint_every=4, bf16=False,
    ),
    # One bitrate-adaptive codec: 8 residual levels, each a RAQ codebook (base 1024) resized to
    # 64 - 4096 codes, so rate points span 1 level x 6 bits x 75 Hz = 0.45 kbps to
    # 8 x 12 x 75 = 7.2 kbps per channel. The official-code forcing runs the generator as one LSTM
    # call (the paper's free-running feedback would cost up to 4096 sequential steps per level).
    "raq": AudioCodecConfig(
        quantizer="rvq",
        quantizer_kwargs=dict(codebook_size=1024, num_levels=8, quantizer="raq", quantizer_dropout=0.5,
                              min_codebook_size=64, max_codebook_size=4096, rate_points=[64, 256, 1024, 4096],
                              forcing="official", base_kwargs=dict(dead_code_threshold=1.0, init="kmeans")),
    ),
    # The bundled audio-v1, sized for a 2-core CPU: a narrow SEANet (16 channels, hop 320 at
    # 24 kHz) and 16 residual levels, each a RAQ codebook (base 1024) resized to 64, 256 or 1024
    # codes, so rate points span 1 x 6 bits x 75 Hz = 0.45 kbps to 16 x 10 x 75 = 12 kbps.
    # audio-v1 ran this schedule for 1,400 steps, then was resumed with longer ones
    # (--set steps=4500, then steps=5400; see its model card): 5,400 steps is the full schedule.
    "cpu-v1": AudioCodecConfig(
        data="data/audio",
        out="runs/audio_cpu_v1",
        network_kwargs=dict(channels=16, strides=[2, 4, 5, 8], latent_dim=64, sample_rate=24000, activation="elu"),
        quantizer_kwargs=dict(codebook_size=1024, num_levels=16, quantizer="raq", quantizer_dropout=0.5,
                              min_codebook_size=64, max_codebook_size=1024, rate_points=[64, 256, 1024],
                              forcing="official", base_kwargs=dict(dead_code_threshold=1.0, init="kmeans")),
        # the mel term's gradient norm is ~30-70 here: clipping at 1.0 would cut the step 50-fold
        segment_seconds=0.5, batch_size=8, steps=5400, warmup_steps=100, lr=5e-4, grad_clip=1000.0,
        ema_decay=0.995, val_every=350, val_clips=4, val_seconds=3.0, log_every=50, checkpoint_every=250, bf16=False,
    ),
    "raq-debug": AudioCodecConfig(
        data="synthetic",
        out="runs/audio_raq_debug",
        network_kwargs=dict(channels=4, strides=[2, 4, 5], latent_dim=8, sample_rate=16000, activation="snake"),
        quantizer="raq",
        quantizer_kwargs=dict(codebook_size=16, min_codebook_size=4, max_codebook_size=64, forcing="official",
                              base_kwargs=dict(dead_code_threshold=1.0)),
        segment_seconds=0.2, batch_size=4, steps=8, warmup_steps=2, val_every=4, val_clips=2, val_seconds=0.5,
        log_every=2, checkpoint_every=4, bf16=False,
    ),
}


# The bundled audio-v2: audio-v1 (step 5,400) fine-tuned for speech. The same network and
# quantizers; the data mix moves from ~28 % speech (drawn by duration) to 80 % speech, with
# +-10 dB level augmentation and a fifth of the segments band-limited to telephone bandwidth.
# audio-v2 ran 1,500 steps of a 4,000-step schedule, then was resumed with this one (3,000).
PRESETS["cpu-v2"] = replace(
    PRESETS["cpu-v1"], out="runs/audio_cpu_v2", init_from="runs/audio_cpu_v1",
    source_weights={"speech": 0.8, "music": 0.1, "drums": 0.1}, gain_db=10.0, telephone_prob=0.2,
    steps=3000, lr=3e-4, val_every=500, val_clips=6,
)

# The bundled audio-v3: audio-v2 (step 3,000) trained on with the same data mix, every sample
# drawing its number of levels (quantizer dropout 1.0 instead of 0.5), so the prefixes of up
# to ~6 kbps that speech targets get ~twice the share of the steps they had.
PRESETS["cpu-v3"] = replace(
    PRESETS["cpu-v2"], out="runs/audio_cpu_v3", init_from="runs/audio_cpu_v2",
    quantizer_kwargs={**PRESETS["cpu-v2"].quantizer_kwargs, "quantizer_dropout": 1.0},
    steps=3000, lr=2e-4,
)


# A decoder-only fine-tune of the published audio-v3 on the codes it writes (its encoder,
# quantizer, beam search and entropy tables unchanged, so are its files' sizes), on the same
# speech-heavy mix; every step decodes one of its rate-target points. Measured, not published: on
# 16 English speech clips mel distance fell at every point tried (k1024-n2/n4/n8: -0.003) but
# PESQ and STOI moved both ways (PESQ +0.02 / -0.04 / +0.03), and on the 8 held-out clips of all
# sources mel distance rose at 42 of 48 points and SI-SDR mostly fell (by up to 1.7 dB). It ran
# 500 steps of a 2,400-step schedule, then was resumed with this one (1,600).
PRESETS["cpu-v4"] = replace(
    PRESETS["cpu-v3"], out="runs/audio_cpu_v4", init_from="", init_model="audio-v3", train_parts="decoder",
    steps=1600, warmup_steps=50, lr=1e-4, val_every=400,
)


# The bundled audio-v4: audio-v3's decoder fine-tuned through its band-energy correction. As
# cpu-v4 (codes, entropy tables and file sizes stay audio-v3's), but the mel loss scores the
# decoded signal after the unquantized correction that files with band energies get
# (Codec.frozen_codes_forward(through_envelope=True)) instead of the raw output, so the decoder
# is trained for what those files sound like. Measured on 12 validation speech clips with band
# energies, PESQ against audio-v3: +0.006 / +0.012 / +0.023 / +0.036 at k256-n1 / k1024-n2 /
# k256-n4 / k256-n8; scoring the raw output too (raw_signal_weight=1) gave about half of that
# (+0.004 / +0.007 / +0.011 / +0.022). 1,200 steps, 22 min on a 2-core CPU.
PRESETS["cpu-v5"] = replace(
    PRESETS["cpu-v4"], out="runs/audio_cpu_v5", through_envelope=True, raw_signal_weight=0.0, steps=1200,
    val_every=600, checkpoint_every=300,
)


# The bundled audio-v5: audio-v4's decoder fine-tuned on with a loudness-disturbance term beside
# the mel loss (codec.losses.LoudnessDisturbanceLoss: PESQ's perceptual model, scoring added
# noise above missing energy and the worst 320 ms above the mean), through the band-energy
# correction as cpu-v5. Codes, entropy tables and file sizes stay audio-v3's. Measured on 8
# validation speech clips at 1.2 / 1.6 / 2.4 / 3.2 kbps rate targets, wide-band PESQ against
# audio-v4: +0.044 / +0.036 / +0.042 / +0.033 (STOI -0.002 to -0.006); the same 800 steps
# without the term (cpu-v5 resumed from audio-v4) gave +0.008 / +0.008 / +0.015 / +0.011
# (STOI -0.000 to +0.003). 800 steps, 14 min on a 2-core CPU.
PRESETS["cpu-v6"] = replace(
    PRESETS["cpu-v5"], out="runs/audio_cpu_v6", init_model="audio-v4", loudness_weight=1.0, steps=800,
    val_every=400, checkpoint_every=200,
)


# The bundled audio-v6: audio-v5's decoder fine-tuned on with the loudness-disturbance term also
# over the telephone band (42 bands up to 4 kHz, narrow-band PESQ's view of 8 kHz speech) beside
# the wide-band one. Measured on 8 validation speech clips at 1.2 / 1.4 / 1.6 / 2.4 / 3.2 kbps
# rate targets against audio-v5: wide-band PESQ +0.004 / +0.013 / +0.003 / +0.035 / +0.035,
# telephone (8 kHz) PESQ-nb +0.012 / +0.026 / +0.014 / +0.034 / +0.031, STOI -0.004 to -0.007;
# the same 800 steps with the wide-band term alone gave wide-band -0.007 / -0.004 / +0.001 /
# +0.018 / -0.006 and telephone -0.001 / +0.004 / -0.003 / +0.009 / +0.002. 800 steps, 14 min on
# a 2-core CPU.
PRESETS["cpu-v7"] = replace(
    PRESETS["cpu-v6"], out="runs/audio_cpu_v7", init_model="audio-v5", narrowband_loudness_weight=1.0,
)


# A low-rate decoder: the bundled audio-v12's decoder (audio-v5's) fine-tuned as cpu-v7 but on the
# codes of its one-level points only, the codes that files at ~0.8 kbps are made of (92-96 % of
# their positions code one level). Measured, not published (bench/decoder_swap.py, 6 validation
# speech clips): decoding audio-v12's own files (their band energies measured against its decoder)
# at 0.8 kbps, PESQ +0.264 at 8 kHz (6 of 6 clips) and +0.164 wide-band (6 of 6), STOI -0.008,
# mel distance +0.05 to +0.10; at 1.2 kbps (a third of the positions two or three levels deep)
# PESQ +0.017 / +0.051 but STOI -0.028 / -0.029; files written with it as the encoder's decoder
# too gain less (+0.076 / +0.039 at 0.8 kbps) and lose 0.04-0.05 at 1.2 kbps. So it is a decoder
# for one-level codes beside the model's, not a replacement. 600 steps, 47 min on a 2-core CPU
# shared with an evaluation.
PRESETS["cpu-v8"] = replace(
    PRESETS["cpu-v7"], out="runs/audio_cpu_v8", init_model="audio-v12", train_points=["k64-n1", "k256-n1", "k1024-n1"],
    steps=600, val_every=300, checkpoint_every=150,
)


@torch.no_grad()
def validate(model: Codec, data: AudioData, cfg: AudioCodecConfig, device: torch.device) -> dict[str, float]:
    """SI-SDR / mel distance of validation excerpts at up to four rate points (lowest to highest)."""
    model.eval()
    points = model.rate_points()
    results: dict[str, float] = {}
    clips = data.val_clips(cfg.val_clips, cfg.val_seconds)
    for point in validation_points(points):
        sdr = mel = 0.0
        for wav in clips:
            wav = wav.to(device)
            y = model.decode(model.encode(wav, point.name))
            sdr += float(si_sdr(wav, y).mean())
            mel += float(mel_distance(wav, y, data.sample_rate).mean())
        if clips:
            results[f"si_sdr_{point.name}"] = sdr / len(clips)
            results[f"mel_{point.name}"] = mel / len(clips)
    return results


def _signal_losses(cfg: AudioCodecConfig, model: Codec, device: torch.device) -> Callable[[Tensor, Tensor], dict[str, Tensor]]:
    mel = MultiResolutionMelLoss(int(model.sample_rate)).to(device)
    loudness = LoudnessDisturbanceLoss(int(model.sample_rate)).to(device) if cfg.loudness_weight > 0 else None
    narrowband = (
        LoudnessDisturbanceLoss(int(model.sample_rate), n_bands=42, f_max_hz=4000.0).to(device)
        if cfg.narrowband_loudness_weight > 0 else None
    )

    def losses(target: Tensor, recon: Tensor) -> dict[str, Tensor]:
        terms = {"mel": cfg.mel_weight * mel(target, recon)} if cfg.mel_weight > 0 else {}
        if loudness is not None:
            terms["loudness"] = cfg.loudness_weight * loudness(target, recon)
        if narrowband is not None:
            terms["loudness_nb"] = cfg.narrowband_loudness_weight * narrowband(target, recon)
        return terms

    return losses


HOOKS = RecipeHooks(
    name="audio_codec",
    discriminator="audio-msstft",
    make_data=lambda cfg, model: AudioData(
        cfg.data, int(model.sample_rate), cfg.segment_seconds, cfg.val_fraction, seed=cfg.seed,
        source_weights=cfg.source_weights, gain_db=cfg.gain_db, telephone_prob=cfg.telephone_prob,
    ),
    make_signal_losses=_signal_losses,
    to_discriminator=lambda x: x,
    validate=validate,
)


def main(argv: list[str] | None = None) -> Path:
    """Train (or resume) an audio codec; returns the export folder."""
    return run_recipe(AudioCodecConfig, PRESETS, HOOKS, argv)


if __name__ == "__main__":
    main()

