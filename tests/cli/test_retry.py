"""The CLI waits for a controller that is restarting or asks it to slow down, and gives
up with a clear error after PASSTHRU_RETRY_SECONDS."""

from __future__ import annotations

import threading
from pathlib import Path

import httpx
import pytest

from passthru.client import Failure, Response, retryable
from passthru.errors import InvalidInputError, UnavailableError
from tests.cli.runner import as_json, ok, run
from tests.pg import free_port
from tests.support.live import LiveController


@pytest.mark.slow
def test_a_command_waits_for_a_controller_that_comes_back(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    live = LiveController(tmp_path / "data")
    live.start()
    live.stop()
    monkeypatch.setenv("PASSTHRU_URL", live.url)
    monkeypatch.setenv("PASSTHRU_TOKEN", live.admin_token)
    monkeypatch.setenv("PASSTHRU_RETRY_SECONDS", "120")  # a loaded machine starts slowly
    # Started a second after the command, the controller refuses its first tries.
    restart = threading.Timer(1.0, live.start)
    restart.start()
    try:
        # A POST: sent again only because its connections were refused.
        ok("passthru flavor-create m1 --vcpus 1 --ram 512 --disk 1")
        restart.join()
        assert [flavor["name"] for flavor in as_json("passthru flavor-list")] == ["m1"]
    finally:
        restart.join()
        live.stop()


def test_a_rate_limited_command_is_sent_again_after_retry_after(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    live = LiveController(tmp_path / "data", options=("--rate-limit", "1", "--rate-burst", "1"))
    live.start()
    try:
        answer = httpx.post(f"{live.url}/v2/admin/tokens", json={"token": {"project": "p1"}},
                            headers={"Authorization": f"Bearer {live.admin_token}"})
        monkeypatch.setenv("PASSTHRU_URL", live.url)
        monkeypatch.setenv("PASSTHRU_TOKEN", answer.json()["token"])
        # Two requests (whoami, then the list) on a burst of one: the second gets 429.
        assert as_json("passthru list") == []
    finally:
        live.stop()


def test_the_cli_gives_up_after_the_retry_time(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PASSTHRU_URL", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv("PASSTHRU_TOKEN", "pt_x")
    monkeypatch.setenv("PASSTHRU_RETRY_SECONDS", "1")
    result = run("passthru host-list")
    assert result.exit_code == UnavailableError.exit_code
    assert "cannot reach the controller at http://127.0.0.1:" in result.output
    assert "(PASSTHRU_RETRY_SECONDS)" in result.output
    monkeypatch.setenv("PASSTHRU_RETRY_SECONDS", "soon")
    result = run("passthru host-list")
    assert result.exit_code == InvalidInputError.exit_code
    assert "PASSTHRU_RETRY_SECONDS='soon' is not a number of seconds" in result.output


def test_only_what_is_safe_to_send_twice_is_sent_again() -> None:
    refused = Failure(ConnectionRefusedError(111, "Connection refused"), sent=False)
    reset = Failure(ConnectionResetError(104, "Connection reset by peer"), sent=True)
    slow = Failure(TimeoutError("timed out"), sent=True, timed_out=True)

    def answer(status: int, **headers: str) -> Response:
        return Response(status, "", headers, b"")

    assert retryable("POST", refused)
    assert not retryable("POST", reset)  # it may have been acted on
    assert retryable("GET", reset)
    assert not retryable("GET", slow)  # a controller that is slow, not away
    assert retryable("DELETE", answer(502))
    assert not retryable("POST", answer(502))
    assert retryable("POST", answer(503, **{"Retry-After": "2"}))
    assert retryable("POST", answer(503, **{"retry-after": "2"}))  # any case
    assert not retryable("POST", answer(503))  # part of it was stored
    assert retryable("PUT", answer(503))
    assert retryable("POST", answer(429, **{"Retry-After": "1"}))
    assert not retryable("GET", answer(500))
    assert not retryable("GET", answer(409))
