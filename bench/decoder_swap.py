"""A fine-tuned decoder against a model's own, on validation speech: PESQ and STOI, paired.

    python bench/decoder_swap.py runs/audio_cpu_v8/export --model audio-v12 --clips 6 \
        --json bench/results/decoder_swap_cpu_v8_cpu.json

``DECODER`` is a model folder whose network is the model's (a decoder fine-tune of it, e.g.
``python -m recipes.audio_codec --config cpu-v8``); only its decoder weights are used. Validation
clips (``data/audio/val/speech-*``, Czech and Dutch, not the English evaluation set), ``--clips``
of them of at least 2 s, mono, each at its own sample rate (PESQ-wb) and at 8 kHz (PESQ-nb), as
``vqcodec eval`` feeds them. Per clip and rate target, three ways to code it:

* ``model``: the model's file, decoded by the model (what it ships);
* ``swapped``: the model's file, decoded with the fine-tuned decoder (the encoder, its codes and
  its band energies, measured against the model's decoder, unchanged);
* ``tuned``: a file written with the fine-tuned decoder as the encoder's decoder too (band
  energies and rate decisions measured against it), decoded by it.

Rows: means per way, target and band, and the mean per-clip change against ``model`` with the
number of clips it improves.
"""

from __future__ import annotations

import copy
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from beam_search import validation_bands, validation_parser, validation_setup, write_result  # noqa: E402

from codec.evaluate import audio_quality  # noqa: E402
from codec.files import compress_signal, decompress  # noqa: E402
from codec.hub import load_model  # noqa: E402


def with_decoder(model, folder: str):
    """A copy of ``model`` whose decoder has the weights of the model in ``folder``; it reads the
    model's files (the header names the model's weights)."""
    tuned = copy.deepcopy(model)
    tuned.decoder.load_state_dict(load_model(folder).decoder.state_dict())
    tuned.weights_sha256 = model.weights_sha256
    return tuned


def main() -> None:
    ap = validation_parser(__doc__, "audio-v12", 6, "0.8kbps,1.2kbps")
    ap.add_argument("decoder", help="model folder holding the fine-tuned decoder")
    args = ap.parse_args()
    model, clips = validation_setup(args)
    tuned = with_decoder(model, args.decoder)
    ways = {"model": ("model", model), "swapped": ("model", tuned), "tuned": ("tuned", tuned)}  # (whose file, decoder)
    scores: dict[tuple[str, str, str], list[dict[str, float]]] = {}
    start = time.perf_counter()
    for path in clips:
        for band, wav, sr, meta in validation_bands(path):
            ref = wav[0].numpy()
            for rate in args.rates.split(","):
                files = {name: compress_signal(wav, rate=rate, model=m, sample_rate=sr, source=meta).data
                         for name, m in (("model", model), ("tuned", tuned))}
                for way, (written_by, dec) in ways.items():
                    y, _ = decompress(files[written_by], model=dec)
                    scores.setdefault((band, rate, way), []).append(audio_quality(ref, y.float().mean(0).numpy(), sr))
        print(f"{path.name}: {time.perf_counter() - start:.0f} s", flush=True)
    rows = []
    for (band, rate, way), qs in scores.items():
        base = scores[(band, rate, "model")]
        dp = [q["pesq"] - b["pesq"] for q, b in zip(qs, base) if not (np.isnan(q["pesq"]) or np.isnan(b["pesq"]))]
        row = {"band": band, "rate": rate, "way": way, "clips": len(qs),
               "pesq": round(float(np.nanmean([q["pesq"] for q in qs])), 4),
               "stoi": round(float(np.mean([q["stoi"] for q in qs])), 4),
               "mel": round(float(np.mean([q["mel"] for q in qs])), 4),
               "pesq_vs_model": round(float(np.mean(dp)), 4), "clips_better": int(sum(d > 0 for d in dp)),
               "stoi_vs_model": round(float(np.mean([q["stoi"] - b["stoi"] for q, b in zip(qs, base)])), 4)}
        rows.append(row)
        print(f"{band} {rate} {way:8s} PESQ {row['pesq']:.3f} ({row['pesq_vs_model']:+.3f}, {row['clips_better']}/{len(dp)} "
              f"better)  STOI {row['stoi']:.4f} ({row['stoi_vs_model']:+.4f})  mel {row['mel']:.3f}")
    write_result(args.json, args.model, f"{len(clips)} validation speech clips", rows, decoder=args.decoder)


if __name__ == "__main__":
    main()
