"""Rate-distortion evaluation against the codecs people already use (``vqcodec eval``).

Every rate is **real**: the size of the file each codec writes (our ``.vqc`` with its header;
JPEG/WebP/AVIF files as Pillow writes them; Ogg Opus files; raw Codec2 frames) over the pixels
or seconds of the input.

* **Images**: PSNR (on the 8-bit output) and MS-SSIM. Each baseline is run, per image and per
  rate point of ours, at its best quality setting whose file is not larger than ours; where even
  its lowest setting is larger, it "cannot reach" that rate and is left out of that row's mean.
* **Audio**: PESQ (wide-band at >= 16 kHz, narrow-band for 8 kHz sources), STOI, SI-SDR and mel
  distance, on mono signals at the source's rate, after time-aligning each decoded signal to
  the reference (cross-correlation, +-50 ms), since Opus and Codec2 add delay. Baselines:
  ``opusenc``/``opusdec`` at a list of bitrates (its floor is about 6 kbps) and ``c2enc``/
  ``c2dec`` in every mode (700C-3200). Missing command-line tools are reported and skipped.
  ``match_kbps`` also codes ours within the size of each baseline file up to that nominal rate,
  so that each baseline is compared at exactly its own bits (iso-rate), not only at our requests.

The report folder gets ``results.csv`` (one row per file, codec and setting), ``summary.md``
(means per codec and setting) and ``rd.png`` (the rate-distortion curves).
"""

from __future__ import annotations

import csv
import io
import math
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import torch

from codec.io import AUDIO_SUFFIXES, IMAGE_SUFFIXES, read_audio, read_image

__all__ = [
    "Row", "IMAGE_BASELINES", "AUDIO_BASELINES", "evaluate_images", "evaluate_audio", "write_report", "missing_tools",
    "image_quality", "audio_quality", "align",
]

IMAGE_BASELINES = ("jpeg", "webp", "avif")
AUDIO_BASELINES = ("opus", "codec2")
CODEC2_MODES = ("3200", "2400", "1600", "1400", "1300", "1200", "700C")
OPUS_KBPS = (6.0, 8.0, 12.0, 16.0)
TOOLS = {"opus": ("opusenc", "opusdec"), "codec2": ("c2enc", "c2dec")}


@dataclass
class Row:
    """One decoded file: which codec at which setting, its real rate and its quality."""

    file: str
    codec: str
    setting: str
    bytes: int
    rate: float  # bpp or kbps, from the file size
    metrics: dict[str, float] = field(default_factory=dict)


def missing_tools(baselines: Iterable[str]) -> dict[str, list[str]]:
    """Command-line tools each audio baseline needs but this machine lacks."""
    out = {}
    for b in baselines:
        need = [t for t in TOOLS.get(b, ()) if shutil.which(t) is None]
        if need:
            out[b] = need
    return out


def _files(folder: Path, suffixes: tuple[str, ...], limit: int | None = None) -> list[Path]:
    """The folder's files of a kind, sorted; with ``limit``, that many spread evenly over the list."""
    files = sorted(p for p in Path(folder).rglob("*") if p.is_file() and p.suffix.lower() in suffixes and not p.name.startswith("."))
    if limit and len(files) > limit:
        files = [files[int(i * len(files) / limit)] for i in range(limit)]
    return files


def audio_files(folders: Path | Sequence[Path], limit: int | None = None, min_seconds: float | None = None) -> list[Path]:
    """The audio files under ``folders``, sorted; with ``min_seconds``, those that last that long;
    with ``limit``, that many of them spread evenly over the list. Raises ``FileNotFoundError`` when none is left."""
    import soundfile as sf

    folders = [folders] if isinstance(folders, (str, Path)) else list(folders)
    files = sorted(f for folder in folders for f in _files(folder, AUDIO_SUFFIXES))
    if min_seconds:
        files = [f for f in files if sf.info(str(f)).duration >= min_seconds]
    files = [files[int(i * len(files) / limit)] for i in range(limit)] if limit and len(files) > limit else files
    if not files:
        where = ", ".join(map(str, folders)) or "(no folder)"
        raise FileNotFoundError(f"{where}: no audio files" + (f" of at least {min_seconds:g} s" if min_seconds else ""))
    return files


# -- images ---------------------------------------------------------------------------------------
def image_quality(ref: torch.Tensor, out: torch.Tensor) -> dict[str, float]:
    """PSNR and MS-SSIM of ``out`` (rounded to 8 bits) against ``ref``, both ``(1, C, H, W)`` in [0, 1]."""
    from codec.metrics import ms_ssim, psnr

    out = (out.clamp(0, 1) * 255).round() / 255  # what an 8-bit file holds
    a, b = ref.float(), out.float()
    if a.shape[1] == 1:
        a, b = a.expand(-1, 3, -1, -1), b.expand(-1, 3, -1, -1)
    scores = {"psnr": float(psnr(a, b)[0])}
    try:
        scores["ms_ssim"] = float(ms_ssim(a, b)[0])
    except (ValueError, RuntimeError):  # too small for five scales
        scores["ms_ssim"] = float("nan")
    return scores


def _pillow_encode(img: Any, fmt: str, quality: int) -> bytes:
    buf = io.BytesIO()
    options: dict[str, Any] = {"quality": quality}
    if fmt == "JPEG":
        options["optimize"] = True
    if fmt == "WEBP":
        options["method"] = 6
    if fmt == "AVIF":
        options["speed"] = 6  # Pillow's default
    img.save(buf, format=fmt, **options)
    return buf.getvalue()


def _best_quality_within(img: Any, fmt: str, max_bytes: int) -> tuple[int, bytes] | None:
    """Highest quality in 1..100 whose file fits ``max_bytes`` (sizes grow with quality)."""
    lo, hi, best = 1, 100, None
    first = _pillow_encode(img, fmt, lo)
    if len(first) > max_bytes:
        return None
    best = (lo, first)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        data = _pillow_encode(img, fmt, mid)
        if len(data) <= max_bytes:
            lo, best = mid, (mid, data)
        else:
            hi = mid - 1
    return best


def evaluate_images(
    folder: Path, model: Any, rates: list[str], baselines: Iterable[str], progress: Callable[[str], None] = lambda s: None,
    limit: int | None = None, max_seconds: float | None = None, beam_size: int | None = None,
    refine_steps: int | None = None, variable_depth: bool = True,
) -> list[Row]:
    """Ours at each rate, and each Pillow baseline matched in size per image and rate.

    ``beam_size``, ``refine_steps``: our encoder's residual code search and its refinement (defaults the model's);
    ``variable_depth``: rate targets spend their budget position by position (:meth:`~codec.model.Codec.compress_detailed`)."""
    from PIL import Image

    from codec.files import compress_signal, decompress

    rows: list[Row] = []
    files = _files(folder, IMAGE_SUFFIXES, limit)
    if not files:
        raise FileNotFoundError(f"{folder}: no images")
    for path in files:
        x, meta = read_image(path, alpha="drop")
        pixels = x.shape[-1] * x.shape[-2]
        arr = (x[0].permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8)
        pil = Image.fromarray(arr[..., 0] if arr.shape[-1] == 1 else arr)
        for rate in rates:
            progress(f"{path.name} @ {rate}")
            out = compress_signal(x, rate=rate, model=model, modality="image", source=meta, beam_size=beam_size,
                                  refine_steps=refine_steps, variable_depth=variable_depth)
            y, _ = decompress(out.data, model=model)
            label = _label(rate, out.point.name)
            rows.append(Row(path.name, "vqcodec", _our_setting(rate, out.point.name), len(out.data),
                            8 * len(out.data) / pixels, image_quality(x, y[None])))
            for name in baselines:
                fmt = name.upper()
                found = _best_quality_within(pil, fmt, len(out.data))
                if found is None:
                    rows.append(Row(path.name, name, f"<= {label}: cannot reach", 0, float("nan"), {}))
                    continue
                quality, data = found
                dec = Image.open(io.BytesIO(data))
                dec = dec.convert("L" if x.shape[1] == 1 else "RGB")
                d = torch.from_numpy(np.asarray(dec, dtype=np.float32) / 255.0)
                d = d[None, None] if d.dim() == 2 else d.permute(2, 0, 1)[None]
                rows.append(Row(path.name, name, f"<= {label} (q={quality})", len(data), 8 * len(data) / pixels,
                                image_quality(x, d)))
    return rows


# -- audio ----------------------------------------------------------------------------------------
def align(ref: np.ndarray, est: np.ndarray, max_lag: int) -> np.ndarray:
    """``est`` shifted by the lag (within +-max_lag samples) that best correlates it with ``ref``."""
    n = len(ref)
    est = np.pad(est, (0, max(0, n - len(est))))[: n + max_lag]
    size = 1 << int(math.ceil(math.log2(n + len(est))))
    corr = np.fft.irfft(np.fft.rfft(est, size) * np.conj(np.fft.rfft(ref, size)), size)
    lags = np.concatenate([corr[: max_lag + 1], corr[-max_lag:]]) if max_lag else corr[:1]
    idx = int(np.argmax(lags))
    lag = idx if idx <= max_lag else idx - len(lags)
    shifted = np.roll(np.pad(est, (max_lag, max_lag)), -lag)[max_lag : max_lag + n]
    return shifted


def audio_quality(ref: np.ndarray, est: np.ndarray, sample_rate: int) -> dict[str, float]:
    """SI-SDR, mel distance, STOI and PESQ of mono ``est`` against ``ref`` after time alignment."""
    from codec.metrics import mel_distance, si_sdr
    from codec.nets.audio import resample

    est = align(ref, est, int(0.05 * sample_rate))
    r, e = torch.from_numpy(ref).float(), torch.from_numpy(est).float()
    scores = {
        "si_sdr": float(si_sdr(r[None], e[None])[0]),
        "mel": float(mel_distance(r[None, None], e[None, None], sample_rate)[0]),
    }
    try:
        from pystoi import stoi

        scores["stoi"] = float(stoi(ref, est, sample_rate, extended=False))
    except ImportError:
        scores["stoi"] = float("nan")
    try:
        from pesq import pesq

        if sample_rate >= 16000:
            a, b = resample(r, sample_rate, 16000).numpy(), resample(e, sample_rate, 16000).numpy()
            scores["pesq"] = float(pesq(16000, a, b, "wb"))
        else:
            a, b = resample(r, sample_rate, 8000).numpy(), resample(e, sample_rate, 8000).numpy()
            scores["pesq"] = float(pesq(8000, a, b, "nb"))
    except ImportError:
        scores["pesq"] = float("nan")
    except Exception:  # noqa: BLE001 - pesq raises its own errors for silent or too-short input
        scores["pesq"] = float("nan")
    return scores


def _mono(wav: torch.Tensor) -> np.ndarray:
    return wav.float().mean(0).numpy().astype(np.float32)


def _run(cmd: list[str]) -> None:
    subprocess.run(cmd, check=True, capture_output=True, timeout=600)


def _opus(wav: np.ndarray, sample_rate: int, kbps: float, tmp: Path) -> tuple[int, np.ndarray]:
    import soundfile as sf

    from codec.nets.audio import resample

    src, enc, dec = tmp / "in.wav", tmp / "out.opus", tmp / "out.wav"
    sf.write(src, wav, sample_rate, subtype="PCM_16")
    _run(["opusenc", "--quiet", "--bitrate", f"{kbps:g}", "--hard-cbr", str(src), str(enc)])
    _run(["opusdec", "--quiet", "--rate", "48000", str(enc), str(dec)])
    y, rate = sf.read(dec, dtype="float32", always_2d=True)
    y = resample(torch.from_numpy(y.mean(1)), rate, sample_rate).numpy()
    return enc.stat().st_size, y


def _codec2(wav: np.ndarray, sample_rate: int, mode: str, tmp: Path) -> tuple[int, np.ndarray]:
    from codec.nets.audio import resample

    x8 = resample(torch.from_numpy(wav), sample_rate, 8000).numpy()
    raw, enc, dec = tmp / "in.raw", tmp / "out.c2", tmp / "out.raw"
    (np.clip(x8, -1, 1) * 32767).astype("<i2").tofile(raw)
    _run(["c2enc", mode, str(raw), str(enc)])
    _run(["c2dec", mode, str(enc), str(dec)])
    y = np.fromfile(dec, dtype="<i2").astype(np.float32) / 32768.0
    return enc.stat().st_size, resample(torch.from_numpy(y), 8000, sample_rate).numpy()


def nominal_kbps(codec: str, setting: str) -> float:
    """A fixed-rate baseline setting's nominal rate: ``("opus", "6kbps")`` -> 6.0, ``("codec2", "700C")`` -> 0.7."""
    if codec == "opus":
        return float(setting.removesuffix("kbps"))
    if codec == "codec2":
        return int(setting.rstrip("ABCDEFGHIJKLMNOPQRSTUVWXYZ")) / 1000
    raise ValueError(f"no nominal rate for {codec} {setting}")


_MATCHED = "at "  # how the setting of our file coded within the size of a baseline's begins


def _matched_setting(codec: str, setting: str) -> str:
    """The setting of our file coded within the size of a baseline's (``"at codec2 1200"``)."""
    return f"{_MATCHED}{codec} {setting}"


def _within_bytes(num_bytes: int, seconds: float) -> str:
    """The rate target (bit/s, rounded down) whose budget over ``seconds`` is at most ``num_bytes``."""
    return f"{math.floor(8 * num_bytes / seconds * 1000) / 1000:.3f}bps"


def evaluate_audio(
    folder: Path, model: Any, rates: list[str], baselines: Iterable[str], progress: Callable[[str], None] = lambda s: None,
    limit: int | None = None, max_seconds: float | None = None, min_seconds: float | None = None,
    sample_rate: int | None = None, beam_size: int | None = None, refine_steps: int | None = None,
    envelope: bool | None = None, variable_depth: bool = True, postfilter: bool = True,
    match_kbps: float | None = None,
) -> list[Row]:
    """Ours at each rate; Opus at :data:`OPUS_KBPS`; Codec2 in every mode (tools permitting).

    ``match_kbps``: ours also coded, per file, within the real size of each baseline file whose
    nominal rate is at most this (a row ``at <codec> <setting>``; :func:`write_report` pairs the
    baseline with it): an iso-rate comparison, where the rows at our requested rates leave the
    baseline the bits between its file and our nearest lower request.

    ``min_seconds`` leaves out shorter files (before ``limit`` spreads the choice over the rest):
    on a one-second clip the container headers of every codec are a large share of the rate.
    ``sample_rate`` resamples every file first: the resampled signal is what every codec is fed
    and scored against (8000: telephone speech, scored with narrow-band PESQ). ``beam_size``,
    ``refine_steps``: our encoder's residual code search and its refinement, ``envelope`` its
    band-energy side information (defaults the model's), ``variable_depth`` as in :func:`evaluate_images`,
    ``postfilter`` our decoder's postfilter (where the model has one).
    """
    from codec.files import compress_signal, decompress
    from codec.nets.audio import resample

    baselines = [b for b in baselines if b not in missing_tools(baselines)]
    rows: list[Row] = []
    for path in audio_files(folder, limit, min_seconds):
        wav, meta = read_audio(path)
        sr = meta["sample_rate"]
        if sample_rate and sample_rate != sr:
            wav = resample(wav, sr, sample_rate).clamp(-1, 1)
            sr = meta["sample_rate"] = sample_rate
            meta["frames"] = wav.shape[-1]
        if max_seconds:
            wav = wav[..., : int(max_seconds * sr)]
            meta["frames"] = wav.shape[-1]
        seconds = wav.shape[-1] / sr
        ref = _mono(wav)
        for rate in rates:
            progress(f"{path.name} @ {rate}")
            out = compress_signal(wav, rate=rate, model=model, sample_rate=sr, source=meta, beam_size=beam_size,
                                  refine_steps=refine_steps, envelope=envelope, variable_depth=variable_depth)
            y, _ = decompress(out.data, model=model, postfilter=postfilter)
            rows.append(Row(path.name, "vqcodec", _our_setting(rate, out.point.name), len(out.data),
                            8 * len(out.data) / seconds / 1000, audio_quality(ref, _mono(y), sr)))
        base_rows: list[Row] = []
        with tempfile.TemporaryDirectory() as tmp:
            settings = [("opus", f"{k:g}kbps", k) for k in OPUS_KBPS] if "opus" in baselines else []
            settings += [("codec2", m, m) for m in CODEC2_MODES] if "codec2" in baselines else []
            for name, label, arg in settings:
                progress(f"{path.name} {name} {label}")
                try:
                    size, y = (_opus if name == "opus" else _codec2)(ref, sr, arg, Path(tmp))
                except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as err:
                    rows.append(Row(path.name, name, f"{label}: failed ({type(err).__name__})", 0, float("nan"), {}))
                    continue
                base_rows.append(Row(path.name, name, label, size, 8 * size / seconds / 1000,
                                     audio_quality(ref, y[: len(ref)], sr)))
        rows += base_rows
        matched: dict[int, tuple[Any, dict[str, float]]] = {}  # a baseline file's size -> our file within it
        for base in base_rows:
            if match_kbps is None or nominal_kbps(base.codec, base.setting) > match_kbps:
                continue
            if base.bytes not in matched:
                progress(f"{path.name} @ {base.codec} {base.setting}'s size")
                out = compress_signal(wav, rate=_within_bytes(base.bytes, seconds), model=model, sample_rate=sr,
                                      source=meta, beam_size=beam_size, refine_steps=refine_steps,
                                      envelope=envelope, variable_depth=variable_depth)
                y, _ = decompress(out.data, model=model, postfilter=postfilter)
                matched[base.bytes] = out, audio_quality(ref, _mono(y), sr)
            out, quality = matched[base.bytes]
            rows.append(Row(path.name, "vqcodec", f"{_matched_setting(base.codec, base.setting)} ({out.point.name})", len(out.data),
                            8 * len(out.data) / seconds / 1000, quality))
    return rows


# -- report ---------------------------------------------------------------------------------------
def _label(request: str, point: str) -> str:
    """What a row of ours is summarised under: the request when it is a target rate (the point
    chosen then varies with each file's size), else the point."""
    return request if request.strip().lower().endswith(("bps", "bpp")) else point


def _our_setting(request: str, point: str) -> str:
    label = _label(request, point)
    return point if label == point else f"{label} ({point})"


def _base_setting(setting: str) -> str:
    return setting.split(" (")[0].split(": cannot reach")[0]


#: the second metric a baseline is paired on, beside the first (images: PSNR, then MS-SSIM; audio: PESQ, then STOI)
_SECONDARY = {"psnr": "ms_ssim", "pesq": "stoi"}


def _diffs(pairs: list[tuple[Row, Row]], metric: str) -> list[float]:
    """Ours minus the baseline's ``metric`` over ``(ours, baseline)`` row pairs where both are known."""
    vals = [(a.metrics.get(metric, float("nan")), b.metrics.get(metric, float("nan"))) for a, b in pairs]
    return [a - b for a, b in vals if not (math.isnan(a) or math.isnan(b))]


def _summary(rows: list[Row]) -> list[dict[str, Any]]:
    """Means per (codec, setting), in the order settings first appear; NaN-free means.

    A size-matched baseline (setting ``"<= POINT"``) gets one entry over the files it could reach,
    and ``delta``: the mean of ours minus it in the first quality metric (PSNR, else PESQ) over
    those same files — positive where ours is better. A fixed-rate baseline (Opus at 6 kbps, a
    Codec2 mode) is compared per file with our file coded within its file's size (a setting
    ``"at <codec> <setting>"``, where the evaluation made one), else with our best evaluated point
    whose real rate is not above its own (``delta`` over the files where such a point exists,
    ``paired`` of them). The second
    metric (MS-SSIM, STOI) is paired the same way, as ``delta_<metric>``.
    """
    groups: dict[tuple[str, str], list[Row]] = {}
    ours: dict[tuple[str, str], Row] = {}
    for r in rows:
        groups.setdefault((r.codec, _base_setting(r.setting)), []).append(r)
        if r.codec == "vqcodec":
            ours[(r.file, _base_setting(r.setting))] = r
    primary = next((m for m in ("psnr", "pesq") if any(m in r.metrics for r in rows)), None)
    secondary = _SECONDARY.get(primary or "")
    if not any(secondary in r.metrics for r in rows):
        secondary = None
    out = []
    for (codec, setting), rs in groups.items():
        ok = [r for r in rs if not math.isnan(r.rate)]
        entry: dict[str, Any] = {"codec": codec, "setting": setting, "files": len(ok), "of": len(rs)}
        entry["rate"] = float(np.mean([r.rate for r in ok])) if ok else float("nan")
        names = sorted({k for r in ok for k in r.metrics})
        for k in names:
            vals = [r.metrics[k] for r in ok if not math.isnan(r.metrics.get(k, float("nan")))]
            entry[k] = float(np.mean(vals)) if vals else float("nan")
        if codec != "vqcodec" and primary:
            pairs = []
            for r in ok:
                if setting.startswith("<= "):
                    mine = ours.get((r.file, setting[3:]))
                else:  # ours coded within its file's size, else our highest-rate row on this file at or below its rate
                    mine = ours.get((r.file, _matched_setting(codec, setting)))
                    if mine is None:
                        cands = [o for (f, _), o in ours.items() if f == r.file and o.rate <= r.rate * (1 + 1e-9)]
                        mine = max(cands, key=lambda o: o.rate, default=None)
                if mine is not None:
                    pairs.append((mine, r))
            diffs = _diffs(pairs, primary)
            if diffs:
                entry["delta"] = float(np.mean(diffs))
                entry["paired"] = len(diffs)
                if secondary and (more := _diffs(pairs, secondary)):
                    entry[f"delta_{secondary}"] = float(np.mean(more))
        out.append(entry)
    return out


def write_report(rows: list[Row], folder: Path, unit: str, title: str) -> dict[str, Path]:
    """``results.csv``, ``summary.md`` and ``rd.png`` in ``folder``; returns their paths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    metric_names = sorted({k for r in rows for k in r.metrics})
    csv_path = folder / "results.csv"
    with open(csv_path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["file", "codec", "setting", "bytes", unit, *metric_names])
        for r in rows:
            w.writerow([r.file, r.codec, r.setting, r.bytes, f"{r.rate:.6g}", *(f"{r.metrics.get(k, float('nan')):.6g}" for k in metric_names)])
    summary = _summary(rows)
    md = [f"# {title}", "", f"Means over files; rates are real ({unit}, from file sizes)."]
    deltas = any("delta" in e for e in summary)
    primary = next((m for m in ("psnr", "pesq") if m in metric_names), "")
    if deltas and any(e["setting"].startswith("<= ") for e in summary):
        md.append(f"A baseline at `<= POINT` is at its best quality not larger than our file at POINT, per file; "
                  f"its means are over the files it can reach (`files`), and `ours - it` is our {primary} minus its "
                  f"{primary} on those files (positive: ours is better). Where it cannot reach, ours is smaller.")
    elif deltas and any(e["setting"].startswith(_MATCHED) for e in summary):
        md.append(f"`vqcodec` at `<codec> <setting>`: ours coded, per file, within the size of that baseline's file "
                  f"(a rate target of its real rate). `ours - it`: per file, our {primary} there (for a baseline "
                  f"without such a row: at our best evaluated point whose real rate is not above the baseline's) "
                  f"minus the baseline's {primary}; the mean over the files where such a point exists (`n=`). "
                  f"Positive: ours is better at no more bits.")
    elif deltas:
        md.append(f"`ours - it`: per file, our {primary} at our best evaluated point whose real rate is not above "
                  f"the baseline's, minus the baseline's {primary}; the mean over the files where such a point "
                  f"exists (`n=`). Positive: ours is better at no more bits.")
    md.append("")
    secondary = _SECONDARY.get(primary)
    second = deltas and secondary in metric_names and any(f"delta_{secondary}" in e for e in summary)
    extra = ([f"ours - it ({primary})"] if deltas else []) + ([f"ours - it ({secondary})"] if second else [])
    md.append("| codec | setting | files | " + unit + " | " + " | ".join(metric_names + extra) + " |")
    md.append("|---|---|---:|---:|" + "---:|" * (len(metric_names) + len(extra)))
    for e in summary:
        files = f"{e['files']}" if e["files"] == e["of"] else f"{e['files']} of {e['of']}"
        vals = ["-" if math.isnan(e.get(k, float("nan"))) else f"{e[k]:.4g}" for k in metric_names]
        if deltas:
            paired = f" (n={e['paired']})" if "delta" in e and e["paired"] != e["files"] else ""
            vals.append(f"{e['delta']:+.2f}{paired}" if "delta" in e else "-")
        if second:
            key = f"delta_{secondary}"
            vals.append(f"{e[key]:+.3f}" if key in e else "-")
        rate = "-" if math.isnan(e["rate"]) else f"{e['rate']:.4g}"
        md.append(f"| {e['codec']} | {e['setting']} | {files} | {rate} | {' | '.join(vals)} |")
    md_path = folder / "summary.md"
    md_path.write_text("\n".join(md) + "\n")
    png_path = folder / "rd.png"
    _plot(summary, metric_names, unit, title, png_path)
    return {"csv": csv_path, "markdown": md_path, "plot": png_path}


def _plot(summary: list[dict[str, Any]], metric_names: list[str], unit: str, title: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = [m for m in ("psnr", "ms_ssim", "pesq", "stoi", "si_sdr", "mel") if m in metric_names]
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.5 * len(metrics), 3.8), squeeze=False)
    def series(e: dict[str, Any]) -> str:  # ours within the baselines' sizes apart from ours at our requests
        return f"{e['codec']} at baseline sizes" if e["setting"].startswith(_MATCHED) else e["codec"]

    codecs = list(dict.fromkeys(series(e) for e in summary))
    for ax, m in zip(axes[0], metrics):
        for c in codecs:
            pts = sorted((e["rate"], e.get(m, float("nan"))) for e in summary if series(e) == c)
            pts = [p for p in pts if not (math.isnan(p[0]) or math.isnan(p[1]))]
            if pts:
                ax.plot(*zip(*pts), marker="o", label=c)
        ax.set_xlabel(unit)
        ax.set_ylabel(m)
        ax.grid(alpha=0.3)
    axes[0][0].legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
