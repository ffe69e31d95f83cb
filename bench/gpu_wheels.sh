#!/usr/bin/env bash
# Wheels of rerankd's pure-Python deps that the GPU machine's image lacks (pydantic and its
# three helpers, platformdirs), for its Python 3.12 on x86-64, into .whl/ (ignored by git), so
# that bench/gpu_smoke.py can run there: the device tool's `run` carries ".whl" and the command
# installs them first (bench/README.md).  Versions are the ones this checkout's .venv has.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
PKGS=(pydantic pydantic-core annotated-types typing-inspection platformdirs)
SPECS=$("$PY" -c 'import sys, importlib.metadata as m; print(" ".join(f"{p}=={m.version(p)}" for p in sys.argv[1:]))' "${PKGS[@]}")
exclude=$(git rev-parse --git-path info/exclude)
mkdir -p "$(dirname "$exclude")" && touch "$exclude"
grep -qxF '/.whl/' "$exclude" || echo '/.whl/' >>"$exclude"
rm -rf .whl && mkdir .whl
# shellcheck disable=SC2086
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl $SPECS
ls -l .whl
du -sh .whl
