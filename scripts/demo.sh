#!/usr/bin/env bash
# The main job: set up .venv, then `bloomforge demo` — the whole pipeline on text found on this
# machine (translated message catalogues under /usr/share/locale and the Python stdlib source):
# language id, ROOTS filters, dedup, PII redaction, tokenizer with fertility, token shards, a tiny
# BLOOM trained for a few minutes, evaluation, HF export and runs/demo/report.html.
# Extra arguments go to `bloomforge demo` (e.g. --small, --out DIR, train.max_tokens=1e6).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
bloomforge demo "$@"
