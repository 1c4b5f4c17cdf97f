"""Durable claims on a real SQLite store, with two scheduler replicas racing."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select, update

from passthru.controller.hosts.reports import report_full
from passthru.controller.ledger import changes_of
from passthru.controller.scheduler import NoValidHostError
from passthru.controller.scheduler.claim import ServerGoneError
from passthru.controller.scheduler.service import Scheduler
from passthru.controller.servers.release import delete_server
from passthru.controller.store.db import Store
from passthru.controller.store.mapping import new_request_row
from passthru.controller.store.models import (
    Base,
    DeviceRow,
    EventRow,
    HostRow,
    HostStatus,
    PciFlavorRow,
    PciFlavorSpecRow,
    ServerRow,
)
from passthru.pci.device import DeviceStatus, DevType, PciDevice
from passthru.pci.pool import DEFAULT_POOL_ATTRS
from passthru.pci.request import PciRequest
from tests.controller.scheduler.fleet import FLAVORS, gpu, gpus, nic, pf_port, vf_port
from tests.support.values import present


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    store = Store(f"sqlite:///{tmp_path / 'passthru.sqlite'}")
    Base.metadata.create_all(store.engine)
    with store.write() as session:
        for flavor in FLAVORS.values():
            session.add(PciFlavorRow(name=flavor.name, specs=[
                PciFlavorSpecRow(key=k, value=v) for k, v in flavor.spec.items()]))
    yield store
    store.close()


def report(store: Store, host: str, devices: list[PciDevice]) -> None:
    with store.write() as session:
        report_full(session, host, devices, DEFAULT_POOL_ATTRS)


def new_server(store: Store, requests: list[PciRequest], name: str = "vm") -> str:
    with store.write() as session:
        server = ServerRow(name=name, project="demo")
        server.requests = [new_request_row(r, i) for i, r in enumerate(requests)]
        session.add(server)
        session.flush()
        return server.uuid


def vm(store: Store, *requests: PciRequest, name: str = "vm") -> tuple[str, list[PciRequest]]:
    """A server in the store (its rows must exist before devices name it) and its requests."""
    return new_server(store, list(requests), name), list(requests)


def replica(store: Store) -> Scheduler:
    scheduler = Scheduler(store)
    scheduler.load()
    return scheduler


def devices_of(store: Store, owner: str | None = None) -> list[DeviceRow]:
    with store.read() as session:
        query = select(DeviceRow).order_by(DeviceRow.address)
        if owner is not None:
            query = query.where(DeviceRow.owner == owner)
        return list(session.scalars(query))


def test_a_claim_marks_devices_relatives_and_server_in_the_store(store: Store) -> None:
    report(store, "compute-1", [*nic(0, 2, "physnet1"), gpu(0)])
    port, gpu_request = vf_port("physnet1"), gpus(1)
    owner = new_server(store, [port, gpu_request])
    before = {row.address: row.generation for row in devices_of(store)}
    placement = replica(store).schedule(owner, [port, gpu_request])
    assert placement.host == "compute-1"
    by_address = {row.address: row for row in devices_of(store)}
    vf = by_address[placement.selection.devices[port.request_id][0].address]
    assert (vf.status, vf.owner, vf.request_id, vf.generation) == (
        DeviceStatus.CLAIMED, owner, port.request_id, before[vf.address] + 1)
    assert by_address["0000:40:00.0"].request_id == gpu_request.request_id
    assert by_address["0000:10:00.0"].status is DeviceStatus.UNAVAILABLE
    with store.read() as session:
        server = session.get(ServerRow, owner)
        assert server is not None and server.host is not None
        assert server.host.name == "compute-1"
        claimed = session.scalars(select(EventRow.device_address)
                                  .where(EventRow.kind == "device-claimed")).all()
    assert sorted(present(claimed)) == sorted(placement.selection.addresses)


def test_a_lost_race_moves_on_to_the_next_host(store: Store) -> None:
    report(store, "compute-1", [gpu(0)])
    report(store, "compute-2", [gpu(0)])
    first, second = replica(store), replica(store)
    winner = first.schedule(*vm(store, gpus(1)))
    # The second replica has not heard of that claim and tries the same host first.
    loser = second.schedule(*vm(store, gpus(1)))
    assert {winner.host, loser.host} == {"compute-1", "compute-2"}
    assert len({row.owner for row in devices_of(store)}) == 2


def test_after_the_last_lost_race_the_failure_says_what_is_missing(store: Store) -> None:
    report(store, "compute-1", [gpu(0)])
    report(store, "compute-2", [gpu(0)])
    first, second = replica(store), replica(store)
    for _ in range(2):
        first.schedule(*vm(store, gpus(1)))
    late, requests = vm(store, gpus(1))
    with pytest.raises(NoValidHostError, match=r"^no host has 1 free device of pci flavor "
                       r"bigGPU; none is free on any host that is up$"):
        second.schedule(late, requests)
    assert devices_of(store, late) == []


def test_an_inventory_change_since_the_read_fails_the_claim(store: Store) -> None:
    report(store, "compute-1", nic(0, 1, "physnet1"))
    scheduler = replica(store)
    # The operator re-wires the NIC to physnet2; the device's generation moves on.
    report(store, "compute-1", nic(0, 1, "physnet2"))
    owner, requests = vm(store, vf_port("physnet1"))
    with pytest.raises(NoValidHostError, match="physical_network physnet1; none is free on any host that is up"):
        scheduler.schedule(owner, requests)
    assert devices_of(store, owner) == []
    assert scheduler.schedule(*vm(store, vf_port("physnet2"))).host == "compute-1"


def test_a_host_that_went_down_in_the_store_is_not_claimed_on(store: Store) -> None:
    report(store, "compute-1", [gpu(0)])
    report(store, "compute-2", [gpu(0)])
    stale = replica(store)
    with store.write() as session:
        session.execute(update(HostRow).where(HostRow.name == "compute-1")
                        .values(status=HostStatus.DOWN))
    owner, requests = vm(store, gpus(1))
    assert stale.schedule(owner, requests).host == "compute-2"
    assert stale.index.hosts["compute-1"].up is False
    assert [row.host_id for row in devices_of(store, owner)] == [2]


def test_frees_by_another_replica_are_found_before_giving_up(store: Store) -> None:
    report(store, "compute-1", [gpu(0)])
    first = replica(store)
    owner, requests = vm(store, gpus(1))
    first.schedule(owner, requests)
    second = replica(store)  # it sees the GPU taken
    with store.write() as session:
        server = session.get(ServerRow, owner)
        assert server is not None
        delete_server(session, server)
    assert second.schedule(*vm(store, gpus(1))).host == "compute-1"


def test_multi_create_claims_all_vms_or_none(store: Store) -> None:
    report(store, "compute-1", [gpu(0), gpu(1)])
    report(store, "compute-2", [gpu(0)])
    scheduler = replica(store)
    vms = [vm(store, gpus(1)) for _ in range(4)]
    with pytest.raises(NoValidHostError, match=r"^VM 4 of 4"):
        scheduler.schedule_many(vms)
    assert all(row.status is DeviceStatus.AVAILABLE for row in devices_of(store))
    placements = scheduler.schedule_many(vms[:3])
    assert sorted(p.host for p in placements) == ["compute-1", "compute-1", "compute-2"]
    assert {row.owner for row in devices_of(store)} == {owner for owner, _ in vms[:3]}


def test_racing_replicas_never_share_a_device_or_break_pf_vf_exclusion(store: Store) -> None:
    for n in range(3):
        report(store, f"compute-{n}", nic(0, 3, "physnet1") + nic(1, 3, "physnet1"))
    replicas = [replica(store), replica(store)]
    kinds = [vf_port, vf_port, pf_port]
    vms = [vm(store, kinds[i % 3]("physnet1"), name=f"vm{i}") for i in range(24)]
    failures: list[Exception] = []

    def boot(worker: int) -> None:
        for owner, requests in vms[worker::4]:
            try:
                replicas[worker % 2].schedule(owner, requests)
            except NoValidHostError as error:
                failures.append(error)

    threads = [threading.Thread(target=boot, args=(w,)) for w in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    rows = devices_of(store)
    claimed = [row for row in rows if row.status is DeviceStatus.CLAIMED]
    assert len(claimed) + len(failures) == len(vms)
    assert len({row.owner for row in claimed}) == len(claimed)
    with store.read() as session:
        hosts = {h.id: h.name for h in session.scalars(select(HostRow))}
    in_use = {(hosts[row.host_id], row.address) for row in claimed}
    for row in claimed:
        if row.dev_type is DevType.VF:
            assert (hosts[row.host_id], row.parent_addr) not in in_use
    # Every device not claimed is blocked exactly when a relative is in use.
    for row in rows:
        if row.status is DeviceStatus.UNAVAILABLE:
            relatives_in_use = any(
                other.host_id == row.host_id and other.status is DeviceStatus.CLAIMED
                and (other.parent_addr == row.address or row.parent_addr == other.address)
                for other in rows)
            assert relatives_in_use


def test_a_server_deleted_before_its_claim_commits_gets_nothing(store: Store) -> None:
    report(store, "compute-1", [gpu(0), gpu(1)])
    scheduler = replica(store)
    owner, requests = vm(store, PciRequest(1, ("bigGPU",)))
    other, other_requests = vm(store, PciRequest(1, ("bigGPU",)), name="other")
    with store.write() as session:
        server = session.get(ServerRow, owner)
        assert server is not None
        delete_server(session, server)
    # All or none: the multi-create with the deleted server places neither.
    with pytest.raises(ServerGoneError, match=f"server {owner} was deleted"):
        scheduler.schedule_many([(other, other_requests), (owner, requests)])
    assert {d.status for d in devices_of(store)} == {DeviceStatus.AVAILABLE}
    assert devices_of(store, owner) == devices_of(store, other) == []
    # The index gave back its tentative claims: the other server still fits.
    assert scheduler.schedule(other, other_requests).host == "compute-1"


def test_a_scheduler_holding_no_devices_reads_them_for_each_decision(store: Store) -> None:
    report(store, "compute-1", nic(0, 2, "physnet1"))
    report(store, "compute-2", [gpu(0)])
    scheduler = Scheduler(store, loaded_devices=0)
    scheduler.load()
    held = lambda: {name for name, e in scheduler.index.hosts.items() if e.loaded}  # noqa: E731
    assert held() == set()  # start-up read counts only
    first = scheduler.schedule(*vm(store, vf_port("physnet1")))
    assert held() == set()
    second = scheduler.schedule(*vm(store, vf_port("physnet1")))
    assert first.host == second.host == "compute-1"
    assert set(first.selection.addresses).isdisjoint(second.selection.addresses)
    # Its VFs in use, the PF is not free: the counts say so with no device held.
    with pytest.raises(NoValidHostError):
        scheduler.schedule(*vm(store, pf_port("physnet1")))
    with store.write() as session:
        for owner in {row.owner for row in devices_of(store) if row.owner}:
            server = session.get(ServerRow, owner)
            assert server is not None
            delete_server(session, server)
        changes = changes_of(session)
    scheduler.apply(changes)
    assert held() == set()
    fresh = replica(store)
    assert counts(scheduler, "compute-1") == counts(fresh, "compute-1")
    assert scheduler.schedule(*vm(store, pf_port("physnet1"))).host == "compute-1"


def counts(scheduler: Scheduler, host: str) -> set[tuple[object, ...]]:
    return {(t.pool.key, t.signature, t.count, t.available, t.used) for t in scheduler.pool_tallies([host])[host]}
