"""Train an audio codec: ``audio-seanet`` networks around any registered quantizer.

    python -m recipes.audio_codec --config debug                       # CPU, seconds, synthetic tones
    python -m recipes.audio_codec --config default --set data=data/audio --out runs/aud
    torchrun --nproc_per_node 4 -m recipes.audio_codec --config default --out runs/aud
    python -m recipes.audio_codec --config default --out runs/aud --resume   # continue a run
    python -m recipes.audio_codec --config default --out runs/aud --resume --stop-at 20000  # a segment

Loss: ``l1 * |x - x_hat| + mel * multi-resolution mel loss + quantizer terms`` and, from
``adv_start`` on when ``adv_weight > 0``, EnCodec's multi-scale STFT discriminator (hinge) with
feature matching. Training segments are mono, loudness-normalised, at the model's rate.
Every ``checkpoint_every`` steps a resumable checkpoint is written; at the end the weight-EMA
model is exported with :meth:`codec.model.Codec.save` to ``<out>/export``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.nn.parallel import DistributedDataParallel as DDP

from codec.losses import MultiResolutionMelLoss, feature_matching_loss, hinge_discriminator_loss, hinge_generator_loss
from codec.metrics import mel_distance, si_sdr
from codec.model import Codec
from codec.nets.discriminators import get_discriminator
from recipes.common import (
    MetricLogger,
    ModelEMA,
    cleanup_distributed,
    cosine_schedule,
    latest_checkpoint,
    load_checkpoint,
    load_config,
    restore_training_state,
    save_checkpoint,
    seed_everything,
    setup_distributed,
    training_state,
    validation_points,
)
from recipes.data import AudioData, step_seed


@dataclass(frozen=True)
class AudioCodecConfig:
    data: str = "data/audio"
    out: str = "runs/audio_codec"
    network: str = "audio-seanet"
    network_kwargs: dict[str, Any] = field(
        default_factory=lambda: dict(channels=32, strides=[2, 4, 5, 8], latent_dim=64, sample_rate=24000,
                                     activation="elu")
    )
    quantizer: str = "rvq"
    quantizer_kwargs: dict[str, Any] = field(
        default_factory=lambda: dict(codebook_size=1024, num_levels=8, quantizer_dropout=0.5,
                                     dead_code_threshold=1.0, init="kmeans")
    )
    segment_seconds: float = 1.0
    batch_size: int = 16
    steps: int = 100_000
    lr: float = 2e-4
    weight_decay: float = 0.0
    warmup_steps: int = 1000
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    recon_loss: str = "l1"  # "l1" or "l2": the per-sample reconstruction term weighted by l1_weight
    l1_weight: float = 1.0
    mel_weight: float = 1.0
    quantizer_weight: float = 1.0
    adv_weight: float = 0.0
    feature_weight: float = 0.0
    adv_start: int = 20_000
    val_fraction: float = 0.1
    val_every: int = 2000
    val_clips: int = 8
    val_seconds: float = 5.0
    log_every: int = 50
    checkpoint_every: int = 2000
    keep_checkpoints: int = 3
    max_shard_mb: int = 16
    seed: int = 0
    bf16: bool = True
    device: str = "auto"

    def validate(self) -> None:
        if self.segment_seconds <= 0:
            raise ValueError("segment_seconds must be positive")
        for name in ("steps", "batch_size", "log_every", "checkpoint_every", "val_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")
        if self.recon_loss not in ("l1", "l2"):
            raise ValueError(f"recon_loss must be 'l1' or 'l2', got {self.recon_loss!r}")
        if "codebook_size" not in self.quantizer_kwargs:
            raise ValueError("quantizer_kwargs needs codebook_size")


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
    # One bitrate-adaptive codec: a single RAQ codebook (base 1024) resized to 64 - 4096 codes:
    # 6 - 12 bits per frame at 75 frames/s = 0.45 - 0.9 kbps per channel. (RAQ inside residual
    # levels, for the higher rates, is not combined yet.)
    "raq": AudioCodecConfig(
        quantizer="raq",
        quantizer_kwargs=dict(codebook_size=1024, min_codebook_size=64, max_codebook_size=4096,
                              base_kwargs=dict(dead_code_threshold=1.0, init="kmeans")),
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


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description="Train an audio codec.")
    ap.add_argument("--config", default="default", help=f"preset ({', '.join(PRESETS)}) or a JSON file")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config field")
    ap.add_argument("--out", default=None, help="output folder (overrides the config's 'out')")
    ap.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in --out")
    ap.add_argument("--stop-at", type=int, default=None, metavar="STEP",
                    help="checkpoint and stop at this step (run long trainings in segments)")
    return ap.parse_args(argv)


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
    model.train()
    return results


def main(argv: list[str] | None = None) -> Path:
    args = parse_args(argv)
    overrides = list(args.set) + ([f"out={args.out}"] if args.out else [])
    cfg: AudioCodecConfig = load_config(AudioCodecConfig, PRESETS, args.config, overrides)
    dist = setup_distributed(cfg.device)
    device = dist.device
    out = Path(cfg.out)
    seed_everything(cfg.seed)

    model = Codec.build(cfg.network, cfg.quantizer, network_kwargs=cfg.network_kwargs,
                        quantizer_kwargs=cfg.quantizer_kwargs, recon_loss=cfg.recon_loss).to(device)
    use_adv = cfg.adv_weight > 0 or cfg.feature_weight > 0
    disc = get_discriminator("audio-msstft").to(device) if use_adv else None
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=(0.9, 0.99), weight_decay=cfg.weight_decay)
    sched = cosine_schedule(opt, cfg.warmup_steps, cfg.steps)
    opt_d = torch.optim.AdamW(disc.parameters(), lr=cfg.lr, betas=(0.5, 0.9)) if disc is not None else None
    ema = ModelEMA(model, cfg.ema_decay)

    start = 0
    ckpt = latest_checkpoint(out / "checkpoints") if args.resume else None
    if args.resume and ckpt is None and dist.is_main:
        print(f"--resume: no checkpoint under {out / 'checkpoints'}; starting from step 0")
    if ckpt is not None:
        start = restore_training_state(load_checkpoint(ckpt), model, opt, sched, ema, disc, opt_d)

    train_model = DDP(model, broadcast_buffers=False, find_unused_parameters=True) if dist.world_size > 1 else model
    train_disc = DDP(disc, broadcast_buffers=False) if disc is not None and dist.world_size > 1 else disc
    sample_rate = int(model.sample_rate)
    data = AudioData(cfg.data, sample_rate, cfg.segment_seconds, cfg.val_fraction, seed=cfg.seed)
    mel_loss = MultiResolutionMelLoss(sample_rate).to(device)
    logger = MetricLogger(out, cfg.steps, start, enabled=dist.is_main)
    autocast = dict(device_type=device.type, dtype=torch.bfloat16, enabled=cfg.bf16 and device.type == "cuda")
    if dist.is_main:
        (out / "config.json").parent.mkdir(parents=True, exist_ok=True)
        (out / "config.json").write_text(json.dumps(dataclasses.asdict(cfg), indent=2))

    stop = min(cfg.steps, args.stop_at) if args.stop_at else cfg.steps
    for step in range(start, stop):
        seed = step_seed(cfg.seed, step, dist.rank)
        torch.manual_seed(seed)  # quantizer dropout, Gumbel noise, restarts: reproducible per step
        x = data.batch(seed, cfg.batch_size).to(device, non_blocking=True)
        adv_on = disc is not None and step >= cfg.adv_start
        with torch.autocast(**autocast):
            res = train_model(x)
            x_hat, target = res.recon.float(), res.recon_target.float()  # (B*C, 1, T) padded waveforms
            terms = {}
            for name, value in res.loss.items():  # "recon" and quantizer terms (tagged "@k37" for RAQ passes)
                if name.startswith("recon"):
                    terms["l1" + name[5:]] = cfg.l1_weight * value
                else:
                    terms[name] = cfg.quantizer_weight * value
            if cfg.mel_weight > 0:
                for tag, recon in {"": res.recon, **res.extra_recons}.items():
                    terms["mel" + tag] = cfg.mel_weight * mel_loss(target, recon.float())
            if adv_on:
                logits_fake, feats_fake = train_disc(x_hat)
                with torch.no_grad():
                    _, feats_real = train_disc(target)
                terms["adv"] = cfg.adv_weight * hinge_generator_loss(logits_fake)
                terms["feature"] = cfg.feature_weight * feature_matching_loss(feats_real, feats_fake)
            loss = torch.stack([v.float() for v in terms.values()]).sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        sched.step()
        ema.update(model)
        if adv_on:
            with torch.autocast(**autocast):
                real, _ = train_disc(target)
                fake, _ = train_disc(x_hat.detach())
                d_loss = hinge_discriminator_loss(real, fake)
            opt_d.zero_grad(set_to_none=True)
            d_loss.backward()
            opt_d.step()
            terms["disc"] = d_loss.detach()

        done = step + 1
        if done % cfg.log_every == 0 or done == cfg.steps:
            values: dict[str, float] = {}
            for k, v in terms.items():  # tagged terms ("mel@k37") vary per step: log them as "mel@adapted"
                key = k.split("@")[0] + "@adapted" if "@" in k else k
                values[key] = values.get(key, 0.0) + float(v.detach())
            values.update(loss=float(loss.detach()), grad_norm=float(grad_norm), lr=sched.get_last_lr()[0])
            values.update({
                k.split("@")[0] + ("@adapted" if "@" in k else ""): float(v)
                for k, v in res.metrics.items() if k.split("@")[0] in ("perplexity", "usage", "levels_used", "codebook_size")
            })
            logger.log(done, values)
        else:
            logger.advance(done)
        if done % cfg.checkpoint_every == 0 or done in (cfg.steps, stop):
            if dist.is_main:
                save_checkpoint(out / "checkpoints", done, training_state(cfg, model, opt, sched, ema, disc, opt_d),
                                keep=cfg.keep_checkpoints, max_shard_bytes=cfg.max_shard_mb * 2**20)
        if (done % cfg.val_every == 0 or done == cfg.steps) and dist.is_main:
            logger.log(done, validate(model, data, cfg, device), split="val")

    logger.close()
    export = out / "export"
    if dist.is_main and stop == cfg.steps:
        final = Codec.build(cfg.network, cfg.quantizer, network_kwargs=cfg.network_kwargs,
                            quantizer_kwargs=cfg.quantizer_kwargs, recon_loss=cfg.recon_loss)
        final.load_state_dict({k: v.cpu() for k, v in ema.state_dict().items()})
        final.save(export, metadata={"recipe": "audio_codec", "steps": str(cfg.steps)})
    cleanup_distributed()
    return export


if __name__ == "__main__":
    main()
