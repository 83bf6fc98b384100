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

from codec.entropy import FrequencyTable, _wavefront, decode_symbols, encode_symbols, packed_bits
from codec.registry import Registry

__all__ = ["ENVELOPES", "BandEnergy", "ContextBandEnergy", "build_envelope", "SPEECH_BAND_EDGES_HZ"]

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
        rd_lambda: the encoder's rate-distortion trade-off, in squared steps per bit: the steps
            minimise ``sum (r - s)^2 + rd_lambda * bits`` over the ratios ``r`` (:meth:`choose`);
            0 rounds every ratio.
        rd_reference_kbps: with it, the trade-off falls with the rate of the codes beside the
            energies: ``rd_lambda * min(1, rd_reference_kbps / rate)`` (a bit is worth less to a
            file that already has many); ``None``: ``rd_lambda`` at every rate.

    The last two change what the encoder writes, not what a file means: any reader of the model
    decodes the result.
    """

    name = "band-energy"

    def __init__(self, sample_rate: int, edges_hz: Sequence[float] = SPEECH_BAND_EDGES_HZ, n_fft: int = 512,
                 hop: int = 128, block: int = 20, step_db: float = 3.0, max_steps: int = 8,
                 table: Sequence[int] | None = None, passes: int = 2, rd_lambda: float = 0.0,
                 rd_reference_kbps: float | None = None) -> None:
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
        if not 0 <= rd_lambda <= 100:
            raise ValueError("rd_lambda must be in [0, 100]")
        if rd_reference_kbps is not None and not 0 < rd_reference_kbps <= 1e4:
            raise ValueError("rd_reference_kbps must be in (0, 10000]")
        self.rd_lambda = float(rd_lambda)
        self.rd_reference_kbps = None if rd_reference_kbps is None else float(rd_reference_kbps)
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
        if self.rd_lambda:
            out["rd_lambda"] = self.rd_lambda
        if self.rd_reference_kbps is not None:
            out["rd_reference_kbps"] = self.rd_reference_kbps
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

    def trade_off(self, rate_kbps: float | None = None) -> float:
        """The rate-distortion trade-off of the steps beside codes of ``rate_kbps`` (see the class)."""
        if self.rd_reference_kbps is None or rate_kbps is None or rate_kbps <= 0:
            return self.rd_lambda
        return self.rd_lambda * min(1.0, self.rd_reference_kbps / rate_kbps)

    def analyse(self, target_energy: Tensor, decoded: Tensor, rate_kbps: float | None = None) -> Tensor:
        """Steps ``(B, bands, blocks)`` that bring ``decoded`` ``(B, 1, T)`` toward the band
        energies ``target_energy`` (of :meth:`energies` of the input); ``rate_kbps``: the rate of
        the codes they go with (for :meth:`trade_off`)."""
        rd_lambda = self.trade_off(rate_kbps)

        def pick(ratio: Tensor) -> Tensor:  # ratios in steps -> steps: rounded, or the trade-off's choice
            if not rd_lambda:
                return torch.round(ratio).clamp(-self.max_steps, self.max_steps).long()
            return self.choose(ratio, rd_lambda=rd_lambda)

        steps = pick(self._ratio_db(target_energy, self.energies(decoded)) / self.step_db)
        for _ in range(self.passes - 1):  # analysis by synthesis: what the interpolated gains left
            steps = pick(steps + self._ratio_db(target_energy, self.energies(self.apply(decoded, steps))) / self.step_db)
        return steps

    def delta_bits(self) -> Tensor:
        """Bits ``(S, S)`` of moving from step ``i - max_steps`` to ``j - max_steps`` under the
        table (``S = 2 max_steps + 1``; the bit-packed width without one)."""
        s = 2 * self.max_steps + 1
        if self.table is None:
            return torch.full((s, s), float(packed_bits(self.num_symbols)), dtype=torch.float64)
        bits = -torch.from_numpy(np.log2(self.table.probabilities()))
        delta = torch.arange(s)[None, :] - torch.arange(s)[:, None] + 2 * self.max_steps
        return bits[delta]

    #: whether a band's symbols depend on the band below (then :meth:`choose` goes band by band)
    band_context = False

    def step_bits(self, lower: Tensor | None, blocks: int) -> tuple[Tensor, Tensor]:
        """The bits of the steps of one band: ``(first (N, S), moves (N, blocks - 1, S, S))`` -- the
        first block's step (its delta from zero) and every later move ``from -> to``; ``lower``
        ``(N, blocks)`` are the band below's time deltas (``None`` for the lowest band). Here the
        table codes every delta alike, so both broadcast over ``N`` and the blocks."""
        bits = self.delta_bits()
        return bits[self.max_steps][None], bits[None, None]

    def choose(self, ratio: Tensor, weight: Tensor | None = None, rd_lambda: float | None = None) -> Tensor:
        """Steps ``(B, bands, blocks)`` for ratios ``(B, bands, blocks)`` in steps: per band, the
        path through ``[-max_steps, max_steps]`` that minimises ``sum weight * (ratio - step)^2 +
        rd_lambda * bits`` (default :attr:`rd_lambda`; Viterbi over the blocks, each step costing
        the bits it is coded in, :meth:`step_bits`; bands from the lowest up where a band's code
        depends on the one below). ``weight`` ``(B, bands, blocks)`` scales each squared error (default 1)."""
        b, bands, n = ratio.shape
        if n == 0:
            return torch.zeros(b, bands, 0, dtype=torch.long, device=ratio.device)
        lam = self.rd_lambda if rd_lambda is None else float(rd_lambda)
        m = self.max_steps
        levels = torch.arange(-m, m + 1, dtype=torch.float64)
        dist = (ratio.detach().double().cpu()[..., None] - levels) ** 2  # (B, bands, blocks, S)
        if weight is not None:
            dist = weight.detach().double().cpu()[..., None] * dist
        if not self.band_context:
            first, moves = self.step_bits(None, n)
            path = _viterbi(dist.reshape(b * bands, n, -1), lam * first, lam * moves)
            return (path - m).reshape(b, bands, n).to(ratio.device)
        out = torch.zeros(b, bands, n, dtype=torch.long)
        lower = None
        for band in range(bands):
            first, moves = self.step_bits(lower, n)
            out[:, band] = _viterbi(dist[:, band], lam * first, lam * moves) - m
            lower = torch.diff(out[:, band], dim=-1, prepend=torch.zeros_like(out[:, band, :1]))
        return out.to(ratio.device)

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


@ENVELOPES.register("band-energy-context")
class ContextBandEnergy(BandEnergy):
    """:class:`BandEnergy` whose time deltas are coded under context tables.

    Every band and block's delta is coded under the row of an integer table (``R x K``, stored
    in the model's config, fitted on training data by ``scripts/fit_envelope.py --contexts``)
    chosen by two things the decoder already has: the step the band had in the block before
    (bounded to ``[-max_steps, max_steps]``, so near a bound only moves back are likely) and the
    delta of the band below in the same block, clipped to ``[-lower_clip, lower_clip]`` (an onset
    or a decay moves all bands together). Symbols are coded in wavefronts ``band + block``, each
    symbol after both of its contexts. On speech, music and drums at the model's rate points,
    the cross-entropy of the deltas falls from 3.10 bits (one table) to 2.65 (measured on
    validation clips; ``scripts/fit_envelope.py`` prints the numbers of a fit). A file written
    with one envelope is refused by a model of the other (the header names the envelope).

    Args (beyond :class:`BandEnergy`'s): ``context_table``: the rows, flattened
    (``(2 lower_clip + 2) * (2 max_steps + 2) * num_symbols`` integers >= 1, at most 65535);
    ``None`` codes every delta under ``table``, as :class:`BandEnergy` does. ``lower_clip``.
    """

    name = "band-energy-context"
    band_context = True

    def __init__(self, sample_rate: int, *args: Any, context_table: Sequence[int] | None = None,
                 lower_clip: int = 3, **kwargs: Any) -> None:
        super().__init__(sample_rate, *args, **kwargs)
        if not 1 <= lower_clip <= 2 * self.max_steps:
            raise ValueError(f"lower_clip must be in [1, {2 * self.max_steps}]")
        self.lower_clip = int(lower_clip)
        self.context_rows: np.ndarray | None = None
        if context_table is not None:
            rows = np.asarray(context_table)
            if rows.ndim != 1 or rows.size != self.num_contexts * self.num_symbols or not np.issubdtype(rows.dtype, np.integer) \
                    or rows.min() < 1 or rows.max() > 65535:
                raise ValueError(f"envelope context table must hold {self.num_contexts} x {self.num_symbols} integers in [1, 65535]")
            self.context_rows = rows.astype(np.int64).reshape(self.num_contexts, self.num_symbols)
            self._context_probs = self.context_rows / self.context_rows.sum(1, keepdims=True)
            self._context_bits = -torch.from_numpy(np.log2(self._context_probs))  # (rows, K)

    @property
    def num_contexts(self) -> int:
        """Rows of the context table: (lower delta or none) x (previous step or none)."""
        return (2 * self.lower_clip + 2) * (2 * self.max_steps + 2)

    def config(self) -> dict[str, Any]:
        out = super().config()
        out["lower_clip"] = self.lower_clip
        if self.context_rows is not None:
            out["context_table"] = [int(c) for c in self.context_rows.reshape(-1)]
        return out

    def fit_context_table(self, steps: list[Tensor], strength: float = 16.0) -> list[int]:
        """The flattened context table of step grids ``(B, bands, blocks)`` (training data): every
        row's delta counts smoothed toward the marginal with ``strength`` pseudo-counts,
        ``(n(c, s) + strength p(s)) / (n(c) + strength)``, scaled to integers in ``[1, 65535]``
        (the marginal has a Laplace prior, so every symbol stays codable in every row)."""
        sym = torch.cat([self.symbols(s).reshape(-1) for s in steps]).numpy()
        ctx = torch.cat([self.contexts(s).reshape(-1) for s in steps]).numpy()
        k, r = self.num_symbols, self.num_contexts
        marg = np.bincount(sym, minlength=k).astype(np.float64) + 1.0
        marg /= marg.sum()
        n = np.bincount(ctx * k + sym, minlength=r * k).reshape(r, k).astype(np.float64)
        p = (n + strength * marg[None]) / (n.sum(1, keepdims=True) + strength)
        return [int(v) for v in np.clip(np.rint(p * 65535), 1, 65535).astype(np.int64).reshape(-1)]

    def contexts(self, steps: Tensor) -> Tensor:
        """The context row ``(B, bands, blocks)`` of every symbol of ``steps`` ``(B, bands, blocks)``."""
        s = steps.detach().cpu().long()
        m, c = self.max_steps, self.lower_clip
        delta = self.symbols(s) - 2 * m
        lower = torch.full_like(s, 2 * c + 1)
        lower[:, 1:] = delta[:, :-1].clamp(-c, c) + c
        prev = torch.full_like(s, 2 * m + 1)
        prev[..., 1:] = s[..., :-1] + m
        return lower * (2 * m + 2) + prev

    def step_bits(self, lower: Tensor | None, blocks: int) -> tuple[Tensor, Tensor]:
        if self.context_rows is None:
            return super().step_bits(lower, blocks)
        m, c = self.max_steps, self.lower_clip
        s = 2 * m + 1
        bits = self._context_bits  # (rows, K)
        low = (torch.full((1, blocks), 2 * c + 1, dtype=torch.long) if lower is None else lower.cpu().clamp(-c, c) + c)
        delta = torch.arange(s)[None, :] - torch.arange(s)[:, None] + 2 * m  # (from, to)
        first = bits[low[:, 0] * (2 * m + 2) + 2 * m + 1][:, torch.arange(s) + m]  # from zero, no previous step
        rows = low[:, 1:, None] * (2 * m + 2) + torch.arange(s)[None, None]  # (N, blocks - 1, from)
        moves = bits[rows[..., None], delta[None, None]]  # (N, blocks - 1, from, to)
        return first, moves

    def encode(self, steps: Tensor) -> bytes:
        if self.context_rows is None:
            return super().encode(steps)
        import constriction

        sym = self.symbols(steps).numpy().reshape(-1)
        ctx = self.contexts(steps).numpy().reshape(-1)
        if sym.size == 0:
            return b""
        order, _, _ = _wavefront(tuple(steps.shape))
        enc = constriction.stream.queue.RangeEncoder()
        enc.encode(sym[order].astype(np.int32), constriction.stream.model.Categorical(perfect=False), self._context_probs[ctx[order]])
        return enc.get_compressed().astype("<u4").tobytes()

    def decode(self, data: bytes, batch: int, length: int) -> Tensor:
        if self.context_rows is None:
            return super().decode(data, batch, length)
        import constriction

        n, bands, m, c = self.blocks(length), self.num_bands, self.max_steps, self.lower_clip
        if batch * bands * n > MAX_ENVELOPE_SYMBOLS:
            raise ValueError(f"{batch * bands * n} envelope symbols exceed the bound")
        steps = np.zeros((batch, bands, n), dtype=np.int64)
        if steps.size == 0:
            if data:
                raise ValueError("envelope payload for an empty signal must be empty")
            return torch.from_numpy(steps)
        if len(data) % 4 or not data:
            raise ValueError("range-coded envelope payload must be a non-empty multiple of 4 bytes")
        dec = constriction.stream.queue.RangeDecoder(np.frombuffer(data, dtype="<u4").astype(np.uint32))
        family = constriction.stream.model.Categorical(perfect=False)
        flat, delta = steps.reshape(-1), np.zeros(steps.size, dtype=np.int64)  # flat: a view of the steps
        order, fronts, idx = _wavefront(steps.shape)
        bounds = np.concatenate([[0], np.cumsum(fronts)])
        try:
            for w in range(len(fronts)):  # each symbol after the band below (same block) and its own previous block
                pos = order[bounds[w] : bounds[w + 1]]
                has_low, has_prev = idx[1, pos] > 0, idx[2, pos] > 0
                low = np.where(has_low, np.clip(delta[pos - n * has_low], -c, c) + c, 2 * c + 1)
                prev = np.where(has_prev, flat[pos - has_prev] + m, 2 * m + 1)
                delta[pos] = np.asarray(dec.decode(family, self._context_probs[low * (2 * m + 2) + prev])) - 2 * m
                flat[pos] = np.where(has_prev, prev - m, 0) + delta[pos]
                if np.abs(flat[pos]).max() > m:
                    raise ValueError("envelope steps out of range: corrupt payload")
        except ValueError:
            raise
        except Exception as err:  # constriction reports a corrupt stream as a generic error
            raise ValueError(f"corrupt envelope payload ({err})") from None
        return torch.from_numpy(steps)


MAX_ENVELOPE_SYMBOLS = 1 << 24  # band-energy symbols of one chunk, at most (bounds a corrupt header's claim)


def _viterbi(dist: Tensor, first: Tensor, moves: Tensor) -> Tensor:
    """The cheapest state path ``(N, T)`` (indices into ``S``) under costs ``dist`` ``(N, T, S)`` of
    being in a state, ``first`` ``(N or 1, S)`` of starting in one and ``moves`` ``(N or 1, T - 1 or
    1, S, S)`` of moving ``from -> to`` between consecutive positions (float64)."""
    rows, t_len, s = dist.shape
    cost = first + dist[:, 0]
    back = torch.zeros(rows, t_len, s, dtype=torch.long)
    for t in range(1, t_len):
        move = moves[:, min(t - 1, moves.shape[1] - 1)]
        best, back[:, t] = (cost[:, :, None] + move).min(1)
        cost = best + dist[:, t]
    path = torch.zeros(rows, t_len, dtype=torch.long)
    path[:, -1] = cost.argmin(1)
    for t in range(t_len - 1, 0, -1):
        path[:, t - 1] = back[:, t].gather(1, path[:, t : t + 1])[:, 0]
    return path


def build_envelope(entry: Any, sample_rate: int | None) -> BandEnergy | None:
    """The envelope of a model config's ``envelope`` entry (``None`` without one)."""
    return ENVELOPES.from_entry(entry, sample_rate)