"""Give a published model a new default encoder setting and re-measure its rate points.

    python scripts/remeasure_model.py audio-v3 --beam 16
    python scripts/remeasure_model.py audio-v3          # the same settings, e.g. after a format change
    python scripts/remeasure_model.py audio-v3 --targets-by pesq   # rate targets by speech quality

What a bundled model decodes is fixed by its weights and entropy tables; its name stands for
them, so they never change (``scripts/bundle_model.py`` publishes new ones under a new name).
The encoder may still improve without them: a residual code search (``beam_size``) finds codes
closer to the encoder's latents, and every file it writes decodes with every build. This script

1. sets the model's default ``beam_size`` (stored in its ``config.json``) if ``--beam`` is given,
2. measures every rate point's real rate and quality on validation data exactly as
   ``bundle_model.py`` does, and recomputes the Pareto points that rate targets choose among,
   (``--targets-by pesq``, audio: by wide-band PESQ of files written with the model's default
   side information, on the validation *speech* clips, instead of by mel distance: band energies
   change what a point sounds like more than its mel distance says; ``--targets-by ms_ssim``,
   images: by MS-SSIM instead of PSNR, for a model trained for it),
3. rewrites ``config.json`` and the "Rate points" section of ``MODEL_CARD.md`` only, after
   checking that the weights hash is the published one; the weights and entropy files are not
   written (their bytes are compared before and after).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from codec.hub import BUNDLED_DIR, INDEX_FILE, file_sha256  # noqa: E402
from codec.io import AUDIO_SUFFIXES  # noqa: E402
from codec.model import CONFIG_FILE, ENTROPY_FILE, SHARED_FILES_KEY, WEIGHTS_FILE, Codec, config_text, model_files  # noqa: E402
from scripts.bundle_model import _clips, _files, measure, pareto_points, rate_section, signals, target_points  # noqa: E402

CARD = "MODEL_CARD.md"
SECTION = "## Rate points"


def replace_rate_section(card: str, section: list[str]) -> str:
    """The card with its "Rate points" section (to the end of the card) replaced by ``section``."""
    start = card.find(SECTION)
    if start < 0:
        raise ValueError(f"the model card has no {SECTION!r} section")
    return card[:start] + "\n".join(section)


def insert_card_section(folder: Path, source: str, section: list[str]) -> None:
    """Insert ``section`` (lines) into the card in ``folder`` before its :data:`SECTION` (a new
    decoder side's description, published from ``source``)."""
    card = (folder / CARD).read_text()
    at = card.find(SECTION)
    if at < 0:
        raise SystemExit(f"{source}'s card has no {SECTION!r} section")
    (folder / CARD).write_text(card[:at] + "\n".join(section) + "\n" + card[at:])


def perceptual_section(model: Codec, section: list[str], rows: list[dict], clips: int) -> list[str]:
    """The card's rate section with the choice of target points by PESQ stated and its table added."""
    start = next(i for i, line in enumerate(section) if line.startswith("Rate targets ("))
    side = " with band energies" if model.envelope is not None and model.envelope_default else ""
    lines = section[:start] + [
        f"Rate targets (`--rate 3kbps`) choose among the points no other point beats in wide-band PESQ at a lower "
        f"rate (measured rate{' plus the band energies' if side else ''}), on {clips} validation speech clips "
        f"(Czech and Dutch, 2-10 s) written{side} and read back (`--targets-by pesq`): "
        f"{', '.join(model.target_points)}. Every point stays usable by name.", "",
        "| point | PESQ | STOI |", "|---|---:|---:|",
    ] + [f"| {r['point']} | {r['pesq']:.3f} | {r['stoi']:.3f} |" for r in rows]
    return lines + section[start + 1:]


def load_published(weights_dir: Path, name: str) -> tuple[Path, Codec, dict, dict[str, str]]:
    """A bundled model's folder, the model, its index entry and the hashes of its weight and table
    files, after checking that they are the published ones."""
    folder = weights_dir / name
    index = json.loads((weights_dir / INDEX_FILE).read_text())
    if name not in index["models"]:
        raise SystemExit(f"{name} is not a published model (see {weights_dir / INDEX_FILE})")
    before = _hashes(folder)
    model = Codec.load(folder)
    published = index["models"][name]
    if model.weights_sha256() != published["sha256"] or published.get("entropy_sha256", before[ENTROPY_FILE]) != before[ENTROPY_FILE]:
        raise SystemExit(f"{folder}: the weights or entropy tables differ from the published ones")
    return folder, model, published, before


def _hashes(folder: Path) -> dict[str, str | None]:
    """The hashes of a model folder's weight and table files, its own or shared (:func:`codec.model.model_files`)."""
    files = model_files(folder)
    return {f: file_sha256(files[f]) for f in (WEIGHTS_FILE, ENTROPY_FILE)}


def reload_unchanged(folder: Path, published: dict, before: dict[str, str]) -> Codec:
    """The model as its folder now holds it, after checking that only its config and card changed."""
    loaded = Codec.load(folder)
    after = _hashes(folder)
    if after != before or loaded.weights_sha256() != published["sha256"]:
        raise SystemExit(f"{folder}: the published weights or tables changed")
    return loaded


@contextmanager
def publish_copy(weights_dir: Path, source: str, new: str, published: dict, description: str) -> Iterator[Path]:
    """Publish a copy of the model ``source`` as ``new``: yields a staging copy of its folder (its
    card titled ``new``; its weight, table and postfilter files shared with the folder that holds
    them, not copied: ``shared_files``) to change; when the block ends without an error the copy becomes
    ``weights_dir / new`` and ``index.json`` gets an entry with ``published``'s hashes and
    ``description``. A published name is refused (it never changes); on an error nothing is left."""
    index = json.loads((weights_dir / INDEX_FILE).read_text())
    if new in index["models"] or (weights_dir / new).exists():
        raise SystemExit(f"{new} is already published: a published name never changes")
    staging = weights_dir / f".{new}.tmp"
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(weights_dir / source, staging)
    try:
        _share_from(weights_dir, source, staging)
        card = (staging / CARD).read_text().replace(f"# {source}\n", f"# {new}\n", 1)
        (staging / CARD).write_text(card)
        yield staging
        staging.rename(weights_dir / new)
        index["models"][new] = {**published, "description": description}
        tmp = weights_dir / (INDEX_FILE + ".tmp")
        tmp.write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")
        tmp.replace(weights_dir / INDEX_FILE)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _share_from(weights_dir: Path, source: str, staging: Path) -> None:
    """Make the staging copy of ``source`` share its weight, table and postfilter files with the
    folder that holds them (``source`` or the one it shares them from) instead of copying them."""
    config = json.loads((staging / CONFIG_FILE).read_text())
    shared = dict(config.get(SHARED_FILES_KEY) or {})
    for name, path in model_files(weights_dir / source).items():  # each in weights_dir/<holder>/
        if path.is_file():
            shared[name] = path.parent.name
            (staging / name).unlink(missing_ok=True)
    if shared:
        config[SHARED_FILES_KEY] = shared
        (staging / CONFIG_FILE).write_text(config_text(config))


def speech_clips(model: Codec, val: Path, limit: int) -> list[torch.Tensor]:
    """Up to ``limit`` clips (10 s at most, at least 2 s) of the ``speech*`` folders of ``val``, at the model's rate."""
    files = [f for sub in sorted(val.glob("speech*")) for f in _files(sub, AUDIO_SUFFIXES, 0)]
    clips = [c for f in files for c in _clips(f, int(model.sample_rate), 10.0)[:1] if c.shape[-1] >= 2 * int(model.sample_rate)]
    return clips[:: max(1, len(clips) // limit)][:limit]


def perceptual_rows(model: Codec, clips: list[torch.Tensor]) -> list[dict]:
    """Mean wide-band PESQ and STOI of every rate point over ``clips`` (files written with the
    model's default side information and read back)."""
    from codec.evaluate import audio_quality

    rows = []
    for point in model.rate_points():
        scores = []
        for x in clips:
            y, _ = model.decompress(model.compress_detailed(x, point.name).data)
            scores.append(audio_quality(x[0, 0].numpy(), y[0, 0].numpy(), int(model.sample_rate)))
        rows.append({"point": point.name, "pesq": float(np.nanmean([q["pesq"] for q in scores])),
                     "stoi": float(np.mean([q["stoi"] for q in scores]))})
    return rows


def perceptual_points(model: Codec, rows: list[dict]) -> list[str]:
    """Points no other point beats in PESQ at a lower or equal rate, the rate being what a rate
    target counts: the measured rate plus the default side information's."""
    side = model.envelope_kbps if model.envelope_default else 0.0
    rate = {p.name: p.rate + side for p in model.rate_points()}
    return pareto_points([{"point": r["point"], "measured": rate[r["point"]], "q1": r["pesq"]} for r in rows],
                         higher_is_better=True)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("name", help="a bundled model (codec/weights/<name>)")
    ap.add_argument("--beam", type=int, default=None, help="the model's default beam_size (1: greedy; default: keep it)")
    ap.add_argument("--val", type=Path, default=None, help="validation data (default data/<images|audio>/val)")
    ap.add_argument("--val-files", type=int, default=8)
    ap.add_argument("--targets-by", choices=("measured", "pesq", "ms_ssim"), default="measured",
                    help="the rate points rate targets choose among: by the measured quality (PSNR, mel "
                         "distance), audio by PESQ on the validation speech, or images by MS-SSIM")
    ap.add_argument("--speech-files", type=int, default=12, help="--targets-by pesq: validation speech clips")
    ap.add_argument("--weights-dir", type=Path, default=BUNDLED_DIR, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    torch.set_grad_enabled(False)
    folder, model, published, before = load_published(args.weights_dir, args.name)
    if args.beam is not None:
        model.beam_size = args.beam  # validated when the config is read back below
    kind = model.modality
    val = args.val or ROOT / "data" / ("images" if kind == "image" else "audio") / "val"
    t0 = time.time()
    val_x = signals(model, val, args.val_files)
    if not val_x:
        raise SystemExit(f"{val}: no validation signals")
    rows = measure(model, val_x)
    model.measured_rates = {r["point"]: r["measured"] for r in rows}
    perceptual: list[dict] = []
    if args.targets_by == "pesq":
        if kind != "audio":
            raise SystemExit("--targets-by pesq is for audio models")
        clips = speech_clips(model, val, args.speech_files)
        if not clips:
            raise SystemExit(f"{val}: no speech clips of 2 s or more in its speech* folders")
        perceptual = perceptual_rows(model, clips)
        model.target_points = perceptual_points(model, perceptual)
    else:
        model.target_points = target_points(kind, rows, args.targets_by)
    config = config_text(model.export_config())
    section = rate_section(model, rows, len(val_x), args.targets_by)
    if perceptual:
        section = perceptual_section(model, section, perceptual, len(clips))
    card = replace_rate_section((folder / CARD).read_text(), section)
    (folder / (CONFIG_FILE + ".tmp")).write_text(config)
    (folder / (CARD + ".tmp")).write_text(card)
    (folder / (CONFIG_FILE + ".tmp")).replace(folder / CONFIG_FILE)
    (folder / (CARD + ".tmp")).replace(folder / CARD)
    if reload_unchanged(folder, published, before).beam_size != model.beam_size:
        raise SystemExit(f"{folder}: the beam size did not take")
    summary = {"name": args.name, "beam_size": model.beam_size, "targets_by": args.targets_by, "perceptual": perceptual,
               "seconds": round(time.time() - t0, 1), "target_points": model.target_points, "points": rows}
    print(json.dumps(summary, indent=1))
    return summary


if __name__ == "__main__":
    main()
