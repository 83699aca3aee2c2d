#!/usr/bin/env bash
# Create .venv with everything napari-label-anything needs (idempotent; safe to re-run).
#   bash scripts/setup.sh          # library, CLI, napari plugin and test tools
# As root on a fresh Debian/Ubuntu machine it also installs the system libraries that Qt
# needs under a virtual display (Xvfb) for the napari tests.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VENV=.venv

if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null && ! command -v Xvfb >/dev/null; then
  echo "setup: installing Xvfb and Qt system libraries (apt)"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq xvfb xauth \
    libgl1 libegl1 libgl1-mesa-dri libglib2.0-0 libfontconfig1 fonts-dejavu-core libdbus-1-3 \
    libxkbcommon-x11-0 libxcb-cursor0 libxcb-icccm4 libxcb-image0 libxcb-keysyms1 libxcb-randr0 \
    libxcb-render-util0 libxcb-shape0 libxcb-xfixes0 libxcb-xinerama0 libxcb-xinput0 libxcb-xkb1 >/dev/null
fi

if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
fi
PIP="$VENV/bin/python -m pip"
stamp="$VENV/.nla-installed"
want="$(cat pyproject.toml scripts/setup.sh | sha1sum | cut -d' ' -f1)"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
retry() { "$@" || { echo "setup: retrying: $*"; sleep 5; "$@"; }; }
retry $PIP install -q --upgrade pip
# torch first, in its own call and pinned: unpinned, pip would resolve a multi-GB download.
# segment-anything imports torchvision, so the two must be a matching pair.
retry $PIP install -q "torch==${TORCH_VERSION:-2.14.1}" "torchvision==${TORCHVISION_VERSION:-0.29.1}"
retry $PIP install -q -e ".[all,test]"
echo "$want" > "$stamp"
echo "setup: ready ($VENV)"
