"""Writes the golden files of band-energy side information (run once; never to "fix" a test).

``envelope_v2.json``: the ``envelope`` entry added to ``tiny_audio_model``'s config (a
band-energy envelope with a hand-made table);
``envelope_v2.vqc``: a two-tile mono file made by that model with band energies (container
version 2; chunks alternate: the codes of a tile, then its band energies);
``envelope_v2_steps.npy``: the band-energy steps its energy chunks hold ``(tiles, bands, blocks)``.
"""

import json
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch

from codec.files import compress_signal
from codec.model import CONFIG_FILE, Codec

HERE = Path(__file__).parent


def model_with_envelope(folder: Path) -> Codec:
    """``tiny_audio_model`` with the envelope of ``envelope_v2.json``, from a copy in ``folder``."""
    shutil.copytree(HERE / "tiny_audio_model", folder, dirs_exist_ok=True)
    config = json.loads((folder / CONFIG_FILE).read_text())
    config["envelope"] = json.loads((HERE / "envelope_v2.json").read_text())
    (folder / CONFIG_FILE).write_text(json.dumps(config))
    return Codec.load(folder)


def main() -> None:
    counts = [1] * 33
    for delta, c in {-2: 20, -1: 60, 0: 200, 1: 60, 2: 20}.items():
        counts[16 + delta] = c
    entry = {"name": "band-energy", "default": True, "measured_kbps": 0.4,
             "kwargs": {"edges_hz": [0, 200, 400, 600, 800, 1200, 1600, 2000, 2800, 4000, 5500, 8000, 12000],
                        "n_fft": 512, "hop": 128, "block": 20, "step_db": 3.0, "max_steps": 8, "passes": 2,
                        "table": counts}}
    (HERE / "envelope_v2.json").write_text(json.dumps(entry, indent=1) + "\n")
    with tempfile.TemporaryDirectory() as tmp:
        model = model_with_envelope(Path(tmp))
        t = torch.arange(36000) / 24000
        wav = (torch.sin(2 * torch.pi * 220 * t) * (0.3 + 0.2 * torch.sin(2 * torch.pi * 3 * t)))[None]
        out = compress_signal(wav, rate="max", model=model, sample_rate=24000, tile=24000, overlap=2400)
        parsed = model.read_header(out.data)
        assert parsed.envelope_chunks is not None and len(parsed.envelope_chunks) == 2
        steps = [model.envelope.decode(c, 1, -(-(b - a) // 320) * 320)[0]
                 for c, ((a, b),) in zip(parsed.envelope_chunks, parsed.grid)]
        (HERE / "envelope_v2.vqc").write_bytes(out.data)
        np.save(HERE / "envelope_v2_steps.npy", np.concatenate([s.numpy() for s in steps], -1))


if __name__ == "__main__":
    main()
