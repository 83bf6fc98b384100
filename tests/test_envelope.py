"""Band-energy side information (codec.envelope): coding, correction, file format, rate targets."""

import math

import pytest
import torch

from codec.bitstream import BitstreamError, read_container, write_container
from codec.envelope import BandEnergy, build_envelope
from codec.model import Codec

AUDIO_NET = dict(channels=4, strides=[2, 4, 5, 8], latent_dim=8)


def speechlike(seconds=2.0, sr=24000, seed=0):
    """Harmonics under a syllable-rate envelope, plus a little noise."""
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(int(seconds * sr)) / sr
    f0 = 140 + 30 * torch.sin(2 * math.pi * 0.7 * t)
    phase = 2 * math.pi * torch.cumsum(f0, 0) / sr
    x = sum(torch.sin(k * phase) / k for k in range(1, 20))
    x = x * (0.5 + 0.5 * torch.sin(2 * math.pi * 4 * t)).clamp_min(0)
    return (0.2 * x + 0.01 * torch.randn(len(t), generator=g))[None, None]


def codec_with_envelope(**kwargs):
    torch.manual_seed(0)
    codec = Codec.build("audio-seanet", "rvq", network_kwargs=AUDIO_NET, quantizer_kwargs=dict(
        codebook_size=16, num_levels=4, init="kmeans", quantizer_dropout=0.0))
    codec.train()(torch.rand(2, 1, 6000) * 2 - 1)
    codec.fit_entropy_tables([speechlike(0.5)])
    codec = codec.eval()
    codec.envelope = BandEnergy(24000, **kwargs)
    codec.envelope_default = True
    return codec


def test_steps_round_trip_through_their_coding_with_and_without_a_table():
    env = BandEnergy(24000)
    g = torch.Generator().manual_seed(1)
    steps = torch.randint(-env.max_steps, env.max_steps + 1, (2, env.num_bands, env.blocks(48000)), generator=g)
    assert torch.equal(env.decode(env.encode(steps), 2, 48000), steps)
    counts = [1] * env.num_symbols
    counts[2 * env.max_steps] = 50  # a zero delta is likely
    tabled = BandEnergy(24000, table=counts)
    smooth = torch.zeros_like(steps)
    assert torch.equal(tabled.decode(tabled.encode(smooth), 2, 48000), smooth)
    assert len(tabled.encode(smooth)) < len(env.encode(smooth))
    with pytest.raises(ValueError):
        env.encode(steps + 100)


def test_a_corrupt_or_short_payload_fails_cleanly():
    env = BandEnergy(24000, table=[1] * 33)
    steps = torch.zeros(1, env.num_bands, env.blocks(24000), dtype=torch.long)
    data = env.encode(steps)
    for bad in (b"", data[:-1], b"\xff" * 3):
        with pytest.raises(ValueError):
            env.decode(bad, 1, 24000)
    packed = BandEnergy(24000)
    with pytest.raises(ValueError):
        packed.decode(packed.encode(steps)[:-1], 1, 24000)
    # deltas that walk outside the clamp range are refused, not applied
    walk = torch.full((1, env.num_bands, env.blocks(24000)), 2 * env.max_steps) + 2 * env.max_steps
    from codec.entropy import encode_symbols
    with pytest.raises(ValueError, match="out of range"):
        packed.decode(encode_symbols(walk.numpy(), packed.num_symbols), 1, 24000)


@pytest.mark.parametrize("bad", [dict(edges_hz=[100, 200]), dict(edges_hz=[0, 500, 400]), dict(n_fft=500),
                                 dict(step_db=0), dict(max_steps=0), dict(table=[1, 2, 3]), dict(passes=0)])
def test_invalid_settings_are_refused(bad):
    with pytest.raises(ValueError):
        BandEnergy(24000, **bad)


def test_zero_steps_leave_the_signal_unchanged():
    env = BandEnergy(24000)
    x = speechlike(1.0)
    steps = torch.zeros(1, env.num_bands, env.blocks(x.shape[-1]), dtype=torch.long)
    assert torch.allclose(env.apply(x, steps), x, atol=1e-5)
    with pytest.raises(ValueError):
        env.apply(x, steps[..., :-1])


def test_the_correction_brings_band_energies_to_the_targets():
    env = BandEnergy(24000)
    x = speechlike(2.0)
    # a "decoder" that loses the upper bands and a fixed 6 dB overall
    spec = torch.fft.rfft(x)
    spec[..., spec.shape[-1] // 6:] *= 0.1
    decoded = torch.fft.irfft(spec, x.shape[-1]) * 0.5
    target = env.energies(x)
    steps = env.analyse(target, decoded)
    corrected = env.apply(decoded, steps)

    def error_db(y):
        e = env.energies(y)
        live = target > 1e-3 * target.max()
        return (10 * torch.log10(e[live] / target[live])).abs().mean()

    assert error_db(decoded) > 8
    assert error_db(corrected) < 1.5  # within about half a 3 dB step
    # the analysis-by-synthesis pass is never worse than the plain ratio
    one_pass = env.apply(decoded, BandEnergy(24000, passes=1).analyse(target, decoded))
    assert error_db(corrected) <= error_db(one_pass) + 1e-6


def test_files_carry_one_energy_chunk_per_tile_and_decode_through_it():
    codec = codec_with_envelope()
    x = speechlike(3.0)
    plain = codec.compress_detailed(x, "n3", envelope=False, tile=24000, overlap=2400)
    side = codec.compress_detailed(x, "n3", tile=24000, overlap=2400)  # the model's default: on
    h0, c0 = read_container(plain.data)
    h1, c1 = read_container(side.data)
    assert "envelope" not in h0 and h1["envelope"] == "band-energy"
    assert len(c1) == 2 * len(c0) and c1[::2] == c0  # the codes are the same, energies follow each tile
    y0, _ = codec.decompress(plain.data)
    y1, _ = codec.decompress(side.data)
    assert y0.shape == y1.shape == x.shape
    env = codec.envelope

    def err(y):  # band energy error against the input, dB
        e, t = env.energies(y[0, :1, None][0][None]), env.energies(x[0][None])
        live = t > 1e-3 * t.max()
        return (10 * torch.log10(e[live] / t[live])).abs().mean()

    assert err(y1) < err(y0)
    # streaming decode agrees with whole-file decode
    header, blocks = codec.decompress_stream(side.data)
    assert torch.allclose(torch.cat(list(blocks), -1), y1, atol=1e-5)


def test_a_file_without_energies_is_what_a_model_without_an_envelope_writes():
    codec = codec_with_envelope()
    x = speechlike(1.0)
    with_model = codec.compress_detailed(x, "n2", envelope=False).data
    codec.envelope, codec.envelope_default = None, False
    assert codec.compress_detailed(x, "n2").data == with_model
    with pytest.raises(ValueError, match="no band-energy envelope"):
        codec.compress_detailed(x, "n2", envelope=True)


def test_a_reader_refuses_energies_it_does_not_know_or_that_are_corrupt():
    codec = codec_with_envelope()
    data = codec.compress_detailed(speechlike(1.0), "n3").data
    header, chunks = read_container(data)
    other = codec_with_envelope()
    other.envelope = None
    with pytest.raises(BitstreamError, match="side information"):
        other.decompress(data)
    with pytest.raises(BitstreamError, match="payload chunks"):
        codec.decompress(write_container(header, chunks[:1]))
    with pytest.raises(BitstreamError, match="band energies of tile 0"):
        codec.decompress(write_container(header, [chunks[0], chunks[1][:-1]]))


def test_a_rate_target_counts_the_energies():
    codec = codec_with_envelope()
    x = speechlike(4.0)
    sizes = {p.name: codec.compress_detailed(x, p.name, envelope=False).real_rate for p in codec.rate_points()}
    codec.measured_rates = sizes
    extra = codec.compress_detailed(x, "n4").real_rate - sizes["n4"]
    assert extra > 0
    codec.envelope_kbps = extra
    target = (sizes["n3"] + extra) * 1.02
    out = codec.compress_detailed(x, f"{target:.4f}kbps")
    assert out.real_rate <= target and read_container(out.data)[0]["envelope"] == "band-energy"
    assert out.point.name == "n3"
    # without the envelope the same target affords the next point's codes
    assert codec.compress_detailed(x, f"{target:.4f}kbps", envelope=False).point.name == "n4"


def test_the_config_entry_builds_and_validates():
    codec = codec_with_envelope()
    config = {**codec.export_config(), "envelope": {"name": "band-energy", "kwargs": BandEnergy(24000).config(),
                                                   "measured_kbps": 0.4, "default": False}}
    built = Codec.from_config(config)
    assert built.envelope is not None and built.envelope.num_bands == 12
    assert built.envelope_kbps == 0.4 and built.envelope_default is False
    for bad in ({"name": "nope", "kwargs": {}}, {"name": "band-energy", "kwargs": {"step_db": -1}},
                {"name": "band-energy", "default": "yes"}, {"name": "band-energy", "measured_kbps": -1}):
        with pytest.raises((ValueError, KeyError)):
            Codec.from_config({**config, "envelope": bad})
    with pytest.raises(ValueError, match="audio"):
        build_envelope({"name": "band-energy"}, None)


def test_the_bundled_audio_model_writes_energies_by_default():
    from codec.hub import load_model

    model = load_model("audio-v3")
    assert model.envelope is not None and model.envelope_default and 0.2 < model.envelope_kbps < 1.0
    assert model.envelope.table is not None


def test_a_target_too_low_for_the_energies_falls_back_to_the_codes_alone():
    codec = codec_with_envelope()
    x = speechlike(2.0)
    sizes = {p.name: codec.compress_detailed(x, p.name, envelope=False).real_rate for p in codec.rate_points()}
    codec.measured_rates = sizes
    codec.envelope_kbps = 5.0  # more than any target below leaves beside the lowest point
    request = f"{sizes['n1'] * 1.05:.4f}kbps"
    out = codec.compress_detailed(x, request)
    assert "envelope" not in read_container(out.data)[0] and any("band energies" in n for n in out.notes)
    from codec.model import RateError

    with pytest.raises(RateError, match="no room for band energies"):  # asked for explicitly: refused
        codec.compress_detailed(x, request, envelope=True)
    with pytest.raises(RateError, match="below the lowest rate"):  # below every point, with or without
        codec.compress_detailed(x, f"{sizes['n1'] * 0.5:.4f}kbps")


def test_energies_the_measured_rate_leaves_no_room_for_are_still_tried_with_real_files():
    codec = codec_with_envelope()
    x = speechlike(2.0)
    plain = codec.compress_detailed(x, "n1", envelope=False).real_rate
    real_side = codec.compress_detailed(x, "n1", envelope=True).real_rate - plain
    request = plain + 1.5 * real_side
    codec.envelope_kbps = request  # the mean rate says: no room beside any point
    for envelope in (None, True):  # the model's default, and asked for explicitly
        out = codec.compress_detailed(x, f"{request:.4f}kbps", envelope=envelope)
        assert "envelope" in read_container(out.data)[0] and out.real_rate <= request * (1 + 1e-6)


def test_refinement_optimises_through_the_energy_correction():
    codec = codec_with_envelope()
    x = speechlike(1.5)
    tiles = codec._tile_tokens(codec._grid_pieces(x, codec.tile_grid(tuple(x.shape))), keep_targets=True, keep_energy=True)
    point = codec.select_rate("n3")
    plain = codec._refine_candidates(tiles[0], point, None, 4)
    heard = codec._refine_candidates(tiles[0], point, None, 4, envelope=True)
    assert torch.equal(plain[0].codes, heard[0].codes)  # the same unrefined start
    # the first candidate's objective is measured after the correction, which brings it closer
    assert heard[0].objective < plain[0].objective
    out = codec.compress_detailed(x, "n3", refine_steps=4)
    y, header = codec.decompress(out.data)
    assert header["envelope"] == "band-energy" and y.shape == x.shape


def test_a_short_input_that_cannot_hold_the_energies_at_its_target_gets_the_codes_alone():
    codec = codec_with_envelope()
    x = speechlike(0.4)
    sizes = {p.name: codec.compress_detailed(x, p.name, envelope=False).real_rate for p in codec.rate_points()}
    codec.measured_rates = {k: v * 0.5 for k, v in sizes.items()}  # optimistic: selection thinks all fits
    codec.envelope_kbps = 0.01
    request = f"{sizes['n1'] * 1.001:.4f}kbps"
    assert codec.compress_detailed(x, "n1").real_rate > sizes["n1"] * 1.001  # with energies it cannot fit
    out = codec.compress_detailed(x, request)
    assert out.real_rate <= sizes["n1"] * 1.001 and "envelope" not in read_container(out.data)[0]
    assert any("codes alone" in n for n in out.notes)


def test_decoder_fine_tuning_through_the_energy_correction():
    codec = codec_with_envelope()
    x = speechlike(0.6)
    out = codec.frozen_codes_forward(x, "n2", through_envelope=True)
    corrected = out.extra_recons["@env"]
    assert corrected.shape == out.recon.shape
    # the correction brings the decoded band energies to the input's (within its +-24 dB)
    env, target = codec.envelope, out.recon_target
    err_raw = (env._ratio_db(env.energies(target), env.energies(out.recon.detach()))).abs().mean()
    err_env = (env._ratio_db(env.energies(target), env.energies(corrected.detach()))).abs().mean()
    assert err_env < 0.5 * err_raw
    # the decoder alone gets gradient through it
    codec.zero_grad(set_to_none=True)
    corrected.abs().mean().backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in codec.decoder.parameters())
    assert all(p.grad is None for n, p in codec.named_parameters() if not n.startswith("decoder."))
    assert "@env" not in codec.frozen_codes_forward(x, "n2").extra_recons
    codec.envelope = None
    with pytest.raises(ValueError, match="through_envelope needs"):
        codec.frozen_codes_forward(x, "n2", through_envelope=True)
