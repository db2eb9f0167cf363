#!/usr/bin/env bash
# The test command (README and CI): set up, lint, then the whole pytest suite on CPU.
# The browser tests (report page, serve playground) need Debian's Chromium: installed here when
# missing and this is root; elsewhere they are skipped with their reason.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
if [ "$(id -u)" = 0 ]; then
  bash scripts/setup-browser.sh
elif [ ! -x /usr/bin/chromium ]; then
  echo "test.sh: no /usr/bin/chromium and not root: the browser tests will be skipped" >&2
fi
. .venv/bin/activate
ruff check .
ruff format --check .
python -m pytest "$@"
