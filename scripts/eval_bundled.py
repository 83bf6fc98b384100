"""Evaluate the bundled models on the evaluation sets and put the results in the README.

    python scripts/eval_bundled.py                  # run every evaluation, then update README.md
    python scripts/eval_bundled.py --only image-v2-photos
    python scripts/eval_bundled.py --readme-only    # re-insert the tables of the existing reports

Each evaluation is one ``vqcodec eval`` command (listed in ``EVALS`` and printed as it runs); its
report (``results.csv``, ``summary.md``, ``rd.png``) lands in ``docs/eval/<name>/``. The README's
tables are copied from those ``summary.md`` files between ``<!-- eval:<name> -->`` and
``<!-- /eval:<name> -->`` markers, together with the command that produced them: no number in
those tables is typed by hand. The evaluation sets come from ``scripts/get_data.sh``.
"""

from __future__ import annotations

import argparse
import re
import shlex
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs" / "eval"

# the requests of the speech evaluations; 1.4kbps is the rate of Codec2's 1300 and 1400 bit/s
# files, so that each Codec2 mode has a request at its own rate (the reports made before it lack it)
SPEECH_RATES = "1.2kbps,1.4kbps,1.6kbps,2.4kbps,3.2kbps,6kbps,12kbps"
# from audio-v11 on also 0.8kbps, the rate of Codec2's 700C files (0.81 kbps), which had no request at or below it
LOW_SPEECH_RATES = "0.8kbps," + SPEECH_RATES
EARLIER_SPEECH_RATES = "1.2kbps,1.6kbps,2.4kbps,3.2kbps,6kbps,12kbps"
MUSIC_RATES = "1.5kbps,3kbps,6kbps,12kbps"
IMAGE_POINTS = "k4-n1,k16-n1,k64-n1,k256-n1,k256-n2,k256-n3,k256-n4"
IMAGE_TARGETS = "0.05bpp,0.1bpp,0.15bpp,0.2bpp,0.25bpp,0.3bpp"


def image_evals(model: str) -> dict[str, list[str]]:
    """``<model>-photos`` at the named points and ``<model>-photos-targets`` at bits-per-pixel
    targets (each file at a variable depth under its budget)."""
    photos = ["data/eval/images", "-m", model]
    return {f"{model}-photos": [*photos, "--rates", IMAGE_POINTS],
            f"{model}-photos-targets": [*photos, "--rates", IMAGE_TARGETS]}


def speech_evals(model: str, rates: str = SPEECH_RATES, match: tuple[str, ...] = ()) -> dict[str, list[str]]:
    """``<model>-speech`` and ``<model>-telephone`` (the same clips at 8 kHz) at the speech requests;
    those named in ``match`` ("speech", "telephone") also within the size of every Codec2 file and
    of Opus's at 6 kbps (iso-rate pairing)."""
    speech = ["data/eval/speech", "-m", model, "--min-seconds", "2"]

    def matched(name: str) -> list[str]:
        return ["--match-up-to", "6kbps"] if name in match else []

    return {f"{model}-speech": [*speech, *matched("speech"), "--rates", rates],
            f"{model}-telephone": [*speech, *matched("telephone"), "--sample-rate", "8000", "--rates", rates]}


def music_eval(model: str) -> list[str]:
    """The first 20 s of each song against Opus at the music requests."""
    return ["data/eval/music", "-m", model, "--max-seconds", "20", "--baselines", "opus", "--rates", MUSIC_RATES]


# name -> vqcodec eval arguments (the output folder is added)
EVALS: dict[str, list[str]] = {
    # image-v5: image-v4's codes (files of the same size) through its decoder fine-tuned for MS-SSIM
    **image_evals("image-v5"),
    # image-v4: image-v3's codes (files of the same size) through a grown, fine-tuned decoder
    **image_evals("image-v4"),
    **image_evals("image-v3"),
    **image_evals("image-v2"),
    **speech_evals("audio-v3"),
    # audio-v13: audio-v12 with a second decoder for shallow (one-level) codes, blended in by the codes' depth
    **speech_evals("audio-v13", LOW_SPEECH_RATES, match=("speech", "telephone")), "audio-v13-music": music_eval("audio-v13"),
    # audio-v12: audio-v9 with a stronger formant and pitch postfilter for telephone-band (<= 8 kHz) output
    # (also, per file, within the size of each Codec2 file and of Opus's at 6 kbps, so each is paired at its own bits)
    **speech_evals("audio-v12", LOW_SPEECH_RATES, match=("speech", "telephone")), "audio-v12-music": music_eval("audio-v12"),
    # audio-v11: audio-v9 with the learned spectral-mask postfilter before its formant and pitch stages
    **speech_evals("audio-v11", LOW_SPEECH_RATES), "audio-v11-music": music_eval("audio-v11"),
    # audio-v10: audio-v9 with the pitch stage's gain of G.729 (0.5 instead of 0.25)
    **speech_evals("audio-v10"), "audio-v10-music": music_eval("audio-v10"),
    # audio-v9: audio-v7 with the formant postfilter and its long-term (pitch) stage (music: with it, as decoded by default)
    # (in container version 5 also at 0.8kbps, beside Codec2 700C)
    **speech_evals("audio-v9", LOW_SPEECH_RATES), "audio-v9-music": music_eval("audio-v9"),
    # audio-v8: audio-v7 with a decoder-side formant postfilter (music: with it, as decoded by default)
    **speech_evals("audio-v8"), "audio-v8-music": music_eval("audio-v8"),
    # audio-v7: audio-v5 with context-coded band energies, chosen rate-distortion-optimally by the encoder
    **speech_evals("audio-v7"), "audio-v7-music": music_eval("audio-v7"),
    # audio-v6: audio-v5's decoder fine-tuned on with the term also over the telephone band (not the default)
    **speech_evals("audio-v6"), "audio-v6-music": music_eval("audio-v6"),
    # audio-v5: audio-v4's decoder fine-tuned on with a loudness-disturbance term
    **speech_evals("audio-v5"), "audio-v5-music": music_eval("audio-v5"),
    # audio-v4: audio-v3's codes with a decoder fine-tuned through the band-energy correction
    **speech_evals("audio-v4"), "audio-v4-music": music_eval("audio-v4"),
    # the same without band energies (--no-envelope: the codes alone, as files were before them)
    "audio-v3-no-envelope-speech": ["data/eval/speech", "-m", "audio-v3", "--min-seconds", "2", "--no-envelope",
                                    "--rates", EARLIER_SPEECH_RATES],
    "audio-v3-no-envelope-telephone": ["data/eval/speech", "-m", "audio-v3", "--min-seconds", "2", "--sample-rate",
                                       "8000", "--no-envelope", "--rates", EARLIER_SPEECH_RATES],
    # the encoder's analysis-by-synthesis refinement (--refine 10: about 4 s of one CPU core per second of
    # audio), on 16 of the files, each beside the same 16 files unrefined; measured before band energies
    "audio-v3-refined-speech": ["data/eval/speech", "-m", "audio-v3", "--min-seconds", "2", "--max-files", "16", "--no-envelope",
                                "--refine", "10", "--rates", EARLIER_SPEECH_RATES],
    "audio-v3-speech-16": ["data/eval/speech", "-m", "audio-v3", "--min-seconds", "2", "--max-files", "16", "--no-envelope",
                           "--rates", EARLIER_SPEECH_RATES],
    "audio-v3-refined-telephone": ["data/eval/speech", "-m", "audio-v3", "--min-seconds", "2", "--max-files", "16", "--no-envelope",
                                   "--sample-rate", "8000", "--refine", "10",
                                   "--rates", "1.2kbps,1.6kbps,2.4kbps,3.2kbps,6kbps"],
    "audio-v3-telephone-16": ["data/eval/speech", "-m", "audio-v3", "--min-seconds", "2", "--max-files", "16", "--no-envelope",
                              "--sample-rate", "8000", "--rates", "1.2kbps,1.6kbps,2.4kbps,3.2kbps,6kbps"],
    "image-v2-refined-photos": ["data/eval/images", "-m", "image-v2", "--refine", "10",
                                "--rates", "k64-n1,k256-n1,k256-n2,k256-n3"],
    "audio-v3-music": ["data/eval/music", "-m", "audio-v3", "--max-seconds", "20", "--baselines", "opus",
                       "--rates", MUSIC_RATES],
    "audio-v3-no-envelope-music": ["data/eval/music", "-m", "audio-v3", "--max-seconds", "20", "--baselines", "opus",
                                   "--no-envelope", "--rates", MUSIC_RATES],
}


def command(name: str) -> list[str]:
    return ["vqcodec", "eval", *EVALS[name], "-o", f"docs/eval/{name}"]


def run(name: str) -> None:
    cmd = command(name)
    print("$ " + shlex.join(cmd), flush=True)
    subprocess.run([sys.executable, "-m", "cli.app", *cmd[1:]], cwd=ROOT, check=True)


def update_readme(names: list[str], readme: Path = ROOT / "README.md") -> list[str]:
    """Replace each ``<!-- eval:name -->`` block with the report's table; returns the names done."""
    text = readme.read_text()
    done = []
    for name in names:
        summary = DOCS / name / "summary.md"
        pattern = re.compile(rf"(<!-- eval:{re.escape(name)} -->\n).*?(<!-- /eval:{re.escape(name)} -->)", re.S)
        if not summary.is_file() or not pattern.search(text):
            continue
        table = "\n".join(line for line in summary.read_text().splitlines() if line.startswith("|"))
        block = (f"`{shlex.join(command(name))}` ([CSV](docs/eval/{name}/results.csv))\n\n{table}\n\n"
                 f"![rate-distortion: {name}](docs/eval/{name}/rd.png)\n")
        text = pattern.sub(lambda m, block=block: m.group(1) + block + m.group(2), text)
        done.append(name)
    readme.write_text(text)
    return done


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", action="append", choices=sorted(EVALS), help="run only these evaluations")
    ap.add_argument("--readme-only", action="store_true", help="only copy the existing reports into README.md")
    args = ap.parse_args()
    names = args.only or list(EVALS)
    if not args.readme_only:
        for name in names:
            run(name)
    print("README.md tables updated: " + (", ".join(update_readme(list(EVALS))) or "none"))


if __name__ == "__main__":
    main()
