"""Writes the codec-level golden files (run once per format version; never to "fix" a test).

``tiny_audio_model/``: a small untrained audio model with entropy tables;
``codec_v2.vqc``: a two-chunk, range-coded stereo file made by it (44.1 kHz source), container version 2;
``codec_v2_codes.npy``: the code indices its payload holds (tile-major, then levels).
"""

from pathlib import Path

import numpy as np
import torch

from codec.entropy import decode_tile
from codec.files import compress_signal
from codec.model import Codec

HERE = Path(__file__).parent


def main() -> None:
    torch.manual_seed(0)
    model = Codec.build("audio-seanet", "rvq", network_kwargs=dict(channels=4, strides=[2, 4, 5, 8], latent_dim=8),
                        quantizer_kwargs=dict(codebook_size=16, num_levels=2)).eval()
    t = torch.arange(24000) / 24000
    train = [torch.sin(2 * torch.pi * f * t).reshape(1, 1, -1) * 0.5 for f in (110, 220, 440)]
    model.fit_entropy_tables(train)
    model.save(HERE / "tiny_audio_model", name="tiny-audio-test")
    t = torch.arange(44100) / 44100
    wav = torch.stack([torch.sin(2 * torch.pi * 330 * t), torch.sin(2 * torch.pi * 550 * t)]) * 0.4
    out = compress_signal(wav, rate="max", model=model, sample_rate=44100, source={"format": "WAV", "subtype": "PCM_16"},
                          tile=16000, overlap=1280)
    (HERE / "codec_v2.vqc").write_bytes(out.data)
    parsed = model.read_header(out.data)
    sizes = model.quantizer.alphabet_sizes(**parsed.point.kwargs)
    codes = []
    for i, spans in enumerate(parsed.grid):
        n = 2 * -(-(spans[0][1] - spans[0][0]) // model.encoder.stride)
        codes.append(decode_tile(parsed.chunks[i], n, sizes, parsed.tables))
    np.save(HERE / "codec_v2_codes.npy", np.concatenate(codes))


if __name__ == "__main__":
    main()
