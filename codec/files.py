"""File-level compress / decompress / tokenize: what the CLI does, as a library.

These functions join :mod:`codec.io` (reading and writing media safely), :mod:`codec.hub`
(finding models) and :class:`~codec.model.Codec` (the ``.vqc`` format):

* audio is resampled to the model's rate on the way in and back to the source's rate, length,
  channel count and sample format on the way out (block by block: memory stays bounded);
* greyscale images go through an RGB model as three equal channels and come back greyscale;
  16-bit greyscale comes back 16-bit;
* the model of a ``.vqc`` file is found from its header (name + weights hash) unless given.

Example::

    import codec
    data = codec.compress_signal(wav, sample_rate=44100, rate="6kbps", model="audio-v1").data
    signal, info = codec.decompress(data)      # (C, T) at 44.1 kHz, and the header
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import torch
from torch import Tensor

from codec.bitstream import BitstreamError
from codec.hub import default_model_name, load_model
from codec.io import (
    InputError,
    from_model_channels,
    modality_of,
    open_audio,
    read_audio,
    read_image,
    to_model_channels,
    write_audio,
    write_bytes,
    write_image,
)
from codec.model import Codec, Compressed, Tokens, header_needs_model, read_vqc
from codec.tiling import StreamResampler

__all__ = [
    "FileReport",
    "compress_signal",
    "compress_blocks",
    "compress_file",
    "decompress",
    "decompress_file",
    "decompress_blocks",
    "model_for",
    "ModelUnavailable",
    "read_vqc_header",
    "tokenize_file",
    "detokenize",
]

MAX_VQC_BYTES = 1 << 31


@dataclass
class FileReport:
    """What one file operation did (the CLI's summary rows)."""

    input: str
    output: str
    modality: str
    model: str
    rate_point: str
    bytes_in: int
    bytes_out: int
    real_rate: float
    unit: str
    duration_s: float | None = None  # audio
    pixels: int | None = None  # images
    elapsed_s: float = 0.0
    notes: list[str] = field(default_factory=list)
    mean_levels: float | None = None  # a variable depth: residual levels per latent position


def _model(model: str | Path | Codec | None, modality: str, device: str) -> Codec:
    if isinstance(model, Codec):
        return model
    return load_model(model if model is not None else default_model_name(modality), device=device)


def compress_signal(
    x: Tensor,
    *,
    rate: str,
    model: str | Path | Codec | None = None,
    modality: str | None = None,
    sample_rate: int | None = None,
    source: dict[str, Any] | None = None,
    device: str = "cpu",
    tile: int | None = None,
    overlap: int | None = None,
    beam_size: int | None = None,
    refine_steps: int | None = None,
    envelope: bool | None = None,
    variable_depth: bool = True,
) -> Compressed:
    """A signal -> a ``.vqc`` file.

    Audio ``(C, T)`` at ``sample_rate`` (resampled to the model's); images ``(C, H, W)`` or
    ``(1, C, H, W)`` in ``[0, 1]`` with C = 1 or 3. ``source`` is stored in the header and drives
    restoring the original format (the file helpers fill it from the input file). ``beam_size``
    is the residual code search (default the model's :attr:`~codec.model.Codec.beam_size`),
    ``refine_steps`` its analysis-by-synthesis refinement (default the model's
    :attr:`~codec.model.Codec.refine_steps`; :mod:`codec.refine`). ``envelope``: audio band-energy
    side information (default the model's :attr:`~codec.model.Codec.envelope_default`;
    :mod:`codec.envelope`); images have none (``True`` raises). ``variable_depth``: a rate
    target's budget spent position by position (see :meth:`~codec.model.Codec.compress_detailed`).
    """
    modality = modality or (model.modality if isinstance(model, Codec) else ("audio" if sample_rate else "image"))
    codec = _model(model, modality, device)
    if codec.modality != modality:
        raise InputError(f"a {modality} input cannot be coded by the {codec.modality} model {codec.name or ''}".strip())
    if modality == "audio":
        if sample_rate is None:
            raise ValueError("audio needs its sample_rate")
        wav = x.reshape(-1, x.shape[-1]) if x.dim() != 2 else x
        if wav.shape[-1] < 1:
            raise InputError("empty audio (no samples)")
        source = {**(source or {}), "sample_rate": int(sample_rate), "channels": int(wav.shape[0]), "frames": int(wav.shape[-1])}
        step = max(1, int(sample_rate) * 10)
        return compress_blocks(wav.split(step, dim=-1), source, rate=rate, model=codec, tile=tile, overlap=overlap,
                               beam_size=beam_size, refine_steps=refine_steps, envelope=envelope,
                               variable_depth=variable_depth)
    if envelope:
        raise InputError(f"band-energy side information is for audio; the image model{' ' + codec.name if codec.name else ''} has none")
    img = x if x.dim() == 4 else x[None]
    source = {"mode": "L" if img.shape[1] == 1 else "RGB", "bit_depth": 8, **(source or {})}
    img = to_model_channels(img.float(), int(getattr(codec.encoder, "in_channels", img.shape[1])))
    return codec.compress_detailed(img, rate, metadata=source, tile=tile, overlap=overlap, beam_size=beam_size,
                                   refine_steps=refine_steps, variable_depth=variable_depth)


def compress_blocks(
    blocks: Iterable[Tensor],
    source: dict[str, Any],
    *,
    rate: str,
    model: str | Path | Codec | None = None,
    device: str = "cpu",
    tile: int | None = None,
    overlap: int | None = None,
    beam_size: int | None = None,
    refine_steps: int | None = None,
    envelope: bool | None = None,
    variable_depth: bool = True,
) -> Compressed:
    """Audio arriving as blocks ``(C, n)`` at ``source["sample_rate"]`` -> a ``.vqc`` file.

    Resampled to the model's rate block by block and encoded chunk by chunk: memory does not
    grow with the duration. ``source`` (sample rate, channels, and the rest of the source
    record) is stored in the header after the last block, so ``frames`` may be filled in late.
    The other options as in :func:`compress_signal`.
    """
    codec = _model(model, "audio", device)
    if codec.modality != "audio":
        raise InputError(f"an audio input cannot be coded by the {codec.modality} model {codec.name or ''}".strip())
    resampler = StreamResampler(int(source["sample_rate"]), int(codec.sample_rate or source["sample_rate"]))
    channels = int(source["channels"])

    def resampled() -> Iterator[Tensor]:
        for block in blocks:
            y = resampler.feed(block.reshape(channels, -1).float())
            if y.shape[-1]:
                yield y
        y = resampler.flush()
        if y.shape[-1]:
            yield y

    return codec.compress_stream(resampled(), channels, rate, metadata=source, tile=tile, overlap=overlap, beam_size=beam_size,
                                 refine_steps=refine_steps, envelope=envelope, variable_depth=variable_depth)


class ModelUnavailable(BitstreamError):
    """The model a ``.vqc`` file names is not installed here, or the file names none."""


def read_vqc_header(data: bytes, model: str | Path | Codec | None = None, device: str = "cpu") -> dict[str, Any]:
    """The validated, completed header of a ``.vqc`` file.

    The fields a writer may leave out are filled in (:func:`codec.model.complete_header`). A
    version-5 header also leaves out what its model implies (modality, sample rate, the audio
    shape, the rate point's name): those are filled in by ``model``, or else by the model the
    header names, loaded when installed (:meth:`codec.model.Codec.complete_header`, which also
    checks the weights' hash). Files of versions 1-4 need no model. Raises
    :class:`ModelUnavailable` when a version-5 header needs a model that is not installed.
    """
    header = read_vqc(data)[0]
    if not header_needs_model(header):
        return header
    codec = _model(model, "", device) if model is not None else _named_model(header, device)
    return codec.complete_header(header)


def model_for(data: bytes, model: str | Path | Codec | None = None, device: str = "cpu") -> Codec:
    """The model that decodes ``data``: ``model`` if given, else the one named in the header."""
    if model is not None:
        return _model(model, "", device)
    return _named_model(read_vqc(data)[0], device)


def _named_model(header: dict[str, Any], device: str) -> Codec:
    """The installed model a file's header names (:class:`ModelUnavailable` where none is)."""
    info = header.get("model")
    name = info.get("name") if isinstance(info, dict) else None
    if not isinstance(name, str) or not name:
        raise ModelUnavailable("the file names no model (it was made by an unnamed model): pass --model PATH")
    try:
        return load_model(name, device=device)
    except LookupError:
        raise ModelUnavailable(f"the file was made by model {name!r}, which is not installed here: pass --model PATH") from None


def _source(header: dict[str, Any], codec: Codec) -> dict[str, Any]:
    """The header's ``source`` record, checked (it drives allocation and file writing)."""
    src = header.get("source", {})
    shape = header["shape"]
    out: dict[str, Any] = {}
    if codec.modality == "audio":
        sr = src.get("sample_rate", codec.sample_rate)
        frames = src.get("frames")
        if not isinstance(sr, int) or isinstance(sr, bool) or not 1 <= sr <= 1_000_000:
            raise BitstreamError(f"implausible source sample rate {sr!r}")
        try:
            resampler = StreamResampler(sr, int(codec.sample_rate or sr))
        except ValueError as err:
            raise BitstreamError(f"source sample rate: {err}") from None
        expected = resampler.output_length(frames) if isinstance(frames, int) and frames > 0 else None
        if expected != shape[-1]:
            raise BitstreamError("source length does not match the coded signal")
        out.update(sample_rate=sr, frames=frames, channels=shape[1])
    else:
        mode = src.get("mode", "RGB")
        if mode not in ("L", "RGB"):
            raise BitstreamError(f"unsupported source image mode {mode!r}")
        out.update(mode=mode, bit_depth=16 if src.get("bit_depth") == 16 else 8)
    for key in ("format", "subtype"):
        if isinstance(src.get(key), str) and len(src[key]) <= 32:
            out[key] = src[key]
    return out


def decompress_blocks(data: bytes, model: str | Path | Codec | None = None, device: str = "cpu",
                      postfilter: bool = True) -> tuple[dict[str, Any], dict[str, Any], Iterator[Tensor]]:
    """Audio: ``(header, source, blocks)`` with blocks ``(C, n)`` at the source's sample rate.
    ``postfilter``: the model's decoder-side postfilter, where it has one (:meth:`Codec.decode`)."""
    codec = model_for(data, model, device)
    header, blocks = codec.decompress_stream(data, postfilter)
    source = _source(header, codec)
    resampler = StreamResampler(int(codec.sample_rate or source["sample_rate"]), source["sample_rate"])

    def restored() -> Iterator[Tensor]:
        left = source["frames"]
        for block in blocks:
            y = resampler.feed(block[0])
            if y.shape[-1] and left > 0:
                yield y[..., :left]
                left -= min(left, y.shape[-1])
        y = resampler.flush()
        if y.shape[-1] and left > 0:
            yield y[..., :left]

    return header, source, restored()


def decompress(data: bytes, model: str | Path | Codec | None = None, device: str = "cpu",
               postfilter: bool = True) -> tuple[Tensor, dict[str, Any]]:
    """A ``.vqc`` file -> ``(signal, info)`` restored to the source's format.

    Audio: ``(C, T)`` float32 at the source's sample rate and length; images: ``(C, H, W)`` in
    ``[0, 1]`` in the source's mode. ``info`` is the header plus ``"source"`` (checked) and, for
    audio, ``"sample_rate"`` of the returned signal. ``postfilter``: the model's decoder-side
    postfilter, where it has one (:meth:`Codec.decode`).
    """
    codec = model_for(data, model, device)
    if codec.modality == "audio":
        header, source, blocks = decompress_blocks(data, codec, device, postfilter)
        signal = torch.cat(list(blocks), dim=-1)
        return signal, {**header, "source": source, "sample_rate": source["sample_rate"]}
    y, header = codec.decompress(data)
    source = _source(header, codec)
    return from_model_channels(y, source)[0], {**header, "source": source}


def _counted(blocks: Iterable[Tensor], total: int, progress: Callable[[float], None]) -> Iterator[Tensor]:
    """Pass blocks ``(C, n)`` through, reporting the fraction of ``total`` frames seen."""
    done = 0
    for block in blocks:
        yield block
        done += block.shape[-1]
        progress(min(1.0, done / max(1, total)))


def compress_file(
    input: str | Path,
    output: str | Path,
    *,
    rate: str,
    model: str | Path | Codec | None = None,
    data: bytes | None = None,
    modality: str | None = None,
    alpha: str = "refuse",
    device: str = "cpu",
    force: bool = False,
    tile: int | None = None,
    overlap: int | None = None,
    progress: Callable[[float], None] | None = None,
    beam_size: int | None = None,
    refine_steps: int | None = None,
    envelope: bool | None = None,
    variable_depth: bool = True,
) -> tuple[FileReport, bytes]:
    """Compress one media file (or its bytes in ``data``) to ``output`` (``"-"``: not written).

    Returns the report and the file's bytes. Raises :class:`~codec.io.InputError` for bad input,
    ``FileExistsError`` when ``output`` exists and ``force`` is false. ``progress`` is called with
    the fraction of the input read so far (audio is read and encoded chunk by chunk). ``beam_size``,
    ``refine_steps``, ``envelope`` and ``variable_depth`` as in :func:`compress_signal`.
    """
    t0 = time.perf_counter()
    name = str(input)
    modality = modality or (model.modality if isinstance(model, Codec) else None) or modality_of(name)
    if modality is None:
        raise InputError(f"{name}: unsupported file type (not a known image or audio suffix); use --modality")
    if output != "-" and Path(output).exists() and not force:  # fail before the work, not after
        raise FileExistsError(f"{output} exists (use --force to overwrite)")
    src = data if data is not None else input
    size_in = len(data) if data is not None else Path(input).stat().st_size if Path(input).is_file() else 0
    if modality == "audio":
        meta, blocks = open_audio(src)
        if progress is not None:
            blocks = _counted(blocks, meta["frames"], progress)
        out = compress_blocks(blocks, meta, rate=rate, model=model, device=device, tile=tile, overlap=overlap,
                              beam_size=beam_size, refine_steps=refine_steps, envelope=envelope,
                              variable_depth=variable_depth)
        units = {"duration_s": meta["frames"] / meta["sample_rate"]}
    else:
        img, meta = read_image(src, alpha=alpha)
        out = compress_signal(img, rate=rate, model=model, modality="image", source=meta, device=device, tile=tile,
                              overlap=overlap, beam_size=beam_size, refine_steps=refine_steps, envelope=envelope,
                              variable_depth=variable_depth)
        units = {"pixels": int(img.shape[-1] * img.shape[-2])}
    if output != "-":
        write_bytes(output, out.data, force=force)
    codec = _model(model, modality, device)
    report = FileReport(
        input=name, output=str(output), modality=modality, model=codec.name or str(model), rate_point=out.point.name,
        bytes_in=size_in, bytes_out=len(out.data), real_rate=out.real_rate, unit=out.unit,
        elapsed_s=time.perf_counter() - t0, notes=list(out.notes), mean_levels=out.mean_levels, **units,
    )
    return report, out.data


def decompress_file(
    input: str | Path,
    output: str | Path,
    *,
    model: str | Path | Codec | None = None,
    data: bytes | None = None,
    format: str | None = None,
    device: str = "cpu",
    force: bool = False,
    progress: Callable[[float], None] | None = None,
    postfilter: bool = True,
) -> FileReport:
    """Decode one ``.vqc`` file (or its bytes in ``data``) into a media file at ``output``.

    ``progress`` is called with the fraction of the output written so far (audio is decoded and
    written chunk by chunk). ``postfilter``: the model's decoder-side postfilter, where it has one."""
    t0 = time.perf_counter()
    if data is None:
        p = Path(input)
        if not p.is_file():
            raise InputError(f"{p}: no such file")
        if p.stat().st_size > MAX_VQC_BYTES:
            raise BitstreamError(f"{p}: larger than {MAX_VQC_BYTES} bytes")
        data = p.read_bytes()
    if Path(output).exists() and not force:
        raise FileExistsError(f"{output} exists (use --force to overwrite)")
    codec = model_for(data, model, device)
    if codec.modality == "audio":
        header, source, blocks = decompress_blocks(data, codec, device, postfilter)
        if progress is not None:
            blocks = _counted(blocks, source["frames"], progress)
        _, frames = write_audio(output, blocks, source["sample_rate"], source["channels"], source, format=format, force=force)
        units: dict[str, Any] = {"duration_s": frames / source["sample_rate"]}
    else:
        y, header = codec.decompress(data)
        source = _source(header, codec)
        write_image(output, y, source, format=format, force=force)
        units = {"pixels": int(y.shape[-1] * y.shape[-2])}
    real = codec.real_rate(len(data), header["shape"])
    return FileReport(
        input=str(input), output=str(output), modality=codec.modality, model=codec.name or str(model),
        rate_point=header["rate_point"], bytes_in=len(data), bytes_out=Path(output).stat().st_size,
        real_rate=real, unit=codec.rate_unit, elapsed_s=time.perf_counter() - t0, **units,
    )


def tokenize_file(
    input: str | Path, *, rate: str, model: str | Path | Codec | None = None, modality: str | None = None,
    alpha: str = "refuse", device: str = "cpu", beam_size: int | None = None, refine_steps: int | None = None,
) -> tuple[Tokens, dict[str, Any], Codec]:
    """A media file -> ``(tokens, source metadata, model)`` (see :meth:`Codec.tokenize`; ``beam_size``
    is its residual code search and ``refine_steps`` its refinement, defaults the model's)."""
    name = str(input)
    modality = modality or (model.modality if isinstance(model, Codec) else None) or modality_of(name)
    if modality is None:
        raise InputError(f"{name}: unsupported file type (not a known image or audio suffix); use --modality")
    codec = _model(model, modality, device)
    if codec.modality != modality:
        raise InputError(f"{name}: a {modality} file cannot be tokenized by the {codec.modality} model")
    if modality == "audio":
        wav, meta = read_audio(input)
        x = StreamResampler(meta["sample_rate"], int(codec.sample_rate or meta["sample_rate"]))(wav)[None]
    else:
        img, meta = read_image(input, alpha=alpha)
        x = to_model_channels(img, int(getattr(codec.encoder, "in_channels", img.shape[1])))
    return codec.tokenize(x, rate, beam_size=beam_size, refine_steps=refine_steps), meta, codec


def detokenize(tokens: Tokens, model: Codec, source: dict[str, Any] | None = None) -> Tensor:
    """Tokens -> signal restored like :func:`decompress` (audio ``(C, T)``, images ``(C, H, W)``)."""
    y = model.detokenize(tokens)
    source = source or {}
    if model.modality == "audio":
        sr = int(source.get("sample_rate", model.sample_rate))
        out = StreamResampler(int(model.sample_rate or sr), sr)(y[0])
        frames = source.get("frames")
        return out[..., :frames] if isinstance(frames, int) else out
    return from_model_channels(y, source)[0]
