"""The main job: compress and decompress a real photo and a real speech clip with the bundled
models, at two rates each, through the ``vqcodec`` command, and print sizes, real rates and quality.

    python scripts/demo.py [--data data] [--out demo]

The samples come from ``scripts/get_data.sh`` (``data/eval``): a scikit-image photograph and an
English voice clip of the ``fillets-ng-data`` package.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

IMAGE_RATES = ("0.1bpp", "0.3bpp")
AUDIO_RATES = ("3kbps", "6kbps")


def _vqcodec(*args: str) -> None:
    cmd = [sys.executable, "-m", "cli.app", *args, "--force", "-q"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"failed: vqcodec {' '.join(args)}\n{proc.stderr}")
    for line in proc.stderr.splitlines():
        if line.startswith("note:"):
            print("  " + line)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=ROOT / "data")
    ap.add_argument("--out", type=Path, default=ROOT / "demo")
    args = ap.parse_args()
    import numpy as np
    from rich.console import Console
    from rich.table import Table

    from codec.evaluate import audio_quality, image_quality
    from codec.files import read_vqc_header
    from codec.hub import default_model_name
    from codec.io import read_audio, read_image

    photo = args.data / "eval" / "images" / "astronaut.png"
    speech = sorted((args.data / "eval" / "speech").glob("*.ogg"))
    if not photo.is_file() or not speech:
        raise SystemExit(f"no samples under {args.data}/eval: run scripts/get_data.sh first")
    import soundfile as sf

    # a spoken sentence of 3-8 s (the set also holds a few music and sound-effect clips)
    spoken = [p for p in speech if "music" not in p.name and 3.0 <= sf.info(str(p)).duration <= 8.0]
    clip = spoken[0] if spoken else max(speech, key=lambda p: p.stat().st_size)
    args.out.mkdir(parents=True, exist_ok=True)
    table = Table(title="vqcodec: bundled models on real samples (sizes and rates are of the .vqc files, header included)")
    for col in ("input", "request", "point", "bytes", "real rate", "quality"):
        table.add_column(col, justify="right" if col in ("bytes", "real rate") else "left")
    x, _ = read_image(photo)
    for rate in IMAGE_RATES:
        vqc, png = args.out / f"photo-{rate}.vqc", args.out / f"photo-{rate}.png"
        _vqcodec("compress", str(photo), "-o", str(vqc), "--rate", rate)
        _vqcodec("decompress", str(vqc), "-o", str(png))
        y, _ = read_image(png)
        m = image_quality(x, y)
        info = read_vqc_header(vqc.read_bytes())
        bpp = 8 * vqc.stat().st_size / (x.shape[-1] * x.shape[-2])
        table.add_row(photo.name, rate, info["rate_point"], f"{vqc.stat().st_size:,}", f"{bpp:.3f} bpp",
                      f"PSNR {m['psnr']:.2f} dB, MS-SSIM {m['ms_ssim']:.4f}")
    wav, meta = read_audio(clip)
    ref = wav.mean(0).numpy().astype(np.float32)
    try:
        default_model_name("audio")
        audio_rates = AUDIO_RATES
    except LookupError as err:
        print(f"speech skipped: {err}")
        audio_rates = ()
    for rate in audio_rates:
        vqc, out = args.out / f"speech-{rate}.vqc", args.out / f"speech-{rate}.wav"
        _vqcodec("compress", str(clip), "-o", str(vqc), "--rate", rate)
        _vqcodec("decompress", str(vqc), "-o", str(out))
        y, _ = read_audio(out)
        m = audio_quality(ref, y.mean(0).numpy().astype(np.float32), meta["sample_rate"])
        info = read_vqc_header(vqc.read_bytes())
        kbps = 8 * vqc.stat().st_size / (wav.shape[-1] / meta["sample_rate"]) / 1000
        table.add_row(clip.name.split("__")[-1], rate, info["rate_point"], f"{vqc.stat().st_size:,}", f"{kbps:.2f} kbps",
                      f"PESQ {m['pesq']:.2f}, STOI {m['stoi']:.3f}, SI-SDR {m['si_sdr']:.1f} dB")
    Console().print(table)
    print(f"outputs in {args.out}/ ({clip.name.split('__')[-1]}: {wav.shape[-1] / meta['sample_rate']:.1f} s at "
          f"{meta['sample_rate']} Hz; {photo.name}: {x.shape[-1]}x{x.shape[-2]})")


if __name__ == "__main__":
    main()
