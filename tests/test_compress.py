"""Codec.compress / decompress through the real .vqc format."""

import contextlib
import json
import math
import warnings

import numpy as np
import pytest
import torch

from codec.bitstream import BitstreamError, read_container, write_container
from codec.model import Codec, RateError, RateWarning

AUDIO_NET = dict(channels=4, strides=[2, 4, 5, 8], latent_dim=8)
IMAGE_NET = dict(channels=8, channel_mult=[1, 2], num_res_blocks=1, factor=4, latent_dim=8, attention=False)


def audio_codec(**kw):
    return Codec.build("audio-seanet", "rvq", network_kwargs=AUDIO_NET,
                       quantizer_kwargs=dict(codebook_size=256, num_levels=4, **kw)).eval()


@pytest.mark.parametrize("shape", [(1, 1, 12345), (1, 2, 999), (1, 1, 1)])
@pytest.mark.parametrize("rate", ["min", "n2", "max"])
def test_audio_round_trip_matches_encode_decode(shape, rate):
    codec = audio_codec()
    x = torch.rand(*shape) * 2 - 1
    data = codec.compress(x, rate)
    y, header = codec.decompress(data)
    assert y.shape == x.shape and header["rate_point"] == codec.select_rate(rate).name
    assert torch.equal(y, codec.decode(codec.encode(x, rate)))


@pytest.mark.parametrize("request_kbps", [1.3, 2.0, 3.0, 4.0, 10.0])
def test_a_rate_target_is_a_promise_about_the_file(request_kbps):
    codec = audio_codec()
    x = torch.rand(1, 2, 24000 * 3) * 2 - 1  # 3 s of stereo: the header costs ~0.8 kbps here
    out = codec.compress_detailed(x, f"{request_kbps}kbps")
    real = 8 * len(out.data) / 3 / 1000
    assert out.real_rate == pytest.approx(real)
    if out.point.name != "n1":
        assert real <= request_kbps
    selected = codec.select_rate(f"{request_kbps}kbps", channels=2)
    if out.point.nominal < selected.nominal:
        assert out.notes and "stepped down" in out.notes[0]
    elif out.point != selected:  # refined: more levels of the same codebook, and still within the target
        assert out.point.kwargs["num_levels"] > selected.kwargs["num_levels"] and real <= request_kbps
    if real > request_kbps:  # only when even the lowest point cannot fit
        assert out.point.name == "n1" and "too short" in out.notes[-1]
    with pytest.warns(RateWarning) if out.notes else contextlib.nullcontext():
        codec.compress(x, f"{request_kbps}kbps")
    with pytest.raises(RateError, match=r"1kbps for 2 channels \(0.5 kbps each\) is below the lowest rate"):  # n1: 0.6 kbps each
        codec.compress(x, "1kbps")


def test_a_rate_target_fills_its_budget_with_more_levels_of_the_same_codebook():
    codec = Codec.build("audio-seanet", "rvq", network_kwargs=AUDIO_NET, quantizer_kwargs=dict(
        codebook_size=64, num_levels=8, quantizer="raq", min_codebook_size=16, max_codebook_size=64,
        rate_points=[16, 64], forcing="official")).eval()
    x = torch.rand(1, 1, 24000 * 4) * 2 - 1
    real = {p.name: codec.compress_detailed(x, p.name).real_rate for p in codec.rate_points()}
    # the model's measured rates overstate this signal's by 40 %: selection alone would leave budget unused
    codec.measured_rates = {name: 1.4 * r for name, r in real.items()}
    codec.target_points = [name for name in real if name.startswith("k64-")]
    target = real["k64-n4"] + 0.1
    selected = codec.select_rate(f"{target}kbps")
    assert selected.name == "k64-n2"
    with warnings.catch_warnings():
        warnings.simplefilter("error", RateWarning)  # filling is not a step down: no warning
        out = codec.compress_detailed(x, f"{target}kbps")
        codec.compress(x, f"{target}kbps")
    assert out.point.name == "k64-n4" and out.real_rate <= target and not out.notes
    assert out.real_rate == pytest.approx(real["k64-n4"])
    y, header = codec.decompress(out.data)
    assert header["rate_point"] == "k64-n4" and torch.equal(y, codec.decode(codec.encode(x, "k64-n4")))
    assert [p.name for p in codec._refinements(codec.select_rate("k16-n6"))] == ["k16-n7", "k16-n8"]
    # a point name is not a target: nothing is added
    assert codec.compress_detailed(x, "k64-n2").point.name == "k64-n2"


def test_tiny_input_is_written_at_the_lowest_point_with_a_warning():
    codec = audio_codec()
    with pytest.warns(RateWarning) as caught:
        data = codec.compress(torch.rand(1, 1, 100) * 2 - 1, "1.5kbps")
    assert "stepped down to n1" in str(caught[0].message) and "header alone" in str(caught[-1].message)
    assert codec.decompress(data)[1]["rate_point"] == "n1"


@pytest.mark.parametrize("shape,tile,overlap", [((1, 1, 50_000), 16_000, 640), ((1, 2, 33_333), 8_000, 320), ((1, 1, 9_000), 2_880, 1_280)])
def test_long_audio_is_coded_in_independent_overlapping_chunks(shape, tile, overlap):
    codec = audio_codec()
    t = torch.arange(shape[-1]) / 24000
    x = (0.5 * torch.sin(2 * math.pi * 220 * t)).expand(shape).clone()
    data = codec.compress(x, "max", tile=tile, overlap=overlap)
    header, chunks = read_container(data)
    grid = codec.tile_grid(shape, tile, overlap)
    assert len(chunks) == len(grid) > 1 and header["tiles"] == {"size": [tile], "overlap": [overlap]}
    y, _ = codec.decompress(data)
    streamed = torch.cat(list(codec.decompress_stream(data)[1]), dim=-1)
    assert y.shape == x.shape and torch.allclose(y, streamed, atol=1e-6)
    # away from the overlaps every sample is exactly what its own chunk decodes to
    (a, b), = list(grid)[1]
    alone = codec.decode(codec.encode(x[..., a:b], "max"))
    inner = slice(a + overlap, b - overlap) if b < shape[-1] else slice(a + overlap, b)
    assert torch.allclose(y[..., inner], alone[..., inner.start - a : inner.stop - a], atol=1e-6)


def test_cross_fade_leaves_no_seam():
    """A constant input: whatever each chunk decodes to, the blend never leaves the range of its parts."""
    codec = audio_codec()
    x = torch.full((1, 1, 20_000), 0.3)
    data = codec.compress(x, "max", tile=6_400, overlap=960)
    y, _ = codec.decompress(data)
    pieces = [codec.decode(codec.encode(x[..., a:b], "max")) for (a, b), in codec.tile_grid(x.shape, 6_400, 960)]
    lo = min(float(p.min()) for p in pieces)
    hi = max(float(p.max()) for p in pieces)
    assert lo - 1e-6 <= float(y.min()) and float(y.max()) <= hi + 1e-6


def test_large_images_are_tiled_and_blend_back():
    codec = Codec.build("image-resnet", "vq", network_kwargs=IMAGE_NET, quantizer_kwargs=dict(codebook_size=32)).eval()
    x = torch.rand(1, 3, 70, 45)
    data = codec.compress(x, "max", tile=32, overlap=8)
    assert len(read_container(data)[1]) == 3 * 2
    y, header = codec.decompress(data)
    assert y.shape == x.shape and header["tiles"] == {"size": [32, 32], "overlap": [8, 8]}
    assert torch.equal(y[..., :24, :24], codec.decode(codec.encode(x[..., :32, :32]))[..., :24, :24])


@pytest.mark.parametrize("quantizer,kw", [("vq", {}), ("rvq", {"num_levels": 2}), ("fsq", {}),
                                          ("raq", {"min_codebook_size": 4, "max_codebook_size": 64, "forcing": "official"})])
def test_image_round_trip_odd_sizes_every_point(quantizer, kw):
    codec = Codec.build("image-resnet", quantizer, network_kwargs=IMAGE_NET,
                        quantizer_kwargs=dict(codebook_size=32, **kw)).eval()
    x = torch.rand(1, 3, 13, 7)
    for point in codec.rate_points():
        y, _ = codec.decompress(codec.compress(x, point.name))
        assert torch.equal(y, codec.decode(codec.encode(x, point.name)))


@pytest.mark.parametrize("coding", ["packed", "range"])
def test_every_point_honours_its_nominal_rate(coding):
    """Payload <= nominal bits + 2 bytes per tile (tag + rounding), whatever the data: range
    coding falls back to packing where the tables fit the data badly."""
    codec = audio_codec()
    if coding == "range":  # tables from different data: some tiles may cost more range-coded
        codec.fit_entropy_tables([torch.sin(torch.arange(24000) / 3.0).reshape(1, 1, -1) * 0.9])
    x = torch.rand(1, 1, 24000 * 2) * 2 - 1  # 2 s, in 3 tiles
    for point in codec.rate_points():
        data = codec.compress(x, point.name, tile=16000, overlap=640)
        header_bytes = len(data) - sum(len(c) for c in read_container(data)[1])
        payload_bits = 8 * (len(data) - header_bytes)
        frames = sum(math.ceil((b - a) / 320) for (a, b), in codec.tile_grid(x.shape, 16000, 640))
        assert payload_bits <= frames * point.bits_per_token + 16 * 3
        assert header_bytes < 150


def test_entropy_tables_shrink_files_and_survive_save_load(tmp_path):
    codec = audio_codec(init="kmeans")
    train = [torch.sin(torch.arange(24000) / (5 + i)).reshape(1, 1, -1) * 0.5 for i in range(3)]
    codec.train()(torch.cat(train))
    codec.eval()
    x = train[0]
    packed = codec.compress(x, "max")
    codec.fit_entropy_tables(train)
    coded = codec.compress(x, "max")
    assert len(coded) < len(packed)
    codec.save(tmp_path / "m")
    loaded = Codec.load(tmp_path / "m")
    assert set(loaded.entropy_tables) == set(codec.entropy_tables)
    y, _ = loaded.decompress(coded)
    assert torch.equal(y, codec.decompress(coded)[0])


def test_bad_inputs_and_foreign_files():
    codec = audio_codec()
    with pytest.raises(ValueError, match="NaN"):
        codec.compress(torch.full((1, 1, 100), float("nan")))
    with pytest.raises(ValueError, match="one signal"):
        codec.compress(torch.zeros(2, 1, 100))
    data = codec.compress(torch.rand(1, 1, 3000) * 2 - 1, "n2")
    other = audio_codec()
    with pytest.raises(BitstreamError, match="another model"):
        other.decompress(data)
    image = Codec.build("image-resnet", "vq", network_kwargs=IMAGE_NET, quantizer_kwargs=dict(codebook_size=16))
    with pytest.raises(BitstreamError, match="another model .*, not by this image model"):
        image.decompress(data)  # a version-5 header leaves the modality to the model
    spelled = write_container(codec.read_header(data).header, read_container(data)[1])  # as versions 1-4 wrote it
    with pytest.raises(BitstreamError, match="modality 'audio' cannot be decoded by this image model"):
        image.decompress(spelled)
    with pytest.raises(BitstreamError):
        codec.decompress(data[:-5])
    with pytest.raises(BitstreamError, match="bad magic"):
        codec.decompress(b"hello world")


def test_random_corruptions_with_valid_checksums_fail_cleanly():
    """Mutate payload bytes and recompute the CRCs: the parser and decoders behind them must cope."""

    codec = audio_codec()
    good = codec.compress(torch.rand(1, 1, 4000) * 2 - 1, "max")
    header, chunks = read_container(good)
    rng = np.random.default_rng(0)
    for _ in range(50):
        bad_chunks = [bytearray(c) for c in chunks]
        c = bad_chunks[int(rng.integers(len(bad_chunks)))]
        if rng.random() < 0.5 and len(c):
            c[int(rng.integers(len(c)))] ^= 0xFF
        else:
            del c[int(rng.integers(len(c) + 1)):]
        try:
            y, _ = codec.decompress(write_container(header, [bytes(b) for b in bad_chunks]))
            assert torch.isfinite(y).all()
        except BitstreamError:
            pass


@pytest.mark.parametrize("field,value", [("model", []), ("rate_point", [1]), ("modality", None), ("coding", "range"),
                                         ("coding", ["packed"]), ("shape", [1, 1, -5]), ("shape", [1, 1, 10**12]),
                                         ("tiles", {"size": [0], "overlap": [0]}), ("tiles", {"size": [1000], "overlap": [600]}),
                                         ("tiles", {"size": [10], "overlap": [0]}), ("sample_rate", 16000), ("source", [1])])
def test_header_fields_of_the_wrong_type_are_rejected(field, value):
    """Found by bench/fuzz_bitstream.py: re-framed headers with valid CRCs but wrong field types."""

    codec = audio_codec()
    header, chunks = read_container(codec.compress(torch.rand(1, 1, 3000) * 2 - 1, "n2"))
    header[field] = value
    with pytest.raises(BitstreamError):
        codec.decompress(write_container(header, chunks))


def test_an_image_header_claiming_other_channels_is_rejected():
    """Found by bench/fuzz_bitstream.py: a re-framed image header with 2 channels for a 3-channel model."""

    codec = Codec.build("image-resnet", "vq", network_kwargs=IMAGE_NET, quantizer_kwargs=dict(codebook_size=64)).eval()
    header, chunks = read_container(codec.compress(torch.rand(1, 3, 20, 24)))
    for channels in (1, 2, 4):
        header["shape"][1] = channels
        with pytest.raises(BitstreamError, match="image channels"):
            codec.decompress(write_container(header, chunks))


@pytest.mark.parametrize("coding", ["packed", "range"])
def test_a_header_claiming_more_than_the_payload_holds_is_refused_before_decoding(coding):
    """A 1 kB file must not make the decoder allocate gigabytes: the claimed length is checked against the payload."""

    codec = audio_codec()
    if coding == "range":
        codec.fit_entropy_tables([torch.rand(1, 1, 24000) * 2 - 1])
    header, chunks = read_container(codec.compress(torch.rand(1, 1, 3000) * 2 - 1, "max"))
    header["shape"] = [1, 2, 2**31]
    header["tiles"] = {"size": [2**24], "overlap": [0]}
    tiles = -(-(2**31) // 2**24)
    with pytest.raises(BitstreamError, match="too short"):
        codec.decompress(write_container(header, [chunks[0]] * tiles))


def _blocky(seed, size=64, block=16):
    g = torch.Generator().manual_seed(seed)
    small = torch.rand(1, 3, size // block, size // block, generator=g)
    return torch.nn.functional.interpolate(small, scale_factor=block, mode="nearest")


def _blocky_codec():
    """A small image codec whose codebooks have seen one batch of blocky images (k-means init)."""
    codec = Codec.build("image-resnet", "rvq", network_kwargs=IMAGE_NET,
                        quantizer_kwargs=dict(codebook_size=16, num_levels=2, init="kmeans"))
    train = [_blocky(i) for i in range(8)]
    codec.train()(torch.cat(train))
    return codec.eval(), train


def test_context_tables_shrink_image_files_exactly_and_survive_save_load(tmp_path):
    from safetensors import safe_open

    from codec.entropy import CONTEXT

    codec, train = _blocky_codec()
    x = _blocky(100)
    codec.fit_entropy_tables(train, contexts=False)
    plain = codec.compress(x, "max")
    codec.fit_entropy_tables(train)
    assert codec.context_tables, "neighbouring codes of blocky images are predictable"
    coded = codec.compress(x, "max")
    assert read_container(coded)[1][0][0] == CONTEXT and len(coded) < len(plain)
    assert torch.equal(codec.decompress(coded)[0], codec.decompress(plain)[0])
    codec.save(tmp_path / "m")
    loaded = Codec.load(tmp_path / "m")
    assert set(loaded.context_tables) == set(codec.context_tables)
    for key, cc in codec.context_tables.items():
        assert all(np.array_equal(t.rows, loaded.context_tables[key].tables[s].rows) for s, t in cc.tables.items())
    assert torch.equal(loaded.decompress(coded)[0], codec.decompress(coded)[0])
    # rate points sharing a level's codes share its tables: stored once
    with safe_open(str(tmp_path / "m" / "entropy.safetensors"), framework="pt") as f:
        stored = [k for k in f.keys() if k.startswith("context/")]
    used = sum(len(cc.tables) for cc in codec.context_tables.values())
    assert len(stored) <= used
    with safe_open(str(tmp_path / "m" / "entropy.safetensors"), framework="pt") as f:
        freq = [k for k in f.keys() if k.startswith("table/")]
    assert len(freq) < len(codec.entropy_tables) == len(loaded.entropy_tables)  # n1's level 0 is n2's level 0
    assert all(np.array_equal(t.counts, loaded.entropy_tables[k].counts) for k, t in codec.entropy_tables.items())


def test_bucketed_context_tables_survive_save_load_and_decode_alike(tmp_path):
    codec, train = _blocky_codec()
    codec.fit_entropy_tables(train, context_buckets=4)
    bucketed = [t for cc in codec.context_tables.values() for t in cc.tables.values() if t.buckets is not None]
    assert bucketed and all(t.rows.shape[0] == 5 and t.num_contexts == 16 for t in bucketed)
    x = _blocky(100)
    coded = codec.compress(x, "max")
    codec.save(tmp_path / "m")
    loaded = Codec.load(tmp_path / "m")
    for key, cc in codec.context_tables.items():
        for s, t in cc.tables.items():
            back = loaded.context_tables[key].tables[s]
            assert np.array_equal(t.rows, back.rows)
            assert (t.buckets is None and back.buckets is None) or np.array_equal(t.buckets, back.buckets)
    assert torch.equal(loaded.decompress(coded)[0], codec.decompress(coded)[0])
    assert torch.equal(loaded.decompress(loaded.compress(x, "max"))[0], codec.decompress(coded)[0])


def test_a_damaged_context_index_is_refused(tmp_path):
    from safetensors.torch import load_file, save_file

    codec = Codec.build("image-resnet", "rvq", network_kwargs=IMAGE_NET,
                        quantizer_kwargs=dict(codebook_size=16, num_levels=2)).eval()
    codec.fit_entropy_tables([_blocky(i) for i in range(6)])
    codec.save(tmp_path / "m")
    path = tmp_path / "m" / "entropy.safetensors"
    tensors = load_file(str(path))
    for meta in ({"contexts": "{not json"}, {"contexts": '{"max/0": {"prev0": "context/missing"}}'}, {"contexts": "[1]"},
                 {"contexts": '{"max/0": {"prev0": ["context/missing", "context/missing", "x"]}}'},
                 {"contexts": '{"max/0": {"prev0": 3}}'}):
        save_file(tensors, str(path), metadata=meta)
        with pytest.raises(ValueError, match="context index"):
            Codec.load(tmp_path / "m")
    for meta in ({"tables": "{not json"}, {"tables": '{"max/0": "table/missing"}'}, {"tables": "[1]"}):
        save_file(tensors, str(path), metadata=meta)
        with pytest.raises(ValueError, match="table index"):
            Codec.load(tmp_path / "m")


def test_a_beam_searched_file_decodes_with_any_reader_and_codes_closer_to_the_latent(tmp_path):
    codec = Codec.build("audio-seanet", "rvq", network_kwargs=AUDIO_NET, quantizer_kwargs=dict(
        codebook_size=16, num_levels=4, init="kmeans", quantizer_dropout=0.0))
    codec.train()(torch.rand(2, 1, 6000) * 2 - 1)  # k-means codebooks: beams differ from greedy
    codec.eval()
    x = torch.rand(1, 1, 24000) * 2 - 1
    with torch.no_grad():
        tokens, _, _ = codec._tokens(x)
    q = codec.quantizer
    greedy, beam = codec.encode(x, "n3"), codec.encode(x, "n3", beam_size=8)
    assert not torch.equal(greedy.codes, beam.codes)
    error = {name: float((q.decode(e.codes.reshape(1, -1, 3)) - tokens).square().sum())
             for name, e in (("greedy", greedy), ("beam", beam))}
    assert error["beam"] < error["greedy"]
    data = codec.compress(x, "n3", beam_size=8)
    codec.beam_size = 1  # the reader needs no beam: the file holds the codes
    y, header = codec.decompress(data)
    assert header["rate_point"] == "n3" and torch.equal(y, codec.decode(beam))
    codec.beam_size = 8  # the model's default beam is what compress uses without an argument
    assert codec.compress(x, "n3") == data
    assert torch.equal(codec.tokenize(x, "n3").codes.squeeze(0).T, beam.codes.reshape(-1, 3))
    # the default travels with the model folder
    codec.save(tmp_path / "m")
    loaded = Codec.load(tmp_path / "m")
    assert loaded.beam_size == 8 and torch.equal(loaded.encode(x, "n3").codes, beam.codes)
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    assert config["beam_size"] == 8
    for bad in (0, 65, 2.5, True):
        (tmp_path / "m" / "config.json").write_text(json.dumps({**config, "beam_size": bad}))
        with pytest.raises(ValueError, match="beam_size"):
            Codec.load(tmp_path / "m")
