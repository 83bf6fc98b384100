"""The shallow decoder: a second decoder for positions coding few residual levels, blended by the
codes' own depth, outside the weights hash (codec/shallow.py)."""

import copy
import json

import pytest
import torch

from codec.model import Codec, EncodedCodes
from codec.shallow import SHALLOW_DECODER_FILE, ShallowDecoder, build_shallow_decoder, code_depth
from tests.published import tiny_audio_codec, tiny_published_model

CARD = "# audio-t1\n\n## Training\n\nby hand\n\n## Rate points\n\ntable\n"


def speech_like(seconds: float = 1.5) -> torch.Tensor:
    """Tones that come and go, in near-silence: ``(1, 1, T)`` at 24 kHz."""
    t = torch.arange(int(24000 * seconds)) / 24000
    gate = (torch.sin(2 * torch.pi * 1.3 * t) > 0.0).float()
    return (0.4 * gate * torch.sin(2 * torch.pi * 220 * t) + 0.002 * torch.randn(t.shape)).reshape(1, 1, -1)


def other_decoder(model: Codec, seed: int = 1) -> ShallowDecoder:
    """A shallow decoder whose weights are the model decoder's, perturbed (so its output differs)."""
    dec = copy.deepcopy(model.decoder)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in dec.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    shallow = ShallowDecoder(copy.deepcopy(model.decoder), max_levels=1, smooth_frames=2)
    shallow.load_weights(dec.state_dict())
    return shallow


def with_shallow(model: Codec, shallow: ShallowDecoder) -> Codec:
    out = copy.deepcopy(model)
    out.config["shallow_decoder"] = shallow.config()
    out.shallow_decoder = shallow
    return out


def test_code_depth_counts_the_levels_each_position_codes():
    codes = torch.tensor([[[3, 1, -1], [-1, -1, -1], [0, 2, 5]]])
    assert code_depth(codes, level_axis=True).tolist() == [[2, 0, 3]]
    assert code_depth(torch.zeros(1, 4, dtype=torch.long), level_axis=False).tolist() == [[1, 1, 1, 1]]


def test_the_weight_is_the_share_of_shallow_positions_around_each_sample():
    shallow = ShallowDecoder(torch.nn.Identity(), max_levels=1, smooth_frames=0)
    depth = torch.tensor([[1, 1, 1, 1, 3, 3, 3, 3]])
    w = shallow.weight(depth, (80,))
    assert w.shape == (1, 1, 80) and w.min() >= 0 and w.max() <= 1
    assert torch.all(w[..., :30] == 1) and torch.all(w[..., -30:] == 0)
    smooth = ShallowDecoder(torch.nn.Identity(), max_levels=2, smooth_frames=2).weight(depth, (8,))
    # depth 3 is deep, 1 shallow; a window of five positions around each
    torch.testing.assert_close(smooth[0, 0], torch.tensor([1, 1, 0.8, 0.6, 0.4, 0.2, 0, 0]))
    image = ShallowDecoder(torch.nn.Identity(), smooth_frames=1).weight(torch.ones(1, 3, 4, dtype=torch.long), (12, 16))
    assert image.shape == (1, 1, 12, 16) and torch.all(image == 1)


def test_malformed_entries_and_weights_are_refused():
    model = tiny_audio_codec()
    for entry in ({"max_levels": 0}, {"smooth_frames": -1}, {"smooth_frames": 10_000}, {"max_levels": 1.5},
                  {"max_levels": True}, {"levels": 1}, [1], {"model_energies_share": 1.5},
                  {"model_energies_share": "0.9"}, {"model_energies_share": True}, {"model_energies_share": float("nan")}):
        with pytest.raises(ValueError, match="shallow"):
            build_shallow_decoder(entry, copy.deepcopy(model.decoder))
    assert build_shallow_decoder(None, model.decoder) is None
    shallow = build_shallow_decoder({"max_levels": 2}, copy.deepcopy(model.decoder))
    assert shallow.config() == {"max_levels": 2, "smooth_frames": 0}
    with pytest.raises(RuntimeError, match="no weights"):
        shallow.blend(torch.zeros(1, 8, 10), torch.ones(1, 10, dtype=torch.long), model.decoder)
    state = model.decoder.state_dict()
    with pytest.raises(ValueError, match="do not match"):
        shallow.load_weights({k: v for k, v in list(state.items())[1:]})
    bad = {k: v.clone() for k, v in state.items()}
    key = next(k for k, v in bad.items() if v.is_floating_point())
    bad[key][...] = float("nan")
    with pytest.raises(ValueError, match="non-finite"):
        shallow.load_weights(bad)


def test_shallow_codes_decode_through_it_deep_ones_through_the_model_and_files_do_not_change():
    plain = tiny_audio_codec()
    shallow = other_decoder(plain)
    model = with_shallow(plain, shallow)
    assert model.weights_sha256() == plain.weights_sha256()  # what the codes mean is unchanged
    x = speech_like()
    for point in ("n1", "n3"):
        data = model.compress(x, point, envelope=False)
        assert data == plain.compress(x, point, envelope=False)  # codes and rate decisions: the model decoder's
        ours, theirs = model.decompress(data, postfilter=False)[0], plain.decompress(data, postfilter=False)[0]
        if point == "n3":  # three levels everywhere: deep, the model decoder alone
            torch.testing.assert_close(ours, theirs)
        else:  # one level everywhere: the shallow decoder alone
            swapped = copy.deepcopy(plain)
            swapped.decoder = shallow.decoder
            torch.testing.assert_close(ours, swapped.decompress(data, postfilter=False)[0])
            assert not torch.allclose(ours, theirs)


def test_band_energies_are_measured_against_what_the_decoder_synthesises():
    from codec.envelope import BandEnergy

    plain = tiny_audio_codec()
    plain.envelope = BandEnergy(24000)
    shallow = other_decoder(plain)
    model = with_shallow(plain, shallow)
    swapped = copy.deepcopy(plain)  # the shallow decoder as the model's own
    swapped.decoder = copy.deepcopy(shallow.decoder)
    x = speech_like()
    # one level everywhere: the steps correct the shallow decoder's output, as a model decoding
    # with that decoder alone would write them
    data = model.compress(x, "n1", envelope=True)
    assert data != plain.compress(x, "n1", envelope=True)
    ours = model.decompress(data, postfilter=False)[0]
    torch.testing.assert_close(ours, swapped.decompress(swapped.compress(x, "n1", envelope=True), postfilter=False)[0])
    # the file's energies fit what its decoder hears: nearer the input's than steps measured elsewhere
    energies = plain.envelope.energies
    misfit = lambda y: (10 * torch.log10((energies(y) + 1e-9) / (energies(x) + 1e-9))).abs().mean()  # noqa: E731
    elsewhere = model.decompress(plain.compress(x, "n1", envelope=True), postfilter=False)[0]
    assert misfit(ours) < misfit(elsewhere)
    # three levels everywhere: the model decoder alone, as before
    assert model.compress(x, "n3", envelope=True) == plain.compress(x, "n3", envelope=True)
    # with model_energies_share, a tile whose positions are (nearly) all shallow is measured
    # against the model decoder: the file is the plain model's, heard through the shallow decoder
    nearly = with_shallow(plain, ShallowDecoder(shallow.decoder, max_levels=1, smooth_frames=2, model_energies_share=0.9))
    nearly.shallow_decoder.loaded = True
    assert nearly.shallow_decoder.config()["model_energies_share"] == 0.9
    assert nearly.compress(x, "n1", envelope=True) == plain.compress(x, "n1", envelope=True)
    assert nearly.compress(x, "n3", envelope=True) == plain.compress(x, "n3", envelope=True)
    depth = torch.ones(1, 10, dtype=torch.long)
    assert nearly.shallow_decoder.energies_on_model(depth)
    depth[0, :2] = 3  # 80 % shallow: below the share, measured against the blend
    assert not nearly.shallow_decoder.energies_on_model(depth) and not shallow.energies_on_model(torch.ones(1, 10))


def test_a_variable_depth_blends_the_two_by_position():
    plain = tiny_audio_codec()
    shallow = other_decoder(plain)
    model = with_shallow(plain, shallow)
    n, hop = 40, model.encoder.stride
    codes = torch.randint(0, 16, (1, n, 3))
    codes[:, :20, 1:] = -1  # one level in the first half, three in the second (a variable depth's -1s)
    codes[:, 5, 0] = -1  # a position coding nothing is shallow too
    point = model.select_rate("n3")
    enc = EncodedCodes(codes=codes, point=point, shape=(1, 1, n * hop), padded=(n * hop,))
    ours = model.decode(enc, postfilter=False)[0, 0]
    z_q = model._quantized_latent(codes, (n,), point)
    low, main = shallow.decoder(z_q)[0, 0], model.decoder(z_q)[0, 0]
    # each sample's weight: the shallow share of 5 positions around it, interpolated between positions
    far = 2 + 1  # smooth_frames, and one position of interpolation
    torch.testing.assert_close(ours[: (20 - far) * hop], low[: (20 - far) * hop])
    torch.testing.assert_close(ours[(20 + far) * hop :], main[(20 + far) * hop :])
    middle = slice((20 - 1) * hop, (20 + 1) * hop)
    assert (ours[middle] - low[middle]).abs().max() > 1e-5 and (ours[middle] - main[middle]).abs().max() > 1e-5
    w = shallow.weight(code_depth(codes, True), (n * hop,))[0, 0]
    torch.testing.assert_close(ours, torch.lerp(main, low, w))


def test_a_codec_saves_and_loads_it_and_refuses_a_folder_without_its_file(tmp_path):
    plain = tiny_audio_codec()
    model = with_shallow(plain, other_decoder(plain))
    x = speech_like()
    data = model.compress(x, "n1", envelope=False)
    model.save(tmp_path / "m", name="audio-shallow")
    assert (tmp_path / "m" / SHALLOW_DECODER_FILE).is_file()
    assert json.loads((tmp_path / "m" / "config.json").read_text())["shallow_decoder"] == {"max_levels": 1, "smooth_frames": 2}
    loaded = Codec.load(tmp_path / "m")
    assert loaded.weights_sha256() == plain.weights_sha256()
    torch.testing.assert_close(loaded.decompress(data)[0], model.decompress(data)[0])
    (tmp_path / "m" / SHALLOW_DECODER_FILE).unlink()
    with pytest.raises(ValueError, match=SHALLOW_DECODER_FILE):
        Codec.load(tmp_path / "m")


def test_publish_shallow_decoder_makes_a_new_model_that_shares_the_source_files(tmp_path):
    from codec.hub import file_sha256
    from scripts.publish_shallow_decoder import main

    model, weights, entry = tiny_published_model(tmp_path, "audio-t1", CARD)
    tuned = copy.deepcopy(model)
    tuned.decoder.load_state_dict(other_decoder(model).decoder.state_dict())
    tuned.config["name"] = "tuned"
    tuned.save(tmp_path / "tuned")
    args = ["audio-t1", "--publish-as", "audio-t2", "--decoder", str(tmp_path / "tuned"), "--weights-dir", str(weights),
            "--smooth-frames", "3", "--model-energies-share", "0.9"]
    summary = main([*args, "--description", "with a shallow decoder"])
    new = Codec.load(weights / "audio-t2")
    index = json.loads((weights / "index.json").read_text())
    assert index["models"]["audio-t2"]["shallow_decoder_sha256"] == file_sha256(weights / "audio-t2" / SHALLOW_DECODER_FILE)
    assert new.weights_sha256() == model.weights_sha256() and new.name == "audio-t2"
    assert new.shallow_decoder.config() == {"max_levels": 1, "smooth_frames": 3, "model_energies_share": 0.9} \
        == summary["shallow_decoder"]
    # stored in 16 bits, the decoder is the tuned one rounded
    for k, v in new.shallow_decoder.decoder.state_dict().items():
        torch.testing.assert_close(v, tuned.decoder.state_dict()[k].half().float())
    card = (weights / "audio-t2" / "MODEL_CARD.md").read_text()
    assert card.startswith("# audio-t2\n") and card.index("## Shallow decoder") < card.index("## Rate points")
    assert "at least 90% of the positions are shallow" in card
    with pytest.raises(SystemExit, match="already published"):
        main(args)
    with pytest.raises(SystemExit, match="already has a shallow decoder"):
        main(["audio-t2", "--publish-as", "audio-t3", "--decoder", str(tmp_path / "tuned"), "--weights-dir", str(weights)])
    other = Codec.build("audio-seanet", "rvq", network_kwargs=dict(channels=2, strides=[2, 4, 5, 8], latent_dim=8),
                        quantizer_kwargs=dict(codebook_size=16, num_levels=3))
    other.save(tmp_path / "other", name="other")
    with pytest.raises(SystemExit, match="network"):
        main(["audio-t1", "--publish-as", "audio-t4", "--decoder", str(tmp_path / "other"), "--weights-dir", str(weights)])
    assert not any(p.name.startswith(".") for p in weights.iterdir())


def test_the_bundled_audio_v13_is_audio_v12_with_a_shallow_decoder_for_its_lowest_rates():
    from codec.hub import load_model

    v12, v13 = load_model("audio-v12"), load_model("audio-v13")
    assert v13.weights_sha256() == v12.weights_sha256() and v13.shallow_decoder.config() == {
        "max_levels": 1, "smooth_frames": 32, "model_energies_share": 0.9}
    t = torch.arange(24000 * 2) / 24000
    x = (0.3 * torch.sin(2 * torch.pi * 180 * t) * (1 + torch.sin(2 * torch.pi * 2 * t)))[None, None]
    low, high = v13.compress(x, "0.8kbps"), v13.compress(x, "6kbps")
    for data, shallow in ((low, True), (high, False)):
        ours, theirs = v13.decompress(data)[0], v12.decompress(data)[0]  # the same codes (one name byte apart)
        assert torch.allclose(ours, theirs) != shallow
