"""Writes the golden files of context-table coding (tile tag 2; run once, never to "fix" a test).

``tiny_image_model/``: a small image model (k-means codebooks from one training pass over blocky
images) with frequency and context tables;
``context_v2.vqc``: a 64x48 image coded by it at its top rate point (container version 2, one
tile whose payload is context-coded);
``context_v2_codes.npy``: the code indices that payload holds ``(positions, levels)``.
"""

from pathlib import Path

import numpy as np
import torch

from codec.entropy import CONTEXT, decode_tile
from codec.model import Codec

HERE = Path(__file__).parent


def blocky(seed: int, h: int = 64, w: int = 64, block: int = 16) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    small = torch.rand(1, 3, h // block, w // block, generator=g)
    return torch.nn.functional.interpolate(small, scale_factor=block, mode="nearest")


def main() -> None:
    torch.manual_seed(0)
    model = Codec.build("image-resnet", "rvq",
                        network_kwargs=dict(channels=8, channel_mult=[1, 2], num_res_blocks=1, factor=4, latent_dim=8,
                                            attention=False),
                        quantizer_kwargs=dict(codebook_size=16, num_levels=2, init="kmeans"))
    train = [blocky(i) for i in range(8)]
    with torch.no_grad():
        model.train()(torch.cat(train))
    model.eval()
    model.fit_entropy_tables(train)
    assert model.context_tables
    model.save(HERE / "tiny_image_model", name="tiny-image-test")
    x = blocky(100, 64, 48)
    data = model.compress(x, "max")
    parsed = model.read_header(data)
    assert parsed.chunks[0][0] == CONTEXT
    sizes = model.quantizer.alphabet_sizes(**parsed.point.kwargs)
    grid = (1, 16, 12)
    codes = decode_tile(parsed.chunks[0], 16 * 12, sizes, parsed.tables, grid=grid, contexts=parsed.contexts)
    (HERE / "context_v2.vqc").write_bytes(data)
    np.save(HERE / "context_v2_codes.npy", codes)


if __name__ == "__main__":
    main()
