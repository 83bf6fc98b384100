"""Publish a trained model as a bundled, versioned model under ``codec/weights/<name>/``.

    python scripts/bundle_model.py runs/image_cpu_v1 --name image-v1 --default
    python scripts/bundle_model.py runs/audio_cpu_v1 --name audio-v1 --default

From a recipe run folder (``export/`` + ``config.json`` + ``log.csv``) this

1. fits the integer entropy tables on training data (``--fit``: images or audio files),
2. measures every rate point's **real** rate and quality on validation data (``--val``):
   the mean size of the ``.vqc`` files written, header included, over pixels or seconds,
3. writes ``codec/weights/<name>/`` (safetensors weights, entropy tables, ``config.json`` with
   the name and measured rates, ``MODEL_CARD.md``) for inference: RAQ's codebooks of every rate
   point are stored and its generator and EMA sums are left out (``--keep-training-state``
   keeps them), and
4. records the name, weights hash and modality in ``codec/weights/index.json`` (``--default``
   makes it the modality's default). A name that exists with other weights is refused: new
   weights get a new name, so files made by an old one stay decodable.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import platform
import shutil
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from codec.files import compress_signal, decompress  # noqa: E402
from codec.hub import BUNDLED_DIR, INDEX_FILE, file_sha256  # noqa: E402
from codec.io import AUDIO_SUFFIXES, IMAGE_SUFFIXES, read_audio, read_image  # noqa: E402
from codec.model import ENTROPY_FILE, Codec  # noqa: E402

MAX_WEIGHTS_MB = 15.0


def _files(folder: Path, suffixes: tuple[str, ...], limit: int) -> list[Path]:
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in suffixes)
    step = max(1, len(files) // limit) if limit else 1
    return files[::step][:limit] if limit else files


def _image(path: Path, max_side: int) -> torch.Tensor:
    x, _ = read_image(path, alpha="drop")
    scale = max_side / max(x.shape[-2:])
    if scale < 1:
        size = [max(8, round(s * scale)) for s in x.shape[-2:]]
        x = torch.nn.functional.interpolate(x, size=size, mode="bicubic", antialias=True, align_corners=False).clamp(0, 1)
    return x if x.shape[1] == 3 else x.expand(-1, 3, -1, -1)


def _clips(path: Path, sample_rate: int, seconds: float) -> list[torch.Tensor]:
    from codec.nets.audio import resample

    wav, meta = read_audio(path)
    mono = resample(wav.mean(0, keepdim=True), meta["sample_rate"], sample_rate)
    n = int(seconds * sample_rate)
    return [mono[:, i : i + n][None] for i in range(0, mono.shape[-1], n) if mono.shape[-1] - i >= sample_rate // 2]


def context_summary(model: Codec) -> str:
    """Which sources the context tables of a model use, e.g. "prev0+prev1 on 16 of 40 code columns"."""
    combos: dict[str, int] = {}
    for cc in model.context_tables.values():
        key = "+".join(sorted(cc.tables))
        combos[key] = combos.get(key, 0) + 1
    columns = sum(len(model.quantizer.alphabet_sizes(**p.kwargs)) for p in model.rate_points())
    names = {"prev0": "the code above" if model.modality == "image" else "the previous frame",
             "prev1": "the code to the left", "level": "the previous level"}
    parts = [f"{' + '.join(names.get(s, s) for s in k.split('+'))} on {n}" for k, n in sorted(combos.items(), key=lambda kv: -kv[1])]
    return "; ".join(parts) + f" of {columns} code columns"


def signals(model: Codec, folder: Path, limit: int) -> list[torch.Tensor]:
    if model.modality == "image":
        return [_image(p, 512) for p in _files(folder, IMAGE_SUFFIXES, limit)]
    out: list[torch.Tensor] = []
    for p in _files(folder, AUDIO_SUFFIXES, limit):
        out += _clips(p, int(model.sample_rate or 24000), 10.0)
    return out


def measure(model: Codec, xs: list[torch.Tensor]) -> list[dict]:
    """Mean real rate and quality of every rate point over ``xs`` (files written and read back)."""
    from codec.metrics import mel_distance, ms_ssim, psnr, si_sdr

    rows = []
    for point in model.rate_points():
        rates, q1, q2 = [], [], []
        for x in xs:
            out = model.compress_detailed(x, point.name, envelope=False)  # the codes' own rate
            y, _ = model.decompress(out.data)
            if model.modality == "image":
                rates.append(out.real_rate)
                yq = (y.clamp(0, 1) * 255).round() / 255
                q1.append(float(psnr(x, yq)[0]))
                q2.append(float(ms_ssim(x, yq)[0]) if min(x.shape[-2:]) >= 161 else float("nan"))
            else:
                rates.append(out.real_rate / x.shape[1])  # per channel, as rate points are
                q1.append(float(si_sdr(x[0], y[0])[0]))
                q2.append(float(mel_distance(x, y, int(model.sample_rate))[0]))
        rows.append({
            "point": point.name, "bits_per_token": point.bits_per_token, "nominal": point.nominal,
            "measured": sum(rates) / len(rates), "q1": _mean(q1), "q2": _mean(q2),
        })
    return rows


def _mean(v: list[float]) -> float:
    v = [a for a in v if not math.isnan(a)]
    return sum(v) / len(v) if v else float("nan")


def pareto_points(rows: list[dict], higher_is_better: bool, column: str | None = None) -> list[str]:
    """Points no other point beats in quality at a lower or equal measured rate: what rate targets
    choose among. ``column`` (default ``q1`` when higher is better, else ``q2``): ``q1`` is PSNR
    for images; ``q2`` MS-SSIM for images, mel distance (lower is better) for audio."""
    column = column or ("q1" if higher_is_better else "q2")
    sign = 1.0 if higher_is_better else -1.0
    front, best = [], -math.inf
    for r in sorted(rows, key=lambda r: (r["measured"], -sign * r[column])):
        if sign * r[column] > best:
            front.append(r["point"])
            best = sign * r[column]
    return front


def ranking_column(kind: str, targets_by: str = "measured") -> str:
    """The column of :func:`measure`'s rows that rate targets rank points by: ``q1`` (PSNR) for
    images, ``q2`` (mel distance) for audio; ``targets_by="ms_ssim"``: ``q2`` (MS-SSIM) for images."""
    if targets_by == "ms_ssim" and kind != "image":
        raise SystemExit("--targets-by ms_ssim is for image models")
    return "q2" if kind != "image" or targets_by == "ms_ssim" else "q1"


def target_points(kind: str, rows: list[dict], targets_by: str) -> list[str]:
    """The rate-target points of :func:`measure`'s rows, ranked by :func:`ranking_column`."""
    return pareto_points(rows, higher_is_better=kind == "image", column=ranking_column(kind, targets_by))


def _training(run: Path) -> dict:
    info: dict = {}
    log = run / "log.csv"
    if log.is_file():
        rows = list(csv.DictReader(open(log)))
        train = [r for r in rows if r["split"] == "train"]
        if train:
            # a resumed run restarts the clock: sum the segments (a segment ends where time goes back)
            info["steps"] = int(train[-1]["step"])
            ends, last = [], -1.0
            for r in rows:
                t = float(r["time_s"])
                if t < last:
                    ends.append(last)
                last = t
            ends.append(last)
            info["wall_s"] = sum(ends)
            info["segments"] = len(ends)
    cfg = run / "config.json"
    if cfg.is_file():
        info["config"] = json.loads(cfg.read_text())
    return info


def rate_section(model: Codec, rows: list[dict], val_n: int, targets_by: str = "measured") -> list[str]:
    """The model card's "Rate points" section (from :func:`measure`'s rows), ending with an empty line."""
    unit = model.rate_unit
    q1, q2 = ("PSNR dB", "MS-SSIM") if model.modality == "image" else ("SI-SDR dB", "mel distance")
    ranked = {"q1": q1, "q2": q2}[ranking_column(model.modality, targets_by)]
    beam = (f" Residual codes are found by a beam search of width {model.beam_size} (the model's default "
            "`beam_size`, an encoder-side setting: `--beam 1` is greedy, and every file decodes the same way)."
            if model.beam_size > 1 else "")
    lines = [
        f"## Rate points (measured on {val_n} held-out {'images' if model.modality == 'image' else '10 s clips'})",
        "",
        f"Measured = mean size of the written `.vqc` files, header included, per {'pixel' if unit == 'bpp' else 'second of one channel'}.{beam}",
        "",
        f"| point | bits/token | nominal {unit} | measured {unit} | {q1} | {q2} |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(f"| {r['point']} | {r['bits_per_token']:.0f} | {r['nominal']:.4g} | {r['measured']:.4g} | {r['q1']:.2f} | {r['q2']:.4f} |")
    if model.target_points:
        lines += ["", f"Rate targets (`--rate 3kbps`) choose among the points no other point beats in {ranked} "
                  f"at a lower measured rate: {', '.join(model.target_points)}. Every point stays usable by name."]
    lines += ["", "Rate-distortion against JPEG/WebP/AVIF or Opus/Codec2 on the evaluation sets: the README's "
              "\"Bundled models\" section and `docs/eval/` (made by `python scripts/eval_bundled.py`, i.e. `vqcodec eval`).", ""]
    return lines


def model_card(name: str, model: Codec, rows: list[dict], training: dict, args: argparse.Namespace, fit_n: int, val_n: int) -> str:
    unit = model.rate_unit
    cfg = training.get("config", {})
    recipe = "image_codec" if model.modality == "image" else "audio_codec"
    preset = args.preset or "?"
    lines = [
        f"# {name}",
        "",
        f"A bitrate-adaptive {model.modality} codec of vqcodec: `{(model.config or {}).get('network', {}).get('name', '?')}` networks around residual "
        f"RAQ quantizers ({len(model.rate_points())} rate points, {min(p.nominal for p in model.rate_points()):.3g}-"
        f"{max(p.nominal for p in model.rate_points()):.3g} {unit} nominal{' per channel' if unit == 'kbps' else ''}). "
        f"Weights SHA-256 `{model.weights_sha256()}`.",
        "",
        "## Training",
        "",
        f"* Recipe: `{args.command or f'vqcodec train {recipe} --config {preset}'}` (`recipes/{recipe}.py`, "
        f"preset `{preset}`), {training.get('steps', '?')} steps, {training.get('wall_s', float('nan')) / 60:.0f} min "
        f"wall time" + (f" in {training['segments']} segments (resumed from checkpoints)" if training.get("segments", 1) > 1
                        else "") + ".",
        *([f"* Initialised from the EMA weights of `{cfg['init_from']}` (`init_from`): a fine-tuning run; "
           "its own steps and time are counted above."] if cfg.get("init_from") else []),
        *([f"* Started from the published `{cfg['init_model']}` (`init_model`)"
           + (": only its decoder was trained (`train_parts=\"decoder\"`), on the codes its frozen encoder and "
              "quantizer write, with a `" + str(cfg.get("recon_loss", "l1")) + "` reconstruction term"
              + (f" entering as {cfg['recon_log_scale']:g} × its logarithm (`recon_log_scale`: each rate point's error "
                 "counts relative to its own size)" if cfg.get("recon_log_scale") else "")
              + (f" beside an MS-SSIM term entering as {cfg['ms_ssim_log_scale']:g} × ln(1 − MS-SSIM) "
                 "(`ms_ssim_log_scale`: the main term)" if cfg.get("ms_ssim_log_scale") else "")
              + "; encoder, quantizer, beam search and entropy tables are its own, so files code to the same sizes."
              if cfg.get("train_parts") == "decoder" else ".")] if cfg.get("init_model") else []),
        *([f"* The decoder was grown before it was trained (`network_overrides` {json.dumps(cfg['network_overrides'])}): "
           f"every layer of `{cfg.get('init_model')}`'s decoder kept its weights, the new ones started as the identity."]
          if cfg.get("network_overrides") else []),
        f"* Hardware: {args.hardware}.",
        "* Data: `scripts/get_data.sh` only (Debian packages; see `data/MANIFEST.json` and `data/licences/`).",
        (f"* Entropy tables: those of `{cfg.get('init_model') or 'the exported model'}`, unchanged (`--keep-tables`)"
         if args.keep_tables else
         f"* Entropy tables: fitted on {fit_n} {'images' if model.modality == 'image' else 'clips (up to 10 s each)'} of the "
         "training data") + (f"; context tables (each code predicted from its neighbours: {context_summary(model)}"
                           + (f"; context alphabets of more than {args.context_buckets} codes clustered into {args.context_buckets} rows"
                              if args.context_buckets else "")
                           + ") where they saved bits on a held-out quarter of it." if model.context_tables else "."),
        *([f"* Stored in {args.storage_dtype} (every weight rounded to it before the entropy tables were "
           + ("kept" if args.keep_tables else "fitted") + " and the rates below measured, so they describe exactly these weights); the model computes in float32."]
          if args.storage_dtype != "float32" else []),
        *(["* Published for inference: the codebooks of every rate point are stored; RAQ's codebook generator and "
           "the EMA sums are left out, so the quantizer cannot be trained further (train from the run's checkpoint; "
           "the decoder alone can be fine-tuned: `train_parts=\"decoder\"`)."]
          if model.inference_only else []),
        "",
        "## Licence of the weights",
        "",
        "The code of vqcodec is Apache-2.0. These weights were trained on data distributed under "
        + ("GPL-2+, CC-BY-SA-3.0/4.0, CC-BY-4.0, CC0 and Expat terms (desktop wallpaper packages)"
           if model.modality == "image" else
           "GPL-2+ (fillets-ng voices), GPL (Frets on Fire songs) and CC-BY/CC-BY-SA/CC0/GPL-2+ (Hydrogen drum kits)")
        + ". Whether trained weights are a derivative work of their training data is not settled; we do not claim "
        "they are free of those terms. Treat them as subject to the most restrictive of them (GPL-2+ and the "
        "CC-BY-SA share-alike terms): redistribute them with attribution to the data's authors and under terms "
        "compatible with those licences.",
        "",
        *rate_section(model, rows, val_n, args.targets_by),
    ]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run", type=Path, help="recipe run folder (with export/)")
    ap.add_argument("--name", required=True)
    ap.add_argument("--preset", default=None, help="recipe preset the run used (for the model card)")
    ap.add_argument("--fit", type=Path, default=None, help="training data for the entropy tables")
    ap.add_argument("--val", type=Path, default=None, help="validation data for measured rates")
    ap.add_argument("--fit-files", type=int, default=24)
    ap.add_argument("--val-files", type=int, default=8)
    ap.add_argument("--command", default=None, help="the training command(s) for the model card "
                    "(default: vqcodec train RECIPE --config PRESET)")
    ap.add_argument("--default", action="store_true")
    ap.add_argument("--no-contexts", action="store_true", help="frequency tables only, no context tables")
    ap.add_argument("--keep-tables", action="store_true",
                    help="publish the entropy tables the export carries instead of fitting new ones (a decoder "
                         "fine-tune of a published model: its codes, hence its tables, are unchanged)")
    ap.add_argument("--targets-by", choices=("measured", "ms_ssim"), default="measured",
                    help="what rate targets rank points by: the measured PSNR (images) or mel distance (audio), "
                         "or MS-SSIM (an image model trained for it)")
    ap.add_argument("--context-max-symbols", type=int, default=256, help="largest code alphabet given context tables")
    ap.add_argument("--context-buckets", type=int, default=None,
                    help="cluster context alphabets larger than this into this many rows (small tables for K=1024)")
    ap.add_argument("--keep-training-state", action="store_true",
                    help="publish the RAQ codebook generators and EMA state too (larger; fine-tunable)")
    ap.add_argument("--storage-dtype", choices=["float32", "float16", "bfloat16"], default="float32",
                    help="store the weights in this dtype (rounded first: half the bytes at 16 bits)")
    ap.add_argument("--description", default="")
    ap.add_argument("--hardware", default=f"CPU: {platform.machine()}, {__import__('os').cpu_count()} cores, no GPU")
    args = ap.parse_args()
    torch.set_grad_enabled(False)
    model = Codec.load(args.run / "export")
    kind = model.modality
    storage = None if args.storage_dtype == "float32" else getattr(torch, args.storage_dtype)
    if storage is not None and args.keep_training_state:
        raise SystemExit("--storage-dtype needs the inference weights: RAQ's generated codebooks are only rounded "
                         "once published (drop --keep-training-state)")
    if not args.keep_training_state:
        # RAQ generators and EMA sums: training state, not needed to code; RAQ's codebooks of every
        # rate point are published into the weights (the same values the generator gives in eval)
        model.strip_training_state()
    if storage is not None:
        model.round_weights_(storage)  # fit and measure the weights that will be published
    fit = args.fit or ROOT / "data" / ("images" if kind == "image" else "audio") / "train"
    val = args.val or ROOT / "data" / ("images" if kind == "image" else "audio") / "val"
    t0 = time.time()
    if args.keep_tables:
        if not model.entropy_tables:
            raise SystemExit(f"--keep-tables: {args.run / 'export'} carries no entropy tables")
        fit_x = []
    else:
        fit_x = signals(model, fit, args.fit_files)
        model.fit_entropy_tables(fit_x, contexts=not args.no_contexts, context_max_symbols=args.context_max_symbols,
                                 context_buckets=args.context_buckets)
        print(f"entropy tables from {len(fit_x)} signals in {time.time() - t0:.0f} s", flush=True)
    val_x = signals(model, val, args.val_files)
    if model.config is not None:
        model.config["name"] = args.name  # the header of every measured file names the published model
    rows = measure(model, val_x)
    model.measured_rates = {r["point"]: r["measured"] for r in rows}
    model.target_points = target_points(kind, rows, args.targets_by)
    index_path = BUNDLED_DIR / INDEX_FILE
    index = json.loads(index_path.read_text()) if index_path.is_file() else {"models": {}, "default": {}}
    target = BUNDLED_DIR / args.name
    staging = BUNDLED_DIR / f".{args.name}.tmp"  # checked before it replaces anything published
    shutil.rmtree(staging, ignore_errors=True)
    try:
        model.save(staging, metadata={"name": args.name}, name=args.name, storage_dtype=storage)
        loaded = Codec.load(staging)
        sha = loaded.weights_sha256()
        if sha != model.eval().weights_sha256():
            raise SystemExit(f"{staging}: the loaded weights differ from the ones measured")
        tables = file_sha256(staging / ENTROPY_FILE)
        old = index["models"].get(args.name)
        if old and (old["sha256"] != sha or old.get("entropy_sha256", tables) != tables):
            raise SystemExit(f"{args.name} is already published with other weights or entropy tables: its files "
                             "would no longer decode; choose a new name")
        size_mb = sum(p.stat().st_size for p in staging.iterdir()) / 1e6
        if size_mb > MAX_WEIGHTS_MB:
            raise SystemExit(f"{args.name} holds {size_mb:.1f} MB > {MAX_WEIGHTS_MB} MB")
        training = _training(args.run)
        (staging / "MODEL_CARD.md").write_text(model_card(args.name, loaded, rows, training, args, len(fit_x), len(val_x)))
        shutil.rmtree(target, ignore_errors=True)
        staging.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    index["models"][args.name] = {"sha256": sha, "entropy_sha256": tables, "modality": kind, "description": args.description}
    if args.default:
        index["default"][kind] = args.name
    index_path.write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")
    # the round trip through the published folder decodes what the in-memory model wrote
    x = val_x[0]
    y, _ = decompress(compress_signal(x[0] if kind == "audio" else x, rate="max", model=loaded,
                                      sample_rate=model.sample_rate).data, model=loaded)
    print(json.dumps({"name": args.name, "sha256": sha, "size_mb": round(size_mb, 2), "points": rows}, indent=1))


if __name__ == "__main__":
    main()
