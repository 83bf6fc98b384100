"""Fuzz ``Codec.decompress`` with corrupted and truncated ``.vqc`` files.

Each case takes a valid file (small image and audio codecs, packed and range-coded payloads, one
with band energies) and applies 1-4 random mutations: byte flips, random bytes, insertions,
deletions, truncation. In half of the cases the file is re-framed afterwards with a fresh checksum
(edits of the header's values, of its binary record's bytes, or of a payload chunk), so the
record parser, the header validation and the entropy decoders behind the checksum are
exercised too. A case passes when decoding returns a finite signal of the header's shape or
raises ``BitstreamError``/``ValueError``; anything else is a crash, a case over ``--hang-s`` is
a hang. Peak RSS is reported.

    python bench/fuzz_bitstream.py --cases 10000
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from codec.bitstream import FORMAT_VERSION, BitstreamError, _frame, encode_record, read_container, write_container  # noqa: E402
from codec.files import decompress  # noqa: E402
from codec.model import Codec  # noqa: E402


def _codecs() -> list[tuple[Codec, bytes]]:
    from codec.files import compress_signal

    torch.manual_seed(0)
    audio = Codec.build("audio-seanet", "rvq", network_kwargs=dict(channels=4, strides=[2, 4, 5, 8], latent_dim=8),
                        quantizer_kwargs=dict(codebook_size=256, num_levels=4)).eval()
    image = Codec.build("image-resnet", "vq", network_kwargs=dict(channels=8, channel_mult=[1, 2], num_res_blocks=1,
                                                                  factor=4, latent_dim=8, attention=False),
                        quantizer_kwargs=dict(codebook_size=64)).eval()
    x_audio = torch.rand(1, 2, 8000) * 2 - 1
    out = [(audio, audio.compress(x_audio, "n2")), (image, image.compress(torch.rand(1, 3, 37, 29)))]
    ranged = Codec.build("audio-seanet", "rvq", network_kwargs=dict(channels=4, strides=[2, 4, 5, 8], latent_dim=8),
                         quantizer_kwargs=dict(codebook_size=256, num_levels=4)).eval()
    ranged.fit_entropy_tables([torch.rand(1, 1, 24000) * 2 - 1])
    out.append((ranged, ranged.compress(x_audio, "max")))
    # tiled files with a source record (44.1 kHz stereo in 3 chunks; an image in 2 x 2 tiles),
    # decoded through the file-level path that resamples back to the source rate
    wav = torch.rand(2, 44100) * 2 - 1
    out.append((ranged, compress_signal(wav, rate="max", model=ranged, sample_rate=44100, tile=9600, overlap=640).data))
    out.append((image, image.compress(torch.rand(1, 3, 40, 36), "max", tile=24, overlap=8)))
    # band-energy chunks after each tile's codes (range-coded steps under an integer table)
    from codec.envelope import BandEnergy

    counts = [1] * 33
    counts[15:18] = [40, 200, 40]
    enveloped = Codec.build("audio-seanet", "rvq", network_kwargs=dict(channels=4, strides=[2, 4, 5, 8], latent_dim=8),
                            quantizer_kwargs=dict(codebook_size=256, num_levels=4)).eval()
    enveloped.fit_entropy_tables([torch.rand(1, 1, 24000) * 2 - 1])
    enveloped.envelope = BandEnergy(24000, table=counts)
    out.append((enveloped, compress_signal(wav, rate="max", model=enveloped, sample_rate=44100, tile=9600, overlap=640,
                                           envelope=True).data))
    return out


def _mutate_bytes(data: bytes, rng: np.random.Generator) -> bytes:
    b = bytearray(data)
    for _ in range(int(rng.integers(1, 5))):
        op = int(rng.integers(5))
        i = int(rng.integers(len(b) + 1)) if b else 0
        if op == 0 and b:
            b[min(i, len(b) - 1)] ^= 1 << int(rng.integers(8))
        elif op == 1 and b:
            b[min(i, len(b) - 1)] = int(rng.integers(256))
        elif op == 2:
            b[i:i] = bytes(rng.integers(0, 256, int(rng.integers(1, 9)), dtype=np.uint8))
        elif op == 3 and b:
            del b[i : i + int(rng.integers(1, 9))]
        else:
            b = b[:i]
    return bytes(b)


def _mutate_reframed(data: bytes, rng: np.random.Generator) -> bytes:
    header, chunks = read_container(data)
    choice = rng.random()
    if choice < 0.25:  # edit the header record's bytes: the record parser sees them
        return _frame(FORMAT_VERSION, _mutate_bytes(encode_record(header), rng), chunks)
    if choice < 0.6:  # edit the header's values, keep it valid JSON
        text = json.dumps(header)
        mutated = _mutate_bytes(text.encode(), rng)
        try:
            header = json.loads(mutated.decode())
            if not isinstance(header, dict):
                header = {"x": header}
        except (UnicodeDecodeError, json.JSONDecodeError):
            key = list(header)[int(rng.integers(len(header)))]
            header[key] = [int(v) for v in rng.integers(-5, 1 << 40, int(rng.integers(0, 5)))]
    else:
        i = int(rng.integers(len(chunks)))
        chunks = list(chunks)
        chunks[i] = _mutate_bytes(chunks[i], rng)
    return write_container(header, chunks)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cases", type=int, default=10_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--hang-s", type=float, default=5.0)
    args = ap.parse_args()
    torch.set_num_threads(1)
    rng = np.random.default_rng(args.seed)
    pool = _codecs()
    outcomes = {"decoded": 0, "rejected": 0, "crash": 0, "hang": 0}
    crashes: list[str] = []
    slowest = 0.0
    t0 = time.time()
    for case in range(args.cases):
        codec, good = pool[case % len(pool)]
        data = _mutate_reframed(good, rng) if case % 2 else _mutate_bytes(good, rng)
        start = time.perf_counter()
        try:
            if case % len(pool) >= 3:  # the file-level path: source record checked, audio resampled back
                y, header = decompress(data, model=codec)
                expected = header["source"].get("frames") if codec.modality == "audio" else None
                if not torch.isfinite(y).all() or (expected is not None and y.shape[-1] != expected):
                    raise AssertionError("decoded signal is not finite or has the wrong length")
            else:
                y, header = codec.decompress(data)
                if not torch.isfinite(y).all() or list(y.shape) != header["shape"]:
                    raise AssertionError("decoded signal is not finite or has the wrong shape")
            outcomes["decoded"] += 1
        except (BitstreamError, ValueError):
            outcomes["rejected"] += 1
        except Exception as err:  # noqa: BLE001 - the point is to find these
            outcomes["crash"] += 1
            crashes.append(f"case {case}: {type(err).__name__}: {err}"[:200])
        dt = time.perf_counter() - start
        slowest = max(slowest, dt)
        if dt > args.hang_s:
            outcomes["hang"] += 1
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"cases": args.cases, **outcomes, "slowest_case_s": round(slowest, 4),
                      "peak_rss_mib": round(peak_mib, 1), "wall_s": round(time.time() - t0, 1)}, indent=2))
    for line in crashes[:20]:
        print(line)
    sys.exit(1 if outcomes["crash"] or outcomes["hang"] else 0)


if __name__ == "__main__":
    main()
