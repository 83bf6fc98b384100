"""Decoder-side postfilters: enhancement of the decoded waveform that every file of a model gets.

A low-rate speech coder's output carries its coding noise spread over the spectrum; in the
valleys between formants (the spectral peaks of the vocal tract) that noise is least masked.
Since the CELP coders of the late 1980s (Chen & Gersho 1995, "Adaptive postfiltering for quality
enhancement of coded speech", IEEE Trans. Speech Audio Process. 3(1); G.728, G.729, AMR, Codec2)
the decoder therefore ends in an adaptive *formant postfilter*: each frame's short-term LPC
envelope ``1/A(z)`` is estimated from the decoded signal itself and the frame is filtered by
``A(z/g_num) / A(z/g_den)`` (``0 < g_num < g_den < 1``), which deepens the valleys relative to
the formant peaks, then brought back to the frame's energy. Nothing is sent: the filter is a
function of the decoded signal, so files are unchanged and a decoder may leave it out.

:class:`FormantPostfilter` applies that filter in the STFT domain, frame by frame: the LPC
polynomial of each Hann-windowed frame (autocorrelation with a Gaussian lag window, Levinson-
Durbin), the magnitude response of the two bandwidth-expanded polynomials on the STFT's
frequency grid, raised to ``strength`` (0 is the identity, 1 the classic filter), every frame's
energy kept, overlap-added. Shapes: waveforms ``(..., T)`` at the model's sample rate.

Measured on speech (the bundled models' cards): the filter raises PESQ, more at higher rates,
and lowers STOI a little and raises the mel distance (the output's spectrum is sharpened on
purpose); on music PESQ falls, so the CLI's ``decompress --no-postfilter`` leaves it out.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from codec.registry import Registry
from codec.storage import write_safetensors

__all__ = ["POSTFILTERS", "POSTFILTER_FILE", "Postfilter", "FormantPostfilter", "MaskNet", "SpectralMaskPostfilter",
           "BandwidthPostfilter", "build_postfilter", "learned_stage"]

#: decoder-side postfilters by name (a model's config ``postfilter.name``)
POSTFILTERS: Registry["Postfilter"] = Registry("postfilter")
#: a learned postfilter's weights in a model folder (not part of the codec's weights hash: it
#: does not change what a file's codes mean, only what the decoder makes of them)
POSTFILTER_FILE = "postfilter.safetensors"

SUBMULTIPLE_SHARE = 0.85  # a sub-multiple of the best pitch lag wins with this share of its correlation
_SILENT = 1e-10  # frames whose mean power is below this (about -100 dB) pass unchanged


def levinson(r: Tensor, order: int) -> Tensor:
    """LPC polynomials ``[1, a_1, ..., a_order]`` from autocorrelations ``r`` ``(N, >= order + 1)``.

    Batched Levinson-Durbin over the rows; rows with ``r_0 <= 0`` give ``[1, 0, ..., 0]``.
    Reflection coefficients are clamped into ``(-1, 1)``, so every polynomial is minimum-phase.
    """
    n = r.shape[0]
    a = torch.zeros(n, order + 1, dtype=r.dtype, device=r.device)
    a[:, 0] = 1.0
    err = r[:, 0].clamp_min(1e-30)
    live = r[:, 0] > 0
    for i in range(1, order + 1):
        acc = (a[:, :i] * r[:, 1 : i + 1].flip(-1)).sum(-1)
        k = (-acc / err).clamp(-0.9999, 0.9999) * live
        prev = a[:, 1:i].clone()
        a[:, 1:i] = prev + k[:, None] * prev.flip(-1)
        a[:, i] = k
        err = err * (1 - k * k)
    return a


@POSTFILTERS.register("formant")
class FormantPostfilter:
    """The adaptive formant postfilter ``A(z/gamma_num) / A(z/gamma_den)`` of CELP decoders.

    Args:
        sample_rate: of the waveforms it filters (the decoder's).
        gamma_num, gamma_den: bandwidth expansion of the numerator and denominator polynomials
            (``0 <= gamma_num < gamma_den < 1``; G.729 uses 0.55 / 0.7).
        strength: exponent of the magnitude response (0: identity; 1: the filter itself).
        order: LPC order (``None``: 2 + sample_rate / 1500, 18 at 24 kHz).
        frame_ms: STFT frame (Hann), hopped by a quarter of it.
        lag_window_hz: Gaussian lag window of the autocorrelation (smooths the envelope's peaks).
    """

    def __init__(self, sample_rate: int, gamma_num: float = 0.5, gamma_den: float = 0.8, strength: float = 0.5,
                 order: int | None = None, frame_ms: float = 32.0, lag_window_hz: float = 60.0,
                 pitch_gain: float = 0.0, pitch_threshold: float = 0.3, pitch_min_hz: float = 60.0,
                 pitch_max_hz: float = 400.0, pitch_frame_ms: float = 10.0) -> None:
        if not 0.0 <= gamma_num < gamma_den < 1.0:
            raise ValueError(f"need 0 <= gamma_num < gamma_den < 1, got {gamma_num}, {gamma_den}")
        if not 0.0 <= strength <= 2.0:
            raise ValueError(f"strength must be in [0, 2], got {strength}")
        if not 0.0 <= pitch_gain <= 1.0 or not 0.0 <= pitch_threshold < 1.0:
            raise ValueError(f"pitch_gain must be in [0, 1] and pitch_threshold in [0, 1), got {pitch_gain}, {pitch_threshold}")
        if not 0.0 < pitch_min_hz < pitch_max_hz < sample_rate / 4 or pitch_frame_ms <= 0:
            raise ValueError(f"need 0 < pitch_min_hz < pitch_max_hz < sample_rate / 4 and pitch_frame_ms > 0, "
                             f"got {pitch_min_hz}, {pitch_max_hz}, {pitch_frame_ms}")
        self.sample_rate = int(sample_rate)
        self.gamma_num, self.gamma_den, self.strength = float(gamma_num), float(gamma_den), float(strength)
        self.order = int(order) if order is not None else 2 + self.sample_rate // 1500
        self.n_fft = max(2 * (self.order + 1), int(frame_ms * self.sample_rate / 1000) // 4 * 4)
        self.hop = self.n_fft // 4
        self.lag_window_hz = float(lag_window_hz)
        self.pitch_gain, self.pitch_threshold = float(pitch_gain), float(pitch_threshold)
        self.pitch_min_hz, self.pitch_max_hz = float(pitch_min_hz), float(pitch_max_hz)
        self.pitch_hop = max(1, round(pitch_frame_ms * self.sample_rate / 1000))
        self.name = "formant"

    def config(self) -> dict[str, Any]:
        """The model-config entry that rebuilds this postfilter."""
        return {"name": self.name, "kwargs": {"gamma_num": self.gamma_num, "gamma_den": self.gamma_den,
                                              "strength": self.strength, "order": self.order,
                                              "frame_ms": 1000.0 * self.n_fft / self.sample_rate,
                                              "lag_window_hz": self.lag_window_hz, "pitch_gain": self.pitch_gain,
                                              "pitch_threshold": self.pitch_threshold, "pitch_min_hz": self.pitch_min_hz,
                                              "pitch_max_hz": self.pitch_max_hz,
                                              "pitch_frame_ms": 1000.0 * self.pitch_hop / self.sample_rate}}

    def response(self, frames: Tensor) -> Tensor:
        """Per-frame magnitude responses ``(N, n_fft // 2 + 1)`` for windowed frames ``(N, n_fft)``."""
        spec = torch.fft.rfft(frames, n=2 * self.n_fft)
        r = torch.fft.irfft(spec.abs().square(), n=2 * self.n_fft)[:, : self.order + 1]
        lags = torch.arange(self.order + 1, dtype=frames.dtype, device=frames.device)
        r = r * torch.exp(-0.5 * (2 * math.pi * self.lag_window_hz * lags / self.sample_rate) ** 2)
        r[:, 0] = r[:, 0] * 1.0001  # white-noise correction: conditions the Toeplitz system
        a = levinson(r, self.order)
        num = torch.fft.rfft(a * self.gamma_num ** lags, n=self.n_fft).abs()
        den = torch.fft.rfft(a * self.gamma_den ** lags, n=self.n_fft).abs().clamp_min(1e-9)
        return (num / den).pow(self.strength)

    def __call__(self, x: Tensor, rate_kbps: float | None = None, output_rate_hz: int | None = None) -> Tensor:
        """Filter waveforms ``(..., T)``; the output has the input's shape and dtype (``rate_kbps``,
        the coded rate, and ``output_rate_hz``, the rate the signal is returned at, are not used
        by this filter)."""
        if (self.strength == 0.0 and self.pitch_gain == 0.0) or x.shape[-1] == 0:
            return x
        shape, dtype = x.shape, x.dtype
        flat = x.reshape(-1, shape[-1]).float()
        if self.strength > 0.0:
            flat = self._formant(flat)
        if self.pitch_gain > 0.0:
            flat = self._pitch(flat)
        return flat.reshape(shape).to(dtype)

    def _formant(self, flat: Tensor) -> Tensor:
        """The short-term (formant) stage on rows ``(B, T)``."""
        window = torch.hann_window(self.n_fft, dtype=flat.dtype, device=flat.device)
        spec = torch.stft(flat, self.n_fft, self.hop, window=window, center=True, pad_mode="constant",
                          return_complex=True)  # (B, F, N)
        padded = torch.nn.functional.pad(flat, (self.n_fft // 2, self.n_fft // 2))
        frames = padded.unfold(-1, self.n_fft, self.hop)[:, : spec.shape[-1]] * window  # (B, N, n_fft)
        gain = self.response(frames.reshape(-1, self.n_fft)).reshape(*frames.shape[:2], -1).transpose(1, 2)  # (B, F, N)
        power = spec.abs().square()
        before, after = power.sum(1), (power * gain.square()).sum(1)
        live = before > _SILENT * self.n_fft
        norm = torch.where(live, (before / after.clamp_min(1e-30)).sqrt(), torch.ones_like(before))
        gain = torch.where(live[:, None], gain * norm[:, None], torch.ones_like(gain))
        return torch.istft(spec * gain, self.n_fft, self.hop, window=window, center=True, length=flat.shape[-1])

    def _pitch(self, flat: Tensor) -> Tensor:
        """The long-term (pitch) stage on rows ``(B, T)``: in every frame of ``2 * pitch_hop``
        samples (Hann, half overlapping) the lag ``L`` of the highest normalised correlation
        ``c`` with the signal's own past (``pitch_min_hz`` to ``pitch_max_hz``) is found (its
        shortest sub-multiple with :data:`SUBMULTIPLE_SHARE` of ``c`` or more, so that not a
        multiple of the pitch period is taken), and
        where ``c > pitch_threshold`` the frame becomes ``(x + g x[-L]) / (1 + g)``,
        ``g = pitch_gain * c``: a comb filter that deepens the valleys between harmonics."""
        hop, t = self.pitch_hop, flat.shape[-1]
        frame = 2 * hop
        lo, hi = round(self.sample_rate / self.pitch_max_hz), round(self.sample_rate / self.pitch_min_hz)
        count = -(-t // hop) + 1
        padded = torch.nn.functional.pad(flat, (hi, count * hop + frame - t))  # hi samples of silent past
        out = torch.zeros_like(flat)
        window = torch.hann_window(frame, dtype=flat.dtype, device=flat.device)
        index = (torch.arange(count, device=flat.device)[:, None] * hop + torch.arange(frame, device=flat.device)).reshape(-1)
        keep = index < t  # the frames' samples inside the signal
        weight = torch.zeros(t, dtype=flat.dtype, device=flat.device).index_add_(0, index[keep], window.repeat(count)[keep])
        span = hi - lo + frame  # the past a frame's lags reach, and the frame
        n = 1 << (span + frame - 1).bit_length()  # FFT size of the correlations
        for row in range(flat.shape[0]):
            seg = padded[row, hi:].unfold(0, frame, hop)[:count]  # (N, frame)
            past = padded[row].unfold(0, span, hop)[:count]  # (N, span): samples [s - hi, s - lo + frame)
            xcorr = torch.fft.irfft(torch.fft.rfft(past, n) * torch.fft.rfft(seg, n).conj(), n)[:, : hi - lo + 1]
            run = torch.nn.functional.pad(past.square().cumsum(-1), (1, 0))
            energy = run[:, frame:] - run[:, :-frame]  # (N, hi - lo + 1): the energy of each lag's window
            norm = xcorr / (energy * seg.square().sum(-1, keepdim=True)).sqrt().clamp_min(1e-12)
            c, at = norm.max(-1)
            # a multiple of the period correlates as well as the period: prefer the shortest
            # sub-multiple of the best lag (1/4, 1/3, 1/2) that correlates nearly as well
            lag = hi - at
            chosen_c, chosen_at = c.clone(), at.clone()
            for k in (2, 3, 4):
                sub = torch.div(lag + k // 2, k, rounding_mode="floor")
                near = torch.stack([hi - (sub + d) for d in (-1, 0, 1)], -1).clamp(0, hi - lo)  # (N, 3)
                c_k, pick = norm.gather(1, near).max(-1)
                ok = (sub >= lo) & (c_k >= SUBMULTIPLE_SHARE * c)
                chosen_c = torch.where(ok, c_k, chosen_c)
                chosen_at = torch.where(ok, near.gather(1, pick[:, None])[:, 0], chosen_at)
            c, at = chosen_c, chosen_at
            g = torch.where(c > self.pitch_threshold, self.pitch_gain * c.clamp(max=1.0), torch.zeros_like(c))
            lagged = past.gather(1, at[:, None] + torch.arange(frame, device=flat.device))  # x[s - L : s - L + frame]
            frames = (seg + g[:, None] * lagged) / (1 + g[:, None]) * window
            out[row].index_add_(0, index[keep], frames.reshape(-1)[keep])
        covered = weight > 1e-3
        return torch.where(covered, out / weight.clamp_min(1e-3), flat)


class MaskNet(nn.Module):
    """Per-bin gains of an STFT from its log power: ``(B, F, N)`` log power and a rate feature
    ``(B,)`` -> gains ``(B, F, N)`` in ``(0, max_gain)``.

    A 1-D convolution over frames with the bins as channels (``kernel`` frames wide), then
    ``blocks`` residual dilated convolutions (dilation 1, 2, 4, ...: about 70 ms of context each
    side at 24 kHz with the defaults), then a 1x1 convolution to one logit per bin; the gain is
    ``max_gain * sigmoid(logit)`` with the last layer zero at initialisation, so an untrained net
    is the identity (``max_gain = 2``: sigmoid(0) = 1/2).
    """

    def __init__(self, bins: int, hidden: int = 128, blocks: int = 3, kernel: int = 5, max_gain: float = 2.0) -> None:
        super().__init__()
        self.max_gain = float(max_gain)
        self.inp = nn.Conv1d(bins + 1, hidden, kernel, padding=kernel // 2)
        self.blocks = nn.ModuleList(nn.Conv1d(hidden, hidden, 3, padding=2 ** i, dilation=2 ** i) for i in range(blocks))
        self.out = nn.Conv1d(hidden, bins, 1)
        nn.init.zeros_(self.out.weight)
        nn.init.constant_(self.out.bias, math.log(1.0 / (self.max_gain - 1.0)))  # max_gain * sigmoid(bias) = 1

    def forward(self, log_power: Tensor, rate: Tensor) -> Tensor:
        feat = torch.cat([log_power, rate[:, None, None].expand(-1, 1, log_power.shape[-1])], 1)
        h = F.gelu(self.inp(feat))
        for conv in self.blocks:
            h = h + F.gelu(conv(h))
        return self.max_gain * torch.sigmoid(self.out(h))


@POSTFILTERS.register("spectral-mask")
class SpectralMaskPostfilter:
    """A learned postfilter: the decoded signal's STFT scaled bin by bin by :class:`MaskNet`'s
    gains, the decoder's phase kept (as the speech enhancement masks do; the learned
    postfilters of Opus 1.5, LACE and NoLACE, play the same part for its low-rate speech modes).

    Trained on pairs of (decoder output, original) of training speech and music at the model's
    rates (``recipes/postfilter.py``), to bring the compressed magnitudes ``|X|^0.3`` of the
    decoder's output and a PESQ-like loudness disturbance to the original's. ``then``: a formant postfilter
    entry (:class:`FormantPostfilter`'s config) applied after the mask. The network's weights
    live in the model folder's :data:`POSTFILTER_FILE` (:meth:`load_weights`); until they are
    loaded the filter refuses to run.

    Args:
        sample_rate: the decoder's.
        n_fft, hop: the STFT (Hann window).
        hidden, blocks, kernel, max_gain: :class:`MaskNet`'s.
        then: an optional formant postfilter entry applied to the masked signal.
    """

    def __init__(self, sample_rate: int, n_fft: int = 512, hop: int = 128, hidden: int = 128, blocks: int = 3,
                 kernel: int = 5, max_gain: float = 2.0, then: dict[str, Any] | None = None) -> None:
        if n_fft < 16 or n_fft % 2 or not 0 < hop <= n_fft // 2:
            raise ValueError(f"need an even n_fft >= 16 and 0 < hop <= n_fft / 2, got {n_fft}, {hop}")
        if not (1 <= blocks <= 8 and 1 <= hidden <= 1024 and kernel % 2 == 1 and 1.0 < max_gain <= 8.0):
            raise ValueError(f"mask net out of bounds: hidden {hidden}, blocks {blocks}, kernel {kernel}, max_gain {max_gain}")
        self.sample_rate, self.n_fft, self.hop = int(sample_rate), int(n_fft), int(hop)
        self.net = MaskNet(self.n_fft // 2 + 1, int(hidden), int(blocks), int(kernel), float(max_gain)).eval()
        self._kwargs = {"n_fft": self.n_fft, "hop": self.hop, "hidden": int(hidden), "blocks": int(blocks),
                        "kernel": int(kernel), "max_gain": float(max_gain)}
        self.then = None
        if then is not None:
            if not isinstance(then, dict) or then.get("name") != "formant":
                raise ValueError("postfilter 'then' must be a formant postfilter entry")
            self.then = build_postfilter(then, self.sample_rate)
        self.loaded = False
        self.name = "spectral-mask"

    def config(self) -> dict[str, Any]:
        """The model-config entry that rebuilds this postfilter (its weights are a file of their own)."""
        kwargs: dict[str, Any] = dict(self._kwargs)
        if self.then is not None:
            kwargs["then"] = self.then.config()
        return {"name": self.name, "kwargs": kwargs}

    @classmethod
    def from_file(cls, path: str | Path, sample_rate: int, **overrides: Any) -> tuple["SpectralMaskPostfilter", dict[str, str]]:
        """A postfilter rebuilt from a weights file of :meth:`save_weights` (its stored config, with
        ``overrides`` such as ``then``) and the file's metadata."""
        from safetensors import safe_open
        from safetensors.torch import load_file

        with safe_open(str(path), "pt") as f:
            metadata = dict(f.metadata() or {})
        stored = json.loads(metadata.get("config", "{}")).get("kwargs", {})
        pf = cls(sample_rate, **{**stored, **overrides})
        pf.load_weights(load_file(str(path)))
        return pf, metadata

    def save_weights(self, path: str | Path, metadata: dict[str, str] | None = None) -> None:
        """Write the net's tensors to ``path`` (safetensors, via a temporary file), with this
        postfilter's config and ``metadata`` in the file's metadata."""
        path = Path(path)
        tmp = path.with_name(path.name + ".tmp")
        write_safetensors({k: v.detach().contiguous().cpu() for k, v in self.net.state_dict().items()}, tmp,
                  metadata={"config": json.dumps(self.config()), **(metadata or {})})
        tmp.replace(path)

    def load_weights(self, tensors: dict[str, Tensor]) -> None:
        """Load :class:`MaskNet`'s tensors (e.g. :data:`POSTFILTER_FILE`'s); shapes must match."""
        expected = self.net.state_dict()
        if set(tensors) != set(expected) or any(tuple(tensors[k].shape) != tuple(v.shape) for k, v in expected.items()):
            raise ValueError("postfilter weights do not match its config")
        self.net.load_state_dict({k: v.float() for k, v in tensors.items()})
        self.loaded = True

    @staticmethod
    def rate_feature(rate_kbps: float | Tensor) -> Tensor:
        """The rate input of the net: ``log2(kbps / 2)`` (0 at 2 kbps)."""
        return torch.log2(torch.as_tensor(rate_kbps, dtype=torch.float32).clamp_min(0.1) / 2.0)

    def masked(self, flat: Tensor, rate: Tensor) -> Tensor:
        """The masked rows ``(B, T)`` (differentiable: the training step calls it); ``rate`` ``(B,)``
        of :meth:`rate_feature`."""
        window = torch.hann_window(self.n_fft, dtype=flat.dtype, device=flat.device)
        spec = torch.stft(flat, self.n_fft, self.hop, window=window, center=True, pad_mode="constant",
                          return_complex=True)  # (B, F, N)
        gain = self.net(torch.log(spec.real.square() + spec.imag.square() + 1e-9), rate)
        return torch.istft(spec * gain, self.n_fft, self.hop, window=window, center=True, length=flat.shape[-1])

    def __call__(self, x: Tensor, rate_kbps: float | None = None, output_rate_hz: int | None = None) -> Tensor:
        """Filter waveforms ``(..., T)`` decoded at ``rate_kbps`` (the rate point's; ``None``: 2 kbps);
        the output has the input's shape and dtype (``output_rate_hz`` is not used)."""
        if not self.loaded:
            raise RuntimeError("the spectral-mask postfilter has no weights (the model folder's postfilter.safetensors)")
        if x.shape[-1] == 0:
            return x
        shape, dtype = x.shape, x.dtype
        flat = x.reshape(-1, shape[-1]).float()
        self.net.to(flat.device)  # in place; a no-op once there
        with torch.no_grad():
            rate = self.rate_feature(2.0 if rate_kbps is None else rate_kbps).to(flat.device).expand(flat.shape[0])
            y = self.masked(flat, rate)
        if self.then is not None:
            y = self.then(y)
        return y.reshape(shape).to(dtype)


@POSTFILTERS.register("by-bandwidth")
class BandwidthPostfilter:
    """One postfilter for narrow-band output, another for the rest: the decoder knows the sample
    rate a file is returned at (its source's, in the header), and telephone speech (8 kHz) has
    other needs than wide-band speech, as narrow- and wide-band speech decoders have different
    postfilters. A signal returned at ``narrow_max_rate_hz`` or less gets ``narrow``, every other
    ``wide`` (``None``: unfiltered); an unknown output rate counts as wide.

    Args:
        sample_rate: the decoder's.
        narrow, wide: postfilter entries (formant or spectral-mask; at most one of them learned).
        narrow_max_rate_hz: the highest output sample rate that is narrow band.
    """

    def __init__(self, sample_rate: int, narrow: dict[str, Any], wide: dict[str, Any] | None = None,
                 narrow_max_rate_hz: int = 8000) -> None:
        if any(isinstance(e, dict) and e.get("name") == "by-bandwidth" for e in (narrow, wide)):
            raise ValueError("by-bandwidth postfilters do not nest")
        self.sample_rate, self.narrow_max_rate_hz = int(sample_rate), int(narrow_max_rate_hz)
        if not 0 < self.narrow_max_rate_hz < self.sample_rate:
            raise ValueError(f"narrow_max_rate_hz must be in (0, {self.sample_rate}), got {narrow_max_rate_hz}")
        self.narrow = build_postfilter(narrow, self.sample_rate)
        self.wide = build_postfilter(wide, self.sample_rate)
        if self.narrow is None or sum(isinstance(p, SpectralMaskPostfilter) for p in (self.narrow, self.wide)) > 1:
            raise ValueError("a by-bandwidth postfilter needs a narrow-band stage and at most one learned stage")
        self.name = "by-bandwidth"

    def config(self) -> dict[str, Any]:
        return {"name": self.name, "kwargs": {"narrow": self.narrow.config(),
                                              "wide": None if self.wide is None else self.wide.config(),
                                              "narrow_max_rate_hz": self.narrow_max_rate_hz}}

    def __call__(self, x: Tensor, rate_kbps: float | None = None, output_rate_hz: int | None = None) -> Tensor:
        narrow = output_rate_hz is not None and output_rate_hz <= self.narrow_max_rate_hz
        stage = self.narrow if narrow else self.wide
        return x if stage is None else stage(x, rate_kbps=rate_kbps, output_rate_hz=output_rate_hz)


Postfilter = FormantPostfilter | SpectralMaskPostfilter | BandwidthPostfilter


def learned_stage(postfilter: "Postfilter | None") -> SpectralMaskPostfilter | None:
    """The learned stage of a postfilter (whose weights are :data:`POSTFILTER_FILE`), if it has one."""
    if isinstance(postfilter, BandwidthPostfilter):
        return next((p for p in (postfilter.narrow, postfilter.wide) if isinstance(p, SpectralMaskPostfilter)), None)
    return postfilter if isinstance(postfilter, SpectralMaskPostfilter) else None


def build_postfilter(entry: Any, sample_rate: int | None) -> "Postfilter | None":
    """The postfilter of a model config's ``postfilter`` entry (``None`` without one)."""
    return POSTFILTERS.from_entry(entry, sample_rate)