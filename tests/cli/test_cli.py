"""The vqcodec command through Typer's CliRunner."""

from typer.testing import CliRunner

from cli.app import app
from codec.model import Codec

runner = CliRunner()


def test_version_and_quantizers():
    assert "vqcodec 0.1.0" in runner.invoke(app, ["--version"]).output
    out = runner.invoke(app, ["quantizers", "--dim", "16", "--codebook-size", "256"])
    assert out.exit_code == 0
    for name in ("vq", "rvq", "fsq", "simvq", "gumbel", "adaptive"):
        assert name in out.output


def test_train_runs_a_recipe(tmp_path):
    out = runner.invoke(app, ["train", "audio_codec", "--config", "debug", "--out", str(tmp_path / "r"), "--set", "steps=2"])
    assert out.exit_code == 0, out.output
    assert Codec.load(tmp_path / "r" / "export").modality == "audio"


def test_train_reports_bad_input_with_non_zero_exit(tmp_path):
    assert runner.invoke(app, ["train", "video_codec"]).exit_code == 2
    out = runner.invoke(app, ["train", "image_codec", "--config", "debug", "--set", "bogus=1"])
    assert out.exit_code == 2 and "unknown config field" in out.output
    out = runner.invoke(app, ["train", "image_codec", "--config", "debug", "--out", str(tmp_path / "r"),
                              "--set", f"data={tmp_path}/none"])
    assert out.exit_code == 2 and "does not exist" in " ".join(out.output.split())
    assert not (tmp_path / "r").exists()  # nothing written for a run that could not start
