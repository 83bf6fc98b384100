"""Reproduce RAQ's CIFAR10-size experiment (Seo & Kang 2024, Table 9) on our offline photos.

One RAQ model (base K = 128, trained with K~ sampled from [8, 1024]) against fixed-rate VQ-VAEs
with K~ in {16, 32, 64, 128, 256, 512, 1024} codes: same network, same steps, 32x32 crops of
the training photographs of scripts/get_data.sh (or any image folder). Every model is trained
with ``recipes.image_codec`` (so each one checkpoints, resumes and exports like any run); then
all are evaluated on fixed 32x32 tiles of the validation photos: PSNR, SSIM and code perplexity
per K~, written as ``results.csv``, ``results.md`` and, if matplotlib is installed, ``results.png``.

    python -m recipes.raq_reproduction --config cpu --out runs/raq_repro       # ~40 min on 2 CPU cores
    python -m recipes.raq_reproduction --config paper --out runs/raq_repro     # GPU scale
    python -m recipes.raq_reproduction --config cpu --out runs/raq_repro       # again: resumes / skips done models

Paper (CIFAR10, Table 9), PSNR in dB, fixed / RAQ: 25.48 / 25.18 at K~ = 1024, 23.85 / 23.91 at
128, 21.76 / 20.82 at 16.
"""

from __future__ import annotations

import argparse
import csv
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from codec.losses import ssim
from codec.metrics import codebook_usage, psnr
from codec.model import Codec
from recipes import image_codec
from recipes.common import load_config
from recipes.data import ImageData

PAPER_PSNR = {  # Table 9 (CIFAR10): fixed-rate VQ-VAE, RAQ
    16: (21.76, 20.82), 128: (23.85, 23.91), 1024: (25.48, 25.18),
}


@dataclass(frozen=True)
class ReproductionConfig:
    data: str = "data/images"
    out: str = "runs/raq_reproduction"
    sizes: list[int] = field(default_factory=lambda: [16, 32, 64, 128, 256, 512, 1024])
    base_size: int = 128
    min_size: int = 8
    max_size: int = 1024
    forcing: str = "paper"
    sample: str = "uniform"  # how training draws K~ from [min_size, max_size]: "uniform" or "log"
    steps: int = 50_000
    batch_size: int = 128
    lr: float = 2e-4
    network_kwargs: dict[str, Any] = field(
        default_factory=lambda: dict(channels=64, channel_mult=[1, 2, 2], num_res_blocks=2, factor=4,
                                     latent_dim=64, attention=False)
    )
    val_tiles: int = 1024
    device: str = "auto"
    seed: int = 0

    def validate(self) -> None:
        if not self.sizes or min(self.sizes) < 2:
            raise ValueError("sizes must be codebook sizes >= 2")
        if not self.min_size <= self.base_size <= self.max_size:
            raise ValueError("need min_size <= base_size <= max_size")


PRESETS = {
    "paper": ReproductionConfig(),
    # What 2 CPU cores finish in about 40 minutes: a narrower network and far fewer steps.
    "cpu": ReproductionConfig(
        steps=600, batch_size=32,
        network_kwargs=dict(channels=32, channel_mult=[1, 2, 2], num_res_blocks=1, factor=4, latent_dim=64,
                            attention=False),
        val_tiles=512,
    ),
    "debug": ReproductionConfig(
        data="synthetic", sizes=[8, 16, 32], base_size=16, min_size=4, max_size=32, forcing="official",
        steps=4, batch_size=4,
        network_kwargs=dict(channels=8, channel_mult=[1, 2], num_res_blocks=1, factor=4, latent_dim=8, attention=False),
        val_tiles=8,
    ),
}


def _train(cfg: ReproductionConfig, name: str, quantizer: str, qkw: dict[str, Any], out: Path) -> Path:
    run = out / name
    export = run / "export"
    if (export / "model.safetensors").is_file():
        return export
    overrides = {
        "data": cfg.data, "out": str(run), "quantizer": quantizer, "quantizer_kwargs": qkw,
        "network_kwargs": cfg.network_kwargs, "crop": 32, "batch_size": cfg.batch_size, "steps": cfg.steps,
        "lr": cfg.lr, "warmup_steps": min(500, cfg.steps // 10 + 1), "recon_loss": "l2", "ms_ssim_weight": 0.0,
        "max_side": 512, "val_every": max(cfg.steps // 4, 1), "val_images": 4,
        "checkpoint_every": max(cfg.steps // 5, 1), "log_every": max(cfg.steps // 50, 1),
        "device": cfg.device, "seed": cfg.seed, "bf16": True,
    }
    args = ["--config", "default", "--resume"]
    for key, value in overrides.items():
        args += ["--set", f"{key}={json.dumps(value) if isinstance(value, (dict, list)) else value}"]
    return image_codec.main(args)


def _tiles(data: ImageData, limit: int) -> torch.Tensor:
    """Non-overlapping 32x32 tiles of the validation images, in a fixed order."""
    tiles = []
    for img in data.val_images(10_000) or [data.batch(0, 1)]:
        h, w = img.shape[-2:]
        for y in range(0, h - 31, 32):
            for x in range(0, w - 31, 32):
                tiles.append(img[0, :, y : y + 32, x : x + 32])
    if not tiles:
        raise ValueError("no validation image is 32x32 or larger")
    step = max(1, len(tiles) // limit)
    return torch.stack(tiles[::step][:limit])


@torch.no_grad()
def _evaluate(model: Codec, tiles: torch.Tensor, rate: str, k: int, device: torch.device) -> dict[str, float]:
    model.eval().to(device)
    p_sum = s_sum = 0.0
    codes = []
    for batch in tiles.split(256):
        batch = batch.to(device)
        enc = model.encode(batch, rate)
        x_hat = model.decode(enc)
        p_sum += float(psnr(batch, x_hat).sum())
        s_sum += float(ssim(batch, x_hat).sum())
        codes.append(enc.codes.reshape(-1).cpu())
    usage = codebook_usage(torch.cat(codes), k)
    n = tiles.shape[0]
    return {"psnr": p_sum / n, "ssim": s_sum / n, "perplexity": float(usage["perplexity"])}


def main(argv: list[str] | None = None) -> Path:
    ap = argparse.ArgumentParser(description="RAQ vs fixed-rate VQ-VAEs on 32x32 photo crops.")
    ap.add_argument("--config", default="cpu", help=f"preset ({', '.join(PRESETS)}) or a JSON file")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    overrides = list(args.set) + ([f"out={args.out}"] if args.out else [])
    cfg: ReproductionConfig = load_config(ReproductionConfig, PRESETS, args.config, overrides)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    device = torch.device("cuda" if cfg.device in ("auto", "cuda") and torch.cuda.is_available() else "cpu")

    base_kw = dict(dead_code_threshold=1.0, init="kmeans")
    raq_export = _train(cfg, "raq", "raq", dict(
        codebook_size=cfg.base_size, min_codebook_size=cfg.min_size, max_codebook_size=cfg.max_size,
        rate_points=sorted(set(cfg.sizes) | {cfg.base_size}), forcing=cfg.forcing, sample=cfg.sample,
        base_kwargs=base_kw,
    ), out)
    fixed_exports = {k: _train(cfg, f"fixed-k{k}", "vq", dict(codebook_size=k, **base_kw), out) for k in cfg.sizes}

    data = ImageData(cfg.data, crop=32, max_side=512, seed=cfg.seed)
    tiles = _tiles(data, cfg.val_tiles)
    raq = Codec.load(raq_export)
    rows = []
    for k in cfg.sizes:
        fixed = _evaluate(Codec.load(fixed_exports[k]), tiles, "full", k, device)
        adapted = _evaluate(raq, tiles, f"k{k}", k, device)
        paper = PAPER_PSNR.get(k, (None, None))
        rows.append({
            "codebook_size": k,
            "fixed_psnr": fixed["psnr"], "raq_psnr": adapted["psnr"], "gap_db": fixed["psnr"] - adapted["psnr"],
            "fixed_ssim": fixed["ssim"], "raq_ssim": adapted["ssim"],
            "fixed_perplexity": fixed["perplexity"], "raq_perplexity": adapted["perplexity"],
            "paper_fixed_psnr": paper[0], "paper_raq_psnr": paper[1],
        })
    with (out / "results.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    lines = [
        f"RAQ reproduction: {len(tiles)} validation tiles of 32x32, {cfg.steps} steps per model, "
        f"batch {cfg.batch_size}, device {device.type}, config `{args.config}`, RAQ K~ sampling "
        f"{cfg.sample}, forcing {cfg.forcing}.",
        "",
        "| K~ | fixed PSNR | RAQ PSNR | gap (dB) | fixed SSIM | RAQ SSIM | fixed ppl | RAQ ppl | paper fixed / RAQ PSNR |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        paper = f"{r['paper_fixed_psnr']} / {r['paper_raq_psnr']}" if r["paper_fixed_psnr"] else "-"
        lines.append(
            f"| {r['codebook_size']} | {r['fixed_psnr']:.2f} | {r['raq_psnr']:.2f} | {r['gap_db']:+.2f} | "
            f"{r['fixed_ssim']:.3f} | {r['raq_ssim']:.3f} | {r['fixed_perplexity']:.1f} | {r['raq_perplexity']:.1f} | {paper} |"
        )
    worst = max(rows, key=lambda r: r["gap_db"])
    lines += ["", f"Largest gap (fixed minus RAQ): {worst['gap_db']:+.2f} dB at K~ = {worst['codebook_size']} "
                  f"(target: within 0.5 dB everywhere)."]
    (out / "results.md").write_text("\n".join(lines) + "\n")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        ks = [r["codebook_size"] for r in rows]
        fig, ax = plt.subplots(figsize=(5, 3.5))
        ax.plot(ks, [r["fixed_psnr"] for r in rows], "o-", label="fixed-rate VQ-VAE")
        ax.plot(ks, [r["raq_psnr"] for r in rows], "s-", label=f"RAQ (one model, K={cfg.base_size})")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("codebook size K~")
        ax.set_ylabel("PSNR (dB)")
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        fig.savefig(out / "results.png", dpi=120)
    except ImportError:
        pass
    print("\n".join(lines))
    return out


if __name__ == "__main__":
    main()
