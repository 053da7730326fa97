#!/usr/bin/env bash
# Install emkit into ./.venv on a fresh machine, offline-capable.
#
# torch is installed first, pinned to the CPU wheel 2.13.0, and only when no torch is present:
# an unpinned torch (or one pulled in by transformers/peft/trl) resolves to a multi-GB CUDA
# build. pyproject.toml declares a range that 2.13.0 satisfies, so pip then keeps it.
# Everything else is installed at the tested versions of constraints.txt (pyproject.toml holds
# only floors); constraints.txt has no torch line, so an existing torch is kept as it is.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
  .venv/bin/python -m pip install --quiet "torch==2.13.0"
fi
# Debian's Chromium for the `emkit view` browser tests (they skip, saying why, without it)
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null && [ ! -x /usr/bin/chromium ]; then
  (apt-get install -y -q chromium || (apt-get update -q && apt-get install -y -q chromium)) \
    >/dev/null 2>&1 || echo "chromium not installed: emkit view's browser tests will skip"
fi
.venv/bin/python -m pip install --quiet -c constraints.txt -e ".[embedded,view,test]"
.venv/bin/python -c "import emkit, torch; print(f'emkit {emkit.__version__} ready (torch {torch.__version__})')"
