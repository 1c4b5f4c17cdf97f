"""A controller killed between a boot's two transactions (create the rows, then claim)
leaves a server BUILD on no host, holding its ports: the build sweep, which runs as soon
as a controller starts, fails it and releases what it holds.

The first test makes that state exactly, with the create transaction itself, while no
controller runs; the second SIGKILLs a real `passthru serve` in a burst of boots and
deletes, and checks the store once a restarted controller has swept.
"""

from __future__ import annotations

import time
from datetime import timedelta
from functools import partial
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select, update

from passthru.controller.catalog.cache import Catalog
from passthru.controller.servers.boot import BootRequest, NicRequest, boot_server
from passthru.controller.store.db import Store
from passthru.controller.store.models import (
    DeviceRow,
    HostRow,
    PortRow,
    ServerRow,
    ServerStatus,
    utcnow,
)
from passthru.pci.binding import VnicType
from tests.controller.test_races import PROJECT, Live, create_catalog, ok, report_host
from tests.support.live import LiveController, kill_mid_burst

#: Generous: the sweep runs once the app is up, on a loaded 2-core machine; the first
#: periodic round (a quarter of the default heart-beat timeout) comes later than this.
SWEPT_WITHIN = 30.0


def wait_until_swept(store: Store) -> list[ServerRow]:
    """The servers, once none is BUILD on no host any more (or the time is up)."""
    deadline = time.monotonic() + SWEPT_WITHIN
    while True:
        with store.read() as session:
            servers = list(session.scalars(select(ServerRow)))
        stuck = [s for s in servers if s.status is ServerStatus.BUILD and s.host_id is None]
        if not stuck or time.monotonic() > deadline:
            return servers
        time.sleep(0.2)


@pytest.mark.slow
def test_a_boot_left_between_its_transactions_is_failed_at_start_up_and_releases_its_ports(
        db_url: str, tmp_path: Path) -> None:
    controller = LiveController(tmp_path / "data", db_url, ["--unplaced-grace", "60"])
    controller.start()
    live = Live(controller)
    create_catalog(live.admin)
    report_host(live.admin, controller.url)
    mine = ok(live.member.post("/ports", json={"port": {
        "network_id": "net1", "binding:vnic_type": "direct"}}))["port"]["id"]
    live.close()
    controller.stop()

    store = Store(db_url)
    with store.write() as session:  # the boot's first transaction, as `launch` runs it
        stuck = boot_server(session, Catalog(), BootRequest(
            name="stuck", project=PROJECT, flavor="m1",
            nics=(NicRequest(port=mine), NicRequest(network="net1", vnic_type=VnicType.DIRECT)))
        ).uuid
    with store.write() as session:  # ... and then the controller was gone for a while
        long_ago = utcnow() - timedelta(minutes=10)
        session.execute(update(ServerRow).where(ServerRow.uuid == stuck)
                        .values(created_at=long_ago, updated_at=long_ago))
    with store.read() as session:
        assert len(session.scalars(select(PortRow).where(PortRow.device_id == stuck)).all()) == 2

    controller.start()
    try:
        servers = wait_until_swept(store)
        with store.read() as session:
            ports = {p.id: p.device_id for p in session.scalars(select(PortRow))}
            owners = set(session.scalars(select(DeviceRow.owner).where(
                DeviceRow.owner.is_not(None))))
    finally:
        controller.stop()
        store.close()
    (server,) = servers
    assert (server.status, server.host_id) == (ServerStatus.ERROR, None)
    assert "never placed" in (server.fault or "")
    assert ports == {mine: None}  # the tenant's port unbound, the boot's own deleted
    assert owners == set()


WRITERS = 3
KILL_AFTER = 40  # acknowledged boots before the kill


def boot_and_delete(url: str, token: str, writer: int, acknowledged: list[str]) -> None:
    """Boot a server with a VF and a plain nic, delete every other one, until the
    controller is gone."""
    with httpx.Client(base_url=f"{url}/v2/{PROJECT}", timeout=30.0,
                      headers={"Authorization": f"Bearer {token}"}) as api:
        for index in range(10_000):
            try:
                answer = api.post("/servers", json={"server": {
                    "name": f"w{writer}-{index}", "flavorRef": "m1",
                    "networks": [{"uuid": "net1", "vnic_type": "direct"}, {"uuid": "net1"}]}})
                if answer.status_code != 202:
                    return
                acknowledged.append(answer.json()["server"]["id"])
                if index % 2 == 0:
                    api.delete(f"/servers/{acknowledged[-1]}")
            except httpx.TransportError:
                return


@pytest.mark.slow
def test_a_controller_killed_mid_burst_leaves_no_build_on_no_host_once_restarted(
        db_url: str, tmp_path: Path) -> None:
    # The burst is a member's flood on purpose: no rate limit cuts it short.
    controller = LiveController(tmp_path / "data", db_url, ("--rate-limit", "0"))
    controller.start()
    live = Live(controller)
    create_catalog(live.admin)
    report_host(live.admin, controller.url)
    token = str(live.member.headers["Authorization"]).removeprefix("Bearer ")
    live.close()
    acknowledged = kill_mid_burst(
        controller, partial(boot_and_delete, controller.url, token), WRITERS, KILL_AFTER)
    assert len(acknowledged) >= KILL_AFTER

    # Restarted with a short grace: whatever the kill left unplaced is past it by now.
    restarted = LiveController(controller.data_dir, db_url, ["--unplaced-grace", "1"])
    time.sleep(1.0)
    restarted.start()
    store = Store(db_url)
    try:
        servers = wait_until_swept(store)
        with store.read() as session:
            ports = list(session.scalars(select(PortRow)))
            held = session.execute(select(DeviceRow.owner, HostRow.id).join(
                HostRow, DeviceRow.host_id == HostRow.id).where(DeviceRow.owner.is_not(None))
                                   ).all()
    finally:
        restarted.stop()
        store.close()
    by_uuid = {s.uuid: s for s in servers}
    assert [s.name for s in servers if s.status is ServerStatus.BUILD and s.host_id is None
            ] == []
    # Ports: each bound to a server that is not deleted; none a boot made left unbound.
    assert all(p.device_id is not None for p in ports if p.created_by_boot)
    assert all(by_uuid[p.device_id].status is not ServerStatus.DELETED
               for p in ports if p.device_id is not None)
    # Devices: each held by a server being built or running on that host.
    for owner, host_id in held:
        assert owner is not None
        server = by_uuid[owner]
        assert server.status in (ServerStatus.BUILD, ServerStatus.ACTIVE), server.status
        assert server.host_id == host_id
