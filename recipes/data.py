"""Training data for the recipes: image folders, audio folders, and their compact copies.

Sampling is a pure function of ``(seed, step, rank)``: every batch is drawn with a generator
seeded from those three numbers, so a resumed run sees exactly the batches an uninterrupted
run would have seen, without saving any loader state.

Formats read:

* images: anything ``torchvision.io.decode_image`` reads (JPEG, PNG, WebP, GIF, ...), converted
  to RGB (greyscale replicated, alpha dropped, 16-bit rounded to 8), EXIF orientation applied;
  and ``.npy`` uint8
  ``(H, W, 3)`` arrays (the compact copy, readable with numpy alone);
* audio: anything soundfile reads (WAV, FLAC, OGG, ...), mixed to mono and resampled to the
  model's rate; and ``.npz`` compact clips (8-bit mu-law at the model's rate, numpy alone).

``synthetic`` as a data path generates procedural images / tones (for the debug configs and a
quick look without any data installed).
"""

from __future__ import annotations

import hashlib
import math
from pathlib import Path
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "IMAGE_EXTENSIONS",
    "AUDIO_EXTENSIONS",
    "ImageData",
    "AudioData",
    "split_files",
    "telephone_band",
    "step_seed",
    "mulaw_encode",
    "mulaw_decode",
]

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".webp", ".gif", ".npy"}
AUDIO_EXTENSIONS = {".wav", ".flac", ".ogg", ".oga", ".npz"}


def step_seed(seed: int, step: int, rank: int) -> int:
    """A 63-bit seed for (run seed, step, rank)."""
    h = hashlib.blake2b(f"{seed}:{step}:{rank}".encode(), digest_size=8).digest()
    return int.from_bytes(h, "little") & (2**63 - 1)


def _list(root: Path, exts: set[str]) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in exts)


def split_files(root: str | Path, exts: set[str], val_fraction: float) -> tuple[list[Path], list[Path]]:
    """``root/train`` + ``root/val`` if both exist; otherwise a stable hash split of ``root``."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"data folder {root} does not exist (see scripts/get_data.sh)")
    if (root / "train").is_dir() and (root / "val").is_dir():
        train, val = _list(root / "train", exts), _list(root / "val", exts)
    else:
        files = _list(root, exts)
        cut = int(val_fraction * 1000)
        val = [p for p in files if int(hashlib.sha1(p.name.encode()).hexdigest(), 16) % 1000 < cut]
        held_out = set(val)
        train = [p for p in files if p not in held_out]
        if not val and len(files) > 1 and val_fraction > 0:
            val, train = files[-1:], files[:-1]
    if not train:
        raise FileNotFoundError(f"no training files with extensions {sorted(exts)} under {root}")
    return train, val


# -- images -------------------------------------------------------------------------------------------
def _load_image(path: Path) -> Tensor:
    """uint8 ``(3, H, W)`` RGB."""
    if path.suffix.lower() == ".npy":
        arr = np.load(path, allow_pickle=False)
        if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[2] != 3:
            raise ValueError(f"{path}: expected a uint8 (H, W, 3) array")
        return torch.from_numpy(np.ascontiguousarray(arr)).permute(2, 0, 1).contiguous()
    from torchvision.io import ImageReadMode, decode_image, read_file

    img = decode_image(read_file(str(path)), mode=ImageReadMode.RGB, apply_exif_orientation=True)
    if img.dtype == torch.uint16:  # 16-bit PNG: rounded to 8 bits, the precision the codec works at
        img = ((img.to(torch.int32) * 255 + 32767) // 65535).to(torch.uint8)
    return img


def _fit(img: Tensor, max_side: int, min_side: int) -> Tensor:
    """Downscale so the longer side is <= max_side; upscale so the shorter side is >= min_side."""
    h, w = img.shape[-2:]
    scale = min(1.0, max_side / max(h, w))
    scale = max(scale, min_side / min(h, w))
    if abs(scale - 1.0) < 1e-6:
        return img
    size = (max(min_side, round(h * scale)), max(min_side, round(w * scale)))
    out = F.interpolate(img[None].float(), size=size, mode="bilinear", antialias=scale < 1, align_corners=False)
    return out[0].round().clamp(0, 255).to(torch.uint8)


def _synthetic_images(n: int, size: int, seed: int) -> list[Tensor]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        low = torch.rand(1, 3, 4, 4, generator=g)
        img = F.interpolate(low, size=(size, size), mode="bicubic", align_corners=False)[0]
        yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
        for _ in range(3):  # a few hard-edged discs
            cy, cx, r = (torch.rand(3, generator=g) * torch.tensor([size, size, size / 3])).tolist()
            mask = ((yy - cy) ** 2 + (xx - cx) ** 2) < r**2
            img[:, mask] = torch.rand(3, 1, generator=g)
        img = img + 0.03 * torch.randn(img.shape, generator=g)
        out.append((img.clamp(0, 1) * 255).round().to(torch.uint8))
    return out


class ImageData:
    """Images held in memory as uint8 (bounded by ``max_side``); random crops and flips.

    Args:
        root: folder of images, or ``"synthetic"``.
        max_side: longer side after loading (memory bound).
        crop: training crop size (images smaller than it are upscaled on load).
        val_fraction: share of files held out when ``root`` has no train/val folders.
    """

    def __init__(self, root: str, crop: int, max_side: int = 768, val_fraction: float = 0.1, seed: int = 0) -> None:
        self.crop = crop
        if root == "synthetic":
            imgs = _synthetic_images(24, max(crop * 2, 64), seed)
            self.train, self.val = imgs[:20], imgs[20:]
            return
        train_files, val_files = split_files(root, IMAGE_EXTENSIONS, val_fraction)
        self.train = [_fit(_load_image(p), max_side, crop) for p in train_files]
        self.val = [_fit(_load_image(p), max_side, 1) for p in val_files]

    def batch(self, seed: int, batch_size: int) -> Tensor:
        """``(B, 3, crop, crop)`` float in ``[0, 1]``, a pure function of ``seed``."""
        g = torch.Generator().manual_seed(seed)
        out = torch.empty(batch_size, 3, self.crop, self.crop)
        for i in range(batch_size):
            img = self.train[int(torch.randint(len(self.train), (1,), generator=g))]
            h, w = img.shape[-2:]
            y = int(torch.randint(h - self.crop + 1, (1,), generator=g))
            x = int(torch.randint(w - self.crop + 1, (1,), generator=g))
            patch = img[:, y : y + self.crop, x : x + self.crop].float() / 255.0
            if bool(torch.rand((), generator=g) < 0.5):
                patch = patch.flip(-1)
            out[i] = patch
        return out

    def val_images(self, limit: int) -> list[Tensor]:
        """Whole validation images ``(1, 3, H, W)`` in ``[0, 1]``."""
        return [img[None].float() / 255.0 for img in self.val[:limit]]


# -- audio --------------------------------------------------------------------------------------------
def mulaw_encode(x: np.ndarray, mu: int = 255) -> np.ndarray:
    """float ``[-1, 1]`` -> uint8 mu-law (ITU G.711 curve, 256 levels)."""
    y = np.sign(x) * np.log1p(mu * np.abs(np.clip(x, -1, 1))) / np.log1p(mu)
    return np.clip(np.round((y + 1) / 2 * mu), 0, mu).astype(np.uint8)


def mulaw_decode(q: np.ndarray, mu: int = 255) -> np.ndarray:
    y = q.astype(np.float32) / mu * 2 - 1
    return (np.sign(y) * np.expm1(np.abs(y) * np.log1p(mu)) / mu).astype(np.float32)


def _load_audio(path: Path, sample_rate: int) -> Tensor:
    """Mono float32 ``(T,)`` at ``sample_rate``."""
    if path.suffix.lower() == ".npz":
        with np.load(path, allow_pickle=False) as z:
            rate = int(z["sample_rate"])
            wav = torch.from_numpy(mulaw_decode(z["mulaw"]))
    else:
        import soundfile as sf

        data, rate = sf.read(str(path), dtype="float32", always_2d=True)
        wav = torch.from_numpy(data.mean(axis=1))
    if rate != sample_rate and wav.numel():  # empty files are dropped by the caller
        from codec.nets.audio import resample

        wav = resample(wav, rate, sample_rate)
    return wav.contiguous()


def _synthetic_audio(n: int, seconds: float, sample_rate: int, seed: int) -> list[Tensor]:
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(int(seconds * sample_rate)) / sample_rate
    out = []
    for _ in range(n):
        f0 = 100 + 300 * float(torch.rand((), generator=g))
        wav = sum(torch.sin(2 * math.pi * f0 * k * t) / k for k in range(1, 6))
        env = 0.5 + 0.5 * torch.sin(2 * math.pi * (1 + 3 * float(torch.rand((), generator=g))) * t)
        wav = wav * env + 0.01 * torch.randn(t.shape, generator=g)
        out.append((0.3 * wav / wav.abs().max()).float())
    return out


def _source(path: Path, root: str | Path) -> str:
    """The first folder of ``path`` under ``root/train`` (or ``root/val``, or ``root``); ``""`` if none."""
    root = Path(root)
    for base in (root / "train", root / "val", root):
        try:
            parts = path.relative_to(base).parts
        except ValueError:
            continue
        return parts[0] if len(parts) > 1 else ""
    return ""


def _key_of(source: str, weights: dict[str, float]) -> str | None:
    """The longest key of ``weights`` that ``source`` starts with."""
    hits = [k for k in weights if source.startswith(k)]
    return max(hits, key=len) if hits else None


def _match_sources(sources: list[str], weights: dict[str, float]) -> list[str | None]:
    if any(float(w) <= 0 for w in weights.values()):
        raise ValueError(f"source_weights must be positive, got {weights}")
    keys = [_key_of(s, weights) for s in sources]
    missing = sorted(set(weights) - set(k for k in keys if k is not None))
    if missing:
        raise ValueError(f"source_weights {missing} match no training source (found: {sorted(set(sources))})")
    return keys


def _round_robin(files: list[Path], sources: list[str]) -> list[Path]:
    """``files`` reordered so that every source comes up in turn (validation sees each source early)."""
    groups: dict[str, list[Path]] = {}
    for f, src in zip(files, sources):
        groups.setdefault(src, []).append(f)
    order = [g[i] for i in range(max(map(len, groups.values()), default=0)) for g in groups.values() if i < len(g)]
    return order


def telephone_band(wav: Tensor, sample_rate: int, low_hz: float = 300.0, high_hz: float = 3400.0) -> Tensor:
    """``wav`` (..., T) band-limited to ``[low_hz, high_hz]`` with 100 Hz raised-cosine edges (FFT mask)."""
    n = wav.shape[-1]
    spec = torch.fft.rfft(wav, n=n)
    freqs = torch.fft.rfftfreq(n, 1.0 / sample_rate)
    edge = 100.0

    def ramp(x: Tensor) -> Tensor:  # 0 below -edge/2, 1 above +edge/2
        return 0.5 * (1 + torch.sin(math.pi * (x / edge).clamp(-0.5, 0.5)))

    mask = ramp(freqs - low_hz) * ramp(high_hz - freqs)
    return torch.fft.irfft(spec * mask, n=n)


class AudioData:
    """Mono clips at the model's rate held in memory; random loudness-normalised segments.

    Args:
        root: folder of audio files, or ``"synthetic"``.
        sample_rate: the model's rate.
        segment_seconds: training segment length.
        target_db: segments are scaled to this RMS level (dBFS), peaks kept below 0.99.
        source_weights: the data mix. A clip's *source* is the first folder under ``root/train``
            (or ``root``), e.g. ``speech-cs``; a key matches every source it is a prefix of
            (``"speech"`` matches ``speech-cs`` and ``speech-nl``). Each key gets that share of
            the segments (shares are normalised; within a key, clips are drawn by duration);
            sources no key matches are not drawn, and validation uses the matched ones only.
            Empty: every clip drawn by duration.
        gain_db: level augmentation: each segment's target level is ``target_db`` plus a
            uniform draw in ``[-gain_db, +gain_db]``.
        telephone_prob: share of segments band-limited to telephone bandwidth (300-3400 Hz) before
            coding, so the codec learns narrow-band input (8 kHz speech resampled to its rate).
    """

    def __init__(
        self,
        root: str,
        sample_rate: int,
        segment_seconds: float,
        val_fraction: float = 0.1,
        target_db: float = -20.0,
        seed: int = 0,
        source_weights: dict[str, float] | None = None,
        gain_db: float = 0.0,
        telephone_prob: float = 0.0,
    ) -> None:
        if gain_db < 0 or not 0.0 <= telephone_prob <= 1.0:
            raise ValueError(f"gain_db must be >= 0 and telephone_prob in [0, 1], got {gain_db}, {telephone_prob}")
        self.sample_rate = sample_rate
        self.segment = int(round(segment_seconds * sample_rate))
        self.target_db = target_db
        self.gain_db = float(gain_db)
        self.telephone_prob = float(telephone_prob)
        if root == "synthetic":
            if source_weights:
                raise ValueError("source_weights needs a data folder, not 'synthetic'")
            clips = _synthetic_audio(12, max(4 * segment_seconds, 1.0), sample_rate, seed)
            self.train, self.val = clips[:10], clips[10:]
            train_sources = [""] * len(self.train)
        else:
            train_files, val_files = split_files(root, AUDIO_EXTENSIONS, val_fraction)
            train_sources = [_source(p, root) for p in train_files]
            val_sources = [_source(p, root) for p in val_files]
            if source_weights:
                keys = _match_sources(train_sources, source_weights)
                train_files = [p for p, k in zip(train_files, keys) if k is not None]
                train_sources = [k for k in keys if k is not None]
                kept_val = [(p, s) for p, s in zip(val_files, val_sources) if _key_of(s, source_weights) is not None]
                val_files, val_sources = [p for p, _ in kept_val], [s for _, s in kept_val]
            self.train = [_load_audio(p, sample_rate) for p in train_files]
            self.val = [_load_audio(p, sample_rate) for p in _round_robin(val_files, val_sources)]
        kept = [(c, s) for c, s in zip(self.train, train_sources) if c.numel() > 0]
        self.train = [c for c, _ in kept]
        self.val = [c for c in self.val if c.numel() > 0]
        lengths = torch.tensor([c.numel() for c, _ in kept], dtype=torch.float64)
        if source_weights:
            # each key's share, spread over its clips by duration
            for key, share in source_weights.items():
                idx = [i for i, (_, s) in enumerate(kept) if s == key]
                lengths[idx] = lengths[idx] / lengths[idx].sum() * float(share)
        self.weights = lengths / lengths.sum()

    def normalise(self, wav: Tensor, target_db: float | None = None) -> Tensor:
        rms = wav.pow(2).mean().sqrt().clamp_min(1e-5)
        gain = 10 ** ((self.target_db if target_db is None else target_db) / 20) / rms
        peak = wav.abs().max().clamp_min(1e-5)
        gain = torch.minimum(gain, 0.99 / peak)
        return wav * gain

    def batch(self, seed: int, batch_size: int) -> Tensor:
        """``(B, 1, segment)`` float, a pure function of ``seed``; near-silent picks are redrawn."""
        g = torch.Generator().manual_seed(seed)
        out = torch.zeros(batch_size, 1, self.segment)
        for i in range(batch_size):
            for _attempt in range(10):
                clip = self.train[int(torch.multinomial(self.weights, 1, generator=g))]
                if clip.numel() <= self.segment:
                    seg = F.pad(clip, (0, self.segment - clip.numel()))
                else:
                    start = int(torch.randint(clip.numel() - self.segment + 1, (1,), generator=g))
                    seg = clip[start : start + self.segment]
                if seg.pow(2).mean().sqrt() > 1e-3:
                    break
            target_db = self.target_db
            if self.gain_db > 0:  # drawn only when augmenting, so plain runs keep their batches
                target_db += float(torch.empty(()).uniform_(-self.gain_db, self.gain_db, generator=g))
            if self.telephone_prob > 0 and float(torch.rand((), generator=g)) < self.telephone_prob:
                seg = telephone_band(seg, self.sample_rate)
            out[i, 0] = self.normalise(seg, target_db)
        return out

    def val_clips(self, limit: int, seconds: float) -> list[Tensor]:
        """Validation excerpts ``(1, 1, T)`` (the first ``seconds`` of each clip, normalised)."""
        n = int(seconds * self.sample_rate)
        return [self.normalise(c[:n])[None, None] for c in self.val[:limit] if c.numel() > 0]
