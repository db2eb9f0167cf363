#!/usr/bin/env bash
# Headless Chromium for the browser tests (tests/browser.py drives it with Playwright; no
# browser download). Idempotent and quiet: installs Debian's chromium only when it is missing.
set -euo pipefail
if [ ! -x /usr/bin/chromium ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q >/dev/null
    apt-get install -y -q --no-install-recommends chromium >/dev/null
fi
