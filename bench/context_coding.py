"""What context tables buy and cost: payload size and entropy-coding time, with and without them.

For every image (or audio file) of a folder (default: the eval photos, or the eval speech clips
of at least 2 s for an audio model) and every rate point of a bundled model, the codes are
computed once; then the tile payload is written with the model's frequency tables
alone (``RANGE``) and with its context tables (``CONTEXT``), and both are decoded again. Reports
per rate point the payload bits per pixel (kbps for audio) of both, the saving, and the time of entropy coding
alone (encode and decode, codes to bytes and back, network excluded) next to the network's time
for the same inputs. Decoded codes are checked to be identical.

    python bench/context_coding.py --model image-v2 --json bench/results/context_coding_cpu.json
    python bench/context_coding.py --model audio-v2 --json bench/results/context_coding_audio_cpu.json
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> None:
    from codec.entropy import decode_tile, encode_tile
    from codec.hub import load_model
    from codec.io import read_audio, read_image, to_model_channels
    from codec.nets.audio import resample

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="image-v2")
    ap.add_argument("--data", type=Path, default=None, help="folder (default: data/eval/images or data/eval/speech)")
    ap.add_argument("--max-files", type=int, default=24, help="audio: this many files of at least 2 s")
    ap.add_argument("--points", default="", help="comma-separated rate points (default: the model's target points)")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    torch.set_grad_enabled(False)
    model = load_model(args.model)
    if not model.context_tables:
        raise SystemExit(f"{args.model} has no context tables")
    points = [model.select_rate(p) for p in args.points.split(",")] if args.points else \
        [p for p in model.rate_points() if not model.target_points or p.name in model.target_points]
    audio = model.modality == "audio"
    folder = args.data or ROOT / "data" / "eval" / ("speech" if audio else "images")
    if audio:
        signals = []
        for path in sorted(folder.iterdir()):
            wav, meta = read_audio(path)
            if wav.shape[-1] >= 2 * meta["sample_rate"] and len(signals) < args.max_files:
                signals.append(resample(wav.mean(0, keepdim=True), meta["sample_rate"], int(model.sample_rate))[None])
        units = sum(x.shape[-1] for x in signals) / float(model.sample_rate) * 1000  # bits per ms = kbps
    else:
        signals = [to_model_channels(read_image(p)[0], model.encoder.in_channels) for p in sorted(folder.iterdir())]
        units = sum(x.shape[-1] * x.shape[-2] for x in signals)
    unit = "kbps" if audio else "bpp"
    t0 = time.perf_counter()
    tokens = [model._tokens(x) for x in signals]
    net_encode_s = time.perf_counter() - t0
    rows = []
    for point in points:
        sizes = model.quantizer.alphabet_sizes(**point.kwargs)
        tables, contexts = model._tables(point), model._contexts(point)
        grids = []
        for tok, spatial, info in tokens:
            codes = model._quantize(tok, spatial, info, point).codes
            grids.append(codes.reshape(*codes.shape[: 1 + len(spatial)], len(sizes)).numpy())
        out = {"point": point.name}
        for label, ctx in (("range", None), ("context", contexts)):
            t0 = time.perf_counter()
            data = [encode_tile(g.reshape(-1, len(sizes)), sizes, tables, grid=g.shape[:-1], contexts=ctx) for g in grids]
            enc_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            back = [decode_tile(d, g[..., 0].size, sizes, tables, grid=g.shape[:-1], contexts=ctx) for d, g in zip(data, grids)]
            dec_s = time.perf_counter() - t0
            assert all(np.array_equal(b, g.reshape(-1, len(sizes))) for b, g in zip(back, grids))
            out[f"{label}_{unit}"] = 8 * sum(len(d) for d in data) / units
            out[f"{label}_encode_ms"] = 1e3 * enc_s
            out[f"{label}_decode_ms"] = 1e3 * dec_s
        out["saving"] = 1 - out[f"context_{unit}"] / out[f"range_{unit}"]
        rows.append(out)
        print(f"{point.name:>9}: {out[f'range_{unit}']:.4f} -> {out[f'context_{unit}']:.4f} {unit} ({100 * out['saving']:.1f} % less); "
              f"coding {out['context_encode_ms']:.0f} ms / {out['context_decode_ms']:.0f} ms "
              f"(without contexts {out['range_encode_ms']:.0f} / {out['range_decode_ms']:.0f} ms)", flush=True)
    what = f"{units / 1000:.0f} s of audio" if audio else f"{len(signals)} images"
    print(f"network encoder for the same {what}: {1e3 * net_encode_s:.0f} ms")
    if args.json:
        args.json.write_text(json.dumps({
            "model": args.model, "files": len(signals), **({"seconds": units / 1000} if audio else {"megapixels": units / 1e6}),
            "machine": f"{platform.machine()}, {__import__('os').cpu_count()} cores",
            "torch_threads": torch.get_num_threads(), "network_encode_ms": 1e3 * net_encode_s, "points": rows,
        }, indent=2))


if __name__ == "__main__":
    main()
