"""The Codec: rate points, rate requests, encode/decode, safetensors save/load."""

import json

import pytest
import torch

from codec.model import Codec, RateError, parse_rate
from codec.quant import list_quantizers

IMAGE_NET = dict(channels=8, channel_mult=(1, 2), num_res_blocks=1, factor=4, latent_dim=8)
AUDIO_NET = dict(channels=4, strides=(2, 4, 5, 8), latent_dim=8)


def audio_rvq(**kw):
    return Codec.build(
        "audio-seanet", "rvq", network_kwargs=AUDIO_NET,
        quantizer_kwargs=dict(codebook_size=1024, num_levels=4, **kw),
    )


@pytest.mark.parametrize(
    "text,expected",
    [("1.5kbps", (1.5, "kbps")), ("1500BPS", (1.5, "kbps")), (".05bpp", (0.05, "bpp")),
     (" 3 kbps ", (3.0, "kbps")), ("6KBPS", (6.0, "kbps")), ("0.1Bpp", (0.1, "bpp"))],
)
def test_parse_rate(text, expected):
    value, unit = parse_rate(text)
    assert unit == expected[1] and value == pytest.approx(expected[0])


@pytest.mark.parametrize("text", ["3 mbps", "kbps", "-1kbps", "1e3bps", "", "3"])
def test_parse_rate_rejects(text):
    with pytest.raises(RateError):
        parse_rate(text)


def test_audio_rate_points_are_levels_times_frame_rate():
    codec = audio_rvq()
    points = codec.rate_points()
    assert [p.name for p in points] == ["n1", "n2", "n3", "n4"]
    for n, p in enumerate(points, start=1):
        assert p.unit == "kbps"
        assert p.bits_per_token == 10 * n
        assert p.nominal == pytest.approx(10 * n * 75 / 1000)


def test_image_rate_points_are_bits_per_pixel():
    codec = Codec.build("image-resnet", "rvq", network_kwargs=IMAGE_NET,
                        quantizer_kwargs=dict(codebook_size=256, num_levels=2))
    assert [round(p.nominal, 6) for p in codec.rate_points()] == [8 / 16, 16 / 16]
    assert codec.rate_points()[0].unit == "bpp"


def test_select_rate():
    codec = audio_rvq()
    assert codec.select_rate("1.6kbps").name == "n2"  # 1.5 fits, 2.25 does not
    assert codec.select_rate("2250bps").name == "n3"  # exactly at a point
    assert codec.select_rate("100kbps").name == "n4"
    assert codec.select_rate("max").name == "n4" and codec.select_rate("min").name == "n1"
    assert codec.select_rate("n3").name == "n3"
    with pytest.raises(RateError, match="below the lowest rate.*n1: 0.75 kbps"):
        codec.select_rate("0.5kbps")
    with pytest.raises(RateError, match="rate in bpp, but this is an audio codec.*Available"):
        codec.select_rate("0.1bpp")
    with pytest.raises(RateError, match="or a point name"):
        codec.select_rate("fast")


def test_measured_rates_drive_selection():
    codec = audio_rvq()
    codec.measured_rates = {"n3": 1.9, "n2": 1.1}
    assert codec.select_rate("2kbps").name == "n3"  # measured 1.9 fits 2 kbps, nominal 2.25 would not
    assert "measured 1.9 kbps" in codec.select_rate("n3").describe()


def test_rate_targets_choose_among_target_points():
    codec = audio_rvq()
    names = [p.name for p in codec.rate_points()]  # n1..n4
    codec.target_points = ["n1", "n3"]  # n2 and n4: measured worse for their rate
    assert codec.select_rate("max").name == "n4" and codec.select_rate("n2").name == "n2"  # by name: any point
    assert codec.select_rate(f"{codec.rate_points()[1].rate}kbps").name == "n1"
    assert codec.select_rate("100kbps").name == "n3"
    assert [p.name for p in codec._ladder(codec.rate_points()[2])] == ["n1", "n3"]
    assert [p.name for p in codec._ladder(codec.rate_points()[1])] == names[:2]  # off the front: every point


def test_forward_losses_and_gradients():
    codec = audio_rvq().train()
    x = torch.rand(2, 1, 3000) * 2 - 1
    out = codec(x)
    assert out.x_hat.shape == x.shape
    assert {"recon", "commitment"} <= set(out.loss)
    out.total_loss.backward()
    assert all(p.grad is not None for p in codec.encoder.parameters() if p.requires_grad)


@pytest.mark.parametrize("quantizer", list_quantizers())
def test_every_quantizer_encodes_and_decodes_at_every_rate_point(quantizer):
    codec = Codec.build("image-resnet", quantizer, network_kwargs=IMAGE_NET,
                        quantizer_kwargs=dict(codebook_size=16))
    codec.train()(torch.rand(2, 3, 16, 16))
    codec.eval()
    x = torch.rand(2, 3, 13, 11)
    for point in codec.rate_points():
        enc = codec.encode(x, point.name)
        assert enc.codes.shape[:3] == (2, 4, 3) and enc.point == point
        assert codec.decode(enc).shape == x.shape


def test_save_load_gives_identical_outputs(tmp_path):
    codec = audio_rvq(init="kmeans")
    codec.train()(torch.rand(2, 1, 3000) * 2 - 1)  # move k-means init, EMA state
    codec.eval()
    codec.measured_rates = {"n2": 1.4}
    codec.target_points = ["n1", "n4"]
    codec.save(tmp_path / "m", metadata={"note": "test"})
    loaded = Codec.load(tmp_path / "m")
    x = torch.rand(1, 2, 4321) * 2 - 1
    for rate in ("n1", "n4"):
        a, b = codec.encode(x, rate), loaded.encode(x, rate)
        assert torch.equal(a.codes, b.codes)
        assert torch.equal(codec.decode(a), loaded.decode(b))
    assert loaded.measured_rates == {"n2": 1.4} and loaded.target_points == ["n1", "n4"]
    assert json.loads((tmp_path / "m" / "config.json").read_text())["modality"] == "audio"


def trained_raq_codec():
    """A tiny residual-RAQ audio codec after one training step (k-means init, EMA state moved)."""
    torch.manual_seed(0)
    codec = Codec.build("audio-seanet", "rvq", network_kwargs=AUDIO_NET, quantizer_kwargs=dict(
        codebook_size=64, num_levels=2, quantizer="raq", min_codebook_size=4, max_codebook_size=64,
        rate_points=[4, 16, 64], forcing="official", base_kwargs=dict(init="kmeans")))
    codec.train()(torch.rand(2, 1, 3000) * 2 - 1)
    return codec


def test_inference_only_models_code_identically_without_training_state(tmp_path):
    codec = trained_raq_codec()
    codec.eval()
    codec.save(tmp_path / "full")
    codec.strip_training_state()
    codec.save(tmp_path / "slim")
    full, slim = Codec.load(tmp_path / "full"), Codec.load(tmp_path / "slim")
    from safetensors import safe_open

    keys = {k: set(safe_open(str(tmp_path / k / "model.safetensors"), "pt").keys()) for k in ("full", "slim")}
    left_out = keys["full"] - keys["slim"]
    assert left_out and keys["slim"] < keys["full"]
    assert all(".generator." in k or k.endswith("embed_sum") for k in left_out)
    assert slim.inference_only and not full.inference_only
    x = torch.rand(1, 1, 4321) * 2 - 1
    for point in full.rate_points():
        a, b = full.encode(x, point.name), slim.encode(x, point.name)
        assert torch.equal(a.codes, b.codes) and torch.equal(full.decode(a), slim.decode(b))
    assert slim.weights_sha256() == Codec.load(tmp_path / "slim").weights_sha256() == codec.weights_sha256()
    # stripping a published model again (publishing a decoder fine-tune of it) keeps its codebooks
    again = Codec.load(tmp_path / "slim")
    again.strip_training_state()
    assert again.weights_sha256() == slim.weights_sha256()
    assert torch.equal(again.encode(x, "k16-n2").codes, slim.encode(x, "k16-n2").codes)
    with pytest.raises(RuntimeError, match="inference only"):
        slim.train()
    with pytest.raises(ValueError, match="not one of the published sizes"):
        slim.quantizer.levels[0].codebook(8)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_16_bit_storage_publishes_exactly_the_rounded_model(tmp_path, dtype):
    codec = trained_raq_codec()
    codec.strip_training_state()
    codec.save(tmp_path / "f32")
    with pytest.raises(ValueError, match="round_weights_"):  # a lossy cast is never written silently
        codec.save(tmp_path / "f16", storage_dtype=dtype)
    assert not (tmp_path / "f16" / "model.safetensors").exists()
    before = {k: v.clone() for k, v in codec.state_dict().items()}
    codec.round_weights_(dtype)
    changed = [k for k, v in codec.state_dict().items() if not torch.equal(v, before[k])]
    assert changed and all(codec.state_dict()[k].dtype == before[k].dtype for k in changed)
    for k in changed:  # rounding, not damage: within 16-bit precision of the trained value
        assert torch.allclose(codec.state_dict()[k], before[k], rtol=1e-2 if dtype == torch.bfloat16 else 1e-3,
                              atol=1e-6)
    codec.save(tmp_path / "f16", storage_dtype=dtype)
    from safetensors import safe_open

    with safe_open(str(tmp_path / "f16" / "model.safetensors"), "pt") as f:
        stored = {f.get_tensor(k).dtype for k in f.keys()}
    assert dtype in stored and torch.float32 not in stored
    size = {k: (tmp_path / k / "model.safetensors").stat().st_size for k in ("f32", "f16")}
    assert size["f16"] < 0.6 * size["f32"]
    loaded = Codec.load(tmp_path / "f16")
    assert all(v.dtype != dtype for v in loaded.state_dict().values())  # computes in float32
    assert loaded.weights_sha256() == codec.weights_sha256()
    x = torch.rand(1, 1, 4321) * 2 - 1
    for point in codec.rate_points():
        a, b = codec.encode(x, point.name), loaded.encode(x, point.name)
        assert torch.equal(a.codes, b.codes) and torch.equal(codec.decode(a), loaded.decode(b))
    with pytest.raises(ValueError, match="storage dtype"):
        codec.round_weights_(torch.int8)


def test_round_weights_refuses_overflow():
    codec = audio_rvq()
    with torch.no_grad():
        next(codec.parameters()).view(-1)[0] = 1e6
    with pytest.raises(ValueError, match="outside the range"):
        codec.round_weights_(torch.float16)


def test_load_refuses_weights_stored_in_another_kind_of_dtype(tmp_path):
    from safetensors.torch import load_file, save_file

    folder = audio_rvq().save(tmp_path / "m")
    tensors = load_file(str(folder / "model.safetensors"))
    key = next(k for k, v in tensors.items() if v.is_floating_point())
    tensors[key] = tensors[key].to(torch.int32)
    save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "vqcodec-model"})
    with pytest.raises(ValueError, match="stored as torch.int32"):
        Codec.load(folder)


def test_load_refuses_foreign_or_mismatched_files(tmp_path):
    codec = audio_rvq()
    folder = codec.save(tmp_path / "m")
    cfg = json.loads((folder / "config.json").read_text())
    for bad, match in [
        ({**cfg, "format": "other"}, "not a vqcodec model"),
        ({**cfg, "version": 99}, "unsupported model config version"),
        ({**cfg, "quantizer": {"name": "rvq", "kwargs": {"codebook_size": 512, "num_levels": 4}}}, "do not match|size mismatch"),
    ]:
        (folder / "config.json").write_text(json.dumps(bad))
        with pytest.raises((ValueError, RuntimeError), match=match):
            Codec.load(folder)
    (folder / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        Codec.load(folder)
    with pytest.raises(FileNotFoundError):
        Codec.load(tmp_path / "nothing")


def test_a_model_folder_may_share_its_weight_files_with_a_sibling(tmp_path):
    import shutil

    from codec.model import model_files

    codec = audio_rvq(init="kmeans")
    codec.train()(torch.rand(2, 1, 3000) * 2 - 1)
    codec.eval().fit_entropy_tables([torch.rand(1, 1, 4000) * 2 - 1])
    base = codec.save(tmp_path / "audio-v1", name="audio-v1")
    variant = tmp_path / "audio-v2"
    variant.mkdir()
    cfg = json.loads((base / "config.json").read_text())
    shared = {**cfg, "name": "audio-v2", "beam_size": 4,  # a config change: another encoder setting
              "shared_files": {"model.safetensors": "audio-v1", "entropy.safetensors": "audio-v1"}}
    (variant / "config.json").write_text(json.dumps(shared))
    files = model_files(variant)
    assert files["model.safetensors"] == tmp_path / "audio-v1" / "model.safetensors"
    assert not files["postfilter.safetensors"].exists()
    loaded = Codec.load(variant)
    assert loaded.weights_sha256() == codec.weights_sha256() and loaded.beam_size == 4 and loaded.name == "audio-v2"
    x = torch.rand(1, 1, 4000) * 2 - 1
    codes = codec.encode(x, "n2")
    assert torch.equal(loaded.decode(codes), codec.decode(codes))
    assert loaded.entropy_tables.keys() == codec.entropy_tables.keys() and loaded.entropy_tables  # the shared tables
    # saved elsewhere, a shared model becomes a complete folder of its own
    loaded.save(tmp_path / "copy" / "m")
    assert "shared_files" not in json.loads((tmp_path / "copy" / "m" / "config.json").read_text())
    assert Codec.load(tmp_path / "copy" / "m").weights_sha256() == codec.weights_sha256()
    for bad, match in [
        ({"model.safetensors": "../audio-v1"}, "must name a sibling folder"),
        ({"model.safetensors": "/etc"}, "must name a sibling folder"),
        ({"model.safetensors": ".."}, "must name a sibling folder"),
        ({"config.json": "audio-v1"}, "may share"),
        ({"model.safetensors": "audio-v9"}, "does not exist"),
        (["audio-v1"], "must map file names"),
    ]:
        (variant / "config.json").write_text(json.dumps({**shared, "shared_files": bad}))
        with pytest.raises((ValueError, FileNotFoundError), match=match):
            Codec.load(variant)
    (variant / "config.json").write_text(json.dumps(shared))
    shutil.copy(base / "model.safetensors", variant / "model.safetensors")
    with pytest.raises(ValueError, match="holds model.safetensors and also shares it"):
        Codec.load(variant)


def test_decode_checks_the_latent_grid():
    codec = audio_rvq().eval()
    enc = codec.encode(torch.rand(1, 1, 1000), "n2")
    enc.padded = (640,)
    with pytest.raises(ValueError, match="latent grid"):
        codec.decode(enc)
