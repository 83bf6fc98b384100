"""vqcodec eval: reports from real files; missing baseline tools are reported, not crashed on."""

import csv
import shutil

import numpy as np
import pytest
import soundfile as sf
from PIL import Image
from typer.testing import CliRunner

from cli.app import app
from codec.evaluate import align, missing_tools, nominal_kbps

runner = CliRunner()


@pytest.fixture
def image_dir(tmp_path):
    d = tmp_path / "photos"
    d.mkdir()
    yy, xx = np.mgrid[0:170, 0:180]
    for i in range(2):
        img = np.stack([np.sin(xx / (9 + i)) , np.cos(yy / (7 + i)), np.sin((xx + yy) / 13)], -1) * 0.4 + 0.5
        Image.fromarray((img * 255).astype(np.uint8)).save(d / f"p{i}.png")
    return d


@pytest.fixture
def speech_dir(tmp_path):
    d = tmp_path / "speech"
    d.mkdir()
    rng = np.random.default_rng(0)
    for i, sr in enumerate((16000, 8000)):
        t = np.arange(sr) / sr
        x = 0.3 * np.sin(2 * np.pi * (150 + 50 * i) * t) * (1 + np.sin(2 * np.pi * 3 * t)) + 0.01 * rng.standard_normal(sr)
        sf.write(d / f"s{i}.wav", x.astype(np.float32), sr, subtype="PCM_16")
    return d


def test_image_eval_writes_csv_markdown_and_plot(model_dirs, image_dir, tmp_path):
    out = runner.invoke(app, ["eval", str(image_dir), "-m", str(model_dirs["image"]), "--rates", "min,max",
                              "--baselines", "jpeg,webp", "-o", str(tmp_path / "report")])
    assert out.exit_code == 0, out.output
    rows = list(csv.DictReader(open(tmp_path / "report" / "results.csv")))
    assert {r["codec"] for r in rows} == {"vqcodec", "jpeg", "webp"}
    ours = [r for r in rows if r["codec"] == "vqcodec"]
    assert len(ours) == 4 and all(float(r["psnr"]) > 5 and 0 < float(r["ms_ssim"]) <= 1 for r in ours)
    for r in rows:  # a baseline row is never larger than the file of ours it is matched to
        if r["codec"] != "vqcodec" and r["bytes"] != "0":
            match = next(o for o in ours if o["file"] == r["file"] and r["setting"].startswith(f"<= {o['setting']}"))
            assert int(r["bytes"]) <= int(match["bytes"])
    summary = (tmp_path / "report" / "summary.md").read_text()
    assert "| vqcodec | n1 |" in summary and "jpeg" in summary
    assert "ours - it (psnr)" in summary  # size-matched baselines are compared on the same files
    assert "ours - it (ms_ssim)" in summary
    assert (tmp_path / "report" / "rd.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_audio_eval_reports_missing_tools(model_dirs, speech_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    assert missing_tools(["opus", "codec2"]) == {"opus": ["opusenc", "opusdec"], "codec2": ["c2enc", "c2dec"]}
    out = runner.invoke(app, ["eval", str(speech_dir), "-m", str(model_dirs["audio"]), "--rates", "n2,max",
                              "-o", str(tmp_path / "report")])
    assert out.exit_code == 0, out.output
    text = " ".join(out.output.split())
    assert "baseline opus skipped: opusenc, opusdec not installed" in text and "codec2 skipped" in text
    rows = list(csv.DictReader(open(tmp_path / "report" / "results.csv")))
    assert {r["codec"] for r in rows} == {"vqcodec"} and len(rows) == 4
    assert all(float(r["stoi"]) == float(r["stoi"]) for r in rows)  # computed (not NaN)
    assert (tmp_path / "report" / "rd.png").is_file()


def test_audio_eval_leaves_out_clips_shorter_than_min_seconds(model_dirs, speech_dir, tmp_path):
    sf.write(speech_dir / "short.wav", np.zeros(4000, np.float32) + 0.1, 16000)  # 0.25 s
    args = ["eval", str(speech_dir), "-m", str(model_dirs["audio"]), "--rates", "max", "--baselines", "none"]
    out = runner.invoke(app, [*args, "--min-seconds", "0.5", "-o", str(tmp_path / "r1")])
    assert out.exit_code == 0, out.output
    assert {r["file"] for r in csv.DictReader(open(tmp_path / "r1" / "results.csv"))} == {"s0.wav", "s1.wav"}
    out = runner.invoke(app, [*args, "--min-seconds", "5", "-o", str(tmp_path / "r2")])
    assert out.exit_code == 1 and "no audio files of at least 5 s" in " ".join(out.output.split())
    assert not (tmp_path / "r2").exists()


def test_audio_eval_at_a_telephone_rate_scores_the_resampled_signal(model_dirs, speech_dir, tmp_path):
    args = ["eval", str(speech_dir), "-m", str(model_dirs["audio"]), "--rates", "max", "--baselines", "none"]
    out = runner.invoke(app, [*args, "--sample-rate", "8000", "-o", str(tmp_path / "r")])
    assert out.exit_code == 0, out.output
    rows = list(csv.DictReader(open(tmp_path / "r" / "results.csv")))
    assert len(rows) == 2 and all(float(r["pesq"]) == float(r["pesq"]) for r in rows)  # narrow-band PESQ
    # the same bytes per second of signal whatever the input rate: the codec resamples internally
    wide = runner.invoke(app, [*args, "-o", str(tmp_path / "w")])
    assert wide.exit_code == 0, wide.output
    wide_rows = list(csv.DictReader(open(tmp_path / "w" / "results.csv")))
    assert abs(float(rows[0]["kbps"]) - float(wide_rows[0]["kbps"])) < 0.5
    bad = runner.invoke(app, [*args, "--sample-rate", "100", "-o", str(tmp_path / "b")])
    assert bad.exit_code != 0 and not (tmp_path / "b").exists()


@pytest.mark.skipif(bool(missing_tools(["opus", "codec2"])), reason="opus-tools / codec2 not installed")
def test_audio_eval_with_opus_and_codec2(model_dirs, speech_dir, tmp_path):
    out = runner.invoke(app, ["eval", str(speech_dir), "-m", str(model_dirs["audio"]), "--rates", "max",
                              "-o", str(tmp_path / "report")])
    assert out.exit_code == 0, out.output
    rows = list(csv.DictReader(open(tmp_path / "report" / "results.csv")))
    c2 = [r for r in rows if r["codec"] == "codec2" and r["setting"] == "3200"]
    assert len(c2) == 2 and all(2.5 < float(r["kbps"]) < 3.6 for r in c2)  # raw frames: the mode's rate
    assert any(r["codec"] == "opus" for r in rows)
    summary = (tmp_path / "report" / "summary.md").read_text()
    assert "ours - it (pesq)" in summary  # fixed-rate baselines are paired with our point at no more bits
    assert "ours - it (stoi)" in summary  # ... in both measures


@pytest.mark.skipif(bool(missing_tools(["codec2"])), reason="codec2 not installed")
def test_audio_eval_codes_ours_within_each_baseline_files_size(model_dirs, speech_dir, tmp_path):
    out = runner.invoke(app, ["eval", str(speech_dir), "-m", str(model_dirs["audio"]), "--rates", "min",
                              "--baselines", "codec2", "--match-up-to", "1.3kbps", "-o", str(tmp_path / "report")])
    assert out.exit_code == 0, out.output
    rows = list(csv.DictReader(open(tmp_path / "report" / "results.csv")))
    ours = {(r["file"], r["setting"].split(" (")[0]): r for r in rows if r["codec"] == "vqcodec"}
    theirs = [r for r in rows if r["codec"] == "codec2"]
    matched = [r for r in theirs if r["setting"] in ("1300", "1200", "700C")]  # nominal rate <= 1.3 kbps
    assert len(matched) == 6 and len(ours) == 2 + 6  # each file at "min" and within each matched file's size
    for r in matched:
        mine = ours[(r["file"], f"at codec2 {r['setting']}")]
        assert int(mine["bytes"]) <= int(r["bytes"]) and float(mine["kbps"]) <= float(r["kbps"])
        lowest = next(o for (f, s), o in ours.items() if f == r["file"] and not s.startswith("at "))  # "min"
        assert int(mine["bytes"]) >= int(lowest["bytes"])  # a target: never below our lowest point
    assert not any(s.startswith("at codec2 1400") for _, s in ours)  # 1.4 kbps is above the limit
    summary = (tmp_path / "report" / "summary.md").read_text()
    assert "| vqcodec | at codec2 700C |" in summary and "within the size of that baseline's file" in summary
    bad = runner.invoke(app, ["eval", str(speech_dir), "-m", str(model_dirs["audio"]), "--match-up-to", "0.1bpp",
                              "-o", str(tmp_path / "b")])
    assert bad.exit_code == 2 and "--match-up-to" in bad.output and not (tmp_path / "b").exists()


def test_nominal_rates_of_the_baselines():
    assert nominal_kbps("opus", "6kbps") == 6.0 and nominal_kbps("codec2", "700C") == 0.7
    assert nominal_kbps("codec2", "3200") == 3.2


def test_bad_eval_requests(model_dirs, image_dir, tmp_path):
    out = runner.invoke(app, ["eval", str(tmp_path / "none"), "-m", str(model_dirs["image"]), "-o", str(tmp_path / "r")])
    assert out.exit_code == 1 and "not a folder" in out.output
    out = runner.invoke(app, ["eval", str(image_dir), "-m", str(model_dirs["image"]), "--baselines", "opus", "-o", str(tmp_path / "r")])
    assert out.exit_code == 2 and "unknown image baseline" in out.output


def test_alignment_recovers_a_delay():
    rng = np.random.default_rng(0)
    ref = rng.standard_normal(4000).astype(np.float32)
    delayed = np.concatenate([np.zeros(37, np.float32), ref])[:4000]
    assert np.allclose(align(ref, delayed, 100)[:3900], ref[:3900])
    early = ref[25:]
    assert np.allclose(align(ref, early, 100)[25:3900], ref[25:3900])
