#!/usr/bin/env bash
# Install everything the test suite needs and run it (the README's test command).
# System packages: Debian's chromium (browser tests), dataset-fashion-mnist (idx files) and
# postgresql (the store tests start a throwaway PostgreSQL server).
set -euo pipefail
cd "$(dirname "$0")/.."

apt_packages=(chromium dataset-fashion-mnist postgresql)
missing=()
for p in "${apt_packages[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y "${missing[@]}"
fi

python3 -m venv .venv
. .venv/bin/activate
python -m pip install --upgrade pip >/dev/null
# The pinned CPU build first: anything unpinned would pull a multi-GB CUDA build.
pip install torch==2.13.0
pip install -e '.[dev,nni,onnx,postgres,video]'
# Every optional component is installed above: a skip now is a failure (tests/conftest.py).
export FUSION_NAS_NO_SKIP=1
# One pytest worker per core (pytest-xdist); PYTEST_WORKERS=0 runs in this process.
python -m pytest -n "${PYTEST_WORKERS:-2}" "$@"
