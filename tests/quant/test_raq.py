"""RAQ: generator shapes, the cross-forcing schedule, DKM / inverse DKM, publishing, a debug codec."""

import math

import pytest
import torch

from codec.model import Codec
from codec.quant import get_quantizer
from codec.quant.raq import Seq2SeqCodebookGenerator, cross_forcing_sources, dkm, ikm, mmd


@pytest.mark.parametrize("forcing", ["paper", "official"])
@pytest.mark.parametrize("size", [3, 16, 40, 100])
def test_generator_output_shapes(forcing, size):
    gen = Seq2SeqCodebookGenerator(dim=12, max_codebook_size=128, forcing=forcing)
    base = torch.randn(16, 12)
    out = gen(base, size)
    assert out.shape == (size, 12) and torch.isfinite(out).all()
    with pytest.raises(ValueError):
        gen(base, 129)


def test_cross_forcing_sequences():
    assert cross_forcing_sources(2, 6, "paper") == [
        ("start", 0), ("base", 0), ("output", 1), ("base", 1), ("output", 3), ("output", 4)]
    assert cross_forcing_sources(2, 6, "official") == [
        ("start", 0), ("base", 0), ("position", 2), ("base", 1), ("position", 4), ("position", 5)]
    # teacher inputs stop after 2K steps and cover every base codeword once
    src = cross_forcing_sources(3, 12, "paper")
    assert [i for s, i in src if s == "base"] == [0, 1, 2]
    assert all(s == "output" for s, _ in src[7:])
    assert cross_forcing_sources(5, 1) == [("start", 0)]


@pytest.mark.parametrize("forcing", ["paper", "official"])
def test_generator_feeds_exactly_the_scheduled_inputs(forcing, monkeypatch):
    gen = Seq2SeqCodebookGenerator(dim=6, max_codebook_size=32, forcing=forcing).eval()
    base = torch.randn(3, 6)
    seen = []
    original = gen._input

    def record(source, index, base_, outputs):
        x = original(source, index, base_, outputs)
        seen.append((source, index, x.detach().clone()))
        return x

    monkeypatch.setattr(gen, "_input", record)
    out = gen(base, 9)
    assert [(s, i) for s, i, _ in seen] == cross_forcing_sources(3, 9, forcing)
    for s, i, x in seen:
        if s == "base":
            assert torch.equal(x, base[i])
        if s == "output":  # free-running: the decoder's own output of step i
            torch.testing.assert_close(x, out[i])
        if s == "position":
            assert torch.equal(x, gen.position.weight[i].detach())


def test_dkm_with_small_tau_equals_hard_kmeans():
    torch.manual_seed(1)
    centres = torch.tensor([[0.0, 0.0], [3.0, 0.0], [0.0, 3.0]])
    pts = torch.cat([c + 0.3 * torch.randn(30, 2) for c in centres])
    init = pts[[0, 30, 60]] + 0.5
    soft, assign = dkm(pts, init, tau=1e-4, iters=100)
    hard = init.clone()
    for _ in range(100):  # Lloyd's algorithm from the same start
        idx = torch.cdist(pts, hard).argmin(1)
        hard = torch.stack([pts[idx == j].mean(0) for j in range(3)])
    torch.testing.assert_close(soft, hard, rtol=1e-4, atol=1e-4)
    assert torch.allclose(assign.sum(1), torch.ones(90))


def test_ikm_grows_a_codebook_whose_dkm_matches_the_base():
    torch.manual_seed(0)
    base = torch.randn(16, 4)
    grown = ikm(base, 40, steps=200)
    assert grown.shape == (40, 4)
    back, _ = dkm(grown, base, tau=0.01, iters=10, tol=0.0)
    assert float(mmd(back, base)) < 0.02
    assert float(mmd(back, base)) < float(mmd(torch.randn(16, 4), base))
    assert torch.unique(grown, dim=0).shape[0] == 40  # really new codewords, not copies


def test_dkm_adapter_shrinks_and_grows():
    q = get_quantizer("raq", dim=4, codebook_size=16, adapter="dkm", rate_points=[4, 16, 32]).eval()
    z = torch.randn(2, 30, 4)
    assert q.training_settings() == [{}]
    for k in (4, 32):
        codes = q.encode(z, codebook_size=k)
        assert codes.max() < k
        assert torch.equal(q.decode(codes, codebook_size=k), q(z, codebook_size=k).z_q)
        assert q.bits_per_token_at(codebook_size=k) == math.log2(k)


def test_adapted_pass_trains_the_generator_and_is_exact_in_eval():
    q = get_quantizer("raq", dim=8, codebook_size=16, min_codebook_size=4, max_codebook_size=64).train()
    z = torch.randn(2, 20, 8, requires_grad=True)
    out = q(z, codebook_size=37)
    assert out.codes.max() < 37 and float(out.metrics["codebook_size"]) == 37
    (out.z_q.sum() + out.total_loss).backward()
    assert z.grad.abs().sum() > 0
    assert q.generator.out.weight.grad.abs().sum() > 0  # the codebook loss reaches the generator
    settings = [q.training_settings() for _ in range(50)]
    assert all(s[0] == {} and 4 <= s[1]["codebook_size"] <= 64 for s in settings)
    q.eval()
    for k in (5, 16, 64):
        codes = q.encode(z.detach(), codebook_size=k)
        assert torch.equal(q.decode(codes, codebook_size=k), q(z.detach(), codebook_size=k).z_q)
    q.set_codebook_size(8)
    assert q.codebook_size == 8 and q.encode(z.detach()).max() < 8


def test_debug_raq_codec_trains_and_codes_at_several_sizes_from_published_codebooks(tmp_path, monkeypatch):
    from recipes import image_codec

    export = image_codec.main(["--config", "raq-debug", "--out", str(tmp_path / "run")])
    model = Codec.load(export)
    points = {p.name: p for p in model.rate_points()}
    assert {"k4", "k8", "k16", "k32", "k64"} <= set(points)
    assert bool(model.quantizer.published_valid)
    # decoding uses the stored codebooks: the generator is never called again
    monkeypatch.setattr(model.quantizer.generator, "forward", lambda *a, **k: pytest.fail("regenerated"))
    x = torch.rand(1, 3, 24, 20)
    for name in ("k4", "k16", "k64"):
        p = points[name]
        k = dict(p.setting)["codebook_size"]
        assert p.bits_per_token == math.log2(k)
        assert p.nominal == pytest.approx(math.log2(k) / 16)  # factor 4: one token per 16 pixels
        enc = model.encode(x, name)
        assert enc.codes.max() < k
        assert model.decode(enc).shape == x.shape


def test_log_uniform_sampling_of_training_sizes():
    q = get_quantizer("raq", dim=4, codebook_size=16, min_codebook_size=4, max_codebook_size=1024, sample="log")
    sizes = torch.tensor([q.training_settings()[1]["codebook_size"] for _ in range(400)]).float()
    assert sizes.min() >= 4 and sizes.max() <= 1024
    assert (sizes < 64).float().mean() > 0.35  # log-uniform: half the draws below sqrt(4 * 1024) = 64


def test_residual_levels_and_raq_compose_into_one_rate_ladder():
    q = get_quantizer("rvq", dim=8, codebook_size=16, num_levels=3, quantizer="raq", quantizer_dropout=1.0,
                      min_codebook_size=4, max_codebook_size=64, rate_points=[4, 16, 64], forcing="official")
    settings = q.rate_settings()
    assert len(settings) == 3 * 3 and {"num_levels": 2, "codebook_size": 64} in settings
    assert q.bits_per_token_at(num_levels=2, codebook_size=64) == 12.0
    assert q.bits_per_token_at(num_levels=3) == 12.0  # base K = 16 per level
    q.train()
    z = torch.randn(4, 10, 8)
    q(z)  # initialises every level's base codebook; dropout starts afterwards
    base, adapted = q.training_settings()
    assert base == {} and 4 <= adapted["codebook_size"] <= 64
    out = q(z, **adapted)
    assert out.codes.max() < adapted["codebook_size"]
    q.eval()
    codes = q.encode(z, num_levels=2, codebook_size=64)
    assert codes.shape == (4, 10, 2) and codes.max() < 64
    full = q.encode(z, codebook_size=64)
    assert torch.equal(q.decode(full, codebook_size=64), q(z, codebook_size=64).z_q)  # exact, like every variant
    assert torch.equal(full[..., :2], codes)  # depths are prefixes


def test_codec_rate_points_for_rvq_of_raq():
    codec = Codec.build(
        "audio-seanet", "rvq", network_kwargs=dict(channels=4, strides=[2, 4, 5, 8], latent_dim=8),
        quantizer_kwargs=dict(codebook_size=16, num_levels=2, quantizer="raq", min_codebook_size=4,
                              max_codebook_size=64, rate_points=[4, 64], forcing="official"),
    )
    names = [p.name for p in codec.rate_points()]
    assert names == ["k4-n1", "k4-n2", "k64-n1", "k64-n2"]  # 0.15, 0.3, 0.45, 0.9 kbps
    assert codec.select_rate("0.5kbps").name == "k64-n1"
    codec.train()(torch.rand(2, 1, 640) * 2 - 1)
    codec.eval()
    x = torch.rand(1, 1, 1000) * 2 - 1
    for name in names:
        assert codec.decode(codec.encode(x, name)).shape == x.shape
