"""Give a published audio model band-energy side information: fit its table, measure its cost.

    python scripts/fit_envelope.py audio-v3
    python scripts/fit_envelope.py audio-v5 --contexts --rd-lambda 0.25 --publish-as audio-v7

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

``--contexts`` fits the context tables of :class:`codec.envelope.ContextBandEnergy` (every
delta coded given the band's previous step and the delta of the band below), ``--rd-lambda``
sets the encoder's rate-distortion choice of the steps (:meth:`~codec.envelope.BandEnergy.choose`;
with it the context tables are refitted once on the steps it chooses). Both change what a file
means (another envelope) or what the encoder writes, so they are meant with ``--publish-as NEW``:
a new published model with the same weights and entropy tables under a new name (the source
model, and every file it wrote, stays as it is); ``--description`` is its index entry.
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

from functools import partial  # noqa: E402

from codec.envelope import BandEnergy, ContextBandEnergy  # noqa: E402
from codec.entropy import FrequencyTable, packed_bits  # noqa: E402
from codec.hub import BUNDLED_DIR  # noqa: E402
from codec.model import CONFIG_FILE, Codec, config_text  # noqa: E402
from scripts.bundle_model import signals  # noqa: E402
from scripts.remeasure_model import load_published, publish_copy, reload_unchanged  # noqa: E402


def fit_points(model: Codec, count: int) -> list[str]:
    """``count`` points spread over the ones rate targets choose among (all points without a list)."""
    names = [p.name for p in model.rate_points() if not model.target_points or p.name in model.target_points]
    idx = np.linspace(0, len(names) - 1, min(count, len(names))).round().astype(int)
    return [names[i] for i in sorted(set(idx))]


def steps_of(model: Codec, envelope: BandEnergy, x: torch.Tensor, point: str) -> torch.Tensor:
    """The envelope steps ``(C, bands, blocks)`` of one clip ``(1, C, T)`` (one tile) at ``point``."""
    y, _ = model.encoder.prepare(x)
    enc = model.encode(x, point, beam_size=1)
    decoded = model._decoded(enc.codes, tuple(enc.codes.shape[1:2]), enc.point)
    return envelope.analyse(envelope.energies(y), decoded, rate_kbps=enc.point.rate)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("name", help="a bundled audio model (codec/weights/<name>)")
    ap.add_argument("--train", type=Path, default=ROOT / "data" / "audio" / "train")
    ap.add_argument("--val", type=Path, default=ROOT / "data" / "audio" / "val")
    ap.add_argument("--train-files", type=int, default=40)
    ap.add_argument("--val-files", type=int, default=8)
    ap.add_argument("--points", type=int, default=6, help="rate points to fit and measure on")
    ap.add_argument("--off", action="store_true", help="store the envelope, but off by default")
    ap.add_argument("--contexts", action="store_true", help="code the deltas under context tables (band-energy-context)")
    ap.add_argument("--rd-lambda", type=float, default=0.0,
                    help="the encoder's rate-distortion trade-off of the steps (squared steps per bit; 0: rounding)")
    ap.add_argument("--rd-reference-kbps", type=float, default=None,
                    help="the trade-off falls as rd_lambda * min(1, this / rate) above this rate of the codes")
    ap.add_argument("--publish-as", metavar="NEW", default=None,
                    help="publish the result as a new model NEW (the same weights and entropy tables)")
    ap.add_argument("--description", default=None, help="--publish-as: the new model's index description")
    ap.add_argument("--weights-dir", type=Path, default=BUNDLED_DIR, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if (args.contexts or args.rd_lambda) and not args.publish_as:
        raise SystemExit("--contexts and --rd-lambda change what the model writes: publish the result under a new name "
                         "(--publish-as NEW), so that the files written before keep decoding")
    torch.set_grad_enabled(False)
    folder, model, published, before = load_published(args.weights_dir, args.name)
    if model.modality != "audio":
        raise SystemExit(f"{args.name}: band energies are side information of audio models")
    if not args.publish_as:
        summary = _fit(args, folder, model, published, before)
    else:
        description = args.description or f"{args.name} with a refitted envelope"
        with publish_copy(args.weights_dir, args.name, args.publish_as, published, description) as staging:
            model = Codec.load(staging)
            if model.config is not None:
                model.config["name"] = args.publish_as  # the files it writes name the new model
            summary = _fit(args, staging, model, published, before)
    print(json.dumps(summary, indent=1))
    return summary


def _fit(args: argparse.Namespace, folder: Path, model: Codec, published: dict, before: dict[str, str]) -> dict:
    t0 = time.time()
    points = fit_points(model, args.points)
    plain = BandEnergy(int(model.sample_rate))
    train = signals(model, args.train, args.train_files)
    steps = [steps_of(model, plain, x, point) for x in train for point in points]
    table = FrequencyTable.from_codes(torch.cat([plain.symbols(s).flatten() for s in steps]), plain.num_symbols, prior=1)
    build = partial(ContextBandEnergy if args.contexts else BandEnergy, int(model.sample_rate), table=table.counts.tolist(),
                    rd_lambda=args.rd_lambda, rd_reference_kbps=args.rd_reference_kbps)
    model.envelope = build()
    context_bits = None
    if args.contexts:
        model.envelope = build(context_table=model.envelope.fit_context_table(steps))
        if args.rd_lambda:  # refitted on the steps the encoder's choice writes
            steps = [steps_of(model, model.envelope, x, point) for x in train for point in points]
            model.envelope = build(context_table=model.envelope.fit_context_table(steps))
        symbols = sum(s.numel() for s in steps)
        context_bits = round(8 * sum(len(model.envelope.encode(s)) for s in steps) / symbols, 3)
    entry = {"name": model.envelope.name, "kwargs": model.envelope.config(), "default": not args.off}
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
               "bits_per_delta": round(table.bits_per_symbol(), 3), "context_bits_per_delta": context_bits,
               "measured_kbps": entry["measured_kbps"],
               "packed_kbps": round(plain.num_bands * plain.blocks_per_second() * packed_bits(plain.num_symbols) / 1000, 4),
               "seconds": round(time.time() - t0, 1)}
    return summary


if __name__ == "__main__":
    main()
