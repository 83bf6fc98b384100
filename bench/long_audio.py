"""Memory and speed of `vqcodec compress` / `decompress` on one long audio file.

Writes ``--minutes`` of 24 kHz mono 16-bit audio (a mix of chirps, tones and noise bursts,
generated block by block), builds the audio model of a recipe preset (``raq``: the bundled
model's architecture, 8 RAQ levels) with entropy tables, then runs the real CLI in a fresh
process for each direction and reports its peak resident memory (``ru_maxrss`` of that process
alone), wall time, real-time factor, the file's real rate, and that the decoded file has the
input's length, rate and format. Weights are untrained: speed and memory do not depend on them.

    python bench/long_audio.py --minutes 60 --json bench/results/long_audio_cpu.json
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

MEASURE = """
import resource, subprocess, sys, time
t0 = time.perf_counter()
rc = subprocess.run(sys.argv[1:]).returncode
wall = time.perf_counter() - t0
print(rc, wall, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
"""


def _write_input(path: Path, minutes: float, sample_rate: int = 24000) -> int:
    import soundfile as sf

    rng = np.random.default_rng(0)
    frames = int(minutes * 60 * sample_rate)
    block = sample_rate * 10
    with sf.SoundFile(path, "w", samplerate=sample_rate, channels=1, subtype="PCM_16") as f:
        for start in range(0, frames, block):
            n = min(block, frames - start)
            t = (start + np.arange(n)) / sample_rate
            f0 = 150 + 100 * np.sin(2 * np.pi * 0.1 * t)
            x = 0.3 * np.sin(2 * np.pi * np.cumsum(f0) / sample_rate) + 0.1 * np.sin(2 * np.pi * 1200 * t)
            x += 0.05 * rng.standard_normal(n) * (np.sin(2 * np.pi * 0.5 * t) > 0.6)
            f.write(x.astype(np.float32))
    return frames


def _build_model(folder: Path, preset: str) -> None:
    import importlib

    import torch

    from codec.model import Codec

    module = importlib.import_module("recipes.audio_codec")
    cfg = module.PRESETS[preset]
    torch.manual_seed(0)
    model = Codec.build(cfg.network, cfg.quantizer, network_kwargs=cfg.network_kwargs,
                        quantizer_kwargs=cfg.quantizer_kwargs).eval()
    t = torch.arange(24000 * 4) / 24000
    model.fit_entropy_tables([(0.3 * torch.sin(2 * torch.pi * 220 * t) + 0.05 * torch.randn_like(t)).reshape(1, 1, -1)])
    model.save(folder, name=f"bench-{preset}")


def _run(args: list[str]) -> dict[str, float]:
    out = subprocess.run([sys.executable, "-c", MEASURE, *args], capture_output=True, text=True, cwd=ROOT)
    rc, wall, rss_kib = out.stdout.strip().splitlines()[-1].split()
    if int(rc) != 0:
        raise SystemExit(f"command failed: {' '.join(args)}\n{out.stderr[-2000:]}")
    return {"wall_s": float(wall), "peak_rss_mib": int(rss_kib) / 1024}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=60.0)
    ap.add_argument("--preset", default="raq", help="recipes.audio_codec preset whose model is measured")
    ap.add_argument("--rate", default="6kbps")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    import soundfile as sf

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        t0 = time.perf_counter()
        frames = _write_input(work / "long.wav", args.minutes)
        _build_model(work / "model", args.preset)
        setup_s = time.perf_counter() - t0
        cli = [sys.executable, "-m", "cli.app"]
        enc = _run([*cli, "compress", str(work / "long.wav"), "-o", str(work / "long.vqc"), "--rate", args.rate,
                    "-m", str(work / "model"), "--device", args.device, "-q"])
        dec = _run([*cli, "decompress", str(work / "long.vqc"), "-o", str(work / "back.wav"),
                    "-m", str(work / "model"), "--device", args.device, "-q"])
        info = sf.info(str(work / "back.wav"))
        size = (work / "long.vqc").stat().st_size
        seconds = frames / 24000
        result = {
            "minutes": args.minutes,
            "preset": args.preset,
            "rate_request": args.rate,
            "device": args.device,
            "machine": f"{platform.processor() or platform.machine()}, {__import__('os').cpu_count()} cores",
            "vqc_bytes": size,
            "real_kbps": 8 * size / seconds / 1000,
            "compress": {**enc, "realtime_x": seconds / enc["wall_s"]},
            "decompress": {**dec, "realtime_x": seconds / dec["wall_s"]},
            "output_ok": info.frames == frames and info.samplerate == 24000 and info.subtype == "PCM_16",
            "setup_s": setup_s,
        }
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
