"""Debian's Chromium driven by Playwright, for the browser tests (Playwright's own browser
download is unreachable here; `.ci/run` and `make browser` install the Debian package)."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

CHROMIUM = "/usr/bin/chromium"


@contextmanager
def chromium() -> Iterator[Any]:
    """A headless Chromium: no sandbox (root in CI), no background networking."""
    from playwright import sync_api

    with sync_api.sync_playwright() as p:
        launched = p.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=["--no-sandbox", "--disable-background-networking", "--disable-dev-shm-usage"],
        )
        try:
            yield launched
        finally:
            launched.close()


def shots_dir() -> Path:
    """Where the browser tests put their screenshots: ``DRIFTPILOT_SCREENSHOTS`` (e.g.
    evals/results/screenshots, to refresh the committed ones), else a folder under the temp
    dir, so that a test run leaves the work tree as it was."""
    chosen = os.environ.get("DRIFTPILOT_SCREENSHOTS")
    folder = Path(chosen) if chosen else Path(tempfile.gettempdir()) / "driftpilot-screenshots"
    folder.mkdir(parents=True, exist_ok=True)
    return folder
