"""recipes/postfilter.py: pairs files in, a loadable learned postfilter out."""

import json

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from codec.postfilter import SpectralMaskPostfilter
from recipes.postfilter import Pairs, main


def write_pairs(path, clips=6, seconds=0.6, sample_rate=24000, seed=0):
    rng = np.random.default_rng(seed)
    refs = [rng.standard_normal(int(seconds * sample_rate)).astype(np.float32) * 0.1 for _ in range(clips)]
    dec = [r + 0.05 * rng.standard_normal(r.shape).astype(np.float32) for r in refs]
    names = [f"clip{i}.ogg|1.2kbps|{'nb' if i % 2 else 'wb'}|k64-n3" for i in range(clips)]
    np.savez(path, decoded=np.concatenate(dec).astype(np.float16), reference=np.concatenate(refs).astype(np.float16),
             lengths=np.array([len(r) for r in refs]), kbps=np.full(clips, 1.26, np.float32), names=np.array(names),
             sample_rate=sample_rate)


def test_pairs_crop_and_select_a_band(tmp_path):
    write_pairs(tmp_path / "p.npz")
    data = Pairs([tmp_path / "p.npz"], holdout=0.2, seed=0)
    assert len(data.train) + len(data.held) == 6 and not set(data.train) & set(data.held)
    dec, ref, kbps = data.crops(data.train, 3, 20000, np.random.default_rng(0))
    assert dec.shape == ref.shape == (3, 20000) and torch.allclose(kbps, torch.full((3,), 1.26))
    assert (dec - ref).abs().mean() < 0.1  # the pair's two sides are aligned
    nb = Pairs([tmp_path / "p.npz"], holdout=0.2, seed=0, band="nb")
    assert all("|nb|" in str(nb.names[i]) for i in [*nb.train, *nb.held])


def test_train_writes_weights_a_postfilter_loads(tmp_path):
    write_pairs(tmp_path / "p.npz")
    out = tmp_path / "mask.safetensors"
    main(["train", str(tmp_path / "p.npz"), "--steps", "3", "--batch", "2", "--crop-seconds", "0.5", "--hidden", "8",
          "--blocks", "1", "--holdout", "0.2", "--eval-every", "2", "--out", str(out)])
    with safe_open(str(out), "pt") as f:
        meta = f.metadata()
    assert meta["step"] == "3"
    pf = SpectralMaskPostfilter(24000, **json.loads(meta["config"])["kwargs"])
    pf.load_weights(load_file(str(out)))
    x = torch.randn(1, 1, 12000) * 0.1
    y = pf(x, rate_kbps=1.2)
    assert y.shape == x.shape and torch.isfinite(y).all() and not torch.equal(y, x)
