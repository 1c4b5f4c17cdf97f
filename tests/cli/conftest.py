"""A live controller for the CLI tests, and the environment that points the CLI at it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.live import ServedApp


@pytest.fixture
def live(tmp_path: Path) -> Iterator[ServedApp]:
    """The controller's app and web server in a thread: the CLI meets it over HTTP as it
    meets `passthru serve`, which the tests that restart it or read its log start."""
    controller = ServedApp(tmp_path / "data")
    controller.start()
    try:
        yield controller
    finally:
        controller.stop()


@pytest.fixture
def cli_env(live: ServedApp, monkeypatch: pytest.MonkeyPatch) -> ServedApp:
    """PASSTHRU_URL and PASSTHRU_TOKEN point every CLI call at the live controller."""
    monkeypatch.setenv("PASSTHRU_URL", live.url)
    monkeypatch.setenv("PASSTHRU_TOKEN", live.admin_token)
    monkeypatch.setenv("COLUMNS", "200")
    return live
