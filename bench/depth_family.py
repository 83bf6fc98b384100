"""Which codebook family should a rate target's variable depth use? The encoder's rule against an oracle.

Under a rate target, a rate-adaptive model allocates a variable depth for every codebook size
(k64, k256, k1024: each from its deepest point within the chosen point's rate) and writes the
one with the lowest latent squared error, provided it beats the chosen point's fixed depth
(:meth:`codec.model.Codec.compress_detailed`). This bench writes every family's file for each
clip, decodes each one as a reader would (postfilter included) and scores it, then compares
choosing by

* ``latent``: the encoder's rule (lowest latent error among the files that beat the fixed depth),
* ``mel``: the lowest mel distance of the decoded signal, among the same files (an
  analysis-by-synthesis choice the encoder could make at the cost of one decode per family),
* ``k64`` / ``k256`` / ``k1024``: always that family, where it has a file,
* ``oracle``: the highest PESQ, which no encoder can know.

The files are the encoder's own (the candidates are captured by wrapping the allocation, which
is then told no candidate won, so the run's own output is the fixed-depth file).

    python bench/depth_family.py --model audio-v9 --rate 1.2kbps --sample-rate 8000
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from codec.evaluate import _mono, audio_files, audio_quality  # noqa: E402
from codec.files import compress_signal, decompress  # noqa: E402
from codec.hub import load_model  # noqa: E402
from codec.io import read_audio  # noqa: E402
from codec.model import Codec  # noqa: E402
from codec.nets.audio import resample  # noqa: E402


def candidates(model: Codec, wav, meta: dict, rate: str) -> list[dict]:
    """Every family's variable-depth file of one clip, the fixed-depth file first."""
    found: list[tuple[str, bytes, float]] = []
    to_beat: list[float] = []
    allocate = Codec._allocate_depths

    def capture(self, point, tokens, codes_of, grid, shape, metadata, envelope, side, fits, beat=None):
        if beat is not None and not to_beat:
            to_beat.append(float(beat))  # the fixed depth's latent error
        out = allocate(self, point, tokens, codes_of, grid, shape, metadata, envelope, side, fits, None)
        if out is not None:
            found.append((out[0].name, out[1], float(out[3])))
        return None

    Codec._allocate_depths = capture
    try:
        fixed = compress_signal(wav, rate=rate, model=model, sample_rate=meta["sample_rate"], source=meta)
    finally:
        Codec._allocate_depths = allocate
    fixed_error = to_beat[0] if to_beat else float("inf")
    return [{"name": fixed.point.name, "fixed": True, "data": fixed.data, "latent": fixed_error}] + [
        {"name": name, "fixed": False, "data": data, "latent": err} for name, data, err in found]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="audio-v9")
    ap.add_argument("--rate", default="1.2kbps")
    ap.add_argument("--sample-rate", type=int, default=None, help="resample the clips to this rate first (8000: telephone)")
    ap.add_argument("--data", type=Path, default=ROOT / "data" / "eval" / "speech")
    ap.add_argument("--min-seconds", type=float, default=2.0)
    ap.add_argument("--max-files", type=int, default=None)
    ap.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    args = ap.parse_args()
    model = load_model(args.model)
    t0 = time.time()
    clips = []
    for path in audio_files(args.data, args.max_files, args.min_seconds):
        wav, meta = read_audio(path)
        if args.sample_rate and args.sample_rate != meta["sample_rate"]:
            wav = resample(wav, meta["sample_rate"], args.sample_rate).clamp(-1, 1)
            meta["sample_rate"], meta["frames"] = args.sample_rate, wav.shape[-1]
        ref = _mono(wav)
        scored = []
        for c in candidates(model, wav, meta, args.rate):
            y, _ = decompress(c["data"], model=model)
            q = audio_quality(ref, _mono(y), meta["sample_rate"])
            scored.append({"name": c["name"], "fixed": c["fixed"], "bytes": len(c["data"]), "latent": c["latent"],
                           **{k: round(float(q[k]), 4) for k in ("pesq", "stoi", "mel")}})
        clips.append({"file": path.name, "seconds": round(wav.shape[-1] / meta["sample_rate"], 3), "files": scored})
        print(path.name, [(s["name"], s["pesq"]) for s in scored], flush=True)

    def rule(files: list[dict], how: str) -> dict:
        fixed = files[0]
        beat = [f for f in files[1:] if f["latent"] < fixed["latent"]] or [fixed]
        if how == "latent":
            return min(beat, key=lambda f: f["latent"])
        if how == "mel":
            return min(beat, key=lambda f: f["mel"])
        if how == "oracle":
            return max(files, key=lambda f: f["pesq"])
        family = [f for f in files[1:] if f["name"].split("-")[0] == how]
        return family[0] if family else rule(files, "latent")

    summary = {}
    for how in ("latent", "mel", "k64", "k256", "k1024", "oracle"):
        picks = [rule(c["files"], how) for c in clips]
        summary[how] = {k: round(statistics.mean(p[k] for p in picks), 4) for k in ("pesq", "stoi", "mel")}
    base = summary["latent"]
    for how, s in summary.items():
        s["pesq_vs_latent"] = round(s["pesq"] - base["pesq"], 4)
        s["stoi_vs_latent"] = round(s["stoi"] - base["stoi"], 4)
    result = {"model": args.model, "rate": args.rate, "sample_rate": args.sample_rate, "clips": len(clips),
              "wall_s": round(time.time() - t0, 1), "summary": summary, "per_clip": clips}
    print(json.dumps(summary, indent=2))
    if args.out:
        args.out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
