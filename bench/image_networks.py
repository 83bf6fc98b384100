"""Which image network to train on a small budget: an equal-wall-clock ablation, no quantizer.

Each variant (a registered image network with its keyword arguments) is trained as a plain
autoencoder -- the decoder fed the encoder's latent, squared error, Adam -- on random crops of
the training photos for the same wall-clock minutes, data order, seed and learning rate. Then
each is scored on whole images: the validation photos and the evaluation photos, PSNR of the
8-bit output. What this measures is the ceiling a quantizer under that network can approach
within the budget: no rate point of a codec can beat its own network's unquantized output.

    python bench/image_networks.py --minutes 6 --json bench/results/image_networks_cpu.json

Variants: ``resnet-cpu-v1`` (the ``image-resnet`` of image-v1/v2: 32 channels, factor 8, a
32-dim latent) and ``gdn-128`` (``image-gdn``: 128 channels, factor 8, a 32-dim latent).
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from codec.io import IMAGE_SUFFIXES, read_image  # noqa: E402
from codec.nets import get_network  # noqa: E402
from recipes.data import ImageData  # noqa: E402

VARIANTS = {
    "resnet-cpu-v1": ("image-resnet", dict(channels=32, channel_mult=[1, 2, 2, 4], num_res_blocks=1, factor=8,
                                           latent_dim=32, attention=False)),
    "gdn-128": ("image-gdn", dict(channels=128, factor=8, latent_dim=32)),
}


@torch.no_grad()
def _psnr_8bit(enc: torch.nn.Module, dec: torch.nn.Module, x: torch.Tensor) -> float:
    y, info = enc.prepare(x)
    out = enc.restore(dec(enc(y)), info)
    out = (out * 255).round() / 255
    return float(-10 * torch.log10(F.mse_loss(out, x)))


def run_variant(name: str, data: ImageData, minutes: float, batch_size: int, lr: float, seed: int,
                eval_images: list[torch.Tensor]) -> dict[str, object]:
    network, kwargs = VARIANTS[name]
    torch.manual_seed(seed)
    pair = get_network(network, **kwargs)
    enc, dec = pair.encoder, pair.decoder
    params = [p for m in (enc, dec) for p in m.parameters()]
    opt = torch.optim.Adam(params, lr=lr)
    start, steps, last = time.perf_counter(), 0, float("nan")
    while time.perf_counter() - start < minutes * 60:
        x = data.batch(seed * 1_000_003 + steps, batch_size)
        y, _ = enc.prepare(x)
        loss = F.mse_loss(dec(enc(y)), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        steps += 1
        last = float(loss.detach())
    train_s = time.perf_counter() - start
    enc.eval(), dec.eval()
    val = [_psnr_8bit(enc, dec, v) for v in data.val_images(len(data.val))]
    ev = [_psnr_8bit(enc, dec, x) for x in eval_images]
    return {
        "network": network, "kwargs": kwargs, "parameters": sum(p.numel() for p in params),
        "steps": steps, "train_s": round(train_s, 1), "s_per_step": round(train_s / max(1, steps), 4),
        "last_train_psnr_db": round(-10 * math.log10(last / 4), 2) if last == last else None,  # [-1, 1] range
        "val_psnr_db": round(sum(val) / max(1, len(val)), 2),
        "eval_psnr_db": round(sum(ev) / max(1, len(ev)), 2),
        "eval_psnr_db_per_image": [round(v, 2) for v in ev],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=ROOT / "data" / "images", help="training photos (train/ and val/)")
    ap.add_argument("--eval", type=Path, default=ROOT / "data" / "eval" / "images", help="photos scored at the end")
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--minutes", type=float, default=6.0, help="wall-clock training budget per variant")
    ap.add_argument("--crop", type=int, default=96)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--lr", type=float, default=5e-4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    names = [v for v in args.variants.split(",") if v]
    unknown = [v for v in names if v not in VARIANTS]
    if unknown:
        ap.error(f"unknown variants {unknown}; choose from {', '.join(VARIANTS)}")
    if not args.data.is_dir() or not args.eval.is_dir():
        ap.error(f"need {args.data} and {args.eval}: run scripts/get_data.sh first")
    if args.threads:
        torch.set_num_threads(args.threads)
    data = ImageData(str(args.data), args.crop, 768, 0.1, args.seed)
    eval_images = []
    for p in sorted(q for q in args.eval.iterdir() if q.suffix.lower() in IMAGE_SUFFIXES):
        x, _ = read_image(p, alpha="drop")
        eval_images.append(x if x.shape[1] == 3 else x.expand(-1, 3, -1, -1))
    results = {}
    for name in names:
        results[name] = run_variant(name, data, args.minutes, args.batch_size, args.lr, args.seed, eval_images)
        print(json.dumps({name: results[name]}), flush=True)
    report = {
        "machine": f"{platform.machine()}, {torch.get_num_threads()} torch threads, "
                   f"{'CUDA' if torch.cuda.is_available() else 'CPU'}",
        "torch": torch.__version__,
        "settings": {"minutes": args.minutes, "crop": args.crop, "batch_size": args.batch_size, "lr": args.lr,
                     "seed": args.seed, "eval_images": len(eval_images), "val_images": len(data.val)},
        "results": results,
    }
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
