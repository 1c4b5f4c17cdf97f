"""Requests racing for one thing, on a real `passthru serve` (its worker threads run them
at once) over SQLite and PostgreSQL: PostgreSQL's READ COMMITTED must give the answers
SQLite's one writer at a time gives.

Each race starts its requests together (a barrier) from threads of their own, and checks
what the answers and the store say afterwards: one winner, the others refused with a
clear 4xx, and nothing recorded twice.
"""

from __future__ import annotations

import base64
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.pci.builders import gpu, nic
from tests.support.live import LiveController

PROJECT = "demo"
TIMEOUT = 120.0


class Live:
    """One controller with a host of 2 NICs (4 VFs each) and 4 GPUs, and a catalog."""

    def __init__(self, controller: LiveController) -> None:
        self.controller = controller
        self.admin = self.client(controller.admin_token, "admin")
        self.member = self.client(ok(self.admin.post("/tokens", json={
            "token": {"project": PROJECT}}))["token"], PROJECT)

    def client(self, token: str, tenant: str) -> httpx.Client:
        return httpx.Client(base_url=f"{self.controller.url}/v2/{tenant}", timeout=TIMEOUT,
                            headers={"Authorization": f"Bearer {token}"})

    def close(self) -> None:
        self.admin.close()
        self.member.close()


def ok(response: httpx.Response) -> Any:
    assert response.is_success, f"{response.request.method} {response.request.url}: " \
                                f"{response.status_code} {response.text}"
    return response.json() if response.content else None


def report_host(admin: httpx.Client, base_url: str, host: str = "compute-0") -> None:
    devices = [*nic(0, 4, "physnet1"), *nic(1, 4, "physnet1"), *(gpu(n) for n in range(4))]
    token = ok(admin.post(f"/os-hosts/{host}/tokens"))["token"]
    with httpx.Client(base_url=f"{base_url}/v2/agent", timeout=TIMEOUT,
                      headers={"Authorization": f"Bearer {token}"}) as agent:
        ok(agent.put(f"/hosts/{host}/inventory",
                     json={"devices": [asdict(device) for device in devices]}))
        ok(agent.post(f"/hosts/{host}/heartbeat"))


def create_catalog(admin: httpx.Client) -> None:
    ok(admin.post("/os-pci-flavors", json={"pci-flavor": {"name": "gpu", "vendor_id": "10de"}}))
    ok(admin.post("/flavors", json={"flavor": {"name": "m1"}}))
    ok(admin.post("/flavors", json={"flavor": {"name": "m1.gpu"}}))
    ok(admin.post("/flavors/m1.gpu/os-extra_specs",
                  json={"extra_specs": {"pci_passthrough:pci_flavor": "1:gpu"}}))
    ok(admin.post("/networks", json={"network": {
        "name": "net1", "physical_network": "physnet1", "segmentation_id": 100}}))


@pytest.fixture
def live(db_url: str, tmp_path: Path) -> Iterator[Live]:
    # The races are floods on purpose: a member's rate limit would refuse most of them.
    controller = LiveController(tmp_path / "data", db_url, ("--rate-limit", "0"))
    controller.start()
    try:
        cluster = Live(controller)
        create_catalog(cluster.admin)
        report_host(cluster.admin, controller.url)
        yield cluster
        cluster.close()
    finally:
        controller.stop()


def at_once(calls: list[Callable[[], httpx.Response]]) -> list[httpx.Response]:
    """Run every call in its own thread, all released together."""
    start = threading.Barrier(len(calls))

    def run(call: Callable[[], httpx.Response]) -> httpx.Response:
        start.wait()
        return call()

    with ThreadPoolExecutor(len(calls)) as pool:
        return list(pool.map(run, calls))


def statuses(answers: list[httpx.Response]) -> Counter[int]:
    return Counter(answer.status_code for answer in answers)


def devices_held(admin: httpx.Client) -> dict[str, str]:
    """Address → owner of every device someone holds."""
    return {d["device"]["address"]: d["device"]["owner"]
            for d in ok(admin.get("/os-pci-devices"))["pci_devices"] if d["device"]["owner"]}


def events(admin: httpx.Client, kind: str, server: str) -> list[dict[str, Any]]:
    listed: list[dict[str, Any]] = ok(admin.get("/os-events", params={
        "kind": kind, "server": server}))["events"]
    return listed


def boot(api: httpx.Client, name: str, **server: Any) -> httpx.Response:
    return api.post("/servers", json={"server": {"name": name, "flavorRef": "m1", **server}})


# --- a port is used by at most one live server -----------------------------------------

@pytest.mark.slow
def test_concurrent_boots_onto_one_port_give_it_to_exactly_one_server(live: Live) -> None:
    port = ok(live.member.post("/ports", json={"port": {
        "network_id": "net1", "binding:vnic_type": "direct"}}))["port"]["id"]
    answers = at_once([partial(boot, live.member, f"vm-{n}", networks=[{"port": port}])
                       for n in range(20)])
    assert statuses(answers) == {202: 1, 409: 19}, [a.text for a in answers]
    (winner,) = [a.json()["server"] for a in answers if a.status_code == 202]
    assert winner["status"] == "BUILD"
    for answer in answers:
        if answer.status_code == 409:
            assert answer.json()["error"]["message"].startswith(
                f"port {port} is in use by server {winner['id']}"), answer.text
    servers = ok(live.member.get("/servers"))["servers"]
    assert [s["id"] for s in servers] == [winner["id"]]
    assert ok(live.member.get(f"/ports/{port}"))["port"]["device_id"] == winner["id"]
    assert set(devices_held(live.admin).values()) == {winner["id"]}


def port_delete_round(live: Live, round_: int) -> None:
    port = ok(live.member.post("/ports", json={"port": {
        "network_id": "net1", "binding:vnic_type": "direct"}}))["port"]["id"]
    answers = at_once([lambda: live.member.delete(f"/ports/{port}"),
                       *(lambda n=n: boot(live.member, f"vm-{round_}-{n}",
                                          networks=[{"port": port}]) for n in range(3))])
    deleted, boots = answers[0], answers[1:]
    booted = [a.json()["server"]["id"] for a in boots if a.status_code == 202]
    assert len(booted) <= 1, [a.text for a in boots]
    assert all(a.status_code in (202, 404, 409) for a in boots), [a.text for a in boots]
    if deleted.status_code == 204:
        assert booted == [], "a server booted onto a port that was then deleted"
    else:
        assert deleted.status_code == 409, deleted.text
        (server,) = booted
        assert ok(live.member.get(f"/ports/{port}"))["port"]["device_id"] == server
        assert ok(live.member.get(f"/servers/{server}"))["server"]["ports"] == [port]
    for server in booted:
        ok(live.member.delete(f"/servers/{server}"))


@pytest.mark.slow
def test_a_port_deleted_while_boots_attach_it_is_either_gone_or_in_use(live: Live) -> None:
    for round_ in range(20):
        port_delete_round(live, round_)


# --- a server is deleted exactly once --------------------------------------------------

@pytest.mark.slow
def test_concurrent_deletes_of_one_server_delete_it_once(live: Live) -> None:
    server = ok(boot(live.member, "vm", flavorRef="m1.gpu",
                     networks=[{"uuid": "net1", "vnic_type": "direct"}]))["server"]
    assert server["status"] == "BUILD"
    held = {a for a, owner in devices_held(live.admin).items() if owner == server["id"]}
    assert len(held) == 2
    answers = at_once([lambda: live.member.delete(f"/servers/{server['id']}")] * 10)
    assert statuses(answers) == {204: 1, 404: 9}, [a.text for a in answers]
    assert len(events(live.admin, "server-deleted", server["id"])) == 1
    freed = [e["device"] for e in events(live.admin, "device-freed", server["id"])]
    assert sorted(freed) == sorted(held)
    assert devices_held(live.admin) == {}
    assert ok(live.member.get("/ports"))["ports"] == []


def power_delete_round(live: Live, round_: int) -> None:
    server = ok(boot(live.member, f"vm-{round_}"))["server"]["id"]
    answers = at_once([lambda: live.member.delete(f"/servers/{server}"),
                       lambda: live.member.post(f"/servers/{server}/action",
                                                json={"reboot": {"type": "HARD"}})])
    assert answers[0].status_code == 204, answers[0].text
    # Asked first, the BUILD server takes no reboot (409); asked last, it is not found.
    reboot = answers[1]
    assert reboot.status_code == 404 or (
        reboot.status_code == 409 and "is BUILD" in reboot.json()["error"]["message"]
    ), reboot.text


@pytest.mark.slow
def test_a_power_action_racing_a_delete_is_refused_as_not_found_or_too_early(
        live: Live) -> None:
    for round_ in range(10):
        power_delete_round(live, round_)


# --- what is deleted is used by nothing ------------------------------------------------

def flavor_delete_round(live: Live, round_: int) -> None:
    flavor = f"f{round_}"
    ok(live.admin.post("/flavors", json={"flavor": {"name": flavor}}))
    answers = at_once([lambda: live.admin.delete(f"/flavors/{flavor}"),
                       *(lambda n=n: boot(live.member, f"vm-{round_}-{n}", flavorRef=flavor)
                         for n in range(3))])
    deleted, boots = answers[0], answers[1:]
    booted = [a.json()["server"] for a in boots if a.status_code == 202]
    assert all(a.status_code in (202, 404, 409) for a in boots), [a.text for a in boots]
    if deleted.status_code == 204:
        assert booted == [], "servers were booted with a flavor that was then deleted"
    else:
        assert deleted.status_code == 409, deleted.text
        assert booted and all(s["flavor"] == flavor for s in booted)
    for server in booted:
        ok(live.member.delete(f"/servers/{server['id']}"))


@pytest.mark.slow
def test_a_flavor_deleted_while_servers_boot_with_it_is_deleted_only_if_none_did(
        live: Live) -> None:
    for round_ in range(6):
        flavor_delete_round(live, round_)


def network_delete_round(live: Live, round_: int) -> None:
    network = f"n{round_}"
    ok(live.admin.post("/networks", json={"network": {
        "name": network, "physical_network": "physnet9", "segmentation_id": 200 + round_,
        "project": PROJECT}}))
    answers = at_once([lambda: live.admin.delete(f"/networks/{network}"),
                       *(lambda: live.member.post("/ports", json={"port": {
                           "network_id": network}}) for _ in range(3))])
    deleted, made = answers[0], answers[1:]
    ports = [a.json()["port"]["id"] for a in made if a.status_code == 201]
    assert all(a.status_code in (201, 404, 409) for a in made), [a.text for a in made]
    if deleted.status_code == 204:
        assert ports == []
    else:
        assert deleted.status_code == 409, deleted.text
        assert "still has" in deleted.json()["error"]["message"], deleted.text
        assert ports
    for port in ports:
        ok(live.member.delete(f"/ports/{port}"))


@pytest.mark.slow
def test_a_network_deleted_while_ports_are_made_on_it_is_deleted_only_if_none_was(
        live: Live) -> None:
    for round_ in range(6):
        network_delete_round(live, round_)


def pci_flavor_delete_round(live: Live, round_: int) -> None:
    name = f"vf{round_}"
    ok(live.admin.post("/os-pci-flavors", json={"pci-flavor": {
        "name": name, "vendor_id": "8086"}}))
    ok(live.admin.post("/flavors", json={"flavor": {"name": f"uses-{name}"}}))
    deleted, port, spec = at_once([
        lambda: live.admin.delete(f"/os-pci-flavors/{name}"),
        lambda: live.member.post("/ports", json={"port": {
            "network_id": "net1", "binding:vnic_type": "direct", "pci_flavor": name}}),
        lambda: live.admin.post(f"/flavors/uses-{name}/os-extra_specs", json={
            "extra_specs": {"pci_passthrough:pci_flavor": f"1:{name}"}})])
    assert port.status_code in (201, 404, 409), port.text
    assert spec.status_code in (200, 400, 409), spec.text
    if deleted.status_code == 204:
        assert port.status_code != 201 and spec.status_code != 200, \
            "something names a PCI flavor that was then deleted"
    else:
        assert deleted.status_code == 409, deleted.text
        assert port.status_code == 201 or spec.status_code == 200
    if port.status_code == 201:
        ok(live.member.delete(f"/ports/{port.json()['port']['id']}"))


@pytest.mark.slow
def test_a_pci_flavor_deleted_while_ports_and_flavors_name_it_is_deleted_only_if_none_did(
        live: Live) -> None:
    for round_ in range(6):
        pci_flavor_delete_round(live, round_)


def segment_round(live: Live, vlan: int) -> None:
    answers = at_once([partial(live.admin.post, "/networks", json={"network": {
        "name": f"vlan{vlan}-{n}", "physical_network": "physnet1", "segmentation_id": vlan}})
        for n in range(8)])
    assert statuses(answers) == {201: 1, 409: 7}, [a.text for a in answers]
    networks = ok(live.admin.get("/networks"))["networks"]
    assert [n["segmentation_id"] for n in networks].count(vlan) == 1


@pytest.mark.slow
def test_networks_created_at_once_on_one_segment_give_one_network(live: Live) -> None:
    for vlan in range(7, 13):
        segment_round(live, vlan)


def public_key() -> str:
    def field(data: bytes) -> bytes:
        return len(data).to_bytes(4, "big") + data

    blob = field(b"ssh-ed25519") + field(bytes(range(32)))
    return f"ssh-ed25519 {base64.b64encode(blob).decode()} race@test"


@pytest.mark.slow
def test_keypairs_made_at_once_with_one_name_give_one_keypair(live: Live) -> None:
    answers = at_once([lambda: live.member.post("/os-keypairs", json={"keypair": {
        "name": "k", "public_key": public_key()}})] * 6)
    assert statuses(answers) == {201: 1, 409: 5}, [a.text for a in answers]


def keypair_delete_round(live: Live, round_: int) -> None:
    name = f"k{round_}"
    ok(live.member.post("/os-keypairs", json={"keypair": {"name": name,
                                                          "public_key": public_key()}}))
    answers = at_once([lambda: live.member.delete(f"/os-keypairs/{name}"),
                       *(lambda n=n: boot(live.member, f"vm-{round_}-{n}", key_name=name)
                         for n in range(3))])
    deleted, boots = answers[0], answers[1:]
    booted = [a.json()["server"]["id"] for a in boots if a.status_code == 202]
    assert all(a.status_code in (202, 400) for a in boots), [a.text for a in boots]
    if deleted.status_code == 204:
        assert booted == [], "servers wait to be spawned with a keypair that was deleted"
    else:
        assert deleted.status_code == 409, deleted.text
        assert booted
    for server in booted:
        ok(live.member.delete(f"/servers/{server}"))
    if deleted.status_code == 409:
        ok(live.member.delete(f"/os-keypairs/{name}"))


@pytest.mark.slow
def test_a_keypair_deleted_while_servers_boot_with_it_is_deleted_only_if_none_did(
        live: Live) -> None:
    for round_ in range(6):
        keypair_delete_round(live, round_)


def image_delete_round(live: Live, round_: int) -> None:
    image = f"img{round_}"
    ok(live.admin.post("/images", json={"image": {"name": image}}))
    answers = at_once([lambda: live.admin.delete(f"/images/{image}"),
                       *(lambda n=n: boot(live.member, f"vm-{round_}-{n}", imageRef=image)
                         for n in range(3))])
    deleted, boots = answers[0], answers[1:]
    booted = [a.json()["server"] for a in boots if a.status_code == 202]
    assert all(a.status_code in (202, 404, 409) for a in boots), [a.text for a in boots]
    if deleted.status_code == 204:
        assert booted == [], "servers were booted from an image that was then deleted"
    else:
        assert deleted.status_code == 409, deleted.text
        assert booted and all(s["image"] == image for s in booted)
    for server in booted:
        ok(live.member.delete(f"/servers/{server['id']}"))


@pytest.mark.slow
def test_an_image_deleted_while_servers_boot_from_it_is_deleted_only_if_none_did(
        live: Live) -> None:
    for round_ in range(6):
        image_delete_round(live, round_)
