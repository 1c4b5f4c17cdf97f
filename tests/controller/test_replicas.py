"""Controller replicas racing on one store: 4 `passthru serve` processes on PostgreSQL (and
2 on one SQLite file) with concurrent clients booting and deleting VMs on a scarce fleet.

From the event history, replayed in id order: no device is ever claimed while held, and
a PF is never held together with one of its VFs; each boot got all its devices or none
(ERROR with the reason). When every VM is deleted, every device is free in the store, and
each replica's scheduler can hand out the whole fleet again: every GPU, and every PF (so
every VF free and every PF unblocked in its view).

SQLite serves several processes too: they share the file through WAL, and writers queue
for its lock (BEGIN IMMEDIATE with a busy timeout), so claims there never interleave.

The last test pins down, step by step, the PF/VF race the PostgreSQL run found.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select, text
from sqlalchemy.orm import Session

from passthru.controller.hosts.reports import heartbeat, report_full
from passthru.controller.scheduler.claim import claim_in_store
from passthru.controller.scheduler.snapshot import load_hosts
from passthru.controller.servers.release import delete_server
from passthru.controller.store.db import Store
from passthru.controller.store.mapping import new_request_row
from passthru.controller.store.migrate import upgrade
from passthru.controller.store.models import DeviceRow, ServerRow
from passthru.pci.device import DevType
from passthru.pci.fit import Selection
from passthru.pci.pool import DEFAULT_POOL_ATTRS
from passthru.pci.request import PciRequest
from tests.controller.replica_churn import (
    KINDS,
    NETWORKS,
    PROJECT,
    Agents,
    Boot,
    Churn,
    Cluster,
    check_answer,
    claim_events,
    create_catalog,
    host_devices,
    ok,
    outcomes,
    replay,
)
from tests.pci.builders import nic
from tests.pg import PostgresCluster

GPU = next(kind for kind in KINDS if kind.name == "gpu")
PF = next(kind for kind in KINDS if kind.name == "pf")


def fill_with_gpus(cluster: Cluster, token: str, replica: int, gpus: int) -> list[Boot]:
    """Through one replica, one multi-create that needs every GPU of the fleet; then
    delete those VMs again."""
    with cluster.client(replica, token, PROJECT) as api:
        created = ok(api.post("/servers", json={"server": {
            "name": f"fill-{replica}", "flavorRef": GPU.flavor, "min_count": gpus}}))
        boots = [check_answer(server, GPU, None) for server in created["servers"]]
        for boot in boots:
            ok(api.delete(f"/servers/{boot.server}"))
    return boots


def fill_with_pfs(cluster: Cluster, token: str, replica: int, hosts: int) -> list[Boot]:
    """Through one replica, per physical network one multi-create that needs every PF on
    it; then delete those VMs again. Only a replica whose view has every VF free and every
    PF unblocked again (the frees' relatives, through the ledger's change records or a
    read of the store) places them all."""
    boots: list[Boot] = []
    with cluster.client(replica, token, PROJECT) as api:
        for network, physnet in NETWORKS.items():
            count = hosts * sum(1 for d in host_devices()
                                if d.dev_type is DevType.PF and d.physical_network == physnet)
            created = ok(api.post("/servers", json={"server": {
                "name": f"pf-{replica}-{network}", "flavorRef": PF.flavor, "min_count": count,
                "networks": [{"uuid": network, "vnic_type": PF.vnic_type}]}}))
            boots += [check_answer(server, PF, network) for server in created["servers"]]
        for boot in boots:
            ok(api.delete(f"/servers/{boot.server}"))
    return boots


def assert_everything_free(admin: httpx.Client, hosts: int) -> None:
    devices = ok(admin.get("/os-pci-devices", params={"limit": 1000}))["pci_devices"]
    assert len(devices) == hosts * len(host_devices())
    held = [(d["host"], d["device"]["address"], d["device"]["status"], d["device"]["owner"])
            for d in devices if d["device"]["status"] != "available" or d["device"]["owner"]]
    assert held == []
    pools = ok(admin.get("/os-pci-stats", params={"limit": 1000}))["pci_stats"]
    assert [(p["host"], p["pool_id"]) for p in pools if (p["free"], p["used"]) != (p["count"], 0)
            ] == []
    assert sum(p["count"] for p in pools) == len(devices)
    assert ok(admin.get("/servers", params={"all_projects": True, "limit": 1000}))["servers"] == []
    assert ok(admin.get("/ports", params={"all_projects": True}))["ports"] == []


def churn_and_check(root: Path, db_url: str, *, replicas: int, clients: int, boots: int,
                    hosts: int, hold: int) -> None:
    cluster = Cluster(root, db_url, replicas)
    cluster.start()
    try:
        with cluster.admin() as admin:
            create_catalog(admin)
            member = ok(admin.post("/tokens", json={"token": {"project": PROJECT}}))["token"]
        agents = Agents(cluster, hosts)
        for number, host in enumerate(agents.hosts):
            agents.report(host, number)
        with ThreadPoolExecutor(1) as beating:
            agents_done = beating.submit(agents.run)
            try:
                answers = Churn(cluster, member, boots, clients, hold).run()
            finally:
                agents.stop.set()
            agents_done.result()
        assert len(answers) == boots
        tally = outcomes(answers)
        # Scarce enough that boots failed.
        assert sum(t["ERROR"] for t in tally.values()) > 0, tally

        gpus = sum(1 for d in host_devices() if d.vendor_id == "10de") * hosts
        for replica in range(replicas):
            answers += fill_with_gpus(cluster, member, replica, gpus)
            answers += fill_with_pfs(cluster, member, replica, hosts)
        # Every kind was placed: in the churn, or for GPUs and PFs in the fills. A replica
        # sees the other's frees only at its next resync (scheduler.service), so on a
        # loaded machine the churn can find the few GPUs held all along.
        tally = outcomes(answers)
        assert all(t["BUILD"] > 0 for t in tally.values()), tally

        with cluster.admin(replicas - 1) as admin:
            history = replay(claim_events(admin, agents.hosts))
            assert history.problems == []
            assert history.holders == {}
            assert {b.server: b.devices for b in answers if b.devices} == history.claimed
            assert_everything_free(admin, hosts)
    finally:
        cluster.stop()


@pytest.mark.postgres
@pytest.mark.slow
def test_four_replicas_on_postgresql_never_give_a_device_two_owners(
        postgres: PostgresCluster, tmp_path: Path) -> None:
    churn_and_check(tmp_path, postgres.new_database(), replicas=4, clients=16, boots=2000,
                    hosts=8, hold=4)


@pytest.mark.slow
def test_two_replicas_on_one_sqlite_file_never_give_a_device_two_owners(
        tmp_path: Path) -> None:
    churn_and_check(tmp_path, f"sqlite:///{tmp_path / 'shared.sqlite'}", replicas=2,
                    clients=8, boots=400, hosts=4, hold=4)


def test_the_history_replay_finds_two_owners_and_a_pf_held_with_its_vf() -> None:
    """The checker itself: it must see the violations it is there to find."""
    pf, vf = "0000:10:00.0", "0000:10:02.0"

    def event(number: int, kind: str, device: str, server: str) -> dict[str, object]:
        return {"id": number, "kind": kind, "host": "h", "device": device, "server": server}

    history = replay([event(1, "device-claimed", vf, "a"), event(3, "device-claimed", vf, "b"),
                      event(2, "device-claimed", pf, "c"), event(4, "device-freed", vf, "c")])
    assert [problem.split(":")[0] for problem in history.problems] == [
        "event 2", "event 3", "event 3", "event 4"]  # PF/VF; two owners, PF/VF; not holder
    assert history.holders == {("h", pf): "c"}


def _server_asking(store: Store, request: PciRequest) -> str:
    with store.write() as session:
        server = ServerRow(name="vm", project=PROJECT, requests=[new_request_row(request, 0)])
        session.add(server)
        session.flush()
        return server.uuid


def _claim(session: Session, owner: str, request: PciRequest, address: str) -> None:
    """Claim the device at `address` of host h for `owner`, as the scheduler would."""
    host = next(load_hosts(session, ["h"]))
    devices = {d.address: d for pool in host.pools for d in pool.devices}
    claim_in_store(session, host, Selection({request.request_id: (devices[address],)}, None),
                   owner)


def _wait_until_blocked(store: Store, worker: threading.Thread, waiters: int) -> None:
    """Until `worker` ended or `waiters` sessions of the database wait for a lock."""
    waiting = text("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                   " AND wait_event_type = 'Lock'")
    # Autocommit: pg_stat_activity is read once per transaction, so each poll needs its own.
    with store.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as watcher:
        while worker.is_alive() and watcher.execute(waiting).scalar_one() < waiters:
            worker.join(0.01)


@pytest.mark.postgres
def test_a_vf_claimed_while_its_sibling_is_freed_keeps_the_pf_blocked(
        postgres: PostgresCluster) -> None:
    """A's delete frees the only VF of a PF in use while B's claim of another VF of the
    PF is in flight, both queued behind a third transaction on the host (a heart-beat):
    the PF must stay unavailable, or a PF boot could take it next to B's VF."""
    store = Store(postgres.new_database())
    upgrade(store.engine)
    pf, first, second = (d.address for d in nic(0, 2, "physnet1"))
    with store.write() as session:
        report_full(session, "h", nic(0, 2, "physnet1"), DEFAULT_POOL_ATTRS)
    asks = [PciRequest(1, (), physical_network="physnet1", dev_type=DevType.VF)
            for _ in range(2)]
    a, b = (_server_asking(store, request) for request in asks)
    with store.write() as session:
        _claim(session, a, asks[0], first)

    def delete_a() -> None:
        with store.write() as session:
            delete_server(session, session.get_one(ServerRow, a))

    def claim_b() -> None:
        with store.write() as session:
            _claim(session, b, asks[1], second)

    workers = [threading.Thread(target=delete_a), threading.Thread(target=claim_b)]
    with store.write() as session:
        heartbeat(session, "h")
        for waiters, worker in enumerate(workers, 1):
            worker.start()
            _wait_until_blocked(store, worker, waiters)
    for worker in workers:
        worker.join()
    with store.read() as session:
        status = dict(session.execute(select(DeviceRow.address, DeviceRow.status)).all())
    store.close()
    assert (status[first], status[second], status[pf]) == ("available", "claimed",
                                                           "unavailable")
