"""Publish a bundled audio model with a decoder-side postfilter under a new name.

    python scripts/publish_postfilter.py audio-v7 --publish-as audio-v8 \\
        --gamma-num 0.6 --gamma-den 0.9 --strength 0.5 --description "..."
    python scripts/publish_postfilter.py audio-v7 --publish-as audio-v9 --pitch-gain 0.25
    python scripts/publish_postfilter.py audio-v7 --publish-as audio-v11 --mask runs/pf/mask.safetensors \
        --then-formant --pitch-gain 0.25
    python scripts/publish_postfilter.py audio-v7 --publish-as audio-v12 --pitch-gain 0.25 \
        --narrow-strength 0.75 --narrow-pitch-gain 0.4

A learned postfilter (``--mask``, the output of ``recipes/postfilter.py train``) is stored as the
folder's ``postfilter.safetensors``, whose hash the index records beside the others; with
``--then-formant`` the formant postfilter of the other options follows it. ``--narrow-strength``
(and ``--narrow-pitch-gain``) give signals returned at 8 kHz or less (telephone speech) a formant
postfilter of their own (:class:`codec.postfilter.BandwidthPostfilter`), the rest the one of the
other options.

A postfilter (:mod:`codec.postfilter`) is applied by the decoder to every signal it decodes; it
costs no bits and leaves the weights, the entropy tables, the encoder and the files it writes as
they are. It still changes what the model's files decode to, so it is published as a new model
(the source model, and every file it wrote, keep decoding as before): the model's folder is
copied, its ``config.json`` gets the ``postfilter`` entry and the new name, its card the new
title and a "Postfilter" section, and ``index.json`` an entry with the same weight and table
hashes. The weights and tables are checked to be the published ones before and after.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from codec.hub import BUNDLED_DIR, file_sha256  # noqa: E402
from codec.model import CONFIG_FILE, Codec, config_text  # noqa: E402
from codec.postfilter import (POSTFILTER_FILE, BandwidthPostfilter, FormantPostfilter, SpectralMaskPostfilter,  # noqa: E402
                              learned_stage)
from scripts.remeasure_model import insert_card_section, load_published, publish_copy, reload_unchanged  # noqa: E402


def postfilter_section(source: str, postfilter: FormantPostfilter) -> list[str]:
    """The card's "Postfilter" section."""
    return [
        "## Postfilter", "",
        f"`{source}`'s weights, entropy tables, encoder settings and rate targets, bit for bit, with a decoder-side "
        f"formant postfilter (`codec.postfilter.FormantPostfilter`, the adaptive postfilter of CELP speech decoders): "
        f"every decoded frame is filtered by `A(z/{postfilter.gamma_num:g}) / A(z/{postfilter.gamma_den:g})` of its own "
        f"order-{postfilter.order} LPC envelope, the magnitude response raised to {postfilter.strength:g}, its energy "
        f"kept ({1000 * postfilter.n_fft / postfilter.sample_rate:g} ms frames)"
        + (f"; then a long-term (pitch) postfilter: in every {2000 * postfilter.pitch_hop / postfilter.sample_rate:g} ms "
           f"frame the lag of the highest normalised correlation `c` with the signal's own past "
           f"({postfilter.pitch_min_hz:g}-{postfilter.pitch_max_hz:g} Hz) is found and, where `c > "
           f"{postfilter.pitch_threshold:g}`, the frame becomes `(x + g x[-lag]) / (1 + g)`, `g = "
           f"{postfilter.pitch_gain:g} c`" if postfilter.pitch_gain > 0 else "")
        + ". It costs no bits; "
        "`vqcodec decompress --no-postfilter` (or `postfilter=False`) returns the decoder's own output, which is "
        f"`{source}`'s. The rate table below is of that output.", "",
    ]


def formant_words(pf: FormantPostfilter) -> str:
    """A formant postfilter's setting in a few words, for the card."""
    if pf.strength == 0:
        return f"the long-term (pitch) postfilter of `codec.postfilter.FormantPostfilter` at gain {pf.pitch_gain:g}"
    return (f"the formant postfilter `A(z/{pf.gamma_num:g}) / A(z/{pf.gamma_den:g})` at strength {pf.strength:g}"
            + (f" and its pitch stage at gain {pf.pitch_gain:g}" if pf.pitch_gain > 0 else ""))


def mask_section(source: str, postfilter: SpectralMaskPostfilter, trained: dict[str, str],
                 wide: FormantPostfilter | None = None) -> list[str]:
    """The card's "Postfilter" section of a learned postfilter (``wide``: only narrow-band output
    gets it, the rest this formant postfilter)."""
    net = postfilter.config()["kwargs"]
    lines = [
        "## Postfilter", "",
        f"`{source}`'s weights, entropy tables, encoder settings and rate targets, bit for bit, with a learned "
        f"decoder-side postfilter (`codec.postfilter.SpectralMaskPostfilter`): the decoded signal's STFT "
        f"({1000 * postfilter.n_fft / postfilter.sample_rate:g} ms Hann frames, hop {postfilter.hop}) is scaled bin by "
        f"bin by gains in (0, {net['max_gain']:g}) that a small convolutional network ({net['hidden']} channels, "
        f"{net['blocks']} dilated residual blocks, {sum(p.numel() for p in postfilter.net.parameters()):,} parameters, "
        f"in `{POSTFILTER_FILE}`) computes from the frames' log power and the rate point's rate; the decoder's phase "
        f"is kept. It was trained on the decoder's output of training speech and music (`recipes/postfilter.py`; "
        f"{trained.get('step', '?')} steps) to bring the compressed magnitudes and a PESQ-like loudness disturbance "
        f"to the original's.",
    ]
    if postfilter.then is not None:
        lines[-1] += f" Then {formant_words(postfilter.then)}."
    if wide is not None:
        lines[-1] += (" Only signals returned at 8 kHz or less (telephone speech: the file's source sample rate) get it; "
                      f"every other signal gets {formant_words(wide)} (`codec.postfilter.BandwidthPostfilter`).")
    lines[-1] += (" It costs no bits; `vqcodec decompress --no-postfilter` (or `postfilter=False`) returns the "
                  f"decoder's own output, which is `{source}`'s. The rate table below is of that output.")
    return [*lines, ""]


def bandwidth_section(source: str, narrow: FormantPostfilter, wide: FormantPostfilter) -> list[str]:
    """The card's "Postfilter" section of formant postfilters that differ by output bandwidth."""
    return [
        "## Postfilter", "",
        f"`{source}`'s weights, entropy tables, encoder settings and rate targets, bit for bit, with decoder-side "
        f"formant postfilters (`codec.postfilter.FormantPostfilter`, the adaptive postfilter of CELP speech decoders: "
        f"every decoded frame filtered by `A(z/g1) / A(z/g2)` of its own LPC envelope, the magnitude response raised "
        f"to a strength, its energy kept; then a long-term (pitch) stage, `(x + g x[-lag]) / (1 + g)` where the "
        f"signal correlates with its own past) chosen by the bandwidth a signal is returned at "
        f"(`codec.postfilter.BandwidthPostfilter`): signals returned at 8 kHz or less (telephone speech: the file's "
        f"source sample rate) get {formant_words(narrow)}, every other signal {formant_words(wide)}. It costs no bits; "
        "`vqcodec decompress --no-postfilter` (or `postfilter=False`) returns the decoder's own output, which is "
        f"`{source}`'s. The rate table below is of that output.", "",
    ]


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("name", help="the published audio model to start from")
    ap.add_argument("--publish-as", metavar="NEW", required=True, help="the new model's name")
    ap.add_argument("--gamma-num", type=float, default=0.6)
    ap.add_argument("--gamma-den", type=float, default=0.9)
    ap.add_argument("--strength", type=float, default=0.5)
    ap.add_argument("--pitch-gain", type=float, default=0.0, help="the long-term (pitch) stage's gain (0: none)")
    ap.add_argument("--mask", type=Path, default=None, help="a learned postfilter's weights (recipes/postfilter.py train)")
    ap.add_argument("--then-formant", action="store_true", help="with --mask: the formant postfilter follows it")
    ap.add_argument("--then-strength", type=float, default=None,
                    help="with --then-formant: that stage's formant strength (default --strength; 0: its pitch stage alone)")
    ap.add_argument("--narrow-band-only", action="store_true",
                    help="with --mask: learned stage for output at <= 8 kHz only, the formant postfilter for the rest")
    ap.add_argument("--narrow-strength", type=float, default=None,
                    help="output at <= 8 kHz gets a formant postfilter of this strength (the rest: --strength)")
    ap.add_argument("--narrow-pitch-gain", type=float, default=None,
                    help="with --narrow-strength: its pitch stage's gain (default --pitch-gain)")
    ap.add_argument("--description", default=None, help="the new model's index description")
    ap.add_argument("--weights-dir", type=Path, default=BUNDLED_DIR)
    args = ap.parse_args(argv)

    folder, model, published, before = load_published(args.weights_dir, args.name)
    if model.modality != "audio":
        raise SystemExit(f"{args.name}: a postfilter filters audio models' output")
    if model.postfilter is not None:
        raise SystemExit(f"{args.name} already has a postfilter")
    trained: dict[str, str] = {}
    sample_rate = int(model.sample_rate)

    def formant(strength: float, pitch_gain: float | None = None) -> FormantPostfilter:
        return FormantPostfilter(sample_rate, gamma_num=args.gamma_num, gamma_den=args.gamma_den, strength=strength,
                                 pitch_gain=args.pitch_gain if pitch_gain is None else pitch_gain)

    if args.narrow_strength is not None and args.mask is not None:
        raise SystemExit("--narrow-strength is a formant postfilter for narrow-band output; with --mask use --narrow-band-only")
    if args.narrow_pitch_gain is not None and args.narrow_strength is None:
        raise SystemExit("--narrow-pitch-gain goes with --narrow-strength")
    try:
        wide = formant(args.strength)
        postfilter: FormantPostfilter | SpectralMaskPostfilter | BandwidthPostfilter = wide
        if args.narrow_strength is not None:
            postfilter = BandwidthPostfilter(sample_rate, narrow=formant(args.narrow_strength, args.narrow_pitch_gain).config(),
                                             wide=wide.config())
        if args.mask is not None:
            then = formant(args.strength if args.then_strength is None else args.then_strength)
            mask, trained = SpectralMaskPostfilter.from_file(args.mask, sample_rate,
                                                             then=then.config() if args.then_formant else None)
            postfilter = mask
            if args.narrow_band_only:
                postfilter = BandwidthPostfilter(sample_rate, narrow=mask.config(), wide=wide.config())
                postfilter.narrow = mask  # the loaded net itself, not a new one from its config
    except (ValueError, OSError, json.JSONDecodeError) as err:
        raise SystemExit(f"postfilter: {err}") from None
    description = args.description or f"{args.name} with a decoder postfilter"
    with publish_copy(args.weights_dir, args.name, args.publish_as, published, description) as staging:
        config = json.loads((staging / CONFIG_FILE).read_text())
        config["name"] = args.publish_as  # the files it writes name the new model
        config["postfilter"] = postfilter.config()
        (staging / CONFIG_FILE).write_text(config_text(config))
        if (learned := learned_stage(postfilter)) is not None:
            learned.save_weights(staging / POSTFILTER_FILE, {"step": trained.get("step", "")})
            published["postfilter_sha256"] = file_sha256(staging / POSTFILTER_FILE)  # the index entry publish_copy writes
        if isinstance(postfilter, BandwidthPostfilter) and learned is None:
            section = bandwidth_section(args.name, postfilter.narrow, postfilter.wide)
        elif isinstance(postfilter, BandwidthPostfilter):
            section = mask_section(args.name, learned, trained, wide=postfilter.wide)
        elif isinstance(postfilter, SpectralMaskPostfilter):
            section = mask_section(args.name, postfilter, trained)
        else:
            section = postfilter_section(args.name, postfilter)
        insert_card_section(staging, args.name, section)
        loaded = reload_unchanged(staging, published, before)
        if loaded.postfilter is None or loaded.name != args.publish_as:
            raise SystemExit(f"{staging}: the postfilter or the name did not load")
    summary = {"model": args.publish_as, "from": args.name, "postfilter": postfilter.config()}
    print(json.dumps(summary, indent=1))
    return summary


if __name__ == "__main__":
    main()
