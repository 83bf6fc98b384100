"""The shared nearest-code search: tiled, float32, equal to brute force."""

import pytest
import torch

from codec.quant.search import _tile_sizes, cluster_stats, kmeans, nearest_code


@pytest.mark.parametrize("max_bytes", [4 * 7 * 5, 4 * 1000, 256 * 2**20])
def test_tiled_search_equals_brute_force(max_bytes):
    x = torch.randn(301, 12)
    e = torch.randn(97, 12)
    idx, dist = nearest_code(x, e, max_bytes=max_bytes)
    d = torch.cdist(x.double(), e.double()) ** 2
    assert torch.equal(idx, d.argmin(1))
    torch.testing.assert_close(dist.double(), d.min(1).values, rtol=1e-4, atol=1e-4)


def test_tiles_respect_the_memory_budget():
    for m, k in [(65536, 65536), (65536, 262144), (10, 10**6), (16384, 1024)]:
        m_tile, k_tile = _tile_sizes(m, k, 256 * 2**20)
        assert m_tile * k_tile * 4 <= 256 * 2**20
        assert m_tile >= 1 and k_tile >= 1
    # a large codebook is split, not the token rows down to one
    assert _tile_sizes(65536, 262144, 256 * 2**20)[0] >= 1024


def test_cosine_search():
    x = torch.randn(50, 6)
    e = torch.randn(20, 6)
    idx, dist = nearest_code(x, e, metric="cosine")
    cos = torch.nn.functional.normalize(x, dim=-1) @ torch.nn.functional.normalize(e, dim=-1).T
    assert torch.equal(idx, cos.argmax(1))
    torch.testing.assert_close(dist, 2 - 2 * cos.max(1).values, atol=1e-5, rtol=1e-5)


def test_search_is_float32_whatever_the_input_dtype():
    x = torch.randn(200, 8)
    e = torch.randn(64, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        idx_auto, _ = nearest_code(x, e)
    assert torch.equal(idx_auto, nearest_code(x, e)[0])
    idx_bf16, _ = nearest_code(x.bfloat16(), e.bfloat16())
    assert torch.equal(idx_bf16, nearest_code(x.bfloat16().float(), e.bfloat16().float())[0])


def test_empty_and_mismatched_inputs():
    idx, dist = nearest_code(torch.randn(0, 4), torch.randn(8, 4))
    assert idx.shape == (0,) and dist.shape == (0,)
    with pytest.raises(ValueError):
        nearest_code(torch.randn(3, 4), torch.randn(8, 5))


def test_cluster_stats_equal_one_hot_reference():
    x = torch.randn(100, 5)
    idx = torch.randint(0, 16, (100,))
    counts, sums = cluster_stats(x, idx, 16)
    one_hot = torch.nn.functional.one_hot(idx, 16).float()
    torch.testing.assert_close(counts, one_hot.sum(0))
    torch.testing.assert_close(sums, one_hot.T @ x)


def test_kmeans_finds_separated_clusters():
    centers = torch.tensor([[5.0, 0.0], [-5.0, 0.0], [0.0, 5.0]])
    x = torch.cat([c + 0.1 * torch.randn(100, 2) for c in centers])
    g = torch.Generator().manual_seed(0)
    found, counts = kmeans(x, 3, iters=20, generator=g)
    assert counts.sum() == 300
    d = torch.cdist(centers, found)
    # each true centre has a centroid within 0.1 (k-means from data seeds may need a lucky draw:
    # the seeded generator makes this deterministic)
    assert (d.min(1).values < 0.1).sum() >= 2
