"""One rank of the 2-process gloo test in test_distributed.py (run as a script, not collected)."""

import sys

import torch
import torch.distributed as dist
from safetensors.torch import save_file

from codec.quant import get_quantizer

B, N, D, K, STEPS = 4, 16, 8, 64, 4


def batches():
    g = torch.Generator().manual_seed(0)  # every rank draws the same global batches
    return [torch.randn(2 * B, N, D, generator=g) for _ in range(STEPS)]


def build(scenario):
    if scenario == "ema":
        return {"vq": get_quantizer("vq", dim=D, codebook_size=K, update="ema", decay=0.9)}
    return {
        "vq": get_quantizer("vq", dim=D, codebook_size=K, init="kmeans", dead_code_threshold=2.0),
        "rvq": get_quantizer(
            "rvq", dim=D, codebook_size=K, num_levels=3, quantizer_dropout=1.0, dead_code_threshold=2.0
        ),
        "adaptive": get_quantizer("adaptive", dim=D, codebook_size=K, dead_code_threshold=1.0),
    }


def main():
    rank, world, init_file, out, scenario = sys.argv[1:6]
    rank, world = int(rank), int(world)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    torch.manual_seed(100 + rank)  # different on purpose: the quantizers must sync their init
    models = build(scenario)
    torch.manual_seed(7 + rank)  # dropout / Gumbel noise differ per rank, as in real training
    restarted = torch.zeros(())
    for x in batches():
        local = x[rank * B : (rank + 1) * B]
        for q in models.values():
            result = q.train()(local)
            if "restarted" in result.metrics:
                restarted += result.metrics["restarted"]
    # Buffers are what the quantizers keep in sync themselves (parameters are DDP's job).
    state = {
        f"{name}.{key}": value.detach().contiguous().clone()
        for name, q in models.items()
        for key, value in q.named_buffers()
    }
    state["restarted"] = restarted
    save_file(state, out)
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
