"""The CLI's lists follow next links: a controller that pages by two still lists all."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cli.runner import as_json, ok
from tests.support.live import LiveController


@pytest.fixture
def paged(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[LiveController]:
    controller = LiveController(tmp_path / "data",
                                options=["--page-size", "2", "--max-page-size", "2"])
    controller.start()
    monkeypatch.setenv("PASSTHRU_URL", controller.url)
    monkeypatch.setenv("PASSTHRU_TOKEN", controller.admin_token)
    try:
        yield controller
    finally:
        controller.stop()


def test_lists_hold_every_item_across_pages(paged: LiveController) -> None:
    names = [f"m{n}.small" for n in range(7)]
    for name in names:
        ok(f"passthru flavor-create {name}")
    assert [f["name"] for f in as_json("passthru flavor-list")] == names
    for n in range(4):
        ok(f"passthru token-create --project p{n}")
    tokens = as_json("passthru token-list")
    assert [t["project"] for t in tokens if t["role"] == "member"] == [f"p{n}" for n in range(4)]
    assert len(as_json("passthru token-list --role member")) == 4
    assert as_json("passthru list --all-projects") == []
