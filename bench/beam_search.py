"""Residual code search: encoding time and latent error of greedy vs beam-searched codes.

    python bench/beam_search.py --model audio-v3 --json bench/results/beam_search_audio_cpu.json
    python bench/beam_search.py --model image-v2 --json bench/results/beam_search_image_cpu.json

Audio: the evaluation speech (``data/eval/speech``) concatenated to ``--seconds``; images: the
evaluation photos. For each rate point and beam width: the time of ``compress_detailed`` (the
network encoder, the search and the entropy coder; the encoder's latents are what every beam
shares), the file's real rate, and the squared error between the latents and their quantized
values relative to greedy's. Quality after decoding is measured by ``vqcodec eval --beam``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from codec.hub import load_model  # noqa: E402
from codec.io import AUDIO_SUFFIXES, IMAGE_SUFFIXES, read_audio, read_image  # noqa: E402
from codec.nets.audio import resample  # noqa: E402


def audio_signal(folder: Path, sample_rate: int, seconds: float) -> torch.Tensor:
    parts, total = [], 0
    for path in sorted(p for p in folder.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES):
        wav, meta = read_audio(path)
        mono = resample(wav.mean(0, keepdim=True), meta["sample_rate"], sample_rate)
        parts.append(mono)
        total += mono.shape[-1]
        if total >= seconds * sample_rate:
            break
    return torch.cat(parts, -1)[:, : int(seconds * sample_rate)][None]


def bench_parser(doc: str, seconds: float) -> argparse.ArgumentParser:
    """The options every encoder benchmark takes: --model, --seconds (audio), --threads, --json."""
    ap = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    ap.add_argument("--model", default="audio-v3")
    ap.add_argument("--seconds", type=float, default=seconds, help="audio: length of the signal")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--json", type=Path, default=None)
    return ap


def bench_setup(args: argparse.Namespace) -> tuple[Any, list[torch.Tensor], str]:
    """Threads and grad mode set, the model loaded: ``(model, signals, their description)``."""
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.set_grad_enabled(False)
    model = load_model(args.model)
    return (model, *load_signals(model, args.seconds))


def validation_parser(doc: str, model: str, clips: int, rates: str) -> argparse.ArgumentParser:
    """The options every benchmark on validation speech takes: --model, --clips, --rates, --data,
    --threads, --json."""
    ap = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    ap.add_argument("--model", default=model)
    ap.add_argument("--clips", type=int, default=clips)
    ap.add_argument("--rates", default=rates)
    ap.add_argument("--data", type=Path, default=ROOT / "data")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--json", type=Path, default=None)
    return ap


def validation_setup(args: argparse.Namespace) -> tuple[Any, list[Path]]:
    """Threads and grad mode set, the model loaded: ``(model, validation speech clips)``: ``--clips``
    of ``data/audio/val/speech-*`` (Czech and Dutch, not the English evaluation set) of at least
    2 s, spread over the sorted list."""
    from codec.evaluate import audio_files

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.set_grad_enabled(False)
    model = load_model(args.model)
    return model, audio_files(sorted((args.data / "audio/val").glob("speech-*")), args.clips, min_seconds=2.0)


def validation_bands(path: Path):
    """One validation clip, mono, as ``vqcodec eval`` feeds it in each band: ``(band, signal (1, T),
    sample rate, metadata)`` at its own rate (``wb``) and resampled to 8 kHz (``nb``)."""
    wav0, meta0 = read_audio(path)
    wav0 = wav0.mean(0, keepdim=True)
    for band, rate_hz in (("wb", None), ("nb", 8000)):
        wav, meta, sr = wav0, dict(meta0), int(meta0["sample_rate"])
        if rate_hz and rate_hz != sr:
            wav, sr = resample(wav0, sr, rate_hz).clamp(-1, 1), rate_hz
            meta.update(sample_rate=sr, frames=wav.shape[-1])
        yield band, wav, sr, meta


def write_result(path: Path | None, model: str, units: str, rows: list[dict], **extra) -> dict:
    """The benchmark's result (model, signal, threads, machine, ``extra``, rows), written as JSON to ``path``."""
    result = {"model": model, "signal": units, "threads": torch.get_num_threads(), **extra,
              "machine": f"{platform.machine()}, {os.cpu_count()} cores", "rows": rows}
    if path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result, indent=1) + "\n")
    return result


def load_signals(model, seconds: float) -> tuple[list[torch.Tensor], str]:
    """The benchmark's inputs for ``model`` and their description: ``seconds`` of the evaluation
    speech as one signal, or the evaluation photos (RGB)."""
    if model.modality == "audio":
        signal = audio_signal(ROOT / "data/eval/speech", int(model.sample_rate), seconds)
        return [signal], f"{signal.shape[-1] / model.sample_rate:.0f} s of speech"
    files = sorted(p for p in (ROOT / "data/eval/images").iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    signals = [read_image(p, alpha="drop")[0] for p in files]
    signals = [x if x.shape[1] == 3 else x.expand(-1, 3, -1, -1) for x in signals]
    return signals, f"{len(signals)} photos"


def latent_error(model, encoded: tuple, point: str, beam: int) -> float:
    """Sum over tokens of |z - z_q|^2 at ``point``; ``encoded``: the signal's ``Codec._tokens``."""
    tokens, spatial, info = encoded
    rate = model.select_rate(point)
    codes = model._quantize(tokens, spatial, info, rate, beam).codes.reshape(tokens.shape[0], tokens.shape[1], -1)
    return float((model.quantizer.decode(codes, **rate.kwargs) - tokens).square().sum())


def main() -> None:
    ap = bench_parser(__doc__, seconds=60.0)
    ap.add_argument("--points", default=None, help="comma-separated rate points (default: three of the model's)")
    ap.add_argument("--beams", default="1,4,8,16,32")
    args = ap.parse_args()
    model, signals, units = bench_setup(args)
    default = "k1024-n2,k1024-n4,k1024-n8,k1024-n16" if model.modality == "audio" else "k256-n2,k256-n3,k256-n4"
    points = args.points or default
    encoded = [model._tokens(x) for x in signals]  # one encoder pass per signal serves every beam
    rows = []
    for point in points.split(","):
        base_err = sum(latent_error(model, e, point, 1) for e in encoded)
        for beam in (int(b) for b in args.beams.split(",")):
            t0 = time.perf_counter()
            outs = [model.compress_detailed(x, point, beam_size=beam) for x in signals]
            seconds = time.perf_counter() - t0
            err = sum(latent_error(model, e, point, beam) for e in encoded)
            rate = sum(o.real_rate for o in outs) / len(outs)
            rows.append({"point": point, "beam": beam, "compress_s": round(seconds, 3), "real_rate": round(rate, 4),
                         "latent_error_vs_greedy": round(err / base_err, 4)})
            print(f"{point:>10} beam {beam:>2}: compress {seconds:6.2f} s  rate {rate:.4f} {model.rate_unit}  "
                  f"latent error x{err / base_err:.3f}", flush=True)
    write_result(args.json, args.model, units, rows)


if __name__ == "__main__":
    main()
