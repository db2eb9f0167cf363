#!/usr/bin/env bash
# Creates .venv (if missing) and installs bloomforge with its test tools. Idempotent.
# torch is pinned to the CPU wheel first: a looser pin would pull several GB of CUDA packages.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
. .venv/bin/activate
python -c "import torch" 2>/dev/null || pip install --quiet "torch==2.13.0"
pip install --quiet -e ".[dev]"
