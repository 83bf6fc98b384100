"""The file-level library API: codec.load_model / compress_signal / decompress / files / tokens."""

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from PIL import Image

import codec
from codec.bitstream import BitstreamError, write_container
from codec.entropy import decode_tile
from codec.files import compress_file, decompress_file, read_vqc_header, tokenize_file
from codec.hub import ModelNotFound, list_models
from codec.io import InputError

GOLDEN = Path(__file__).parent / "golden"


@pytest.mark.parametrize("version", [2, 3, 4, 5])
def test_codec_golden_file_decodes_to_pinned_codes(version):
    # A change here is a format change: bump the .vqc version and add new golden files
    # (tests/golden/make_codec_golden.py, make_v3_golden.py ... make_v5_golden.py), keeping the old ones decodable.
    model = codec.load_model(GOLDEN / "tiny_audio_model")
    data = (GOLDEN / f"codec_v{version}.vqc").read_bytes()
    assert data[:5] == b"\x89VQC" + bytes([version])
    parsed = model.read_header(data)
    assert parsed.header["rate_point"] == "n2" and parsed.header["coding"] == "range"
    assert parsed.header["source"]["sample_rate"] == 44100 and len(parsed.chunks) == 2
    sizes = model.quantizer.alphabet_sizes(**parsed.point.kwargs)
    codes = [decode_tile(parsed.chunks[i], 2 * -(-(b - a) // 320), sizes, parsed.tables) for i, ((a, b),) in enumerate(parsed.grid)]
    assert np.array_equal(np.concatenate(codes), np.load(GOLDEN / "codec_v2_codes.npy"))
    signal, info = codec.decompress(data, model=model)
    assert signal.shape == (2, 44100) and info["sample_rate"] == 44100 and torch.isfinite(signal).all()


def test_golden_context_coded_file_still_decodes_to_the_same_codes():
    # Context tables (tile tag 2): the file and the tables of tests/golden/make_context_golden.py.
    from codec.entropy import CONTEXT

    model = codec.load_model(GOLDEN / "tiny_image_model")
    data = (GOLDEN / "context_v2.vqc").read_bytes()
    parsed = model.read_header(data)
    assert parsed.chunks[0][0] == CONTEXT and parsed.contexts is not None
    sizes = model.quantizer.alphabet_sizes(**parsed.point.kwargs)
    codes = decode_tile(parsed.chunks[0], 16 * 12, sizes, parsed.tables, grid=(1, 16, 12), contexts=parsed.contexts)
    assert np.array_equal(codes, np.load(GOLDEN / "context_v2_codes.npy"))
    image, info = codec.decompress(data, model=model)
    assert tuple(image.shape[-2:]) == (64, 48) and torch.isfinite(image).all()


def test_files_are_written_in_the_current_container_with_a_short_weights_hash():
    from codec.bitstream import FORMAT_VERSION, read_container
    from codec.model import HEADER_HASH_CHARS

    model = codec.load_model(GOLDEN / "tiny_audio_model")
    t = torch.arange(44100) / 44100
    wav = torch.stack([torch.sin(2 * torch.pi * 330 * t), torch.sin(2 * torch.pi * 550 * t)]) * 0.4
    out = codec.compress_signal(wav, rate="max", model=model, sample_rate=44100, source={"format": "WAV", "subtype": "PCM_16"},
                                tile=16000, overlap=1280)  # the input of codec_v2.vqc ... codec_v5.vqc
    assert out.data[4] == FORMAT_VERSION == 5
    header, _ = read_container(out.data)
    assert header == read_container((GOLDEN / "codec_v5.vqc").read_bytes())[0]
    assert "coding" not in header and "tiles" in header  # range coding is implied; two tiles are not
    # what the model implies: modality, sample rate, the shape (from the source record), the point's name
    assert not {"modality", "sample_rate", "shape"} & set(header) and header["rate_point"] == model.point_names().index("n2")
    assert header["model"]["sha256"] == model.weights_sha256()[:HEADER_HASH_CHARS]
    for short in (model.weights_sha256()[: HEADER_HASH_CHARS - 1], "0" * HEADER_HASH_CHARS):
        bad = {**header, "model": {**header["model"], "sha256": short}}
        with pytest.raises(BitstreamError, match="another model"):
            model.read_header(write_container(bad, read_container(out.data)[1]))


def test_a_one_tile_file_leaves_out_the_fields_a_reader_infers():
    from codec.bitstream import read_container
    from codec.model import complete_header

    model = codec.load_model(GOLDEN / "tiny_audio_model")
    wav = torch.sin(2 * torch.pi * 220 * torch.arange(12000) / 24000)[None] * 0.5
    out = codec.compress_signal(wav, rate="n2", model=model, sample_rate=24000)
    header, chunks = read_container(out.data)
    assert "coding" not in header and "tiles" not in header and len(chunks) == 1
    full = read_vqc_header(out.data, model)
    assert full == model.complete_header(header) and full["coding"] == "range" and full["rate_point"] == "n2"
    assert full["shape"] == [1, 1, 12000] and full["tiles"] == {"size": [12000], "overlap": [0]}
    assert complete_header(header) == {**header, "coding": "range"}  # without the model: no shape, so no tiling
    # the same file with the fields spelled out (as version 3 wrote them) decodes the same way
    spelled = write_container(full, chunks)
    assert model.read_header(spelled).header == model.read_header(out.data).header == full
    torch.testing.assert_close(codec.decompress(spelled, model=model)[0], codec.decompress(out.data, model=model)[0])


def test_a_version_5_header_leaves_to_the_model_only_what_it_restores():
    from codec.bitstream import read_container
    from codec.files import ModelUnavailable

    model = codec.load_model(GOLDEN / "tiny_audio_model")
    wav = torch.sin(2 * torch.pi * 220 * torch.arange(8000) / 16000)[None] * 0.5
    out = codec.compress_signal(wav, rate="n1", model=model, sample_rate=16000)
    header, chunks = read_container(out.data)
    assert header["rate_point"] == 0 and "shape" not in header and header["source"]["frames"] == 8000
    with pytest.raises(ModelUnavailable, match="not installed here"):
        read_vqc_header(out.data)  # tiny-audio-test is not installed: the header alone is incomplete
    full = read_vqc_header(out.data, model)
    assert (full["modality"], full["sample_rate"], full["shape"], full["rate_point"]) == ("audio", 24000, [1, 1, 12000], "n1")
    # without a source record the shape cannot be implied, so the file keeps it
    bare = write_container(model.read_header(model.compress(wav[None], "n1")).header, chunks)
    assert read_container(model.compress(wav[None], "n1"))[0]["shape"] == [1, 1, 8000]
    assert model.read_header(bare).header["shape"] == [1, 1, 8000]
    for index, match in ((2, "rate point index 2 out of range"), (True, "rate_point")):
        bad = write_container({**header, "rate_point": index}, chunks)
        with pytest.raises(BitstreamError, match=match):
            codec.decompress(bad, model=model)
    # a source record far longer than the payload can hold is refused before anything is decoded
    longer = write_container({**header, "source": {**header["source"], "frames": 10**8}}, chunks)
    with pytest.raises(BitstreamError, match="too short|exceeds|out of bounds"):
        model.read_header(longer)


@pytest.mark.parametrize("sample_rate,channels,frames", [(44100, 2, 44100), (8000, 1, 12345), (24000, 1, 1), (48000, 2, 30000)])
def test_audio_signals_come_back_at_their_rate_length_and_channels(model_dirs, sample_rate, channels, frames):
    model = codec.load_model(model_dirs["audio"])
    wav = torch.rand(channels, frames) - 0.5
    out = codec.compress_signal(wav, rate="max", model=model, sample_rate=sample_rate)
    y, info = codec.decompress(out.data, model=model)
    assert y.shape == (channels, frames) and info["sample_rate"] == sample_rate
    assert info["rate_point"] == out.point.name and out.real_rate == pytest.approx(8 * len(out.data) / 1000 / (frames / sample_rate))


def test_decompress_finds_the_model_from_the_header(model_dirs, monkeypatch):
    model = codec.load_model(model_dirs["audio"])
    data = codec.compress_signal(torch.rand(1, 5000) - 0.5, rate="n2", model=model, sample_rate=24000).data
    with pytest.raises(BitstreamError, match="not installed here"):
        codec.decompress(data)
    monkeypatch.setenv("VQCODEC_MODELS", str(model_dirs["root"]))
    assert {"audio-test", "image-test"} <= {m.name for m in list_models()}
    y, info = codec.decompress(data)
    assert y.shape == (1, 5000) and info["model"]["name"] == "audio-test"
    with pytest.raises(ModelNotFound, match="audio-test"):
        codec.load_model("no-such-model")


def test_a_file_from_other_weights_is_refused(model_dirs, tmp_path):
    model = codec.load_model(model_dirs["audio"])
    data = codec.compress_signal(torch.rand(1, 5000) - 0.5, rate="max", model=model, sample_rate=24000).data
    other = codec.Codec.load(model_dirs["audio"])
    with torch.no_grad():
        next(other.parameters()).add_(1e-3)
    other.save(tmp_path / "other", name="audio-test")
    with pytest.raises(BitstreamError, match="another model"):
        codec.decompress(data, model=tmp_path / "other")


def test_images_keep_size_mode_and_depth(model_dirs, media, tmp_path):
    for name, mode in (("photo.png", "RGB"), ("sub/grey.jpg", "L"), ("deep.png", "I;16")):
        src = media / name
        report, data = compress_file(src, tmp_path / "x.vqc", rate="max", model=model_dirs["image"], force=True)
        assert report.rate_point == "n2" and report.pixels and report.real_rate == pytest.approx(8 * len(data) / report.pixels)
        decompress_file(tmp_path / "x.vqc", tmp_path / "y.png", model=model_dirs["image"], force=True)
        a, b = Image.open(src), Image.open(tmp_path / "y.png")
        assert b.size == a.size and b.mode == mode


def test_audio_files_keep_rate_length_channels_and_sample_format(model_dirs, media, tmp_path):
    for name in ("tone.wav", "sub/phone.flac"):
        src = media / name
        compress_file(src, tmp_path / "a.vqc", rate="3kbps", model=model_dirs["audio"], force=True)
        out = tmp_path / ("b" + src.suffix)
        decompress_file(tmp_path / "a.vqc", out, model=model_dirs["audio"], force=True)
        a, b = sf.info(src), sf.info(out)
        assert (b.samplerate, b.channels, b.frames, b.subtype) == (a.samplerate, a.channels, a.frames, a.subtype)


def test_long_audio_reports_progress_chunk_by_chunk(model_dirs, tmp_path):
    src = tmp_path / "long.wav"
    sf.write(src, (np.random.default_rng(0).random(8000 * 25) - 0.5).astype(np.float32), 8000)  # 25 s: 3 blocks
    seen: dict[str, list[float]] = {"compress": [], "decompress": []}
    compress_file(src, tmp_path / "a.vqc", rate="max", model=model_dirs["audio"], progress=seen["compress"].append)
    decompress_file(tmp_path / "a.vqc", tmp_path / "b.wav", model=model_dirs["audio"], progress=seen["decompress"].append)
    for fractions in seen.values():
        assert len(fractions) >= 3 and fractions == sorted(fractions) and fractions[-1] == 1.0 and fractions[0] < 0.5
    assert sf.info(tmp_path / "b.wav").frames == 8000 * 25


def test_tokens_round_trip_through_the_library(model_dirs, media):
    tokens, source, model = tokenize_file(media / "tone.wav", rate="n3", model=model_dirs["audio"])
    assert tokens.codes.shape == (2, 3, 150) and tokens.codes.dtype == torch.int64  # 2 s at 75 frames/s
    y = codec.detokenize(tokens, model, source)
    assert y.shape == (2, 88200)
    tokens, source, model = tokenize_file(media / "photo.png", rate="max", model=model_dirs["image"])
    assert tokens.codes.shape == (2, 10, 14)  # (levels, ceil(37/4), ceil(53/4))
    assert codec.detokenize(tokens, model, source).shape == (3, 37, 53)
    bad = tokens.codes.clone()
    bad[0, 0, 0] = 99
    with pytest.raises(ValueError, match="out of range"):
        model.detokenize(type(tokens)(codes=bad, point=tokens.point, shape=tokens.shape, tiles=tokens.tiles))


def test_modality_mismatch_and_missing_inputs(model_dirs, media, tmp_path, monkeypatch):
    monkeypatch.setattr("codec.hub.BUNDLED_DIR", tmp_path / "no-bundled-models")
    with pytest.raises(InputError, match="cannot be coded by the image model"):
        compress_file(media / "tone.wav", tmp_path / "x.vqc", rate="max", model=model_dirs["image"])
    with pytest.raises(InputError, match="no such file"):
        compress_file(tmp_path / "none.wav", tmp_path / "x.vqc", rate="max", model=model_dirs["audio"])
    with pytest.raises(ModelNotFound, match="no bundled audio model"):
        compress_file(media / "tone.wav", tmp_path / "x.vqc", rate="max")
    assert not (tmp_path / "x.vqc").exists()


@pytest.mark.parametrize("version", [2, 3, 4])
def test_golden_file_with_band_energies_still_decodes_to_the_same_steps(tmp_path, version):
    # Band-energy chunks after each tile's codes (tests/golden/make_envelope_golden.py, make_v3_golden.py, make_v4_golden.py).
    import sys

    from codec.bitstream import BitstreamError

    sys.path.insert(0, str(GOLDEN))
    from make_envelope_golden import model_with_envelope

    model = model_with_envelope(tmp_path / "model")
    data = (GOLDEN / f"envelope_v{version}.vqc").read_bytes()
    parsed = model.read_header(data)
    assert parsed.header["envelope"] == "band-energy" and len(parsed.chunks) == len(parsed.envelope_chunks) == 2
    steps = [model.envelope.decode(c, 1, -(-(b - a) // 320) * 320)[0] for c, ((a, b),) in zip(parsed.envelope_chunks, parsed.grid)]
    assert np.array_equal(np.concatenate([s.numpy() for s in steps], -1), np.load(GOLDEN / "envelope_v2_steps.npy"))
    signal, _ = codec.decompress(data, model=model)
    assert signal.shape == (1, 36000) and torch.isfinite(signal).all()
    plain = codec.load_model(GOLDEN / "tiny_audio_model")  # the same weights without the envelope refuse it
    with pytest.raises(BitstreamError, match="side information"):
        codec.decompress(data, model=plain)
