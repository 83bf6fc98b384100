"""Which quantizer to put under the image codec: a short, equal-budget ablation.

Trains the image network of a recipe preset (default ``cpu-v1``: 32 channels, factor 8, a
32-dim latent) with one quantizer level of ``K`` codes per variant -- EMA codebook with the
straight-through estimator, EMA with the rotation trick, codebook loss with the rotation trick,
SimVQ -- for the same steps, data, seed and learning rate, then reports each run's validation
PSNR / MS-SSIM (whole validation images) and the code usage and perplexity of its last logged
steps. Nominal rate is the same for all (``log2 K`` bits per token).

    python bench/quantizer_ablation.py --steps 400 --json bench/results/quantizer_ablation_cpu.json
"""

from __future__ import annotations

import argparse
import csv
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

VARIANTS = {
    "vq-ema-ste": ("vq", dict(update="ema", estimator="ste", init="kmeans", dead_code_threshold=1.0)),
    "vq-ema-rotation": ("vq", dict(update="ema", estimator="rotation", init="kmeans", dead_code_threshold=1.0)),
    "vq-loss-rotation": ("vq", dict(update="loss", estimator="rotation", init="kmeans", dead_code_threshold=1.0)),
    "simvq": ("simvq", dict()),
}


def _last(rows: list[dict[str, str]], kind: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for row in rows:
        if row.get("split") == kind:
            out.update({k: float(v) for k, v in row.items() if v not in ("", None) and k not in ("step", "split")})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", default="cpu-v1")
    ap.add_argument("--codebook-size", type=int, default=256)
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--crop", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0, help="data order and initialisation (repeat with others for the spread)")
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--threads", type=int, default=0, help="torch threads per run (0: torch's default)")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.variants.split(","):
            quantizer, kwargs = VARIANTS[name]
            out = Path(tmp) / name
            cfg = {
                "preset": args.preset, "out": str(out), "quantizer": quantizer,
                "quantizer_kwargs": {"codebook_size": args.codebook_size, **kwargs},
                "steps": args.steps, "warmup_steps": max(1, args.steps // 10), "crop": args.crop,
                "val_every": args.steps, "seed": args.seed, "checkpoint_every": args.steps, "log_every": max(1, args.steps // 20),
            }
            cfg_path = Path(tmp) / f"{name}.json"
            cfg_path.write_text(json.dumps(cfg))
            code = ("import sys, torch; n = int(sys.argv[1]); n and torch.set_num_threads(n); "
                    "from recipes.image_codec import main; main(sys.argv[2:])")
            t0 = time.time()
            run = subprocess.run([sys.executable, "-c", code, str(args.threads), "--config", str(cfg_path)],
                                 cwd=ROOT, capture_output=True, text=True)
            if run.returncode:
                raise SystemExit(f"{name} failed:\n{run.stderr[-3000:]}")
            wall = time.time() - t0
            with open(out / "log.csv") as f:
                rows = list(csv.DictReader(f))
            val, train = _last(rows, "val"), _last(rows, "train")
            row = {
                "variant": name, "quantizer": quantizer, "kwargs": kwargs, "wall_s": wall,
                "psnr": next((v for k, v in val.items() if k.startswith("psnr")), float("nan")),
                "ms_ssim": next((v for k, v in val.items() if k.startswith("ms_ssim")), float("nan")),
                "usage": train.get("usage", float("nan")), "perplexity": train.get("perplexity", float("nan")),
            }
            results.append(row)
            print(f"{name:>18}: PSNR {row['psnr']:.2f} dB, MS-SSIM {row['ms_ssim']:.4f}, usage {row['usage']:.2f}, "
                  f"perplexity {row['perplexity']:.1f}, {wall:.0f} s", flush=True)
    if args.json:
        args.json.write_text(json.dumps({
            "preset": args.preset, "codebook_size": args.codebook_size, "steps": args.steps, "crop": args.crop,
            "seed": args.seed,
            "machine": f"{platform.machine()}, {__import__('os').cpu_count()} cores", "results": results,
        }, indent=2))


if __name__ == "__main__":
    main()
