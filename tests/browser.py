"""A headless Chromium page for tests: Debian's /usr/bin/chromium driven by Playwright.

    from browser import chromium_page
    with chromium_page() as page:
        page.goto(url)

No browser download (`playwright install` is never run): the system Chromium is launched by
path. Without /usr/bin/chromium the test is skipped, saying how to install it
(scripts/setup-browser.sh); Playwright itself is a `dev` dependency.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
# No sandbox (tests run as root in containers), no GPU, and nothing that reaches the network.
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@contextmanager
def chromium_page(timeout_ms: float = 30_000) -> Iterator:
    """A fresh Playwright `Page` in headless Chromium, closed on exit."""
    if not CHROMIUM.exists():
        pytest.skip(
            f"{CHROMIUM} is absent: run scripts/setup-browser.sh (apt-get install chromium)"
        )
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS, headless=True)
        try:
            page = browser.new_page()
            page.set_default_timeout(timeout_ms)
            yield page
        finally:
            browser.close()
