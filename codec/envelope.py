"""Band-energy side information: the decoded waveform's energy envelope corrected toward the input's.

A VQ decoder trained with waveform and mel losses tends to miss the energy of what it cannot
predict: on held-out speech at 1.2-6 kbps, audio-v3's decoded bands above 1 kHz come out 4-8 dB
below the input on average, by a different amount in every band and every syllable. CELT (Valin et al. 2010, "A
high-quality speech and audio codec with less than 10-ms delay", IEEE TASLP; the core of Opus)
makes band energies explicit side information for this reason: the energy envelope is what
listeners, and envelope-based measures such as STOI, are most sensitive to, and it costs few bits.

:class:`BandEnergy` does the same after the fact. The encoder decodes its own codes, compares
the energy of each frequency band over each block of STFT frames (12 bands, ~107 ms blocks at
24 kHz) between the input and the decoded signal, and writes the ratio in ``step_db`` steps
(time-differential, range-coded with an integer table stored with the model). The decoder
scales the STFT of its output by those gains, linearly interpolated between block centres, and
resynthesises. One analysis-by-synthesis pass re-measures the corrected signal and adjusts the
steps, because interpolation spreads each block's gain into its neighbours. The gains depend only
on integers read from the file, so decoding stays deterministic in the sense of the codes.
:meth:`BandEnergy.correct` is the same correction unquantized and differentiable: the codec's
analysis-by-synthesis refinement (:mod:`codec.refine`) optimises the codes through it.

Shapes: signals are the decoder's network-domain waveforms ``(B, 1, T)`` (one row per channel);
steps are int64 ``(B, bands, blocks)``.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch
from torch import Tensor

from codec.entropy import FrequencyTable, decode_symbols, encode_symbols
from codec.registry import Registry

__all__ = ["ENVELOPES", "BandEnergy", "build_envelope", "SPEECH_BAND_EDGES_HZ"]

#: side-information envelopes by name (a model's config ``envelope.name``)
ENVELOPES: Registry["BandEnergy"] = Registry("envelope")

#: band edges in Hz: about two bands per octave up to 4 kHz, wider above (24 kHz audio)
SPEECH_BAND_EDGES_HZ = (0, 200, 400, 600, 800, 1200, 1600, 2000, 2800, 4000, 5500, 8000, 12000)

_FLOOR = 1e-9  # energy floor per STFT bin and frame (about -100 dB below a full-scale sine's)
MAX_STEPS = 32


@ENVELOPES.register("band-energy")
class BandEnergy:
    """Per-band, per-block energy gains of a waveform, coded as side information.

    Args:
        sample_rate: of the waveforms (the decoder's).
        edges_hz: increasing band edges from 0; the last is clipped to Nyquist.
        n_fft, hop: the STFT (Hann window).
        block: STFT frames per gain block.
        step_db: quantization step of a gain.
        max_steps: gains are clamped to ``+-max_steps * step_db``.
        table: integer counts of the ``4 * max_steps + 1`` time-delta symbols (``None``: bit-packed).
        passes: analysis-by-synthesis passes of the encoder (1: the plain ratio).
    """

    name = "band-energy"

    def __init__(self, sample_rate: int, edges_hz: Sequence[float] = SPEECH_BAND_EDGES_HZ, n_fft: int = 512,
                 hop: int = 128, block: int = 20, step_db: float = 3.0, max_steps: int = 8,
                 table: Sequence[int] | None = None, passes: int = 2) -> None:
        edges = [float(e) for e in edges_hz]
        nyquist = sample_rate / 2
        if sample_rate < 1000:
            raise ValueError(f"implausible sample rate {sample_rate}")
        if len(edges) < 2 or edges[0] != 0 or any(b <= a for a, b in zip(edges, edges[1:])) or edges[1] >= nyquist:
            raise ValueError("band edges must increase from 0 with at least one band below Nyquist")
        if n_fft < 16 or n_fft & (n_fft - 1) or not 0 < hop <= n_fft // 2 or not 1 <= block <= 1000:
            raise ValueError("n_fft must be a power of two >= 16, hop in (0, n_fft/2], block in [1, 1000]")
        if not 0.1 <= step_db <= 20 or not 1 <= max_steps <= MAX_STEPS or not 1 <= passes <= 4:
            raise ValueError("step_db must be in [0.1, 20], max_steps in [1, 32], passes in [1, 4]")
        self.sample_rate, self.n_fft, self.hop, self.block = int(sample_rate), int(n_fft), int(hop), int(block)
        self.step_db, self.max_steps, self.passes = float(step_db), int(max_steps), int(passes)
        edges = [e for e in edges if e < nyquist] + [nyquist]
        self.edges_hz = tuple(edges)
        freqs = np.arange(n_fft // 2 + 1) * sample_rate / n_fft
        band = np.clip(np.searchsorted(np.asarray(edges[1:-1]), freqs, side="right"), 0, len(edges) - 2)
        self._band = torch.from_numpy(band.astype(np.int64))  # (bins,) band of every STFT bin
        self._bins = torch.bincount(self._band, minlength=self.num_bands).double()
        self.table = None if table is None else FrequencyTable(np.asarray(table, dtype=np.int64))
        if self.table is not None and self.table.num_symbols != self.num_symbols:
            raise ValueError(f"envelope table has {self.table.num_symbols} symbols, expected {self.num_symbols}")

    # -- geometry ---------------------------------------------------------------------------------
    @property
    def num_bands(self) -> int:
        return len(self.edges_hz) - 1

    @property
    def num_symbols(self) -> int:
        """Time-delta alphabet: ``[-2 max_steps, 2 max_steps]``."""
        return 4 * self.max_steps + 1

    def blocks(self, length: int) -> int:
        """Gain blocks of a waveform of ``length`` samples."""
        return -(-(length // self.hop + 1) // self.block)

    def blocks_per_second(self) -> float:
        return self.sample_rate / (self.hop * self.block)

    def config(self) -> dict[str, Any]:
        """Keyword arguments that rebuild this envelope (what a model's config stores)."""
        out: dict[str, Any] = {"edges_hz": [int(e) if float(e).is_integer() else e for e in self.edges_hz],
                               "n_fft": self.n_fft, "hop": self.hop, "block": self.block, "step_db": self.step_db,
                               "max_steps": self.max_steps, "passes": self.passes}
        if self.table is not None:
            out["table"] = [int(c) for c in self.table.counts]
        return out

    # -- analysis and synthesis ---------------------------------------------------------------------
    def _stft(self, x: Tensor) -> Tensor:
        if x.dim() != 3 or x.shape[1] != 1:
            raise ValueError(f"expected waveforms (B, 1, T), got {tuple(x.shape)}")
        window = torch.hann_window(self.n_fft, dtype=torch.float32, device=x.device)
        return torch.stft(x[:, 0].float(), self.n_fft, self.hop, window=window, return_complex=True, pad_mode="constant")

    def energies(self, x: Tensor) -> Tensor:
        """Waveforms ``(B, 1, T)`` -> band energies ``(B, bands, blocks)`` (float64)."""
        spec = self._stft(x)
        power = (spec.real.double().pow(2) + spec.imag.double().pow(2))  # (B, bins, frames)
        b, _, frames = power.shape
        bands = torch.zeros(b, self.num_bands, frames, dtype=torch.float64, device=power.device)
        bands.index_add_(1, self._band.to(power.device), power)
        n = self.blocks(x.shape[-1])
        bands = torch.nn.functional.pad(bands, (0, n * self.block - frames))
        return bands.reshape(b, self.num_bands, n, self.block).sum(-1)

    def _floor(self, device: torch.device) -> Tensor:
        return (_FLOOR * self._bins * self.block).to(device)[None, :, None]

    def _ratio_db(self, target: Tensor, decoded: Tensor) -> Tensor:
        """Band energies ``(B, bands, blocks)`` of the input over the decoded signal's, in dB (floored)."""
        floor = self._floor(target.device)
        return 10 * torch.log10((target + floor) / (decoded + floor))

    def _quantize(self, target: Tensor, decoded: Tensor) -> Tensor:
        return torch.round(self._ratio_db(target, decoded) / self.step_db).clamp(-self.max_steps, self.max_steps).long()

    def analyse(self, target_energy: Tensor, decoded: Tensor) -> Tensor:
        """Steps ``(B, bands, blocks)`` that bring ``decoded`` ``(B, 1, T)`` toward the band
        energies ``target_energy`` (of :meth:`energies` of the input)."""
        steps = self._quantize(target_energy, self.energies(decoded))
        for _ in range(self.passes - 1):  # analysis by synthesis: what the interpolated gains left
            residual = self._quantize(target_energy, self.energies(self.apply(decoded, steps)))
            steps = (steps + residual).clamp(-self.max_steps, self.max_steps)
        return steps

    def apply(self, decoded: Tensor, steps: Tensor) -> Tensor:
        """``decoded`` ``(B, 1, T)`` with the gains of ``steps`` ``(B, bands, blocks)`` applied."""
        n = self.blocks(decoded.shape[-1])
        if tuple(steps.shape) != (decoded.shape[0], self.num_bands, n):
            raise ValueError(f"envelope steps {tuple(steps.shape)} do not fit a signal of {tuple(decoded.shape)}")
        return self._apply_db(decoded, steps.to(decoded.device).float() * self.step_db)

    def correct(self, target_energy: Tensor, decoded: Tensor) -> Tensor:
        """``decoded`` with the unquantized gains toward ``target_energy``: differentiable, what the
        coded steps approximate (the synthesis that analysis-by-synthesis refinement optimises)."""
        limit = self.max_steps * self.step_db
        return self._apply_db(decoded, self._ratio_db(target_energy, self.energies(decoded)).clamp(-limit, limit).float())

    def _apply_db(self, decoded: Tensor, gain_db: Tensor) -> Tensor:
        spec = self._stft(decoded)
        frames, n = spec.shape[-1], gain_db.shape[-1]
        # linear interpolation between block centres, held flat beyond the first and last
        pos = ((torch.arange(frames, device=spec.device, dtype=torch.float32) + 0.5) / self.block - 0.5).clamp(0, n - 1)
        lo = pos.floor().long()
        hi = (lo + 1).clamp(max=n - 1)
        w = (pos - lo.float())
        per_frame = gain_db[..., lo] * (1 - w) + gain_db[..., hi] * w  # (B, bands, frames)
        gain = torch.pow(10.0, per_frame[:, self._band.to(spec.device)] / 20)  # (B, bins, frames)
        window = torch.hann_window(self.n_fft, dtype=torch.float32, device=decoded.device)
        out = torch.istft(spec * gain, self.n_fft, self.hop, window=window, length=decoded.shape[-1])
        return out[:, None].to(decoded.dtype)

    # -- coding -------------------------------------------------------------------------------------
    def symbols(self, steps: Tensor) -> Tensor:
        """Steps ``(B, bands, blocks)`` -> the coded symbols: time deltas per band, offset to ``[0, num_symbols)``."""
        s = steps.detach().cpu().long()
        if s.numel() and (s.min() < -self.max_steps or s.max() > self.max_steps):
            raise ValueError(f"envelope steps out of [-{self.max_steps}, {self.max_steps}]")
        return torch.diff(s, dim=-1, prepend=torch.zeros_like(s[..., :1])) + 2 * self.max_steps

    def encode(self, steps: Tensor) -> bytes:
        """Steps ``(B, bands, blocks)`` -> bytes: :meth:`symbols`, range-coded with :attr:`table`."""
        return encode_symbols(self.symbols(steps).numpy(), self.num_symbols, self.table)

    def decode(self, data: bytes, batch: int, length: int) -> Tensor:
        """Inverse of :meth:`encode` for ``batch`` waveforms of ``length`` samples; ``ValueError``
        on a payload that does not hold exactly such steps."""
        n = self.blocks(length)
        flat = decode_symbols(data, batch * self.num_bands * n, self.num_symbols, self.table)
        steps = torch.from_numpy(flat - 2 * self.max_steps).reshape(batch, self.num_bands, n).cumsum(-1)
        if steps.numel() and (steps.min() < -self.max_steps or steps.max() > self.max_steps):
            raise ValueError("envelope steps out of range: corrupt payload")
        return steps


def build_envelope(entry: Any, sample_rate: int | None) -> BandEnergy | None:
    """The envelope of a model config's ``envelope`` entry (``None`` without one)."""
    if entry is None:
        return None
    if not isinstance(entry, dict) or not isinstance(entry.get("name"), str) or not isinstance(entry.get("kwargs", {}), dict):
        raise ValueError("model config: 'envelope' must be {'name': str, 'kwargs': {...}}")
    if sample_rate is None:
        raise ValueError("model config: an 'envelope' is side information of audio models only")
    kwargs = dict(entry.get("kwargs", {}))
    if "sample_rate" in kwargs:
        raise ValueError("model config: the envelope's sample rate is the model's")
    return ENVELOPES.get(entry["name"], sample_rate=int(sample_rate), **kwargs)

