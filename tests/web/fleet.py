"""Building a small fleet for tests: simulated hosts reported by the real agent, servers
placed by the real scheduler, and a host whose agent went silent."""

from __future__ import annotations

import time
from collections.abc import Iterable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import select

from passthru.controller.hosts.reports import heartbeat, mark_silent_hosts_down
from passthru.controller.scheduler.service import Scheduler
from passthru.controller.store.db import Store
from passthru.controller.store.mapping import request_from_row
from passthru.controller.store.models import PciRequestRow, ServerRow, utcnow
from passthru.host.agent import Agent
from passthru.host.config import host_config_from, offered
from passthru.host.link import HttpLink
from passthru.sim import HostProfile, build_sysfs

SILENCE = timedelta(hours=1)
PF = "0000:0a:00.0"
VF = "0000:0a:02.0"


def report_host(http: httpx.Client, name: str, profile: HostProfile, root: Path) -> None:
    """Build `profile` as a sysfs tree under `root` and let an agent report it as host
    `name`, through `http` (a client that carries a token allowed to report `name`)."""
    config = host_config_from({
        "host": name, "sysfs_root": str(build_sysfs(profile, root / name)),
        "pool_attrs": list(profile.pool_attrs),
        "pci_information": [dict(entry) for entry in profile.pci_information]})
    agent = Agent(scan=lambda: offered(config),
                  link=HttpLink(http, name), pool_attrs=config.pool_attrs)
    agent.report_once()


def place(store: Store, server_id: str) -> str:
    """Place a booted server with the scheduler and claim its devices; returns the host."""
    with store.read() as session:
        server = session.get(ServerRow, server_id)
        assert server is not None, server_id
        if server.host is not None:  # boot already ran the scheduler
            return server.host.name
        requests = [request_from_row(row) for row in session.scalars(
            select(PciRequestRow).where(PciRequestRow.server_uuid == server_id)
            .order_by(PciRequestRow.position))]
    scheduler = Scheduler(store)
    scheduler.load()
    return scheduler.schedule(server_id, requests).host


def heartbeats_written(http: httpx.Client, hosts: Iterable[str], wait: float = 60.0) -> None:
    """Wait until the controller has written every heart-beat its agents sent (it keeps
    those of hosts that are up in memory for a while): one still in memory would bring a
    `silence`d host back up once written. Each host heart-beats once more here, and the
    wait lasts until the store holds that one; the controller keeps only a host's latest
    heart-beat, so none older is left behind it. `http` carries an admin token."""
    deadline = time.monotonic() + wait
    for host in hosts:
        beat = datetime.fromisoformat(
            _ok(http.post(f"/v2/agent/hosts/{host}/heartbeat"))["last_heartbeat"])
        while (written := http.get(f"/v2/admin/os-hosts/{host}").json()["host"][
                "last_heartbeat"]) is None or datetime.fromisoformat(written) < beat:
            assert time.monotonic() < deadline, f"{host}'s heart-beat was never written"
            time.sleep(0.05)


def silence(store: Store, host: str, timeout: float = 180.0) -> None:
    """`host`'s last heart-beat was an hour ago; the controller's sweep marks it down."""
    with store.write() as session:
        heartbeat(session, host, now=utcnow() - SILENCE)
    with store.write() as session:
        assert mark_silent_hosts_down(session, timeout) == [host]


def vf(address: str) -> dict[str, Any]:
    """A VF of PF 0000:0a:00.0 on physnet1, as an agent reports it."""
    return {"address": address, "vendor_id": "8086", "product_id": "154c",
            "dev_type": "type-VF", "parent_addr": PF,
            "tags": {"e.physical_network": "physnet1"}}


def _ok(answer: httpx.Response) -> Any:
    assert answer.status_code < 300, answer.text
    return answer.json() if answer.content else None


def vf_history(http: httpx.Client, store: Store) -> None:
    """Host net-1 offers one VF on physnet1; project demo boots vm-a on it, deletes vm-a,
    then boots vm-b, which gets the same VF. `http` carries an admin token."""
    _ok(http.put("/v2/agent/hosts/net-1/inventory", json={"devices": [vf(VF)]}))
    _ok(http.post("/v2/admin/flavors", json={"flavor": {"name": "m1.small"}}))
    _ok(http.post("/v2/admin/networks", json={"network": {
        "name": "prod", "physical_network": "physnet1", "segmentation_id": 100}}))
    for name in ("vm-a", "vm-b"):
        server = _ok(http.post("/v2/demo/servers", json={"server": {
            "name": name, "flavorRef": "m1.small",
            "networks": [{"uuid": "prod", "vnic_type": "direct"}]}}))["server"]
        assert place(store, server["id"]) == "net-1"
        if name == "vm-a":
            _ok(http.delete("/v2/demo/servers/vm-a"))
