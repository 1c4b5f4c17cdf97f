"""SIGKILL `passthru serve` while clients write, restart it: every acknowledged write is
there, and nothing half-written is (a server has all its ports and requests or none)."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import httpx
import pytest
from sqlalchemy import create_engine, func, select, text
from sqlalchemy.orm import Session

from passthru.controller.store.models import EventRow, PciRequestRow, PortRow, ServerRow
from tests.support.live import LiveController, kill_mid_burst

WRITERS = 3
KILL_AFTER = 30  # acknowledged boots before the kill


def boot_until_refused(url: str, token: str, writer: int, acknowledged: list[str]) -> None:
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=url, headers=headers, timeout=10.0) as client:
        for index in range(10_000):
            name = f"w{writer}-{index}"
            body = {"server": {"name": name, "flavorRef": "m1", "networks": [
                {"uuid": "prod", "vnic_type": "direct"}, {"uuid": "prod"}]}}
            try:
                answer = client.post("/v2/admin/servers", json=body)
            except httpx.TransportError:
                return
            assert answer.status_code == 202, answer.text
            acknowledged.append(name)


@pytest.mark.slow
def test_a_killed_controller_loses_no_committed_row_and_keeps_no_half_one(
        db_url: str, tmp_path: Path) -> None:
    live = LiveController(tmp_path / "data", db_url)
    live.start()
    admin = httpx.Client(base_url=f"{live.url}/v2/admin",
                         headers={"Authorization": f"Bearer {live.admin_token}"})
    admin.post("/os-pci-flavors", json={"pci-flavor": {"name": "bigGPU"}}).raise_for_status()
    admin.post("/flavors", json={"flavor": {"name": "m1"}}).raise_for_status()
    admin.post("/flavors/m1/os-extra_specs", json={"extra_specs": {
        "pci_passthrough:pci_flavor": "2:bigGPU;1:bigGPU"}}).raise_for_status()
    admin.post("/networks", json={"network": {
        "name": "prod", "physical_network": "physnet1", "segmentation_id": 5}}
               ).raise_for_status()

    acknowledged = kill_mid_burst(
        live, partial(boot_until_refused, live.url, live.admin_token), WRITERS, KILL_AFTER)
    assert len(acknowledged) >= KILL_AFTER

    live.start()
    try:
        listed = admin.get("/servers").json()["servers"]
    finally:
        live.stop()
    assert set(acknowledged) <= {s["name"] for s in listed}

    engine = create_engine(db_url)
    with Session(engine) as session:
        servers = session.scalars(select(ServerRow)).all()
        requests = {uuid: n for uuid, n in session.execute(
            select(PciRequestRow.server_uuid, func.count()).group_by(PciRequestRow.server_uuid))}
        ports = {uuid: n for uuid, n in session.execute(
            select(PortRow.device_id, func.count()).group_by(PortRow.device_id))}
        created = set(session.scalars(select(EventRow.server)
                                      .where(EventRow.kind == "server-created")))
        if engine.dialect.name == "sqlite":
            assert session.execute(text("PRAGMA integrity_check")).scalar() == "ok"
    engine.dispose()
    assert {s.name for s in servers} == {s["name"] for s in listed}
    assert all(requests.get(s.uuid) == 3 for s in servers)  # 2 flavor requests + 1 direct nic
    assert all(ports.get(s.uuid) == 2 for s in servers)
    assert None not in ports  # no port a boot made outlived its unfinished server
    assert created == {s.uuid for s in servers}
