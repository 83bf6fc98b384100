"""A tiny trained audio codec, published in a weights folder the way the bundled models are, for
the tests of the publishing scripts."""

import json
from pathlib import Path

import torch

from codec.hub import file_sha256
from codec.model import Codec


def tiny_audio_codec() -> Codec:
    """A small audio codec (3 RVQ levels of 16 codes) after one training step, in eval mode."""
    torch.manual_seed(0)
    model = Codec.build("audio-seanet", "rvq", network_kwargs=dict(channels=4, strides=[2, 4, 5, 8], latent_dim=8),
                        quantizer_kwargs=dict(codebook_size=16, num_levels=3, init="kmeans", quantizer_dropout=0.0))
    model.train()(torch.rand(2, 1, 6000) * 2 - 1)
    return model.eval()


def tiny_published_model(tmp_path: Path, name: str, card: str) -> tuple[Codec, Path, dict]:
    """:func:`tiny_audio_codec` with entropy tables, saved as ``<tmp_path>/weights/<name>`` with the
    model card ``card`` and an ``index.json`` that lists it; returns the model, the weights folder
    and its index entry."""
    model = tiny_audio_codec()
    t = torch.arange(24000 * 2) / 24000
    model.fit_entropy_tables([(0.4 * torch.sin(2 * torch.pi * f * t)).reshape(1, 1, -1) for f in (150, 600)])
    weights = tmp_path / "weights"
    model.save(weights / name, name=name)
    (weights / name / "MODEL_CARD.md").write_text(card)
    entry = {"sha256": model.weights_sha256(), "entropy_sha256": file_sha256(weights / name / "entropy.safetensors"),
             "modality": "audio", "description": ""}
    (weights / "index.json").write_text(json.dumps({"default": {}, "models": {name: entry}}))
    return model, weights, entry
