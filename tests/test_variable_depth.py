"""Variable depth: a rate target's budget spent level by level where it lowers the latent error most."""

import numpy as np
import pytest
import torch

from codec.bitstream import BitstreamError, read_container, write_container
from codec.entropy import DEPTH_CONTEXT, DEPTH_RANGE, decode_tile
from codec.model import Codec, TileTokens

AUDIO_NET = dict(channels=4, strides=[2, 4, 5, 8], latent_dim=8)
IMAGE_NET = dict(channels=8, channel_mult=[1, 2], num_res_blocks=1, factor=4, latent_dim=8, attention=False)


def _speechlike(seed: int, seconds: float = 3.0) -> torch.Tensor:
    """Tones that come and go: stretches a few levels code well beside near-silence."""
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(int(24000 * seconds)) / 24000
    gate = (torch.sin(2 * torch.pi * (0.7 + seed * 0.1) * t) > 0.3).float()
    tone = torch.sin(2 * torch.pi * (180 + 40 * seed) * t) + 0.3 * torch.sin(2 * torch.pi * 1300 * t)
    return (0.5 * gate * tone + 0.003 * torch.randn(t.shape, generator=g)).reshape(1, 1, -1)


@pytest.fixture(scope="module")
def audio():
    """A small residual audio codec with k-means codebooks and entropy tables (contexts included)."""
    torch.manual_seed(0)
    codec = Codec.build("audio-seanet", "rvq", network_kwargs=AUDIO_NET,
                        quantizer_kwargs=dict(codebook_size=64, num_levels=6, init="kmeans"))
    train = [_speechlike(i) for i in range(6)]
    codec.train()(torch.cat(train))
    codec.eval()
    codec.fit_entropy_tables(train)
    return codec


def _file_codes(codec: Codec, x: torch.Tensor, data: bytes) -> torch.Tensor:
    """A one-tile file's codes ``(B, N, levels)`` (``-1``: a level the position leaves out)."""
    parsed = codec.read_header(data)
    tokens, _, _ = codec._tokens(x)
    sizes = codec.quantizer.alphabet_sizes(**parsed.point.kwargs)
    codes = decode_tile(parsed.chunks[0], tokens.shape[0] * tokens.shape[1], sizes, parsed.tables,
                        grid=(tokens.shape[0], tokens.shape[1]), contexts=parsed.contexts)
    return torch.from_numpy(codes).reshape(tokens.shape[0], tokens.shape[1], -1)


@torch.no_grad()
def _latent_error(codec: Codec, x: torch.Tensor, data: bytes) -> float:
    """Squared error between the encoder's latent and the latent the file's codes give."""
    tokens, _, _ = codec._tokens(x)
    z_q = codec.quantizer.decode(_file_codes(codec, x, data), **codec.read_header(data).point.kwargs)
    return float((tokens - z_q).square().sum())


def test_a_rate_target_codes_each_position_at_its_own_depth(audio):
    x = _speechlike(11)
    fixed = {n: audio.compress_detailed(x, f"n{n}", envelope=False).real_rate for n in (1, 2, 3)}
    target = (fixed[1] + fixed[2]) / 2
    fixed_out = audio.compress_detailed(x, f"{target}kbps", variable_depth=False)
    out = audio.compress_detailed(x, f"{target}kbps")
    assert fixed_out.point.name == "n1" and fixed_out.mean_levels is None
    assert out.point.name == "n3" and 0.5 < out.mean_levels < 3.0  # 0 to 3 levels per position
    assert fixed_out.real_rate < out.real_rate <= target * (1 + 1e-9)
    assert read_container(out.data)[1][0][0] in (DEPTH_RANGE, DEPTH_CONTEXT)
    assert _latent_error(audio, x, out.data) < _latent_error(audio, x, fixed_out.data)
    y, header = audio.decompress(out.data)
    assert y.shape == x.shape and torch.isfinite(y).all() and header["rate_point"] == "n3"
    assert audio.compress_detailed(x, f"{target}kbps").data == out.data  # deterministic


def test_point_names_and_fixed_depth_keep_one_depth(audio):
    x = _speechlike(12)
    named = audio.compress_detailed(x, "n2")
    assert named.mean_levels is None and read_container(named.data)[1][0][0] not in (DEPTH_RANGE, DEPTH_CONTEXT)
    rate = f"{1.3 * named.real_rate}kbps"
    assert audio.compress_detailed(x, rate, variable_depth=False).mean_levels is None
    assert audio.compress_detailed(x, "n2", refine_steps=1).mean_levels is None
    assert audio.compress_detailed(x, rate).mean_levels is not None


def test_refinement_keeps_every_positions_depth_and_never_costs_more(audio):
    """Under a rate target the variable depth is chosen unrefined, then refined at those depths."""
    x = _speechlike(12)
    rate = f"{1.3 * audio.compress_detailed(x, 'n2').real_rate}kbps"
    plain = audio.compress_detailed(x, rate)
    refined = audio.compress_detailed(x, rate, refine_steps=6)
    assert plain.mean_levels is not None and refined.mean_levels == plain.mean_levels
    assert refined.point == plain.point and refined.real_rate <= plain.real_rate
    a, b = _file_codes(audio, x, plain.data), _file_codes(audio, x, refined.data)
    depth = (a >= 0).sum(-1)
    assert torch.equal(depth, (b >= 0).sum(-1))  # the same depth at every position

    target, _ = audio.encoder.prepare(x)
    objective = audio._objective(x.device)
    spatial = (a.shape[1],)

    def score(codes: torch.Tensor) -> float:
        with torch.no_grad():
            return float(objective(target, audio.decoder(audio._quantized_latent(codes, spatial, plain.point))))

    assert score(b) <= score(a)  # never worse on the model's refinement objective
    y, header = audio.decompress(refined.data)
    assert y.shape == x.shape and torch.isfinite(y).all() and header["rate_point"] == plain.point.name

    # the candidates the search weighed: codes moved, each position at its own depth
    y_prep, tokens, spatial, info = audio._prepared_tokens(x)
    found = audio._refine_candidates(TileTokens(tokens, spatial, info, y_prep), plain.point, None, 6, depths=depth)
    assert torch.equal(found[0].codes, a)  # the unrefined codes come first
    assert len(found) > 1 and all(torch.equal((c.codes >= 0).sum(-1), depth) for c in found)
    assert min(c.objective for c in found) < found[0].objective


def test_stereo_and_multi_chunk_files_allocate_across_everything(audio):
    x = torch.cat([_speechlike(13), 0.2 * _speechlike(14)], dim=1)  # two channels
    fixed = audio.compress_detailed(x, "n2", tile=24000, overlap=2400).real_rate
    out = audio.compress_detailed(x, f"{fixed * 1.25}kbps", tile=24000, overlap=2400)
    assert out.mean_levels is not None and out.real_rate <= fixed * 1.25 * (1 + 1e-9)
    header, chunks = read_container(out.data)
    assert len(chunks) == 4 and all(c[0] in (DEPTH_RANGE, DEPTH_CONTEXT) for c in chunks)
    y, _ = audio.decompress(out.data)
    assert y.shape == x.shape and torch.isfinite(y).all()


def test_image_grids_code_their_own_depths():
    torch.manual_seed(0)
    codec = Codec.build("image-resnet", "rvq", network_kwargs=IMAGE_NET,
                        quantizer_kwargs=dict(codebook_size=16, num_levels=3, init="kmeans"))
    g = torch.Generator().manual_seed(0)
    small = torch.rand(6, 3, 4, 4, generator=g)
    train = list(torch.nn.functional.interpolate(small, scale_factor=16, mode="nearest").split(1))
    codec.train()(torch.cat(train))
    codec.eval()
    codec.fit_entropy_tables(train)
    x = train[0] * 0.5 + torch.rand(1, 3, 64, 64, generator=g) * 0.5 * (torch.arange(64) > 40).float()  # busy on the right
    n1, n2 = (codec.compress_detailed(x, p).real_rate for p in ("n1", "n2"))
    out = codec.compress_detailed(x, f"{(n1 + n2) / 2}bpp")
    assert out.mean_levels is not None and n1 < out.real_rate <= (n1 + n2) / 2 * (1 + 1e-9)
    y, _ = codec.decompress(out.data)
    assert y.shape == x.shape and torch.isfinite(y).all()


def test_corrupt_variable_depth_payloads_fail_cleanly(audio):
    """Mutated or truncated payloads (checksums recomputed) raise BitstreamError or decode to finite audio."""
    x = _speechlike(15)
    n2 = audio.compress_detailed(x, "n2").real_rate
    good = audio.compress_detailed(x, f"{n2 * 1.2}kbps").data
    header, chunks = read_container(good)
    assert chunks[0][0] in (DEPTH_RANGE, DEPTH_CONTEXT)
    rng = np.random.default_rng(0)
    for _ in range(40):
        c = bytearray(chunks[0])
        if rng.random() < 0.5:
            c[int(rng.integers(1, len(c)))] ^= int(rng.integers(1, 256))
        else:
            del c[int(rng.integers(len(c) + 1)):]
        try:
            y, _ = audio.decompress(write_container(header, [bytes(c)]))
            assert torch.isfinite(y).all()
        except BitstreamError:
            pass
    for tag in (DEPTH_RANGE, DEPTH_CONTEXT):  # a tag the model's tables cannot serve, or a body that is not a stream
        with pytest.raises(BitstreamError):
            audio.decompress(write_container(header, [bytes([tag]) + b"\x01\x02\x03"]))


def test_every_codebook_size_is_a_base_and_the_lowest_latent_error_wins(monkeypatch):
    """With rate-adaptive codebooks, each size's deepest point within the chosen point's rate is
    allocated too; the file kept has the lowest latent error of them and still fits."""
    torch.manual_seed(0)
    codec = Codec.build("audio-seanet", "rvq", network_kwargs=AUDIO_NET,
                        quantizer_kwargs=dict(quantizer="raq", codebook_size=64, min_codebook_size=16,
                                              max_codebook_size=64, rate_points=[16, 64], num_levels=5,
                                              base_kwargs=dict(init="kmeans")))
    train = [_speechlike(i) for i in range(6)]
    codec.train()(torch.cat(train))
    codec.eval()
    codec.fit_entropy_tables(train)
    x = _speechlike(16)
    by_name = {p.name: p for p in codec.rate_points()}
    bases = codec._depth_bases(by_name["k64-n3"])
    assert [b.name for b in bases][0] == "k64-n3" and len(bases) == 2
    assert bases[1].kwargs["codebook_size"] == 16 and bases[1].rate <= by_name["k64-n3"].rate
    assert codec._depth_bases(by_name["k64-n1"])[1:] == [p for p in codec.rate_points()
                                                         if p.name.startswith("k16-") and p.rate <= by_name["k64-n1"].rate][-1:]
    rate = f"{codec.compress_detailed(x, 'k64-n2').real_rate * 1.15}kbps"
    point = codec.select_rate(rate)
    both = codec.compress_detailed(x, rate)
    assert both.mean_levels is not None and both.real_rate <= float(rate[:-4]) * (1 + 1e-9)
    errors = {}
    for base in codec._depth_bases(point):  # each base alone
        monkeypatch.setattr(Codec, "_depth_bases", lambda self, p, base=base: [base])
        alone = codec.compress_detailed(x, rate)
        if alone.mean_levels is not None:
            errors[base.name] = _latent_error(codec, x, alone.data)
    assert errors  # a base whose every allocation loses to the fixed depth gives none
    assert _latent_error(codec, x, both.data) == pytest.approx(min(errors.values()), rel=1e-6)
    y, _ = codec.decompress(both.data)
    assert y.shape == x.shape and torch.isfinite(y).all()
