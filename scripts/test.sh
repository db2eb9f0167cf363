#!/usr/bin/env bash
# The test command (README and CI): set up, lint, then the whole pytest suite on CPU.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
ruff check .
ruff format --check .
python -m pytest "$@"
