"""CUDA paths (opt-in: ``pytest -m gpu``). Codes found on the GPU equal those found on the CPU."""

import pytest
import torch

from codec.quant import get_quantizer, list_quantizers
from codec.quant.search import nearest_code

pytestmark = pytest.mark.gpu


@pytest.mark.parametrize("name", list_quantizers())
def test_forward_backward_and_exact_round_trip_on_cuda(name):
    q = get_quantizer(name, dim=32, codebook_size=256).cuda().train()
    z = torch.randn(4, 64, 32, device="cuda", requires_grad=True)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        out = q(z)
        (out.z_q.float().square().mean() + out.total_loss).backward()
    assert torch.isfinite(z.grad).all()
    q.eval()
    codes = q.encode(z.detach())
    assert torch.equal(q.decode(codes).to(z.dtype), q(z.detach()).z_q)


def test_cuda_search_matches_cpu_and_large_codebooks_fit():
    x = torch.randn(65536, 8)
    e = torch.randn(4096, 8)
    idx_cpu, _ = nearest_code(x, e)
    idx_gpu, _ = nearest_code(x.cuda(), e.cuda())
    # float32 on both sides; only exact ties (measure-zero for random data) could differ
    assert (idx_gpu.cpu() == idx_cpu).float().mean() > 0.9999
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    big = torch.randn(262144, 8, device="cuda")
    nearest_code(x.cuda(), big)
    assert torch.cuda.max_memory_allocated() - base < 2 * 2**30
