"""Publish a bundled model with a shallow decoder under a new name.

    python -m recipes.audio_codec --config cpu-v8          # the decoder, fine-tuned on one-level codes
    python scripts/publish_shallow_decoder.py audio-v12 --publish-as audio-v13 \\
        --decoder runs/audio_cpu_v8/export --max-levels 1 --smooth-frames 8 --description "..."

``--decoder`` is a model folder of the same network (a decoder fine-tune of the model, e.g.
``recipes/loop.py``'s ``train_points`` on the lowest rate points); only its decoder's weights are
used, rounded to 16 bits and stored as the new folder's ``shallow_decoder.safetensors``, whose hash
the index records beside the others. Where a file codes at most ``--max-levels`` residual levels
(:mod:`codec.shallow`), that decoder synthesises it; where it codes more, the model's own, with a
moving blend of ``2 * --smooth-frames + 1`` latent positions between them.

Like a postfilter, it costs no bits and leaves the weights, the entropy tables, the encoder and
the files it writes as they are; it changes what the files decode to, so it is published as a new
model (the source model, and every file it wrote, keep decoding as before): the folder is copied
sharing its files with the source's, its ``config.json`` gets the ``shallow_decoder`` entry and
the new name, its card the new title and a "Shallow decoder" section, and ``index.json`` an entry
with the same weight and table hashes. The weights and tables are checked before and after.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from codec.hub import BUNDLED_DIR, file_sha256  # noqa: E402
from codec.model import CONFIG_FILE, Codec, config_text  # noqa: E402
from codec.shallow import SHALLOW_DECODER_FILE, ShallowDecoder  # noqa: E402
from scripts.remeasure_model import insert_card_section, load_published, publish_copy, reload_unchanged  # noqa: E402

STORAGE_DTYPE = torch.float16


def shallow_section(source: str, shallow: ShallowDecoder, trained: str) -> list[str]:
    """The card's "Shallow decoder" section."""
    levels = "one level" if shallow.max_levels == 1 else f"at most {shallow.max_levels} levels"
    share = shallow.model_energies_share
    nearly = "" if share is None else (
        f", except in a tile where at least {share:.0%} of the positions are shallow (the lowest rate targets'), "
        f"where they are measured against the model's decoder (the PESQ the shallow decoder adds at 0.8 kbps doubles "
        f"that way, `bench/shallow_decoder.py`)")
    return [
        "## Shallow decoder", "",
        f"`{source}`'s weights, entropy tables, encoder settings and rate targets, bit for bit, with a second decoder "
        f"for shallow codes (`codec.shallow.ShallowDecoder`, in `{SHALLOW_DECODER_FILE}`, "
        f"{shallow.num_parameters():,} parameters stored in 16 bits): the model's decoder fine-tuned on codes of "
        f"{levels} ({trained}). Where a file codes {levels} at a latent position, that decoder synthesises it; "
        f"where it codes more, the model's own decoder, the two blended by the share of shallow positions in a "
        f"window of {2 * shallow.smooth_frames + 1} positions. The lowest rate targets code one level at most "
        f"positions, so they are heard through it. The encoder's codes and rate decisions are the model's, as "
        f"before; its band energies are measured against the blend, what the decoder synthesises{nearly}. It costs "
        f"no bits.", "",
    ]


def round_decoder(decoder: torch.nn.Module) -> torch.nn.Module:
    """A copy of ``decoder`` whose floating tensors hold values :data:`STORAGE_DTYPE` can store."""
    out = copy.deepcopy(decoder).float().eval()
    with torch.no_grad():
        for name, t in out.state_dict(keep_vars=True).items():
            if t.is_floating_point():
                rounded = t.detach().to(STORAGE_DTYPE)
                if not torch.isfinite(rounded).all():
                    raise ValueError(f"{name} holds values outside the range of {STORAGE_DTYPE}")
                t.data.copy_(rounded.to(t.dtype))
    return out


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("name", help="the published model to start from")
    ap.add_argument("--publish-as", metavar="NEW", required=True, help="the new model's name")
    ap.add_argument("--decoder", type=Path, required=True, help="a model folder of the same network: its decoder's weights")
    ap.add_argument("--max-levels", type=int, default=1, help="a position coding at most this many levels is shallow")
    ap.add_argument("--smooth-frames", type=int, default=8, help="half-width of the blend window, in latent positions")
    ap.add_argument("--model-energies-share", type=float, default=None,
                    help="where at least this share of a tile's positions is shallow, band energies are measured "
                         "against the model decoder (default: always against the blend)")
    ap.add_argument("--trained", default=None, help="for the card: how the decoder was trained (a few words)")
    ap.add_argument("--description", default=None, help="the new model's index description")
    ap.add_argument("--weights-dir", type=Path, default=BUNDLED_DIR)
    args = ap.parse_args(argv)

    folder, model, published, before = load_published(args.weights_dir, args.name)
    if model.shallow_decoder is not None:
        raise SystemExit(f"{args.name} already has a shallow decoder")
    try:
        tuned = Codec.load(args.decoder)
    except (ValueError, OSError) as err:
        raise SystemExit(f"--decoder: {err}") from None
    if tuned.config is None or tuned.config["network"] != model.config["network"]:
        raise SystemExit(f"--decoder: {args.decoder} has another network than {args.name}")
    try:
        shallow = ShallowDecoder(copy.deepcopy(model.decoder), max_levels=args.max_levels, smooth_frames=args.smooth_frames,
                                 model_energies_share=args.model_energies_share)
        shallow.load_weights(round_decoder(tuned.decoder).state_dict())
    except ValueError as err:
        raise SystemExit(f"shallow decoder: {err}") from None
    trained = args.trained or f"the decoder of `{args.decoder.as_posix()}`"
    description = args.description or f"{args.name} with a decoder of shallow codes"
    with publish_copy(args.weights_dir, args.name, args.publish_as, published, description) as staging:
        config = json.loads((staging / CONFIG_FILE).read_text())
        config["name"] = args.publish_as  # the files it writes name the new model
        config["shallow_decoder"] = shallow.config()
        (staging / CONFIG_FILE).write_text(config_text(config))
        shallow.save_weights(staging / SHALLOW_DECODER_FILE, {"source": trained}, storage_dtype=STORAGE_DTYPE)
        published["shallow_decoder_sha256"] = file_sha256(staging / SHALLOW_DECODER_FILE)  # the index entry publish_copy writes
        insert_card_section(staging, args.name, shallow_section(args.name, shallow, trained))
        loaded = reload_unchanged(staging, published, before)
        if loaded.shallow_decoder is None or loaded.name != args.publish_as:
            raise SystemExit(f"{staging}: the shallow decoder or the name did not load")
    summary = {"model": args.publish_as, "from": args.name, "shallow_decoder": shallow.config()}
    print(json.dumps(summary, indent=1))
    return summary


if __name__ == "__main__":
    main()
