"""The agent's link against a real `passthru serve` that goes away and comes back: an
answer sent during the outage is retried with backoff and lands once; an answer whose
reply was lost is sent again with the same idempotency key and applied once; a refusal
is not retried; Retry-After is honoured; a stale full report is recovered from."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from passthru.host.agent import Agent
from passthru.host.link import HttpLink, RefusedError
from passthru.pci.device import PciDevice
from passthru.pci.resources import HostResources
from passthru.pci.work import OrderResult
from tests.support.live import LiveController

HOST = "compute-1"
GPU = PciDevice("0000:81:00.0", "10de", "20b0")


class Faulty(httpx.BaseTransport):
    """The real transport, with faults put in front of it: `lose_replies` requests are
    carried out by the controller but their replies are lost (a read timeout), `busy`
    requests get 429 with Retry-After without reaching it, and `unreachable` ones cannot
    connect. Every request is kept."""

    def __init__(self, lose_replies: int = 0, busy: int = 0, unreachable: int = 0,
                 retry_after: int = 7) -> None:
        self.real = httpx.HTTPTransport()
        self.lose_replies, self.busy, self.unreachable = lose_replies, busy, unreachable
        self.retry_after = retry_after
        self.sent: list[httpx.Request] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.sent.append(request)
        if self.unreachable:
            self.unreachable -= 1
            raise httpx.ConnectError("connection refused", request=request)
        if self.busy:
            self.busy -= 1
            return httpx.Response(
                429, headers={"Retry-After": str(self.retry_after)}, json={"error": {
                    "code": 429, "title": "Too Many Requests", "message": "slow down"}})
        response = self.real.handle_request(request)
        if self.lose_replies:
            self.lose_replies -= 1
            response.read()
            raise httpx.ReadTimeout("the reply was lost", request=request)
        return response


@pytest.fixture
def controller(tmp_path: Path) -> Iterator[LiveController]:
    live = LiveController(tmp_path / "data")
    live.start()
    yield live
    live.stop()


def admin(live: LiveController, method: str, path: str, **body: Any) -> Any:
    response = httpx.request(method, live.url + path, json=body or None, headers={
        "Authorization": f"Bearer {live.admin_token}"})
    assert response.status_code < 300, response.text
    return response.json() if response.content else None


def link_to(live: LiveController, token: str, transport: httpx.BaseTransport | None = None,
            waits: list[float] | None = None, **options: Any) -> HttpLink:
    http = httpx.Client(base_url=live.url, transport=transport, timeout=10.0,
                        headers={"Authorization": f"Bearer {token}"})
    sleep = waits.append if waits is not None else None
    return HttpLink(http, HOST, retry_for=7200.0, sleep=sleep, **options)


def a_server_building(live: LiveController) -> tuple[str, str]:
    """A server being built on the host; the host's agent token."""
    token = admin(live, "POST", f"/v2/admin/os-hosts/{HOST}/tokens")["token"]
    Agent(scan=lambda: [GPU], link=link_to(live, token), pool_attrs=["vendor_id"]).report_once()
    admin(live, "POST", "/v2/admin/os-pci-flavors", **{"pci-flavor": {
        "name": "gpu", "vendor_id": "10de"}})
    admin(live, "POST", "/v2/admin/flavors", flavor={"name": "m1.gpu"})
    admin(live, "POST", "/v2/admin/flavors/m1.gpu/os-extra_specs",
          extra_specs={"pci_passthrough:pci_flavor": "1:gpu"})
    server = admin(live, "POST", "/v2/admin/servers", server={
        "name": "vm", "flavorRef": "m1.gpu", "networks": []})["server"]
    return server["id"], token


def server_events(live: LiveController, uuid: str) -> list[str]:
    listed = admin(live, "GET", f"/v2/admin/os-events?server={uuid}")["events"]
    return [event["kind"] for event in listed]


def test_an_answer_sent_while_the_controller_is_down_lands_once(
        controller: LiveController) -> None:
    uuid, token = a_server_building(controller)
    link = link_to(controller, token)
    controller.stop()
    failures: list[BaseException] = []

    def send() -> None:
        try:
            link.spawned(OrderResult(uuid, ok=True))
        except BaseException as error:
            failures.append(error)

    sender = threading.Thread(target=send)
    sender.start()
    sender.join(timeout=1.0)
    assert sender.is_alive()  # still retrying: the controller is away
    controller.start()
    sender.join(timeout=120)
    assert not sender.is_alive() and failures == []
    assert admin(controller, "GET", f"/v2/admin/servers/{uuid}")["server"]["status"] == "ACTIVE"
    assert server_events(controller, uuid).count("server-active") == 1


def test_an_answer_waiting_out_its_backoff_goes_once_another_call_gets_through(
        controller: LiveController) -> None:
    uuid, token = a_server_building(controller)
    faulty, stop = Faulty(unreachable=1), threading.Event()
    # An hour's backoff after the one refused connection: only being woken ends it.
    link = link_to(controller, token, faulty, backoff=lambda _: 3600.0, stop=stop)
    sender = threading.Thread(target=link.spawned, args=(OrderResult(uuid, ok=True),),
                              daemon=True)
    sender.start()
    try:
        wait_until(lambda: len(faulty.sent) == 1)
        link.heartbeat()  # the controller answers this one: it is reachable again
        sender.join(timeout=300)
        assert not sender.is_alive()
    finally:
        stop.set()
    assert [r.url.path.rsplit("/", 1)[-1] for r in faulty.sent] == [
        "spawned", "heartbeat", "spawned"]
    assert admin(controller, "GET", f"/v2/admin/servers/{uuid}")["server"]["status"] == "ACTIVE"


def test_a_wait_the_controller_asked_for_is_not_cut_short(controller: LiveController) -> None:
    uuid, token = a_server_building(controller)
    faulty, stop = Faulty(busy=1, retry_after=20), threading.Event()
    link = link_to(controller, token, faulty, stop=stop)
    sender = threading.Thread(target=link.spawned, args=(OrderResult(uuid, ok=True),),
                              daemon=True)
    sender.start()
    try:
        wait_until(lambda: len(faulty.sent) == 1)
        link.heartbeat()
        sender.join(timeout=1.0)
        assert sender.is_alive()  # the 429's Retry-After (20 s) is still being waited out
        assert len(faulty.sent) == 2
        sender.join(timeout=300)
        assert not sender.is_alive()
    finally:
        stop.set()
    assert admin(controller, "GET", f"/v2/admin/servers/{uuid}")["server"]["status"] == "ACTIVE"


def wait_until(check: Callable[[], bool], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "not within the time"
        time.sleep(0.01)


def test_an_answer_whose_reply_was_lost_is_applied_once(controller: LiveController) -> None:
    uuid, token = a_server_building(controller)
    faulty = Faulty(lose_replies=2)
    link_to(controller, token, faulty, waits=[]).spawned(OrderResult(uuid, ok=True))
    answers = [r for r in faulty.sent if r.url.path.endswith("/spawned")]
    assert len(answers) == 3
    assert len({r.headers["Idempotency-Key"] for r in answers}) == 1
    assert server_events(controller, uuid).count("server-active") == 1


def test_a_refusal_is_not_retried_and_retry_after_is_honoured(
        controller: LiveController) -> None:
    uuid, token = a_server_building(controller)
    faulty = Faulty()
    waits: list[float] = []
    link = link_to(controller, token, faulty, waits)
    with pytest.raises(RefusedError, match="not deleted"):
        link.destroyed(OrderResult(uuid, ok=True))
    assert len(faulty.sent) == 1 and waits == []
    busy = Faulty(busy=2)
    link_to(controller, token, busy, waits).spawned(OrderResult(uuid, ok=True))
    assert waits == [7.0, 7.0] and len(busy.sent) == 3


def test_a_stale_full_report_is_sent_again_on_the_current_generation(
        controller: LiveController) -> None:
    _, token = a_server_building(controller)
    disk = [10]
    agent = Agent(scan=lambda: [GPU], link=link_to(controller, token),
                  pool_attrs=["vendor_id"], resources=lambda: HostResources(disk_gb=disk[0]))
    agent.report_once()
    # Another report gets in behind this agent's back. The agent's next report is full
    # (its disk grew); built on the generation it knew, it is refused as stale, and the
    # agent sends it again on the current one.
    other = Agent(scan=lambda: [GPU, PciDevice("0000:82:00.0", "10de", "20b0")],
                  link=link_to(controller, token), pool_attrs=["vendor_id"])
    other.report_once()
    disk[0] = 20
    assert agent.report_once() is None
    listed = admin(controller, "GET", f"/v2/admin/os-pci-devices?host={HOST}")["pci_devices"]
    assert {row["device"]["address"] for row in listed
            if row["device"]["status"] != "removed"} == {GPU.address}
