"""Analysis-by-synthesis refinement: encoding time, objective and rate against refinement steps.

    python bench/refine.py --model audio-v3 --json bench/results/refine_audio_cpu.json
    python bench/refine.py --model image-v2 --json bench/results/refine_image_cpu.json

Audio: the evaluation speech (``data/eval/speech``) concatenated to ``--seconds``; images: the
evaluation photos. For each rate point and step count: the time of ``compress_detailed`` (the
network encoder, the code search, the refinement and the entropy coder), the file's real rate,
and the model's refinement objective (``Codec.refine_loss``) of the decoded file relative to the
unrefined file's. Perceptual quality after decoding is measured by ``vqcodec eval --refine``.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from beam_search import bench_parser, bench_setup, write_result  # noqa: E402



def objective(model, x: torch.Tensor, data: bytes) -> float:
    """The model's refinement objective between the prepared signal and the decoded file."""
    y, _ = model.decompress(data)
    prepared, _ = model.encoder.prepare(x)
    decoded, _ = model.encoder.prepare(y)
    return float(model._objective(x.device)(prepared, decoded))


def main() -> None:
    ap = bench_parser(__doc__, seconds=30.0)
    ap.add_argument("--points", default=None, help="comma-separated rate points (default: three of the model's)")
    ap.add_argument("--steps", default="0,5,10,20")
    args = ap.parse_args()
    model, signals, units = bench_setup(args)
    points = args.points or ("k1024-n2,k1024-n4,k1024-n8" if model.modality == "audio" else "k256-n1,k256-n2,k256-n3")
    rows = []
    for point in points.split(","):
        base = None
        for steps in (int(s) for s in args.steps.split(",")):
            t0 = time.perf_counter()
            outs = [model.compress_detailed(x, point, refine_steps=steps) for x in signals]
            seconds = time.perf_counter() - t0
            value = sum(objective(model, x, o.data) for x, o in zip(signals, outs)) / len(outs)
            base = value if base is None else base
            rate = sum(o.real_rate for o in outs) / len(outs)
            rows.append({"point": point, "refine_steps": steps, "compress_s": round(seconds, 3),
                         "real_rate": round(rate, 4), "objective": round(value, 5),
                         "objective_vs_unrefined": round(value / base, 4)})
            print(f"{point:>10} steps {steps:>3}: compress {seconds:7.2f} s  rate {rate:.4f} {model.rate_unit}  "
                  f"{model.refine_loss} {value:.4f} (x{value / base:.3f})", flush=True)
    write_result(args.json, args.model, units, rows, beam_size=model.beam_size, refine_step_size=model.refine_step_size)


if __name__ == "__main__":
    main()
