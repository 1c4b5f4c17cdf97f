"""A live controller for the CLI tests, and the environment that points the CLI at it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cli.live import LiveController


@pytest.fixture
def live(tmp_path: Path) -> Iterator[LiveController]:
    controller = LiveController(tmp_path / "data")
    controller.start()
    try:
        yield controller
    finally:
        controller.stop()


@pytest.fixture
def cli_env(live: LiveController, monkeypatch: pytest.MonkeyPatch) -> LiveController:
    """PASSTHRU_URL and PASSTHRU_TOKEN point every CLI call at the live controller."""
    monkeypatch.setenv("PASSTHRU_URL", live.url)
    monkeypatch.setenv("PASSTHRU_TOKEN", live.admin_token)
    monkeypatch.setenv("COLUMNS", "200")
    return live
