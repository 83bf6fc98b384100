"""Decoder postfilter settings on validation speech: PESQ and STOI of each setting, paired.

    python bench/postfilter.py --model audio-v7 --clips 24 --json bench/results/postfilter_cpu.json

Validation clips (``data/audio/val/speech-*``, Czech and Dutch: not the English evaluation set,
so that settings are not chosen on what they are reported on), ``--clips`` of them of at least
2 s spread over the sorted list, each fed at its own sample rate (wide-band, scored with PESQ-wb)
and resampled to 8 kHz (telephone, PESQ-nb), as ``vqcodec eval`` does. Each clip is compressed
once per rate target and decoded once without a postfilter; every setting of ``--settings``
(name=JSON keyword arguments of :class:`codec.postfilter.FormantPostfilter`; ``none`` is the
decoder's own output) then filters that output at the model's rate before it is resampled to the
clip's and scored; a clip a rate target is too low for (two channels at 0.8 kbps) is left out of
that target's rows for every setting. ``--music-seconds`` adds the validation music and drums (their first seconds).
Rows: mean PESQ / STOI per setting, rate and band, and the mean per-clip change against the first
setting with the number of clips it improves.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from beam_search import validation_parser, validation_setup, write_result  # noqa: E402

from codec.evaluate import audio_quality  # noqa: E402
from codec.files import compress_signal  # noqa: E402
from codec.io import read_audio  # noqa: E402
from codec.model import RateError  # noqa: E402
from codec.nets.audio import resample  # noqa: E402
from codec.postfilter import FormantPostfilter, SpectralMaskPostfilter  # noqa: E402

DEFAULT_SETTINGS = (
    'formant={"gamma_num": 0.6, "gamma_den": 0.9, "strength": 0.5}',
    'pitch0.25={"gamma_num": 0.6, "gamma_den": 0.9, "strength": 0.5, "pitch_gain": 0.25}',
    'pitch0.4={"gamma_num": 0.6, "gamma_den": 0.9, "strength": 0.5, "pitch_gain": 0.4}',
    'pitch0.5={"gamma_num": 0.6, "gamma_den": 0.9, "strength": 0.5, "pitch_gain": 0.5}',
)


def parse_settings(specs: list[str], sample_rate: int) -> dict[str, FormantPostfilter | SpectralMaskPostfilter | None]:
    """``name=JSON`` specs -> postfilters (``none``: no filter). JSON with a ``"mask"`` key (the path of a
    ``recipes/postfilter.py train`` output) is a learned postfilter, its other keys (``then``) added to
    the config stored with its weights; any other JSON is :class:`FormantPostfilter`'s keyword arguments."""
    out: dict[str, FormantPostfilter | SpectralMaskPostfilter | None] = {"none": None}
    for spec in specs:
        name, _, kwargs = spec.partition("=")
        kw = json.loads(kwargs)
        if "mask" in kw:
            out[name] = SpectralMaskPostfilter.from_file(kw.pop("mask"), sample_rate, **kw)[0]
        else:
            out[name] = FormantPostfilter(sample_rate, **kw)
    return out


def main() -> None:
    ap = validation_parser(__doc__, "audio-v7", 24, "1.2kbps,1.6kbps,2.4kbps,6kbps")
    ap.add_argument("--settings", nargs="*", default=list(DEFAULT_SETTINGS), metavar="NAME=JSON")
    ap.add_argument("--bands", choices=("both", "wb", "nb"), default="both", help="wide-band, telephone (8 kHz) or both")
    ap.add_argument("--music-seconds", type=float, default=0.0, help="also the validation music and drums, cut to this")
    args = ap.parse_args()
    model, speech = validation_setup(args)
    sr_model = int(model.sample_rate)
    settings = parse_settings(args.settings, sr_model)
    sets = {"speech-wb": [(p, None) for p in speech]}
    sets["speech-nb"] = [(p, 8000) for p, _ in sets["speech-wb"]]
    if args.bands != "both":
        sets = {f"speech-{args.bands}": sets[f"speech-{args.bands}"]}
    if args.music_seconds:
        other = sorted(p for d in ("music-*", "drums-*") for p in (args.data / "audio/val").glob(f"{d}/*") if p.is_file())
        sets["music"] = [(p, None) for p in other[:: max(1, len(other) // 6)]]
    scores: dict[tuple[str, str, str], list[dict[str, float]]] = {}
    cost: dict[str, float] = {}  # seconds spent in each setting's filter
    audio_seconds = 0.0  # of decoder output, which every setting filters
    for band, items in sets.items():
        for path, rate_hz in items:
            wav, meta = read_audio(path)
            sr = meta["sample_rate"]
            if rate_hz and rate_hz != sr:
                wav, sr = resample(wav, sr, rate_hz).clamp(-1, 1), rate_hz
            if band == "music":
                wav = wav[..., : int(args.music_seconds * sr)]
            ref = wav.float().mean(0).numpy()
            for rate in args.rates.split(","):
                try:
                    out = compress_signal(wav, rate=rate, model=model, sample_rate=sr)
                except RateError:  # a target too low for this clip (e.g. 0.8 kbps for two channels): every setting skips it
                    continue
                raw, _ = model.decompress(out.data, postfilter=False)  # (B=channels, 1, T) at the model's rate
                audio_seconds += raw.shape[-1] / sr_model
                for name, pf in settings.items():
                    t0 = time.perf_counter()
                    y = raw if pf is None else pf(raw, rate_kbps=out.point.rate, output_rate_hz=sr)
                    cost[name] = cost.get(name, 0.0) + time.perf_counter() - t0
                    y = resample(y.reshape(-1, y.shape[-1]).mean(0), sr_model, sr)[: len(ref)]
                    q = audio_quality(ref, y.numpy().astype(np.float32), sr)
                    scores.setdefault((band, rate, name), []).append(q)
            print(f"{band} {path.name}", flush=True)
    rows = []
    base = next(iter(settings))
    for (band, rate, name), qs in scores.items():
        ref = scores[(band, rate, base)]
        # PESQ refuses some clips (silence, too short): means over the clips it scores
        dp = [d for a, b in zip(qs, ref) if np.isfinite(d := a["pesq"] - b["pesq"])]
        row = {"band": band, "rate": rate, "setting": name, "clips": len(qs), "pesq_clips": len(dp),
               "pesq": round(float(np.nanmean([q["pesq"] for q in qs])), 4),
               "stoi": round(float(np.nanmean([q["stoi"] for q in qs])), 4),
               "mel": round(float(np.mean([q["mel"] for q in qs])), 4),
               f"pesq_vs_{base}": round(float(np.mean(dp)), 4), "clips_better": int(sum(d > 0 for d in dp)),
               "stoi_vs_" + base: round(float(np.nanmean([a["stoi"] - b["stoi"] for a, b in zip(qs, ref)])), 4),
               "filter_ms_per_audio_second": round(1000 * cost[name] / audio_seconds, 2)}
        rows.append(row)
        print(f"{band:9} {rate:8} {name:12} PESQ {row['pesq']:.3f} ({row[f'pesq_vs_{base}']:+.3f}, "
              f"{row['clips_better']}/{len(dp)} better)  STOI {row['stoi']:.4f} ({row['stoi_vs_' + base]:+.4f})  "
              f"mel {row['mel']:.3f}  {row['filter_ms_per_audio_second']:.1f} ms/s")
    write_result(args.json, args.model, f"{args.clips} validation speech clips", rows,
                 settings={k: (v.config() if v else None) for k, v in settings.items()})


if __name__ == "__main__":
    main()
