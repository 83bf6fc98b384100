"""A model's shallow decoder, blended by the codes' depth, against its decoder alone and against
the shallow decoder everywhere, on validation speech: PESQ and STOI, paired.

    python bench/shallow_decoder.py --model audio-v13 --clips 16 --rates 0.8kbps,1.2kbps \
        --smooth-frames 0,8,16,32,64 --json bench/results/shallow_decoder_audio-v13_cpu.json

Each way writes its own files (the codes are the same, the model decoder's; the band energies are
measured against what that way synthesises) and decodes them:

* ``model decoder``: the model's own decoder alone (the model it was published from);
* ``shallow everywhere``: the shallow decoder at every position, however deep;
* ``blend K``: the shallow decoder weighted by the share of positions coding at most
  ``max_levels`` levels in a window of ``2 K + 1`` positions (:mod:`codec.shallow`), for each
  ``K`` of ``--smooth-frames``, band energies measured as the model measures them;
* ``blend K, energies vs blend``: the model's blend, its band energies measured against the
  blend in every tile (where the model's ``model_energies_share`` measures them against the
  model decoder in nearly all-shallow tiles);
* ``blend K, energies vs model decoder``: the model's own blend decoding the files of ``model
  decoder``, whose band energies were measured against the model decoder alone (the ablation of
  measuring them against the blend).

Validation clips (``data/audio/val/speech-*``, Czech and Dutch, not the English evaluation set),
``--clips`` of them of at least 2 s, mono, at their own sample rate (``wb``, PESQ-wb) and at 8 kHz
(``nb``, PESQ-nb), as ``vqcodec eval`` feeds them. Rows: per band, target and way, the means, the
mean code depth of the files, and the mean per-clip change against ``model decoder`` with the
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
from codec.shallow import ShallowDecoder  # noqa: E402

EVERYWHERE = 1 << 16  # max_levels no file reaches


def variants(model, smooth: list[int]) -> dict:
    """``{way: a copy of model decoding that way}``."""
    base = model.shallow_decoder

    def with_shallow(max_levels: int, frames: int, share: float | None = base.model_energies_share):
        m = copy.copy(model)  # shares the networks; only the blend differs
        m.shallow_decoder = ShallowDecoder(base.decoder, max_levels=max_levels, smooth_frames=frames,
                                           model_energies_share=share)
        m.shallow_decoder.loaded = True
        return m

    plain = copy.copy(model)
    plain.shallow_decoder = None
    ways = {"model decoder": plain, "shallow everywhere": with_shallow(EVERYWHERE, 0, None)}
    ways.update({f"blend {k}": with_shallow(base.max_levels, k) for k in smooth})
    if base.model_energies_share is not None:
        ways[f"blend {base.smooth_frames}, energies vs blend"] = with_shallow(base.max_levels, base.smooth_frames, None)
    return ways


def mismatched(model) -> str:
    """The way whose files are ``model decoder``'s, decoded by the model's own blend."""
    return f"blend {model.shallow_decoder.smooth_frames}, energies vs model decoder"


def main() -> None:
    ap = validation_parser(__doc__, "audio-v13", 16, "0.8kbps,1.2kbps")
    ap.add_argument("--smooth-frames", default="0,8,16,32,64", help="blend windows to try (half-widths, positions)")
    args = ap.parse_args()
    model, clips = validation_setup(args)
    if model.shallow_decoder is None:
        raise SystemExit(f"{args.model} has no shallow decoder")
    ways = variants(model, [int(k) for k in args.smooth_frames.split(",")])
    scores: dict[tuple[str, str, str], list[dict[str, float]]] = {}
    depths: dict[tuple[str, str], list[float]] = {}
    start = time.perf_counter()
    for path in clips:
        for band, wav, sr, meta in validation_bands(path):
            ref = wav[0].numpy()
            for rate in args.rates.split(","):
                files = {}
                for way, m in ways.items():
                    files[way] = compress_signal(wav, rate=rate, model=m, sample_rate=sr, source=meta)
                    y, _ = decompress(files[way].data, model=m)
                    scores.setdefault((band, rate, way), []).append(audio_quality(ref, y.float().mean(0).numpy(), sr))
                out = files["model decoder"]  # the codes, and so the depths, are every way's
                y, _ = decompress(out.data, model=model)
                scores.setdefault((band, rate, mismatched(model)), []).append(audio_quality(ref, y.float().mean(0).numpy(), sr))
                depths.setdefault((band, rate), []).append(
                    float(out.mean_levels if out.mean_levels is not None else out.point.kwargs.get("num_levels", np.nan)))
        print(f"{path.name}: {time.perf_counter() - start:.0f} s", flush=True)
    rows = []
    for (band, rate, way), qs in scores.items():
        base = scores[(band, rate, "model decoder")]
        dp = [q["pesq"] - b["pesq"] for q, b in zip(qs, base) if not (np.isnan(q["pesq"]) or np.isnan(b["pesq"]))]
        row = {"band": band, "rate": rate, "way": way, "clips": len(qs),
               "mean_levels": round(float(np.nanmean(depths[(band, rate)])), 3),
               "pesq": round(float(np.nanmean([q["pesq"] for q in qs])), 4),
               "stoi": round(float(np.mean([q["stoi"] for q in qs])), 4),
               "mel": round(float(np.mean([q["mel"] for q in qs])), 4),
               "pesq_vs_model_decoder": round(float(np.mean(dp)), 4), "clips_better": int(sum(d > 0 for d in dp)),
               "stoi_vs_model_decoder": round(float(np.mean([q["stoi"] - b["stoi"] for q, b in zip(qs, base)])), 4)}
        rows.append(row)
        print(f"{band} {rate} {way:40s} PESQ {row['pesq']:.3f} ({row['pesq_vs_model_decoder']:+.3f}, {row['clips_better']}/"
              f"{len(dp)} better)  STOI {row['stoi']:.4f} ({row['stoi_vs_model_decoder']:+.4f})  depth {row['mean_levels']:.2f}")
    write_result(args.json, args.model, f"{len(clips)} validation speech clips", rows,
                 shallow_decoder=model.shallow_decoder.config())


if __name__ == "__main__":
    main()
