"""A multi-create the hosts cannot take whole is refused and leaves nothing behind, on
SQLite and PostgreSQL (as Nova creates no server when min_count cannot be met); a single
server that no host fits is kept in ERROR with its fault."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from passthru.asgi import create_app
from passthru.controller.settings import Settings
from passthru.controller.store.models import PciRequestRow, PortRow, ServerRow
from tests.controller.conftest import Api
from tests.support.values import present

V2 = "/v2/admin"
PROJECT = "/v2/p1"


@pytest.fixture
def cloud(db_url: str, tmp_path: Path) -> Iterator[tuple[Api, str]]:
    """Host c1 with two GPUs; flavor m1.gpu asks for one; network prod; a member of p1."""
    settings = Settings(tmp_path / "data", db_url)
    with TestClient(create_app(settings)) as client:
        api = Api(client, settings.admin_token_path.read_text().strip())
        api.ok("POST", f"{V2}/os-pci-flavors", json={"pci-flavor": {
            "name": "bigGPU", "vendor_id": "10de"}})
        api.ok("POST", f"{V2}/flavors", json={"flavor": {"name": "m1.gpu"}})
        api.ok("POST", f"{V2}/flavors/m1.gpu/os-extra_specs", json={"extra_specs": {
            "pci_passthrough:pci_flavor": "1:bigGPU"}})
        api.ok("POST", f"{V2}/networks", json={"network": {
            "name": "prod", "physical_network": "physnet1", "segmentation_id": 100}})
        api.ok("PUT", "/v2/agent/hosts/c1/inventory", api.agent("c1"), json={"devices": [
            {"address": f"0000:0{n}:00.0", "vendor_id": "10de", "product_id": "1db6"}
            for n in (1, 2)]})
        yield api, api.member("p1")


def _counts(api: Api) -> dict[str, int]:
    store = api.client.app.state.store  # type: ignore[attr-defined]
    with store.read() as session:
        return {table.__tablename__: session.scalar(select(func.count()).select_from(table))
                for table in (ServerRow, PortRow, PciRequestRow)}


def _events(api: Api) -> list[tuple[str, str]]:
    return [(e["kind"], e["message"]) for e in api.ok("GET", f"{V2}/os-events")["events"]]


def test_a_refused_multi_create_leaves_nothing_behind(cloud: tuple[Api, str]) -> None:
    api, member = cloud
    api.ok("POST", f"{PROJECT}/ports", member, json={"port": {"network_id": "prod",
                                                              "name": "mine"}})
    before, events_before = _counts(api), _events(api)
    answer = api.call("POST", f"{PROJECT}/servers", member, expect=409, json={"server": {
        "name": "vm", "flavorRef": "m1.gpu", "min_count": 40,
        "networks": [{"uuid": "prod"}]}})
    message = answer.json()["error"]["message"]
    assert message.startswith("none of the 40 servers vm-1 ... vm-40 was created: ")
    assert "bigGPU" in message  # the scheduler's reason
    assert _counts(api) == before
    assert api.ok("GET", f"{PROJECT}/servers", member)["servers"] == []
    assert [p["name"] for p in api.ok("GET", f"{PROJECT}/ports", member)["ports"]] == ["mine"]
    devices = api.ok("GET", f"{V2}/os-pci-devices")["pci_devices"]
    assert [d["device"]["status"] for d in devices] == ["available", "available"]
    assert all(d["device"]["owner"] is None for d in devices)
    new = _events(api)[:len(_events(api)) - len(events_before)]
    assert new == [("servers-refused", f"project p1: {message}")]
    # The hosts took nothing: the next boot that fits gets its devices.
    placed = api.ok("POST", f"{PROJECT}/servers", member, json={"server": {
        "name": "pair", "flavorRef": "m1.gpu", "min_count": 2}})["servers"]
    assert [(s["name"], s["status"], s["host"]) for s in placed] == [
        ("pair-1", "BUILD", "c1"), ("pair-2", "BUILD", "c1")]


def test_one_server_no_host_fits_is_kept_in_error_with_its_fault(cloud: tuple[Api, str]
                                                                 ) -> None:
    api, member = cloud
    api.ok("POST", f"{PROJECT}/servers", member, json={"server": {
        "name": "both", "flavorRef": "m1.gpu", "min_count": 2}})
    answer = api.ok("POST", f"{PROJECT}/servers", member, json={"server": {
        "name": "third", "flavorRef": "m1.gpu", "networks": [{"uuid": "prod"}]}})
    (server,) = answer["servers"]
    assert (server["name"], server["status"], server["host"]) == ("third", "ERROR", None)
    assert "bigGPU" in server["fault"]
    assert len(server["ports"]) == 1  # kept, as Nova keeps them, until the server goes


def _owners(api: Api) -> list[str | None]:
    return [d["device"]["owner"]
            for d in api.ok("GET", f"{V2}/os-pci-devices")["pci_devices"]]


def test_max_count_places_as_many_as_fit_and_removes_the_others(cloud: tuple[Api, str]
                                                                 ) -> None:
    api, member = cloud
    answer = api.ok("POST", f"{PROJECT}/servers", member, json={"server": {
        "name": "vm", "flavorRef": "m1.gpu", "max_count": 5,
        "networks": [{"uuid": "prod"}]}})
    servers = answer["servers"]
    assert [(s["name"], s["status"], s["host"]) for s in servers] == [
        ("vm-1", "BUILD", "c1"), ("vm-2", "BUILD", "c1")]
    assert answer["server"] == servers[0]  # Nova's answer: the first server
    # Each device claimed exactly once, each by one of the servers placed.
    assert sorted(present(_owners(api))) == sorted(s["id"] for s in servers)
    listed = api.ok("GET", f"{PROJECT}/servers", member)["servers"]
    assert [s["name"] for s in listed] == ["vm-1", "vm-2"]
    assert all(len(s["pci_requests"][0]["devices"]) == 1 for s in listed)
    # The three that did not fit left nothing: no server, no request, no port.
    assert _counts(api) == {"servers": 2, "ports": 2, "server_pci_requests": 2}
    (refused,) = [m for kind, m in _events(api) if kind == "servers-refused"]
    assert refused == ("project p1: 2 of the 5 servers vm-1 ... vm-5 were created "
                       "(max_count 5): no host fits vm-3 ... vm-5 besides")


def test_min_count_of_a_max_count_is_all_or_nothing(cloud: tuple[Api, str]) -> None:
    api, member = cloud
    answer = api.call("POST", f"{PROJECT}/servers", member, expect=409, json={"server": {
        "name": "vm", "flavorRef": "m1.gpu", "min_count": 3, "max_count": 4}})
    message = answer.json()["error"]["message"]
    assert message.startswith("none of the 4 servers vm-1 ... vm-4 was created: VM 3 of 4 "
                              "(at least 3 must be placed): ")
    assert _counts(api) == {"servers": 0, "ports": 0, "server_pci_requests": 0}
    assert _owners(api) == [None, None]
    placed = api.ok("POST", f"{PROJECT}/servers", member, json={"server": {
        "name": "vm", "flavorRef": "m1.gpu", "min_count": 2, "max_count": 4}})["servers"]
    assert [s["name"] for s in placed] == ["vm-1", "vm-2"]


def test_return_reservation_id_answers_it_alone(cloud: tuple[Api, str]) -> None:
    api, member = cloud
    answer = api.ok("POST", f"{PROJECT}/servers", member, json={"server": {
        "name": "vm", "flavorRef": "m1.gpu", "min_count": 2, "return_reservation_id": True}})
    assert list(answer) == ["reservation_id"]
    reservation = answer["reservation_id"]
    assert reservation.startswith("r-")
    created = [m for kind, m in _events(api) if kind == "server-created"]
    assert sorted(created) == [f"server vm-{n} of project p1, flavor m1.gpu, reservation "
                               f"{reservation}" for n in (1, 2)]
    assert [s["name"] for s in api.ok("GET", f"{PROJECT}/servers", member)["servers"]] == [
        "vm-1", "vm-2"]


@pytest.mark.parametrize(("counts", "status", "message"), [
    ({"min_count": 3, "max_count": 2}, 400,
     "server.min_count 3 is more than max_count 2; give min_count <= max_count"),
    ({"max_count": 0}, 422, "server.max_count: Input should be greater than or equal to 1"),
    ({"max_count": 1001}, 422,
     "server.max_count: Input should be less than or equal to 1000"),
    ({"min_count": 1001}, 422,
     "server.min_count: Input should be less than or equal to 1000"),
])
def test_counts_out_of_bounds_are_refused_and_make_nothing(
        cloud: tuple[Api, str], counts: dict[str, int], status: int, message: str) -> None:
    api, member = cloud
    answer = api.call("POST", f"{PROJECT}/servers", member, expect=status, json={"server": {
        "name": "vm", "flavorRef": "m1.gpu", **counts}})
    assert answer.json()["error"]["message"].endswith(message)
    assert _counts(api) == {"servers": 0, "ports": 0, "server_pci_requests": 0}
    assert _owners(api) == [None, None]


def test_names_must_fit_with_the_max_count_suffix(cloud: tuple[Api, str]) -> None:
    api, member = cloud
    answer = api.call("POST", f"{PROJECT}/servers", member, expect=400, json={"server": {
        "name": "n" * 253, "flavorRef": "m1.gpu", "max_count": 10}})
    assert answer.json()["error"]["message"] == (
        "server.name is 253 characters; with max_count 10 the servers are named NAME-1 ... "
        "NAME-10, so it may have at most 252")
