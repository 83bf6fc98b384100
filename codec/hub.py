"""Finding models by name: the bundled ones, registered folders, or a path.

A model is a folder written by :meth:`codec.model.Codec.save` (``config.json`` +
``model.safetensors`` [+ ``entropy.safetensors``] [+ ``postfilter.safetensors``, a learned
decoder postfilter] [+ ``shallow_decoder.safetensors``, a decoder of shallow codes]; a folder may share these files with a sibling folder instead of holding a
copy, :func:`codec.model.model_files`). Names are looked up, in order, in

1. the folders listed in the environment variable ``VQCODEC_MODELS`` (``os.pathsep``-separated;
   each holds model folders; a model's name is the ``name`` in its ``config.json``, else its
   folder's name), then
2. the models bundled with the package under ``codec/weights/``.

Bundled names are versioned (``image-v1``): ``codec/weights/index.json`` records each name's
weights hash, its entropy tables' hash (and a learned postfilter's and a shallow decoder's) and the default per modality;
a change of any is published under a new name, so every file ever written by a bundled model
stays decodable and decodes as it did.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from codec.model import CONFIG_FILE, Codec

__all__ = ["ModelNotFound", "ModelEntry", "list_models", "load_model", "default_model_name", "file_sha256", "BUNDLED_DIR"]

BUNDLED_DIR = Path(__file__).parent / "weights"
INDEX_FILE = "index.json"
ENV_VAR = "VQCODEC_MODELS"


class ModelNotFound(LookupError):
    """No model of that name or path; the message says what is available."""


@dataclass(frozen=True)
class ModelEntry:
    """A model that can be loaded by name."""

    name: str
    path: Path
    modality: str
    source: str  # "bundled" or "registered"
    default: bool
    description: str


def file_sha256(path: Path) -> str | None:
    """SHA-256 of a file's bytes (``None`` if it does not exist): the index records the entropy
    tables' so a published name never gets other tables (its files would decode wrongly)."""
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None


def _index() -> dict[str, Any]:
    path = BUNDLED_DIR / INDEX_FILE
    if not path.is_file():
        return {"models": {}, "default": {}}
    return json.loads(path.read_text())


def _read_config(folder: Path) -> dict[str, Any] | None:
    try:
        cfg = json.loads((folder / CONFIG_FILE).read_text())
    except (OSError, ValueError):
        return None
    return cfg if isinstance(cfg, dict) else None


def _roots() -> list[tuple[Path, str]]:
    roots = [(Path(p), "registered") for p in os.environ.get(ENV_VAR, "").split(os.pathsep) if p]
    return roots + [(BUNDLED_DIR, "bundled")]


def list_models() -> list[ModelEntry]:
    """Every model loadable by name, registered ones first (they shadow bundled names)."""
    index = _index()
    defaults = set(index.get("default", {}).values())
    seen: dict[str, ModelEntry] = {}
    for root, source in _roots():
        if not root.is_dir():
            continue
        for folder in sorted(p for p in root.iterdir() if p.is_dir()):
            cfg = _read_config(folder)
            name = str(cfg.get("name") or folder.name) if cfg is not None else ""
            if cfg is None or name in seen:
                continue
            info = index.get("models", {}).get(name, {}) if source == "bundled" else {}
            seen[name] = ModelEntry(
                name=name,
                path=folder,
                modality=str(cfg.get("modality", "?")),
                source=source,
                default=source == "bundled" and folder.name in defaults,
                description=str(info.get("description", cfg.get("description", ""))),
            )
    return list(seen.values())


def default_model_name(modality: str) -> str:
    """The bundled default model for ``"image"`` or ``"audio"``."""
    name = _index().get("default", {}).get(modality)
    if not name:
        raise ModelNotFound(
            f"no bundled {modality} model in this build; pass --model PATH to a model folder "
            f"(train one with `vqcodec train {modality}_codec`)"
        )
    return str(name)


_CACHE: dict[tuple[str, str], Codec] = {}


def resolve(name_or_path: str | Path) -> Path:
    """A model name or folder path -> the model folder."""
    path = Path(name_or_path)
    if path.is_dir():
        return path
    for entry in list_models():
        if entry.name == str(name_or_path):
            return entry.path
    names = ", ".join(e.name for e in list_models()) or "none"
    raise ModelNotFound(f"no model named {str(name_or_path)!r} and no such folder (available: {names})")


def load_model(name_or_path: str | Path, device: str | torch.device = "cpu") -> Codec:
    """Load a model by name (bundled or registered) or from a folder, in eval mode on ``device``.

    Loaded models are cached per folder and device; the name of a folder loaded by path is the
    ``name`` in its config (empty if none).
    """
    folder = resolve(name_or_path).resolve()
    key = (str(folder), str(device))
    if key not in _CACHE:
        _CACHE[key] = Codec.load(folder, device=device)
    return _CACHE[key]
