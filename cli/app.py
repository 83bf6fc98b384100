"""The ``vqcodec`` command.

Files: ``compress``, ``decompress``, ``info``, ``tokenize``, ``detokenize``. Models: ``models``,
``rates``, ``quantizers``, ``train``. Every file command takes files, folders and globs, writes
outputs atomically, never overwrites without ``--force``, reports a bad input as one line on
stderr and goes on with the rest, and exits non-zero if anything failed (``--debug`` shows the
traceback instead).
"""

from __future__ import annotations

import json
import sys
import time
from enum import Enum
from pathlib import Path
from typing import Any, Callable, List, Optional

import typer
from rich.console import Console
from rich.table import Table

import codec
from cli.batch import EXPECTED_ERRORS, Item, UsageError, expand_inputs, plan_outputs, run_batch

app = typer.Typer(
    name="vqcodec",
    help="Neural audio and image codecs built on vector quantization.",
    no_args_is_help=True,
    add_completion=False,
)
console = Console()
err_console = Console(stderr=True)


class Device(str, Enum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


class Modality(str, Enum):
    image = "image"
    audio = "audio"


class Alpha(str, Enum):
    refuse = "refuse"
    drop = "drop"
    flatten = "flatten"


def _device(choice: Device) -> str:
    import torch

    if choice == Device.auto:
        return "cuda" if torch.cuda.is_available() else "cpu"
    if choice == Device.cuda and not torch.cuda.is_available():
        _fail("--device cuda: no CUDA device is available (use --device cpu or auto)")
    return choice.value


def _fail(message: str, code: int = 2) -> None:
    err_console.print(f"[red]error:[/red] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def _guard(debug: bool, fn: Any, *args: Any, **kwargs: Any) -> Any:
    """Run ``fn``; an expected error becomes one line on stderr and exit code 1."""
    try:
        return fn(*args, **kwargs)
    except UsageError as err:
        _fail(str(err), 2)
    except EXPECTED_ERRORS as err:
        if debug:
            raise
        _fail(str(err).splitlines()[0] if str(err) else type(err).__name__, 1)


DEVICE = typer.Option(Device.auto, help="auto (CUDA if available), cpu or cuda.")
FORCE = typer.Option(False, "--force", "-f", help="Overwrite existing output files.")
QUIET = typer.Option(False, "--quiet", "-q", help="No progress bar or summary.")
MODEL_HELP = "Model name (see `vqcodec models`) or model folder; default: the bundled model of the input's modality."
VARIABLE_DEPTH = typer.Option(True, "--variable-depth/--fixed-depth", help="Rate targets (kbps/bpp) with residual models: every latent position codes its own number of levels, spent where they help most (default); --fixed-depth codes one depth for the whole file.")
POSTFILTER = typer.Option(True, "--postfilter/--no-postfilter", help="Audio: end decoding with the model's speech postfilter, where it has one (leave it out for music; see vqcodec rates).")
ENVELOPE = typer.Option(None, "--envelope/--no-envelope", help="Audio: band-energy side information (each band's energy per ~0.1 s restored by the decoder; default the model's, see vqcodec rates). Its bytes count toward --rate.")
REFINE = typer.Option(None, "--refine", min=0, max=1000, help="Analysis-by-synthesis: gradient steps that choose codes by what the decoder makes of them (0 off; default the model's). Never worse on the model's objective and never larger per tile; about one decoder pass with gradient per step and rate point tried. Files decode with any build.")
BEAM = typer.Option(None, "--beam", min=1, max=64, help="Residual code search: code prefixes kept per level (1 greedy; default the model's). Larger: codes closer to the encoder's output at the same rate point, slower encoding; files decode with any build.")
DEBUG = typer.Option(False, help="Show tracebacks instead of one-line errors.")


def _version(value: bool) -> None:
    if value:
        console.print(f"vqcodec {codec.__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Optional[bool] = typer.Option(
        None, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """Neural audio and image codecs built on vector quantization."""


@app.command()
def quantizers(
    dim: int = typer.Option(64, min=1, help="Token dimension D to instantiate each quantizer with."),
    codebook_size: int = typer.Option(1024, min=2, help="Codebook size K to instantiate each quantizer with."),
) -> None:
    """List the registered quantizers with their real codebook size, bits per token and parameters."""
    from codec.quant import get_quantizer, list_quantizers

    table = Table(title=f"quantizers at dim={dim}, codebook_size={codebook_size}")
    for col in ("name", "class", "codebook size", "bits/token", "parameters", "buffers"):
        table.add_column(col, justify="left" if col in ("name", "class") else "right")
    for name in list_quantizers():
        try:
            q = get_quantizer(name, dim=dim, codebook_size=codebook_size)
        except ValueError as err:  # e.g. a shape that does not split dim
            table.add_row(name, "-", "-", "-", "-", f"[red]{err}[/red]")
            continue
        params = sum(p.numel() for p in q.parameters())
        buffers = sum(b.numel() for b in q.buffers())
        table.add_row(
            name, type(q).__name__, f"{q.codebook_size:,}", f"{q.bits_per_token:.2f}", f"{params:,}", f"{buffers:,}"
        )
    console.print(table)


def _fmt_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def _match_kbps(text: str, debug: bool) -> float:
    """``--match-up-to``: a rate in kbps or bps (``"6kbps"`` -> 6.0)."""
    from codec.model import parse_rate

    value, unit = _guard(debug, parse_rate, text)
    if unit != "kbps":
        _fail(f"--match-up-to takes an audio rate such as 6kbps, not {text!r}")
    return value


def _is_target(rate: str) -> bool:
    """Whether ``rate`` is a rate target (a number with a unit), not a point name, max or min."""
    from codec.model import RateError, parse_rate

    try:
        parse_rate(rate)
    except RateError:
        return False
    return True


def _summary(reports: list[Any], title: str, quiet: bool) -> None:
    if quiet or not reports:
        return
    table = Table(title=title, title_justify="left")
    for col in ("input", "output", "point", "bytes in", "bytes out", "real rate", ""):
        table.add_column(col, justify="right" if col.startswith(("bytes", "real")) else "left", overflow="fold")
    for r in reports:
        levels = getattr(r, "mean_levels", None)  # a variable depth: up to the point's levels, this many on average
        point = r.rate_point if levels is None else f"{r.rate_point} (variable, {levels:.2f} levels)"
        table.add_row(r.input, r.output, point, f"{r.bytes_in:,}", f"{r.bytes_out:,}",
                      f"{r.real_rate:.4g} {r.unit}", "stepped down" if r.notes else "")
    if len(reports) > 1:
        rates: dict[str, list[float]] = {}
        for r in reports:
            rates.setdefault(r.unit, []).append(r.real_rate)
        mean = ", ".join(f"{sum(v) / len(v):.4g} {u}" for u, v in rates.items())
        table.add_row(f"[bold]{len(reports)} files[/bold]", "", "", f"{sum(r.bytes_in for r in reports):,}",
                      f"{sum(r.bytes_out for r in reports):,}", f"mean {mean}", "")
    err_console.print(table)


def _read_stdin() -> bytes:
    data = sys.stdin.buffer.read()
    if not data:
        raise UsageError("standard input is empty")
    return data


def _write_stdout(data: bytes) -> None:
    sys.stdout.buffer.write(data)
    sys.stdout.buffer.flush()


@app.command()
def compress(
    inputs: List[str] = typer.Argument(..., help="Image/audio files, folders (recursed) or globs; - reads standard input."),
    output: Optional[str] = typer.Option(None, "-o", "--output", help="Output file (one input) or folder (several); - writes standard output. Default: beside each input."),
    rate: str = typer.Option(..., "--rate", "-r", help="Rate point name, max, min, or a target such as 6kbps, 1.5kbps, 0.05bpp."),
    model: Optional[str] = typer.Option(None, "--model", "-m", help=MODEL_HELP),
    modality: Optional[Modality] = typer.Option(None, help="image or audio; default: from the file suffix (or the model)."),
    device: Device = DEVICE,
    alpha: Alpha = typer.Option(Alpha.refuse, help="Images with transparency: refuse, drop the alpha channel, or flatten over white."),
    chunk_seconds: Optional[float] = typer.Option(None, min=0.05, help="Audio: seconds per independently coded chunk (default 10)."),
    tile: Optional[int] = typer.Option(None, min=8, help="Images: tile side in pixels for large images (default 768)."),
    batch_size: Optional[int] = typer.Option(None, min=1, help="Chunks/tiles of equal size encoded per network pass; default 8 on CUDA (throughput), 1 on CPU (memory)."),
    beam: Optional[int] = BEAM,
    refine: Optional[int] = REFINE,
    envelope: Optional[bool] = ENVELOPE,
    variable_depth: bool = VARIABLE_DEPTH,
    force: bool = FORCE,
    quiet: bool = QUIET,
    debug: bool = DEBUG,
) -> None:
    """Compress images or audio into .vqc files at a chosen rate."""
    from codec.files import compress_file
    from codec.hub import default_model_name, load_model
    from codec.io import AUDIO_SUFFIXES, IMAGE_SUFFIXES

    dev = _device(device)
    batch_size = batch_size or (8 if dev == "cuda" else 1)
    items, many = _guard(debug, expand_inputs, inputs, IMAGE_SUFFIXES + AUDIO_SUFFIXES)
    _guard(debug, plan_outputs, items, output, many, lambda item: ".vqc")
    fixed = None
    if model is not None:
        fixed = _guard(debug, load_model, model, dev)
        fixed.batch_size = batch_size
        _guard(debug, fixed.select_rate, rate)  # a rate this model cannot serve fails once, up front

    from codec.io import InputError, modality_of

    def job(item: Item, tick: Callable[[float], None]) -> Any:
        guessed = modality_of(item.input) if item.input != "-" else None
        kind = modality.value if modality else (guessed or (fixed.modality if fixed is not None else None))
        m = fixed
        if m is not None and kind is not None and kind != m.modality:
            raise InputError(f"{item.input}: an {kind} file, but {m.name or model} is an {m.modality} model")
        if m is None and kind is not None:
            m = load_model(default_model_name(kind), dev)
            m.batch_size = batch_size
        tile_arg = None
        if m is not None and m.modality == "audio" and chunk_seconds is not None:
            tile_arg = round(chunk_seconds * (m.sample_rate or 1))
        elif m is not None and m.modality == "image" and tile is not None:
            tile_arg = tile
        data = _read_stdin() if item.input == "-" else None
        report, blob = compress_file(item.input, item.output, rate=rate, model=m, data=data, modality=kind,
                                     alpha=alpha.value, device=dev, force=force, tile=tile_arg,
                                     progress=tick, beam_size=beam, refine_steps=refine,
                                     envelope=envelope if m is None or m.modality == "audio" else None,
                                     variable_depth=variable_depth)
        if item.output == "-":
            _write_stdout(blob)
        for note in report.notes:
            err_console.print(f"[yellow]note:[/yellow] {item.input}: {note}", highlight=False, soft_wrap=True)
        return report

    t0 = time.perf_counter()
    reports, failures = run_batch(items, job, err_console, description="compress", debug=debug, quiet=quiet,
                                  audio_seconds=lambda r: r.duration_s or 0.0)
    _summary(reports, f"compressed {len(reports)} file(s) in {time.perf_counter() - t0:.1f} s", quiet or output == "-")
    if failures:
        raise typer.Exit(1)


def _default_suffix(item: Item, fmt: Optional[str], model: Any = None) -> str:
    if fmt:
        return "." + fmt.lower().lstrip(".")
    try:
        from codec.files import read_vqc_header

        header = read_vqc_header(Path(item.input).read_bytes(), model) if item.input != "-" else {}
    except (OSError, ValueError):
        return ".out"  # the job reports the real problem
    source = header.get("source", {}) if isinstance(header.get("source"), dict) else {}
    if header.get("modality") == "audio":
        known = {"WAV": ".wav", "FLAC": ".flac", "OGG": ".ogg", "AIFF": ".aiff"}
        return known.get(str(source.get("format", "")).upper(), ".wav")
    return ".png"


@app.command()
def decompress(
    inputs: List[str] = typer.Argument(..., help=".vqc files, folders (recursed) or globs; - reads standard input."),
    output: Optional[str] = typer.Option(None, "-o", "--output", help="Output file (one input) or folder (several); - writes standard output (needs --format). Default: beside each input."),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Model name or folder; default: the model named in each file (its weights hash must match)."),
    format: Optional[str] = typer.Option(None, "--format", help="Output format (wav, flac, ogg, png, jpeg, webp, tiff...); default: -o's suffix, else the source's audio format or PNG."),
    postfilter: bool = POSTFILTER,
    device: Device = DEVICE,
    force: bool = FORCE,
    quiet: bool = QUIET,
    debug: bool = DEBUG,
) -> None:
    """Decode .vqc files back to images or audio in their original size, rate and format."""
    import tempfile

    from codec.files import decompress_file
    from codec.hub import load_model

    dev = _device(device)
    items, many = _guard(debug, expand_inputs, inputs, (".vqc",))
    if output == "-" and not format:
        _fail("-o - (standard output) needs --format")
    fixed = _guard(debug, load_model, model, dev) if model is not None else None
    _guard(debug, plan_outputs, items, output, many, lambda item: _default_suffix(item, format, fixed))

    def job(item: Item, tick: Callable[[float], None]) -> Any:
        data = _read_stdin() if item.input == "-" else None
        if item.output == "-":
            with tempfile.TemporaryDirectory() as tmp:
                target = Path(tmp) / f"out.{format}"
                report = decompress_file(item.input, target, model=fixed, data=data, format=format, device=dev,
                                         progress=tick, postfilter=postfilter)
                _write_stdout(target.read_bytes())
                report.output = "-"
                return report
        return decompress_file(item.input, item.output, model=fixed, data=data, format=format, device=dev, force=force,
                               progress=tick, postfilter=postfilter)

    t0 = time.perf_counter()
    reports, failures = run_batch(items, job, err_console, description="decompress", debug=debug, quiet=quiet,
                                  audio_seconds=lambda r: r.duration_s or 0.0)
    _summary(reports, f"decompressed {len(reports)} file(s) in {time.perf_counter() - t0:.1f} s", quiet or output == "-")
    if failures:
        raise typer.Exit(1)


def _file_info(path: str, model: Any = None) -> dict[str, Any]:
    from codec.files import ModelUnavailable, read_vqc_header
    from codec.io import InputError
    from codec.model import read_vqc

    p = Path(path)
    if not p.is_file():
        raise InputError(f"{path}: no such file")
    data = p.read_bytes()
    try:
        header = read_vqc_header(data, model)
        note = ""
    except ModelUnavailable as err:  # a version-5 header leaves fields to its model: show what the file says
        header, note = read_vqc(data)[0], f"{err} to show what it implies"
    shape = header.get("shape") if isinstance(header.get("shape"), list) else []
    source = header.get("source") if isinstance(header.get("source"), dict) else {}
    info: dict[str, Any] = {"file": path, "bytes": len(data), **header, **({"note": note} if note else {})}
    modality = header.get("modality")
    if modality is None:  # not resolved: the source record tells audio (frames), the shape an image (2-D)
        modality = "audio" if "frames" in source else "image" if len(shape) == 4 else None
    try:
        if modality == "audio":
            seconds = (shape[-1] / float(header["sample_rate"]) if "sample_rate" in header
                       else source["frames"] / float(source["sample_rate"]))
            info.update(duration_s=seconds, real_rate=8 * len(data) / seconds / 1000, unit="kbps")
        elif modality == "image":
            pixels = shape[-1] * shape[-2]
            info.update(pixels=pixels, real_rate=8 * len(data) / pixels, unit="bpp")
    except (TypeError, KeyError, IndexError, ZeroDivisionError):
        raise InputError(f"{path}: header lacks a valid shape or sample rate") from None
    return info


@app.command()
def info(
    files: List[str] = typer.Argument(..., help=".vqc files."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON (one object per file, in a list)."),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Model name or folder that completes the header (version 5 leaves to the model what it implies); default: the model named in each file."),
    debug: bool = DEBUG,
) -> None:
    """Show a .vqc file's header: model, rate point, real rate, original format."""
    from codec.hub import load_model

    fixed = _guard(debug, load_model, model, "cpu") if model is not None else None
    results, failures = [], 0
    for f in files:
        try:
            results.append(_file_info(f, fixed))
        except EXPECTED_ERRORS as err:
            if debug:
                raise
            failures += 1
            err_console.print(f"[red]error:[/red] {err}", highlight=False, soft_wrap=True)
    if as_json:
        console.print_json(json.dumps(results))
    else:
        for r in results:
            table = Table(title=r["file"], title_justify="left", show_header=False)
            model = r.get("model", {}) if isinstance(r.get("model"), dict) else {}
            rows = [
                ("modality", r.get("modality")),
                ("model", f"{model.get('name') or '(unnamed)'}  sha256 {str(model.get('sha256', ''))[:16]}…"),
                ("rate point", r.get("rate_point")),
                ("real rate", f"{r['real_rate']:.4g} {r['unit']} ({r['bytes']:,} bytes, header included)" if "real_rate" in r
                 else f"{r['bytes']:,} bytes"),
                ("signal", f"shape {r.get('shape')}" + (f", {r['duration_s']:.3f} s at {r.get('sample_rate')} Hz" if "duration_s" in r else "")),
                ("tiles", f"{r.get('tiles', {}).get('size')} overlap {r.get('tiles', {}).get('overlap')}"),
                ("coding", str(r.get("coding")) + (f", band energies ({r['envelope']})" if r.get("envelope") else "")),
                ("source", json.dumps(r.get("source", {}))),
                *([("note", r["note"])] if "note" in r else []),
            ]
            for k, v in rows:
                table.add_row(k, str(v))
            console.print(table)
    if failures:
        raise typer.Exit(1)


@app.command()
def models(as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """List the bundled and registered models (register folders with VQCODEC_MODELS)."""
    from codec.hub import list_models

    entries = list_models()
    if as_json:
        console.print_json(json.dumps([{**e.__dict__, "path": str(e.path)} for e in entries]))
        return
    if not entries:
        console.print("no models installed: this build bundles none yet; pass --model PATH, or list model "
                      "folders in VQCODEC_MODELS")
        return
    table = Table(title="models")
    for col in ("name", "modality", "source", "default", "description", "path"):
        table.add_column(col, overflow="fold")
    for e in entries:
        table.add_row(e.name, e.modality, e.source, "yes" if e.default else "", e.description, str(e.path))
    console.print(table)


@app.command()
def rates(
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Model name or folder; default: every bundled default model."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
    debug: bool = DEBUG,
) -> None:
    """The operating points of a model: bits per token, nominal and measured rate."""
    from codec.hub import list_models, load_model

    if model is not None:
        names = [model]
    else:
        names = [e.name for e in list_models() if e.default]
        if not names:
            _fail("no bundled default models in this build; pass --model PATH", 1)
    out = []
    for name in names:
        m = _guard(debug, load_model, name)
        points = [
            {"name": p.name, "bits_per_token": p.bits_per_token, "nominal": p.nominal, "measured": p.measured, "unit": p.unit}
            for p in m.rate_points()
        ]
        out.append({"model": m.name or str(name), "modality": m.modality, "sha256": m.weights_sha256(),
                    "beam_size": m.beam_size, "refine_steps": m.refine_steps, "points": points,
                    "envelope": None if m.envelope is None else {"name": m.envelope.name, "kbps": m.envelope_kbps,
                                                                 "default": m.envelope_default},
                    "postfilter": None if m.postfilter is None else m.postfilter.config(),
                    "shallow_decoder": None if m.shallow_decoder is None else m.shallow_decoder.config()})
    if as_json:
        console.print_json(json.dumps(out))
        return
    for entry in out:
        beam = f", beam {entry['beam_size']}" if entry["beam_size"] > 1 else ""
        beam += f", refined {entry['refine_steps']} steps" if entry["refine_steps"] > 0 else ""
        table = Table(title=f"{entry['model']} ({entry['modality']}{beam})", title_justify="left")
        for col in ("point", "bits/token", "nominal", "measured (real files)"):
            table.add_column(col, justify="left" if col == "point" else "right")
        for p in entry["points"]:
            measured = f"{p['measured']:.4g} {p['unit']}" if p["measured"] is not None else "-"
            table.add_row(p["name"], f"{p['bits_per_token']:.2f}", f"{p['nominal']:.4g} {p['unit']}", measured)
        console.print(table)
        if entry["envelope"]:
            env = entry["envelope"]
            console.print(f"band energies ({env['name']}): +{env['kbps']:.3g} kbps measured, "
                          f"{'on' if env['default'] else 'off'} by default (--envelope/--no-envelope); "
                          "a rate target counts them", style="dim")
        if entry.get("postfilter"):
            pf = entry["postfilter"]["kwargs"]
            what = f", strength {pf['strength']:g}" if "strength" in pf else ""
            console.print(f"decoder postfilter ({entry['postfilter']['name']}{what}): on by default, "
                          "costs no bits; decompress --no-postfilter leaves it out (music)", style="dim")
        if entry.get("shallow_decoder"):
            sd = entry["shallow_decoder"]
            console.print(f"shallow decoder: positions coding at most {sd['max_levels']} level(s) are decoded by a "
                          f"second decoder (blended over {2 * sd['smooth_frames'] + 1} positions); costs no bits"
                          + ("" if sd.get("model_energies_share") is None else
                             f"; band energies measured against the model decoder in tiles at least "
                             f"{sd['model_energies_share']:.0%} shallow"), style="dim")
        if entry["modality"] == "audio":
            console.print("audio rates are per channel; a target for a stereo file counts both channels", style="dim")


@app.command()
def tokenize(
    inputs: List[str] = typer.Argument(..., help="Image/audio files, folders (recursed) or globs."),
    output: str = typer.Option(..., "-o", "--output", help="The .safetensors file to write."),
    rate: str = typer.Option("max", "--rate", "-r", help="Rate point name, max, min, or a target rate."),
    model: Optional[str] = typer.Option(None, "--model", "-m", help=MODEL_HELP),
    modality: Optional[Modality] = typer.Option(None, help="image or audio; default: from the file suffix."),
    device: Device = DEVICE,
    alpha: Alpha = typer.Option(Alpha.refuse, help="Images with transparency: refuse, drop or flatten."),
    beam: Optional[int] = BEAM,
    refine: Optional[int] = REFINE,
    force: bool = FORCE,
    quiet: bool = QUIET,
    debug: bool = DEBUG,
) -> None:
    """Write the code indices of each input into one safetensors file (for language-model work).

    One int32 tensor per input, keyed by its path below the folder given (or its name): audio
    (channels, levels, frames), images (levels, h, w). The file's metadata entry "vqcodec" holds,
    per key, the model, weights hash, rate point, coded shape, tiling and source format, which
    `vqcodec detokenize` needs.
    """
    from codec.files import tokenize_file
    from codec.hub import load_model
    from codec.io import AUDIO_SUFFIXES, IMAGE_SUFFIXES, atomic_output

    dev = _device(device)
    if Path(output).exists() and not force:
        _fail(f"{output} exists (use --force to overwrite)", 1)
    items, _ = _guard(debug, expand_inputs, inputs, IMAGE_SUFFIXES + AUDIO_SUFFIXES)
    fixed = _guard(debug, load_model, model, dev) if model is not None else None
    tensors: dict[str, Any] = {}
    meta: dict[str, Any] = {}

    def job(item: Item, _tick: Callable[[float], None]) -> Any:
        key = item.relative.as_posix()
        if key in tensors:
            raise ValueError(f"{item.input}: two inputs share the key {key!r}")
        tokens, source, m = tokenize_file(item.input, rate=rate, model=fixed, modality=modality.value if modality else None,
                                          alpha=alpha.value, device=dev, beam_size=beam,
                                          refine_steps=refine)
        tensors[key] = tokens.codes.to(dtype=__import__("torch").int32).contiguous()
        meta[key] = {"model": m.name, "sha256": m.weights_sha256(), "rate_point": tokens.point.name,
                     "shape": list(tokens.shape), "tiles": tokens.tiles, "source": source, "modality": m.modality}
        return key

    _, failures = run_batch(items, job, err_console, description="tokenize", debug=debug, quiet=quiet)
    if tensors:
        from codec.storage import write_safetensors

        def write() -> None:
            with atomic_output(output, force) as tmp:
                write_safetensors(tensors, tmp, metadata={"format": "vqcodec-tokens", "version": "1", "vqcodec": json.dumps(meta)})

        _guard(debug, write)
        if not quiet:
            err_console.print(f"wrote {len(tensors)} code tensor(s) to {output}")
    if failures:
        raise typer.Exit(1)


@app.command()
def detokenize(
    tokens_file: str = typer.Argument(..., help="A .safetensors file written by `vqcodec tokenize`."),
    output: str = typer.Option(..., "-o", "--output", help="Output folder (one file per key)."),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Model name or folder; default: the model named in the file."),
    format: Optional[str] = typer.Option(None, "--format", help="Output format; default: wav for audio, png for images."),
    device: Device = DEVICE,
    force: bool = FORCE,
    quiet: bool = QUIET,
    debug: bool = DEBUG,
) -> None:
    """Decode the code tensors of a tokens file back to audio or images."""
    from codec.files import detokenize as restore
    from codec.hub import load_model
    from codec.io import write_audio, write_image
    from codec.model import Tokens

    dev = _device(device)
    tensors, meta = _guard(debug, _read_tokens, tokens_file)
    fixed = _guard(debug, load_model, model, dev) if model is not None else None
    items = [Item(key, Path(key)) for key in tensors]

    def job(item: Item, _tick: Callable[[float], None]) -> Any:
        info = meta.get(item.input)
        if not isinstance(info, dict):
            raise ValueError(f"{item.input}: no metadata for this key")
        m = fixed if fixed is not None else load_model(info["model"], dev)
        if m.weights_sha256() != info.get("sha256"):
            raise ValueError(f"{item.input}: codes were made by other weights ({str(info.get('sha256'))[:12]}…)")
        point = m.select_rate(str(info["rate_point"]))
        y = restore(Tokens(codes=tensors[item.input].long(), point=point, shape=tuple(info["shape"]), tiles=info["tiles"]),
                    m, info.get("source", {}))
        suffix = "." + (format or ("wav" if m.modality == "audio" else "png")).lower()
        target = Path(output) / Path(item.input).with_suffix(suffix)
        if m.modality == "audio":
            sr = int(info.get("source", {}).get("sample_rate", m.sample_rate))
            write_audio(target, [y], sr, y.shape[0], info.get("source", {}), format=format, force=force)
        else:
            write_image(target, y[None], info.get("source", {}), format=format, force=force)
        return target

    _, failures = run_batch(items, job, err_console, description="detokenize", debug=debug, quiet=quiet)
    if failures:
        raise typer.Exit(1)


def _read_tokens(path: str) -> tuple[dict[str, Any], dict[str, Any]]:
    from safetensors import safe_open

    from codec.io import InputError

    if not Path(path).is_file():
        raise InputError(f"{path}: no such file")
    try:
        with safe_open(path, framework="pt") as f:
            header = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as err:  # safetensors raises its own error types for foreign files
        raise InputError(f"{path}: not a safetensors file ({err})") from None
    if header.get("format") != "vqcodec-tokens":
        raise InputError(f"{path}: not a tokens file written by `vqcodec tokenize`")
    try:
        meta = json.loads(header.get("vqcodec", "{}"))
    except json.JSONDecodeError:
        raise InputError(f"{path}: unreadable tokens metadata") from None
    return tensors, meta


@app.command(name="eval")
def evaluate(
    folder: Path = typer.Argument(..., help="Folder of images or audio files (recursed)."),
    output: Path = typer.Option(..., "-o", "--output", help="Report folder: results.csv, summary.md, rd.png."),
    model: Optional[str] = typer.Option(None, "--model", "-m", help=MODEL_HELP),
    modality: Optional[Modality] = typer.Option(None, help="image or audio; default: the model's, else the folder's files."),
    rates: Optional[str] = typer.Option(None, help="Comma-separated rates (point names or targets); default: every rate point."),
    baselines: Optional[str] = typer.Option(None, help="Comma-separated: jpeg,webp,avif (images) or opus,codec2 (audio); default: all of the modality; 'none' for none."),
    max_files: Optional[int] = typer.Option(None, min=1, help="Evaluate this many files, spread evenly over the sorted folder."),
    max_seconds: Optional[float] = typer.Option(None, min=0.5, help="Audio: evaluate the first this many seconds of each file."),
    min_seconds: Optional[float] = typer.Option(None, min=0.0, help="Audio: leave out files shorter than this (container headers dominate tiny clips)."),
    sample_rate: Optional[int] = typer.Option(None, "--sample-rate", min=8000, max=192000, help="Audio: resample every file to this rate (Hz) first and score against that, e.g. 8000 for telephone speech (PESQ narrow-band below 16 kHz)."),
    match: Optional[str] = typer.Option(None, "--match-up-to", help="Audio: also code ours within the size of each baseline file whose nominal rate is at most this (e.g. 6kbps: every Codec2 mode and Opus at 6 kbps), and compare each such baseline with that file (iso-rate)."),
    device: Device = DEVICE,
    beam: Optional[int] = BEAM,
    refine: Optional[int] = REFINE,
    envelope: Optional[bool] = ENVELOPE,
    postfilter: bool = POSTFILTER,
    variable_depth: bool = VARIABLE_DEPTH,
    debug: bool = DEBUG,
) -> None:
    """Rate-distortion of a model on a folder, against JPEG/WebP/AVIF or Opus/Codec2, at real file sizes."""
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from codec.evaluate import AUDIO_BASELINES, IMAGE_BASELINES, evaluate_audio, evaluate_images, missing_tools, write_report
    from codec.hub import default_model_name, load_model
    from codec.io import AUDIO_SUFFIXES, IMAGE_SUFFIXES

    dev = _device(device)
    if not folder.is_dir():
        _fail(f"{folder}: not a folder", 1)
    kind = modality.value if modality else None
    if kind is None and model is None:
        has_audio = any(p.suffix.lower() in AUDIO_SUFFIXES for p in folder.rglob("*"))
        has_images = any(p.suffix.lower() in IMAGE_SUFFIXES for p in folder.rglob("*"))
        kind = "audio" if has_audio and not has_images else "image"
    m = _guard(debug, load_model, model if model is not None else _guard(debug, default_model_name, kind), dev)
    kind = m.modality
    allowed = IMAGE_BASELINES if kind == "image" else AUDIO_BASELINES
    chosen = list(allowed) if baselines is None else [b.strip().lower() for b in baselines.split(",") if b.strip() and b.strip().lower() != "none"]
    unknown = [b for b in chosen if b not in allowed]
    if unknown:
        _fail(f"unknown {kind} baseline(s) {', '.join(unknown)}; choose from {', '.join(allowed)}")
    for name, tools in missing_tools(chosen).items():
        err_console.print(f"[yellow]note:[/yellow] baseline {name} skipped: {', '.join(tools)} not installed "
                          "(Debian: apt-get install opus-tools codec2)", highlight=False)
    points = [r.strip() for r in rates.split(",")] if rates else [p.name for p in m.rate_points()]
    for r in points:
        _guard(debug, m.select_rate, r)
    run = evaluate_images if kind == "image" else evaluate_audio
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=err_console, transient=True) as progress:
        task = progress.add_task("eval", total=None)
        extra = ({"min_seconds": min_seconds, "sample_rate": sample_rate, "envelope": envelope, "postfilter": postfilter}
                 if kind == "audio" else {})
        extra["beam_size"] = beam
        extra["refine_steps"] = refine
        extra["variable_depth"] = variable_depth
        if (min_seconds or sample_rate or match) and kind != "audio":
            _fail("--min-seconds, --sample-rate and --match-up-to apply to audio")
        if match:
            extra["match_kbps"] = _match_kbps(match, debug)
        rows = _guard(debug, run, folder, m, points, chosen, lambda s: progress.update(task, description=f"eval {s}"),
                      max_files, max_seconds, **extra)
    unit = "bpp" if kind == "image" else "kbps"
    searched = beam if beam is not None else m.beam_size
    steps = refine if refine is not None else m.refine_steps
    search = [f"beam {searched}"] * (searched > 1) + [f"refined {steps} steps"] * (steps > 0)
    if variable_depth and steps == 0 and any(_is_target(r) for r in points):
        search.append("variable depth")
    if kind == "audio" and m.envelope is not None:
        search.append("band energies" if (envelope if envelope is not None else m.envelope_default) else "no band energies")
    if kind == "audio" and m.postfilter is not None:
        search.append("postfilter" if postfilter else "no postfilter")
    title = f"{m.name or model}" + (f" ({', '.join(search)})" if search else "") + f" on {folder.name}"
    paths = write_report(rows, output, unit, title)
    console.print(paths["markdown"].read_text(), markup=False, highlight=False)
    err_console.print(f"report: {paths['csv']}, {paths['markdown']}, {paths['plot']}")


RECIPES = {"image_codec": "recipes.image_codec", "audio_codec": "recipes.audio_codec"}


@app.command(
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    help="Run a training recipe: vqcodec train RECIPE [--config NAME|FILE] [--set KEY=VALUE ...] "
    "[--out DIR] [--resume] [--stop-at STEP]. Recipes: " + ", ".join(RECIPES) + ".",
)
def train(ctx: typer.Context, recipe: str = typer.Argument(..., help="image_codec or audio_codec")) -> None:
    import importlib

    if recipe not in RECIPES:
        console.print(f"[red]unknown recipe {recipe!r}[/red]; available: {', '.join(RECIPES)}")
        raise typer.Exit(2)
    module = importlib.import_module(RECIPES[recipe])
    try:
        export = module.main(list(ctx.args))
    except (ValueError, FileNotFoundError) as err:
        console.print(f"[red]error:[/red] {err}")
        raise typer.Exit(2) from None
    console.print(f"done; exported model: {export}")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
