"""A real headless Chromium for the dashboard's tests: Debian's `chromium` driven by Playwright.

Both are installed here when missing, so a clean machine (CI runs as root) needs nothing by hand:
Chromium with apt-get (`playwright install` downloads its own browser builds, which cannot be
fetched here), Playwright from PyPI at the version pinned in requirements-dev.txt. Anything that
cannot be installed fails the test run loudly; it is never a skip.
"""

from __future__ import annotations

import importlib
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import REPO_ROOT

CHROMIUM = Path(os.environ.get("LOADME_CHROMIUM", "/usr/bin/chromium"))
# Debian's build in a container: no sandbox (root), no GPU, nothing fetched in the background.
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
INSTALL_TIMEOUT = 900


def _fail(what: str, result: subprocess.CompletedProcess[str] | None = None) -> None:
    output = "" if result is None else (result.stdout + result.stderr)[-4000:]
    pytest.fail(f"{what}\n{output}", pytrace=False)


def ensure_chromium() -> Path:
    """Debian's Chromium, installed with apt-get when it is not there yet."""
    if CHROMIUM.exists():
        return CHROMIUM
    if os.geteuid() != 0:
        _fail(f"{CHROMIUM} is missing and only root can install it: sudo apt-get install -y chromium")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for argv in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "--no-install-recommends",
                                                "chromium"]):
        result = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=INSTALL_TIMEOUT,
                                stdin=subprocess.DEVNULL, check=False)
        if result.returncode != 0:
            _fail(f"cannot install Chromium: `{' '.join(argv)}` exited {result.returncode}", result)
    if not CHROMIUM.exists():
        _fail(f"apt-get installed chromium but {CHROMIUM} is still missing")
    return CHROMIUM


def playwright_pin() -> str:
    """The `playwright==X` line of requirements-dev.txt."""
    text = (REPO_ROOT / "requirements-dev.txt").read_text()
    match = re.search(r"^playwright==\S+", text, re.MULTILINE)
    assert match, "requirements-dev.txt pins no playwright"
    return match.group(0)


def ensure_playwright() -> None:
    """Playwright's Python package (it ships its own driver), installed from PyPI when missing."""
    try:
        importlib.import_module("playwright.sync_api")
        return
    except ImportError:
        pass
    result = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                             playwright_pin()], capture_output=True, text=True, timeout=INSTALL_TIMEOUT,
                            stdin=subprocess.DEVNULL, check=False)
    if result.returncode != 0:
        _fail(f"cannot install {playwright_pin()}", result)
    importlib.invalidate_caches()
    importlib.import_module("playwright.sync_api")
