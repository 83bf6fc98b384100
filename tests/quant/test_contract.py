"""Contract tests: every registered quantizer (and the main option combinations) obeys base.py."""

import copy

import pytest
import torch

from codec.quant import (
    QuantizerOutput,
    channel_first,
    get_quantizer,
    list_quantizers,
    register_quantizer,
)

DIM, K = 16, 64

# Every registered name with its defaults, plus the options that change the code path.
CONFIGS = [(name, {}) for name in list_quantizers()] + [
    ("vq", {"update": "loss"}),
    ("vq", {"estimator": "rotation"}),
    ("vq", {"metric": "cosine"}),
    ("vq", {"codebook_dim": 4}),
    ("vq", {"init": "kmeans", "dead_code_threshold": 1.0}),
    ("vq", {"update": "loss", "init": "kmeans", "dead_code_threshold": 1.0}),
    ("gumbel", {"hard": False}),
    ("simvq", {"linear": "diagonal"}),
    ("simvq", {"train_codes": True, "estimator": "rotation"}),
    ("rvq", {"quantizer": "simvq", "num_levels": 3}),
    ("rvq", {"quantizer": "fsq", "num_levels": 2}),
    ("rvq", {"quantizer": "gumbel", "num_levels": 2, "quantizer_dropout": 1.0}),
    ("rvq", {"codebook_size": [64, 32, 16], "init": "kmeans"}),
    ("fsq", {"levels": [5, 3]}),
    ("adaptive", {"codebooks": [(64, 16), (256, 4), (1024, 1)], "dead_code_threshold": 0.5}),
    ("raq", {"min_codebook_size": 4, "max_codebook_size": 32, "forcing": "official"}),
    ("raq", {"adapter": "dkm", "rate_points": [8, 64, 128]}),
]
IDS = [f"{n}-{'-'.join(f'{k}={v}' for k, v in kw.items()) or 'default'}" for n, kw in CONFIGS]


def build(name, **kw):
    kw = dict(kw)
    size = kw.pop("codebook_size", K)
    return get_quantizer(name, dim=DIM, codebook_size=size, **kw)


def all_configs(fn):
    return pytest.mark.parametrize("name,kw", CONFIGS, ids=IDS)(fn)


def train_steps(q, steps=3, shape=(4, 25, DIM)):
    q.train()
    for _ in range(steps):
        q(torch.randn(*shape))


def test_registry_has_every_variant():
    assert {"vq", "gumbel", "simvq", "rvq", "fsq", "adaptive"} <= set(list_quantizers())


def test_registering_a_name_twice_raises():
    with pytest.raises(ValueError, match="already registered"):
        register_quantizer("vq")(lambda **kw: None)


def test_unknown_name_lists_the_available_ones():
    with pytest.raises(KeyError, match="available: .*vq"):
        get_quantizer("nope", dim=4, codebook_size=8)


@all_configs
def test_forward_output_contract(name, kw):
    q = build(name, **kw).train()
    z = torch.randn(2, 12, DIM)
    out = q(z)
    assert isinstance(out, QuantizerOutput)
    assert out.z_q.shape == z.shape and out.z_q.dtype == z.dtype
    assert out.codes.dtype == torch.long and out.codes.shape[:2] == (2, 12)
    for term, value in out.loss.items():
        assert value.dim() == 0 and torch.isfinite(value), term
    assert {"perplexity", "usage"} <= set(out.metrics)
    assert 1.0 <= float(out.metrics["perplexity"]) <= q.codebook_size + 1e-3
    assert 0.0 < float(out.metrics["usage"]) <= 1.0
    assert isinstance(q.codebook_size, int) and q.codebook_size >= 2
    assert isinstance(q.bits_per_token, float) and q.bits_per_token > 0


@all_configs
def test_gradients_reach_the_input(name, kw):
    q = build(name, **kw).train()
    z = torch.randn(2, 12, DIM, requires_grad=True)
    out = q(z)
    (out.z_q * torch.randn_like(out.z_q)).sum().add(out.total_loss).backward()
    assert z.grad is not None and torch.isfinite(z.grad).all()
    assert z.grad.abs().sum() > 0


@all_configs
def test_eval_decode_of_encode_equals_forward_exactly(name, kw):
    q = build(name, **kw)
    train_steps(q)  # move EMA statistics, init k-means, restart codes
    q.eval()
    z = torch.randn(3, 17, DIM)
    out = q(z)
    codes = q.encode(z)
    assert torch.equal(codes, out.codes)
    assert torch.equal(q.decode(codes).to(z.dtype), out.z_q)


@all_configs
def test_bf16_autocast(name, kw):
    q = build(name, **kw).train()
    z = torch.randn(2, 12, DIM, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = q(z)
        loss = out.z_q.float().pow(2).mean() + out.total_loss
    loss.backward()
    assert torch.isfinite(out.z_q.float()).all() and torch.isfinite(z.grad).all()
    q.eval()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        codes = q.encode(z.detach())
    # Search runs in float32 under autocast: same codes as without it.
    assert torch.equal(codes, q.encode(z.detach()))


@all_configs
def test_channel_first_matches_tokens(name, kw):
    q = build(name, **kw)
    train_steps(q, steps=1)
    q.eval()
    fmap = torch.randn(2, DIM, 3, 5)
    out = channel_first(q, fmap)
    assert out.z_q.shape == fmap.shape
    assert out.codes.shape[:3] == (2, 3, 5)
    tokens = fmap.flatten(2).transpose(1, 2)
    ref = q(tokens)
    assert torch.equal(out.z_q, ref.z_q.transpose(1, 2).reshape(fmap.shape))
    assert torch.equal(out.codes.reshape(ref.codes.shape), ref.codes)


@all_configs
def test_empty_batch_is_harmless(name, kw):
    q = build(name, **kw)
    train_steps(q, steps=1)
    out = q(torch.randn(0, 7, DIM))
    assert out.z_q.shape == (0, 7, DIM)
    assert all(torch.isfinite(v) for v in out.loss.values())


@all_configs
def test_state_dict_round_trip(name, kw):
    q = build(name, **kw)
    train_steps(q)
    q.eval()
    fresh = copy.deepcopy(build(name, **kw)).eval()
    fresh.load_state_dict(q.state_dict())
    z = torch.randn(2, 9, DIM)
    assert torch.equal(fresh.encode(z), q.encode(z))
    assert torch.equal(fresh(z).z_q, q(z).z_q)


@all_configs
def test_decode_rejects_out_of_range_codes(name, kw):
    q = build(name, **kw).eval()
    codes = q.encode(torch.randn(2, 5, DIM))
    bad = codes.clone()
    bad.view(-1)[0] = 10**9
    with pytest.raises(ValueError, match="out of range"):
        q.decode(bad)
    with pytest.raises(TypeError):
        q.decode(codes.float())


def test_wrong_token_dim_is_a_clear_error():
    q = get_quantizer("vq", dim=8, codebook_size=16)
    with pytest.raises(ValueError, match=r"expects tokens \(\*, 8\)"):
        q(torch.randn(2, 3, 5))
