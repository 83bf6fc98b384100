"""Numeric tests against the formulas of the papers (seed 001, rotation trick, SimVQ, FSQ)."""

import math

import pytest
import torch

from codec.quant import get_quantizer
from codec.quant.codebook import Codebook
from codec.quant.fsq import levels_for_codebook_size
from codec.quant.gumbel import GumbelQuantizer
from codec.quant.vq import rotation_trick, straight_through


def brute_nearest(x, e):
    return torch.cdist(x.double(), e.double()).argmin(1)


# -- EMA with Laplace smoothing (seed 001) -------------------------------------------------------
def test_one_ema_step_equals_the_seed_formula():
    gamma, eps, k, d = 0.9, 1e-3, 5, 3
    q = get_quantizer("vq", dim=d, codebook_size=k, update="ema", decay=gamma, epsilon=eps).train()
    e0 = torch.randn(k, d)
    q.codebook.weight.copy_(e0)
    q.codebook.embed_sum.copy_(e0 * 2.0)
    q.codebook.cluster_size.copy_(torch.tensor([2.0, 1.0, 0.5, 3.0, 0.0]))
    q.codebook.initialized.fill_(True)
    n_prev = q.codebook.cluster_size.clone()
    m_prev = q.codebook.embed_sum.clone()

    z = torch.randn(40, d)
    out = q(z.unsqueeze(0))
    idx = brute_nearest(z, e0)
    assert torch.equal(out.codes.squeeze(0), idx)

    n_batch = torch.stack([(idx == j).sum() for j in range(k)]).float()
    sums = torch.stack([z[idx == j].sum(0) for j in range(k)])
    n_new = gamma * n_prev + (1 - gamma) * n_batch
    m_new = gamma * m_prev + (1 - gamma) * sums
    total = n_new.sum()
    smoothed = (n_new + eps) / (total + k * eps) * total
    e_new = m_new / smoothed[:, None]
    torch.testing.assert_close(q.codebook.cluster_size, n_new)
    torch.testing.assert_close(q.codebook.embed_sum, m_new)
    torch.testing.assert_close(q.codebook.weight, e_new)
    # forward used the codebook *before* the update
    torch.testing.assert_close(out.z_q.squeeze(0), e0[idx])


def test_ema_mode_has_no_codebook_gradient_and_loss_mode_does():
    ema = get_quantizer("vq", dim=4, codebook_size=8, update="ema").train()
    assert not any(p.requires_grad for p in ema.codebook.parameters())
    loss_q = get_quantizer("vq", dim=4, codebook_size=8, update="loss").train()
    out = loss_q(torch.randn(1, 20, 4))
    out.loss["codebook"].backward()
    assert loss_q.codebook.weight.grad.abs().sum() > 0
    # commitment carries beta
    z = torch.randn(1, 20, 4)
    out = loss_q(z)
    ref = 0.25 * (z - out.z_q.detach()).pow(2).mean()
    torch.testing.assert_close(out.loss["commitment"], ref)


# -- gradient estimators ----------------------------------------------------------------------------
def test_straight_through_value_and_gradient():
    e = torch.randn(6, 5, requires_grad=True)
    q = torch.randn(6, 5)
    out = straight_through(e, q)
    assert torch.equal(out, q)
    g = torch.randn(6, 5)
    out.backward(g)
    assert torch.equal(e.grad, g)


def test_rotation_trick_forward_is_q_and_gradient_is_lambda_R_transpose_g():
    torch.manual_seed(3)
    e = torch.randn(7, 6, dtype=torch.float32, requires_grad=True)
    q = torch.randn(7, 6)
    out = rotation_trick(e, q)
    assert torch.equal(out, q)
    g = torch.randn(7, 6)
    out.backward(g)
    for i in range(7):
        ed, qd = e[i].detach().double(), q[i].double()
        e_hat, q_hat = ed / ed.norm(), qd / qd.norm()
        r = (e_hat + q_hat) / (e_hat + q_hat).norm()
        R = torch.eye(6, dtype=torch.float64) - 2 * torch.outer(r, r) + 2 * torch.outer(q_hat, e_hat)
        lam = qd.norm() / ed.norm()
        # R is the rotation taking e^ to q^, and it preserves norms
        torch.testing.assert_close(R @ e_hat, q_hat)
        torch.testing.assert_close(R.T @ R, torch.eye(6, dtype=torch.float64))
        # forward of the un-shortcut formula: lam R e = q
        torch.testing.assert_close(lam * R @ ed, qd)
        torch.testing.assert_close(e.grad[i].double(), lam * R.T @ g[i].double(), rtol=1e-5, atol=1e-6)


def test_vq_rotation_estimator_differs_from_ste():
    torch.manual_seed(0)
    # eval: no EMA step after forward, so the codewords used are still the ones decoded below
    q = get_quantizer("vq", dim=4, codebook_size=16, estimator="rotation").eval()
    z = torch.randn(1, 10, 4, requires_grad=True)
    g = torch.randn(1, 10, 4)
    q(z).z_q.backward(g)
    assert not torch.allclose(z.grad, g)
    norms_ratio = z.grad.norm(dim=-1) / g.norm(dim=-1)
    codes = q.encode(z.detach())
    lam = q.decode(codes).norm(dim=-1) / z.detach().norm(dim=-1)
    torch.testing.assert_close(norms_ratio, lam, rtol=1e-4, atol=1e-5)  # rotation keeps norms, lam scales


# -- Gumbel ---------------------------------------------------------------------------------------
def test_kl_to_uniform_matches_formula():
    q = GumbelQuantizer(dim=4, codebook_size=10, kl_weight=1.0)
    logits = torch.randn(32, 10)
    p = logits.softmax(-1)
    ref = (p * torch.log(p * 10)).sum(-1).mean()
    torch.testing.assert_close(q.kl_to_uniform(logits), ref)
    assert abs(float(q.kl_to_uniform(torch.zeros(5, 10)))) < 1e-6
    # the loss term in forward is kl_weight * KL of the projection logits
    q2 = GumbelQuantizer(dim=4, codebook_size=10, kl_weight=0.5).train()
    z = torch.randn(3, 4)
    out = q2(z)
    torch.testing.assert_close(out.loss["kl"], 0.5 * q2.kl_to_uniform(q2.proj(z)))


def test_gumbel_temperature_schedule():
    q = GumbelQuantizer(dim=4, codebook_size=8, temperature=1.0, min_temperature=0.1, anneal_rate=1e-3)
    assert q.temperature_at(0) == 1.0
    assert math.isclose(q.temperature_at(1000), math.exp(-1.0))
    assert q.temperature_at(10**6) == 0.1
    q.set_step(1000)
    assert math.isclose(float(q.temperature), math.exp(-1.0), rel_tol=1e-6)


def test_gumbel_hard_training_output_is_a_codeword():
    q = GumbelQuantizer(dim=4, codebook_size=8).train()
    out = q(torch.randn(20, 4))
    torch.testing.assert_close(out.z_q, q.embed.weight[out.codes].detach())


# -- SimVQ --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("linear", ["full", "diagonal"])
def test_simvq_decode_applies_W(linear):
    q = get_quantizer("simvq", dim=6, codebook_size=32, linear=linear).eval()
    with torch.no_grad():
        if linear == "full":
            q.W.weight.copy_(torch.randn(6, 6))
            expected_map = q.W.weight.T
        else:
            q.w.copy_(torch.randn(6))
            expected_map = torch.diag(q.w)
    codes = torch.randint(0, 32, (4, 5))
    decoded = q.decode(codes)
    torch.testing.assert_close(decoded, q.codes[codes] @ expected_map)
    assert not torch.allclose(decoded, q.codes[codes])
    # and the lookup searches that same effective codebook
    z = decoded + 1e-4 * torch.randn_like(decoded)
    assert torch.equal(q.encode(z), codes)


def test_simvq_trains_W_not_C():
    q = get_quantizer("simvq", dim=6, codebook_size=32).train()
    out = q(torch.randn(2, 10, 6))
    out.total_loss.backward()
    assert q.W.weight.grad.abs().sum() > 0
    assert not q.codes.requires_grad
    assert "codes" in dict(q.named_buffers())


# -- residual VQ --------------------------------------------------------------------------------------
def test_quantizer_dropout_uses_fewer_levels():
    # update="loss": codewords do not move until an optimiser steps, so z_q can be re-decoded below
    q = get_quantizer("rvq", dim=8, codebook_size=16, num_levels=6, quantizer_dropout=1.0, update="loss").train()
    q(torch.randn(8, 4, 8))  # first batch initialises, no dropout
    out = q(torch.randn(64, 4, 8))
    assert float(out.metrics["levels_used"]) < 6
    used = (out.codes >= 0).sum(-1)  # (B, N): levels per token
    assert (used < 6).any() and (used >= 1).all()
    assert (used == used[:, :1]).all()  # the same depth for every token of a sample
    # a sample's codes are a prefix: no level after a dropped one
    valid = out.codes >= 0
    assert (valid[..., 1:] <= valid[..., :-1]).all()
    # z_q of a sample equals decoding its prefix
    torch.testing.assert_close(out.z_q.detach(), q.decode(out.codes))
    q.eval()
    assert float(q(torch.randn(4, 4, 8)).metrics["levels_used"]) == 6


def test_rvq_error_decreases_with_levels_and_bits_add_up():
    torch.manual_seed(0)
    q = get_quantizer("rvq", dim=8, codebook_size=32, num_levels=4, init="kmeans", quantizer_dropout=0.0)
    q.train()
    data = torch.randn(16, 64, 8)
    for _ in range(20):
        q(data)
    q.eval()
    errors = [float((q.decode(q.encode(data, num_levels=n)) - data).pow(2).mean()) for n in range(1, 5)]
    assert all(a > b for a, b in zip(errors, errors[1:])), errors
    assert q.encode(data, num_levels=2).shape == (16, 64, 2)
    assert q.bits_at(2) == 10.0 and q.bits_per_token == 20.0


def _trained_rvq(levels=3, k=4, dim=4, **kw):
    torch.manual_seed(0)
    q = get_quantizer("rvq", dim=dim, codebook_size=k, num_levels=levels, init="kmeans", quantizer_dropout=0.0, **kw)
    q.train()
    for _ in range(5):
        q(torch.randn(8, 32, dim))
    return q.eval()


def _errors(q, z, codes):
    return (q.decode(codes) - z).square().sum(-1)


def test_rvq_beam_search_is_exact_when_it_keeps_every_prefix_and_never_worse_than_greedy():
    import itertools

    q = _trained_rvq(levels=3, k=4)
    z = torch.randn(2, 50, 4) * 1.5
    greedy = q.encode(z)
    assert torch.equal(q.encode(z, beam_size=1), greedy)
    # a beam of K^(L-1) keeps every prefix before the last level: the search is exhaustive
    exact = q.encode(z, beam_size=16)
    every = torch.tensor(list(itertools.product(range(4), repeat=3)))  # (64, 3)
    brute = _errors(q, z.unsqueeze(-2), every.expand(2, 50, -1, -1)).amin(-1)
    torch.testing.assert_close(_errors(q, z, exact), brute, rtol=1e-5, atol=1e-5)
    e_greedy = _errors(q, z, greedy)
    assert (brute < e_greedy - 1e-6).any(), "the data should have tokens where greedy is suboptimal"
    for beam in (2, 3, 8):
        e = _errors(q, z, q.encode(z, beam_size=beam))
        assert (e <= e_greedy + 1e-5).all()  # per token, never worse than greedy
        assert (e >= brute - 1e-5).all()
    # fewer levels: the beam searches that prefix depth only
    two = q.encode(z, num_levels=2, beam_size=4)
    assert two.shape == (2, 50, 2)
    brute2 = _errors(q, z.unsqueeze(-2), torch.tensor(list(itertools.product(range(4), repeat=2))).expand(2, 50, -1, -1)).amin(-1)
    torch.testing.assert_close(_errors(q, z, two), brute2, rtol=1e-5, atol=1e-5)


def test_rvq_beam_search_in_slices_matches_one_pass(monkeypatch):
    import codec.quant.rvq as rvq

    q = _trained_rvq(levels=4, k=8, dim=6)
    z = torch.randn(3, 41, 6)
    whole = q.encode(z, beam_size=5)
    monkeypatch.setattr(rvq, "_BEAM_TILE_BYTES", 4 * 8 * 5 * 7)  # 7 tokens per slice
    assert torch.equal(q.encode(z, beam_size=5), whole)
    assert q.encode(torch.randn(0, 6), beam_size=3).shape == (0, 4)


def test_rvq_beam_search_with_rate_adaptive_levels():
    q = get_quantizer("rvq", dim=6, codebook_size=32, num_levels=3, quantizer="raq", min_codebook_size=4,
                      max_codebook_size=32, rate_points=[4, 8, 32], forcing="official", quantizer_dropout=0.0,
                      base_kwargs=dict(init="kmeans"))
    q.train()
    q(torch.randn(4, 64, 6))
    q.eval()
    z = torch.randn(2, 30, 6)
    for k in (4, 8):
        greedy, beam = q.encode(z, codebook_size=k), q.encode(z, codebook_size=k, beam_size=6)
        assert int(beam.max()) < k
        e_g = (q.decode(greedy, codebook_size=k) - z).square().sum(-1)
        e_b = (q.decode(beam, codebook_size=k) - z).square().sum(-1)
        assert (e_b <= e_g + 1e-5).all() and float(e_b.mean()) < float(e_g.mean())


@pytest.mark.parametrize("beam", [0, -1, 65, 2.0, True, "4"])
def test_rvq_beam_size_is_validated(beam):
    q = _trained_rvq()
    with pytest.raises(ValueError, match="beam_size"):
        q.encode(torch.randn(1, 3, 4), beam_size=beam)


def test_rvq_rejects_levels_with_multi_column_codes():
    with pytest.raises(ValueError, match="one code per token"):
        get_quantizer("rvq", dim=8, codebook_size=16, quantizer="adaptive", num_levels=2)


# -- FSQ --------------------------------------------------------------------------------------------
def test_fsq_levels_follow_the_paper_and_fit_the_request():
    assert levels_for_codebook_size(2**8) == [8, 6, 5]
    assert levels_for_codebook_size(2**10) == [8, 5, 5, 5]
    assert levels_for_codebook_size(2**16) == [8, 8, 8, 5, 5, 5]
    for k in [2, 3, 7, 64, 100, 500, 1000, 4000, 2**18]:
        lv = levels_for_codebook_size(k)
        assert math.prod(lv) <= k and all(level >= 2 for level in lv)
        assert math.prod(lv) >= k / 2, (k, lv)


def test_fsq_codes_cover_the_grid_and_decode_to_its_points():
    q = get_quantizer("fsq", dim=3, codebook_size=60, levels=[5, 4, 3]).eval()
    assert q.codebook_size == 60
    all_codes = torch.arange(60)
    points = q.decode(all_codes)
    assert torch.unique(points, dim=0).shape[0] == 60
    codes = q.encode(torch.rand(4000, 3) * 6 - 3)
    assert codes.min() >= 0 and codes.max() < 60 and torch.unique(codes).numel() == 60
    # values per channel: L levels symmetric around 0 (odd) or offset by half a step (even)
    assert torch.equal(torch.unique(points[:, 0]), torch.tensor([-1.0, -0.5, 0.0, 0.5, 1.0]))
    assert torch.equal(torch.unique(points[:, 1]), torch.tensor([-1.0, -0.5, 0.0, 0.5]))


# -- codebook maintenance -----------------------------------------------------------------------------
def test_dead_codes_are_restarted_from_batch_vectors_even_with_few_tokens():
    cb = Codebook(64, 4, dead_code_threshold=0.5)
    cb.initialized.fill_(True)
    cb.cluster_size.fill_(1.0)
    dead = torch.zeros(64, dtype=torch.bool)
    dead[::3] = True
    cb.cluster_size[dead] = 0.1
    h = torch.randn(5, 4)  # fewer tokens than dead codes: sampled with replacement
    n = cb.restart_dead(h)
    assert n == int(dead.sum())
    for row in cb.weight[dead]:
        assert (row == h).all(-1).any()
    assert (cb.cluster_size[dead] == 0.5).all()
    torch.testing.assert_close(cb.embed_sum[dead], cb.weight[dead] * 0.5)


def test_kmeans_init_with_fewer_tokens_than_codes():
    q = get_quantizer("vq", dim=4, codebook_size=256, init="kmeans").train()
    z = torch.randn(1, 40, 4)
    q(z)
    assert bool(q.codebook.initialized)
    # every centroid is a data point or a mean of data points: it lies inside their bounding box
    w = q.codebook.weight
    assert (w >= z.min(1).values - 1e-5).all() and (w <= z.max(1).values + 1e-5).all()
    # with k-means init, the batch is quantized far better than by the random codebook
    rand = get_quantizer("vq", dim=4, codebook_size=256).eval()
    q.eval()
    assert (q(z).z_q - z).pow(2).mean() < 0.1 * (rand(z).z_q - z).pow(2).mean()


# -- adaptive -----------------------------------------------------------------------------------------
def _force_choice(q, i):
    """Make the scorer pick codebook i for every token."""
    with torch.no_grad():
        q.scorer.query.weight.zero_()
        q.scorer.query.bias.fill_(1.0)
        q.scorer.key.weight.zero_()
        q.scorer.key.bias.zero_()
        q.scorer.descriptors.zero_()
        q.scorer.key.bias.fill_(0.0)
        # key(descriptors) = bias_k -> give codebook i a large key via the descriptors path
        q.scorer.key.weight.copy_(torch.eye(q.dim))
        q.scorer.descriptors[i] = 1000.0


def test_adaptive_code_layout_bits_and_selective_ema():
    q = get_quantizer("adaptive", dim=8, codebook_size=16, codebooks=[(16, 8), (64, 2), (128, 1)]).train()
    _force_choice(q, 1)
    before = [b.cluster_size.clone() for b in q.books]
    z = torch.randn(3, 5, 8)
    out = q(z)
    assert out.codes.shape == (3, 5, 1 + 8)
    assert (out.codes[..., 0] == 1).all()
    assert (out.codes[..., 1:5] >= 0).all() and (out.codes[..., 1:5] < 64).all()
    assert (out.codes[..., 5:] == -1).all()
    expected_bits = math.log2(3) + 4 * math.log2(64)
    assert math.isclose(float(out.metrics["bits_per_token"]), expected_bits, rel_tol=1e-6)
    # only the chosen codebook saw tokens; the others' counts only decayed
    for i, b in enumerate(q.books):
        if i != 1:
            torch.testing.assert_close(b.cluster_size, 0.99 * before[i])
    assert q.books[1].cluster_size.sum() > 0.99 * before[1].sum()
    # the running mean cost moves from the uniform mix towards the chosen codebook's cost
    uniform = sum(q.bits_for(i) for i in range(3)) / 3
    assert q.selection_freq[1] > 1 / 3
    assert q.bits_per_token < uniform
    q.eval()
    codes = q.encode(z)
    assert (codes[..., 0] == 1).all()
    torch.testing.assert_close(q.decode(codes), q.books[1].lookup(codes[..., 1:5]).reshape(3, 5, 8))


def test_adaptive_default_codebooks_have_equal_capacity():
    q = get_quantizer("adaptive", dim=64, codebook_size=512)
    assert q.shapes == [(512, 64), (1024, 32), (2048, 16), (4096, 8)]
    assert {n * d for n, d in q.shapes} == {64 * 512}
    q2 = get_quantizer("adaptive", dim=128, codebook_size=512, capacity=65536, max_codebooks=8)
    assert q2.shapes[0] == (512, 128) and q2.shapes[-1] == (65536, 1)
