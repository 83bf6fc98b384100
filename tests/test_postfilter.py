"""The decoder-side formant postfilter: the filter itself, its place in decoding, its publication."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.linalg
import scipy.signal
import torch

from codec.bitstream import read_container
from codec.hub import file_sha256
from codec.model import Codec
from codec.postfilter import FormantPostfilter, build_postfilter, levinson
from tests.published import tiny_audio_codec, tiny_published_model

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def ar_signal(seconds: float = 1.0, sample_rate: int = 24000, seed: int = 0) -> torch.Tensor:
    """White noise through two resonances (800 Hz and 2.4 kHz): a formant-like spectrum ``(T,)``."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(int(seconds * sample_rate))
    for f, r in ((800, 0.97), (2400, 0.95)):
        w = 2 * np.pi * f / sample_rate
        x = scipy.signal.lfilter([1.0], [1.0, -2 * r * np.cos(w), r * r], x)
    return torch.from_numpy(0.1 * x / np.abs(x).max()).float()


def test_levinson_solves_the_normal_equations():
    rng = np.random.default_rng(1)
    rows = []
    for _ in range(4):
        frame = rng.standard_normal(512) * np.hanning(512)
        r = np.correlate(frame, frame, "full")[511:523]
        rows.append(r)
    r = torch.tensor(np.array(rows))
    a = levinson(r, 10)
    for i in range(4):
        want = scipy.linalg.solve_toeplitz(rows[i][:10], -rows[i][1:11])
        np.testing.assert_allclose(a[i, 1:].numpy(), want, rtol=1e-6, atol=1e-9)
    assert torch.equal(levinson(torch.zeros(1, 11, dtype=torch.float64), 10)[0], torch.eye(11, dtype=torch.float64)[0])


def test_strength_zero_is_the_identity_and_shapes_are_kept():
    x = ar_signal(0.5)[None, None]
    assert FormantPostfilter(24000, strength=0.0)(x) is x
    pf = FormantPostfilter(24000)
    for shape in ((3000,), (2, 1, 3000), (1, 1, 100)):  # 100 samples: shorter than a frame
        y = pf(torch.rand(shape) - 0.5)
        assert y.shape == shape and y.dtype == torch.float32 and torch.isfinite(y).all()
    silent = torch.zeros(1, 1, 4800)
    assert torch.equal(pf(silent), silent)


def test_it_deepens_the_valleys_between_formants_and_keeps_the_energy():
    x = ar_signal(1.0)
    y = FormantPostfilter(24000, gamma_num=0.6, gamma_den=0.9, strength=1.0)(x)
    f, px = scipy.signal.welch(x.numpy(), 24000, nperseg=1024)
    _, py = scipy.signal.welch(y.numpy(), 24000, nperseg=1024)
    peak, valley = np.argmin(np.abs(f - 800)), np.argmin(np.abs(f - 5000))
    gain_db = 10 * np.log10(py / px)
    assert gain_db[peak] - gain_db[valley] > 6.0  # the valley falls relative to the formant
    assert abs(10 * np.log10(float(y.square().sum() / x.square().sum()))) < 1.0  # each frame's energy kept


def test_the_pitch_stage_deepens_the_valleys_between_harmonics_and_leaves_noise_alone():
    sr = 24000
    rng = np.random.default_rng(2)
    t = np.arange(sr) / sr
    voiced = sum(np.sin(2 * np.pi * 150 * k * t) / k for k in range(1, 8))
    x = torch.from_numpy(0.1 * (voiced + 0.3 * rng.standard_normal(sr))).float()
    pf = FormantPostfilter(sr, strength=0.0, pitch_gain=0.5)
    y = pf(x)
    f, px = scipy.signal.welch(x.numpy(), sr, nperseg=4096)
    _, py = scipy.signal.welch(y.numpy(), sr, nperseg=4096)
    harmonics = [np.argmin(np.abs(f - 150 * k)) for k in range(1, 6)]
    between = [np.argmin(np.abs(f - 150 * k - 75)) for k in range(1, 6)]
    gain_db = 10 * np.log10(py / px)
    assert gain_db[harmonics].mean() - gain_db[between].mean() > 3.0
    noise = torch.from_numpy(0.1 * rng.standard_normal(sr)).float()  # no lag correlates above the threshold
    torch.testing.assert_close(pf(noise), noise, atol=1e-6, rtol=0)
    assert pf(torch.zeros(2, 1, 500)).abs().max() == 0  # silence and inputs shorter than a frame's past
    for kwargs in ({"pitch_gain": 1.5}, {"pitch_threshold": 1.0}, {"pitch_min_hz": 500.0, "pitch_max_hz": 400.0},
                   {"pitch_max_hz": 7000.0}, {"pitch_frame_ms": 0.0}):
        with pytest.raises(ValueError, match="pitch"):
            FormantPostfilter(sr, **kwargs)


def test_build_postfilter_refuses_malformed_entries():
    assert build_postfilter(None, 24000) is None
    pf = build_postfilter({"name": "formant", "kwargs": {"strength": 0.25}}, 16000)
    assert isinstance(pf, FormantPostfilter) and pf.strength == 0.25 and pf.sample_rate == 16000
    rebuilt = build_postfilter(pf.config(), 16000)
    assert rebuilt.config() == pf.config()
    for bad in ("formant", {"kwargs": {}}, {"name": "formant", "kwargs": []}):
        with pytest.raises(ValueError, match="postfilter"):
            build_postfilter(bad, 24000)
    with pytest.raises(ValueError, match="sample rate"):
        build_postfilter({"name": "formant", "kwargs": {"sample_rate": 8000}}, 24000)
    with pytest.raises(ValueError, match="audio"):
        build_postfilter({"name": "formant"}, None)
    with pytest.raises(KeyError):
        build_postfilter({"name": "no-such-filter"}, 24000)
    for kwargs in ({"gamma_num": 0.9, "gamma_den": 0.8}, {"strength": -1.0}):
        with pytest.raises(ValueError):
            FormantPostfilter(24000, **kwargs)


def codec_with_postfilter(postfilter: dict | None) -> Codec:
    model = tiny_audio_codec()
    if postfilter is not None:
        model.config["postfilter"] = postfilter
        model.postfilter = build_postfilter(postfilter, model.sample_rate)
    return model


def test_the_decoder_applies_it_and_files_do_not_change(tmp_path):
    plain = codec_with_postfilter(None)
    model = codec_with_postfilter({"name": "formant", "kwargs": {"strength": 0.5}})
    assert model.weights_sha256() == plain.weights_sha256()
    x = ar_signal(1.0)[None, None]
    data = model.compress(x, "n3")
    assert data == plain.compress(x, "n3")  # the encoder and the file are untouched
    raw, _ = model.decompress(data, postfilter=False)
    torch.testing.assert_close(raw, plain.decompress(data)[0])
    filtered, _ = model.decompress(data)
    torch.testing.assert_close(filtered, model.postfilter(raw), atol=1e-5, rtol=0)  # one tile: the filter of the output
    assert not torch.allclose(filtered, raw)
    blocks = torch.cat(list(model.decompress_stream(data)[1]), dim=-1)
    torch.testing.assert_close(blocks, filtered, atol=1e-5, rtol=0)
    # saved and loaded, the model keeps its postfilter
    model.save(tmp_path / "m", name="audio-pf")
    loaded = Codec.load(tmp_path / "m")
    assert loaded.postfilter is not None and loaded.postfilter.config() == model.postfilter.config()


def test_publish_postfilter_makes_a_new_model_and_leaves_the_source(tmp_path):
    from scripts.publish_postfilter import main

    model, weights, entry = tiny_published_model(tmp_path, "audio-t1", "# audio-t1\n\n## Training\n\nby hand\n\n## Rate points\n\ntable\n")
    source = {f: file_sha256(weights / "audio-t1" / f) for f in ("model.safetensors", "entropy.safetensors", "config.json")}
    args = ["audio-t1", "--publish-as", "audio-t2", "--strength", "0.75", "--weights-dir", str(weights)]

    summary = main([*args, "--description", "with a postfilter"])

    assert {f: file_sha256(weights / "audio-t1" / f) for f in source} == source
    index = json.loads((weights / "index.json").read_text())
    assert index["models"]["audio-t2"] == {**entry, "description": "with a postfilter"}
    new = Codec.load(weights / "audio-t2")
    assert new.name == "audio-t2" and new.weights_sha256() == model.weights_sha256()
    # the new model keeps the source's weights and tables where they are, without a copy
    assert not list((weights / "audio-t2").glob("*.safetensors"))
    assert json.loads((weights / "audio-t2" / "config.json").read_text())["shared_files"] == {
        "model.safetensors": "audio-t1", "entropy.safetensors": "audio-t1"}
    assert new.postfilter.strength == 0.75 and summary["postfilter"] == new.postfilter.config()
    card = (weights / "audio-t2" / "MODEL_CARD.md").read_text()
    assert card.startswith("# audio-t2\n") and card.index("## Postfilter") < card.index("## Rate points")
    with pytest.raises(SystemExit, match="already published"):
        main(args)
    with pytest.raises(SystemExit, match="already has a postfilter"):
        main(["audio-t2", "--publish-as", "audio-t3", "--weights-dir", str(weights)])
    assert not any(p.name.startswith(".") for p in weights.iterdir())


def test_the_bundled_audio_v8_is_audio_v7_with_a_postfilter():
    from codec.hub import load_model

    v7, v8 = load_model("audio-v7"), load_model("audio-v8")
    assert v8.weights_sha256() == v7.weights_sha256() and v7.postfilter is None
    assert v8.postfilter is not None and v8.target_points == v7.target_points
    x = ar_signal(2.0)[None, None]
    a, b = v8.compress_detailed(x, "1.6kbps"), v7.compress_detailed(x, "1.6kbps")
    (ha, ca), (hb, cb) = read_container(a.data), read_container(b.data)
    assert ca == cb and ha["model"]["name"] == "audio-v8"  # the same file but for the model's name
    raw, _ = v8.decompress(a.data, postfilter=False)
    torch.testing.assert_close(raw, v7.decompress(b.data)[0])
    y, _ = v8.decompress(a.data)
    assert y.shape == x.shape and not torch.allclose(y, raw)


def test_the_bundled_audio_v9_adds_the_pitch_stage_to_audio_v8s_filter():
    from codec.hub import load_model

    v7, v8, v9 = load_model("audio-v7"), load_model("audio-v8"), load_model("audio-v9")
    assert v9.weights_sha256() == v7.weights_sha256() and v9.target_points == v7.target_points
    assert v8.postfilter.pitch_gain == 0 and v9.postfilter.pitch_gain == 0.25
    short_term = {k: v for k, v in v9.postfilter.config()["kwargs"].items() if not k.startswith("pitch")}
    assert short_term == {k: v for k, v in v8.postfilter.config()["kwargs"].items() if not k.startswith("pitch")}
    x = ar_signal(2.0)[None, None]
    a, b = v9.compress_detailed(x, "1.6kbps"), v7.compress_detailed(x, "1.6kbps")
    assert read_container(a.data)[1] == read_container(b.data)[1]
    torch.testing.assert_close(v9.decompress(a.data, postfilter=False)[0], v7.decompress(b.data)[0])


def test_the_bundled_audio_v10_is_audio_v9_with_g729s_pitch_gain():
    from codec.hub import load_model

    v7, v9, v10 = load_model("audio-v7"), load_model("audio-v9"), load_model("audio-v10")
    assert v10.weights_sha256() == v7.weights_sha256() and v10.target_points == v7.target_points
    assert v10.postfilter.pitch_gain == 0.5
    assert {**v9.postfilter.config()["kwargs"], "pitch_gain": 0.5} == v10.postfilter.config()["kwargs"]
    x = ar_signal(2.0)[None, None]
    a, b = v10.compress_detailed(x, "1.2kbps"), v9.compress_detailed(x, "1.2kbps")
    assert read_container(a.data)[1] == read_container(b.data)[1]  # the same codes; only the decoder's filter differs
    raw = v10.decompress(a.data, postfilter=False)[0]
    torch.testing.assert_close(raw, v9.decompress(b.data, postfilter=False)[0])
    y10, y9 = v10.decompress(a.data)[0], v9.decompress(b.data)[0]
    # the stronger comb moves the output further from the decoder's own
    assert (y10 - raw).square().sum() > (y9 - raw).square().sum() > 0


def _decodes_as_audio_v9_but_in_the_telephone_band(name: str) -> Codec:
    """The bundled model ``name``: audio-v9's weights and targets, the same codes, its decoded
    telephone-band (8 kHz) output otherwise filtered than audio-v9's, the rest exactly audio-v9's."""
    from codec.files import compress_signal, decompress
    from codec.hub import load_model

    v9, new = load_model("audio-v9"), load_model(name)
    assert new.weights_sha256() == v9.weights_sha256() and new.target_points == v9.target_points
    assert new.postfilter.wide.config() == v9.postfilter.config()
    for rate_hz in (8000, 16000):
        x = torch.from_numpy(scipy.signal.resample_poly(ar_signal(2.0).numpy(), rate_hz, 24000)).float()[None]
        # a rate point, not a target: the longer name leaves a 1.2 kbps budget one byte less
        a = compress_signal(x, rate="k256-n2", model=new, sample_rate=rate_hz)
        b = compress_signal(x, rate="k256-n2", model=v9, sample_rate=rate_hz)
        assert read_container(a.data)[1] == read_container(b.data)[1]  # the same codes
        ours, theirs = decompress(a.data, new)[0], decompress(b.data, v9)[0]
        if rate_hz == 8000:
            assert (ours - theirs).abs().max() > 1e-3  # its own filter, not audio-v9's
            torch.testing.assert_close(decompress(a.data, new, postfilter=False)[0], decompress(b.data, v9, postfilter=False)[0])
        else:
            torch.testing.assert_close(ours, theirs)
    return new


def test_the_bundled_audio_v11_filters_telephone_output_with_its_net_and_the_rest_as_audio_v9():
    from codec.postfilter import BandwidthPostfilter, SpectralMaskPostfilter

    pf = _decodes_as_audio_v9_but_in_the_telephone_band("audio-v11").postfilter
    assert isinstance(pf, BandwidthPostfilter) and isinstance(pf.narrow, SpectralMaskPostfilter) and pf.narrow.loaded
    assert pf.narrow.then.strength == 0 and pf.narrow.then.pitch_gain == 0.25


def test_the_bundled_audio_v12_filters_telephone_output_more_strongly_and_the_rest_as_audio_v9():
    from codec.postfilter import BandwidthPostfilter, FormantPostfilter

    pf = _decodes_as_audio_v9_but_in_the_telephone_band("audio-v12").postfilter
    assert isinstance(pf, BandwidthPostfilter) and isinstance(pf.narrow, FormantPostfilter)
    assert (pf.narrow.strength, pf.narrow.pitch_gain) == (0.75, 0.4)


# -- the learned (spectral-mask) postfilter ------------------------------------------------------
def trained_like_mask(seed: int = 0, **kwargs) -> "SpectralMaskPostfilter":
    """A spectral-mask postfilter with random (not identity) weights, as if trained."""
    from codec.postfilter import SpectralMaskPostfilter

    pf = SpectralMaskPostfilter(24000, hidden=16, blocks=2, **kwargs)
    torch.manual_seed(seed)
    weights = {k: 0.1 * torch.randn_like(v) for k, v in pf.net.state_dict().items()}
    pf.load_weights(weights)
    return pf


def test_an_untrained_mask_is_the_identity_and_an_unloaded_one_refuses():
    from codec.postfilter import SpectralMaskPostfilter

    pf = SpectralMaskPostfilter(24000, hidden=16, blocks=2)
    x = ar_signal(0.5)[None, None]
    with pytest.raises(RuntimeError, match="no weights"):
        pf(x)
    pf.load_weights(pf.net.state_dict())
    torch.testing.assert_close(pf(x), x, atol=1e-5, rtol=0)  # gains 1 at initialisation: STFT and back
    with pytest.raises(ValueError, match="do not match"):
        pf.load_weights({k: v[..., :1] for k, v in pf.net.state_dict().items()})
    with pytest.raises(ValueError):
        SpectralMaskPostfilter(24000, hop=400)
    with pytest.raises(ValueError, match="formant"):
        SpectralMaskPostfilter(24000, then={"name": "spectral-mask"})


def test_the_mask_follows_the_rate_and_keeps_shapes():
    pf = trained_like_mask()
    x = ar_signal(0.5)
    low, high = pf(x, rate_kbps=1.2), pf(x, rate_kbps=6.0)
    assert low.shape == x.shape and low.dtype == x.dtype
    assert not torch.allclose(low, high)  # the rate reaches the net
    assert pf(x[None, None, :0]).shape == (1, 1, 0)
    batch = torch.stack([x, 0.5 * x])[:, None]  # (2, 1, T): rows are filtered independently
    torch.testing.assert_close(pf(batch, 1.2)[0, 0], low, atol=1e-5, rtol=0)
    chained = trained_like_mask(then={"name": "formant", "kwargs": {"strength": 0.5}})
    torch.testing.assert_close(chained(x, 1.2), chained.then(low), atol=1e-5, rtol=0)
    rebuilt = build_postfilter(chained.config(), 24000)
    assert rebuilt.config() == chained.config() and not rebuilt.loaded


def test_a_codec_saves_and_loads_its_learned_postfilter_outside_the_weights_hash(tmp_path):
    from codec.postfilter import POSTFILTER_FILE

    plain = codec_with_postfilter(None)
    pf = trained_like_mask()
    model = codec_with_postfilter(pf.config())
    model.postfilter = pf
    assert model.weights_sha256() == plain.weights_sha256()  # the codes mean what they meant
    x = ar_signal(1.0)[None, None]
    data = model.compress(x, "n3")
    assert data == plain.compress(x, "n3")
    raw, _ = model.decompress(data, postfilter=False)
    filtered, _ = model.decompress(data)
    point = model.select_rate("n3")
    torch.testing.assert_close(filtered, pf(raw, rate_kbps=point.rate), atol=1e-5, rtol=0)
    model.save(tmp_path / "m", name="audio-mask")
    assert (tmp_path / "m" / POSTFILTER_FILE).is_file()
    loaded = Codec.load(tmp_path / "m")
    torch.testing.assert_close(loaded.decompress(data)[0], filtered)
    (tmp_path / "m" / POSTFILTER_FILE).unlink()
    with pytest.raises(ValueError, match="postfilter.safetensors"):
        Codec.load(tmp_path / "m")


def test_publish_a_narrow_band_formant_postfilter(tmp_path):
    from codec.postfilter import BandwidthPostfilter
    from scripts.publish_postfilter import main

    model, weights, entry = tiny_published_model(tmp_path, "audio-t1", "# audio-t1\n\n## Training\n\nby hand\n\n## Rate points\n\ntable\n")
    with pytest.raises(SystemExit, match="goes with --narrow-strength"):
        main(["audio-t1", "--publish-as", "audio-t2", "--narrow-pitch-gain", "0.4", "--weights-dir", str(weights)])
    main(["audio-t1", "--publish-as", "audio-t2", "--pitch-gain", "0.25", "--narrow-strength", "0.75",
          "--narrow-pitch-gain", "0.4", "--weights-dir", str(weights)])
    pf = Codec.load(weights / "audio-t2").postfilter
    assert isinstance(pf, BandwidthPostfilter) and pf.narrow_max_rate_hz == 8000
    assert (pf.narrow.strength, pf.narrow.pitch_gain, pf.wide.strength, pf.wide.pitch_gain) == (0.75, 0.4, 0.5, 0.25)
    card = (weights / "audio-t2" / "MODEL_CARD.md").read_text()
    assert "returned at 8 kHz or less" in card and "strength 0.75 and its pitch stage at gain 0.4" in card


def test_publish_a_learned_postfilter_records_its_hash(tmp_path):
    from safetensors.torch import save_file

    from scripts.publish_postfilter import main

    model, weights, entry = tiny_published_model(tmp_path, "audio-t1", "# audio-t1\n\n## Training\n\nby hand\n\n## Rate points\n\ntable\n")
    pf = trained_like_mask()
    mask = tmp_path / "mask.safetensors"
    save_file(pf.net.state_dict(), str(mask), metadata={"config": json.dumps(pf.config()), "step": "7"})
    summary = main(["audio-t1", "--publish-as", "audio-t2", "--mask", str(mask), "--then-formant", "--pitch-gain", "0.25",
                    "--weights-dir", str(weights)])
    new = Codec.load(weights / "audio-t2")
    index = json.loads((weights / "index.json").read_text())
    assert index["models"]["audio-t2"]["postfilter_sha256"] == file_sha256(weights / "audio-t2" / "postfilter.safetensors")
    assert "postfilter_sha256" not in index["models"]["audio-t1"] and new.weights_sha256() == model.weights_sha256()
    assert new.postfilter.then.pitch_gain == 0.25 and summary["postfilter"] == new.postfilter.config()
    x = ar_signal(0.5)
    torch.testing.assert_close(new.postfilter(x, 1.2), new.postfilter.then(pf(x, 1.2)), atol=1e-5, rtol=0)
    assert "7 steps" in (weights / "audio-t2" / "MODEL_CARD.md").read_text()
    with pytest.raises(SystemExit, match="postfilter"):
        main(["audio-t1", "--publish-as", "audio-t3", "--mask", str(tmp_path / "missing.safetensors"), "--weights-dir", str(weights)])


def test_a_bandwidth_postfilter_filters_narrow_band_output_with_its_own_stage(tmp_path):
    from codec.files import compress_signal, decompress
    from codec.postfilter import BandwidthPostfilter, learned_stage

    mask = trained_like_mask()
    formant = {"name": "formant", "kwargs": {"strength": 0.5}}
    pf = BandwidthPostfilter(24000, narrow=mask.config(), wide=formant)
    learned_stage(pf).load_weights(mask.net.state_dict())
    x = ar_signal(0.5)
    torch.testing.assert_close(pf(x, 1.2, output_rate_hz=8000), mask(x, 1.2), atol=1e-6, rtol=0)
    torch.testing.assert_close(pf(x, 1.2, output_rate_hz=16000), pf.wide(x), atol=1e-6, rtol=0)
    torch.testing.assert_close(pf(x, 1.2), pf.wide(x), atol=1e-6, rtol=0)  # unknown: wide
    assert build_postfilter(pf.config(), 24000).config() == pf.config()
    for bad in ({"narrow": None}, {"narrow": mask.config(), "wide": mask.config()},
                {"narrow": pf.config()}, {"narrow": formant, "narrow_max_rate_hz": 24000}):
        with pytest.raises(ValueError):
            BandwidthPostfilter(24000, **bad)

    model = codec_with_postfilter(pf.config())
    model.postfilter = pf
    model.save(tmp_path / "m", name="audio-bw")
    loaded = Codec.load(tmp_path / "m")
    for rate_hz in (8000, 16000):
        sig = torch.from_numpy(scipy.signal.resample_poly(ar_signal(1.0).numpy(), rate_hz, 24000)).float()[None]
        data = compress_signal(sig, rate="n3", model=loaded, sample_rate=rate_hz).data
        raw, _ = loaded.decompress(data, postfilter=False)
        filtered, _ = loaded.decompress(data)
        stage = mask if rate_hz == 8000 else pf.wide
        torch.testing.assert_close(filtered, stage(raw, loaded.select_rate("n3").rate), atol=1e-5, rtol=0)
        y, meta = decompress(data, loaded)
        assert meta["sample_rate"] == rate_hz and y.shape[-1] == sig.shape[-1]
