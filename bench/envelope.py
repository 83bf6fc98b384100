"""Band-energy side information: encoding and decoding time, rate, and the band-energy error it removes.

    python bench/envelope.py --model audio-v3 --threads 1 --json bench/results/envelope_audio_cpu.json

The evaluation speech (``data/eval/speech``) concatenated to ``--seconds``. For each request
(rate targets and point names) with and without band energies: the time of ``compress_detailed``
(network encoder, code search, the decoder pass that measures the energies, entropy coding) and of
``decompress``, the file's real rate, the chosen point, and the mean absolute error in dB between
the input's and the decoded signal's band energies (the envelope's own bands and blocks, blocks
within 40 dB of the loudest). Perceptual quality is measured by ``vqcodec eval``.
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

from codec.envelope import BandEnergy  # noqa: E402


def band_error_db(env: BandEnergy, x: torch.Tensor, y: torch.Tensor) -> float:
    ref, out = env.energies(x[0, :1][None]), env.energies(y[0, :1][None])
    live = ref > ref.max() * 1e-4
    return float((10 * torch.log10((out[live] + 1e-12) / ref[live])).abs().mean())


def main() -> None:
    ap = bench_parser(__doc__, seconds=30.0)
    ap.add_argument("--requests", default="1.2kbps,2.4kbps,3.2kbps,6kbps,k1024-n4")
    args = ap.parse_args()
    model, (x,), units = bench_setup(args)
    if model.envelope is None:
        raise SystemExit(f"{args.model} has no band-energy envelope")
    rows = []
    for request in args.requests.split(","):
        for envelope in (False, True):
            t0 = time.perf_counter()
            out = model.compress_detailed(x, request, envelope=envelope)
            t1 = time.perf_counter()
            y, _ = model.decompress(out.data)
            t2 = time.perf_counter()
            row = {"request": request, "envelope": envelope, "point": out.point.name, "real_kbps": round(out.real_rate, 4),
                   "compress_s": round(t1 - t0, 3), "decompress_s": round(t2 - t1, 3),
                   "band_error_db": round(band_error_db(model.envelope, x, y), 3)}
            rows.append(row)
            print(f"{request:>9} {'energies' if envelope else 'codes   '}: {row['point']:>9} {row['real_kbps']:.3f} kbps  "
                  f"compress {row['compress_s']:6.2f} s  decompress {row['decompress_s']:5.2f} s  "
                  f"band error {row['band_error_db']:.2f} dB", flush=True)
    write_result(args.json, args.model, units, rows, envelope_kbps=model.envelope_kbps)


if __name__ == "__main__":
    main()
