#!/usr/bin/env bash
# Fill wheels/ (git-ignored) with the wheels of fusion-nas's pure-Python dependencies for a GPU
# machine that has its own torch (and much else) but no network, so that
#   python3 -m pip install --no-index --find-links wheels --no-build-isolation -e .
# installs the project there without replacing its torch (benchmarks/gpu_check.sh does this).
#
#   scripts/build-wheels.sh [--python 3.12] [--have FILE] [--dest wheels]
#
# --python: the target interpreter's version (the lent GPU machines run 3.12).
# --have:   names of packages the target already has, one a line ('#' comments); their wheels
#           are dropped after the download so the folder stays small (it travels with the
#           checkout). Default: scripts/gpu-image-packages.txt.
# torch, triton and the nvidia-* CUDA libraries are never downloaded.
set -euo pipefail
cd "$(dirname "$0")/.."

PY_VERSION=3.12
HAVE=scripts/gpu-image-packages.txt
DEST=wheels
while [ $# -gt 0 ]; do
  case "$1" in
    --python) PY_VERSION="$2"; shift 2 ;;
    --have) HAVE="$2"; shift 2 ;;
    --dest) DEST="$2"; shift 2 ;;
    -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
    *) echo "build-wheels.sh: unknown option '$1'; allowed: --python, --have, --dest" >&2; exit 2 ;;
  esac
done
PYTHON=${PYTHON:-python3}

# The project's runtime dependencies, torch left out (the target's own torch satisfies it).
mapfile -t REQS < <("$PYTHON" - <<'PY'
import re
try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib
with open("pyproject.toml", "rb") as f:
    deps = tomllib.load(f)["project"]["dependencies"]
for dep in deps:
    name = re.split(r"[ <>=!~;\[]", dep, maxsplit=1)[0].lower()
    if name != "torch":
        print(dep)
PY
)
mkdir -p "$DEST"
# Wheels only (no sdists to build there), for the target's Python and x86-64 Linux. pip
# resolves the dependencies too; it needs a torch to satisfy thop's requirement, so torch is
# excluded by a constraint that no release meets and --no-deps for thop.
PLATFORMS=(--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64
  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64
  --platform linux_x86_64 --platform any)
TARGET=(--only-binary=:all: --python-version "$PY_VERSION" --implementation cp "${PLATFORMS[@]}")
NO_THOP=()
for r in "${REQS[@]}"; do
  case "$r" in thop*) ;; *) NO_THOP+=("$r") ;; esac
done
"$PYTHON" -m pip download -q "${TARGET[@]}" -d "$DEST" "${NO_THOP[@]}" 2> >(grep -v "is ignored: it is neither" >&2)
"$PYTHON" -m pip download -q "${TARGET[@]}" --no-deps -d "$DEST" \
  "$(printf '%s\n' "${REQS[@]}" | grep '^thop')"

# Drop what the target has already (and anything CUDA or torch that slipped in).
normalise() { tr 'A-Z_.' 'a-z--'; }
dropped=0
if [ -f "$HAVE" ]; then
  mapfile -t have < <(grep -v '^\s*#' "$HAVE" | sed 's/\s//g' | grep -v '^$' | normalise)
else
  have=()
fi
for whl in "$DEST"/*.whl; do
  project=$(basename "$whl" | cut -d- -f1 | normalise)
  case "$project" in torch|triton|nvidia-*) rm -f "$whl"; dropped=$((dropped + 1)); continue ;; esac
  for h in "${have[@]}"; do
    if [ "$project" = "$h" ]; then rm -f "$whl"; dropped=$((dropped + 1)); break; fi
  done
done
count=$(find "$DEST" -name '*.whl' | wc -l)
size=$(du -sh "$DEST" | cut -f1)
echo "wheels: $count in $DEST ($size); $dropped dropped as present on the target or torch/CUDA"
