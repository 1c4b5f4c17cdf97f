"""Bounded requests against a real `passthru serve`: no body is read for an unknown
caller, none past its limit, none from a client that stalls, and one member's flood does
not take another's turn. Requests are written by hand (http.client) so that a test can
stop half-way through a body, as a hostile or broken client does."""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.live import LiveController

MiB = 1 << 20


@pytest.fixture
def live(tmp_path: Path) -> Iterator[LiveController]:
    controller = LiveController(tmp_path / "data", options=(
        "--body-timeout", "2", "--rate-limit", "2", "--rate-burst", "5"))
    controller.start()
    try:
        yield controller
    finally:
        controller.stop()


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def _open(live: LiveController, method: str, path: str, headers: dict[str, str]
          ) -> tuple[http.client.HTTPConnection, socket.socket]:
    """A connection that has sent a request's headers, and none of its body yet."""
    connection = http.client.HTTPConnection("127.0.0.1", live.port, timeout=60)
    connection.putrequest(method, path)
    for name, value in headers.items():
        connection.putheader(name, value)
    connection.endheaders()
    assert connection.sock is not None
    return connection, connection.sock


def _answer(connection: http.client.HTTPConnection) -> tuple[int, http.client.HTTPMessage,
                                                               str]:
    response = connection.getresponse()
    body = response.read()
    message = json.loads(body)["error"]["message"]
    return response.status, response.headers, message


def _closed(sock: socket.socket) -> bool:
    """Whether the controller closed the connection (pushing more body fails or is
    answered by nothing)."""
    try:
        for _ in range(64):
            sock.sendall(b"x" * MiB)
        return sock.recv(1) == b""
    except OSError:  # reset or broken pipe: closed
        return True


def _admin(live: LiveController) -> dict[str, str]:
    return {"Authorization": f"Bearer {live.admin_token}"}


def _member(live: LiveController, project: str) -> str:
    answer = httpx.post(f"{live.url}/v2/admin/tokens", headers=_admin(live),
                        json={"token": {"project": project}})
    assert answer.status_code == 201, answer.text
    return str(answer.json()["token"])


def test_an_unauthenticated_60_mb_body_is_refused_unread(live: LiveController) -> None:
    assert live.process is not None
    for _ in range(20):  # the allocations of a warm server, before measuring
        httpx.get(f"{live.url}/v2/whoami", headers=_admin(live))
    before = _rss_kib(live.process.pid)
    for headers in ({}, {"Authorization": "Bearer pt_not-a-token"}):
        connection, sock = _open(live, "POST", "/v2/admin/flavors",
                           {"Content-Length": str(60 * MiB),
                            "Content-Type": "application/json", **headers})
        status, answer_headers, message = _answer(connection)
        assert status == 401, message
        assert answer_headers["WWW-Authenticate"] == "Bearer"
        assert "token" in message
        assert _closed(sock)
    grown = _rss_kib(live.process.pid) - before
    assert grown < 8 * 1024, f"the controller grew by {grown} KiB"


def test_a_body_over_the_limit_is_refused_with_the_limit(live: LiveController) -> None:
    connection, sock = _open(live, "POST", "/v2/admin/flavors",
                       {"Content-Length": str(2 * MiB), "Content-Type": "application/json",
                        **_admin(live)})
    status, _, message = _answer(connection)
    assert status == 413
    assert message == (f"the request body is {2 * MiB} bytes; the limit for a request is "
                       f"{MiB} bytes (passthru serve --max-body-size)")
    assert _closed(sock)


def test_a_chunked_body_is_cut_off_at_the_limit(live: LiveController) -> None:
    connection, _ = _open(live, "POST", "/v2/admin/flavors",
                          {"Transfer-Encoding": "chunked",
                           "Content-Type": "application/json", **_admin(live)})
    chunk = b"x" * (256 << 10)
    for _ in range(5):  # 1.25 MiB, never ended: only the limit can answer it
        connection.send(b"%x\r\n%s\r\n" % (len(chunk), chunk))
    status, _, message = _answer(connection)
    assert status == 413
    assert message == (f"the request body is over {MiB} bytes, the limit for a request "
                       "(passthru serve --max-body-size)")


def test_an_inventory_report_has_a_larger_limit(live: LiveController) -> None:
    token = httpx.post(f"{live.url}/v2/admin/os-hosts/h1/tokens",
                       headers=_admin(live)).json()["token"]
    padding = " " * (3 * MiB)  # JSON whitespace: a 3 MiB report of no devices
    answer = httpx.put(f"{live.url}/v2/agent/hosts/h1/inventory",
                       headers={"Authorization": f"Bearer {token}",
                                "Content-Type": "application/json"},
                       content=f'{{"devices": [], {padding} "pool_attrs": []}}')
    assert answer.status_code == 200, answer.text


def test_a_stalled_body_times_out_while_others_are_served(live: LiveController) -> None:
    connection, sock = _open(live, "POST", "/v2/admin/flavors",
                       {"Content-Length": "100", "Content-Type": "application/json",
                        **_admin(live)})
    connection.send(b'{"flavor": ')  # and then nothing
    answers = [httpx.get(f"{live.url}/v2/whoami", headers=_admin(live)).status_code
               for _ in range(5)]
    status, headers, message = _answer(connection)
    assert answers == [200] * 5
    assert status == 408
    assert headers["Connection"] == "close"
    assert message == ("no byte of the request body came for 2 s; the connection is "
                       "closed (passthru serve --body-timeout)")
    assert _closed(sock)


def test_headers_that_never_end_lose_their_connection(live: LiveController) -> None:
    with socket.create_connection(("127.0.0.1", live.port), timeout=60) as sock:
        sock.sendall(b"GET /v2/whoami HTTP/1.1\r\nHost: x\r\n")  # and no end of headers
        assert httpx.get(f"{live.url}/v2/whoami", headers=_admin(live)).status_code == 200
        assert sock.recv(1) == b""  # closed by the controller


def test_headers_past_16_kib_are_refused(live: LiveController) -> None:
    with socket.create_connection(("127.0.0.1", live.port), timeout=60) as sock:
        sock.sendall(b"GET /v2/whoami HTTP/1.1\r\nHost: x\r\n")
        sock.sendall(b"X-Filler: " + b"a" * (32 << 10) + b"\r\n")
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 400 ")
    assert httpx.get(f"{live.url}/v2/whoami", headers=_admin(live)).status_code == 200


def _timer_of(local_port: int, peer_port: int) -> int:
    """The kernel's timer kind on the TCP socket from `local_port` to `peer_port`
    (/proc/net/tcp's `tr`: 0 none, 1 retransmit, 2 keep-alive, ...)."""
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, remote, timer = fields[1], fields[2], fields[5]
        if (int(local.split(":")[1], 16), int(remote.split(":")[1], 16)) == (local_port,
                                                                            peer_port):
            return int(timer.split(":")[0], 16)
    raise AssertionError(f"no TCP socket from port {local_port} to {peer_port}")


def test_a_connection_is_probed_by_tcp_keep_alive(live: LiveController) -> None:
    # A long-poll is its agent's heart-beat while its connection stands: a peer that
    # vanished must lose its connection to the kernel's probes.
    connection, sock = _open(live, "GET", "/v2/whoami", _admin(live))
    response = connection.getresponse()
    response.read()
    assert response.status == 200
    assert _timer_of(live.port, sock.getsockname()[1]) == 2
    connection.close()


def test_one_members_flood_does_not_limit_another(live: LiveController) -> None:
    flooder, other = _member(live, "p1"), _member(live, "p2")
    flood: list[httpx.Response] = []
    calm: list[int] = []

    def send_flood() -> None:
        with httpx.Client(base_url=live.url,
                          headers={"Authorization": f"Bearer {flooder}"}) as client:
            flood.extend(client.get("/v2/p1/servers") for _ in range(60))

    threads = [threading.Thread(target=send_flood) for _ in range(2)]
    for thread in threads:
        thread.start()
    with httpx.Client(base_url=live.url,
                      headers={"Authorization": f"Bearer {other}"}) as client:
        calm.extend(client.get("/v2/p2/servers").status_code for _ in range(5))
    for thread in threads:
        thread.join()
    assert calm == [200] * 5
    limited = [answer for answer in flood if answer.status_code == 429]
    assert limited, "60 requests at once, at 2 a second after 5, were all served"
    assert {answer.status_code for answer in flood} == {200, 429}
    assert int(limited[0].headers["Retry-After"]) >= 1
    assert limited[0].json()["error"]["message"].startswith(
        "this token is over its rate of 2 requests a second (after 5 at once); retry in ")
    # The admin is not limited.
    for _ in range(20):
        assert httpx.get(f"{live.url}/v2/whoami", headers=_admin(live)).status_code == 200


def _asks_again_after(live: LiveController, idle: float) -> int | None:
    """The status of a second request sent on one connection `idle` seconds after the
    first one's answer; None if the controller closed the connection meanwhile."""
    connection = http.client.HTTPConnection("127.0.0.1", live.port, timeout=30)
    try:
        for attempt in range(2):
            connection.request("GET", "/v2/whoami", headers=_admin(live))
            try:
                response = connection.getresponse()
            except (http.client.RemoteDisconnected, ConnectionResetError):
                return None
            response.read()
            if attempt == 0:
                assert response.status == 200
                time.sleep(idle)
        return response.status
    finally:
        connection.close()


def test_a_kept_alive_connection_outlives_its_clients_own_idle_bound(tmp_path: Path
                                                                     ) -> None:
    # httpx (the agents' client) reuses a connection idle for up to 5 s: a controller
    # closing it at 5 s, as uvicorn does by default, would now and then close one just as
    # a request is sent on it, and the request would get no answer.
    controller = LiveController(tmp_path / "data")
    controller.start()
    try:
        assert _asks_again_after(controller, 6.0) == 200
    finally:
        controller.stop()


def test_an_idle_connection_is_closed_after_the_body_timeout(live: LiveController) -> None:
    assert _asks_again_after(live, 3.0) is None  # --body-timeout 2
