"""Analysis-by-synthesis refinement (codec.refine): never worse, never larger, format unchanged."""

import json
import math

import pytest
import torch

from codec.model import Codec
from codec.refine import OBJECTIVES, refine_codes

AUDIO_NET = dict(channels=4, strides=[2, 4, 5, 8], latent_dim=8)
IMAGE_NET = dict(channels=8, channel_mult=[1, 2], num_res_blocks=1, factor=4, latent_dim=8, attention=False)


def trained_audio_codec(tables=True):
    torch.manual_seed(0)
    codec = Codec.build("audio-seanet", "rvq", network_kwargs=AUDIO_NET, quantizer_kwargs=dict(
        codebook_size=16, num_levels=4, init="kmeans", quantizer_dropout=0.0))
    codec.train()(torch.rand(2, 1, 6000) * 2 - 1)  # k-means codebooks
    if tables:  # entropy-coded: refinement may only keep candidates that cost no more
        codec.fit_entropy_tables([torch.rand(1, 1, 12000) * 2 - 1])
    return codec.eval()


def objective_of(codec, x, encoded):
    y, _ = codec.encoder.prepare(x)
    spatial = tuple(encoded.codes.shape[1:2])
    recon = codec.decoder(codec._quantized_latent(encoded.codes, spatial, encoded.point))
    return float(codec._objective(x.device)(y, recon))


@pytest.mark.parametrize("tables", [False, True])
def test_refined_codes_are_never_worse_on_the_objective_nor_larger_and_decode_with_any_reader(tables):
    codec = trained_audio_codec(tables)
    x = torch.sin(torch.linspace(0, 900, 24000))[None, None] * 0.5 + 0.05 * torch.randn(1, 1, 24000)
    before = {k: v.clone() for k, v in codec.state_dict().items()}
    with torch.no_grad():
        plain = codec.encode(x, "n3")
        refined = codec.encode(x, "n3", refine_steps=10)
        if not tables:  # bit-packed: every candidate costs the same, the search moves codes freely
            assert not torch.equal(plain.codes, refined.codes)
            assert objective_of(codec, x, refined) < objective_of(codec, x, plain)
        assert objective_of(codec, x, refined) <= objective_of(codec, x, plain)
    assert all(torch.equal(before[k], v) for k, v in codec.state_dict().items())  # weights untouched
    assert all(p.grad is None for p in codec.parameters())
    data_plain, data_refined = codec.compress(x, "n3"), codec.compress(x, "n3", refine_steps=10)
    assert len(data_refined) <= len(data_plain)
    y, header = codec.decompress(data_refined)  # the reader needs nothing: the file holds the codes
    assert header["rate_point"] == "n3" and torch.equal(y, codec.decode(refined))
    assert codec.compress(x, "n3", refine_steps=0) == data_plain
    assert torch.equal(codec.tokenize(x, "n3", refine_steps=10).codes[0].T, refined.codes[0])


def test_a_rate_target_is_chosen_unrefined_and_still_holds_refined():
    codec = trained_audio_codec()
    x = torch.rand(1, 1, 48000) * 2 - 1
    plain = codec.compress_detailed(x, "3kbps")
    refined = codec.compress_detailed(x, "3kbps", refine_steps=4)
    assert refined.point == plain.point and refined.real_rate <= plain.real_rate <= 3.0


def test_image_refinement_lowers_the_squared_error():
    torch.manual_seed(0)
    codec = Codec.build("image-resnet", "rvq", network_kwargs=IMAGE_NET,
                        quantizer_kwargs=dict(codebook_size=16, num_levels=2, init="kmeans", quantizer_dropout=0.0))
    codec.train()(torch.rand(2, 3, 32, 32))
    codec.eval()
    assert codec.refine_loss == "l2"
    x = torch.rand(1, 3, 40, 36)
    plain, refined = codec.encode(x, "n2"), codec.encode(x, "n2", refine_steps=8)
    errors = [float((codec.decode(e) - x).square().mean()) for e in (plain, refined)]
    assert errors[1] < errors[0]
    y, _ = codec.decompress(codec.compress(x, "n2", refine_steps=8))
    assert torch.equal(y, codec.decode(refined).clamp(0, 1)) or torch.allclose(y, codec.decode(refined).clamp(0, 1), atol=1 / 255)


def test_a_cost_limit_keeps_the_unrefined_codes_when_nothing_cheaper_is_found():
    torch.manual_seed(0)
    book = torch.randn(8, 4)
    tokens = torch.randn(1, 20, 4)
    target = torch.randn(1, 20, 4)

    def quantize(z):
        return torch.cdist(z, book[None]).argmin(-1)

    def dequantize(c):
        return book[c]

    args = dict(quantize=quantize, dequantize=dequantize, synthesize=lambda z: z, objective=OBJECTIVES.get("l2"),
                steps=20, step_size=0.5)
    free = refine_codes(tokens, target, **args)
    start = quantize(tokens)
    assert not torch.equal(free, start)
    assert float(OBJECTIVES.get("l2")(target, dequantize(free))) < float(OBJECTIVES.get("l2")(target, dequantize(start)))
    # a cost only the starting codes meet: refinement returns them
    kept = refine_codes(tokens, target, **args, cost=lambda c: float((c != start).sum()))
    assert torch.equal(kept, start)
    for bad in (dict(steps=-1), dict(steps=1001), dict(step_size=0.0)):
        with pytest.raises(ValueError, match="refine"):
            refine_codes(tokens, target, **{**args, **bad})


def test_the_refinement_default_travels_with_the_model_and_bad_configs_are_refused(tmp_path):
    codec = trained_audio_codec()
    codec.refine_steps, codec.refine_step_size = 3, 0.02
    codec.save(tmp_path / "m")
    loaded = Codec.load(tmp_path / "m")
    assert (loaded.refine_steps, loaded.refine_step_size, loaded.refine_loss) == (3, 0.02, "mel")
    x = torch.rand(1, 1, 12000) * 2 - 1
    assert loaded.compress(x, "n2") == loaded.compress(x, "n2", refine_steps=3)
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    assert config["refine_steps"] == 3
    for key, bad in (("refine_steps", -1), ("refine_steps", 1001), ("refine_steps", 2.5), ("refine_steps", True),
                     ("refine_step_size", 0), ("refine_step_size", "big"), ("refine_loss", "nope"),
                     ("refine_max_growth", -0.1), ("refine_max_growth", 2)):
        (tmp_path / "m" / "config.json").write_text(json.dumps({**config, key: bad}))
        with pytest.raises(ValueError, match=key):
            Codec.load(tmp_path / "m")
    with pytest.raises(ValueError, match="refine_steps"):
        loaded.compress(x, "n2", refine_steps=-2)


def test_the_mel_objective_needs_a_sample_rate():
    with pytest.raises(ValueError, match="sample rate"):
        OBJECTIVES.get("mel", sample_rate=None)


def test_best_candidate_keeps_to_the_allowed_growth():
    from codec.refine import Candidate, best_candidate

    codes = [torch.tensor([i]) for i in range(4)]
    found = [Candidate(codes[0], 1.0, 100.0), Candidate(codes[1], 0.9, 104.0), Candidate(codes[2], 0.5, 120.0),
             Candidate(codes[3], 0.95, 99.0)]
    assert best_candidate(found).codes is codes[3]  # no growth: only as cheap as the unrefined codes
    assert best_candidate(found, 0.05).codes is codes[1]
    assert best_candidate(found, 0.5).codes is codes[2]
    assert best_candidate(found[:1]).codes is codes[0]
    no_cost = [Candidate(codes[0], 1.0, None), Candidate(codes[2], 0.5, None)]
    assert best_candidate(no_cost).codes is codes[2]


def test_an_allowed_growth_never_breaks_a_rate_target():
    codec = trained_audio_codec()
    codec.refine_max_growth = 1.0
    x = torch.rand(1, 1, 48000) * 2 - 1
    plain = codec.compress_detailed(x, "n3")
    loose = codec.compress_detailed(x, "n3", refine_steps=6)
    assert len(loose.data) <= 2 * len(plain.data)
    # a target exactly at the unrefined file's size: refinement falls back to codes no larger
    target = f"{math.ceil(plain.real_rate * 1e6) / 1e6:.6f}kbps"
    tight = codec.compress_detailed(x, target, refine_steps=6)
    assert tight.point == plain.point and len(tight.data) <= len(plain.data)
