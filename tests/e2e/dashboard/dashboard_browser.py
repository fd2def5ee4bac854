"""Headless Debian Chromium driven by Playwright, for the dashboard's browser tests.

Playwright's own browser downloads are never used (`playwright install` needs
the internet): the tests launch `/usr/bin/chromium` from Debian's `chromium`
package, with a fresh profile per test and everything that would phone home
turned off. `chromium_or_skip()` skips with the reason when either piece is
missing, and fails the test instead under CI.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from support.tools import missing, require_module

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
VIEWPORT = {"width": 1440, "height": 900}
SCREENSHOTS = Path(__file__).resolve().parents[3] / "docs" / "img"


def chromium_or_skip() -> None:
    """Both pieces, or the test is skipped (failed under CI: support/tools.py)."""
    if not Path(CHROMIUM).exists():
        missing(CHROMIUM, "apt-get install -y chromium")
    require_module("playwright.sync_api", "pip install playwright (the dev extra)")


@contextmanager
def browser_page(color_scheme: str = "dark") -> Iterator[Any]:
    """A Playwright page in a fresh Chromium profile; closed and removed afterwards."""
    from playwright.sync_api import sync_playwright

    profile = tempfile.mkdtemp(prefix="tulle-chromium-")
    try:
        with sync_playwright() as playwright:
            context = playwright.chromium.launch_persistent_context(
                profile,
                executable_path=CHROMIUM,
                headless=True,
                args=CHROMIUM_ARGS,
                viewport=VIEWPORT,
                color_scheme=color_scheme,
            )
            try:
                page = context.pages[0] if context.pages else context.new_page()
                page.set_default_timeout(15_000)
                # An uncaught script error fails the test even if the page looked right.
                errors: list[str] = []
                page.on("pageerror", lambda error: errors.append(str(error)))
                yield page
                assert not errors, f"script errors in the page: {errors}"
            finally:
                context.close()
    finally:
        shutil.rmtree(profile, ignore_errors=True)
