"""Lay out the training/evaluation data from unpacked Debian packages and wheels.

Called by scripts/get_data.sh; see there for the layout. Only photographs go into the image
sets: the packages also carry rendered artwork, so every photo is listed here by name.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import shutil
import sys
import zipfile
from pathlib import Path

import numpy as np

# -- what we take, explicitly --------------------------------------------------------------------
PHOTOS = {
    "lomiri-wallpapers-16.04": [
        "usr/share/backgrounds/Bridge_by_Sander_Klootwijk.jpg",
        "usr/share/backgrounds/Dragonfly_by_Bolly.jpg",
        "usr/share/backgrounds/Picture_0B_by_freespace.jpg",
        "usr/share/backgrounds/Picture_1A_by_freespace.jpg",
        "usr/share/backgrounds/Wine_by_Jakkub_Mede.jpg",
        "usr/share/backgrounds/aitzgorri_by_Aitzol_Berasategi.jpg",
        "usr/share/backgrounds/free_by_Peter_Nerlich.jpg",
        "usr/share/backgrounds/friends_by_Aitzol_Berasategi.jpg",
        "usr/share/backgrounds/greentock_by_Peter_Nerlich.jpg",
        "usr/share/backgrounds/life_by_Aitzol_Berasategi.jpg",
        "usr/share/backgrounds/picosdeeuropa_by_Aitzol_Berasategi.jpg",
        "usr/share/backgrounds/seeding_by_Clements_Engelhardt.jpg",
        "usr/share/backgrounds/sunset_by_Aitzol_Berasategi.jpg",
    ],
    "lomiri-wallpapers-20.04": ["usr/share/backgrounds/Kleiber_by_Lukas_Baubkus.jpg"],
    "mate-backgrounds": [
        f"usr/share/backgrounds/mate/nature/{n}.jpg"
        for n in ("Aqua", "Blinds", "Dune", "FreshFlower", "Garden", "GreenMeadow", "LadyBird",
                  "RainDrops", "Storm", "TwoWings", "Wood", "YellowFlower")
    ],
    "plasma-workspace-wallpapers": [
        f"usr/share/wallpapers/{n}/contents/images/2560x1600.jpg"
        for n in ("BytheWater", "ColdRipple", "ColorfulCups", "DarkestHour", "EveningGlow", "FallenLeaf",
                  "Grey", "OneStandsOut", "Path", "summer_1am")
    ],
}
VAL_PHOTOS = {"sunset_by_Aitzol_Berasategi.jpg", "Kleiber_by_Lukas_Baubkus.jpg", "LadyBird.jpg", "EveningGlow"}

AUDIO = {  # source name -> (package, glob under the package root)
    "speech-cs": ("fillets-ng-data-cs", "usr/share/games/fillets-ng/sound/**/cs/*.ogg"),
    "speech-nl": ("fillets-ng-data-nl", "usr/share/games/fillets-ng/sound/**/nl/*.ogg"),
    "music-sectoid": ("fretsonfire-songs-sectoid", "usr/share/games/fretsonfire/data/songs/sectoid/*/*.ogg"),
    "drums-hydrogen": ("hydrogen-drumkits", "usr/share/hydrogen/data/drumkits/**/*.[wf][al][va]*"),
}
EVAL_AUDIO = {
    "speech": ("fillets-ng-data", "usr/share/games/fillets-ng/sound/**/en/*.ogg"),
    "music": ("fretsonfire-songs-muldjord", "usr/share/games/fretsonfire/data/songs/muldjord/*/song.ogg"),
}
EVAL_IMAGES = {  # wheel name prefix -> members
    "scikit_image": [f"skimage/data/{n}" for n in ("astronaut.png", "chelsea.png", "coffee.png",
                                                   "motorcycle_left.png", "rocket.jpg", "hubble_deep_field.jpg")],
    "scikit_learn": ["sklearn/datasets/images/china.jpg", "sklearn/datasets/images/flower.jpg"],
    "matplotlib": ["matplotlib/mpl-data/sample_data/grace_hopper.jpg"],
}
AUDIO_VAL_EVERY = 20  # ~5 % of the clips of each source, chosen by a hash of the file name

COMPACT_BUDGET_BYTES = 40 * 10**6
COMPACT_IMAGE_SIDE = 384
COMPACT_RATE = 24000
COMPACT_SHARES = {"speech-cs": 0.25, "speech-nl": 0.25, "music-sectoid": 0.3, "drums-hydrogen": 0.2}
COMPACT_SECONDS_PER_FILE = 90.0


def _hash(name: str) -> int:
    return int(hashlib.sha1(name.encode()).hexdigest(), 16)


def _licence(root: Path, package: str) -> list[str]:
    """Licences named in the package's copyright file (machine-readable fields, else the prose)."""
    path = root / "usr/share/doc" / package / "copyright"
    if not path.is_file():
        return []
    text = path.read_text(errors="replace")
    found = {m.strip() for m in re.findall(r"^License:\s*(.+)$", text, re.M)}
    if not found:
        if "GNU General Public License" in text or "licensed under the GPL" in text:
            found.add("GPL-2+" if "version 2" in text or "GPL-2" in text else "GPL")
        if "creativecommons.org/licenses/by-sa/3.0" in text or "Attribute Share-Alike" in text:
            found.add("CC-BY-SA-3.0")
    return sorted(found)


def copy_licences(root: Path, out: Path) -> None:
    dst = out / "licences"
    dst.mkdir(parents=True, exist_ok=True)
    for package in {*PHOTOS, *(p for p, _ in AUDIO.values()), *(p for p, _ in EVAL_AUDIO.values())}:
        src = root / "usr/share/doc" / package / "copyright"
        if src.is_file():
            shutil.copyfile(src, dst / f"{package}.copyright")


def build_images(root: Path, out: Path, manifest: dict) -> list[Path]:
    files = []
    for package, members in PHOTOS.items():
        for member in members:
            src = root / member
            if not src.is_file():
                sys.exit(f"missing photo {member} of {package}: did the package change?")
            stem = member.split("/")[-4] if "/contents/images/" in member else src.name
            split = "val" if stem in VAL_PHOTOS else "train"
            name = f"{package}__{stem if stem.endswith(('.jpg', '.png')) else stem + src.suffix}"
            dst = out / "images" / split / name
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, dst)
            files.append(dst)
        manifest["sources"][package] = {"kind": "photographs", "files": len(members), "licence": _licence(root, package)}
    return files


def build_audio(root: Path, out: Path, manifest: dict, table: dict, dest: str, split_val: bool) -> list[Path]:
    import soundfile as sf

    files = []
    for source, (package, pattern) in table.items():
        found = sorted(p for p in root.glob(pattern) if p.is_file() and p.suffix.lower() in (".ogg", ".wav", ".flac"))
        if not found:
            sys.exit(f"no audio for {source} ({package}: {pattern})")
        seconds = 0.0
        for src in found:
            rel = src.relative_to(root).as_posix().replace("/", "__")
            split = "val" if split_val and _hash(rel) % AUDIO_VAL_EVERY == 0 else "train"
            dst = out / dest / (split if split_val else "") / source / rel
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, dst)
            seconds += sf.info(str(dst)).duration
            files.append(dst)
        manifest["sources"][f"{dest}/{source}"] = {
            "package": package, "files": len(found), "minutes": round(seconds / 60, 1), "licence": _licence(root, package),
        }
    return files


def build_eval_images(wheels: Path, out: Path, manifest: dict) -> None:
    dst_dir = out / "eval" / "images"
    dst_dir.mkdir(parents=True, exist_ok=True)
    for prefix, members in EVAL_IMAGES.items():
        wheel = sorted(wheels.glob(f"{prefix}-*.whl"))
        if not wheel:
            sys.exit(f"no {prefix} wheel in {wheels}")
        with zipfile.ZipFile(wheel[-1]) as z:
            for member in members:
                (dst_dir / Path(member).name).write_bytes(z.read(member))
        manifest["sources"][f"eval/images/{prefix}"] = {"wheel": wheel[-1].name, "files": [Path(m).name for m in members]}


def build_compact(out: Path, images: list[Path], audio: list[Path], manifest: dict) -> None:
    """Downscaled photos as .npy and a balanced mix of clips as compressed 8-bit mu-law .npz."""
    import soundfile as sf
    import torch
    import torch.nn.functional as F
    from torchvision.io import ImageReadMode, decode_image, read_file

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from codec.nets.audio import resample
    from recipes.data import mulaw_encode

    root = out / "compact"
    shutil.rmtree(root, ignore_errors=True)
    used = 0
    for src in images:
        img = decode_image(read_file(str(src)), mode=ImageReadMode.RGB, apply_exif_orientation=True)
        h, w = img.shape[-2:]
        s = COMPACT_IMAGE_SIDE / max(h, w)
        img = F.interpolate(img[None].float(), size=(round(h * s), round(w * s)), mode="bilinear", antialias=True)[0]
        arr = img.round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()
        dst = root / "images" / src.parent.name / (src.stem + ".npy")
        dst.parent.mkdir(parents=True, exist_ok=True)
        np.save(dst, arr)
        used += dst.stat().st_size
    n_images = len(images)
    # Each audio source gets a share of the remaining bytes; files are taken in a fixed shuffled
    # order, at most COMPACT_SECONDS_PER_FILE from each (so long songs do not crowd out the rest).
    by_source: dict[str, list[Path]] = {}
    for p in audio:
        by_source.setdefault(p.parent.name, []).append(p)
    audio_budget = COMPACT_BUDGET_BYTES - used
    seconds, clips = 0.0, 0
    for source, files in sorted(by_source.items()):
        budget = audio_budget * COMPACT_SHARES.get(source, 1.0 / len(by_source))
        spent = 0
        for src in sorted(files, key=lambda p: _hash(p.name)):
            if spent >= budget:
                break
            info = sf.info(str(src))
            start = 0
            if info.duration > COMPACT_SECONDS_PER_FILE:
                start = _hash(src.name) % int((info.duration - COMPACT_SECONDS_PER_FILE) * info.samplerate)
            frames = int(min(info.duration, COMPACT_SECONDS_PER_FILE) * info.samplerate)
            data, rate = sf.read(str(src), start=start, frames=frames, dtype="float32", always_2d=True)
            wav = resample(torch.from_numpy(data.mean(axis=1)), rate, COMPACT_RATE).numpy()
            split = src.parent.parent.name  # train / val
            dst = root / "audio" / split / source / (src.stem + ".npz")
            dst.parent.mkdir(parents=True, exist_ok=True)
            np.savez_compressed(dst, mulaw=mulaw_encode(wav), sample_rate=np.int64(COMPACT_RATE))
            size = dst.stat().st_size
            if spent + size > budget:
                dst.unlink()
                break
            spent += size
            used += size
            seconds += len(wav) / COMPACT_RATE
            clips += 1
    manifest["compact"] = {
        "bytes": used, "images": n_images, "image_long_side": COMPACT_IMAGE_SIDE,
        "audio_clips": clips, "audio_minutes": round(seconds / 60, 1), "audio_format": "8-bit mu-law, 24 kHz, npz",
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--root", type=Path, required=True, help="folder the .deb files were unpacked into")
    ap.add_argument("--wheels", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--compact", action="store_true")
    args = ap.parse_args()
    for sub in ("images", "audio", "eval", "licences"):
        shutil.rmtree(args.out / sub, ignore_errors=True)
    manifest: dict = {"sources": {}}
    images = build_images(args.root, args.out, manifest)
    audio = build_audio(args.root, args.out, manifest, AUDIO, "audio", split_val=True)
    build_audio(args.root, args.out, manifest, EVAL_AUDIO, "eval", split_val=False)
    build_eval_images(args.wheels, args.out, manifest)
    copy_licences(args.root, args.out)
    if args.compact:
        build_compact(args.out, images, audio, manifest)
    (args.out / "MANIFEST.json").write_text(json.dumps(manifest, indent=2))
    print(json.dumps(manifest, indent=2))


if __name__ == "__main__":
    main()
