"""A second decoder for shallow codes: where a file codes few residual levels, a decoder trained
on those codes alone synthesises them.

A residual quantizer's decoder is trained on codes of every depth (quantizer dropout), so at the
lowest rates, where a rate target codes one level at most positions, it is a compromise. A
decoder fine-tuned on the one-level points only (``recipes/loop.py``'s ``train_points``; preset
``audio_codec --config cpu-v8``) synthesises those codes better. This is the practice of
codecs that switch their synthesis by mode (Codec2's 700C against its 1200-3200 modes; Opus's
SILK and CELT layers): the codes and the encoder stay the model's, only what is heard at the
lowest rates changes.

The switch is made per latent position, from the codes themselves (no bits): a position is
*shallow* where it codes at most :attr:`ShallowDecoder.max_levels` levels. The shallow decoder's
weight is the share of shallow positions in a moving window of ``2 * smooth_frames + 1``
positions, interpolated to the signal's samples; the output is that weight times the shallow
decoder's signal plus the rest times the model decoder's. A tile whose positions are all deep
runs the model decoder alone, one whose positions are all shallow the shallow decoder alone.

Like the postfilter, it lives beside the weights: the weights hash a file's header names (the
encoder, quantizer and model decoder the codes are chosen against) does not cover it, and the
encoder makes its code and rate decisions against the model decoder. Band energies
(:mod:`codec.envelope`) are measured against the blend, what the decoder will synthesise, so their
steps correct the shallow decoder's output where it is heard -- except, with
:attr:`ShallowDecoder.model_energies_share`, in a tile whose positions are nearly all shallow
(the lowest rate targets'), where they are measured against the model decoder: on validation
speech at 0.8 kbps that gave twice the PESQ gain of measuring them against the shallow decoder
(+0.29 / +0.19 at 8 kHz / wide-band, against +0.13 / +0.07) for 0.016-0.019 of STOI, while at
1.2 kbps (about half the positions shallow) measuring against the blend is the better one in
both (``bench/shallow_decoder.py``). The weights live in the
model folder's :data:`SHALLOW_DECODER_FILE` (a safetensors file of the decoder's state dict).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from codec.storage import write_safetensors

__all__ = ["SHALLOW_DECODER_FILE", "ShallowDecoder", "build_shallow_decoder", "code_depth"]

SHALLOW_DECODER_FILE = "shallow_decoder.safetensors"
MAX_SMOOTH_FRAMES = 256


def code_depth(codes: Tensor, level_axis: bool) -> Tensor:
    """Levels coded per latent position: codes ``(B, *S, levels)`` (``-1``: a level left out, as
    a variable depth writes them) -> ``(B, *S)``; without a level axis every position codes one."""
    if not level_axis:
        return torch.ones(codes.shape, dtype=torch.long, device=codes.device)
    return (codes >= 0).sum(-1)


class ShallowDecoder:
    """The decoder of shallow codes and how it is blended with the model's (see the module).

    Args:
        decoder: a decoder of the model's network (:func:`codec.nets.get_network`); its weights
            are loaded with :meth:`load_weights`, and until then it refuses to run.
        max_levels: a position coding at most this many levels is shallow (``>= 1``).
        smooth_frames: half-width, in latent positions, of the window whose share of shallow
            positions is the shallow decoder's weight (0: each position's own).
        model_energies_share: where at least this share of a tile's positions is shallow, the
            encoder measures band energies against the model decoder instead of the blend
            (``None``: always against the blend; see the module).
    """

    def __init__(self, decoder: nn.Module, max_levels: int = 1, smooth_frames: int = 0,
                 model_energies_share: float | None = None) -> None:
        if not (isinstance(max_levels, int) and not isinstance(max_levels, bool) and max_levels >= 1):
            raise ValueError(f"shallow decoder max_levels must be an integer >= 1, got {max_levels!r}")
        if not (isinstance(smooth_frames, int) and not isinstance(smooth_frames, bool)
                and 0 <= smooth_frames <= MAX_SMOOTH_FRAMES):
            raise ValueError(f"shallow decoder smooth_frames must be an integer in [0, {MAX_SMOOTH_FRAMES}], got {smooth_frames!r}")
        if model_energies_share is not None and not (
                isinstance(model_energies_share, (int, float)) and not isinstance(model_energies_share, bool)
                and 0.0 <= model_energies_share <= 1.0):
            raise ValueError(f"shallow decoder model_energies_share must be a number in [0, 1], got {model_energies_share!r}")
        self.decoder = decoder.eval()
        self.max_levels, self.smooth_frames = max_levels, smooth_frames
        self.model_energies_share = None if model_energies_share is None else float(model_energies_share)
        self.loaded = False

    def config(self) -> dict[str, Any]:
        """The model-config entry that rebuilds this blend (its weights are a file of their own)."""
        out: dict[str, Any] = {"max_levels": self.max_levels, "smooth_frames": self.smooth_frames}
        if self.model_energies_share is not None:
            out["model_energies_share"] = self.model_energies_share
        return out

    def energies_on_model(self, depth: Tensor) -> bool:
        """Whether the band energies of a tile whose positions code ``depth`` ``(B, *S)`` levels are
        measured against the model decoder (see ``model_energies_share``)."""
        if self.model_energies_share is None or depth.numel() == 0:
            return False
        return float((depth <= self.max_levels).float().mean()) >= self.model_energies_share

    def weight(self, depth: Tensor, size: tuple[int, ...]) -> Tensor:
        """Levels per position ``(B, *S)`` -> the shallow decoder's weight ``(B, 1, *size)`` in [0, 1]
        (``size``: the decoded signal's spatial size; one or two axes)."""
        w = (depth <= self.max_levels).float().unsqueeze(1)
        k = self.smooth_frames
        if k > 0:
            dims = w.dim() - 2
            padded = F.pad(w, (k, k) * dims, mode="replicate")
            w = (F.avg_pool1d if dims == 1 else F.avg_pool2d)(padded, 2 * k + 1, 1)
        mode = "linear" if w.dim() == 3 else "bilinear"
        return F.interpolate(w, size=size, mode=mode, align_corners=False).clamp(0.0, 1.0)

    def blend(self, z_q: Tensor, depth: Tensor, decoder: nn.Module, for_energies: bool = False) -> Tensor:
        """The quantized latent ``(B, D, *S)`` and its levels per position ``(B, *S)`` -> the
        blended decoder output; ``decoder``: the model's. ``for_energies``: the output the encoder
        measures band energies against (the model decoder's alone where :meth:`energies_on_model`)."""
        if not self.loaded:
            raise RuntimeError(f"the shallow decoder has no weights (the model folder's {SHALLOW_DECODER_FILE})")
        shallow = depth <= self.max_levels
        if not bool(shallow.any()) or (for_energies and self.energies_on_model(depth)):
            return decoder(z_q)
        self.decoder.to(device=z_q.device, dtype=z_q.dtype)  # in place; a no-op once there
        low = self.decoder(z_q)
        if bool(shallow.all()):
            return low
        main = decoder(z_q)
        w = self.weight(depth, tuple(main.shape[2:])).to(main.dtype)
        return torch.lerp(main, low, w)

    def save_weights(self, path: str | Path, metadata: Mapping[str, str] | None = None,
                     storage_dtype: torch.dtype | None = None) -> None:
        """Write the decoder's tensors to ``path`` (safetensors, via a temporary file), floating ones
        in ``storage_dtype`` where given (only where that loses nothing: round them first)."""
        state = {k: v.detach().contiguous().cpu().clone() for k, v in self.decoder.state_dict().items()}
        if storage_dtype is not None:
            for k, v in state.items():
                if v.is_floating_point():
                    stored = v.to(storage_dtype)
                    if not torch.equal(stored.to(v.dtype), v):
                        raise ValueError(f"shallow decoder: {k} is not exactly representable in {storage_dtype}")
                    state[k] = stored
        path = Path(path)
        tmp = path.with_name(path.name + ".tmp")
        write_safetensors(state, tmp, metadata={"format": "vqcodec-shallow-decoder", **dict(metadata or {})})
        tmp.replace(path)

    def load_weights(self, tensors: Mapping[str, Tensor]) -> None:
        """Load the decoder's tensors (e.g. :data:`SHALLOW_DECODER_FILE`'s, floating ones possibly
        stored in 16 bits); names and shapes must match the model's decoder."""
        expected = self.decoder.state_dict()
        if set(tensors) != set(expected) or any(tuple(tensors[k].shape) != tuple(v.shape) for k, v in expected.items()):
            raise ValueError("shallow decoder weights do not match the model's decoder")
        for k, v in expected.items():
            t = tensors[k]
            if t.is_floating_point() != v.is_floating_point() or not (t.is_floating_point() or t.dtype == v.dtype):
                raise ValueError(f"shallow decoder weights: {k} is stored as {t.dtype}, the decoder holds {v.dtype}")
            if t.is_floating_point() and not bool(torch.isfinite(t).all()):
                raise ValueError(f"shallow decoder weights: {k} holds non-finite values")
        self.decoder.load_state_dict({k: v.to(expected[k].dtype) for k, v in tensors.items()})
        self.loaded = True

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.decoder.parameters())


def build_shallow_decoder(entry: Any, decoder: nn.Module) -> ShallowDecoder | None:
    """The shallow decoder of a model config's ``shallow_decoder`` entry (``None`` without one);
    ``decoder``: a fresh decoder of the model's network, to hold its weights."""
    if entry is None:
        return None
    keys = ("max_levels", "smooth_frames", "model_energies_share")
    if not isinstance(entry, dict) or set(entry) - set(keys):
        raise ValueError("config 'shallow_decoder' must be an object with 'max_levels', 'smooth_frames' "
                         "and optionally 'model_energies_share'")
    return ShallowDecoder(decoder, **{k: entry[k] for k in keys if k in entry})  # it checks the values
