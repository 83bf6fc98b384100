"""vqcodec compress / decompress / info / rates / models / tokenize / detokenize on real files."""

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from PIL import Image
from typer.testing import CliRunner

from cli.app import app

runner = CliRunner()


def run(*args, input=None):
    return runner.invoke(app, [str(a) for a in args], input=input)


def files(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def test_compress_and_decompress_one_file_each_way(model_dirs, media, tmp_path):
    out = run("compress", media / "tone.wav", "-o", tmp_path / "t.vqc", "--rate", "3kbps", "-m", model_dirs["audio"])
    assert out.exit_code == 0, out.output
    assert "compressed 1 file" in out.output
    out = run("decompress", tmp_path / "t.vqc", "-o", tmp_path / "t.flac", "-m", model_dirs["audio"])
    assert out.exit_code == 0, out.output
    info = sf.info(tmp_path / "t.flac")
    assert (info.samplerate, info.channels, info.frames) == (44100, 2, 88200)
    out = run("info", tmp_path / "t.vqc", "--json")
    assert out.exit_code == 0
    (entry,) = json.loads(out.output)
    assert entry["model"]["name"] == "audio-test" and entry["real_rate"] <= 3.0 and entry["unit"] == "kbps"
    assert entry["bytes"] == (tmp_path / "t.vqc").stat().st_size
    # audio-test is not installed: the header's own fields, the duration from its source record, and why
    assert isinstance(entry["rate_point"], int) and entry["duration_s"] == 2.0 and "not installed here" in entry["note"]
    out = run("info", tmp_path / "t.vqc", "--json", "-m", model_dirs["audio"])
    assert out.exit_code == 0, out.output
    (full,) = json.loads(out.output)
    assert full["modality"] == "audio" and isinstance(full["rate_point"], str) and full["shape"][:2] == [1, 2]
    assert full["real_rate"] == pytest.approx(entry["real_rate"], rel=1e-3) and "note" not in full
    out = run("info", tmp_path / "t.vqc")
    assert out.exit_code == 0 and "pass --model" in " ".join(out.output.split())


def test_folders_are_recursed_and_mirrored(model_dirs, media, tmp_path):
    images = tmp_path / "images"
    (images / "sub").mkdir(parents=True)
    for name in ("photo.png", "deep.png", "sub/grey.jpg"):
        (images / name).write_bytes((media / name).read_bytes())
    out = run("compress", images, "-o", tmp_path / "c", "--rate", "max", "-m", model_dirs["image"])
    assert out.exit_code == 0, out.output
    assert files(tmp_path / "c") == ["deep.vqc", "photo.vqc", "sub/grey.vqc"]
    assert "3 files" in out.output  # the summary's total row
    out = run("decompress", tmp_path / "c", "-o", tmp_path / "d", "-m", model_dirs["image"])
    assert out.exit_code == 0, out.output
    assert files(tmp_path / "d") == ["deep.png", "photo.png", "sub/grey.png"]
    assert Image.open(tmp_path / "d" / "sub" / "grey.png").size == (21, 30)


def test_globs_and_default_output_beside_the_input(model_dirs, media):
    out = run("compress", str(media / "*.png"), "--rate", "max", "-m", model_dirs["image"], "-q")
    assert out.exit_code == 0, out.output
    assert (media / "photo.vqc").is_file() and (media / "deep.vqc").is_file()
    out = run("decompress", media / "photo.vqc", "-m", model_dirs["image"])  # photo.png exists: not overwritten
    assert out.exit_code == 1 and "exists (use --force" in out.output
    out = run("decompress", media / "photo.vqc", "-m", model_dirs["image"], "--force", "-q")
    assert out.exit_code == 0


def test_stdin_to_stdout(model_dirs, media):
    out = run("compress", "-", "-o", "-", "--rate", "max", "-m", model_dirs["image"], "--modality", "image",
              input=(media / "photo.png").read_bytes())
    assert out.exit_code == 0
    data = out.stdout_bytes
    assert data[:4] == b"\x89VQC"
    out = run("decompress", "-", "-o", "-", "--format", "png", "-m", model_dirs["image"], input=data)
    assert out.exit_code == 0 and out.stdout_bytes[:8] == b"\x89PNG\r\n\x1a\n"


def _assert_error(out, code, *fragments):
    assert out.exit_code == code, out.output
    assert "Traceback" not in out.output
    for f in fragments:
        assert f in " ".join(out.output.split()), out.output


def test_bad_inputs_fail_cleanly_and_leave_nothing(model_dirs, media, tmp_path):
    a, i = model_dirs["audio"], model_dirs["image"]
    sf.write(tmp_path / "empty.wav", np.zeros((0, 1)), 16000)
    nan = np.zeros((100, 1), np.float32)
    nan[3] = np.inf
    sf.write(tmp_path / "nan.wav", nan, 16000, subtype="FLOAT")
    (tmp_path / "notes.txt").write_text("hello")
    good = tmp_path / "good.vqc"
    assert run("compress", media / "tone.wav", "-o", good, "--rate", "max", "-m", a).exit_code == 0
    data = good.read_bytes()
    (tmp_path / "trunc.vqc").write_bytes(data[: len(data) // 2])
    flipped = bytearray(data)
    flipped[-10] ^= 0x40
    (tmp_path / "flip.vqc").write_bytes(bytes(flipped))
    (tmp_path / "foreign.vqc").write_bytes(b"%PDF-1.4 not ours")
    before = set(files(tmp_path))
    cases = [
        (["compress", tmp_path / "missing.wav", "-o", tmp_path / "o.vqc", "--rate", "max", "-m", a], "no such file"),
        (["compress", "", "-o", tmp_path / "o.vqc", "--rate", "max", "-m", a], "empty string"),  # not the working folder
        (["decompress", " ", "-o", tmp_path / "o.wav", "-m", a], "empty string"),
        (["compress", tmp_path / "notes.txt", "-o", tmp_path / "o.vqc", "--rate", "max"], "unsupported file type"),
        (["compress", tmp_path / "empty.wav", "-o", tmp_path / "o.vqc", "--rate", "max", "-m", a], "empty audio"),
        (["compress", tmp_path / "nan.wav", "-o", tmp_path / "o.vqc", "--rate", "max", "-m", a], "NaN or infinite"),
        (["compress", media / "tone.wav", "-o", tmp_path / "o.vqc", "--rate", "0.2kbps", "-m", a], "below the lowest rate"),
        (["compress", media / "tone.wav", "-o", tmp_path / "o.vqc", "--rate", "0.1bpp", "-m", a], "rate in bpp"),
        (["compress", media / "tone.wav", "-o", tmp_path / "o.vqc", "--rate", "max", "-m", i], "is an image model"),
        (["compress", media / "tone.wav", "-o", tmp_path / "o.vqc", "--rate", "max", "-m", tmp_path / "nomodel"], "no model named"),
        (["decompress", tmp_path / "trunc.vqc", "-o", tmp_path / "o.wav", "-m", a], "truncated"),
        (["decompress", tmp_path / "flip.vqc", "-o", tmp_path / "o.wav", "-m", a], "checksum mismatch"),
        (["decompress", tmp_path / "foreign.vqc", "-o", tmp_path / "o.wav", "-m", a], "not a .vqc file"),
        (["decompress", good, "-o", tmp_path / "o.png", "-m", i], "another model (audio-test, weights"),
        (["decompress", good, "-o", tmp_path / "o.wav"], "not installed here"),
        (["decompress", good, "-o", tmp_path / "o.xyz", "-m", a], "cannot write audio format"),
        (["info", tmp_path / "foreign.vqc"], "not a .vqc file"),
    ]
    for args, fragment in cases:
        _assert_error(run(*args), 1, fragment)
    assert set(files(tmp_path)) == before  # no partial or stray outputs, inputs untouched
    assert good.read_bytes() == data


def test_existing_outputs_are_kept_unless_forced(model_dirs, media, tmp_path):
    target = tmp_path / "t.vqc"
    target.write_bytes(b"precious")
    out = run("compress", media / "tone.wav", "-o", target, "--rate", "max", "-m", model_dirs["audio"])
    _assert_error(out, 1, "exists (use --force")
    assert target.read_bytes() == b"precious"
    assert run("compress", media / "tone.wav", "-o", target, "--rate", "max", "-m", model_dirs["audio"], "--force").exit_code == 0
    assert target.read_bytes()[:4] == b"\x89VQC"


def test_one_bad_file_does_not_stop_the_batch(model_dirs, media, tmp_path):
    (media / "broken.png").write_bytes(b"\x89PNG garbage")
    out = run("compress", media, "-o", tmp_path / "c", "--rate", "max", "-m", model_dirs["image"])
    assert out.exit_code == 1
    assert "broken.png" in out.output and "not an image" in out.output
    assert files(tmp_path / "c") == ["deep.vqc", "photo.vqc", "sub/grey.vqc"]  # audio files are reported too
    assert "tone.wav" in out.output and "is an image model" in " ".join(out.output.split())


def test_debug_shows_the_traceback(model_dirs, tmp_path):
    (tmp_path / "bad.vqc").write_bytes(b"nope")
    out = run("decompress", tmp_path / "bad.vqc", "-o", tmp_path / "x.wav", "-m", model_dirs["audio"], "--debug")
    assert out.exit_code != 0 and out.exception is not None


def test_rates_models_and_json(model_dirs, monkeypatch, tmp_path):
    out = run("rates", "-m", model_dirs["audio"], "--json")
    assert out.exit_code == 0
    (entry,) = json.loads(out.output)
    assert [p["name"] for p in entry["points"]] == ["n1", "n2", "n3", "n4"]
    assert entry["points"][0]["nominal"] == pytest.approx(75 * 6 / 1000)
    assert entry["beam_size"] == 1 and entry["refine_steps"] == 0 and entry["shallow_decoder"] is None
    (v13,) = json.loads(run("rates", "-m", "audio-v13", "--json").output)
    assert v13["shallow_decoder"] == {"max_levels": 1, "smooth_frames": 32, "model_energies_share": 0.9}
    text = " ".join(run("rates", "-m", "audio-v13").output.split())
    assert "shallow decoder: positions coding at most 1 level(s)" in text and "at least 90% shallow" in text
    monkeypatch.setattr("codec.hub.BUNDLED_DIR", tmp_path / "none")
    assert "no models installed" in run("models").output
    monkeypatch.setenv("VQCODEC_MODELS", str(model_dirs["root"]))
    names = {m["name"] for m in json.loads(run("models", "--json").output)}
    assert names == {"audio-test", "image-test"}
    _assert_error(run("rates"), 1, "no bundled default models")


def test_tokenize_and_detokenize(model_dirs, media, tmp_path):
    toks = tmp_path / "codes.safetensors"
    out = run("tokenize", media / "tone.wav", media / "sub" / "phone.flac", "-o", toks, "--rate", "n2", "-m", model_dirs["audio"])
    assert out.exit_code == 0, out.output
    from safetensors import safe_open

    with safe_open(str(toks), "pt") as f:
        shapes = {k: tuple(f.get_tensor(k).shape) for k in f.keys()}
        meta = json.loads(f.metadata()["vqcodec"])
    assert shapes == {"tone.wav": (2, 2, 150), "phone.flac": (1, 2, 75)}
    assert meta["tone.wav"]["rate_point"] == "n2" and meta["phone.flac"]["source"]["sample_rate"] == 8000
    out = run("detokenize", toks, "-o", tmp_path / "back", "-m", model_dirs["audio"])
    assert out.exit_code == 0, out.output
    assert sf.info(tmp_path / "back" / "phone.wav").frames == 8000
    assert sf.info(tmp_path / "back" / "tone.wav").channels == 2
    _assert_error(run("tokenize", media / "tone.wav", "-o", toks, "-m", model_dirs["audio"]), 1, "exists")
    _assert_error(run("detokenize", media / "tone.wav", "-o", tmp_path / "x"), 1, "not a safetensors file")


def test_refine_option(model_dirs, media, tmp_path):
    args = ("--rate", "n3", "-m", model_dirs["audio"])
    out = run("compress", media / "tone.wav", "-o", tmp_path / "r.vqc", "--refine", "3", *args)
    assert out.exit_code == 0, out.output
    out = run("decompress", tmp_path / "r.vqc", "-o", tmp_path / "r.wav", "-m", model_dirs["audio"])
    assert out.exit_code == 0, out.output
    out = run("compress", media / "tone.wav", "-o", tmp_path / "plain.vqc", *args)
    assert out.exit_code == 0, out.output
    assert (tmp_path / "r.vqc").stat().st_size <= (tmp_path / "plain.vqc").stat().st_size
    for bad in ("-1", "1001", "many"):
        out = run("compress", media / "tone.wav", "-o", tmp_path / "bad.vqc", "--refine", bad, *args)
        assert out.exit_code == 2 and "--refine" in out.output
        assert not (tmp_path / "bad.vqc").exists()


def test_beam_search_option(model_dirs, media, tmp_path):
    args = ("--rate", "n3", "-m", model_dirs["audio"])
    for beam in ("1", "8"):
        out = run("compress", media / "tone.wav", "-o", tmp_path / f"b{beam}.vqc", "--beam", beam, *args)
        assert out.exit_code == 0, out.output
        out = run("decompress", tmp_path / f"b{beam}.vqc", "-o", tmp_path / f"b{beam}.wav", "-m", model_dirs["audio"])
        assert out.exit_code == 0, out.output
    assert (tmp_path / "b1.vqc").read_bytes() != (tmp_path / "b8.vqc").read_bytes()
    # --beam is per command: the (cached) model keeps its own default afterwards
    out = run("compress", media / "tone.wav", "-o", tmp_path / "default.vqc", *args)
    assert out.exit_code == 0, out.output
    assert (tmp_path / "default.vqc").read_bytes() == (tmp_path / "b1.vqc").read_bytes()
    out = run("tokenize", media / "tone.wav", "-o", tmp_path / "t.safetensors", "--beam", "8", *args)
    assert out.exit_code == 0, out.output
    for bad in ("0", "65", "two"):
        out = run("compress", media / "tone.wav", "-o", tmp_path / "bad.vqc", "--beam", bad, *args)
        assert out.exit_code == 2 and "--beam" in out.output
        assert not (tmp_path / "bad.vqc").exists()


def test_envelope_option(model_dirs, media, tmp_path):
    import shutil

    from codec.envelope import BandEnergy

    # the test model with band energies: a copy of its folder whose config adds the envelope
    folder = tmp_path / "with-envelope"
    shutil.copytree(model_dirs["audio"], folder)
    config = json.loads((folder / "config.json").read_text())
    config["envelope"] = {"name": "band-energy", "kwargs": BandEnergy(24000).config(), "measured_kbps": 0.5}
    (folder / "config.json").write_text(json.dumps(config))
    args = ("--rate", "n3", "-m", folder)
    for flag, name in (("--envelope", "e.vqc"), ("--no-envelope", "n.vqc")):
        out = run("compress", media / "tone.wav", "-o", tmp_path / name, flag, *args)
        assert out.exit_code == 0, out.output
    out = run("info", tmp_path / "e.vqc", tmp_path / "n.vqc", "--json")
    assert out.exit_code == 0, out.output
    infos = json.loads(out.output)
    assert infos[0]["envelope"] == "band-energy" and "envelope" not in infos[1]
    out = run("decompress", tmp_path / "e.vqc", "-o", tmp_path / "e.wav", "-m", folder)
    assert out.exit_code == 0, out.output
    out = run("rates", "-m", folder)
    assert out.exit_code == 0 and "band energies" in out.output
    # a model without an envelope refuses the flag, and writes nothing
    out = run("compress", media / "tone.wav", "-o", tmp_path / "bad.vqc", "--envelope", "--rate", "n3", "-m", model_dirs["audio"])
    assert out.exit_code == 1 and "no band-energy envelope" in out.output
    assert not (tmp_path / "bad.vqc").exists()


def test_variable_and_fixed_depth(tmp_path, monkeypatch):
    import torch

    from cli import app as cli_app

    from codec.bitstream import read_container
    from codec.entropy import DEPTH_CONTEXT, DEPTH_RANGE
    from codec.model import Codec

    # a model whose k-means codebooks and tables have seen the signal: its codes cost what they carry
    torch.manual_seed(0)
    t = torch.arange(48000) / 24000
    signal = 0.5 * (torch.sin(2 * torch.pi * 0.7 * t) > 0.3).float() * torch.sin(2 * torch.pi * 220 * t) + 0.01 * torch.randn(48000)
    model = Codec.build("audio-seanet", "rvq", network_kwargs=dict(channels=4, strides=[2, 4, 5, 8], latent_dim=8),
                        quantizer_kwargs=dict(codebook_size=64, num_levels=6, init="kmeans"))
    model.train()(signal.reshape(1, 1, -1))
    model.eval().fit_entropy_tables([signal.reshape(1, 1, -1)])
    model.save(tmp_path / "m", name="depth-test")
    wav = tmp_path / "tone.wav"
    sf.write(wav, signal.numpy(), 24000)
    out = run("compress", wav, "-o", tmp_path / "n2.vqc", "--rate", "n2", "-m", tmp_path / "m")
    assert out.exit_code == 0, out.output
    n2_kbps = 8 * (tmp_path / "n2.vqc").stat().st_size / 2.0 / 1000
    args = ("--rate", f"{1.25 * n2_kbps:.3f}kbps", "-m", tmp_path / "m")
    monkeypatch.setattr(cli_app.err_console, "_width", 400)  # the summary table on one line per file
    shown = {}
    for flag, name in (("--variable-depth", "v.vqc"), ("--fixed-depth", "f.vqc")):
        out = run("compress", wav, "-o", tmp_path / name, flag, *args)
        assert out.exit_code == 0, out.output
        shown[name] = out.output
    assert "(variable, " in shown["v.vqc"] and "(variable, " not in shown["f.vqc"]
    tags = {name: read_container((tmp_path / name).read_bytes())[1][0][0] for name in ("v.vqc", "f.vqc")}
    assert tags["v.vqc"] in (DEPTH_RANGE, DEPTH_CONTEXT) and tags["f.vqc"] not in (DEPTH_RANGE, DEPTH_CONTEXT)
    assert (tmp_path / "v.vqc").stat().st_size > (tmp_path / "f.vqc").stat().st_size
    out = run("decompress", tmp_path / "v.vqc", "-o", tmp_path / "v.wav", "-m", tmp_path / "m")
    assert out.exit_code == 0, out.output


def test_decompress_no_postfilter_returns_the_decoders_own_output(media, tmp_path):
    out = run("compress", media / "sub" / "phone.flac", "-o", tmp_path / "p.vqc", "--rate", "1.6kbps", "-m", "audio-v8")
    assert out.exit_code == 0, out.output
    for flag, name in ((None, "on.wav"), ("--no-postfilter", "off.wav")):
        out = run("decompress", tmp_path / "p.vqc", "-o", tmp_path / name, *([flag] if flag else []))
        assert out.exit_code == 0, out.output
    on, sr = sf.read(tmp_path / "on.wav")
    off, _ = sf.read(tmp_path / "off.wav")
    assert sr == 8000 and on.shape == off.shape == (8000,) and not np.allclose(on, off)
    out = run("rates", "-m", "audio-v8")
    assert out.exit_code == 0 and "postfilter" in out.output
    out = run("rates", "-m", "audio-v11")  # a learned postfilter by output bandwidth: no strength to show
    assert out.exit_code == 0 and "by-bandwidth" in out.output
