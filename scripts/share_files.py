"""Store every weight file of a weights folder once: byte-identical copies become shared.

    python scripts/share_files.py                 # the bundled models (codec/weights)
    python scripts/share_files.py --check         # exit 1 if a file is stored twice, change nothing

Models published from another by a config change (a postfilter, an envelope) keep the other's
``model.safetensors``, ``entropy.safetensors`` or ``postfilter.safetensors`` byte for byte. Each
such copy is removed and the model's ``config.json`` names the folder that holds the file
(``shared_files``, resolved by :func:`codec.model.model_files`): the folder of the earliest
version (``audio-v3`` before ``audio-v10``) among those holding the same bytes. Every model is
loaded before and after, and its weights hash, entropy tables and postfilter must not change;
a model whose files cannot all be checked is left as it is.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from codec.hub import BUNDLED_DIR, INDEX_FILE, file_sha256  # noqa: E402
from codec.model import CONFIG_FILE, SHARED_FILES_KEY, SHAREABLE_FILES, Codec, config_text, model_files  # noqa: E402


def _order(name: str) -> tuple[str, int, str]:
    stem, _, version = name.rpartition("-v")
    return (stem, int(version), name) if version.isdigit() else (name, 0, name)


def duplicates(weights_dir: Path) -> list[tuple[str, str, str]]:
    """``(model, file, holder)`` for every file a model folder stores that an earlier folder
    (:func:`_order`) of ``weights_dir`` already stores byte for byte."""
    names = sorted((p.name for p in weights_dir.iterdir() if (p / CONFIG_FILE).is_file()), key=_order)
    first: dict[tuple[str, str], str] = {}  # (file, sha256) -> the earliest folder storing it
    found = []
    for name in names:
        for file in SHAREABLE_FILES:
            path = weights_dir / name / file
            if not path.is_file():
                continue
            key = (file, file_sha256(path))
            if key in first:
                found.append((name, file, first[key]))
            else:
                first[key] = name
    return found


def _fingerprint(folder: Path) -> tuple[str, dict[str, str | None]]:
    model = Codec.load(folder)
    files = {f: file_sha256(p) for f, p in model_files(folder).items()}
    return model.weights_sha256(), files


def share(weights_dir: Path) -> list[tuple[str, str, str]]:
    """Replace every duplicate (:func:`duplicates`) by a reference to its holder; returns them."""
    found = duplicates(weights_dir)
    by_model: dict[str, list[tuple[str, str]]] = {}
    for name, file, holder in found:
        by_model.setdefault(name, []).append((file, holder))
    for name, shared in by_model.items():
        folder = weights_dir / name
        before = _fingerprint(folder)
        config = json.loads((folder / CONFIG_FILE).read_text())
        config[SHARED_FILES_KEY] = {**config.get(SHARED_FILES_KEY, {}), **dict(shared)}
        tmp = folder / (CONFIG_FILE + ".tmp")
        tmp.write_text(config_text(config))
        tmp.replace(folder / CONFIG_FILE)
        for file, _ in shared:
            (folder / file).unlink()
        if _fingerprint(folder) != before:
            raise SystemExit(f"{folder}: the model changed when its files were shared")
    return found


def main(argv: list[str] | None = None) -> list[tuple[str, str, str]]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--weights-dir", type=Path, default=BUNDLED_DIR)
    ap.add_argument("--check", action="store_true", help="only report duplicates (exit 1 if any)")
    args = ap.parse_args(argv)
    if not (args.weights_dir / INDEX_FILE).is_file():
        raise SystemExit(f"{args.weights_dir} has no {INDEX_FILE}")
    found = duplicates(args.weights_dir) if args.check else share(args.weights_dir)
    for name, file, holder in found:
        print(f"{name}/{file}: {'the same bytes as' if args.check else 'now shared from'} {holder}")
    if args.check and found:
        raise SystemExit(1)
    return found


if __name__ == "__main__":
    main()
