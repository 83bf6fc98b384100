"""Publishing scripts: re-measuring a published model leaves what it decodes untouched."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from codec.hub import file_sha256 as _digest
from codec.model import Codec
from tests.published import tiny_published_model

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def test_remeasure_sets_the_beam_and_rates_without_touching_weights_or_tables(tmp_path):
    from scripts.remeasure_model import main

    model, weights, _ = tiny_published_model(tmp_path, "audio-t1", "# audio-t1\n\n## Training\n\nby hand\n\n## Rate points\n\nold\n")
    val = tmp_path / "val"
    val.mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):
        sf.write(val / f"clip{i}.wav", (0.3 * np.sin(np.arange(24000) * 0.05 * (i + 1)) + 0.05 * rng.standard_normal(24000)), 24000)
    folder = weights / "audio-t1"
    before = {f: _digest(folder / f) for f in ("model.safetensors", "entropy.safetensors")}
    greedy = Codec.load(folder)
    x = torch.from_numpy(sf.read(val / "clip0.wav", dtype="float32")[0])[None, None]
    old_file = greedy.compress(x, "n3")

    summary = main(["audio-t1", "--beam", "8", "--val", str(val), "--weights-dir", str(weights)])

    assert {f: _digest(folder / f) for f in before} == before
    loaded = Codec.load(folder)
    assert loaded.beam_size == 8 and loaded.weights_sha256() == model.weights_sha256()
    assert loaded.measured_rates == {r["point"]: r["measured"] for r in summary["points"]}
    assert set(loaded.target_points) <= {p.name for p in loaded.rate_points()} and loaded.target_points
    card = (folder / "MODEL_CARD.md").read_text()
    assert card.startswith("# audio-t1\n\n## Training\n\nby hand\n") and "old" not in card
    assert "beam search of width 8" in card and "| n3 |" in card
    # files written before still decode, and the new default writes other (closer) codes
    y_old, _ = loaded.decompress(old_file)
    assert torch.equal(y_old, greedy.decompress(old_file)[0])
    assert not torch.equal(loaded.encode(x, "n3").codes, greedy.encode(x, "n3").codes)
    with pytest.raises(SystemExit, match="not a published model"):
        main(["audio-t2", "--beam", "8", "--val", str(val), "--weights-dir", str(weights)])


def test_targets_by_pesq_keep_the_points_no_cheaper_point_beats():
    from codec.hub import load_model
    from scripts.remeasure_model import perceptual_points

    model = Codec.load(ROOT / "tests" / "golden" / "tiny_audio_model")
    names = [p.name for p in model.rate_points()]  # n1, n2 by rate
    assert perceptual_points(model, [{"point": names[0], "pesq": 1.5}, {"point": names[1], "pesq": 1.4}]) == names[:1]
    assert perceptual_points(model, [{"point": names[0], "pesq": 1.2}, {"point": names[1], "pesq": 1.4}]) == names
    bundled = load_model("audio-v3")  # its targets come from PESQ with band energies: the lowest point is one
    assert bundled.target_points[0] == bundled.rate_points()[0].name and len(bundled.target_points) > 10


def test_rate_targets_rank_image_points_by_psnr_or_by_ms_ssim():
    from scripts.bundle_model import rate_section, target_points

    # b is cheaper than c and worse in PSNR but better in MS-SSIM; d is dominated in both
    rows = [{"point": "a", "measured": 0.05, "q1": 22.0, "q2": 0.80}, {"point": "b", "measured": 0.10, "q1": 24.0, "q2": 0.91},
            {"point": "c", "measured": 0.12, "q1": 24.5, "q2": 0.90}, {"point": "d", "measured": 0.15, "q1": 24.2, "q2": 0.89}]
    assert target_points("image", rows, "measured") == ["a", "b", "c"]
    assert target_points("image", rows, "ms_ssim") == ["a", "b"]
    audio = [{**r, "q2": 1.0 - r["q2"]} for r in rows]  # mel distance: lower is better
    assert target_points("audio", audio, "measured") == ["a", "b"]
    with pytest.raises(SystemExit, match="for image models"):
        target_points("audio", audio, "ms_ssim")
    model = Codec.load(ROOT / "tests" / "golden" / "tiny_image_model")
    model.target_points = ["a", "b"]
    rows = [{**r, "bits_per_token": 4, "nominal": 0.1} for r in rows]
    assert "beats in MS-SSIM at a lower" in "\n".join(rate_section(model, rows, 2, "ms_ssim"))
    assert "beats in PSNR dB at a lower" in "\n".join(rate_section(model, rows, 2))


def test_fit_envelope_publishes_context_coded_energies_under_a_new_name(tmp_path):
    from codec.envelope import ContextBandEnergy
    from scripts.fit_envelope import main

    model, weights, entry = tiny_published_model(tmp_path, "audio-t1", "# audio-t1\n\n## Training\n\nby hand\n")
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        (tmp_path / split).mkdir()
        for i in range(3):
            env = np.abs(np.sin(np.arange(48000) / 3000 * (i + 1)))
            sf.write(tmp_path / split / f"clip{i}.wav",
                     env * (0.3 * np.sin(np.arange(48000) * 0.05 * (i + 1)) + 0.05 * rng.standard_normal(48000)), 24000)
    source = {f: _digest(weights / "audio-t1" / f) for f in ("model.safetensors", "entropy.safetensors", "config.json")}
    args = ["audio-t1", "--train", str(tmp_path / "train"), "--val", str(tmp_path / "val"), "--points", "2",
            "--contexts", "--rd-lambda", "0.25", "--weights-dir", str(weights)]

    summary = main([*args, "--publish-as", "audio-t2", "--description", "with contexts"])

    assert {f: _digest(weights / "audio-t1" / f) for f in source} == source  # the source is untouched
    index = json.loads((weights / "index.json").read_text())
    assert index["models"]["audio-t2"] == {**entry, "description": "with contexts"}
    new = Codec.load(weights / "audio-t2")
    assert new.name == "audio-t2" and new.weights_sha256() == model.weights_sha256()
    assert isinstance(new.envelope, ContextBandEnergy) and new.envelope.context_rows is not None
    assert new.envelope.rd_lambda == 0.25 and new.envelope_kbps == summary["measured_kbps"] > 0
    assert (weights / "audio-t2" / "MODEL_CARD.md").read_text().startswith("# audio-t2\n")
    x = torch.from_numpy(sf.read(tmp_path / "val" / "clip0.wav", dtype="float32")[0])[None, None]
    y, header = new.decompress(new.compress(x, "n2"))
    assert header["envelope"] == "band-energy-context" and y.shape == x.shape
    with pytest.raises(SystemExit, match="already published"):
        main([*args, "--publish-as", "audio-t2"])
    assert not any(p.name.startswith(".") for p in weights.iterdir())  # no staging folder left behind
    with pytest.raises(SystemExit, match="publish-as"):
        main(args)  # never in place: files written before would no longer decode
