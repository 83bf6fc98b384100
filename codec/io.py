"""Reading and writing image and audio files, and writing outputs without ever losing data.

Inputs are untrusted: sizes are checked before decoding pixels or samples, and every failure
is an :class:`InputError` (a ``ValueError``) with one clear sentence naming the file.

**Images** (Pillow): EXIF orientation is applied on load; palette, CMYK and YCbCr images become
RGB; greyscale stays greyscale (``mode="L"`` in the metadata) and is replicated to three
channels for an RGB model by :func:`to_model_channels`, then restored with ITU-R BT.601 luma; a
16-bit greyscale PNG/TIFF is read at full precision and written back as 16-bit. An alpha
channel is not coded: a fully opaque one is dropped silently, otherwise the policy decides —
``"refuse"`` (the default: an error that says what to do), ``"drop"`` or ``"flatten"`` (over
white).

**Audio** (soundfile/libsndfile: WAV, FLAC, OGG/Vorbis, MP3, AIFF, ...): samples are read as
float32 ``(C, T)``; empty files and NaN/inf samples are refused. The metadata keeps the sample
rate, channel count, length, container format and sample format (``PCM_16``, ``FLOAT``...), so
decoding restores all of them.

**Outputs** go through :func:`atomic_output`: written to a temporary file beside the target
and renamed into place only when complete; an existing file is never replaced unless
``force`` is given, and nothing is left behind on failure.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "InputError",
    "IMAGE_SUFFIXES",
    "AUDIO_SUFFIXES",
    "modality_of",
    "read_image",
    "write_image",
    "read_audio",
    "open_audio",
    "write_audio",
    "to_model_channels",
    "from_model_channels",
    "atomic_output",
]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".ppm", ".pgm", ".pnm", ".gif", ".avif")
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".oga", ".mp3", ".aif", ".aiff", ".au", ".caf", ".w64")
MAX_IMAGE_PIXELS = 1 << 28  # 268 megapixels
MAX_AUDIO_SAMPLES = 1 << 32  # samples x channels
ALPHA_POLICIES = ("refuse", "drop", "flatten")
_LUMA = (0.299, 0.587, 0.114)  # ITU-R BT.601


class InputError(ValueError):
    """An input file that cannot be coded: missing, unreadable, unsupported or invalid."""


def modality_of(path: str | Path) -> str | None:
    """``"image"``, ``"audio"`` or None, from the file name's suffix."""
    suffix = Path(path).suffix.lower()
    if suffix in IMAGE_SUFFIXES:
        return "image"
    if suffix in AUDIO_SUFFIXES:
        return "audio"
    return None


def _source(path: str | Path | bytes) -> Any:
    import io

    if isinstance(path, (bytes, bytearray)):
        return io.BytesIO(path)
    p = Path(path)
    if not p.exists():
        raise InputError(f"{p}: no such file")
    if not p.is_file():
        raise InputError(f"{p}: not a regular file")
    if not os.access(p, os.R_OK):
        raise InputError(f"{p}: permission denied")
    return p


def _name(path: str | Path | bytes) -> str:
    return "<stdin>" if isinstance(path, (bytes, bytearray)) else str(path)


# -- images ---------------------------------------------------------------------------------------
def read_image(path: str | Path | bytes, alpha: str = "refuse") -> tuple[Tensor, dict[str, Any]]:
    """An image file -> ``(x (1, C, H, W) float32 in [0, 1], metadata)``; C is 1 (greyscale) or 3.

    ``metadata``: ``mode`` (``"L"``/``"RGB"``), ``bit_depth`` (8 or 16), ``format`` (Pillow's name).
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    if alpha not in ALPHA_POLICIES:
        raise ValueError(f"alpha policy must be one of {ALPHA_POLICIES}, got {alpha!r}")
    name = _name(path)
    src = _source(path)
    try:
        img = Image.open(src)
        fmt = img.format or ""
        if img.width * img.height > MAX_IMAGE_PIXELS:
            raise InputError(f"{name}: {img.width}x{img.height} pixels exceeds the limit of {MAX_IMAGE_PIXELS}")
        if img.width < 1 or img.height < 1:
            raise InputError(f"{name}: empty image")
        img.load()
        img = ImageOps.exif_transpose(img)
    except InputError:
        raise
    except UnidentifiedImageError:
        raise InputError(f"{name}: not an image Pillow can read") from None
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
        raise InputError(f"{name}: unreadable image ({err})") from None

    bit_depth = 8
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        arr = np.asarray(img, dtype=np.float64)
        if img.mode == "I" and arr.max(initial=0) <= 255 and (fmt or "") not in ("PNG", "TIFF"):
            data, bit_depth = arr / 255.0, 8
        else:
            data, bit_depth = arr.clip(0, 65535) / 65535.0, 16
        return torch.from_numpy(data.astype(np.float32))[None, None], {"mode": "L", "bit_depth": bit_depth, "format": fmt}
    if img.mode == "F":
        arr = np.asarray(img, dtype=np.float32)
        if not np.isfinite(arr).all():
            raise InputError(f"{name}: the image contains NaN or infinite values")
        return torch.from_numpy(arr.clip(0, 1))[None, None], {"mode": "L", "bit_depth": 16, "format": fmt}
    if img.mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    if img.mode in ("1",):
        img = img.convert("L")
    if img.mode in ("CMYK", "YCbCr", "LAB", "HSV", "RGBX"):
        img = img.convert("RGB")
    if img.mode == "PA":
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "RGBa", "La"):
        img = img.convert("RGBA" if img.mode.startswith("RGB") else "LA")
        a = np.asarray(img.getchannel("A"))
        if a.min() < 255:
            if alpha == "refuse":
                raise InputError(
                    f"{name}: has transparency, which the codec does not code; choose --alpha drop "
                    "(keep the colours) or --alpha flatten (composite over white)"
                )
            if alpha == "flatten":
                background = Image.new(img.mode, img.size, (255,) * len(img.mode))
                img = Image.alpha_composite(background.convert("RGBA"), img.convert("RGBA")).convert(img.mode)
        img = img.convert("RGB" if img.mode == "RGBA" else "L")
    if img.mode not in ("L", "RGB"):
        raise InputError(f"{name}: unsupported image mode {img.mode}")
    arr = np.asarray(img, dtype=np.uint8)
    x = torch.from_numpy(arr.astype(np.float32) / 255.0)
    x = x[None, None] if x.dim() == 2 else x.permute(2, 0, 1)[None]
    return x.contiguous(), {"mode": img.mode, "bit_depth": bit_depth, "format": fmt}


def to_model_channels(x: Tensor, channels: int) -> Tensor:
    """Greyscale ``(1, 1, H, W)`` -> three channels for an RGB model, or RGB -> luma for a grey one."""
    if x.shape[1] == channels:
        return x
    if x.shape[1] == 1 and channels == 3:
        return x.expand(-1, 3, -1, -1).contiguous()
    if x.shape[1] == 3 and channels == 1:
        return _luma(x)
    raise ValueError(f"cannot map {x.shape[1]} channels to {channels}")


def _luma(x: Tensor) -> Tensor:
    w = torch.tensor(_LUMA, dtype=x.dtype, device=x.device).reshape(1, 3, 1, 1)
    return (x * w).sum(1, keepdim=True)


def from_model_channels(x: Tensor, metadata: dict[str, Any]) -> Tensor:
    """Undo :func:`to_model_channels` for a decoded image, following the source ``mode``."""
    if metadata.get("mode") == "L" and x.shape[1] == 3:
        return _luma(x)
    if metadata.get("mode") == "RGB" and x.shape[1] == 1:
        return x.expand(-1, 3, -1, -1)
    return x


def _image_format(path: Path, format: str | None) -> str:
    from PIL import Image

    Image.init()
    if format:
        fmt = format.upper()
        fmt = {"JPG": "JPEG", "TIF": "TIFF"}.get(fmt, fmt)
        if fmt not in Image.SAVE:
            raise InputError(f"cannot write image format {format!r}")
        return fmt
    fmt = Image.EXTENSION.get(path.suffix.lower())
    if fmt is None or fmt not in Image.SAVE:
        raise InputError(f"{path}: cannot tell an image format from the suffix {path.suffix!r}; use --format")
    return fmt


def write_image(path: str | Path, x: Tensor, metadata: dict[str, Any] | None = None, format: str | None = None, force: bool = False) -> Path:
    """Write ``x`` ``(1, C, H, W)`` in ``[0, 1]`` atomically, in the source's mode and bit depth."""
    from PIL import Image

    metadata = metadata or {}
    path = Path(path)
    fmt = _image_format(path, format)
    x = from_model_channels(x.detach().float().cpu(), metadata).clamp(0, 1)[0]
    if x.shape[0] == 1 and metadata.get("bit_depth") == 16 and fmt in ("PNG", "TIFF"):
        img = Image.fromarray((x[0].numpy() * 65535.0 + 0.5).astype(np.uint16))
    else:
        arr = (x.permute(1, 2, 0).numpy() * 255.0 + 0.5).astype(np.uint8)
        img = Image.fromarray(arr[..., 0] if arr.shape[-1] == 1 else arr)
    options = {"quality": 95} if fmt in ("JPEG", "WEBP", "AVIF") else {}
    with atomic_output(path, force) as tmp:
        img.save(tmp, format=fmt, **options)
    return path


# -- audio ----------------------------------------------------------------------------------------
def read_audio(path: str | Path | bytes) -> tuple[Tensor, dict[str, Any]]:
    """An audio file -> ``(wav (C, T) float32, metadata)``.

    ``metadata``: ``sample_rate``, ``channels``, ``frames``, ``format`` (``"WAV"``...) and
    ``subtype`` (``"PCM_16"``...), as libsndfile reports them.
    """
    meta, blocks = open_audio(path)
    return torch.cat(list(blocks), dim=-1), meta


def open_audio(path: str | Path | bytes, block_seconds: float = 10.0) -> tuple[dict[str, Any], Iterator[Tensor]]:
    """An audio file as ``(metadata, blocks)``: float32 ``(C, n)`` blocks read one at a time.

    Memory holds one block, whatever the file's length. The metadata is that of
    :func:`read_audio`; its ``frames`` is corrected to the true count once the blocks are
    exhausted (MP3 and some OGG files only report an estimate). A NaN/inf block raises
    :class:`InputError`, as does a file with no samples.
    """
    import soundfile as sf

    name = _name(path)
    src = _source(path)
    try:
        f = sf.SoundFile(src)
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as err:
        raise InputError(f"{name}: not an audio file libsndfile can read ({err})") from None
    meta = {"sample_rate": int(f.samplerate), "channels": int(f.channels), "frames": int(f.frames),
            "format": str(f.format), "subtype": str(f.subtype)}
    problem = None
    if meta["channels"] < 1 or meta["frames"] < 1:
        problem = "empty audio (no samples)"
    elif meta["frames"] * meta["channels"] > MAX_AUDIO_SAMPLES:
        problem = f"{meta['frames']} x {meta['channels']} samples exceeds the limit"
    elif not 1 <= meta["sample_rate"] <= 1_000_000:
        problem = f"implausible sample rate {meta['sample_rate']}"
    if problem:
        f.close()
        raise InputError(f"{name}: {problem}")
    block = max(1, int(block_seconds * meta["sample_rate"]))

    def blocks() -> Iterator[Tensor]:
        frames = 0
        with f:
            while True:
                try:
                    data = f.read(block, dtype="float32", always_2d=True)
                except (sf.LibsndfileError, RuntimeError, ValueError) as err:
                    raise InputError(f"{name}: unreadable audio data ({err})") from None
                if not data.shape[0]:
                    break
                if not np.isfinite(data).all():
                    raise InputError(f"{name}: the audio contains NaN or infinite samples")
                frames += data.shape[0]
                if frames * meta["channels"] > MAX_AUDIO_SAMPLES:
                    raise InputError(f"{name}: more samples than the limit")
                yield torch.from_numpy(np.ascontiguousarray(data.T))
        if frames == 0:
            raise InputError(f"{name}: empty audio (no samples)")
        meta["frames"] = frames

    return meta, blocks()


def _audio_format(path: Path, format: str | None, subtype: str | None) -> tuple[str, str | None]:
    import soundfile as sf

    fmt = (format or path.suffix.lstrip(".")).upper()
    fmt = {"AIF": "AIFF", "OGA": "OGG"}.get(fmt, fmt)
    if fmt not in sf.available_formats():
        raise InputError(f"{path}: cannot write audio format {fmt!r}; use a .wav, .flac or .ogg name or --format")
    if subtype and sf.check_format(fmt, subtype):
        return fmt, subtype
    return fmt, None


def write_audio(
    path: str | Path,
    blocks: Iterable[Tensor],
    sample_rate: int,
    channels: int,
    metadata: dict[str, Any] | None = None,
    format: str | None = None,
    force: bool = False,
) -> tuple[Path, int]:
    """Write consecutive blocks ``(C, n)`` atomically as one file; returns ``(path, frames)``.

    The source's sample format (``metadata["subtype"]``) is kept where the container supports
    it; samples are clipped to ``[-1, 1]`` for integer formats.
    """
    import soundfile as sf

    path = Path(path)
    fmt, subtype = _audio_format(path, format, (metadata or {}).get("subtype"))
    frames = 0
    with atomic_output(path, force) as tmp:
        with sf.SoundFile(tmp, "w", samplerate=int(sample_rate), channels=int(channels), format=fmt, subtype=subtype) as f:
            for block in blocks:
                arr = block.detach().float().cpu().reshape(channels, -1).numpy().T
                if not (subtype or "").startswith(("FLOAT", "DOUBLE")):
                    arr = np.clip(arr, -1.0, 1.0)
                f.write(arr)
                frames += arr.shape[0]
    return path, frames


# -- safe outputs ---------------------------------------------------------------------------------
@contextlib.contextmanager
def atomic_output(path: str | Path, force: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path``, on failure it is removed.

    Raises ``FileExistsError`` when ``path`` exists and ``force`` is false (checked before and
    after writing, so a file created meanwhile is not overwritten either).
    """
    path = Path(path)
    if path.exists() and not force:
        raise FileExistsError(f"{path} exists (use --force to overwrite)")
    if path.exists() and not path.is_file():
        raise FileExistsError(f"{path} exists and is not a regular file")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.partial-{secrets.token_hex(4)}{path.suffix}")
    try:
        yield tmp
        if force:
            os.replace(tmp, path)
        else:
            try:
                os.link(tmp, path)  # fails if path appeared meanwhile: never overwrite without force
            except FileExistsError:
                raise FileExistsError(f"{path} exists (use --force to overwrite)") from None
            except OSError:  # file systems without hard links
                if path.exists():
                    raise FileExistsError(f"{path} exists (use --force to overwrite)") from None
                os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def write_bytes(path: str | Path, data: bytes, force: bool = False) -> Path:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_output`)."""
    with atomic_output(path, force) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    return Path(path)
