"""Files written on a GPU decode on a CPU (opt-in: ``pytest -m gpu``)."""

import numpy as np
import pytest
import torch

import codec
from codec.entropy import decode_tile

pytestmark = pytest.mark.gpu


def _file_codes(model, data):
    parsed = model.read_header(data)
    sizes = model.quantizer.alphabet_sizes(**parsed.point.kwargs)
    out = []
    for i, spans in enumerate(parsed.grid):
        shape = (1, parsed.shape[1], *(b - a for a, b in spans))
        n = model.encoder.latent_batch(shape) * int(np.prod([-(-s // model.encoder.stride) for s in shape[2:]]))
        out.append(decode_tile(parsed.chunks[i], n, sizes, parsed.tables))
    return np.concatenate(out)


@pytest.mark.parametrize("modality", ["audio", "image"])
def test_compress_on_cuda_decompress_on_cpu(model_dirs, modality):
    gpu = codec.Codec.load(model_dirs[modality], device="cuda")
    cpu = codec.Codec.load(model_dirs[modality], device="cpu")
    assert gpu.weights_sha256() == cpu.weights_sha256()  # the hash does not depend on the device
    x = torch.rand(1, 2, 24000 * 3) * 2 - 1 if modality == "audio" else torch.rand(1, 3, 67, 45)
    tile = 24000 if modality == "audio" else 32
    data = gpu.compress(x, "max", tile=tile, overlap=640 if modality == "audio" else 8)
    y_cpu, _ = cpu.decompress(data)
    y_gpu, _ = gpu.decompress(data)
    # the codes come from integers only: the same on both devices, so outputs differ by float rounding
    assert torch.allclose(y_cpu, y_gpu.cpu(), atol=1e-3)
    cpu_data = cpu.compress(x, "max", tile=tile, overlap=640 if modality == "audio" else 8)
    agree = (_file_codes(cpu, data) == _file_codes(cpu, cpu_data)).mean()
    assert agree > 0.99  # encoder float differences may move a token across a Voronoi boundary, rarely


def test_tiles_are_batched_on_the_gpu(model_dirs):
    model = codec.Codec.load(model_dirs["audio"], device="cuda")
    x = torch.rand(1, 1, 24000 * 20) * 2 - 1
    model.batch_size = 1
    one = model.compress(x, "max", tile=24000, overlap=640)
    model.batch_size = 16
    many = model.compress(x, "max", tile=24000, overlap=640)
    assert (_file_codes(model, one) == _file_codes(model, many)).mean() > 0.99


def test_a_shallow_decoder_decodes_on_cuda_as_on_cpu():
    from codec.hub import load_model

    gpu, cpu = load_model("audio-v13", device="cuda"), load_model("audio-v13")
    t = torch.arange(24000 * 2) / 24000
    x = (0.3 * torch.sin(2 * torch.pi * 180 * t) * (1 + torch.sin(2 * torch.pi * 2 * t)))[None, None]
    data = cpu.compress(x, "0.8kbps")  # one level at most positions: the shallow decoder speaks
    y_cpu, _ = cpu.decompress(data)
    y_gpu, _ = gpu.decompress(data)
    assert next(gpu.shallow_decoder.decoder.parameters()).device.type == "cuda"
    assert torch.allclose(y_cpu, y_gpu.cpu(), atol=1e-3)
