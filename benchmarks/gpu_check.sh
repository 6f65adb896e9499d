#!/usr/bin/env bash
# The device check on a GPU machine (its own torch with CUDA, torchvision and timm; no Optuna,
# no network): install fusion-nas from the wheels in wheels/ (scripts/build-wheels.sh) without
# replacing that torch, then run benchmarks/gpu_check.py, which writes one JSON file.
#
#   benchmarks/gpu_check.sh [--dry-run] [--out FILE] [--tarball FILE]
#
# --dry-run: this machine's CPU, tiny sizes, nothing installed (tests the check; a couple of
#            minutes). Needs fusion-nas importable already (a venv, or PYTHONPATH=.).
# --out:     the JSON report (default benchmarks/results/gpu_check.json).
# --tarball: CIFAR-10 as JPEG folders (default ../shared/data/cifar10-jpeg.tar.gz, or
#            data/cifar10-jpeg.tar.gz when the checkout carries it).
# PYTHON picks the interpreter (default python3: on the GPU machines the one that holds torch).
set -uo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
DRY=0
ARGS=()
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) DRY=1; ARGS+=(--dry-run); shift ;;
    --out|--tarball|--data) ARGS+=("$1" "$2"); shift 2 ;;
    -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
    *) echo "gpu_check.sh: unknown option '$1'; allowed: --dry-run, --out, --tarball, --data" >&2
       exit 2 ;;
  esac
done
if [ -f data/cifar10-jpeg.tar.gz ] && [[ " ${ARGS[*]:-} " != *" --tarball "* ]]; then
  ARGS+=(--tarball data/cifar10-jpeg.tar.gz)  # carried with the checkout to the GPU machine
fi

start=$(date +%s)
if [ "$DRY" = 0 ]; then
  before=$("$PYTHON" -c 'import torch; print(torch.__version__)') || {
    echo "gpu_check.sh: $PYTHON has no torch; the check needs the machine's own" >&2; exit 2; }
  if [ ! -d wheels ] || [ -z "$(ls wheels/*.whl 2>/dev/null)" ]; then
    echo "gpu_check.sh: no wheels in wheels/; run scripts/build-wheels.sh where pip works" >&2
    exit 2
  fi
  # The torch there is pinned by a constraint: pip may add packages but never replace it.
  constraint=$(mktemp)
  echo "torch==$before" > "$constraint"
  how=resolved
  if ! "$PYTHON" -m pip install -q --no-index --find-links wheels --no-build-isolation \
      --no-cache-dir -c "$constraint" -e . ; then
    # A package of the image older than a wheel's requirement (nothing newer can be fetched):
    # add the carried wheels and the project as they are, touching nothing installed.
    echo "gpu_check.sh: pip could not resolve every requirement offline; installing the" \
      "carried wheels and fusion-nas without dependency resolution" >&2
    how=no-deps
    "$PYTHON" -m pip install -q --no-index --no-deps --no-cache-dir wheels/*.whl &&
      "$PYTHON" -m pip install -q --no-index --no-deps --no-build-isolation --no-cache-dir -e . ||
      { echo "gpu_check.sh: installing fusion-nas from wheels/ failed (see above)" >&2; exit 2; }
  fi
  after=$("$PYTHON" -c 'import torch; print(torch.__version__)')
  if [ "$before" != "$after" ]; then
    echo "gpu_check.sh: the install replaced torch $before with $after" >&2
    exit 2
  fi
  echo "[gpu_check] installed fusion-nas ($how) beside torch $after in $(( $(date +%s) - start )) s"
  "$PYTHON" -m pip check >&2 || true  # what the image lacks, for the log; the check goes on
else
  export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
fi
exec "$PYTHON" benchmarks/gpu_check.py --install-seconds "$(( $(date +%s) - start ))" "${ARGS[@]}"
