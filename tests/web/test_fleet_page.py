"""The fleet page in headless Chromium against a live `passthru serve`: three simulated
hosts reported by the real agent (one of them gone silent), PCI flavors, two servers
placed by the scheduler; the page must show all of it, and refuse a wrong token."""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from lxml import etree, html

from passthru.controller.settings import DATABASE_FILE
from passthru.controller.store.db import Store
from passthru.sim import PROFILES
from tests.support import trees
from tests.support.live import LiveController
from tests.web.chromium import dump_dom, screenshot
from tests.web.fleet import heartbeats_written, place, report_host, silence

ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts"
HOSTS = {"gpu-1": "gpu-2numa", "net-1": "x710-2x", "qat-1": "qat"}
PCI_FLAVORS = {
    "bigGPU": ("NVIDIA A100", {"vendor_id": "10de", "product_id": "20b5"}),
    "T4": ("NVIDIA Tesla T4", {"vendor_id": "10de", "product_id": "1eb8"}),
    "phyX_NIC": ("any VF on physnet1", {"e.physical_network": "physnet1"}),
    "QA1": ("QuickAssist class 1", {"e.QAclass": "1"}),
}


@dataclass(frozen=True)
class Fleet:
    url: str
    admin: str
    #: The controller's log, with a line per request it answered.
    log: Path
    #: Server name -> the addresses of its devices.
    devices: dict[str, list[str]]

    def page(self, token: str | None) -> str:
        return f"{self.url}/ui" + (f"#token={token}" if token else "")


def _boot(http: httpx.Client, store: Store, name: str, flavor: str,
          networks: list[dict[str, str]]) -> list[str]:
    answer = http.post("/v2/demo/servers", json={"server": {
        "name": name, "flavorRef": flavor, "networks": networks}})
    assert answer.status_code == 202, answer.text
    place(store, answer.json()["server"]["id"])
    shown = http.get(f"/v2/demo/servers/{name}").json()["server"]
    return [d["address"] for r in shown["pci_requests"] for d in r["devices"]]


def _ok(answer: httpx.Response) -> Any:
    assert answer.status_code < 300, answer.text
    return answer.json()


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    root = tmp_path_factory.mktemp("fleet")
    # Heart-beats written soon (not every 5 s), so that the fleet is at rest from the
    # start: a heart-beat still in memory would bring the silenced host back up.
    controller = LiveController(root / "data", options=["--heartbeat-flush-interval", "0.1"])
    controller.start()
    store = Store(f"sqlite:///{root / 'data' / DATABASE_FILE}")
    auth = {"Authorization": f"Bearer {controller.admin_token}"}
    try:
        with httpx.Client(base_url=controller.url, headers=auth, timeout=30) as http:
            for name, profile in HOSTS.items():
                report_host(http, name, PROFILES[profile], root / "sys")
            heartbeats_written(http, HOSTS)
            for name, (description, spec) in PCI_FLAVORS.items():
                _ok(http.post("/v2/admin/os-pci-flavors", json={"pci-flavor": {
                    "name": name, "description": description, **spec}}))
            _ok(http.post("/v2/admin/flavors", json={"flavor": {"name": "m1.gpu"}}))
            _ok(http.post("/v2/admin/flavors/m1.gpu/os-extra_specs",
                          json={"extra_specs": {"pci_passthrough:pci_flavor": "1:bigGPU"}}))
            _ok(http.post("/v2/admin/flavors", json={"flavor": {"name": "m1.small"}}))
            _ok(http.post("/v2/admin/networks", json={"network": {
                "name": "prod", "physical_network": "physnet1", "segmentation_id": 100}}))
            silence(store, "qat-1")
            devices = {
                "vm-gpu": _boot(http, store, "vm-gpu", "m1.gpu", []),
                "vm-net": _boot(http, store, "vm-net", "m1.small",
                                [{"uuid": "prod", "vnic_type": "direct"}]),
            }
        yield Fleet(controller.url, controller.admin_token, controller.log, devices)
    finally:
        store.close()
        controller.stop()


def _data(elements: list[Any], *names: str) -> dict[str, tuple[str, ...]]:
    """The `data-*` values of each element, keyed by the first one named."""
    return {e.get(f"data-{names[0]}"): tuple(e.get(f"data-{n}") for n in names[1:])
            for e in elements}


def _text(element: Any) -> str:
    """The element's text as a reader sees it: its pieces separated by single blanks."""
    return " ".join(" ".join(element.itertext()).split())


def _by_id(page: etree._Element, id_: str) -> etree._Element:
    """The page's element of that id: lxml-stubs type `html.fromstring` as a plain element,
    without the HTML methods it has."""
    assert isinstance(page, html.HtmlMixin)
    found = page.get_element_by_id(id_)
    assert found is not None  # it raises KeyError instead, without a default
    return found


def _int(element: etree._Element, attribute: str) -> int:
    value = element.get(attribute)
    assert value is not None, attribute
    return int(value)


def test_the_page_shows_hosts_pools_flavors_servers_and_events(fleet: Fleet) -> None:
    page = html.fromstring(dump_dom(fleet.page(fleet.admin)))
    assert _by_id(page, "fleet").get("data-loaded") == "true"
    assert _by_id(page, "notice").get("hidden") is not None

    hosts = trees.elements(page, '//tbody[@id="hosts"]/tr')
    assert _data(hosts, "host", "status") == {
        "gpu-1": ("up",), "net-1": ("up",), "qat-1": ("down",)}
    silent = next(row for row in hosts if row.get("data-host") == "qat-1")
    assert "1 h ago" in _text(silent)
    assert "0 used · 0 free · 20" in _text(silent)  # a down host has nothing free
    summary = _text(_by_id(page, "summary"))
    assert summary == "Hosts 2 up 1 down Devices 56 Used 2 Free 34 PCI flavors 4 Servers 2"

    # gpu-1: four A100 and two T4 in pools per NUMA node; net-1: 30 VFs in one pool per PF.
    pools = {card.get("data-host"): [
        (_int(p, "data-count"), _int(p, "data-used"), _int(p, "data-free"))
        for p in trees.elements(card, './/div[contains(@class, "pool")]')]
        for card in trees.elements(page, '//div[@id="pools"]/article')}
    assert sorted(pools["gpu-1"]) == [(1, 0, 1), (1, 0, 1), (2, 0, 2), (2, 1, 1)]
    assert sorted(pools["net-1"]) == [(6, 0, 6), (8, 0, 8), (8, 0, 8), (8, 1, 7)]
    assert sorted(pools["qat-1"]) == [(4, 0, 0)] * 5

    flavors = _data(trees.elements(page, '//div[@id="flavors"]/div'),
                    "flavor", "count", "used", "free")
    assert flavors == {"bigGPU": ("4", "1", "3"), "T4": ("2", "0", "2"),
                       "phyX_NIC": ("16", "1", "15"), "QA1": ("12", "0", "0")}
    big_gpu = trees.elements(page, '//div[@data-flavor="bigGPU"]')[0]
    assert "NVIDIA A100" in _text(big_gpu)
    bar = trees.elements(big_gpu, './/div[@class="bar"]')[0]
    assert bar.get("aria-label") == "1 used, 3 free of 4"
    assert [s.get("style") for s in bar] == ["width: 25%;", "width: 75%;"]

    servers = {row.get("data-server"): trees.strings(row, './/*[@data-device]/@data-device')
               for row in trees.elements(page, '//tbody[@id="servers"]/tr')}
    assert servers == fleet.devices
    assert [len(devices) for devices in servers.values()] == [1, 1]

    events = [(row.get("data-kind"), _text(row))
              for row in trees.elements(page, '//tbody[@id="events"]/tr')]
    kinds = [kind for kind, _ in events]
    assert kinds[:2] == ["device-claimed", "server-created"]  # vm-net, newest first
    claimed = [text for kind, text in events if kind == "device-claimed"]
    assert any(fleet.devices["vm-gpu"][0] in text and "vm-gpu" in text for text in claimed)
    assert any("qat-1" in text and "no heart-beat since" in text
               for kind, text in events if kind == "host-down")
    # The token travelled in the fragment and in headers only, never in a requested URL.
    assert "GET /ui HTTP" in fleet.log.read_text()
    assert fleet.admin not in fleet.log.read_text()


def _requests(log: str, path: str) -> list[int]:
    """The status of each request for `path` (without its query) in a stretch of log."""
    return [int(line.rsplit('" ', 1)[1].split()[0]) for line in log.splitlines()
            if f"GET /{path}" in line and " HTTP/1.1\" " in line]


def test_an_open_page_asks_again_with_etags_and_keeps_what_did_not_change(fleet: Fleet
                                                                          ) -> None:
    """Two refreshes (virtual time) on a fleet at rest: the summary and the first page of
    hosts come back 304, nothing else is asked again, and the page still shows it all."""
    start = len(fleet.log.read_bytes())
    page = html.fromstring(dump_dom(fleet.page(fleet.admin), budget_ms=25_000))
    log = fleet.log.read_bytes()[start:].decode()
    assert _requests(log, "v2/admin/os-fleet-summary") == [200, 304, 304]
    assert _requests(log, "v2/admin/os-hosts") == [200, 304, 304]
    assert _requests(log, "v2/admin/os-pci-stats") == [200]
    assert _requests(log, "v2/admin/servers") == [200]
    assert _requests(log, "v2/admin/os-events") == [200]
    assert _requests(log, "v2/whoami") == [200]

    assert _by_id(page, "fleet").get("data-loaded") == "true"
    assert _by_id(page, "notice").get("hidden") is not None
    hosts = trees.elements(page, '//tbody[@id="hosts"]/tr')
    assert _data(hosts, "host", "status") == {
        "gpu-1": ("up",), "net-1": ("up",), "qat-1": ("down",)}
    summary = _text(_by_id(page, "summary"))
    assert summary == "Hosts 2 up 1 down Devices 56 Used 2 Free 34 PCI flavors 4 Servers 2"
    assert len(trees.elements(page, '//div[@id="pools"]/article')) == 3
    assert len(trees.elements(page, '//tbody[@id="servers"]/tr')) == 2
    assert page.xpath('//tbody[@id="events"]/tr')


def test_a_screenshot_of_the_page_is_kept(fleet: Fleet) -> None:
    path = ARTIFACTS / "fleet.png"
    path.unlink(missing_ok=True)
    screenshot(fleet.page(fleet.admin), path)
    header = path.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n"
    assert struct.unpack(">II", header[16:24]) == (1400, 1000)


def _notice(url: str) -> tuple[str | None, str, bool]:
    page = html.fromstring(dump_dom(url))
    notice = _by_id(page, "notice")
    return notice.get("data-state"), _text(notice), _by_id(page, "fleet").get(
        "hidden") is not None


def test_a_wrong_token_is_refused_and_nothing_is_shown(fleet: Fleet) -> None:
    state, text, hidden = _notice(fleet.page("pt_not-a-token"))
    assert state == "refused"
    assert text.startswith("The controller refused this token: the token is not known to "
                           "this controller")
    assert "/ui#token=TOKEN" in text
    assert hidden


def test_a_member_token_is_told_the_page_needs_an_admin(fleet: Fleet) -> None:
    member = _ok(httpx.post(f"{fleet.url}/v2/admin/tokens", json={"token": {"project": "demo"}},
                            headers={"Authorization": f"Bearer {fleet.admin}"}))["token"]
    state, text, hidden = _notice(fleet.page(member))
    assert state == "forbidden"
    assert text.startswith("This token may not read the fleet: the fleet page needs an admin "
                           "token; this is a member token of demo")
    assert hidden


def test_without_a_token_the_page_says_how_to_give_one(fleet: Fleet) -> None:
    state, text, hidden = _notice(fleet.page(None))
    assert state == "no-token"
    assert "Open this page as /ui#token=TOKEN with an admin token" in text
    assert hidden
