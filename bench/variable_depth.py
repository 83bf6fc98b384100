"""Variable depth under rate targets: what it costs in encoding time and what it buys.

    python bench/variable_depth.py --model audio-v4 --threads 1 --json bench/results/variable_depth_audio_cpu.json
    python bench/variable_depth.py --model image-v2 --threads 1 --requests 0.1bpp,0.2bpp,0.3bpp \\
        --json bench/results/variable_depth_image_cpu.json

For each rate target, three encoders of the same model: one depth per file (``variable_depth=False``),
a variable depth in the chosen point's codebook size alone, and the default, a variable depth in
every codebook size with the lowest latent error kept. Per encoder: the real rate, the mean levels
coded per position, the time of ``compress_detailed`` and ``decompress``, and the decoded signal's
distance to the input (mel distance for audio, mean PSNR for images). Audio: the evaluation speech
concatenated to ``--seconds``; images: the evaluation photos. Perceptual quality (PESQ, STOI) is
measured by ``vqcodec eval``.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from beam_search import bench_parser, bench_setup, write_result  # noqa: E402

from codec.metrics import mel_distance, psnr  # noqa: E402

ENCODERS = ("fixed depth", "one codebook size", "every codebook size")


def main() -> None:
    ap = bench_parser(__doc__, seconds=30.0)
    ap.add_argument("--requests", default=None, help="comma-separated rate targets (default: 1.2-6 kbps or 0.1-0.3 bpp)")
    args = ap.parse_args()
    model, signals, units = bench_setup(args)
    audio = model.modality == "audio"
    requests = (args.requests or ("1.2kbps,1.6kbps,2.4kbps,3.2kbps,6kbps" if audio else "0.1bpp,0.2bpp,0.3bpp")).split(",")
    every_size = model._depth_bases
    rows = []
    for request in requests:
        for encoder in ENCODERS:
            # the one-size encoder: the chosen point's codebooks as the only base
            model._depth_bases = every_size if encoder == ENCODERS[2] else (lambda point: [point])
            compress_s = decompress_s = 0.0
            rates, levels, scores, points = [], [], [], []
            for x in signals:
                t0 = time.perf_counter()
                out = model.compress_detailed(x, request, variable_depth=encoder != ENCODERS[0])
                t1 = time.perf_counter()
                y, _ = model.decompress(out.data)
                t2 = time.perf_counter()
                compress_s, decompress_s = compress_s + t1 - t0, decompress_s + t2 - t1
                rates.append(out.real_rate)
                points.append(out.point.name)
                levels.append(out.mean_levels if out.mean_levels is not None else out.point.kwargs.get("num_levels", 1))
                if audio:
                    scores.append(float(mel_distance(x[0, :1][None], y[0, :1][None], int(model.sample_rate))[0]))
                else:
                    scores.append(float(psnr(x, y.clamp(0, 1))))
            chosen = ",".join(dict.fromkeys(points))  # the points written (the deepest of a variable depth), in file order
            row = {"request": request, "encoder": encoder, "points": chosen,
                   f"real_{model.rate_unit}": round(float(np.mean(rates)), 4), "mean_levels": round(float(np.mean(levels)), 3),
                   "compress_s": round(compress_s, 3), "decompress_s": round(decompress_s, 3),
                   ("mel_distance" if audio else "psnr_db"): round(float(np.mean(scores)), 4)}
            rows.append(row)
            print(f"{request:>8} {encoder:>19}: {chosen:>9} {row[f'real_{model.rate_unit}']:.4f} {model.rate_unit} "
                  f"levels {row['mean_levels']:.2f}  compress {compress_s:7.2f} s  decompress {decompress_s:6.2f} s  "
                  f"{'mel' if audio else 'PSNR'} {row['mel_distance' if audio else 'psnr_db']:.4f}", flush=True)
    model._depth_bases = every_size
    write_result(args.json, args.model, units, rows)


if __name__ == "__main__":
    main()
