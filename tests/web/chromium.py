"""Headless Debian Chromium, one run per page load: the DOM after the page's scripts ran,
or a screenshot."""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path

CHROMIUM = Path("/usr/bin/chromium")
# Quiet and offline: no sandbox (tests may run as root), no GPU, no background traffic.
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--hide-scrollbars")
# Virtual time: the page's fetches finish and it draws, then the run ends; the page's own
# refresh timer (10 s) does not fire within it.
BUDGET_MS = 5000


def _run(url: str, *extra: str, budget_ms: int = BUDGET_MS) -> str:
    with tempfile.TemporaryDirectory(prefix="passthru-chromium-") as profile:
        done = subprocess.run(
            [str(CHROMIUM), *FLAGS, f"--user-data-dir={profile}",
             f"--virtual-time-budget={budget_ms}", *extra, url],
            capture_output=True, text=True, timeout=120, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"chromium failed ({done.returncode}): {done.stderr[-2000:]}")
    return done.stdout


def dump_dom(url: str, budget_ms: int = BUDGET_MS) -> str:
    """The page's DOM, serialised, once its scripts have run for `budget_ms` of virtual
    time (more than the refresh period: the page has refreshed meanwhile)."""
    return _run(url, "--dump-dom", budget_ms=budget_ms)


def screenshot(url: str, path: Path, width: int = 1400, height: int = 1000) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    _run(url, f"--screenshot={path}", f"--window-size={width},{height}")
