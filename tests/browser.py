"""Debian's headless Chromium driven by Playwright, shared by the browser tests.

Playwright's own browser download is never used (this machine's network refuses it): Playwright
drives ``/usr/bin/chromium``, which CI installs from Debian (``.ci/run``). As with the Fashion-MNIST
test, a missing browser fails the test in CI (``CI`` set) and skips it elsewhere.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
# Headless and quiet: without the background-networking flags Chromium keeps dialling Google's
# hosts, which this machine's closed network refuses.
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]


def require_chromium() -> None:
    """Skip (locally) or fail (in CI) when Chromium or Playwright is missing."""
    if not CHROMIUM.exists():
        problem = f"{CHROMIUM} missing (apt-get install chromium)"
    elif importlib.util.find_spec("playwright") is None:
        problem = "playwright missing (pip install -e '.[test]')"
    else:
        return
    if os.environ.get("CI"):
        pytest.fail(f"browser tests must run in CI: {problem}")
    pytest.skip(problem)


@contextmanager
def chromium_page(profile_dir: Path, width: int = 1280, height: int = 900) -> Iterator:
    """A Playwright ``Page`` in a fresh headless Chromium whose profile lives in ``profile_dir``."""
    require_chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(profile_dir),
            executable_path=str(CHROMIUM),
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": width, "height": height},
        )
        try:
            page = context.pages[0] if context.pages else context.new_page()
            page.set_default_timeout(15_000)
            yield page
        finally:
            context.close()
