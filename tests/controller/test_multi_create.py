"""A multi-create the hosts cannot take whole is refused and leaves nothing behind, on
SQLite and PostgreSQL (as Nova creates no server when min_count cannot be met); a single
server that no host fits is kept in ERROR with its fault."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from passthru.controller.app import create_app
from passthru.controller.models import PciRequestRow, PortRow, ServerRow
from passthru.controller.settings import Settings
from tests.controller.conftest import Api

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
