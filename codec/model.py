"""The codec: ``Codec(encoder, quantizer, decoder)``, its rate points, and its weights format.

Data flow (see the README): signal -> ``encoder.prepare`` (pad, fold channels) -> encoder ->
latent ``(B, D, *S)`` -> tokens ``(B, N, D)`` -> quantizer -> codes; and back through
``quantizer.decode`` -> decoder -> ``encoder.restore`` (crop, unfold).

**Rate points.** The quantizer lists the settings it can encode at (``rvq``: number of levels;
RAQ: codebook sizes). Each becomes a :class:`RatePoint` with nominal bits per token and a nominal
rate, ``bits_per_token x tokens_per_unit``: kbps per audio channel (tokens per second =
``sample_rate / hop``) or bits per pixel for images (tokens per pixel = ``1 / factor^2``).
When a model is exported, the real rate measured on validation data can be stored per point;
selection uses the measured rate where one exists.

**Weights format.** A model folder holds ``model.safetensors`` (tensors only) and
``config.json`` (how to rebuild the model from the registries: network and quantizer names and
keyword arguments, measured rates), and may hold ``entropy.safetensors`` (entropy tables) and
``postfilter.safetensors`` (a learned postfilter) and ``shallow_decoder.safetensors`` (a decoder of
shallow codes, :mod:`codec.shallow`). No pickle anywhere. Models that differ only in
their config (a postfilter, an envelope) share those files instead of copying them: the config's
``shared_files`` names, per file, the sibling folder (same parent) that holds it
(:func:`model_files`); :meth:`Codec.save` always writes a complete folder.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import json
import math
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, NamedTuple

import numpy as np
import torch
from torch import Tensor, nn

from codec.bitstream import BitstreamError, read_container, write_container
from codec.envelope import BandEnergy, build_envelope
from codec.postfilter import POSTFILTER_FILE, Postfilter, build_postfilter, learned_stage
from codec.entropy import ColumnContexts, ContextTable, FrequencyTable, decode_tile, encode_tile, fit_column_contexts, min_tile_bits
from codec.losses import reconstruction_loss
from codec.nets import Decoder, Encoder, PadInfo, get_network
from codec.quant import Quantizer, channel_first, get_quantizer
from codec.quant.rvq import MAX_BEAM_SIZE
from codec.refine import MAX_REFINE_STEPS, OBJECTIVES, Candidate, Objective, best_candidate, refine_candidates
from codec.shallow import SHALLOW_DECODER_FILE, ShallowDecoder, build_shallow_decoder, code_depth
from codec.storage import write_safetensors
from codec.tiling import StreamResampler, TileGrid

__all__ = ["Codec", "CodecOutput", "Compressed", "EncodedCodes", "ParsedFile", "RatePoint", "Tokens", "RateError", "RateWarning", "parse_rate",
           "model_files"]

FORMAT_NAME = "vqcodec-model"
FORMAT_VERSION = 1
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
ENTROPY_FILE = "entropy.safetensors"
#: config key: ``{file name: sibling folder}`` for the files a model folder shares with another (:func:`model_files`)
SHARED_FILES_KEY = "shared_files"
SHAREABLE_FILES = (WEIGHTS_FILE, ENTROPY_FILE, POSTFILTER_FILE, SHALLOW_DECODER_FILE)
_SIBLING_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
MAX_REFINEMENTS = 4  # extra entropy-coding passes a rate target may spend filling its budget
MAX_EXTRA_DEPTH = 2  # levels beyond the chosen point's that a variable depth may code at a position
DEPTH_SEARCH_STEPS = 16  # bisection steps of the depth allocation's lambda (each one entropy-codes the file)
DEFAULT_BEAM_SIZE = 1  # residual code search of compress/encode/tokenize (Codec.beam_size)
DEFAULT_REFINE_STEPS = 0  # analysis-by-synthesis steps of compress/tokenize (Codec.refine_steps)
DEFAULT_REFINE_STEP_SIZE = 0.05  # relative to the latent's RMS (Codec.refine_step_size)
DEFAULT_REFINE_MAX_GROWTH = 0.0  # coded size a refined tile may add (Codec.refine_max_growth)
STORAGE_DTYPES = (torch.float16, torch.bfloat16)  # besides the model's own dtype
MAX_AUDIO_ELEMENTS = 1 << 32  # samples x channels in one .vqc file (~49 h of 24 kHz stereo)
MAX_IMAGE_ELEMENTS = 3 * (1 << 28)  # pixels x channels (a 268-megapixel RGB image)
MAX_TILE = 1 << 24  # samples or pixels per axis of one tile
MAX_CONFIG_BYTES = 1 << 20
#: hex digits of the weights' SHA-256 a file's header names its model by (32 bits: enough to
#: refuse other weights by mistake; version-3 files carry 16 digits, version-1/2 files all 64, and
#: any prefix this long is checked)
HEADER_HASH_CHARS = 8

_UNITS = {"bps": ("kbps", 1e-3), "kbps": ("kbps", 1.0), "bpp": ("bpp", 1.0)}
_RATE_RE = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*(bps|kbps|bpp)\s*$", re.IGNORECASE)


class RateError(ValueError):
    """A rate request that cannot be served; the message lists the available rates."""


class RateWarning(UserWarning):
    """A file was written at a lower rate point than asked, to keep its size within the request."""


@dataclass(frozen=True)
class RatePoint:
    """One operating point of a codec.

    Attributes:
        name: stable identifier, e.g. ``"n4"`` (4 residual levels) or ``"full"``.
        setting: keyword arguments of ``quantizer.encode`` / ``decode`` for this point.
        bits_per_token: nominal bits per token (sum of ``log2`` codebook sizes).
        nominal: nominal rate in ``unit``.
        unit: ``"kbps"`` (audio, per channel) or ``"bpp"`` (images).
        measured: real rate measured at export (file bytes, entropy coded), if known.
    """

    name: str
    setting: tuple[tuple[str, int], ...]
    bits_per_token: float
    nominal: float
    unit: str
    measured: float | None = None

    @property
    def rate(self) -> float:
        """The rate selection uses: measured where known, nominal otherwise."""
        return self.measured if self.measured is not None else self.nominal

    @property
    def kwargs(self) -> dict[str, int]:
        return dict(self.setting)

    def describe(self) -> str:
        real = f", measured {self.measured:.4g} {self.unit}" if self.measured is not None else ""
        return f"{self.name}: {self.nominal:.4g} {self.unit} nominal{real}"


def parse_rate(text: str) -> tuple[float, str]:
    """``"1.5kbps"`` -> ``(1.5, "kbps")``; ``"3000 bps"`` -> ``(3.0, "kbps")``; ``"0.05BPP"`` -> ``(0.05, "bpp")``.

    Raises :class:`RateError` for anything else.
    """
    m = _RATE_RE.match(text)
    if not m:
        raise RateError(f"cannot parse rate {text!r}: expected <number><unit> with unit bps, kbps or bpp")
    unit, scale = _UNITS[m.group(2).lower()]
    return float(m.group(1)) * scale, unit


def _codebooks(point: RatePoint) -> tuple[tuple[str, int], ...]:
    """``point``'s setting without its number of residual levels: the codebooks it codes with."""
    return tuple((k, v) for k, v in point.setting if k != "num_levels")


def _point_name(setting: Mapping[str, int]) -> str:
    if not setting:
        return "full"
    short = {"num_levels": "n", "codebook_size": "k"}
    return "-".join(f"{short.get(k, k)}{v}" for k, v in sorted(setting.items(), key=lambda kv: kv[0] != "codebook_size"))


@dataclass
class CodecOutput:
    """What :meth:`Codec.forward` returns in training.

    Attributes:
        x_hat: reconstruction in the input's layout and range (images clamped to ``[0, 1]``).
        loss: named scalar terms: ``recon`` plus the quantizer's terms.
        metrics: detached scalars from the quantizer (perplexity, usage, ...).
        codes: the quantizer codes ``(B, *latent_spatial[, levels])``.
        recon_target: the network-domain target (padded, per channel) that ``recon`` compares.
        recon: the network-domain reconstruction, unclamped (for extra losses).
        extra_recons: further network-domain reconstructions of multi-rate training, by tag
            (RAQ: ``"@k37"`` for the pass with a 37-code adapted codebook); their loss terms carry
            the same tag.
    """

    x_hat: Tensor
    loss: dict[str, Tensor]
    metrics: dict[str, Tensor]
    codes: Tensor
    recon_target: Tensor
    recon: Tensor
    extra_recons: dict[str, Tensor] = field(default_factory=dict)

    @property
    def total_loss(self) -> Tensor:
        return torch.stack([v.float() for v in self.loss.values()]).sum()


@dataclass
class EncodedCodes:
    """Codes of a batch plus what decoding needs: the rate point and the original shape."""

    codes: Tensor
    point: RatePoint
    shape: tuple[int, ...]
    padded: tuple[int, ...] = field(default=())
    #: band-energy steps ``(B, bands, blocks)`` the decoder applies (:mod:`codec.envelope`), if any
    envelope: Tensor | None = None


class TileTokens(NamedTuple):
    """One tile's encoder tokens ``(B, N, D)``, latent grid, padding record and, when refinement
    needs it, the prepared signal the decoder should reproduce; with side information, the
    prepared signal's band energies (:meth:`codec.envelope.BandEnergy.energies`)."""

    tokens: Tensor
    spatial: tuple[int, ...]
    info: PadInfo
    target: Tensor | None = None
    energy: Tensor | None = None


@dataclass
class Compressed:
    """A written ``.vqc`` file and how its rate came out.

    Attributes:
        data: the file's bytes.
        point: the rate point the payload is coded at.
        request: the rate asked for.
        real_rate: the file's real rate, header included (kbps of all channels, or bpp).
        unit: ``"kbps"`` or ``"bpp"``.
        notes: each step down to a lower point, or why the request could not be met.
        mean_levels: where the depth varies (a rate target's depth allocation), the residual
            levels coded per latent position on average; ``point`` is then the deepest point.
    """

    data: bytes
    point: RatePoint
    request: str
    real_rate: float
    unit: str
    notes: list[str] = field(default_factory=list)
    mean_levels: float | None = None


@dataclass
class Tokens:
    """Code indices of one signal for language-model work (see :meth:`Codec.tokenize`).

    Attributes:
        codes: int64, audio ``(channels, levels, frames)``, images ``(levels, h, w)``.
        point: the rate point the codes belong to.
        shape: the coded signal's shape ``(1, C, *spatial)`` (audio at the model's sample rate).
        tiles: the tiling used (``{"size": [...], "overlap": [...]}``), needed to decode.
    """

    codes: Tensor
    point: RatePoint
    shape: tuple[int, ...]
    tiles: dict[str, list[int]]


@dataclass
class ParsedFile:
    """A validated ``.vqc`` file: header, rate point, signal shape, tiles and payload chunks."""

    header: dict[str, Any]
    point: RatePoint
    shape: tuple[int, ...]
    grid: TileGrid
    chunks: list[bytes]
    tables: list[FrequencyTable] | None
    level_axis: bool
    contexts: list[ColumnContexts | None] | None = None
    #: one band-energy chunk per tile when the file carries them (:mod:`codec.envelope`)
    envelope_chunks: list[bytes] | None = None
    #: audio: the sample rate the signal is returned at (the source's), where the header says
    output_rate_hz: int | None = None


def _implied_tiles(shape: Any) -> dict[str, list[int]] | None:
    """The tiling a header without ``tiles`` implies: one tile of the whole signal, no overlap
    (``None`` for a shape that is not ``[1, C, *spatial]`` of integers)."""
    if not (isinstance(shape, list) and len(shape) >= 3 and _ints(shape)):
        return None
    return {"size": list(shape[2:]), "overlap": [0] * (len(shape) - 2)}


def compact_header(header: Mapping[str, Any], model: "Codec | None" = None) -> dict[str, Any]:
    """A file header without the fields a reader restores.

    Always (``.vqc`` version 4): ``coding`` when it is ``"range"`` and ``tiles`` when the signal is
    one tile without overlap (:func:`complete_header` restores both). With the writing ``model``
    (version 5), also what that model implies (:meth:`Codec.complete_header`): ``modality``, the
    audio ``sample_rate``, an audio ``shape`` that follows from the ``source`` record, and the
    ``rate_point`` as its index among the model's point names. A field is left out only when
    completing the shorter header gives back exactly the full one.
    """
    full = complete_header(header)
    out = dict(header)
    if out.get("coding") == "range":
        del out["coding"]
    if "tiles" in out and out["tiles"] == _implied_tiles(out.get("shape")):
        del out["tiles"]
    if model is None:
        return out
    names = model.point_names()

    def as_index(h: dict[str, Any]) -> dict[str, Any] | None:
        point = h.get("rate_point")
        return {**h, "rate_point": names.index(point)} if isinstance(point, str) and point in names else None

    def without(key: str) -> Any:
        return lambda h: {k: v for k, v in h.items() if k != key} if key in h else None

    for step in (as_index, without("modality"), without("sample_rate"), without("shape")):
        candidate = step(out)
        if candidate is None:
            continue
        try:
            restored = model.complete_header(candidate) == full
        except BitstreamError:
            restored = False
        if restored:  # a field goes only where the completion gives it back
            out = candidate
    return out


def complete_header(header: Mapping[str, Any]) -> dict[str, Any]:
    """A file header with the fields a writer may leave out without its model filled in:
    ``coding`` ``"range"``; ``tiles`` one tile of the whole signal (when the header gives its
    shape). Files of versions 1-3 carry both, and come back unchanged. What the model implies is
    filled in by :meth:`Codec.complete_header`."""
    out = dict(header)
    out.setdefault("coding", "range")
    if "tiles" not in out and (tiles := _implied_tiles(out.get("shape"))) is not None:
        out["tiles"] = tiles
    return out


def header_needs_model(header: Mapping[str, Any]) -> bool:
    """Whether a header (as :func:`complete_header` leaves it) lacks fields only its model
    restores (:meth:`Codec.complete_header`): a version-5 header always does, earlier ones never."""
    return not ("modality" in header and "shape" in header and isinstance(header.get("rate_point"), str))


def read_vqc(data: bytes) -> tuple[dict[str, Any], list[bytes]]:
    """``(header, chunks)`` of a ``.vqc`` file (:func:`codec.bitstream.read_container`), the header
    completed (:func:`complete_header`): what every reader of a codec's files starts from."""
    header, chunks = read_container(data)
    return complete_header(header), chunks


def _ints(values: list[Any]) -> bool:
    return all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in values)


class Codec(nn.Module):
    """A neural codec assembled from an encoder, a quantizer and a decoder.

    Args:
        encoder: a :class:`codec.nets.Encoder` (knows its modality, stride, padding).
        quantizer: any registered quantizer with ``dim == encoder.latent_dim``.
        decoder: the matching :class:`codec.nets.Decoder`.
        recon_loss: ``"l1"`` or ``"l2"`` for the ``recon`` term of :meth:`forward`.
        config: the build description (set by :meth:`from_config`; needed by :meth:`save`).
        measured_rates: real rate per point name, measured at export.
    """

    #: default tiling of long inputs (see :meth:`tile_grid`)
    chunk_seconds: float = 10.0
    overlap_seconds: float = 0.1
    image_tile: int = 768
    image_overlap: int = 16
    #: tiles of equal size encoded per network pass (raise it on a GPU for throughput)
    batch_size: int = 1
    #: code prefixes a residual quantizer's encoder searches (1: greedy; see ``ResidualVQ.encode``).
    #: An encoder-side choice only: files decode with any build. Single-level quantizers ignore it.
    beam_size: int = DEFAULT_BEAM_SIZE
    #: analysis-by-synthesis steps before coding (0: off; see :mod:`codec.refine`), their step size
    #: and objective. Encoder-side choices too; refinement needs gradients through the decoder.
    refine_steps: int = DEFAULT_REFINE_STEPS
    refine_step_size: float = DEFAULT_REFINE_STEP_SIZE
    refine_max_growth: float = DEFAULT_REFINE_MAX_GROWTH  # relative to the unrefined tile

    def __init__(
        self,
        encoder: Encoder,
        quantizer: Quantizer,
        decoder: Decoder,
        *,
        recon_loss: str = "l1",
        config: dict[str, Any] | None = None,
        measured_rates: Mapping[str, float] | None = None,
    ) -> None:
        super().__init__()
        if quantizer.dim != encoder.latent_dim:
            raise ValueError(f"quantizer dim {quantizer.dim} != encoder latent_dim {encoder.latent_dim}")
        self.encoder = encoder
        self.quantizer = quantizer
        self.decoder = decoder
        self.recon_loss = recon_loss
        self.config = dict(config) if config is not None else None
        self.measured_rates: dict[str, float] = dict(measured_rates or {})
        # points a rate target chooses among (a quality-vs-rate Pareto front measured at export);
        # empty: every point. Points outside it stay usable by name.
        self.target_points: list[str] = list((config or {}).get("target_points", []))
        # the encoder's residual code search, chosen per model (config "beam_size")
        self.beam_size = int((config or {}).get("beam_size", DEFAULT_BEAM_SIZE))
        # and its analysis-by-synthesis refinement (config "refine_steps", "refine_step_size", "refine_loss")
        self.refine_steps = int((config or {}).get("refine_steps", DEFAULT_REFINE_STEPS))
        self.refine_step_size = float((config or {}).get("refine_step_size", DEFAULT_REFINE_STEP_SIZE))
        self.refine_max_growth = float((config or {}).get("refine_max_growth", DEFAULT_REFINE_MAX_GROWTH))
        self.refine_loss = str((config or {}).get("refine_loss", "mel" if encoder.modality == "audio" else "l2"))
        # band-energy side information (config "envelope"): its measured cost and whether files use it by default
        entry = (config or {}).get("envelope")
        self.envelope: BandEnergy | None = build_envelope(entry, self.sample_rate)
        self.envelope_kbps = float(entry.get("measured_kbps", 0.0)) if self.envelope is not None else 0.0
        self.envelope_default = bool(entry.get("default", True)) if self.envelope is not None else False
        # decoder-side enhancement every decoded signal gets unless the caller leaves it out (config "postfilter")
        self.postfilter: Postfilter | None = build_postfilter((config or {}).get("postfilter"), self.sample_rate)
        #: decoder-side synthesis of shallow codes (config "shallow_decoder", :mod:`codec.shallow`); set by
        #: :meth:`from_config`, its weights by :meth:`load`
        self.shallow_decoder: ShallowDecoder | None = None
        self._objectives: dict[str, Objective] = {}  # built on first use, per device
        self._point_names: tuple[str, ...] | None = None  # point_names(), built on first use (the quantizer fixes them)
        #: integer frequency tables per ``"<point>/<column>"``; missing ones fall back to bit packing
        self.entropy_tables: dict[str, FrequencyTable] = {}
        #: context tables per ``"<point>/<column>"`` (see :mod:`codec.entropy`); columns without
        #: any are coded with their frequency table alone
        self.context_tables: dict[str, ColumnContexts] = {}
        self._sha256: str | None = None  # weights hash, cached while the weights cannot change

    # -- geometry and rates ---------------------------------------------------------------------
    @property
    def modality(self) -> str:
        return self.encoder.modality

    @property
    def rate_unit(self) -> str:
        return "kbps" if self.modality == "audio" else "bpp"

    @property
    def sample_rate(self) -> int | None:
        return getattr(self.encoder, "sample_rate", None)

    def rate_points(self) -> list[RatePoint]:
        """Operating points, lowest nominal rate first."""
        scale = self.encoder.tokens_per_unit() * (1e-3 if self.modality == "audio" else 1.0)
        points = []
        for setting in self.quantizer.rate_settings():
            bits = self.quantizer.bits_per_token_at(**setting)
            name = _point_name(setting)
            points.append(
                RatePoint(
                    name=name,
                    setting=tuple(sorted(setting.items())),
                    bits_per_token=bits,
                    nominal=bits * scale,
                    unit=self.rate_unit,
                    measured=self.measured_rates.get(name),
                )
            )
        return sorted(points, key=lambda p: (p.rate, p.nominal))

    def point_names(self) -> tuple[str, ...]:
        """The rate points' names in byte order: a version-5 header names its rate point by its
        index in this list. Sorted names, not :meth:`rate_points`' order, which follows measured
        rates: the index depends only on the quantizer's points, which the model fixes (so the
        list is built once: every file written or read under a rate target looks it up)."""
        if self._point_names is None:
            self._point_names = tuple(sorted(_point_name(setting) for setting in self.quantizer.rate_settings()))
        return self._point_names

    def complete_header(self, header: Mapping[str, Any]) -> dict[str, Any]:
        """A file header with what this model implies filled in (``.vqc`` version 5), after
        checking that the file names these weights.

        ``modality`` (the model's), ``sample_rate`` (an audio model's), ``rate_point`` given as an
        index into :meth:`point_names`, and an audio ``shape`` ``[1, C, T]`` from the source record
        (C its channels, T its frames resampled to the model's rate); then
        :func:`complete_header`. A header that carries these fields comes back with them
        unchanged (versions 1-4 carry all of them). Raises
        :class:`~codec.bitstream.BitstreamError` for a file made by other weights or a rate-point
        index out of range.
        """
        out = complete_header(header)
        if "modality" in out and out["modality"] != self.modality:
            raise BitstreamError(f"a file of modality {out['modality']!r} cannot be decoded by this {self.modality} model")
        model = out.get("model")
        sha = model.get("sha256") if isinstance(model, dict) else None
        if not (isinstance(sha, str) and len(sha) >= HEADER_HASH_CHARS and self.weights_sha256().startswith(sha)):
            name = model.get("name") if isinstance(model, dict) else None
            this = f"this {self.modality} model" + (f" {self.name}" if self.name else "")
            raise BitstreamError(f"file was made by another model ({name or 'unnamed'}, weights {str(sha)[:12]}…), not by {this}")
        out.setdefault("modality", self.modality)
        if self.modality == "audio" and self.sample_rate is not None:
            out.setdefault("sample_rate", int(self.sample_rate))
        point = out.get("rate_point")
        if isinstance(point, int) and not isinstance(point, bool):
            names = self.point_names()
            if not 0 <= point < len(names):
                raise BitstreamError(f"rate point index {point} out of range (this model has {len(names)} points)")
            out["rate_point"] = names[point]
        source = out.get("source")
        if "shape" not in out and self.modality == "audio" and self.sample_rate is not None and isinstance(source, dict):
            sr, frames, channels = (source.get(k) for k in ("sample_rate", "frames", "channels"))
            if _ints([sr, frames, channels]) and 1 <= sr <= 1_000_000 and frames >= 1 and channels >= 1:
                try:
                    length = StreamResampler(sr, int(self.sample_rate)).output_length(frames)
                except ValueError:
                    length = None
                if length is not None:
                    out["shape"] = [1, channels, length]
        return complete_header(out)

    def select_rate(self, request: str | RatePoint, channels: int = 1, side_rate: float = 0.0) -> RatePoint:
        """Resolve a rate request to the best point that fits it.

        ``request`` is a point name, ``"max"``, ``"min"``, or ``<number><unit>`` with unit bps, kbps
        or bpp (case-insensitive). The chosen point has the highest rate not above the request,
        among the model's :attr:`target_points` (its measured best quality-for-rate points) when
        it lists them and one fits.
        A unit of the other modality, or a request below the lowest point, raises
        :class:`RateError` listing the available rates. Audio rates are per channel; with
        ``channels`` > 1 a target in kbps is for all channels together. ``side_rate`` (per channel,
        in the model's unit) is what side information adds to every point's measured rate.
        """
        points = self.rate_points()
        if isinstance(request, RatePoint):
            request = request.name
        text = request.strip()
        available = "; ".join(p.describe() for p in points)
        by_name = {p.name: p for p in points}
        if text in by_name:
            return by_name[text]
        if text.lower() == "max":
            return points[-1]
        if text.lower() == "min":
            return points[0]
        try:
            value, unit = parse_rate(text)
        except RateError as err:
            raise RateError(f"{err}, or a point name. Available: {available}") from None
        if unit != self.rate_unit:
            raise RateError(
                f"{text!r} is a rate in {unit}, but this is an {self.modality} codec (rates in "
                f"{self.rate_unit}). Available: {available}"
            )
        fitting = [p for p in points if (p.rate + side_rate) * channels <= value * (1 + 1e-9)]
        if not fitting:
            each = f" for {channels} channels ({value / channels:.4g} {unit} each)" if channels > 1 else ""
            raise RateError(f"{text}{each} is below the lowest rate of this codec. Available: {available}")
        preferred = [p for p in fitting if p.name in self.target_points]
        return max(preferred or fitting, key=lambda p: (p.rate, p.nominal))

    def _ladder(self, point: RatePoint) -> list[RatePoint]:
        """The points a target request may step down to from ``point``, lowest first: the
        :attr:`target_points` (measured best quality for their rate) when ``point`` is one of them."""
        points = self.rate_points()
        if point.name in self.target_points:
            points = [p for p in points if p.name in self.target_points]
        return [p for p in points if (p.rate, p.nominal) <= (point.rate, point.nominal)]

    def _refinements(self, point: RatePoint) -> list[RatePoint]:
        """Points that code ``point``'s levels plus more of the same codebooks (residual
        quantizers), fewest levels first: each one's codes extend ``point``'s with the next
        residual levels, the detail the model was trained to add with its rate."""
        levels = point.kwargs.get("num_levels")
        if levels is None:
            return []
        return [p for p in self._levels_of(point) if p.kwargs["num_levels"] > levels]

    def _levels_of(self, point: RatePoint) -> list[RatePoint]:
        """The residual points that differ from ``point`` in their number of levels alone
        (``point`` included), fewest levels first."""
        same = [p for p in self.rate_points() if "num_levels" in p.kwargs and _codebooks(p) == _codebooks(point)]
        return sorted(same, key=lambda p: p.kwargs["num_levels"])

    # -- training -------------------------------------------------------------------------------
    def forward(self, x: Tensor) -> CodecOutput:
        """Training/validation pass: ``x`` ``(B, C, *spatial)`` -> :class:`CodecOutput`.

        In training, the quantizer's :meth:`~codec.quant.Quantizer.training_settings` decide how
        many quantize-decode passes share the one encoder pass (RAQ: the base codebook and one
        sampled size); the first pass is the main output, later ones are tagged.
        """
        y, info = self.encoder.prepare(x)
        latent = self.encoder(y)
        settings = self.quantizer.training_settings() if self.training else [{}]
        loss: dict[str, Tensor] = {}
        metrics: dict[str, Tensor] = {}
        extra: dict[str, Tensor] = {}
        main: tuple[Tensor, Tensor] | None = None
        for i, setting in enumerate(settings):
            q = channel_first(functools.partial(self.quantizer, **setting), latent)
            recon = self.decoder(q.z_q)
            tag = "" if i == 0 else "@" + _point_name(setting)
            loss["recon" + tag] = reconstruction_loss(y, recon, self.recon_loss)
            loss.update({name + tag: value for name, value in q.loss.items()})
            metrics.update({name + tag: value for name, value in q.metrics.items()})
            if i == 0:
                main = (recon, q.codes)
            else:
                extra[tag] = recon
        assert main is not None
        recon, codes = main
        x_hat = self.encoder.restore(recon, info)
        return CodecOutput(
            x_hat=x_hat, loss=loss, metrics=metrics, codes=codes, recon_target=y, recon=recon, extra_recons=extra
        )

    def frozen_codes_forward(self, x: Tensor, rate: str | RatePoint, decoder: nn.Module | None = None,
                             through_envelope: bool = False) -> CodecOutput:
        """Decoder fine-tuning pass: ``x`` ``(B, C, *spatial)`` -> :class:`CodecOutput`.

        The encoder and quantizer run without gradient exactly as :meth:`encode` does (the model's
        :attr:`beam_size` included), so the codes of ``rate`` are the ones files get; only the
        decoder computes with gradient. Training the decoder alone on them improves what every
        rate point decodes to while leaving codes, entropy tables and measured rates unchanged
        (Stable Diffusion's decoder-only fine-tuning of its autoencoder, ``sd-vae-ft-mse``, is the
        same idea). ``decoder``: the module that runs the decoder (default :attr:`decoder`; a
        DDP wrapper of it in distributed training). ``loss`` holds ``recon`` only.

        ``through_envelope`` (audio models with an envelope): ``extra_recons["@env"]`` is the
        decoder output after the band-energy correction the decoder applies to files that carry
        band energies (:meth:`codec.envelope.BandEnergy.correct`, unquantized and differentiable),
        so losses on it train the decoder for what those files sound like, beside the raw output.
        """
        point = self.select_rate(rate)
        env = self.envelope if through_envelope else None
        if through_envelope and env is None:
            raise ValueError("through_envelope needs a model with band energies (an audio model's envelope)")
        with torch.no_grad():
            y, tokens, spatial, info = self._prepared_tokens(x)
            codes = self._quantize(tokens, spatial, info, point).codes
            latent_q = self._quantized_latent(codes, spatial, point)
        recon = (decoder if decoder is not None else self.decoder)(latent_q)
        extra = {"@env": env.correct(env.energies(y), recon)} if env is not None else {}
        return CodecOutput(
            x_hat=self.encoder.restore(recon, info), loss={"recon": reconstruction_loss(y, recon, self.recon_loss)},
            metrics={}, codes=codes, recon_target=y, recon=recon, extra_recons=extra,
        )

    # -- inference --------------------------------------------------------------------------------
    @torch.no_grad()
    def encode(self, x: Tensor, rate: str | RatePoint = "max", *, beam_size: int | None = None,
               refine_steps: int | None = None) -> EncodedCodes:
        """Signal ``(B, C, *spatial)`` -> :class:`EncodedCodes` at the chosen rate point.

        ``beam_size``: the residual code search (default :attr:`beam_size`); ``refine_steps``: the
        analysis-by-synthesis refinement (default :attr:`refine_steps`; :mod:`codec.refine`).
        """
        point = self.select_rate(rate)
        steps = self._refine_steps(refine_steps)
        y, tokens, spatial, info = self._prepared_tokens(x)
        return self._quantize(tokens, spatial, info, point, beam_size, steps, y)

    def _tokens(self, x: Tensor) -> tuple[Tensor, tuple[int, ...], PadInfo]:
        """Signal -> latent tokens ``(B, N, D)``, the latent grid and the padding record."""
        _, tokens, spatial, info = self._prepared_tokens(x)
        return tokens, spatial, info

    def _prepared_tokens(self, x: Tensor) -> tuple[Tensor, Tensor, tuple[int, ...], PadInfo]:
        """:meth:`_tokens`, led by the prepared (padded, network-domain) signal the decoder targets."""
        y, info = self.encoder.prepare(x)
        latent = self.encoder(y)
        b, d, *spatial = latent.shape
        return y, latent.reshape(b, d, -1).transpose(1, 2), tuple(spatial), info

    def _quantized_latent(self, codes: Tensor, spatial: tuple[int, ...], point: RatePoint) -> Tensor:
        """Codes ``(B, *spatial[, levels])`` -> the quantized latent ``(B, D, *spatial)`` the decoder reads."""
        b = codes.shape[0]
        z_q = self.quantizer.decode(codes.reshape(b, math.prod(spatial), *codes.shape[1 + len(spatial) :]), **point.kwargs)
        return self._latent_grid(z_q, spatial)

    def _decoded(self, codes: Tensor, spatial: tuple[int, ...], point: RatePoint) -> Tensor:
        """Codes ``(B, *spatial[, levels])`` -> the decoder's network-domain output (padded, per channel)."""
        return self.decoder(self._quantized_latent(codes, spatial, point))

    def _synthesised(self, codes: Tensor, spatial: tuple[int, ...], point: RatePoint, for_energies: bool = False) -> Tensor:
        """Codes ``(B, *spatial[, levels])`` -> what the decoder synthesises from them before the band
        energies: :meth:`_decoded`, or with a shallow decoder (:mod:`codec.shallow`) its blend
        with the model's decoder by the codes' depth at a residual point. ``for_energies``: what the
        encoder measures band energies against (:meth:`codec.shallow.ShallowDecoder.blend`)."""
        if self.shallow_decoder is not None and "num_levels" in point.kwargs:
            depth = code_depth(codes, self._has_level_axis(point))
            return self.shallow_decoder.blend(self._quantized_latent(codes, spatial, point), depth, self.decoder,
                                              for_energies=for_energies)
        return self._decoded(codes, spatial, point)

    def _latent_grid(self, z_q: Tensor, spatial: tuple[int, ...]) -> Tensor:
        """Quantized tokens ``(B, N, D)`` -> the latent ``(B, D, *spatial)`` the decoder reads."""
        return z_q.transpose(1, 2).reshape(z_q.shape[0], self.encoder.latent_dim, *spatial)

    def _search(self, beam_size: int | None) -> dict[str, int]:
        """The quantizer's encode options for ``beam_size`` (default :attr:`beam_size`)."""
        beam = self.beam_size if beam_size is None else beam_size
        return {"beam_size": beam} if self.quantizer.beam_search else {}

    def _quantize(self, tokens: Tensor, spatial: tuple[int, ...], info: PadInfo, point: RatePoint,
                  beam_size: int | None = None, refine_steps: int = 0, target: Tensor | None = None) -> EncodedCodes:
        """Tokens ``(B, N, D)`` -> codes at ``point``; with ``refine_steps`` and the decoder's
        ``target`` (the prepared signal of these tokens), refined by analysis-by-synthesis."""
        if refine_steps > 0 and target is not None:
            found = self._refine_candidates(TileTokens(tokens, spatial, info, target), point, beam_size, refine_steps)
            codes = best_candidate(found, self.refine_max_growth).codes
        else:
            codes = self.quantizer.encode(tokens, **point.kwargs, **self._search(beam_size))
            codes = codes.reshape(tokens.shape[0], *spatial, *codes.shape[2:])
        return EncodedCodes(codes=codes, point=point, shape=info.shape, padded=info.padded)

    def _refine_candidates(self, tile: TileTokens, point: RatePoint, beam_size: int | None, steps: int,
                           envelope: bool = False, depths: Tensor | None = None) -> list[Candidate]:
        """Analysis-by-synthesis candidates of one tile (:func:`codec.refine.refine_candidates`):
        codes ``(B, *spatial[, levels])`` with the refinement objective and the coded tile's bytes.
        With ``envelope`` the synthesis includes the band-energy correction the decoder will apply
        (unquantized, :meth:`codec.envelope.BandEnergy.correct`), so codes are chosen by what is heard.

        ``depths`` ``(B, *spatial)``: a variable depth (``point`` is then the deepest point of its
        family, see :meth:`_allocate_depths`); every position keeps its number of residual levels,
        coded with the encoder's search at that depth, and the levels beyond it stay ``-1``."""
        tokens, spatial, target = tile.tokens, tile.spatial, tile.target
        assert target is not None, "refinement needs the tile's prepared signal"
        search = self._search(beam_size)
        assert not envelope or (self.envelope is not None and tile.energy is not None), "the envelope needs band energies"

        def grid(c: Tensor) -> Tensor:
            return c.reshape(tokens.shape[0], *spatial, *c.shape[2:])

        quantize = lambda z: self.quantizer.encode(z, **point.kwargs, **search)  # noqa: E731
        if depths is not None:
            family = {p.kwargs["num_levels"]: p for p in self._levels_of(point)}
            depth = depths.reshape(tokens.shape[0], -1).to(tokens.device)
            levels = point.kwargs["num_levels"]
            used = [d for d in range(1, levels + 1) if bool((depth == d).any())]

            def quantize(z: Tensor) -> Tensor:  # noqa: F811
                out = torch.full((*z.shape[:2], levels), -1, dtype=torch.long, device=z.device)
                for d in used:
                    at = depth == d
                    out[at, :d] = self.quantizer.encode(z, **family[d].kwargs, **search).long()[at]
                return out

        def synthesize(z_q: Tensor) -> Tensor:
            recon = self.decoder(self._latent_grid(z_q, spatial))
            return self.envelope.correct(tile.energy, recon) if envelope else recon  # type: ignore[union-attr, arg-type]

        found = refine_candidates(
            tokens, target, quantize=quantize,
            dequantize=lambda c: self.quantizer.decode(c, **point.kwargs),
            synthesize=synthesize,
            objective=self._objective(tokens.device), steps=steps, step_size=self.refine_step_size,
            cost=lambda c: len(self._tile_chunk(grid(c), spatial, point)),
        )
        return [Candidate(grid(c.codes), c.objective, c.cost) for c in found]

    def _objective(self, device: torch.device) -> Objective:
        key = f"{self.refine_loss}@{device}"
        if key not in self._objectives:
            self._objectives[key] = OBJECTIVES.get(self.refine_loss, sample_rate=self.sample_rate, device=device)
        return self._objectives[key]

    def _refine_steps(self, refine_steps: int | None) -> int:
        steps = self.refine_steps if refine_steps is None else int(refine_steps)
        if not 0 <= steps <= MAX_REFINE_STEPS:
            raise ValueError(f"refine_steps must be in [0, {MAX_REFINE_STEPS}], got {steps}")
        return steps

    @torch.no_grad()
    def decode(self, encoded: EncodedCodes, postfilter: bool = True, output_rate_hz: int | None = None) -> Tensor:
        """:class:`EncodedCodes` -> reconstruction in the original layout and range.

        ``postfilter``: end with the model's decoder-side postfilter (:attr:`postfilter`,
        :mod:`codec.postfilter`), where it has one; ``False`` returns the decoder's own output.
        ``output_rate_hz``: audio, the sample rate the signal will be returned at (a file's
        source's), which a postfilter may depend on (narrow-band output).
        """
        point = self.select_rate(encoded.point.name)
        codes = encoded.codes
        spatial = tuple(codes.shape[1 : 1 + len(encoded.padded)])
        expected = tuple(p // self.encoder.stride for p in encoded.padded)
        if spatial != expected:
            raise ValueError(f"codes cover a latent grid {spatial}, the shape needs {expected}")
        recon = self._synthesised(codes, spatial, point)
        if encoded.envelope is not None:
            if self.envelope is None:
                raise ValueError("these codes carry band energies, but this model has no envelope")
            recon = self.envelope.apply(recon, encoded.envelope)
        if postfilter and self.postfilter is not None:
            recon = self.postfilter(recon, rate_kbps=point.rate, output_rate_hz=output_rate_hz)
        return self.encoder.restore(recon, PadInfo(shape=tuple(encoded.shape), padded=tuple(encoded.padded)))

    # -- files ------------------------------------------------------------------------------------
    def weights_sha256(self) -> str:
        """SHA-256 over the state dict (names, dtypes, shapes, bytes): identifies the weights.

        Cached in eval mode; switching to training or loading a state dict drops the cache.
        """
        if self._sha256 is not None and not self.training:
            return self._sha256
        h = hashlib.sha256()
        for name, tensor in sorted(self.state_dict().items()):
            t = tensor.detach().contiguous().cpu()
            h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
            h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
        digest = h.hexdigest()
        self._sha256 = None if self.training else digest
        return digest

    def train(self, mode: bool = True) -> "Codec":
        if mode and self.inference_only:
            raise RuntimeError(f"{self.name or 'this model'} was published for inference only (its training state is "
                               "not in the weights): fine-tune from the training run's checkpoint instead")
        self._sha256 = None
        return super().train(mode)

    @property
    def inference_only(self) -> bool:
        """Whether training-only state (e.g. RAQ's codebook generator) was left out of the weights."""
        return bool(self.config and self.config.get("inference_only"))

    def strip_training_state(self, publish: bool = True) -> None:
        """Drop what only training needs (RAQ codebook generators, EMA sums) before publishing.

        Decoding is unchanged: RAQ's codebooks of every rate point are generated into the weights
        first (``publish``; off when loading an already stripped model). The model cannot be
        trained afterwards, and RAQ serves only its published codebook sizes.
        """
        if self.config is None:
            raise ValueError("this Codec was assembled by hand; build it with Codec.build to strip it")
        self.eval()
        for module in self.modules():
            strip = getattr(module, "strip_training_state", None)
            if module is not self and callable(strip):
                if "publish" in inspect.signature(strip).parameters:
                    strip(publish=publish)
                else:
                    strip()
        self.config["inference_only"] = True
        self._sha256 = None

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False):  # type: ignore[override]
        self._sha256 = None
        return super().load_state_dict(state_dict, strict=strict, assign=assign)

    @torch.no_grad()
    def fit_entropy_tables(self, signals: list[Tensor], prior: int = 1, contexts: bool = True,
                           context_strength: float = 32.0, context_max_symbols: int = 256,
                           context_buckets: int | None = None) -> None:
        """Count the codes of ``signals`` at every rate point into integer frequency tables.

        With ``contexts``, also fit context tables (:func:`codec.entropy.fit_column_contexts`) for
        every column where conditioning on the neighbouring codes (previous position along each
        spatial axis, previous level) saves bits on held-out signals; the signals' order decides
        the held-out quarter. ``context_max_symbols`` bounds the alphabets that get tables and
        ``context_buckets`` clusters larger context alphabets into that many rows (see there).
        Rate points that share a level's codes share its fit.
        """
        points = self.rate_points()
        sizes = {p.name: self.quantizer.alphabet_sizes(**p.kwargs) for p in points}
        grids: dict[str, list[np.ndarray]] = {p.name: [] for p in points}
        for x in signals:
            tokens, spatial, info = self._tokens(x)  # one encoder pass per signal, every point from it
            for point in points:
                codes = self._quantize(tokens, spatial, info, point).codes
                grids[point.name].append(codes.reshape(*codes.shape[: 1 + len(spatial)], len(sizes[point.name])).cpu().numpy())
        self.entropy_tables = {
            f"{name}/{c}": FrequencyTable.from_codes(np.concatenate([g[..., c].reshape(-1) for g in gs]), k, prior)
            for name, gs in grids.items()
            for c, k in enumerate(sizes[name])
        }
        self.context_tables = {}
        if contexts:
            done: dict[bytes, ColumnContexts | None] = {}
            for name, gs in grids.items():
                for c in range(len(sizes[name])):
                    # a column's fit depends only on its codes and the previous column's
                    key = hashlib.sha256(repr((sizes[name][max(0, c - 1) : c + 1], c > 0)).encode()
                                         + b"".join(np.ascontiguousarray(g[..., max(0, c - 1) : c + 1]).tobytes()
                                                    + repr(g.shape[:-1]).encode() for g in gs)).digest()
                    if key not in done:
                        done[key] = fit_column_contexts(gs, c, sizes[name], strength=context_strength,
                                                        max_symbols=context_max_symbols, buckets=context_buckets)
                    if done[key] is not None:
                        self.context_tables[f"{name}/{c}"] = done[key]

    def _contexts(self, point: RatePoint) -> list[ColumnContexts | None] | None:
        """The context tables of each code column at ``point``, or None where the point has none."""
        n = len(self.quantizer.alphabet_sizes(**point.kwargs))
        found = [self.context_tables.get(f"{point.name}/{c}") for c in range(n)]
        return found if any(f is not None for f in found) else None

    def _tables(self, point: RatePoint) -> list[FrequencyTable | None]:
        """The frequency table of each code column at ``point`` (None: bit-packed)."""
        n = len(self.quantizer.alphabet_sizes(**point.kwargs))
        return [self.entropy_tables.get(f"{point.name}/{c}") for c in range(n)]

    # -- .vqc files ---------------------------------------------------------------------------------
    def units(self, shape: tuple[int, ...] | list[int], sample_rate: int | None = None) -> float:
        """What one unit of rate is measured over: seconds of audio, or pixels of an image."""
        if self.modality == "audio":
            return shape[-1] / float(sample_rate or self.sample_rate or 1)
        return float(math.prod(shape[2:]))

    def real_rate(self, num_bytes: int, shape: tuple[int, ...] | list[int], sample_rate: int | None = None) -> float:
        """The rate of a file of ``num_bytes`` (header included): kbps for audio (all channels), bpp for images."""
        bits = 8.0 * num_bytes
        scale = 1e-3 if self.modality == "audio" else 1.0
        return bits * scale / max(self.units(shape, sample_rate), 1e-12)

    def tile_grid(self, shape: tuple[int, ...], tile: int | None = None, overlap: int | None = None) -> TileGrid:
        """How a signal of ``shape`` is cut into independently coded tiles (see :mod:`codec.tiling`).

        Defaults: audio in chunks of :attr:`chunk_seconds` overlapping by :attr:`overlap_seconds`;
        images in tiles of :attr:`image_tile` pixels per side overlapping by :attr:`image_overlap`.
        """
        tile, overlap = self._tile_defaults(tile, overlap)
        return TileGrid.plan(tuple(shape[2:]), tile, overlap, self.encoder.stride)

    def _tile_defaults(self, tile: int | None, overlap: int | None) -> tuple[int, int]:
        if self.modality == "audio":
            sr = self.sample_rate or 1
            tile = tile if tile is not None else round(self.chunk_seconds * sr)
            overlap = overlap if overlap is not None else round(self.overlap_seconds * sr)
        else:
            tile = tile if tile is not None else self.image_tile
            overlap = overlap if overlap is not None else self.image_overlap
        if tile < self.encoder.stride or overlap < 0:
            raise ValueError(f"tile {tile} must be at least the stride {self.encoder.stride}; overlap >= 0")
        return tile, overlap

    def _has_level_axis(self, point: RatePoint) -> bool:
        device = next(self.parameters(), torch.empty(0)).device
        probe = self.quantizer.encode(torch.zeros(1, 1, self.encoder.latent_dim, device=device), **point.kwargs)
        return probe.dim() == 3

    def _tile_tokens(self, pieces: Iterable[tuple[tuple[tuple[int, int], ...], Tensor]],
                     keep_targets: bool = False, keep_energy: bool = False) -> list[TileTokens]:
        """Encoder tokens of every tile ``(spans, piece (1, C, *tile))``, in order; consecutive
        tiles of equal size go through the encoder :attr:`batch_size` at a time (GPU throughput).
        ``keep_targets`` keeps each tile's prepared signal too (what refinement decodes toward),
        ``keep_energy`` its band energies (what the envelope restores; a few numbers a second)."""
        device = next(self.parameters(), torch.empty(0)).device
        out: list[TileTokens] = []
        group: list[Tensor] = []

        def run() -> None:
            y, tokens, spatial, info = self._prepared_tokens(torch.cat(group).to(device))
            per = tokens.shape[0] // len(group)  # audio folds channels into the batch
            single = PadInfo(shape=(1, *info.shape[1:]), padded=info.padded)
            targets = y.split(per) if keep_targets else [None] * len(group)
            energies = self.envelope.energies(y).split(per) if keep_energy and self.envelope is not None else [None] * len(group)
            out.extend(TileTokens(t, spatial, single, target, energy)
                       for t, target, energy in zip(tokens.split(per), targets, energies))
            group.clear()

        for _spans, piece in pieces:
            if group and (piece.shape != group[0].shape or len(group) >= max(1, self.batch_size)):
                run()
            group.append(piece)
        if group:
            run()
        return out

    def _grid_pieces(self, x: Tensor, grid: TileGrid) -> Iterator[tuple[tuple[tuple[int, int], ...], Tensor]]:
        for spans in grid:
            yield spans, x[(..., *(slice(a, b) for a, b in spans))]

    def _stream_pieces(
        self, blocks: Iterable[Tensor], channels: int, tile: int, overlap: int, total: list[int]
    ) -> Iterator[tuple[tuple[tuple[int, int], ...], Tensor]]:
        """Audio tiles from consecutive blocks ``(C, n)`` with only one tile buffered.

        Yields exactly the tiles of ``TileGrid.plan((n,), tile, overlap)`` for the final length
        ``n``, which is appended to ``total`` once the blocks are exhausted.
        """
        buf, start, s, n, emitted = torch.zeros(channels, 0), 0, 0, 0, False
        for block in blocks:
            block = block.reshape(channels, -1).float()
            if not torch.isfinite(block).all():
                raise ValueError("the signal contains NaN or infinite values")
            n += block.shape[-1]
            if n > self.max_signal_elements() // channels:
                raise ValueError(f"signal exceeds this codec's limit of {self.max_signal_elements()} values")
            buf = torch.cat([buf, block], dim=-1)
            while start + buf.shape[-1] >= s + tile:
                yield ((s, s + tile),), buf[None, :, s - start : s - start + tile]
                emitted = True
                s += tile - overlap
                buf, start = buf[:, s - start :], s
        if n == 0:
            raise ValueError("empty signal")
        if not emitted:
            yield ((0, n),), buf[None, :, :n]
        elif s + overlap < n:
            yield ((s, n),), buf[None, :, s - start :]
        total.append(n)

    @torch.no_grad()
    def compress_detailed(
        self,
        x: Tensor,
        rate: str | RatePoint = "max",
        *,
        metadata: Mapping[str, Any] | None = None,
        sample_rate: int | None = None,
        tile: int | None = None,
        overlap: int | None = None,
        beam_size: int | None = None,
        refine_steps: int | None = None,
        envelope: bool | None = None,
        variable_depth: bool = True,
    ) -> "Compressed":
        """One signal ``(1, C, *spatial)`` -> a ``.vqc`` file and how its rate came out.

        ``rate``: a point name, ``"max"``/``"min"``, or a target such as ``"6kbps"`` / ``"0.1bpp"``.
        A target is a promise about the **file**: its size, header included, over the signal's
        duration (all channels) or pixel count. The best point whose rate fits is tried first;
        while the real file exceeds the target the next lower point is used, and each step down
        is recorded in ``notes``. Where even the lowest point does not fit (a tiny input, whose
        header alone may exceed the target) the lowest point is written and a note says so.
        A point that fits is then refined while the file still fits: residual levels of the same
        codebooks are added one at a time (at most :data:`MAX_REFINEMENTS`), so a signal that
        codes smaller than the model's measured rates uses the budget it was given.

        ``metadata`` (a small JSON object, e.g. the source file's sample rate and format) is
        stored in the header and returned by :meth:`decompress`. ``sample_rate`` is the rate the
        duration is measured at (audio; default the model's). ``tile``/``overlap`` override the
        tiling in samples or pixels (:meth:`tile_grid`). ``beam_size`` is the residual code search
        (default :attr:`beam_size`; 1 is greedy): a larger beam finds codes closer to the encoder's
        latents at the same rate point, at the cost of encoding time. ``refine_steps`` is the
        analysis-by-synthesis refinement (default :attr:`refine_steps`; 0 is off, see
        :mod:`codec.refine`): codes chosen by what the decoder makes of them, never worse on the
        model's refinement objective and never larger, at the cost of a decoder pass with gradient
        per step. The rate point (and under a target the variable depth) is chosen on unrefined
        codes and only it is refined, keeping every position's depth, so a target that fits
        unrefined fits refined; the prepared signal is kept in memory meanwhile.
        ``envelope`` writes band-energy side information (audio models with an envelope; default
        :attr:`envelope_default`; :mod:`codec.envelope`): the decoder restores each band's energy
        per ~0.1 s block, and the rate target counts its bytes.
        ``variable_depth`` (residual quantizers, rate targets): once a point
        fits, its budget is spent position by position: every latent position codes its own
        number of residual levels, up to :data:`MAX_EXTRA_DEPTH` more than the point's, chosen
        where they reduce the latent error most per estimated bit (``mean_levels`` in the result).
        With several codebook sizes (rate-adaptive codebooks) each size is allocated from its
        deepest point within the chosen point's rate, and the lowest latent error is written.
        ``False`` keeps one depth for the whole file.
        """
        if x.dim() < 3 or x.shape[0] != 1:
            raise ValueError(f"compress takes one signal (1, C, ...), got {tuple(x.shape)}")
        if x.numel() == 0:
            raise ValueError(f"empty signal {tuple(x.shape)}")
        if math.prod(x.shape) > self.max_signal_elements():
            raise ValueError(f"signal of {math.prod(x.shape)} values exceeds this codec's limit {self.max_signal_elements()}")
        if self.modality == "audio":  # the streaming path: one chunk in flight
            step = max(1, round(self.chunk_seconds * (self.sample_rate or 1)))
            return self.compress_stream(x[0].split(step, dim=-1), x.shape[1], rate, metadata=metadata,
                                        sample_rate=sample_rate, tile=tile, overlap=overlap, beam_size=beam_size,
                                        refine_steps=refine_steps, envelope=envelope, variable_depth=variable_depth)
        if not torch.isfinite(x).all():
            raise ValueError("the signal contains NaN or infinite values")
        steps = self._refine_steps(refine_steps)
        side = self._use_envelope(envelope)
        grid = self.tile_grid(tuple(x.shape), tile, overlap)
        tokens = self._tile_tokens(self._grid_pieces(x, grid), keep_targets=steps > 0, keep_energy=side)
        return self._pack(tokens, grid, tuple(x.shape), rate, 1, metadata, sample_rate, beam_size, steps, side, envelope is None,
                          variable_depth)

    @torch.no_grad()
    def compress_stream(
        self,
        blocks: Iterable[Tensor],
        channels: int,
        rate: str | RatePoint = "max",
        *,
        metadata: Mapping[str, Any] | None = None,
        sample_rate: int | None = None,
        tile: int | None = None,
        overlap: int | None = None,
        beam_size: int | None = None,
        refine_steps: int | None = None,
        envelope: bool | None = None,
        variable_depth: bool = True,
    ) -> "Compressed":
        """Audio as consecutive blocks ``(C, n)`` at the model's rate -> a ``.vqc`` file.

        Memory holds one chunk of signal and the encoder tokens (~70 MB per hour at 64 dims),
        never the whole signal. ``metadata`` is read after the blocks are exhausted, so a reader
        may fill in what it learns on the way (e.g. the exact length of an MP3). With refinement
        (``refine_steps``, as in :meth:`compress_detailed`) the prepared signal is kept as well;
        ``envelope`` and ``variable_depth`` as in :meth:`compress_detailed`.
        """
        if self.modality != "audio":
            raise ValueError("compress_stream is for audio; images compress with compress_detailed")
        probe = TileGrid.plan((1 << 62,), *self._tile_defaults(tile, overlap), self.encoder.stride)
        steps = self._refine_steps(refine_steps)
        side = self._use_envelope(envelope)
        total: list[int] = []
        tokens = self._tile_tokens(self._stream_pieces(blocks, channels, probe.tile[0], probe.overlap[0], total),
                                   keep_targets=steps > 0, keep_energy=side)
        shape = (1, channels, total[0])
        grid = self.tile_grid(shape, tile, overlap)
        assert len(grid) == len(tokens), "streamed tiles must match the planned grid"
        return self._pack(tokens, grid, shape, rate, channels, metadata, sample_rate, beam_size, steps, side, envelope is None,
                          variable_depth)

    def _pack(
        self, tokens: list[TileTokens], grid: TileGrid, shape: tuple[int, ...], rate: str | RatePoint, channels: int,
        metadata: Mapping[str, Any] | None, sample_rate: int | None, beam_size: int | None = None,
        refine_steps: int = 0, envelope: bool = False, optional_envelope: bool = True, variable_depth: bool = True,
    ) -> "Compressed":
        """Quantize cached tokens at the requested point and write the file, stepping down while it is too big.

        ``envelope``: write band energies. Where a rate target leaves no room for them beside the
        lowest point at their measured mean rate, they are still tried: the encoder's
        rate-distortion choice codes them for less at low rates, and a variable depth spends less
        on the codes. If the file with them misses the target, they are left out with a note where
        ``optional_envelope`` (the model's default was asked for), else a :class:`RateError` is raised.
        """
        request = rate.name if isinstance(rate, RatePoint) else str(rate)
        notes: list[str] = []
        no_room = False  # the measured mean rate of the energies leaves no room: only a real file tells
        try:
            point = self.select_rate(request, channels=channels, side_rate=self.envelope_kbps if envelope else 0.0)
        except RateError:
            if not envelope:
                raise
            point = self.select_rate(request, channels=channels)  # a request no point can serve raises here
            no_room = True
        target = self._target(request)
        ladder = self._ladder(point)

        def fits(rate: float) -> bool:
            return target is None or rate <= target * (1 + 1e-9)

        def below(p: RatePoint) -> RatePoint | None:
            """The next lower point of the ladder, if any."""
            lower = [q for q in ladder if (q.rate, q.nominal) < (p.rate, p.nominal)]
            return lower[-1] if lower else None

        # With band energies, only the first point tried is decoded to measure them; the others are
        # sized with that measurement, and the chosen point is written (and checked) for real below.
        side_bytes: list[int] = []  # the envelope's bytes in the first file written
        estimated: set[str] = set()
        coded: dict[str, tuple[list[Tensor], list[bytes]]] = {}  # per point: the tiles' codes and chunks

        def codes_of(p: RatePoint) -> tuple[list[Tensor], list[bytes]]:
            if p.name not in coded:
                codes = self._codes(p, tokens, beam_size)
                coded[p.name] = codes, [self._tile_chunk(c, tile.spatial, p) for c, tile in zip(codes, tokens)]
            return coded[p.name]

        def with_energies(p: RatePoint) -> bytes:
            """The real file of ``p`` with its band energies (its codes decoded to measure them)."""
            codes, chunks = codes_of(p)
            energies = [self._envelope_chunk(c, tile, p) for c, tile in zip(codes, tokens)]
            return self._container(p, chunks, grid, shape, metadata, energies)

        def write(p: RatePoint) -> tuple[bytes, float]:
            data = self._container(p, codes_of(p)[1], grid, shape, metadata)
            if envelope and not side_bytes:
                full = with_energies(p)
                side_bytes.append(len(full) - len(data))
                return full, self.real_rate(len(full), shape, sample_rate)
            if envelope:
                estimated.add(p.name)
                return data, self.real_rate(len(data) + side_bytes[0], shape, sample_rate)
            return data, self.real_rate(len(data), shape, sample_rate)

        while True:
            data, real = write(point)
            if fits(real):
                break
            nxt = below(point)
            if nxt is None:
                header_only = self.real_rate(len(data) - sum(len(c) for c in read_container(data)[1]), shape, sample_rate)
                why = "its header alone is" if header_only > target else "even the lowest rate point is"
                notes.append(
                    f"the input is too short for {request}: {why} {header_only if header_only > target else real:.4g} "
                    f"{self.rate_unit}; wrote the lowest point {point.name} at {real:.4g} {self.rate_unit}"
                )
                break
            came = "would come out at about" if point.name in estimated else "came out at"
            notes.append(f"{point.name} {came} {real:.4g} {self.rate_unit} > {request}; stepped down to {nxt.name}")
            point = nxt
        if target is not None and fits(real):
            # fill the budget: more residual levels of the same codebooks only add detail
            for finer in self._refinements(point)[:MAX_REFINEMENTS]:
                finer_data, finer_real = write(finer)
                if not fits(finer_real):
                    break
                if notes:
                    notes.append(f"{finer.name} (more levels of {point.name}) fits at {finer_real:.4g} {self.rate_unit}; used it")
                point, data, real = finer, finer_data, finer_real
        while envelope and point.name in estimated:
            # the chosen point's real file; should its envelope code larger than the first one's
            # and miss the target, step down with real files
            estimated.discard(point.name)
            data = with_energies(point)
            real = self.real_rate(len(data), shape, sample_rate)
            nxt = below(point)
            if fits(real) or nxt is None:
                break
            notes.append(f"{point.name} came out at {real:.4g} {self.rate_unit} > {request}; stepped down to {nxt.name}")
            point = nxt
            estimated.add(point.name)
        depth: float | None = None
        depth_codes: list[Tensor] | None = None  # the variable depth's codes, where one is written
        if variable_depth and target is not None and fits(real):
            side = len(data) - len(self._container(point, codes_of(point)[1], grid, shape, metadata)) if envelope else 0
            # every codebook setting's allocation (its deepest point within the chosen point's
            # rate as the base); the lowest latent error wins, and it must beat the fixed depth's
            chosen: tuple[RatePoint, bytes, float, float, list[Tensor]] | None = None
            bases = [b for b in self._depth_bases(point) if self._depth_family(b)]
            to_beat = float(sum(e.sum() for e in self._position_errors(point, tokens, codes_of))) if bases else 0.0
            # refinement may grow the codes by refine_max_growth: the depths leave it that room
            reserve = 1.0 + (self.refine_max_growth if refine_steps > 0 else 0.0)
            for base in bases:
                allocated = self._allocate_depths(base, tokens, codes_of, grid, shape, metadata, envelope, side,
                                                  lambda size: fits(self.real_rate(size, shape, sample_rate) * reserve),
                                                  to_beat)
                if allocated is not None:
                    chosen, to_beat = allocated, allocated[3]
            if chosen is not None:
                point, data, depth, _, depth_codes = chosen
                real = self.real_rate(len(data), shape, sample_rate)
        if refine_steps > 0:
            # The point (and a variable depth) is chosen on unrefined codes, then refined at that
            # depth: the best candidates within the model's allowed growth, and if that file misses
            # the target, the best that cost no more than the unrefined codes (so it fits wherever
            # the unrefined file did); should even that miss (band energies code differently), the
            # unrefined file stands.
            maps = [(c >= 0).sum(-1) for c in depth_codes] if depth_codes is not None else [None] * len(tokens)
            found = [self._refine_candidates(tile, point, beam_size, refine_steps, envelope, depths=m)
                     for tile, m in zip(tokens, maps)]
            growths = [self.refine_max_growth] + ([0.0] if target is not None and self.refine_max_growth > 0 else [])
            unrefined = data, real
            for growth in growths:
                codes = [best_candidate(c, growth).codes for c in found]
                data = self._write_codes(point, codes, tokens, grid, shape, metadata, envelope)
                real = self.real_rate(len(data), shape, sample_rate)
                if fits(real):
                    break
            else:
                data, real = unrefined
        if envelope and not fits(real):
            if optional_envelope:
                # even the lowest point does not fit beside the band energies (a short input, or a
                # target below their measured rate beside the lowest point): the codes alone, where they may
                out = self._pack(tokens, grid, shape, rate, channels, metadata, sample_rate, beam_size, refine_steps, False,
                                 variable_depth=variable_depth)
                out.notes.insert(0, f"with band energies even {point.name} came out at {real:.4g} {self.rate_unit} > "
                                    f"{request}; wrote the codes alone")
                return out
            if no_room:  # asked for explicitly, where their measured rate already left no room
                raise RateError(f"{request} leaves no room for band energies: with them even {point.name} came out at "
                                f"{real:.4g} {self.rate_unit}; ask for a higher rate or leave them out (envelope=False, --no-envelope)")
        return Compressed(data=data, point=point, request=request, real_rate=real, unit=self.rate_unit, notes=notes,
                          mean_levels=depth)

    def _depth_bases(self, point: RatePoint) -> list[RatePoint]:
        """The points a variable depth starts from under a rate target: ``point`` first, then for
        every other codebook setting among the :attr:`target_points` (all points where the model
        lists none) its deepest point whose rate is not above ``point``'s."""
        if point.kwargs.get("num_levels") is None:
            return [point]
        residual = [p for p in self.rate_points() if "num_levels" in p.kwargs]
        listed = [p for p in residual if not self.target_points or p.name in self.target_points]
        bases = [point]
        for other in dict.fromkeys(_codebooks(p) for p in listed):
            under = [p for p in residual if _codebooks(p) == other and (p.rate, p.nominal) <= (point.rate, point.nominal)]
            if other != _codebooks(point) and under:
                bases.append(max(under, key=lambda p: p.kwargs["num_levels"]))
        return bases

    def _position_errors(self, point: RatePoint, tokens: list[TileTokens], codes_of: Any) -> list[Tensor]:
        """Per tile: the latent's squared error at each of its ``B * N`` positions with ``point``'s
        codes (on the CPU)."""
        out = []
        for tile, codes in zip(tokens, codes_of(point)[0]):
            z = tile.tokens.reshape(-1, tile.tokens.shape[-1]).float()
            out.append((z - self.quantizer.decode(codes.reshape(z.shape[0], -1), **point.kwargs).float()).square().sum(-1).cpu())
        return out

    def _depth_family(self, point: RatePoint) -> list[RatePoint]:
        """The points of ``point``'s codebooks with 1 .. ``n +`` :data:`MAX_EXTRA_DEPTH` levels,
        fewest first (``[]`` unless ``point`` is a residual point and every level count is there)."""
        levels = point.kwargs.get("num_levels")
        if levels is None:
            return []
        family = {p.kwargs["num_levels"]: p for p in self._levels_of(point)}
        top = max((n for n in family if n <= levels + MAX_EXTRA_DEPTH), default=0)
        if top <= 1 or any(n not in family for n in range(1, top + 1)):
            return []
        return [family[n] for n in range(1, top + 1)]

    def _allocate_depths(
        self, point: RatePoint, tokens: list[TileTokens], codes_of: Any, grid: TileGrid, shape: tuple[int, ...],
        metadata: Mapping[str, Any] | None, envelope: bool, side_bytes: int, fits: Any, to_beat: float | None = None,
    ) -> tuple[RatePoint, bytes, float, float, list[Tensor]] | None:
        """Spend a rate target's budget level by level where it helps most:
        ``(deepest point, file, mean levels, latent squared error, every tile's codes)``.

        Every position of the latent grid codes its own number of residual levels, 0 to ``n +``
        :data:`MAX_EXTRA_DEPTH` of ``point``'s codebooks (``-1`` marks the levels it leaves out;
        :func:`codec.entropy.encode_depth_columns`). The depths minimise the latent's squared
        error plus ``lambda`` times the codes' estimated bits at every position, with the
        smallest ``lambda`` whose file ``fits`` (``side_bytes``: what band energies add, measured
        on ``point``'s file; the file written is then checked with its own). ``None`` where no
        such file has a smaller latent error than ``point``'s fixed depth (and than ``to_beat``,
        where given), or the model has no frequency tables for the deepest point. Where the
        deepest level's codes alone do not beat ``to_beat`` (with a beam search, deeper codes have
        the lower error at nearly every position, and the allocation only nears them by spending
        the most bits), it gives up before the other level counts are searched.
        """
        family = self._depth_family(point)
        if not family:
            return None
        top = family[-1]
        tables = self._tables(top)
        if any(t is None for t in tables):
            return None
        depth_max = len(family)
        deepest = self._position_errors(top, tokens, codes_of)
        if to_beat is not None and float(sum(e.sum() for e in deepest)) >= to_beat:
            return None
        per_depth = [self._position_errors(p, tokens, codes_of) for p in family[:-1]] + [deepest]
        level_bits = [torch.from_numpy(-np.log2(t.probabilities())).float() for t in tables]  # per level, per code
        # per tile (B * N positions each, on the CPU): the latent's squared error and the codes'
        # estimated bits at depth 0 .. depth_max, and each depth's codes
        errors, bits, found = [], [], []
        for i, tile in enumerate(tokens):
            z = tile.tokens.reshape(-1, tile.tokens.shape[-1]).float()
            cost, codes = [torch.zeros(z.shape[0])], []
            for p in family:
                c = codes_of(p)[0][i].reshape(z.shape[0], -1).cpu().long()
                cost.append(sum(level_bits[l][c[:, l]] for l in range(c.shape[1])))
                codes.append(c)
            errors.append(torch.stack([z.square().sum(-1).cpu()] + [e[i] for e in per_depth], -1))
            bits.append(torch.stack(cost, -1))
            found.append(codes)
        n = point.kwargs["num_levels"]
        fixed_error = float(sum(e[:, n].sum() for e in errors))
        scale = fixed_error / max(1.0, float(sum(b[:, n].sum() for b in bits)))
        bound = fixed_error if to_beat is None else min(fixed_error, to_beat)
        if not scale > 0:
            return None

        def mixed(lam: float) -> tuple[list[Tensor], float, float]:
            """Every tile's codes ``(B, *spatial, depth_max)`` at ``lam``, their squared error and mean depth."""
            out, total, levels = [], 0.0, 0.0
            for tile, err, cost, codes in zip(tokens, errors, bits, found):
                depth = (err + lam * cost).argmin(-1)
                grid_codes = torch.full((err.shape[0], depth_max), -1, dtype=torch.long)
                for d in range(1, depth_max + 1):
                    at = depth == d
                    grid_codes[at, :d] = codes[d - 1][at]
                out.append(grid_codes.reshape(tile.tokens.shape[0], *tile.spatial, depth_max))
                total += float(err.gather(1, depth[:, None]).sum())
                levels += float(depth.sum())
            return out, total, levels / max(1, sum(e.shape[0] for e in errors))

        def fitting(log_lam: float) -> tuple[list[Tensor], float, float] | None:
            """:func:`mixed` at ``exp(log_lam)`` where its file (with ``side_bytes``) fits, else ``None``."""
            result = mixed(math.exp(log_lam))
            chunks = [self._tile_chunk(c, tile.spatial, top) for c, tile in zip(result[0], tokens)]
            return result if fits(len(self._container(top, chunks, grid, shape, metadata)) + side_bytes) else None

        # the smallest lambda (most bits) whose file fits, by bisection in log-space
        lo, hi = math.log(scale * 1e-3), math.log(scale * 1e3)
        if mixed(math.exp(lo))[1] >= bound:
            return None  # not even the most bits this search may spend beat the bound
        best = fitting(hi)
        if best is None:
            return None
        for _ in range(DEPTH_SEARCH_STEPS):
            mid = (lo + hi) / 2
            result = fitting(mid)
            if result is not None:
                hi, best = mid, result
            else:
                lo = mid
        for _ in range(3):  # the file with its own band energies; should it miss, a larger lambda
            codes, error, mean = best
            if error >= bound:
                return None
            data = self._write_codes(top, [c.to(t.tokens.device) for c, t in zip(codes, tokens)], tokens, grid, shape,
                                     metadata, envelope)
            if fits(len(data)):
                return top, data, mean, error, codes
            hi += 0.05
            best = mixed(math.exp(hi))
        return None

    def compress(self, x: Tensor, rate: str | RatePoint = "max", **kwargs: Any) -> bytes:
        """One signal ``(1, C, *spatial)`` -> the bytes of a ``.vqc`` file (see :meth:`compress_detailed`).

        A step down to a lower rate point is reported with :class:`RateWarning`.
        """
        out = self.compress_detailed(x, rate, **kwargs)
        for note in out.notes:
            warnings.warn(note, RateWarning, stacklevel=2)
        return out.data

    def _target(self, request: str) -> float | None:
        try:
            value, unit = parse_rate(request)
        except RateError:
            return None  # a point name, max or min: no size promise beyond the point itself
        return value if unit == self.rate_unit else None

    def max_signal_elements(self) -> int:
        return MAX_AUDIO_ELEMENTS if self.modality == "audio" else MAX_IMAGE_ELEMENTS

    def _codes(self, point: RatePoint, tokens: list[TileTokens], beam_size: int | None = None) -> list[Tensor]:
        """Every tile's (unrefined) codes ``(B, *spatial[, levels])`` at ``point``."""
        return [self._quantize(tile.tokens, tile.spatial, tile.info, point, beam_size).codes for tile in tokens]

    def _write_codes(self, point: RatePoint, codes: list[Tensor], tokens: list[TileTokens], grid: TileGrid,
                     shape: tuple[int, ...], metadata: Mapping[str, Any] | None, envelope: bool = False) -> bytes:
        """The file of every tile's ``codes`` ``(B, *spatial[, levels])`` at ``point``; with
        ``envelope``, each tile's chunk is followed by its band-energy chunk."""
        chunks = [self._tile_chunk(c, tile.spatial, point) for c, tile in zip(codes, tokens)]
        energies = [self._envelope_chunk(c, tile, point) for c, tile in zip(codes, tokens)] if envelope else None
        return self._container(point, chunks, grid, shape, metadata, energies)

    def _container(self, point: RatePoint, chunks: list[bytes], grid: TileGrid, shape: tuple[int, ...],
                   metadata: Mapping[str, Any] | None, energies: list[bytes] | None = None) -> bytes:
        """The ``.vqc`` bytes of the tiles' code ``chunks``, each followed by its band-energy chunk
        when ``energies`` are given."""
        if energies is not None:
            chunks = [c for pair in zip(chunks, energies) for c in pair]
        use = self._tables(point)
        header: dict[str, Any] = {
            "modality": self.modality,
            "model": {"name": self.name, "sha256": self.weights_sha256()[:HEADER_HASH_CHARS]},
            "rate_point": point.name,
            "shape": list(shape),
            "coding": "range" if all(t is not None for t in use) else "packed",
            "tiles": grid.to_header(),
        }
        if energies is not None:
            assert self.envelope is not None
            header["envelope"] = self.envelope.name
        if self.sample_rate is not None:
            header["sample_rate"] = int(self.sample_rate)
        if metadata:
            header["source"] = dict(metadata)
        return write_container(compact_header(header, self), chunks)

    def _use_envelope(self, envelope: bool | None) -> bool:
        if envelope is None:
            return self.envelope_default
        if envelope and self.envelope is None:
            raise ValueError(f"{self.name or 'this model'} has no band-energy envelope")
        return bool(envelope)

    def _envelope_chunk(self, codes: Tensor, tile: TileTokens, point: RatePoint) -> bytes:
        """The band-energy chunk of one tile: its codes synthesised as the decoder will (with a
        shallow decoder, its blend; the model decoder's alone in a nearly all-shallow tile where
        the shallow decoder says so, :meth:`codec.shallow.ShallowDecoder.energies_on_model`),
        compared with the input's energies."""
        assert self.envelope is not None and tile.energy is not None, "the envelope needs the tile's band energies"
        decoded = self._synthesised(codes, tile.spatial, point, for_energies=True)
        return self.envelope.encode(self.envelope.analyse(tile.energy, decoded, rate_kbps=point.rate))

    def _tile_chunk(self, codes: Tensor, spatial: tuple[int, ...], point: RatePoint) -> bytes:
        """One tile's codes ``(B, *spatial[, levels])`` -> its entropy-coded chunk."""
        sizes = self.quantizer.alphabet_sizes(**point.kwargs)
        tables = self._tables(point)
        use = tables if all(t is not None for t in tables) else None
        contexts = self._contexts(point) if use is not None else None
        code_grid = tuple(codes.shape[: 1 + len(spatial)])
        return encode_tile(codes.reshape(-1, len(sizes)).cpu(), sizes, use, grid=code_grid, contexts=contexts)

    @property
    def name(self) -> str:
        """The model's published name (``image-v1``), empty for an unnamed model."""
        return str((self.config or {}).get("name", ""))

    def read_header(self, data: bytes) -> "ParsedFile":
        """Parse and validate a ``.vqc`` file against this model without decoding it."""
        header, chunks = read_container(data)
        header = self.complete_header(header)
        expected_types = {"modality": str, "model": dict, "rate_point": str, "coding": str, "shape": list, "tiles": dict}
        for name, kind in expected_types.items():
            if not isinstance(header.get(name), kind):
                raise BitstreamError(f"header field {name!r} is missing or not a {kind.__name__}")
        point = {p.name: p for p in self.rate_points()}.get(header["rate_point"])
        if point is None:
            raise BitstreamError(f"unknown rate point {header['rate_point']!r}")
        shape, tiles = header["shape"], header["tiles"]
        n_sp = 1 if self.modality == "audio" else 2
        if len(shape) != n_sp + 2 or not _ints(shape) or shape[0] != 1 or min(shape) < 1:
            raise BitstreamError(f"implausible signal shape {shape}")
        if math.prod(shape) > self.max_signal_elements():
            raise BitstreamError(f"signal shape {shape} exceeds this codec's limit of {self.max_signal_elements()} values")
        channels = getattr(self.encoder, "in_channels", None) if self.modality == "image" else None
        if channels is not None and shape[1] != channels:  # images are coded at the model's channel count
            raise BitstreamError(f"the file claims {shape[1]} image channels; this model codes {channels}")
        size, overlap = tiles.get("size"), tiles.get("overlap")
        if not (isinstance(size, list) and isinstance(overlap, list) and _ints(size) and _ints(overlap)) or len(size) != n_sp or len(overlap) != n_sp:
            raise BitstreamError("header field 'tiles' must hold 'size' and 'overlap' per spatial axis")
        if any(t > MAX_TILE or t < 1 for t in size):
            raise BitstreamError(f"tile size {size} out of bounds")
        try:
            grid = TileGrid(tuple(shape[2:]), tuple(size), tuple(overlap))
        except ValueError as err:
            raise BitstreamError(str(err)) from None
        envelope = header.get("envelope")
        if envelope is not None and (self.envelope is None or envelope != self.envelope.name):
            raise BitstreamError(f"the file carries side information {envelope!r} that this model does not define")
        per_tile = 1 if envelope is None else 2
        counts = [len(grid.starts(a)) for a in range(n_sp)]
        if math.prod(counts) * per_tile != len(chunks):  # also bounds the tile loop by the file's own size
            raise BitstreamError(f"{len(chunks)} payload chunks for {math.prod(counts)} tiles"
                                 + (" with band energies" if envelope is not None else ""))
        envelope_chunks = chunks[1::2] if envelope is not None else None
        chunks = chunks[::per_tile]
        tables = self._tables(point)
        coding = "range" if all(t is not None for t in tables) else "packed"
        if header["coding"] != coding:
            raise BitstreamError(f"payload coding {header['coding']!r} does not match this model's ({coding!r})")
        # A payload cannot hold more symbols than its bits allow, even at the most probable
        # symbol's cost: a header that claims more is refused before anything is decoded or
        # allocated, so output size stays proportional to file size.
        sizes = self.quantizer.alphabet_sizes(**point.kwargs)
        usable = [t for t in tables if t is not None] if coding == "range" else None
        contexts = self._contexts(point) if usable is not None else None
        stride = self.encoder.stride
        for i, spans in enumerate(grid):
            tile_shape = (1, shape[1], *(b - a for a, b in spans))
            count = self.encoder.latent_batch(tile_shape) * math.prod(-(-n // stride) for n in tile_shape[2:])
            if 8 * len(chunks[i]) + 64 < 0.9 * count * min_tile_bits(chunks[i], sizes, usable, contexts):
                raise BitstreamError(f"payload of tile {i} is too short for the signal the header claims: the file is corrupt")
        sr = header.get("sample_rate")
        if self.modality == "audio" and sr != self.sample_rate:
            raise BitstreamError(f"file sample rate {sr!r} does not match the model's {self.sample_rate}")
        source = header.get("source", {})
        if not isinstance(source, dict):
            raise BitstreamError("header field 'source' must be an object")
        source_rate = source.get("sample_rate") if self.modality == "audio" else None
        return ParsedFile(header=header, point=point, shape=tuple(shape), grid=grid, chunks=chunks,
                          tables=tables if coding == "range" else None, level_axis=self._has_level_axis(point),
                          contexts=contexts, envelope_chunks=envelope_chunks,
                          output_rate_hz=source_rate if _ints([source_rate]) else None)

    def _tile_geometry(self, channels: int, spans: tuple[tuple[int, int], ...]) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """Signal shape ``(1, C, *tile)`` of a tile and its size padded to the stride."""
        stride = self.encoder.stride
        tile_shape = (1, channels, *(b - a for a, b in spans))
        return tile_shape, tuple(-(-n // stride) * stride for n in tile_shape[2:])

    @staticmethod
    def _blend(out: Tensor, grid: TileGrid, spans: tuple[tuple[int, int], ...], piece: Tensor) -> None:
        """Add a decoded tile into ``out`` with its cross-fade window."""
        window = grid.window(spans)
        out[(..., *(slice(a, b) for a, b in spans))] += piece if window is None else piece * window

    def _decode_tile(self, parsed: "ParsedFile", index: int, spans: tuple[tuple[int, int], ...], postfilter: bool = True) -> Tensor:
        stride = self.encoder.stride
        tile_shape, padded = self._tile_geometry(parsed.shape[1], spans)
        sizes = self.quantizer.alphabet_sizes(**parsed.point.kwargs)
        grid_shape = [self.encoder.latent_batch(tile_shape), *(p // stride for p in padded)]
        try:
            flat = decode_tile(parsed.chunks[index], math.prod(grid_shape), sizes, parsed.tables,
                               grid=tuple(grid_shape), contexts=parsed.contexts)
        except ValueError as err:
            raise BitstreamError(f"payload of tile {index}: {err}") from None
        codes = torch.from_numpy(flat).reshape(*grid_shape, *([len(sizes)] if parsed.level_axis else []))
        device = next(self.parameters(), torch.empty(0)).device
        steps = None
        if parsed.envelope_chunks is not None:
            assert self.envelope is not None
            try:
                steps = self.envelope.decode(parsed.envelope_chunks[index], grid_shape[0], padded[0]).to(device)
            except ValueError as err:
                raise BitstreamError(f"band energies of tile {index}: {err}") from None
        enc = EncodedCodes(codes=codes.to(device), point=parsed.point, shape=tile_shape, padded=padded, envelope=steps)
        return self.decode(enc, postfilter, parsed.output_rate_hz).float().cpu()

    @torch.no_grad()
    def decompress(self, data: bytes, postfilter: bool = True) -> tuple[Tensor, dict[str, Any]]:
        """Bytes of a ``.vqc`` file -> ``(signal (1, C, *spatial), header)``.

        ``postfilter`` as in :meth:`decode`.

        Raises :class:`~codec.bitstream.BitstreamError` for a foreign, corrupt or truncated file,
        a file made by other weights, or a header inconsistent with this model.
        """
        parsed = self.read_header(data)
        out = torch.zeros(parsed.shape)
        for index, spans in enumerate(parsed.grid):
            self._blend(out, parsed.grid, spans, self._decode_tile(parsed, index, spans, postfilter))
        return out, parsed.header

    @torch.no_grad()
    def decompress_stream(self, data: bytes, postfilter: bool = True) -> tuple[dict[str, Any], Iterator[Tensor]]:
        """Audio: ``(header, blocks)``: the signal ``(1, C, T)`` as consecutive finished blocks.

        Memory stays bounded by two chunks whatever the file's duration. ``postfilter`` as in
        :meth:`decode`.
        """
        if self.modality != "audio":
            raise ValueError("decompress_stream is for audio; images decode with decompress")
        parsed = self.read_header(data)

        def blocks() -> Iterator[Tensor]:
            spans_list = list(parsed.grid)
            buf, done = torch.zeros(parsed.shape[:2] + (0,)), 0  # buf: samples [done, done + len) so far
            for index, spans in enumerate(spans_list):
                (a, b), = spans
                piece = self._decode_tile(parsed, index, spans, postfilter)
                window = parsed.grid.window(spans)
                piece = piece if window is None else piece * window
                grown = torch.zeros(parsed.shape[:2] + (b - done,))
                grown[..., : buf.shape[-1]] += buf
                grown[..., a - done :] += piece
                final = spans_list[index + 1][0][0] if index + 1 < len(spans_list) else b
                yield grown[..., : final - done]
                buf, done = grown[..., final - done :], final

        return parsed.header, blocks()

    # -- tokens for language models -------------------------------------------------------------
    @torch.no_grad()
    def tokenize(self, x: Tensor, rate: str | RatePoint = "max", *, tile: int | None = None, overlap: int | None = None,
                 beam_size: int | None = None, refine_steps: int | None = None) -> "Tokens":
        """One signal ``(1, C, *spatial)`` -> its code indices as one sequence/grid (:class:`Tokens`).

        Layout of ``Tokens.codes`` (int64): audio ``(channels, levels, frames)``; images
        ``(levels, h, w)``; ``levels`` is 1 for single-codebook quantizers. Long inputs are encoded
        tile by tile as in :meth:`compress`, and the overlaps are cut at their middle, so there is
        exactly one code per latent position. ``beam_size`` and ``refine_steps`` as in
        :meth:`compress_detailed`.
        """
        point = self.select_rate(rate, channels=x.shape[1] if self.modality == "audio" else 1)
        steps = self._refine_steps(refine_steps)
        grid = self.tile_grid(tuple(x.shape), tile, overlap)
        stride = self.encoder.stride
        total = [-(-n // stride) for n in x.shape[2:]]
        out: Tensor | None = None
        for (tok, spatial, info, target, _), spans in zip(self._tile_tokens(self._grid_pieces(x, grid), steps > 0), grid):
            codes = self._quantize(tok, spatial, info, point, beam_size, steps, target).codes
            codes = codes if codes.dim() == 2 + len(spatial) else codes.unsqueeze(-1)
            if out is None:
                out = torch.zeros(codes.shape[0], *total, codes.shape[-1], dtype=torch.int64)
            src, dst = [slice(None)], [slice(None)]
            for axis, (a, _b) in enumerate(spans):
                lo, hi = self._owned(grid, axis, a, total[axis])
                src.append(slice(lo - a // stride, hi - a // stride))
                dst.append(slice(lo, hi))
            out[tuple(dst)] = codes[tuple(src)].cpu()
        assert out is not None
        layout = out.permute(0, 2, 1) if self.modality == "audio" else out[0].permute(2, 0, 1)
        return Tokens(codes=layout.contiguous(), point=point, shape=tuple(x.shape), tiles=grid.to_header())

    def _owned(self, grid: TileGrid, axis: int, start: int, total: int) -> tuple[int, int]:
        """Latent positions ``[lo, hi)`` whose codes the tile starting at ``start`` provides."""
        stride = self.encoder.stride
        starts = grid.starts(axis)
        i = starts.index(start)
        half = grid.overlap[axis] // stride // 2
        lo = 0 if i == 0 else start // stride + half
        hi = total if i + 1 == len(starts) else starts[i + 1] // stride + half
        return lo, hi

    @torch.no_grad()
    def detokenize(self, tokens: "Tokens") -> Tensor:
        """:class:`Tokens` -> the decoded signal ``(1, C, *spatial)`` (tile by tile, cross-faded)."""
        point = self.select_rate(tokens.point.name if isinstance(tokens.point, RatePoint) else str(tokens.point))
        shape = tuple(tokens.shape)
        grid = TileGrid(tuple(shape[2:]), tuple(tokens.tiles["size"]), tuple(tokens.tiles["overlap"]))
        stride = self.encoder.stride
        total = [-(-n // stride) for n in shape[2:]]
        codes = tokens.codes.to(torch.int64)
        codes = codes.permute(0, 2, 1) if self.modality == "audio" else codes.permute(1, 2, 0).unsqueeze(0)
        expected = (self.encoder.latent_batch(shape), *total)
        if tuple(codes.shape[:-1]) != expected:
            raise ValueError(f"codes of shape {tuple(tokens.codes.shape)} do not fit a signal of shape {shape}")
        sizes = self.quantizer.alphabet_sizes(**point.kwargs)
        if codes.shape[-1] != len(sizes):
            raise ValueError(f"{codes.shape[-1]} code levels, rate point {point.name} has {len(sizes)}")
        for c, k in enumerate(sizes):
            if codes.numel() and (int(codes[..., c].min()) < 0 or int(codes[..., c].max()) >= k):
                raise ValueError(f"codes of level {c} out of range [0, {k}) for rate point {point.name}")
        if not self._has_level_axis(point):
            codes = codes[..., 0]
        device = next(self.parameters(), torch.empty(0)).device
        out = torch.zeros(shape)
        for spans in grid:
            region = tuple(slice(a // stride, -(-b // stride)) for a, b in spans)
            tile_shape, padded = self._tile_geometry(shape[1], spans)
            enc = EncodedCodes(codes=codes[(slice(None), *region)].to(device), point=point, shape=tile_shape, padded=padded)
            self._blend(out, grid, spans, self.decode(enc).float().cpu())
        return out

    # -- weights format ---------------------------------------------------------------------------
    @classmethod
    def build(
        cls,
        network: str,
        quantizer: str,
        *,
        network_kwargs: Mapping[str, Any] | None = None,
        quantizer_kwargs: Mapping[str, Any] | None = None,
        recon_loss: str = "l1",
        measured_rates: Mapping[str, float] | None = None,
    ) -> "Codec":
        """Build from registry names; the quantizer's ``dim`` is the network's ``latent_dim``."""
        config = {
            "format": FORMAT_NAME,
            "version": FORMAT_VERSION,
            "network": {"name": network, "kwargs": dict(network_kwargs or {})},
            "quantizer": {"name": quantizer, "kwargs": dict(quantizer_kwargs or {})},
            "recon_loss": recon_loss,
        }
        return cls.from_config(config, measured_rates=measured_rates)

    @classmethod
    def from_config(cls, config: Mapping[str, Any], measured_rates: Mapping[str, float] | None = None) -> "Codec":
        """Rebuild an (untrained) codec from a ``config.json`` dictionary."""
        _validate_config(config)
        nets = get_network(config["network"]["name"], **config["network"]["kwargs"])
        qkw = dict(config["quantizer"]["kwargs"])
        if "codebook_size" not in qkw:
            raise ValueError("quantizer kwargs need codebook_size")
        quant = get_quantizer(config["quantizer"]["name"], dim=nets.encoder.latent_dim, **qkw)
        rates = measured_rates if measured_rates is not None else config.get("measured_rates", {})
        model = cls(
            nets.encoder, quant, nets.decoder,
            recon_loss=config.get("recon_loss", "l1"), config=dict(config), measured_rates=rates,
        )
        if config.get("shallow_decoder") is not None:
            model.shallow_decoder = build_shallow_decoder(
                config["shallow_decoder"], get_network(config["network"]["name"], **config["network"]["kwargs"]).decoder)
        return model

    def export_config(self) -> dict[str, Any]:
        if self.config is None:
            raise ValueError("this Codec was assembled by hand; build it with Codec.build to save it")
        out = {**self.config, "modality": self.modality, "measured_rates": dict(self.measured_rates)}
        if self.target_points:
            out["target_points"] = list(self.target_points)
        if self.beam_size != DEFAULT_BEAM_SIZE:
            out["beam_size"] = int(self.beam_size)
        else:
            out.pop("beam_size", None)
        for key, value, default in (("refine_steps", self.refine_steps, DEFAULT_REFINE_STEPS),
                                    ("refine_step_size", self.refine_step_size, DEFAULT_REFINE_STEP_SIZE),
                                    ("refine_max_growth", self.refine_max_growth, DEFAULT_REFINE_MAX_GROWTH)):
            if value != default:
                out[key] = value
            else:
                out.pop(key, None)
        return out

    @torch.no_grad()
    def round_weights_(self, dtype: torch.dtype) -> "Codec":
        """Round every floating parameter and buffer to the values ``dtype`` can hold, in place.

        The model keeps computing in its own dtype (float32): only the values change, so that
        :meth:`save` with ``storage_dtype=dtype`` writes exactly this model in half the bytes.
        Publish tools call it before fitting entropy tables and measuring rates, so what they
        measure is what is published. Raises ``ValueError`` where a value would overflow.
        """
        _check_storage_dtype(dtype)
        for name, tensor in self.state_dict(keep_vars=True).items():
            if tensor.is_floating_point():
                rounded = tensor.detach().to(dtype)
                if not torch.isfinite(rounded).all() and torch.isfinite(tensor).all():
                    raise ValueError(f"{name} holds values outside the range of {dtype}")
                tensor.data.copy_(rounded.to(tensor.dtype))
        self._sha256 = None
        return self

    def save(self, folder: str | Path, metadata: Mapping[str, str] | None = None, name: str | None = None,
             storage_dtype: torch.dtype | None = None) -> Path:
        """Write ``model.safetensors`` and ``config.json`` into ``folder`` (created if missing).

        ``name`` is the model's published name, written into every ``.vqc`` header it makes so a
        file finds its model (default: the name it already has, else the folder's name).
        ``storage_dtype`` (``torch.float16`` or ``torch.bfloat16``) stores the floating tensors in
        that dtype; loading casts them back. Only a lossless cast is written: call
        :meth:`round_weights_` first, or this raises ``ValueError``.
        """
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        if self.config is not None:
            self.config["name"] = name if name is not None else (self.config.get("name") or folder.name)
        config = self.export_config()
        config.pop(SHARED_FILES_KEY, None)  # a saved folder holds every file itself
        publish = None if self.inference_only else getattr(self.quantizer, "publish", None)
        if callable(publish):  # RAQ: store the adapted codebooks of every rate point
            publish()
            self._sha256 = None  # published buffers are part of the weights
        state = {k: v.detach().contiguous().cpu().clone() for k, v in self.state_dict().items()}
        if storage_dtype is not None:
            _check_storage_dtype(storage_dtype)
            for k, v in state.items():
                if v.is_floating_point():
                    stored = v.to(storage_dtype)
                    if not torch.equal(stored.to(v.dtype), v):
                        raise ValueError(f"{k} is not exactly representable in {storage_dtype}: "
                                         "call round_weights_ before saving")
                    state[k] = stored
        if callable(publish) and self.quantizer.training:
            self.quantizer.train(True)  # still training: the stored codebooks go stale in this copy
        tmp_w, tmp_c = folder / (WEIGHTS_FILE + ".tmp"), folder / (CONFIG_FILE + ".tmp")
        write_safetensors(state, tmp_w, metadata={"format": FORMAT_NAME, **dict(metadata or {})})
        tmp_c.write_text(config_text(config))
        tmp_w.replace(folder / WEIGHTS_FILE)
        tmp_c.replace(folder / CONFIG_FILE)
        if (learned := learned_stage(self.postfilter)) is not None:
            learned.save_weights(folder / POSTFILTER_FILE)
        if self.shallow_decoder is not None and self.shallow_decoder.loaded:
            self.shallow_decoder.save_weights(folder / SHALLOW_DECODER_FILE, storage_dtype=storage_dtype)
        if self.entropy_tables:
            tmp_e = folder / (ENTROPY_FILE + ".tmp")
            tensors, meta = _entropy_state(self.entropy_tables, self.context_tables)
            write_safetensors(tensors, tmp_e, metadata=meta)
            tmp_e.replace(folder / ENTROPY_FILE)
        return folder

    @classmethod
    def load(cls, folder: str | Path, device: str | torch.device = "cpu") -> "Codec":
        """Load a folder written by :meth:`save` (safetensors + JSON; nothing executable is read)."""
        from safetensors.torch import load_file

        folder = Path(folder)
        config = _read_config(folder)
        files = _resolve_files(folder, config)
        w_path = files[WEIGHTS_FILE]
        if not w_path.is_file():
            raise FileNotFoundError(f"{folder} is not a vqcodec model folder ({CONFIG_FILE} + {WEIGHTS_FILE})")
        model = cls.from_config(config)
        if model.inference_only:
            model.strip_training_state(publish=False)
        state = load_file(str(w_path), device=str(device))
        expected = model.state_dict()
        for key, tensor in state.items():  # a float32 model may be stored in 16 bits, nothing else differs
            want = expected.get(key)
            if want is not None and tensor.dtype != want.dtype and not (
                want.is_floating_point() and tensor.dtype in STORAGE_DTYPES
            ):
                raise ValueError(f"weights: {key} is stored as {tensor.dtype}, the model holds {want.dtype}")
        missing, unexpected = model.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise ValueError(f"weights do not match the config: missing {missing[:5]}, unexpected {unexpected[:5]}")
        if files[ENTROPY_FILE].is_file():
            model.entropy_tables, model.context_tables = _load_entropy_state(files[ENTROPY_FILE])
        if (learned := learned_stage(model.postfilter)) is not None:
            if not files[POSTFILTER_FILE].is_file():
                raise ValueError(f"{folder}: the config names a learned postfilter, but {POSTFILTER_FILE} is missing")
            learned.load_weights(load_file(str(files[POSTFILTER_FILE])))
        if model.shallow_decoder is not None:
            if not files[SHALLOW_DECODER_FILE].is_file():
                raise ValueError(f"{folder}: the config names a shallow decoder, but {SHALLOW_DECODER_FILE} is missing")
            model.shallow_decoder.load_weights(load_file(str(files[SHALLOW_DECODER_FILE])))
            model.shallow_decoder.decoder.to(device)
        return model.to(device).eval()


def _read_config(folder: Path) -> dict[str, Any]:
    cfg_path = folder / CONFIG_FILE
    if not cfg_path.is_file():
        raise FileNotFoundError(f"{folder} is not a vqcodec model folder ({CONFIG_FILE} + {WEIGHTS_FILE})")
    if cfg_path.stat().st_size > MAX_CONFIG_BYTES:
        raise ValueError(f"{cfg_path} is larger than {MAX_CONFIG_BYTES} bytes")
    try:
        config = json.loads(cfg_path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{cfg_path}: not valid JSON ({err})") from None
    if not isinstance(config, dict):
        raise ValueError(f"{cfg_path}: not a JSON object")
    return config


def _resolve_files(folder: Path, config: Mapping[str, Any]) -> dict[str, Path]:
    files = {name: folder / name for name in SHAREABLE_FILES}
    shared = config.get(SHARED_FILES_KEY)
    if shared is None:
        return files
    where = folder / CONFIG_FILE
    if not isinstance(shared, dict):
        raise ValueError(f"{where}: {SHARED_FILES_KEY} must map file names to sibling folders")
    for name, sibling in shared.items():
        if name not in SHAREABLE_FILES:
            raise ValueError(f"{where}: {SHARED_FILES_KEY} may share {', '.join(SHAREABLE_FILES)}, not {name!r}")
        if not isinstance(sibling, str) or not _SIBLING_NAME.fullmatch(sibling):  # a name: no separator, no leading dot
            raise ValueError(f"{where}: {SHARED_FILES_KEY}[{name!r}] must name a sibling folder, not {sibling!r}")
        if (folder / name).exists():
            raise ValueError(f"{folder} holds {name} and also shares it from {sibling}: keep one")
        path = folder.parent / sibling / name
        if not path.is_file():
            raise FileNotFoundError(f"{folder} shares {name} from {sibling}, but {path} does not exist")
        files[name] = path
    return files


def model_files(folder: str | Path) -> dict[str, Path]:
    """Where the files of the model folder ``folder`` are: ``{file name: path}`` for
    ``model.safetensors``, ``entropy.safetensors``, ``postfilter.safetensors`` and
    ``shallow_decoder.safetensors`` (a path that
    does not exist: the model has no such file). A file is the folder's own unless its config
    shares it from a sibling folder (``"shared_files": {"model.safetensors": "audio-v5"}``: the
    folder of that name beside this one; one level, no paths). A shared file must exist, and a
    folder cannot both hold a file and share it."""
    folder = Path(folder)
    return _resolve_files(folder, _read_config(folder))


def _check_storage_dtype(dtype: torch.dtype) -> None:
    if dtype not in STORAGE_DTYPES:
        raise ValueError(f"storage dtype must be one of {sorted(map(str, STORAGE_DTYPES))}, got {dtype}")


CONTEXT_PREFIX = "context/"
CONTEXT_INDEX = "contexts"
TABLE_PREFIX = "table/"
TABLE_INDEX = "tables"


def _entropy_state(tables: Mapping[str, FrequencyTable], contexts: Mapping[str, ColumnContexts]) -> tuple[dict[str, Tensor], dict[str, str]]:
    """Tensors and metadata of ``entropy.safetensors``. Every distinct table is stored once (rate
    points that share a level's codes share its tables): frequency tables under
    ``"table/<hash>"`` with the index ``{"<point>/<column>": key}`` in the metadata entry
    ``tables``; context tables under ``"context/<hash>"`` with the index
    ``{"<point>/<column>": {source: key}}`` in ``contexts`` (a source's value is the key of its
    rows, or ``[rows, buckets]`` for a bucketed table). Files written before deduplication keep
    their frequency tables under ``"<point>/<column>"`` and still load."""
    tensors: dict[str, Tensor] = {}

    def put(prefix: str, t: Tensor) -> str:
        key = prefix + hashlib.sha256(t.numpy().tobytes() + str((tuple(t.shape), str(t.dtype))).encode()).hexdigest()[:20]
        tensors[key] = t
        return key

    table_index = {name: put(TABLE_PREFIX, t.to_tensor()) for name, t in sorted(tables.items())}
    index: dict[str, dict[str, str | list[str]]] = {}
    for name, cc in sorted(contexts.items()):
        for source, table in sorted(cc.tables.items()):
            rows, buckets = table.to_tensor(), table.buckets_tensor()
            index.setdefault(name, {})[source] = (put(CONTEXT_PREFIX, rows) if buckets is None
                                                  else [put(CONTEXT_PREFIX, rows), put(CONTEXT_PREFIX, buckets)])
    meta = {TABLE_INDEX: json.dumps(table_index, sort_keys=True)} if table_index else {}
    return tensors, meta | ({CONTEXT_INDEX: json.dumps(index, sort_keys=True)} if index else {})


def _load_entropy_state(path: Path) -> tuple[dict[str, FrequencyTable], dict[str, ColumnContexts]]:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
        raw = {k: f.get_tensor(k) for k in f.keys()}
    if TABLE_INDEX in meta:
        try:
            table_index = json.loads(meta[TABLE_INDEX])
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}: table index is not valid JSON ({err})") from None
        if not isinstance(table_index, dict) or any(not isinstance(k, str) or k not in raw for k in table_index.values()):
            raise ValueError(f"{path}: malformed table index")
        tables = {name: FrequencyTable.from_tensor(raw[k]) for name, k in table_index.items()}
    else:  # the layout before deduplication: one tensor per "<point>/<column>"
        tables = {k: FrequencyTable.from_tensor(t) for k, t in raw.items() if not k.startswith(CONTEXT_PREFIX)}
    contexts: dict[str, ColumnContexts] = {}
    if CONTEXT_INDEX in meta:
        try:
            index = json.loads(meta[CONTEXT_INDEX])
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}: context index is not valid JSON ({err})") from None
        if not isinstance(index, dict) or not all(isinstance(v, dict) for v in index.values()):
            raise ValueError(f"{path}: malformed context index")
        for name, sources in index.items():
            keys = {s: [k] if isinstance(k, str) else k for s, k in sources.items()}
            if any(not isinstance(k, list) or len(k) not in (1, 2) or any(not isinstance(x, str) or x not in raw for x in k)
                   for k in keys.values()):
                raise ValueError(f"{path}: context index names a missing table")
            contexts[name] = ColumnContexts({s: ContextTable.from_tensor(*(raw[x] for x in k)) for s, k in keys.items()})
    return tables, contexts


def config_text(config: Mapping[str, Any]) -> str:
    """A model config as ``config.json`` holds it (written by :meth:`Codec.save` and the publish tools):
    indented, with every list of plain numbers on one line (an integer table stays one line)."""
    text = json.dumps(config, indent=2, sort_keys=True)
    return re.sub(r"\[\s*(-?[0-9.eE+]+(?:,\s*-?[0-9.eE+]+)*)\s*\]",
                  lambda m: "[" + ", ".join(v.strip() for v in m.group(1).split(",")) + "]", text)


def _validate_config(config: Mapping[str, Any]) -> None:
    if not isinstance(config, Mapping):
        raise ValueError("model config must be a JSON object")
    if config.get("format") != FORMAT_NAME:
        raise ValueError(f"not a vqcodec model config (format={config.get('format')!r})")
    if config.get("version") != FORMAT_VERSION:
        raise ValueError(f"unsupported model config version {config.get('version')!r} (this build reads {FORMAT_VERSION})")
    for part in ("network", "quantizer"):
        entry = config.get(part)
        if not isinstance(entry, Mapping) or not isinstance(entry.get("name"), str) or not isinstance(entry.get("kwargs", {}), Mapping):
            raise ValueError(f"model config: {part!r} must be {{'name': str, 'kwargs': {{...}}}}")
    if not isinstance(config.get("name", ""), str):
        raise ValueError("model config: 'name' must be a string")
    targets = config.get("target_points", [])
    if not isinstance(targets, list) or not all(isinstance(t, str) for t in targets):
        raise ValueError("model config: target_points must be a list of point names")
    beam = config.get("beam_size", DEFAULT_BEAM_SIZE)
    if isinstance(beam, bool) or not isinstance(beam, int) or not 1 <= beam <= MAX_BEAM_SIZE:
        raise ValueError(f"model config: 'beam_size' must be an integer in [1, {MAX_BEAM_SIZE}]")
    steps = config.get("refine_steps", DEFAULT_REFINE_STEPS)
    if isinstance(steps, bool) or not isinstance(steps, int) or not 0 <= steps <= MAX_REFINE_STEPS:
        raise ValueError(f"model config: 'refine_steps' must be an integer in [0, {MAX_REFINE_STEPS}]")
    size = config.get("refine_step_size", DEFAULT_REFINE_STEP_SIZE)
    if isinstance(size, bool) or not isinstance(size, (int, float)) or not 0 < size <= 10:
        raise ValueError("model config: 'refine_step_size' must be a number in (0, 10]")
    envelope = config.get("envelope")
    if envelope is not None:
        if not isinstance(envelope, Mapping) or not isinstance(envelope.get("default", True), bool):
            raise ValueError("model config: 'envelope' must be an object whose 'default' is a boolean")
        kbps = envelope.get("measured_kbps", 0.0)
        if isinstance(kbps, bool) or not isinstance(kbps, (int, float)) or not 0 <= kbps <= 100:
            raise ValueError("model config: the envelope's 'measured_kbps' must be a number in [0, 100]")
    growth = config.get("refine_max_growth", DEFAULT_REFINE_MAX_GROWTH)
    if isinstance(growth, bool) or not isinstance(growth, (int, float)) or not 0 <= growth <= 1:
        raise ValueError("model config: 'refine_max_growth' must be a number in [0, 1]")
    if "refine_loss" in config and config["refine_loss"] not in OBJECTIVES:
        raise ValueError(f"model config: 'refine_loss' must be one of {', '.join(OBJECTIVES.names())}")
    if not isinstance(config.get("inference_only", False), bool):
        raise ValueError("model config: 'inference_only' must be true or false")
    rates = config.get("measured_rates", {})
    if not isinstance(rates, Mapping) or not all(isinstance(v, (int, float)) and v > 0 for v in rates.values()):
        raise ValueError("model config: measured_rates must map point names to positive numbers")
