"""The bundled models: published names match their weights, load offline, and code real signals."""

import json

import pytest
import torch
from typer.testing import CliRunner

import codec
from cli.app import app
from codec.bitstream import read_container
from codec.hub import BUNDLED_DIR, INDEX_FILE, file_sha256, list_models
from codec.model import model_files

INDEX = json.loads((BUNDLED_DIR / INDEX_FILE).read_text()) if (BUNDLED_DIR / INDEX_FILE).is_file() else {"models": {}, "default": {}}
NAMES = sorted(INDEX["models"])


def test_index_is_consistent():
    for modality, name in INDEX["default"].items():
        assert name in INDEX["models"] and INDEX["models"][name]["modality"] == modality
    for name in NAMES:
        assert name.rsplit("-v", 1)[-1].isdigit(), f"{name}: bundled names are versioned"
        folder = BUNDLED_DIR / name
        assert (folder / "MODEL_CARD.md").is_file()
        assert sum(p.stat().st_size for p in folder.iterdir()) <= 15e6


def test_no_weight_file_is_stored_twice():
    # models published by a config change share the files they keep (scripts/share_files.py)
    stored = {}
    for name in NAMES:
        for path in (BUNDLED_DIR / name).glob("*.safetensors"):
            digest = file_sha256(path)
            assert (path.name, digest) not in stored, f"{name}/{path.name} repeats {stored.get((path.name, digest))}'s"
            stored[(path.name, digest)] = name


@pytest.mark.parametrize("name", ["audio-v3", "image-v3"])
def test_saving_loaded_entropy_tables_writes_the_published_bytes(name, tmp_path):
    # a model republished with its source's tables (a decoder fine-tune, --keep-tables) writes the
    # source's file byte for byte, so scripts/share_files.py can share it
    if name not in NAMES:
        pytest.skip(f"needs {name}")
    model = codec.load_model(name)
    model.save(tmp_path / "copy")
    assert file_sha256(tmp_path / "copy" / "entropy.safetensors") == INDEX["models"][name]["entropy_sha256"]


@pytest.mark.parametrize("name", NAMES)
def test_published_weights_keep_their_hash(name):
    # New weights need a new name: files written by this one must stay decodable.
    model = codec.load_model(name)
    assert model.weights_sha256() == INDEX["models"][name]["sha256"]
    # ... and their tables: the same codes must be read from the same bytes
    files = model_files(BUNDLED_DIR / name)  # its own or shared with an earlier model
    assert file_sha256(files["entropy.safetensors"]) == INDEX["models"][name]["entropy_sha256"]
    # ... and a learned postfilter's weights: what a file decodes to
    assert file_sha256(files["postfilter.safetensors"]) == INDEX["models"][name].get("postfilter_sha256")
    # ... and a shallow decoder's: what the lowest rates decode to
    assert file_sha256(files["shallow_decoder.safetensors"]) == INDEX["models"][name].get("shallow_decoder_sha256")
    assert model.name == name and model.entropy_tables and model.measured_rates


@pytest.mark.parametrize("name", NAMES)
def test_bundled_models_round_trip_and_keep_rates(name):
    model = codec.load_model(name)
    torch.manual_seed(0)
    if model.modality == "audio":
        t = torch.arange(24000 * 3) / 24000
        x = (0.3 * torch.sin(2 * torch.pi * 180 * t) * (1 + torch.sin(2 * torch.pi * 2 * t)))[None]
        targets = ["3kbps", "6kbps"]
        out = [codec.compress_signal(x, rate=r, model=model, sample_rate=24000) for r in targets]
    else:
        yy, xx = torch.meshgrid(torch.arange(96), torch.arange(128), indexing="ij")
        x = torch.stack([torch.sin(xx / 7), torch.cos(yy / 9), torch.sin((xx + yy) / 11)])[None] * 0.4 + 0.5
        targets = ["0.1bpp", "0.3bpp"]
        out = [codec.compress_signal(x, rate=r, model=model) for r in targets]
    for target, o in zip(targets, out):
        assert o.real_rate <= float(target[:-4 if target.endswith("kbps") else -3]) or o.notes
        y, info = codec.decompress(o.data)  # the model is found by the name in the header
        assert y.shape[-1] == x.shape[-1] and info["model"]["name"] == name


def test_models_command_lists_the_bundled_models():
    out = CliRunner().invoke(app, ["models", "--json"])
    assert out.exit_code == 0
    listed = {m["name"]: m for m in json.loads(out.output)}
    for name in NAMES:
        assert listed[name]["source"] == "bundled"
    assert {e.name for e in list_models() if e.default} == set(INDEX["default"].values())


@pytest.mark.parametrize("source, tuned", [("audio-v3", "audio-v4"), ("audio-v4", "audio-v5"), ("audio-v5", "audio-v6")])
def test_a_decoder_fine_tune_writes_the_codes_of_its_source_and_decodes_them_its_own_way(source, tuned):
    # audio-v4 is audio-v3 with a fine-tuned decoder, audio-v5 audio-v4 with one and audio-v6
    # audio-v5 with one: the same encoder, quantizer, beam and entropy tables, so the same payload
    # bytes at every point; only what they decode to differs
    if not {source, tuned} <= set(NAMES):
        pytest.skip(f"needs {source} and {tuned}")
    v3, v4 = codec.load_model(source), codec.load_model(tuned)
    dec3, dec4 = dict(v3.decoder.state_dict()), dict(v4.decoder.state_dict())
    others3 = {k: v for k, v in v3.state_dict().items() if not k.startswith("decoder.")}
    others4 = {k: v for k, v in v4.state_dict().items() if not k.startswith("decoder.")}
    assert others3.keys() == others4.keys() and all(torch.equal(others3[k], others4[k]) for k in others3)
    assert any(not torch.equal(dec3[k], dec4[k]) for k in dec3)
    assert v3.measured_rates == pytest.approx(v4.measured_rates, rel=1e-3)
    torch.manual_seed(0)
    t = torch.arange(24000) / 24000
    x = (0.3 * torch.sin(2 * torch.pi * 180 * t) + 0.01 * torch.randn(t.shape))[None, None]
    for point in ("k64-n1", "k256-n4", "k1024-n16"):
        a = v3.compress_detailed(x, point, envelope=False).data
        b = v4.compress_detailed(x, point, envelope=False).data
        assert read_container(a)[1] == read_container(b)[1]
