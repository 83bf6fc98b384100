"""Recipes end to end on CPU: debug configs, real files, resume, DDP, checkpoints, configs."""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from torchvision.io import encode_jpeg, write_png

from codec.bitstream import read_container
from codec.model import Codec
from recipes import audio_codec, image_codec, loop
from recipes.common import apply_overrides, latest_checkpoint, load_checkpoint, load_config, save_checkpoint
from recipes.common import ModelEMA
from recipes.data import AudioData, mulaw_encode, telephone_band
from recipes.loop import init_weights

ROOT = Path(__file__).resolve().parents[2]


def read_log(path):
    with open(path / "log.csv") as f:
        return [row for row in csv.DictReader(f)]


def train_losses(path):
    return [(r["step"], r["loss"]) for r in read_log(path) if r["split"] == "train"]


@pytest.mark.parametrize("recipe", [image_codec, audio_codec])
def test_debug_config_trains_validates_checkpoints_and_exports(recipe, tmp_path):
    export = recipe.main(["--config", "debug", "--out", str(tmp_path / "run")])
    rows = read_log(tmp_path / "run")
    assert [r["step"] for r in rows if r["split"] == "train"] == ["2", "4", "6", "8"]
    val = [r for r in rows if r["split"] == "val"]
    assert len(val) == 2
    assert latest_checkpoint(tmp_path / "run" / "checkpoints").name == "step-00000008"
    model = Codec.load(export)
    x = torch.rand(1, 3, 20, 28) if recipe is image_codec else torch.rand(1, 1, 3000) * 2 - 1
    for point in model.rate_points():
        assert model.decode(model.encode(x, point.name)).shape == x.shape


def test_recipes_read_real_image_and_audio_files(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    for i in range(4):
        img = (torch.rand(3, 40 + 7 * i, 50) * 255).to(torch.uint8)
        write_png(img, str(images / f"p{i}.png"))
    (images / "photo.jpg").write_bytes(encode_jpeg((torch.rand(3, 64, 48) * 255).to(torch.uint8)).numpy().tobytes())
    np.save(images / "compact.npy", (np.random.rand(36, 40, 3) * 255).astype(np.uint8))
    from PIL import Image

    grey16 = np.full((40, 44), 65535, dtype=np.uint16)
    Image.fromarray(grey16).save(images / "grey16.png")  # 16-bit greyscale
    Image.fromarray((np.random.rand(40, 40, 4) * 255).astype(np.uint8), "RGBA").save(images / "alpha.png")
    from recipes.data import _load_image

    white = _load_image(images / "grey16.png")
    assert white.dtype == torch.uint8 and white.shape == (3, 40, 44) and int(white.min()) == 255
    assert _load_image(images / "alpha.png").shape == (3, 40, 40)
    image_codec.main(["--config", "debug", "--out", str(tmp_path / "img"), "--set", f"data={images}", "--set", "steps=2"])
    assert Codec.load(tmp_path / "img" / "export").modality == "image"

    audio = tmp_path / "audio"
    audio.mkdir()
    t = np.arange(22050) / 22050
    sf.write(audio / "a.wav", 0.3 * np.sin(2 * np.pi * 220 * t), 22050)
    sf.write(audio / "b.flac", np.stack([0.2 * np.sin(2 * np.pi * 330 * t)] * 2, 1), 22050)  # stereo -> mono
    sf.write(audio / "c.ogg", 0.2 * np.sin(2 * np.pi * 110 * t), 22050)
    np.savez(audio / "d.npz", mulaw=mulaw_encode(0.3 * np.sin(2 * np.pi * 440 * t[:16000])), sample_rate=16000)
    audio_codec.main(["--config", "debug", "--out", str(tmp_path / "aud"), "--set", f"data={audio}", "--set", "steps=2"])
    assert Codec.load(tmp_path / "aud" / "export").sample_rate == 16000


def _tone_folder(root, layout):
    """Write 1 s 16 kHz tones under ``root``: ``layout`` maps "split/source" -> tone frequencies."""
    t = np.arange(16000) / 16000
    for folder, freqs in layout.items():
        (root / folder).mkdir(parents=True)
        for f in freqs:
            sf.write(root / folder / f"t{f}.wav", 0.3 * np.sin(2 * np.pi * f * t), 16000)


def test_audio_data_mix_draws_only_the_weighted_sources_in_their_shares(tmp_path):
    _tone_folder(tmp_path, {"train/speech-a": [200, 210], "train/speech-b": [220], "train/music-x": [1000, 1100, 1200],
                            "train/drums": [3000], "val/speech-a": [300], "val/drums": [3100], "val/music-x": [1300]})
    plain = AudioData(str(tmp_path), 16000, 0.25)
    assert len(plain.train) == 7 and float(plain.weights.max()) == pytest.approx(1 / 7)
    assert len(plain.val) == 3  # every source, round-robin

    mixed = AudioData(str(tmp_path), 16000, 0.25, source_weights={"speech": 3.0, "music": 1.0})
    assert len(mixed.train) == 6 and len(mixed.val) == 2  # drums neither drawn nor validated
    x = mixed.batch(0, 400)
    spec = torch.fft.rfft(x[:, 0], dim=-1).abs()
    peak_hz = spec.argmax(-1).float() * 16000 / x.shape[-1]
    speech_share = float((peak_hz < 500).float().mean())
    assert 0.68 < speech_share < 0.82  # 3:1 -> 75 % speech segments
    assert torch.equal(mixed.batch(5, 4), mixed.batch(5, 4))  # a pure function of the seed
    with pytest.raises(ValueError, match="match no training source"):
        AudioData(str(tmp_path), 16000, 0.25, source_weights={"speech": 1.0, "choir": 1.0})
    with pytest.raises(ValueError, match="positive"):
        AudioData(str(tmp_path), 16000, 0.25, source_weights={"speech": 0.0})


def test_audio_augmentation_levels_and_telephone_band(tmp_path):
    sr = 16000
    t = torch.arange(sr) / sr
    low, mid, high = (torch.sin(2 * torch.pi * f * t) for f in (100.0, 1000.0, 6000.0))
    band = telephone_band(low + mid + high, sr)
    spec = torch.fft.rfft(band).abs()
    assert spec[1000] > 0.99 * torch.fft.rfft(mid).abs()[1000]
    assert spec[100] < 1e-3 * spec[1000] and spec[6000] < 1e-3 * spec[1000]

    _tone_folder(tmp_path, {"train/s": [440, 550, 660], "val/s": [770]})
    levels = lambda d: 20 * torch.log10(d.batch(1, 64).pow(2).mean(-1).sqrt()).flatten()  # noqa: E731
    assert levels(AudioData(str(tmp_path), sr, 0.25)).std() < 0.1  # all at -20 dBFS
    varied = levels(AudioData(str(tmp_path), sr, 0.25, gain_db=10.0))
    assert varied.min() > -30.5 and varied.max() < -9.5 and varied.std() > 3
    phone = AudioData(str(tmp_path), sr, 0.25, telephone_prob=1.0, gain_db=0.0).batch(2, 8)
    assert torch.fft.rfft(phone[..., :4000]).abs()[..., 1000:].max() < 1e-2  # nothing above 4 kHz
    with pytest.raises(ValueError):
        AudioData(str(tmp_path), sr, 0.25, telephone_prob=1.5)


def test_init_from_starts_a_fresh_run_from_a_checkpoints_ema_weights(tmp_path):
    audio_codec.main(["--config", "debug", "--out", str(tmp_path / "base")])
    ckpt = latest_checkpoint(tmp_path / "base" / "checkpoints")
    ema = load_checkpoint(ckpt, restore_rng=False)["ema"]
    model = Codec.build("audio-seanet", "rvq", network_kwargs=dict(channels=4, strides=[2, 4, 5], latent_dim=8,
                        sample_rate=16000, activation="snake"),
                        quantizer_kwargs=dict(codebook_size=64, num_levels=3, quantizer_dropout=0.5, dead_code_threshold=1.0))
    shadow = ModelEMA(model)
    init_weights(tmp_path / "base", model, shadow)  # a run folder: its latest checkpoint
    assert all(torch.equal(model.state_dict()[k], v) for k, v in ema.items())
    with pytest.raises(FileNotFoundError, match="init_from"):
        init_weights(tmp_path / "nothing", model, shadow)
    # a fine-tuning run: fresh schedule from step 0, logged from the start
    audio_codec.main(["--config", "debug", "--out", str(tmp_path / "tuned"), "--set", f"init_from={ckpt}",
                      "--set", "steps=2"])
    assert [r["step"] for r in read_log(tmp_path / "tuned") if r["split"] == "train"] == ["2"]


@pytest.mark.parametrize("recipe,extra", [(image_codec, []), (audio_codec, ["--set", "adv_weight=0.1", "--set", "adv_start=2"])])
def test_kill_and_resume_matches_an_uninterrupted_run(recipe, extra, tmp_path):
    recipe.main(["--config", "debug", "--out", str(tmp_path / "full"), *extra])
    recipe.main(["--config", "debug", "--out", str(tmp_path / "cut"), "--stop-at", "3", *extra])
    assert latest_checkpoint(tmp_path / "cut" / "checkpoints").name == "step-00000003"
    assert not (tmp_path / "cut" / "export").exists()  # stopped early: nothing exported yet
    recipe.main(["--config", "debug", "--out", str(tmp_path / "cut"), "--resume", *extra])
    full, cut = train_losses(tmp_path / "full"), train_losses(tmp_path / "cut")
    assert [s for s, _ in full] == [s for s, _ in cut]
    np.testing.assert_allclose([float(v) for _, v in cut], [float(v) for _, v in full], rtol=1e-5)


def test_two_process_gloo_ddp_run(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29533",
           "-m", "recipes.image_codec", "--config", "debug", "--out", str(tmp_path / "ddp")]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert len(train_losses(tmp_path / "ddp")) == 4
    model = Codec.load(tmp_path / "ddp" / "export")
    assert model.modality == "image"


def test_checkpoints_are_split_into_bounded_shards_and_round_trip(tmp_path):
    state = {
        "model": {"a": torch.randn(300, 300), "b": torch.randn(10), "c": torch.arange(5)},
        "optimizer": {"state": {0: {"exp_avg": torch.randn(300, 300), "step": torch.tensor(3.0)}},
                      "param_groups": [{"lr": 0.1, "params": [0], "betas": (0.9, 0.99)}]},
        "note": "hello", "nested": [1, 2.5, None, True],
    }
    path = save_checkpoint(tmp_path, 7, state, max_shard_bytes=400_000)
    shards = sorted(path.glob("tensors-*.safetensors"))
    assert len(shards) >= 2 and all(p.stat().st_size <= 400_000 + 2_000 for p in shards if p.stat().st_size > 400_000 // 2)
    back = load_checkpoint(path)
    assert back["step"] == 7 and back["note"] == "hello" and back["nested"] == [1, 2.5, None, True]
    assert torch.equal(back["model"]["a"], state["model"]["a"])
    assert back["optimizer"]["state"][0]["step"] == state["optimizer"]["state"][0]["step"]
    assert back["optimizer"]["param_groups"][0]["betas"] == (0.9, 0.99)
    # an interrupted write never becomes "latest"
    (tmp_path / "step-00000009.tmp").mkdir()
    assert latest_checkpoint(tmp_path).name == "step-00000007"


def test_config_validation(tmp_path):
    cfg = load_config(image_codec.ImageCodecConfig, image_codec.PRESETS, "debug", ["steps=3", "lr=0.001", "bf16=true"])
    assert cfg.steps == 3 and cfg.lr == 0.001 and cfg.bf16 is True
    cfg = apply_overrides(cfg, ["quantizer_kwargs.codebook_size=32", "network_kwargs={\"channels\": 4, \"factor\": 4}"])
    assert cfg.quantizer_kwargs["codebook_size"] == 32 and cfg.network_kwargs == {"channels": 4, "factor": 4}
    with pytest.raises(ValueError, match="unknown config field 'stepz'"):
        load_config(image_codec.ImageCodecConfig, image_codec.PRESETS, "debug", ["stepz=3"])
    with pytest.raises(ValueError, match="crop 30 must be a positive multiple"):
        load_config(image_codec.ImageCodecConfig, image_codec.PRESETS, "debug", ["crop=30"])
    with pytest.raises(ValueError):
        load_config(image_codec.ImageCodecConfig, image_codec.PRESETS, "debug", ["steps=many"])
    path = tmp_path / "cfg.json"
    path.write_text(json.dumps({"preset": "debug", "steps": 5}))
    assert load_config(image_codec.ImageCodecConfig, image_codec.PRESETS, str(path)).steps == 5
    path.write_text(json.dumps({"preset": "debug", "stepz": 5}))
    with pytest.raises(ValueError, match="unknown config fields"):
        load_config(image_codec.ImageCodecConfig, image_codec.PRESETS, str(path))


def test_raq_reproduction_debug_trains_every_model_and_writes_the_tables(tmp_path):
    from recipes import raq_reproduction

    out = raq_reproduction.main(["--config", "debug", "--out", str(tmp_path / "repro")])
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert [int(r["codebook_size"]) for r in rows] == [8, 16, 32]
    for r in rows:
        assert float(r["fixed_psnr"]) > 0 and float(r["raq_psnr"]) > 0
        assert 1 <= float(r["raq_perplexity"]) <= int(r["codebook_size"])
    assert "Largest gap" in (out / "results.md").read_text()
    # a second call finds every export and only re-evaluates
    mtime = (out / "raq" / "export" / "model.safetensors").stat().st_mtime
    raq_reproduction.main(["--config", "debug", "--out", str(tmp_path / "repro")])
    assert (out / "raq" / "export" / "model.safetensors").stat().st_mtime == mtime


def publish_debug_model(recipe, tmp_path, x, beam_size=None, args=()):
    """A published, inference-only RAQ model of ``recipe`` (its ``raq-debug`` preset, with ``args``)
    with entropy tables fitted on ``x`` (what users download), in ``tmp_path / "published"``."""
    source = Codec.load(recipe.main(["--config", "raq-debug", *args, "--out", str(tmp_path / "base")]))
    source.strip_training_state()
    source.fit_entropy_tables([x], contexts=False)
    if beam_size is not None:
        source.beam_size = beam_size
    source.save(tmp_path / "published", name="model-t1")
    return tmp_path / "published"


@pytest.mark.parametrize("recipe", [image_codec, audio_codec])
def test_decoder_fine_tuning_of_a_published_model_keeps_its_codes(recipe, tmp_path):
    # a published, inference-only RAQ model with entropy tables and a beam: what users download
    x = torch.rand(1, 3, 32, 40) if recipe is image_codec else torch.rand(1, 1, 4000) * 2 - 1
    published = Codec.load(publish_debug_model(recipe, tmp_path, x, beam_size=2))
    assert published.inference_only
    args = ["--config", "raq-debug", "--set", f"init_model={tmp_path / 'published'}", "--set", "train_parts=decoder",
            "--set", "steps=4", "--set", "val_every=2", "--set", "recon_loss=l2"]
    tuned = Codec.load(recipe.main([*args, "--out", str(tmp_path / "tuned")]))
    before, after = published.state_dict(), tuned.state_dict()
    assert before.keys() == after.keys()
    frozen = [k for k in before if not k.startswith("decoder.")]
    assert frozen and all(torch.equal(before[k], after[k]) for k in frozen)  # bit-exact: the same codes
    assert any(not torch.equal(before[k], after[k]) for k in before if k.startswith("decoder."))
    assert tuned.name != "model-t1" and tuned.beam_size == 2 and tuned.inference_only
    assert tuned.config["recon_loss"] == "l2" and tuned.target_points == published.target_points
    for point in published.rate_points():
        a, b = published.encode(x, point.name), tuned.encode(x, point.name)
        assert torch.equal(a.codes, b.codes)
        # the same payload: the tables came along, and the codes are what they code
        assert read_container(tuned.compress(x, point.name))[1] == read_container(published.compress(x, point.name))[1]
    if recipe is image_codec:  # segments: a cut and resumed fine-tune repeats the uninterrupted one
        recipe.main([*args, "--out", str(tmp_path / "cut"), "--stop-at", "3"])
        recipe.main([*args, "--out", str(tmp_path / "cut"), "--resume"])
        np.testing.assert_allclose([float(v) for _, v in train_losses(tmp_path / "cut")],
                                   [float(v) for _, v in train_losses(tmp_path / "tuned")], rtol=1e-5)
    with pytest.raises(ValueError, match="set init_model"):
        recipe.main(["--config", "raq-debug", "--set", "train_parts=decoder", "--out", str(tmp_path / "x")])
    with pytest.raises(RuntimeError, match="inference only"):  # its quantizer cannot train
        recipe.main(["--config", "raq-debug", "--set", f"init_model={tmp_path / 'published'}", "--out", str(tmp_path / "y")])
    with pytest.raises(ValueError, match="set train_parts='decoder'"):
        recipe.main(["--config", "raq-debug", "--set", "through_envelope=true", "--out", str(tmp_path / "z")])
    with pytest.raises(ValueError, match="raw_signal_weight"):
        recipe.main(["--config", "raq-debug", "--set", "raw_signal_weight=0", "--out", str(tmp_path / "w")])


def test_a_grown_decoder_starts_as_the_published_one_and_keeps_its_codes(tmp_path):
    # a published image-gdn model; its decoder grown by residual blocks and attention, then fine-tuned
    x = torch.rand(1, 3, 32, 40)
    gdn = ["--set", "network=image-gdn", "--set", 'network_kwargs={"channels": 8, "factor": 4, "latent_dim": 8}']
    published = Codec.load(publish_debug_model(image_codec, tmp_path, x, args=gdn))
    grow = '{"decoder_res_blocks": [1, 1], "decoder_attention": true}'
    args = ["--config", "raq-debug", "--set", f"init_model={tmp_path / 'published'}", "--set", "train_parts=decoder",
            "--set", "steps=3", "--set", "val_every=3", "--set", "recon_loss=l2", "--set", f"network_overrides={grow}"]
    start = loop.published_model(str(tmp_path / "published"), "l2", json.loads(grow))
    for point in published.rate_points():  # before training: the same output, bit for bit
        codes = published.encode(x, point.name)
        torch.testing.assert_close(start.decode(codes), published.decode(codes), rtol=0, atol=1e-6)
    tuned = Codec.load(image_codec.main([*args, "--set", "recon_log_scale=0.01", "--out", str(tmp_path / "tuned")]))
    assert tuned.config["network"]["kwargs"] == {**published.config["network"]["kwargs"], **json.loads(grow)}
    before, after = published.state_dict(), tuned.state_dict()
    assert set(before) < set(after) and all(k.startswith("decoder.stages.") for k in set(after) - set(before))
    assert all(torch.equal(before[k], after[k]) for k in before if not k.startswith("decoder."))
    assert any(after[k].abs().sum() > 0 for k in after if k.endswith("conv2.weight"))  # the new blocks trained
    for point in published.rate_points():
        assert torch.equal(published.encode(x, point.name).codes, tuned.encode(x, point.name).codes)
        assert read_container(tuned.compress(x, point.name))[1] == read_container(published.compress(x, point.name))[1]
    logged = [float(r["l1"]) for r in read_log(tmp_path / "tuned") if r["split"] == "train"]
    assert logged and all(v < 0 for v in logged)  # 0.01 * ln(squared error < 1)
    with pytest.raises(ValueError, match="change more than the decoder's depth"):
        loop.published_model(str(tmp_path / "published"), "l2", {"channels": 16})
    with pytest.raises(ValueError, match="set train_parts='decoder'"):
        image_codec.main(["--config", "raq-debug", "--set", f"network_overrides={grow}", "--out", str(tmp_path / "x")])
    with pytest.raises(ValueError, match="recon_log_scale"):
        image_codec.main(["--config", "raq-debug", "--set", "recon_log_scale=-1", "--out", str(tmp_path / "y")])


def test_the_ms_ssim_term_can_enter_as_its_logarithm():
    from dataclasses import replace

    from codec.losses import ms_ssim

    torch.manual_seed(0)
    x = torch.rand(2, 3, 48, 48) * 2 - 1  # network range
    y = (x + 0.2 * torch.randn_like(x)).clamp(-1, 1)
    one_minus = 1 - ms_ssim((x + 1) / 2, (y + 1) / 2).mean()
    plain = image_codec._signal_losses(replace(image_codec.PRESETS["debug"], ms_ssim_weight=0.3), None, x.device)
    torch.testing.assert_close(plain(x, y)["ms_ssim"], 0.3 * one_minus)
    logged = image_codec._signal_losses(replace(image_codec.PRESETS["debug"], ms_ssim_weight=0.0, ms_ssim_log_scale=0.05),
                                        None, x.device)
    torch.testing.assert_close(logged(x, y)["ms_ssim"], 0.05 * torch.log(one_minus))
    # its gradient is the plain term's over its size: a point with half the loss pulls twice as hard
    y.requires_grad_(True)
    logged(x, y)["ms_ssim"].backward()
    g_log = y.grad.clone()
    y.grad = None
    (0.05 * (1 - ms_ssim((x + 1) / 2, ((y + 1) / 2).clamp(0, 1)).mean())).backward()
    torch.testing.assert_close(g_log, y.grad / one_minus, rtol=1e-4, atol=1e-8)
    off = image_codec._signal_losses(replace(image_codec.PRESETS["debug"], ms_ssim_weight=0.0), None, x.device)
    assert off(x, y) == {}
    with pytest.raises(ValueError, match="ms_ssim_log_scale"):
        replace(image_codec.PRESETS["debug"], ms_ssim_log_scale=-1.0).validate()


def test_decoder_fine_tuning_draws_its_points_from_train_points(tmp_path, monkeypatch):
    published = publish_debug_model(audio_codec, tmp_path, torch.rand(1, 1, 4000) * 2 - 1)
    lowest = Codec.load(published).rate_points()[0].name
    drawn, forward = [], Codec.frozen_codes_forward

    def spy(self, x, rate, *args, **kwargs):
        drawn.append(rate)
        return forward(self, x, rate, *args, **kwargs)

    monkeypatch.setattr(Codec, "frozen_codes_forward", spy)
    args = ["--config", "raq-debug", "--set", f"init_model={published}", "--set", "train_parts=decoder",
            "--set", "steps=3", "--set", "val_every=3"]
    audio_codec.main([*args, "--set", f'train_points=["{lowest}"]', "--out", str(tmp_path / "low")])
    assert drawn == [lowest] * 3  # every step decodes the chosen point's codes
    drawn.clear()
    audio_codec.main([*args, "--out", str(tmp_path / "all")])
    assert len(drawn) == 3 and set(drawn) <= {p.name for p in Codec.load(published).rate_points()}
    with pytest.raises(ValueError, match="not rate points"):
        audio_codec.main([*args, "--set", 'train_points=["k9-n99"]', "--out", str(tmp_path / "bad")])
    with pytest.raises(ValueError, match="train_points"):
        audio_codec.main(["--config", "raq-debug", "--set", f'train_points=["{lowest}"]', "--out", str(tmp_path / "x")])


def test_decoder_fine_tuning_through_the_band_energy_correction(tmp_path):
    config_path = publish_debug_model(audio_codec, tmp_path, torch.rand(1, 1, 4000) * 2 - 1) / "config.json"
    config = json.loads(config_path.read_text())
    config_path.write_text(json.dumps({**config, "envelope": {"name": "band-energy", "kwargs": {}}}))
    args = ["--config", "raq-debug", "--set", f"init_model={tmp_path / 'published'}", "--set", "train_parts=decoder",
            "--set", "through_envelope=true", "--set", "steps=2", "--set", "log_every=1", "--set", "val_every=2"]
    audio_codec.main([*args, "--out", str(tmp_path / "both")])
    audio_codec.main([*args, "--set", "raw_signal_weight=0", "--out", str(tmp_path / "env")])
    both = [r for r in read_log(tmp_path / "both") if r["split"] == "train"]
    env = [r for r in read_log(tmp_path / "env") if r["split"] == "train"]
    assert all(r["mel"] and r["mel@env"] for r in both)  # the raw and the corrected output are scored
    assert all(r["mel@env"] and not r.get("mel") for r in env)  # only the corrected one
    # the same first step, less the raw output's mel term
    assert float(env[0]["loss"]) == pytest.approx(float(both[0]["loss"]) - float(both[0]["mel"]), rel=1e-5)


def test_loudness_term_is_logged_weighted_and_added_to_the_loss(tmp_path):
    base = ["--config", "debug", "--set", "steps=1", "--set", "log_every=1", "--set", "val_every=1",
            "--set", "segment_seconds=0.5"]
    audio_codec.main([*base, "--out", str(tmp_path / "off")])
    audio_codec.main([*base, "--set", "loudness_weight=2.0", "--out", str(tmp_path / "on")])
    off = [r for r in read_log(tmp_path / "off") if r["split"] == "train"][0]
    on = [r for r in read_log(tmp_path / "on") if r["split"] == "train"][0]
    assert not off.get("loudness") and float(on["loudness"]) > 0
    # the same first step (same seed, same batch), plus the weighted loudness term
    assert float(on["loss"]) == pytest.approx(float(off["loss"]) + float(on["loudness"]), rel=1e-5)
    assert float(on["mel"]) == pytest.approx(float(off["mel"]), rel=1e-6)
    # the narrow-band term beside it: logged on its own, added with its weight
    audio_codec.main([*base, "--set", "loudness_weight=2.0", "--set", "narrowband_loudness_weight=3.0",
                      "--out", str(tmp_path / "nb")])
    nb = [r for r in read_log(tmp_path / "nb") if r["split"] == "train"][0]
    assert float(nb["loudness"]) == pytest.approx(float(on["loudness"]), rel=1e-5) and float(nb["loudness_nb"]) > 0
    assert float(nb["loss"]) == pytest.approx(float(on["loss"]) + float(nb["loudness_nb"]), rel=1e-5)
    with pytest.raises(ValueError, match="must be >= 0"):
        audio_codec.main([*base, "--set", "narrowband_loudness_weight=-1", "--out", str(tmp_path / "bad")])


@pytest.mark.parametrize("recipe", [image_codec, audio_codec])
def test_every_preset_validates_and_builds_its_codec(recipe):
    # a preset is a published recipe: a typo in one must fail here, not an hour into a run
    for name, cfg in recipe.PRESETS.items():
        cfg.validate()
        if cfg.init_model:  # built from the published model it names
            continue
        model = Codec.build(cfg.network, cfg.quantizer, network_kwargs=cfg.network_kwargs,
                            quantizer_kwargs=cfg.quantizer_kwargs)
        assert model.rate_points(), name
