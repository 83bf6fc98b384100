"""Train a learned decoder postfilter (:class:`codec.postfilter.SpectralMaskPostfilter`) for a bundled audio model.

    # 1. coding pairs: training clips through the model at rate targets (CPU; one process per shard)
    python recipes/postfilter.py pairs --model audio-v7 --clips 1000 --music-segments 40 --part 0/2 --out runs/pf/pairs-0.npz
    python recipes/postfilter.py pairs --model audio-v7 --clips 1000 --music-segments 40 --part 1/2 --out runs/pf/pairs-1.npz
    # 2. the mask network on those pairs (a CPU is enough: 0.35 M parameters)
    python recipes/postfilter.py train runs/pf/pairs-0.npz runs/pf/pairs-1.npz --out runs/pf/mask.safetensors
    # 3. publish (audio-v11): the mask, then the pitch stage, for telephone-band output
    python scripts/publish_postfilter.py audio-v7 --publish-as audio-v11 --mask runs/pf/mask.safetensors \\
        --narrow-band-only --then-formant --then-strength 0 --pitch-gain 0.25

On a 2-core CPU step 1 took 15 min (1,040 clips, 62 min of audio) and step 2 (3,000 steps of 8
crops of 2 s) 17 min on one thread.

A pair is a training clip (``data/audio/train``: Czech and Dutch speech, music; never the
evaluation or validation sets) as the codec's decoder returns it without a postfilter, beside the
clip itself, both at the model's sample rate. Each clip is coded once, at a rate target drawn
from ``--rates`` (weighted towards the low rates a postfilter matters most at) and, with
probability ``--telephone``, first band-limited to 8 kHz sampling as ``vqcodec eval`` does for
telephone speech (the reference then is the band-limited clip). The bytes are the real file's:
compress, then decompress, as a user's decoder would see them.

Training minimises, between the masked decoder output and the reference at random 2 s crops, the
distance of compressed STFT magnitudes (``|X|^0.3`` at three FFT sizes, the speech enhancement
practice: loud and quiet bins weigh alike) plus ``--pesq-weight`` times the PESQ-like loudness
disturbance of :class:`codec.losses.LoudnessDisturbanceLoss`; only the magnitudes change, the
decoder's phase is kept. The weights are written every ``--eval-every`` steps with the held-out
losses printed (a run this short restarts rather than resumes). Only torch, numpy and
safetensors are needed.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

#: rate targets of the pairs and their weights (the postfilter matters most at low rates)
DEFAULT_RATES = "1.2kbps:4,1.4kbps:2,1.6kbps:2,2.4kbps:2,3.2kbps:1,6kbps:1,12kbps:1"


def _pairs(args: argparse.Namespace) -> None:
    from codec.evaluate import audio_files
    from codec.files import compress_signal
    from codec.hub import load_model
    from codec.io import read_audio
    from codec.nets.audio import resample

    torch.set_grad_enabled(False)
    torch.set_num_threads(args.threads)
    model = load_model(args.model)
    sr_model = int(model.sample_rate)
    part, parts = (int(v) for v in args.part.split("/"))
    rates = [(r.split(":")[0], float(r.split(":")[1])) for r in args.rates.split(",")]
    train = args.data / "audio" / "train"
    speech = audio_files(sorted(train.glob("speech-*")), args.clips, min_seconds=1.0)
    items: list[tuple[Path, float, float]] = [(p, 0.0, 0.0) for p in speech]
    music = sorted(p for p in train.glob("music-*/*") if p.is_file())
    if args.music_segments and not music:
        raise SystemExit(f"no music under {train}: pass --music-segments 0 or run scripts/get_data.sh")
    if not speech:
        raise SystemExit(f"no training speech under {train} (scripts/get_data.sh)")
    for i in range(args.music_segments):  # segments spread over the songs
        items.append((music[i % len(music)], 10.0 + 7.0 * (i // len(music)), args.music_seconds))
    rng = random.Random(args.seed)
    plan = [(item, rng.choices([r for r, _ in rates], [w for _, w in rates])[0], rng.random() < args.telephone and not item[2])
            for item in items]
    decoded, refs, kbps, names = [], [], [], []
    t0, seconds = time.time(), 0.0
    for n, ((path, start, length), rate, phone) in enumerate(plan):
        if n % parts != part:
            continue
        wav, meta = read_audio(path)
        sr = meta["sample_rate"]
        wav = wav.float().mean(0, keepdim=True)
        if length:
            wav = wav[..., int(start * sr): int((start + length) * sr)]
            if wav.shape[-1] < sr:
                continue
        if phone:
            wav, sr = resample(wav, sr, 8000).clamp(-1, 1), 8000
        out = compress_signal(wav, rate=rate, model=model, sample_rate=sr)
        raw, _ = model.decompress(out.data, postfilter=False)
        ref = resample(wav, sr, sr_model)[..., : raw.shape[-1]]
        decoded.append(raw.reshape(-1)[: ref.shape[-1]].numpy().astype(np.float16))
        refs.append(ref.reshape(-1).numpy().astype(np.float16))
        kbps.append(float(out.point.rate))  # the rate the decoder gives its postfilter
        names.append(f"{path.name}|{rate}|{'nb' if phone else 'wb'}|{out.point.name}")
        seconds += ref.shape[-1] / sr_model
        if len(names) % 50 == 0:
            print(f"{len(names)} clips, {seconds / 60:.1f} min, {time.time() - t0:.0f} s", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    lengths = np.array([len(d) for d in decoded], dtype=np.int64)
    np.savez(args.out, decoded=np.concatenate(decoded), reference=np.concatenate(refs), lengths=lengths,
             kbps=np.array(kbps, dtype=np.float32), names=np.array(names), sample_rate=sr_model)
    print(f"wrote {args.out}: {len(names)} clips, {seconds / 60:.1f} min in {time.time() - t0:.0f} s")


class Pairs:
    """The clips of ``pairs`` files, for random crops: ``decoded``, ``reference`` float16 ``(total,)``."""

    def __init__(self, paths: list[Path], holdout: float, seed: int, band: str | None = None) -> None:
        dec, ref, lengths, kbps, names = [], [], [], [], []
        for path in paths:
            with np.load(path) as z:
                dec.append(z["decoded"]), ref.append(z["reference"]), lengths.append(z["lengths"])
                kbps.append(z["kbps"]), names.append(z["names"])
                self.sample_rate = int(z["sample_rate"])
        self.decoded, self.reference = np.concatenate(dec), np.concatenate(ref)
        self.lengths, self.kbps, self.names = np.concatenate(lengths), np.concatenate(kbps), np.concatenate(names)
        self.starts = np.concatenate([[0], np.cumsum(self.lengths)[:-1]])
        keep = np.arange(len(self.lengths))
        if band is not None:  # only the pairs coded from that band ("nb": telephone, "wb": the rest)
            keep = np.array([i for i, n in enumerate(self.names) if str(n).split("|")[2] == band], dtype=np.int64)
            if not len(keep):
                raise SystemExit(f"no {band} pairs in {', '.join(map(str, paths))}")
        order = keep[np.random.default_rng(seed).permutation(len(keep))]
        n_hold = max(1, int(holdout * len(order)))
        self.held, self.train = np.sort(order[:n_hold]), np.sort(order[n_hold:])

    def crops(self, which: np.ndarray, batch: int, length: int, rng: np.random.Generator) -> tuple[torch.Tensor, ...]:
        """``batch`` random crops of ``length`` samples (zero-padded clips shorter than that)."""
        picks = rng.choice(which, batch)
        dec = np.zeros((batch, length), np.float32)
        ref = np.zeros((batch, length), np.float32)
        for i, k in enumerate(picks):
            n = int(self.lengths[k])
            off = int(rng.integers(0, max(1, n - length + 1)))
            m = min(length, n)
            a = int(self.starts[k]) + off
            dec[i, :m], ref[i, :m] = self.decoded[a: a + m], self.reference[a: a + m]
        return torch.from_numpy(dec), torch.from_numpy(ref), torch.from_numpy(self.kbps[picks].astype(np.float32))


class MaskLoss(torch.nn.Module):
    """Compressed-magnitude distance over STFT sizes + ``pesq_weight`` x the PESQ-like loudness
    disturbance (:class:`codec.losses.LoudnessDisturbanceLoss`) between ``(B, T)`` waveforms."""

    def __init__(self, sample_rate: int, n_ffts: tuple[int, ...] = (256, 512, 1024), power: float = 0.3,
                 pesq_weight: float = 1.0) -> None:
        super().__init__()
        from codec.losses import LoudnessDisturbanceLoss

        self.n_ffts, self.power, self.pesq_weight = n_ffts, power, pesq_weight
        self.disturbance = LoudnessDisturbanceLoss(sample_rate)

    def forward(self, ref: torch.Tensor, out: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        spectral = ref.new_zeros(())
        for n in self.n_ffts:
            window = torch.hann_window(n, device=ref.device)
            a, b = (torch.stft(x, n, n // 4, window=window, return_complex=True).abs().clamp_min(1e-7).pow(self.power)
                    for x in (ref, out))
            spectral = spectral + (a - b).square().mean() / len(self.n_ffts)
        disturbance = self.disturbance(ref, out)
        return spectral + self.pesq_weight * disturbance, {"spectral": float(spectral.detach()), "disturbance": float(disturbance.detach())}


def _train(args: argparse.Namespace) -> None:
    from codec.postfilter import SpectralMaskPostfilter

    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    data = Pairs(args.pairs, args.holdout, args.seed, args.band)
    sr = data.sample_rate
    pf = SpectralMaskPostfilter(sr, n_fft=args.n_fft, hop=args.hop, hidden=args.hidden, blocks=args.blocks,
                                kernel=args.kernel, max_gain=args.max_gain)
    net = pf.net.train()
    loss_fn = MaskLoss(sr, pesq_weight=args.pesq_weight)
    opt = torch.optim.AdamW(net.parameters(), lr=args.lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, args.lr, total_steps=args.steps, pct_start=max(0.05, 2.0 / args.steps))
    rng = np.random.default_rng(args.seed)
    held = [data.crops(data.held, args.batch, int(args.crop_seconds * sr), np.random.default_rng(1000 + i))
            for i in range(4)]

    def held_loss() -> dict[str, float]:
        net.eval()
        out: dict[str, float] = {}
        with torch.no_grad():
            for dec, ref, kbps in held:
                for name, y in (("none", dec), ("mask", pf.masked(dec, pf.rate_feature(kbps)))):
                    total, parts = loss_fn(ref, y)
                    out[name] = out.get(name, 0.0) + float(total) / len(held)
                    for k, v in parts.items():
                        out[f"{name}_{k}"] = out.get(f"{name}_{k}", 0.0) + v / len(held)
        net.train()
        return out

    print(f"{len(data.train)} training clips, {len(data.held)} held out; {sum(p.numel() for p in net.parameters())} "
          f"parameters; held-out {held_loss()}", flush=True)
    t0 = time.time()
    for step in range(1, args.steps + 1):
        dec, ref, kbps = data.crops(data.train, args.batch, int(args.crop_seconds * sr), rng)
        loss, parts = loss_fn(ref, pf.masked(dec, pf.rate_feature(kbps)))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()
        sched.step()
        if step % args.log_every == 0 or step == args.steps:
            print(f"step {step} loss {float(loss.detach()):.4f} {parts} {time.time() - t0:.0f} s", flush=True)
        if step % args.eval_every == 0 or step == args.steps:
            print(f"  held-out {held_loss()}", flush=True)
            args.out.parent.mkdir(parents=True, exist_ok=True)
            pf.save_weights(args.out, {"step": str(step)})
    print(f"wrote {args.out}")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)
    p = sub.add_parser("pairs", help="code training clips: (decoded, reference) pairs at the model's rate")
    p.add_argument("--model", default="audio-v7")
    p.add_argument("--data", type=Path, default=ROOT / "data")
    p.add_argument("--clips", type=int, default=1200, help="training speech clips (spread over the sorted list)")
    p.add_argument("--music-segments", type=int, default=60)
    p.add_argument("--music-seconds", type=float, default=6.0)
    p.add_argument("--rates", default=DEFAULT_RATES, help="rate:weight,... targets drawn per clip")
    p.add_argument("--telephone", type=float, default=0.4, help="share of speech clips band-limited to 8 kHz first")
    p.add_argument("--part", default="0/1", help="i/n: this process codes every n-th clip from the i-th")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, required=True)
    t = sub.add_parser("train", help="train the mask network on pairs files")
    t.add_argument("pairs", type=Path, nargs="+")
    t.add_argument("--steps", type=int, default=3000)
    t.add_argument("--batch", type=int, default=8)
    t.add_argument("--crop-seconds", type=float, default=2.0)
    t.add_argument("--lr", type=float, default=2e-3)
    t.add_argument("--pesq-weight", type=float, default=0.1,
                   help="weight of the PESQ-like loudness disturbance (0.4 games it: real PESQ falls; 0 gains little)")
    t.add_argument("--n-fft", type=int, default=512)
    t.add_argument("--hop", type=int, default=128)
    t.add_argument("--hidden", type=int, default=128)
    t.add_argument("--blocks", type=int, default=3)
    t.add_argument("--kernel", type=int, default=5)
    t.add_argument("--max-gain", type=float, default=2.0)
    t.add_argument("--holdout", type=float, default=0.03)
    t.add_argument("--band", choices=("nb", "wb"), default=None, help="train on the telephone (nb) or other (wb) pairs only")
    t.add_argument("--log-every", type=int, default=100)
    t.add_argument("--eval-every", type=int, default=500)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--threads", type=int, default=1)
    t.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    if args.command == "pairs":
        _pairs(args)
    else:
        _train(args)


if __name__ == "__main__":
    main()
