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
keyword arguments, measured rates). No pickle anywhere.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from torch import Tensor, nn

from codec.bitstream import BitstreamError, read_container, write_container
from codec.entropy import FrequencyTable, decode_symbols, encode_symbols
from codec.losses import reconstruction_loss
from codec.nets import Decoder, Encoder, PadInfo, get_network
from codec.quant import Quantizer, channel_first, get_quantizer

__all__ = ["Codec", "CodecOutput", "EncodedCodes", "RatePoint", "RateError", "parse_rate"]

FORMAT_NAME = "vqcodec-model"
FORMAT_VERSION = 1
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
ENTROPY_FILE = "entropy.safetensors"
MAX_SIGNAL_ELEMENTS = 1 << 32  # samples x channels or pixels x channels in one .vqc file
MAX_CONFIG_BYTES = 1 << 20

_UNITS = {"bps": ("kbps", 1e-3), "kbps": ("kbps", 1.0), "bpp": ("bpp", 1.0)}
_RATE_RE = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*(bps|kbps|bpp)\s*$", re.IGNORECASE)


class RateError(ValueError):
    """A rate request that cannot be served; the message lists the available rates."""


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
        #: integer frequency tables per ``"<point>/<column>"``; missing ones fall back to bit packing
        self.entropy_tables: dict[str, FrequencyTable] = {}
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

    def select_rate(self, request: str | RatePoint) -> RatePoint:
        """Resolve a rate request to the best point that fits it.

        ``request`` is a point name, ``"max"``, ``"min"``, or ``<number><unit>`` with unit bps, kbps
        or bpp (case-insensitive). The chosen point has the highest rate not above the request.
        A unit of the other modality, or a request below the lowest point, raises
        :class:`RateError` listing the available rates.
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
        fitting = [p for p in points if p.rate <= value * (1 + 1e-9)]
        if not fitting:
            raise RateError(f"{text} is below the lowest rate of this codec. Available: {available}")
        return max(fitting, key=lambda p: (p.rate, p.nominal))

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

    # -- inference --------------------------------------------------------------------------------
    @torch.no_grad()
    def encode(self, x: Tensor, rate: str | RatePoint = "max") -> EncodedCodes:
        """Signal ``(B, C, *spatial)`` -> :class:`EncodedCodes` at the chosen rate point."""
        point = self.select_rate(rate)
        tokens, spatial, info = self._tokens(x)
        return self._quantize(tokens, spatial, info, point)

    def _tokens(self, x: Tensor) -> tuple[Tensor, tuple[int, ...], PadInfo]:
        """Signal -> latent tokens ``(B, N, D)``, the latent grid and the padding record."""
        y, info = self.encoder.prepare(x)
        latent = self.encoder(y)
        b, d, *spatial = latent.shape
        return latent.reshape(b, d, -1).transpose(1, 2), tuple(spatial), info

    def _quantize(self, tokens: Tensor, spatial: tuple[int, ...], info: PadInfo, point: RatePoint) -> EncodedCodes:
        codes = self.quantizer.encode(tokens, **point.kwargs)
        codes = codes.reshape(tokens.shape[0], *spatial, *codes.shape[2:])
        return EncodedCodes(codes=codes, point=point, shape=info.shape, padded=info.padded)

    @torch.no_grad()
    def decode(self, encoded: EncodedCodes) -> Tensor:
        """:class:`EncodedCodes` -> reconstruction in the original layout and range."""
        point = self.select_rate(encoded.point.name)
        codes = encoded.codes
        b, n_sp = codes.shape[0], len(encoded.padded)
        spatial = tuple(codes.shape[1 : 1 + n_sp])
        expected = tuple(p // self.encoder.stride for p in encoded.padded)
        if spatial != expected:
            raise ValueError(f"codes cover a latent grid {spatial}, the shape needs {expected}")
        tokens_codes = codes.reshape(b, math.prod(spatial), *codes.shape[1 + n_sp :])
        z_q = self.quantizer.decode(tokens_codes, **point.kwargs)
        latent = z_q.transpose(1, 2).reshape(b, self.encoder.latent_dim, *spatial)
        recon = self.decoder(latent)
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
        self._sha256 = None
        return super().train(mode)

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False):  # type: ignore[override]
        self._sha256 = None
        return super().load_state_dict(state_dict, strict=strict, assign=assign)

    @torch.no_grad()
    def fit_entropy_tables(self, signals: list[Tensor], prior: int = 1) -> None:
        """Count the codes of ``signals`` at every rate point into integer frequency tables."""
        points = self.rate_points()
        sizes = {p.name: self.quantizer.alphabet_sizes(**p.kwargs) for p in points}
        columns: dict[str, list[list[Tensor]]] = {p.name: [[] for _ in sizes[p.name]] for p in points}
        for x in signals:
            tokens, spatial, info = self._tokens(x)  # one encoder pass per signal, every point from it
            for point in points:
                codes = self._quantize(tokens, spatial, info, point).codes.reshape(-1, len(sizes[point.name]))
                for c, column in enumerate(columns[point.name]):
                    column.append(codes[:, c].cpu())
        self.entropy_tables = {
            f"{name}/{c}": FrequencyTable.from_codes(torch.cat(parts), k, prior)
            for name, cols in columns.items()
            for c, (k, parts) in enumerate(zip(sizes[name], cols))
        }

    def _tables(self, point: RatePoint) -> list[FrequencyTable | None]:
        """The frequency table of each code column at ``point`` (None: bit-packed)."""
        n = len(self.quantizer.alphabet_sizes(**point.kwargs))
        return [self.entropy_tables.get(f"{point.name}/{c}") for c in range(n)]

    @torch.no_grad()
    def compress(self, x: Tensor, rate: str | RatePoint = "max") -> bytes:
        """One signal ``(1, C, *spatial)`` -> the bytes of a ``.vqc`` file at the chosen rate point."""
        if x.dim() < 3 or x.shape[0] != 1:
            raise ValueError(f"compress takes one signal (1, C, ...), got {tuple(x.shape)}")
        if not torch.isfinite(x).all():
            raise ValueError("the signal contains NaN or infinite values")
        enc = self.encode(x, rate)
        sizes = self.quantizer.alphabet_sizes(**enc.point.kwargs)
        flat = enc.codes.reshape(-1, len(sizes)).cpu()
        tables = self._tables(enc.point)
        chunks = [encode_symbols(flat[:, c], k, table) for c, (k, table) in enumerate(zip(sizes, tables))]
        coding = ["range" if table is not None else "packed" for table in tables]
        header = {
            "modality": self.modality,
            "model": {"name": (self.config or {}).get("name", ""), "sha256": self.weights_sha256()},
            "rate_point": enc.point.name,
            "shape": list(enc.shape),
            "padded": list(enc.padded),
            "codes_shape": list(enc.codes.shape),
            "coding": coding,
        }
        if self.sample_rate is not None:
            header["sample_rate"] = int(self.sample_rate)
        return write_container(header, chunks)

    @torch.no_grad()
    def decompress(self, data: bytes) -> tuple[Tensor, dict[str, Any]]:
        """Bytes of a ``.vqc`` file -> ``(signal (1, C, *spatial), header)``.

        Raises :class:`~codec.bitstream.BitstreamError` for a foreign, corrupt or truncated file,
        a file made by other weights, or a header inconsistent with this model.
        """
        header, chunks = read_container(data)
        expected_types = {"modality": str, "model": dict, "rate_point": str, "coding": list}
        for name, kind in expected_types.items():
            if not isinstance(header.get(name), kind):
                raise BitstreamError(f"header field {name!r} is missing or not a {kind.__name__}")
        if header["modality"] != self.modality:
            raise BitstreamError(f"a {header['modality']!r} file cannot be decoded by this {self.modality} model")
        model = header["model"]
        if model.get("sha256") != self.weights_sha256():
            raise BitstreamError(f"file was made by another model ({model.get('name') or 'unnamed'}, weights {str(model.get('sha256'))[:12]}…)")
        names = {p.name: p for p in self.rate_points()}
        point = names.get(header["rate_point"])
        if point is None:
            raise BitstreamError(f"unknown rate point {header['rate_point']!r}")
        shape, padded, codes_shape = header.get("shape"), header.get("padded"), header.get("codes_shape")
        for name, v in (("shape", shape), ("padded", padded), ("codes_shape", codes_shape)):
            if not isinstance(v, list) or not all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in v):
                raise BitstreamError(f"header field {name!r} is not a list of non-negative integers")
        stride = self.encoder.stride
        if len(shape) != len(padded) + 2 or shape[0] != 1 or min(shape) < 1 or math.prod(shape) > MAX_SIGNAL_ELEMENTS:
            raise BitstreamError(f"implausible signal shape {shape}")
        if any(p != -(-s // stride) * stride for s, p in zip(shape[2:], padded)):
            raise BitstreamError("padded size does not match the signal shape")
        sizes = self.quantizer.alphabet_sizes(**point.kwargs)
        expected = [self.encoder.latent_batch(tuple(shape)), *[p // stride for p in padded]]
        trailing = codes_shape[len(expected):]
        if codes_shape[: len(expected)] != expected or trailing not in ([], [len(sizes)]) or (not trailing and len(sizes) != 1):
            raise BitstreamError(f"codes shape {codes_shape} does not fit signal {shape}")
        tables = self._tables(point)
        if len(chunks) != len(sizes) or header["coding"] != ["range" if t is not None else "packed" for t in tables]:
            raise BitstreamError("payload layout does not match this model's entropy coding")
        count = math.prod(expected)
        columns = []
        for c, (k, chunk, table) in enumerate(zip(sizes, chunks, tables)):
            try:
                columns.append(decode_symbols(chunk, count, k, table))
            except ValueError as err:
                raise BitstreamError(f"payload {c}: {err}") from None
        codes = torch.from_numpy(np.stack(columns, axis=1)).reshape(codes_shape)
        device = next(self.parameters(), torch.empty(0)).device
        enc = EncodedCodes(codes=codes.to(device), point=point, shape=tuple(shape), padded=tuple(padded))
        return self.decode(enc), header

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
        return cls(
            nets.encoder, quant, nets.decoder,
            recon_loss=config.get("recon_loss", "l1"), config=dict(config), measured_rates=rates,
        )

    def export_config(self) -> dict[str, Any]:
        if self.config is None:
            raise ValueError("this Codec was assembled by hand; build it with Codec.build to save it")
        return {**self.config, "modality": self.modality, "measured_rates": dict(self.measured_rates)}

    def save(self, folder: str | Path, metadata: Mapping[str, str] | None = None) -> Path:
        """Write ``model.safetensors`` and ``config.json`` into ``folder`` (created if missing)."""
        from safetensors.torch import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        config = self.export_config()
        publish = getattr(self.quantizer, "publish", None)
        if callable(publish):  # RAQ: store the adapted codebooks of every rate point
            publish()
            self._sha256 = None  # published buffers are part of the weights
        state = {k: v.detach().contiguous().cpu().clone() for k, v in self.state_dict().items()}
        if callable(publish) and self.quantizer.training:
            self.quantizer.train(True)  # still training: the stored codebooks go stale in this copy
        tmp_w, tmp_c = folder / (WEIGHTS_FILE + ".tmp"), folder / (CONFIG_FILE + ".tmp")
        save_file(state, str(tmp_w), metadata={"format": FORMAT_NAME, **dict(metadata or {})})
        tmp_c.write_text(json.dumps(config, indent=2, sort_keys=True))
        tmp_w.replace(folder / WEIGHTS_FILE)
        tmp_c.replace(folder / CONFIG_FILE)
        if self.entropy_tables:
            tmp_e = folder / (ENTROPY_FILE + ".tmp")
            save_file({k: t.to_tensor() for k, t in self.entropy_tables.items()}, str(tmp_e))
            tmp_e.replace(folder / ENTROPY_FILE)
        return folder

    @classmethod
    def load(cls, folder: str | Path, device: str | torch.device = "cpu") -> "Codec":
        """Load a folder written by :meth:`save` (safetensors + JSON; nothing executable is read)."""
        from safetensors.torch import load_file

        folder = Path(folder)
        cfg_path, w_path = folder / CONFIG_FILE, folder / WEIGHTS_FILE
        if not cfg_path.is_file() or not w_path.is_file():
            raise FileNotFoundError(f"{folder} is not a vqcodec model folder ({CONFIG_FILE} + {WEIGHTS_FILE})")
        if cfg_path.stat().st_size > MAX_CONFIG_BYTES:
            raise ValueError(f"{cfg_path} is larger than {MAX_CONFIG_BYTES} bytes")
        try:
            config = json.loads(cfg_path.read_text())
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise ValueError(f"{cfg_path}: not valid JSON ({err})") from None
        model = cls.from_config(config)
        state = load_file(str(w_path), device=str(device))
        missing, unexpected = model.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise ValueError(f"weights do not match the config: missing {missing[:5]}, unexpected {unexpected[:5]}")
        if (folder / ENTROPY_FILE).is_file():
            model.entropy_tables = {
                k: FrequencyTable.from_tensor(t) for k, t in load_file(str(folder / ENTROPY_FILE)).items()
            }
        return model.to(device).eval()


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
    rates = config.get("measured_rates", {})
    if not isinstance(rates, Mapping) or not all(isinstance(v, (int, float)) and v > 0 for v in rates.values()):
        raise ValueError("model config: measured_rates must map point names to positive numbers")
