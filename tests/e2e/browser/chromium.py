"""Debian's Chromium, driven by Playwright's Python package, with no browser download.

Playwright normally runs a browser build of its own (`playwright install`), which a closed
network cannot fetch. ``launch`` starts the system Chromium (apt package ``chromium``,
``/usr/bin/chromium``; another path through ``STOREKEEPER_CHROMIUM``) instead. Playwright
gives every launch a new, empty profile directory and removes it afterwards; the flags below
keep Chromium from phoning home (refused on a closed network, slow everywhere) and let it run
as root in a container.

``require_chromium`` skips a test when Chromium is missing, except in CI (``CI`` set), where a
missing browser fails it: .ci/run installs Chromium, so its absence there is a defect.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Playwright

CHROMIUM_ENV = "STOREKEEPER_CHROMIUM"
DEFAULT_CHROMIUM = "/usr/bin/chromium"

CHROMIUM_ARGS = [
    "--no-sandbox",  # the sandbox cannot start as root
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def chromium_path() -> Path | None:
    configured = os.environ.get(CHROMIUM_ENV)
    if configured:
        found = shutil.which(configured)
        return Path(found) if found else None
    if Path(DEFAULT_CHROMIUM).is_file():
        return Path(DEFAULT_CHROMIUM)
    found = shutil.which("chromium")
    return Path(found) if found else None


def require_chromium() -> Path:
    path = chromium_path()
    if path is not None:
        return path
    where = os.environ.get(CHROMIUM_ENV) or DEFAULT_CHROMIUM
    message = f"Chromium not found at {where} (apt-get install chromium, or set {CHROMIUM_ENV})"
    if os.environ.get("CI"):
        pytest.fail(f"{message}: browser tests may not be skipped in CI")
    pytest.skip(message)


def launch(playwright: Playwright, executable: Path) -> Browser:
    return playwright.chromium.launch(
        executable_path=str(executable), headless=True, args=CHROMIUM_ARGS
    )
