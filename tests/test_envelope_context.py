"""Band energies coded under context tables, and the encoder's rate-distortion choice of the steps."""

import itertools
import math

import numpy as np
import pytest
import torch

from codec.bitstream import BitstreamError, read_container
from codec.envelope import BandEnergy, ContextBandEnergy, build_envelope
from tests.test_envelope import codec_with_envelope, speechlike


def smooth_steps(batch=2, bands=12, blocks=30, seed=0, max_steps=8):
    """Steps that move together across bands (an onset moves them all) and rarely jump."""
    g = torch.Generator().manual_seed(seed)
    common = torch.randint(-1, 2, (batch, 1, blocks), generator=g) * (torch.rand(batch, 1, blocks, generator=g) < 0.3)
    own = torch.randint(-1, 2, (batch, bands, blocks), generator=g) * (torch.rand(batch, bands, blocks, generator=g) < 0.15)
    return (common + own).cumsum(-1).clamp(-max_steps, max_steps)


def fitted(**kwargs):
    env = ContextBandEnergy(24000, **kwargs)
    steps = [smooth_steps(seed=s, max_steps=env.max_steps) for s in range(8)]
    plain = BandEnergy(24000)
    from codec.entropy import FrequencyTable

    table = FrequencyTable.from_codes(torch.cat([plain.symbols(s).flatten() for s in steps]), plain.num_symbols)
    return ContextBandEnergy(24000, table=table.counts.tolist(), context_table=env.fit_context_table(steps), **kwargs), table


def length_of(env, blocks):
    """A signal length (samples) with exactly ``blocks`` gain blocks."""
    return next(n for n in range(0, (blocks + 1) * env.block * env.hop) if env.blocks(n) == blocks)


@pytest.mark.parametrize("shape", [(1, 12, 1), (2, 12, 17), (1, 12, 60), (3, 12, 5)])
def test_context_coded_steps_round_trip(shape):
    env, _ = fitted()
    g = torch.Generator().manual_seed(shape[-1])
    for steps in (smooth_steps(shape[0], shape[1], shape[2], seed=3),
                  torch.randint(-env.max_steps, env.max_steps + 1, shape, generator=g)):
        length = length_of(env, shape[-1])
        assert torch.equal(env.decode(env.encode(steps), shape[0], length), steps)


def test_contexts_code_correlated_steps_in_fewer_bytes_than_one_table():
    env, table = fitted()
    one_table = BandEnergy(24000, table=table.counts.tolist())
    held_out = [smooth_steps(seed=100 + s) for s in range(6)]
    with_contexts = sum(len(env.encode(s)) for s in held_out)
    without = sum(len(one_table.encode(s)) for s in held_out)
    assert with_contexts < 0.9 * without


def test_without_a_context_table_it_codes_as_the_plain_envelope():
    _, table = fitted()
    env = ContextBandEnergy(24000, table=table.counts.tolist())
    plain = BandEnergy(24000, table=table.counts.tolist())
    steps = smooth_steps()
    assert env.encode(steps) == plain.encode(steps)


def test_a_corrupt_context_payload_fails_cleanly():
    env, _ = fitted()
    steps = smooth_steps(1, 12, 20)
    length = length_of(env, 20)
    data = env.encode(steps)
    for bad in (b"", data[:-4], data[:3], b"\xff" * 64, bytes(len(data))):
        try:
            out = env.decode(bad, 1, length)
        except ValueError:
            continue
        assert out.shape == steps.shape and out.abs().max() <= env.max_steps  # garbage that decodes stays in range


def test_invalid_context_settings_are_refused():
    with pytest.raises(ValueError, match="context table"):
        ContextBandEnergy(24000, context_table=[1] * 10)
    with pytest.raises(ValueError, match="context table"):
        ContextBandEnergy(24000, context_table=[0] * ContextBandEnergy(24000).num_contexts * 33)
    with pytest.raises(ValueError, match="lower_clip"):
        ContextBandEnergy(24000, lower_clip=0)
    with pytest.raises(ValueError, match="rd_lambda"):
        BandEnergy(24000, rd_lambda=-1)


def test_the_config_rebuilds_the_same_envelope():
    env, _ = fitted(rd_lambda=0.25)
    built = build_envelope({"name": env.name, "kwargs": env.config()}, 24000)
    assert isinstance(built, ContextBandEnergy) and built.rd_lambda == 0.25
    assert np.array_equal(built.context_rows, env.context_rows)
    steps = smooth_steps()
    assert built.encode(steps) == env.encode(steps)


def test_without_a_trade_off_the_choice_is_rounding():
    env = BandEnergy(24000, table=[1 + (i == 16) * 40 for i in range(33)])
    ratio = torch.randn(2, 12, 25, generator=torch.Generator().manual_seed(0)) * 4
    weight = torch.ones_like(ratio)
    assert torch.equal(env.choose(ratio, weight), ratio.round().clamp(-8, 8).long())


def _objective(env, ratio, weight, steps, band_bits):
    return float((weight * (ratio - steps) ** 2).sum()) + env.rd_lambda * band_bits(steps)


def test_the_choice_is_the_cheapest_path_on_the_objective():
    """Brute force over every path of a small envelope (3 bands, 4 blocks, steps in [-2, 2])."""
    counts = [1, 2, 6, 40, 90, 40, 6, 2, 1]
    plain = BandEnergy(24000, edges_hz=[0, 1000, 3000, 12000], max_steps=2, table=counts, rd_lambda=0.7)
    g = torch.Generator().manual_seed(2)
    ratio = torch.randn(1, 3, 4, generator=g) * 1.5
    weight = torch.rand(1, 3, 4, generator=g) + 0.2
    context_env = ContextBandEnergy(24000, edges_hz=[0, 1000, 3000, 12000], max_steps=2, table=counts, rd_lambda=0.7,
                                    lower_clip=1)
    rows = torch.randint(1, 200, (context_env.num_contexts * context_env.num_symbols,), generator=g).tolist()
    context_env = ContextBandEnergy(24000, edges_hz=[0, 1000, 3000, 12000], max_steps=2, table=counts, rd_lambda=0.7,
                                    lower_clip=1, context_table=rows)

    def plain_bits(steps):
        p = plain.table.probabilities()
        return float(-np.log2(p[plain.symbols(steps).numpy()]).sum())

    def context_bits(steps):
        p = context_env.context_rows / context_env.context_rows.sum(1, keepdims=True)
        return float(-np.log2(p[context_env.contexts(steps).numpy(), context_env.symbols(steps).numpy()]).sum())

    for env, bits in ((plain, plain_bits), (context_env, context_bits)):
        chosen = env.choose(ratio, weight)
        best = math.inf
        if env is plain:  # bands are independent: brute force each band's 5^4 paths
            total = 0.0
            for band in range(3):
                total += min(_objective(env, ratio[:, band:band + 1], weight[:, band:band + 1],
                                        torch.tensor(path).view(1, 1, 4), bits)
                             for path in itertools.product(range(-2, 3), repeat=4))
            best = total
        else:  # band by band, each given the band below as chosen: the greedy-over-bands optimum
            for band in range(3):
                def cost(path, band=band):
                    s = chosen.clone()
                    s[0, band] = torch.tensor(path)
                    return _objective(env, ratio[:, : band + 1], weight[:, : band + 1], s[:, : band + 1], bits)
                assert cost(tuple(chosen[0, band].tolist())) <= min(
                    cost(p) for p in itertools.product(range(-2, 3), repeat=4)) + 1e-9
            best = _objective(env, ratio, weight, chosen, bits)
        assert _objective(env, ratio, weight, chosen, bits) <= best + 1e-9
        rounded = ratio.round().clamp(-2, 2).long()
        assert _objective(env, ratio, weight, chosen, bits) <= _objective(env, ratio, weight, rounded, bits) + 1e-9


def test_a_trade_off_writes_fewer_bits_for_a_little_more_error():
    env0, table = fitted()
    env1 = ContextBandEnergy(24000, table=table.counts.tolist(), context_table=env0.config()["context_table"], rd_lambda=1.0)
    x = speechlike(3.0)
    decoded = x * 0.5 + 0.01 * torch.sin(torch.arange(x.shape[-1]) * 0.3)  # 6 dB low, a tone added
    target = env0.energies(x)
    s0, s1 = env0.analyse(target, decoded), env1.analyse(target, decoded)
    assert len(env1.encode(s1)) <= len(env0.encode(s0))
    err = lambda s: float(env0._ratio_db(target, env0.energies(env0.apply(decoded, s))).abs().mean())  # noqa: E731
    assert err(s1) < err(s0) + env0.step_db  # never far from the plain choice


def test_the_trade_off_falls_with_the_rate_of_the_codes():
    env = BandEnergy(24000, table=[1 + (i == 16) * 40 for i in range(33)], rd_lambda=0.5, rd_reference_kbps=1.5)
    assert env.trade_off(None) == env.trade_off(1.0) == env.trade_off(1.5) == 0.5
    assert env.trade_off(6.0) == pytest.approx(0.125) and env.trade_off(12.0) == pytest.approx(0.0625)
    assert BandEnergy(24000, rd_lambda=0.5).trade_off(12.0) == 0.5  # without a reference: one trade-off
    x = speechlike(3.0)
    decoded = x * 0.5 + 0.01 * torch.sin(torch.arange(x.shape[-1]) * 0.3)
    target = env.energies(x)
    rounded = BandEnergy(24000, table=env.table.counts.tolist()).analyse(target, decoded)
    low, high = env.analyse(target, decoded, rate_kbps=1.0), env.analyse(target, decoded, rate_kbps=1e4)
    assert len(env.encode(low)) <= len(env.encode(high))
    assert (high - rounded).abs().sum() <= (low - rounded).abs().sum()  # nearly rounding at a high rate
    with pytest.raises(ValueError, match="rd_reference_kbps"):
        BandEnergy(24000, rd_reference_kbps=0)


def test_files_with_context_coded_energies_are_refused_by_a_model_with_the_plain_envelope():
    codec = codec_with_envelope()
    x = speechlike(2.0)
    plain_file = codec.compress_detailed(x, "n3").data
    env, table = fitted(rd_lambda=0.25)
    context_codec = codec_with_envelope()
    context_codec.envelope = env
    data = context_codec.compress_detailed(x, "n3").data
    header, chunks = read_container(data)
    assert header["envelope"] == "band-energy-context"
    y, _ = context_codec.decompress(data)
    assert y.shape == x.shape
    with pytest.raises(BitstreamError, match="side information"):
        codec.decompress(data)
    with pytest.raises(BitstreamError, match="side information"):
        context_codec.decompress(plain_file)
    # the codes are the same either way: only the energies' chunk differs
    assert chunks[::2] == read_container(plain_file)[1][::2]


def test_the_bundled_audio_v7_is_audio_v5_with_context_coded_energies():
    from codec.hub import load_model

    v5, v7 = load_model("audio-v5"), load_model("audio-v7")
    assert v7.weights_sha256() == v5.weights_sha256()
    env = v7.envelope
    assert isinstance(env, ContextBandEnergy) and env.context_rows is not None and env.rd_lambda > 0
    assert env.trade_off(12.0) < env.trade_off(1.2) == env.rd_lambda
    assert 0.1 < v7.envelope_kbps < v5.envelope_kbps
    x = speechlike(2.0)
    a, b = v7.compress_detailed(x, "k256-n2"), v5.compress_detailed(x, "k256-n2")
    (ha, ca), (hb, cb) = read_container(a.data), read_container(b.data)
    assert ha["envelope"] == "band-energy-context" and ha["model"]["name"] == "audio-v7"
    assert ca[::2] == cb[::2]  # the same codes; only the energies are coded otherwise
    y, _ = v7.decompress(a.data)
    assert y.shape == x.shape
    with pytest.raises(BitstreamError, match="side information"):
        v5.decompress(a.data)
