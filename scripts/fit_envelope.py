"""Give a published audio model band-energy side information: fit its table, measure its cost.

    python scripts/fit_envelope.py audio-v3

The envelope (:mod:`codec.envelope`) is encoder-written side information that the decoder
applies after the network: it changes neither the weights nor the codes' entropy tables, and a
file without it decodes exactly as before. This script

1. codes clips of the training data (``data/audio/train``, up to 10 s each) at the model's rate
   points, measures each band's energy ratio between the input and the decoded codes, and fits
   the integer frequency table of the time-differential steps (Laplace prior of one count);
2. measures the real cost on validation clips (``data/audio/val``): the size of each file with
   band energies minus the same file without, per second of one channel, over the same points;
3. stores both in the model's ``config.json`` (``envelope``: name, kwargs with the table,
   ``measured_kbps``, ``default``) after checking that the weights and entropy tables are the
   published ones (their bytes are compared before and after).

Rate targets then choose a point whose measured rate plus ``measured_kbps`` fits, and the
written file is checked against the target as always.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from codec.envelope import BandEnergy  # noqa: E402
from codec.entropy import FrequencyTable, packed_bits  # noqa: E402
from codec.hub import BUNDLED_DIR  # noqa: E402
from codec.model import CONFIG_FILE, Codec, config_text  # noqa: E402
from scripts.bundle_model import signals  # noqa: E402
from scripts.remeasure_model import load_published, reload_unchanged  # noqa: E402


def fit_points(model: Codec, count: int) -> list[str]:
    """``count`` points spread over the ones rate targets choose among (all points without a list)."""
    names = [p.name for p in model.rate_points() if not model.target_points or p.name in model.target_points]
    idx = np.linspace(0, len(names) - 1, min(count, len(names))).round().astype(int)
    return [names[i] for i in sorted(set(idx))]


def steps_of(model: Codec, envelope: BandEnergy, x: torch.Tensor, point: str) -> torch.Tensor:
    """The envelope steps ``(C, bands, blocks)`` of one clip ``(1, C, T)`` (one tile) at ``point``."""
    y, _ = model.encoder.prepare(x)
    enc = model.encode(x, point, beam_size=1)
    return envelope.analyse(envelope.energies(y), model._decoded(enc.codes, tuple(enc.codes.shape[1:2]), enc.point))


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("name", help="a bundled audio model (codec/weights/<name>)")
    ap.add_argument("--train", type=Path, default=ROOT / "data" / "audio" / "train")
    ap.add_argument("--val", type=Path, default=ROOT / "data" / "audio" / "val")
    ap.add_argument("--train-files", type=int, default=40)
    ap.add_argument("--val-files", type=int, default=8)
    ap.add_argument("--points", type=int, default=6, help="rate points to fit and measure on")
    ap.add_argument("--off", action="store_true", help="store the envelope, but off by default")
    ap.add_argument("--weights-dir", type=Path, default=BUNDLED_DIR, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    torch.set_grad_enabled(False)
    folder, model, published, before = load_published(args.weights_dir, args.name)
    if model.modality != "audio":
        raise SystemExit(f"{args.name}: band energies are side information of audio models")
    t0 = time.time()
    points = fit_points(model, args.points)
    plain = BandEnergy(int(model.sample_rate))
    deltas = []
    train = signals(model, args.train, args.train_files)
    for x in train:
        for point in points:
            deltas.append(plain.symbols(steps_of(model, plain, x, point)).flatten())
    table = FrequencyTable.from_codes(torch.cat(deltas), plain.num_symbols, prior=1)
    model.envelope = BandEnergy(int(model.sample_rate), table=table.counts.tolist())
    entry = {"name": BandEnergy.name, "kwargs": model.envelope.config(), "default": not args.off}
    val = signals(model, args.val, args.val_files)
    extra = []
    for x in val:
        seconds = x.shape[-1] / int(model.sample_rate) * x.shape[1]
        for point in points:
            with_env = model.compress_detailed(x, point, envelope=True).data
            without = model.compress_detailed(x, point, envelope=False).data
            extra.append(8 * (len(with_env) - len(without)) / seconds / 1000)
    entry["measured_kbps"] = round(float(np.mean(extra)), 4)
    config = {**model.export_config(), "envelope": entry}
    tmp = folder / (CONFIG_FILE + ".tmp")
    tmp.write_text(config_text(config))
    tmp.replace(folder / CONFIG_FILE)
    if reload_unchanged(folder, published, before).envelope is None:
        raise SystemExit(f"{folder}: the envelope did not take")
    summary = {"name": args.name, "points": points, "train_clips": len(train), "val_clips": len(val),
               "bits_per_delta": round(table.bits_per_symbol(), 3), "measured_kbps": entry["measured_kbps"],
               "packed_kbps": round(plain.num_bands * plain.blocks_per_second() * packed_bits(plain.num_symbols) / 1000, 4),
               "seconds": round(time.time() - t0, 1)}
    print(json.dumps(summary, indent=1))
    return summary


if __name__ == "__main__":
    main()
