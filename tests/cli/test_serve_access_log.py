"""`passthru serve` logs a line per request, unless told --no-access-log."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.support.live import LiveController


@pytest.mark.parametrize(("options", "logged"), [((), True), (("--no-access-log",), False)])
def test_each_request_is_logged_unless_told_not_to(tmp_path: Path, options: tuple[str, ...],
                                                   logged: bool) -> None:
    live = LiveController(tmp_path / "data", options=options)
    live.start()
    try:
        answer = httpx.get(f"{live.url}/v2/whoami",
                           headers={"Authorization": f"Bearer {live.admin_token}"})
        assert answer.status_code == 200
    finally:
        live.stop()
    assert ('"GET /v2/whoami HTTP/1.1" 200' in live.log.read_text()) is logged
