"""Media I/O policies, safe outputs, tiles and the streaming resampler."""

import math

import numpy as np
import pytest
import soundfile as sf
import torch
from PIL import Image

from codec.io import (
    InputError,
    atomic_output,
    from_model_channels,
    modality_of,
    read_audio,
    read_image,
    to_model_channels,
    write_audio,
    write_bytes,
    write_image,
)
from codec.nets.audio import resample
from codec.tiling import StreamResampler, TileGrid


def test_modality_from_suffix():
    assert modality_of("a/b.PNG") == "image" and modality_of("x.flac") == "audio" and modality_of("x.txt") is None


def test_rgb_and_greyscale_round_trip(tmp_path):
    rgb = (np.random.default_rng(0).random((9, 13, 3)) * 255).astype(np.uint8)
    Image.fromarray(rgb).save(tmp_path / "c.png")
    x, meta = read_image(tmp_path / "c.png")
    assert x.shape == (1, 3, 9, 13) and meta == {"mode": "RGB", "bit_depth": 8, "format": "PNG"}
    write_image(tmp_path / "c2.png", x, meta)
    assert np.array_equal(np.asarray(Image.open(tmp_path / "c2.png")), rgb)

    grey = (np.arange(35).reshape(5, 7) * 7).astype(np.uint8)
    Image.fromarray(grey).save(tmp_path / "g.png")
    g, meta = read_image(tmp_path / "g.png")
    assert g.shape == (1, 1, 5, 7) and meta["mode"] == "L"
    three = to_model_channels(g, 3)
    assert three.shape == (1, 3, 5, 7)
    back = from_model_channels(three, meta)  # BT.601 luma of equal channels is the grey value
    write_image(tmp_path / "g2.png", back, meta)
    out = Image.open(tmp_path / "g2.png")
    assert out.mode == "L" and np.array_equal(np.asarray(out), grey)


def test_16_bit_greyscale_keeps_its_precision(tmp_path):
    data = (np.arange(64).reshape(8, 8) * 1000 + 7).astype(np.uint16)
    Image.fromarray(data).save(tmp_path / "d.png")
    x, meta = read_image(tmp_path / "d.png")
    assert meta["bit_depth"] == 16 and x.shape == (1, 1, 8, 8)
    assert torch.allclose(x[0, 0], torch.from_numpy(data / 65535.0).float())
    write_image(tmp_path / "d2.png", x, meta)
    assert np.array_equal(np.asarray(Image.open(tmp_path / "d2.png")), data)


def test_alpha_policies(tmp_path):
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[..., 0] = 200
    rgba[..., 3] = 255
    Image.fromarray(rgba, "RGBA").save(tmp_path / "opaque.png")
    x, _ = read_image(tmp_path / "opaque.png")  # an unused alpha channel is dropped silently
    assert x.shape == (1, 3, 4, 4)
    rgba[..., 3] = 0
    Image.fromarray(rgba, "RGBA").save(tmp_path / "clear.png")
    with pytest.raises(InputError, match="transparency.*--alpha"):
        read_image(tmp_path / "clear.png")
    dropped, _ = read_image(tmp_path / "clear.png", alpha="drop")
    assert torch.allclose(dropped[0, 0], torch.full((4, 4), 200 / 255))
    flat, _ = read_image(tmp_path / "clear.png", alpha="flatten")
    assert torch.allclose(flat, torch.ones_like(flat))  # fully transparent over white


def test_exif_orientation_is_applied(tmp_path):
    img = Image.new("RGB", (6, 2), (255, 0, 0))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    img.save(tmp_path / "r.jpg", exif=exif)
    x, _ = read_image(tmp_path / "r.jpg")
    assert x.shape == (1, 3, 6, 2)


def test_palette_and_bad_images(tmp_path):
    Image.new("P", (3, 3)).save(tmp_path / "p.gif")
    assert read_image(tmp_path / "p.gif")[0].shape == (1, 3, 3, 3)
    (tmp_path / "bad.png").write_bytes(b"not an image")
    with pytest.raises(InputError, match="not an image"):
        read_image(tmp_path / "bad.png")
    with pytest.raises(InputError, match="no such file"):
        read_image(tmp_path / "missing.png")
    png = (tmp_path / "c.png")
    Image.new("RGB", (40, 40)).save(png)
    (tmp_path / "cut.png").write_bytes(png.read_bytes()[:60])
    with pytest.raises(InputError):
        read_image(tmp_path / "cut.png")


@pytest.mark.parametrize("suffix,subtype", [(".wav", "PCM_16"), (".flac", "PCM_24"), (".wav", "FLOAT"), (".ogg", "VORBIS")])
def test_audio_round_trip_keeps_rate_channels_length_and_format(tmp_path, suffix, subtype):
    rng = np.random.default_rng(1)
    wav = (rng.random((2, 4410)) - 0.5).astype(np.float32)
    sf.write(tmp_path / f"a{suffix}", wav.T, 22050, subtype=subtype)
    x, meta = read_audio(tmp_path / f"a{suffix}")
    assert x.shape == (2, 4410) and meta["sample_rate"] == 22050 and meta["subtype"] == subtype
    _, frames = write_audio(tmp_path / f"b{suffix}", [x[:, :1000], x[:, 1000:]], 22050, 2, meta)
    info = sf.info(tmp_path / f"b{suffix}")
    assert frames == 4410 and info.frames == 4410 and info.subtype == subtype and info.samplerate == 22050


def test_bad_audio(tmp_path):
    sf.write(tmp_path / "empty.wav", np.zeros((0, 1)), 16000)
    with pytest.raises(InputError, match="empty audio"):
        read_audio(tmp_path / "empty.wav")
    bad = np.zeros((100, 1), np.float32)
    bad[5] = np.nan
    sf.write(tmp_path / "nan.wav", bad, 16000, subtype="FLOAT")
    with pytest.raises(InputError, match="NaN"):
        read_audio(tmp_path / "nan.wav")
    (tmp_path / "junk.wav").write_bytes(b"RIFF" + b"\0" * 40)
    with pytest.raises(InputError, match="not an audio file"):
        read_audio(tmp_path / "junk.wav")


def test_atomic_output_never_overwrites_and_never_leaves_partial_files(tmp_path):
    target = tmp_path / "out.bin"
    write_bytes(target, b"first")
    with pytest.raises(FileExistsError, match="--force"):
        write_bytes(target, b"second")
    assert target.read_bytes() == b"first"
    write_bytes(target, b"second", force=True)
    assert target.read_bytes() == b"second"
    with pytest.raises(RuntimeError):
        with atomic_output(tmp_path / "new.bin") as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("fails midway")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.bin"]


@pytest.mark.parametrize("size,tile,overlap,stride", [((1000,), 300, 20, 10), ((70, 50), 32, 8, 4), ((5,), 100, 10, 1), ((97, 33), 16, 8, 8)])
def test_tile_windows_sum_to_one(size, tile, overlap, stride):
    grid = TileGrid.plan(size, tile, overlap, stride)
    total = torch.zeros(size)
    for spans in grid:
        w = grid.window(spans)
        total[tuple(slice(a, b) for a, b in spans)] += 1.0 if w is None else w
        assert all(a % stride == 0 for a, _ in spans)
    assert torch.allclose(total, torch.ones(size), atol=1e-6)
    assert len(grid) == math.prod(len(grid.starts(a)) for a in range(len(size)))


@pytest.mark.parametrize("rates", [(44100, 24000), (8000, 24000), (24000, 48000), (22050, 24000), (24000, 24000)])
def test_streaming_resampler_matches_whole_signal_resampling(rates):
    x = torch.randn(2, 30_000)
    whole = resample(x, *rates)
    r = StreamResampler(*rates, block_seconds=0.2)
    pieces, pos, rng = [], 0, np.random.default_rng(0)
    while pos < x.shape[-1]:
        n = int(rng.integers(1, 5000))
        pieces.append(r.feed(x[:, pos : pos + n]))
        pos += n
    pieces.append(r.flush())
    streamed = torch.cat(pieces, dim=-1)
    assert streamed.shape == whole.shape and torch.allclose(streamed, whole, atol=1e-5)
    assert torch.allclose(StreamResampler(*rates, block_seconds=0.3)(x), whole, atol=1e-5)
