"""Host capacity in the durable claim, on SQLite and PostgreSQL: vCPUs, memory and disk
counted in the same conditional transaction as devices, dedicated CPUs pinned once,
refusals that say what was short, frees that give back exactly what was taken, and the
NUMA socket map taken from the reported CPUs."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from itertools import count
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select, update

from passthru.controller.agents.orders import lost, pending_orders, spawned
from passthru.controller.hosts.reports import heartbeat, report_full
from passthru.controller.scheduler import NoValidHostError
from passthru.controller.scheduler.service import Scheduler
from passthru.controller.servers.release import delete_server
from passthru.controller.store.db import Store
from passthru.controller.store.mapping import new_request_row
from passthru.controller.store.models import (
    CpuPinRow,
    EventRow,
    FlavorExtraSpecRow,
    FlavorRow,
    HostRow,
    HostStatus,
    PciFlavorRow,
    PciFlavorSpecRow,
    ServerRow,
    ServerStatus,
)
from passthru.pci.device import PciDevice
from passthru.pci.pool import DEFAULT_POOL_ATTRS
from passthru.pci.request import NumaPolicy, PciRequest
from passthru.pci.resources import (
    CPU_POLICY_KEY,
    Cpu,
    CpuPolicy,
    HostResources,
    NumaNode,
    Usage,
    VmSize,
)
from passthru.pci.work import OrderResult
from tests.controller.scheduler.fleet import FLAVORS, gpu, gpus

DEDICATED = CpuPolicy.DEDICATED


@pytest.fixture
def fleet(store: Store) -> Iterator[Store]:
    """The migrated store (SQLite and PostgreSQL) with the fleet's PCI flavors."""
    with store.write() as session:
        for flavor in FLAVORS.values():
            session.add(PciFlavorRow(name=flavor.name, specs=[
                PciFlavorSpecRow(key=k, value=v) for k, v in flavor.spec.items()]))
    yield store


def machine(cpus: int, *, nodes: int = 1, sockets: int | None = None, memory_mb: int = 4608,
            disk_gb: int = 100, ratio: float = 1.0,
            reserved: tuple[int, ...] = ()) -> HostResources:
    """`cpus` CPUs split evenly over `nodes` nodes (one socket each unless `sockets`),
    `memory_mb` in all of which 512 are the host's own."""
    per_node = cpus // nodes
    per_socket = nodes // (sockets or nodes)
    return HostResources(
        cpus=tuple(Cpu(n, n // per_node, n // per_node // per_socket) for n in range(cpus)),
        numa=tuple(NumaNode(node, memory_mb // nodes) for node in range(nodes)),
        disk_gb=disk_gb, cpu_allocation_ratio=ratio, reserved_cpus=reserved)


def report(store: Store, host: str, resources: HostResources | None,
           devices: list[PciDevice] | None = None) -> None:
    with store.write() as session:
        report_full(session, host, devices or [], DEFAULT_POOL_ATTRS, resources)


def new_server(store: Store, size: VmSize, requests: tuple[PciRequest, ...] = (),
               name: str = "vm") -> str:
    with store.write() as session:
        server = ServerRow(name=name, project="demo", vcpus=size.vcpus, ram_mb=size.ram_mb,
                           disk_gb=size.disk_gb)
        server.requests = [new_request_row(r, i) for i, r in enumerate(requests)]
        session.add(server)
        session.flush()
        return server.uuid


def boot(scheduler: Scheduler, size: VmSize, *requests: PciRequest, name: str = "vm") -> str:
    owner = new_server(scheduler.store, size, requests, name)
    scheduler.schedule(owner, list(requests), size)
    return owner


def delete(scheduler: Scheduler, owner: str) -> None:
    with scheduler.store.write() as session:
        hosts = delete_server(session, session.get_one(ServerRow, owner))
    scheduler.refresh(hosts)


def replica(store: Store) -> Scheduler:
    scheduler = Scheduler(store)
    scheduler.load()
    return scheduler


def used(store: Store, host: str = "compute-1") -> tuple[int, int, int]:
    with store.read() as session:
        row = session.scalars(select(HostRow).where(HostRow.name == host)).one()
        return row.vcpus_used, row.ram_mb_used, row.disk_gb_used


def pins(store: Store) -> dict[int, str]:
    with store.read() as session:
        return {pin.cpu: pin.server_uuid for pin in session.scalars(select(CpuPinRow))}


def test_a_report_stores_resources_and_capacity(fleet: Store) -> None:
    report(fleet, "compute-1", machine(8, ratio=4.0, reserved=(0, 1)))
    report(fleet, "old-agent", None)
    with fleet.read() as session:
        new, old = (session.scalars(select(HostRow).where(HostRow.name == name)).one()
                    for name in ("compute-1", "old-agent"))
        assert (new.vcpus_capacity, new.ram_mb_capacity, new.disk_gb_capacity) == (24, 4096, 100)
        assert new.resources is not None and len(new.resources["cpus"]) == 8
        assert (old.resources, old.vcpus_capacity, old.ram_mb_capacity) == (None, None, None)


def test_claims_stop_at_capacity_and_the_refusal_has_numbers(fleet: Store) -> None:
    report(fleet, "compute-1", machine(4))
    scheduler = replica(fleet)
    size = VmSize(2, 1024, 10)
    boot(scheduler, size)
    boot(scheduler, size)
    assert used(fleet) == (4, 2048, 20)
    late = new_server(fleet, size)
    with pytest.raises(NoValidHostError, match=r"^no host has room for 2 vCPUs, 1024 MiB memory,"
                       r" 10 GB disk; closest: compute-1 has 0 of 4 vCPUs free$"):
        scheduler.schedule(late, [], size)
    assert used(fleet) == (4, 2048, 20)


def test_a_flavor_larger_than_every_host_says_so(fleet: Store) -> None:
    report(fleet, "compute-1", machine(4))
    report(fleet, "compute-2", machine(8, memory_mb=8704))
    scheduler = replica(fleet)
    huge = VmSize(16, 1024)
    with pytest.raises(NoValidHostError, match=r"^no host has room for 16 vCPUs, 1024 MiB memory, "
                       r"0 GB disk: the flavor is larger than any host \(the largest, compute-2, "
                       r"has 8 vCPUs, 8192 MiB memory and 100 GB disk in all\)$"):
        scheduler.schedule(new_server(fleet, huge), [], huge)


def test_devices_on_a_full_host_are_refused_for_room_not_for_devices(fleet: Store) -> None:
    report(fleet, "gpu-host", machine(2), [gpu(0), gpu(1)])
    report(fleet, "roomy", machine(64, memory_mb=65536))
    scheduler = replica(fleet)
    boot(scheduler, VmSize(2, 512), gpus(1))
    with pytest.raises(NoValidHostError, match=r"^no host has room for 1 vCPUs, 512 MiB memory, "
                       r"0 GB disk; closest: gpu-host has 0 of 2 vCPUs free$"):
        boot(scheduler, VmSize(1, 512), gpus(1))
    # Without devices, the roomy host takes it.
    assert scheduler.schedule(new_server(fleet, VmSize(1)), [], VmSize(1)).host == "roomy"


def test_a_stale_replica_is_stopped_by_the_stores_condition(fleet: Store) -> None:
    report(fleet, "compute-1", machine(4))
    first, second = replica(fleet), replica(fleet)
    boot(first, VmSize(3, 512))
    # The second replica still thinks the host empty; the conditional update refuses it.
    owner = new_server(fleet, VmSize(2, 512))
    with pytest.raises(NoValidHostError, match="compute-1 has 1 of 4 vCPUs free"):
        second.schedule(owner, [], VmSize(2, 512))
    assert used(fleet) == (3, 512, 0)
    with fleet.read() as session:
        assert session.get_one(ServerRow, owner).host_id is None


def test_a_stale_replicas_batch_goes_where_the_room_is_once_the_store_refused_it(
        fleet: Store) -> None:
    # The batch's room is counted for all its servers at once: the store does not say
    # which host ran out, so every host of the batch is read again before the next try.
    for host in ("compute-1", "compute-2", "compute-3"):
        report(fleet, host, machine(4))
    first, second = replica(fleet), replica(fleet)
    filler = new_server(fleet, VmSize(3, 512), name="filler")
    first.schedule_many([(filler, [])], [VmSize(3, 512)], exclude={"compute-1", "compute-3"})
    owners = [new_server(fleet, VmSize(3, 512), name=f"vm-{n}") for n in (1, 2)]
    placements = second.schedule_many([(owner, []) for owner in owners],
                                      [VmSize(3, 512)] * 2)
    assert sorted(p.host for p in placements) == ["compute-1", "compute-3"]
    assert [used(fleet, f"compute-{n}")[0] for n in (1, 2, 3)] == [3, 3, 3]


def test_dedicated_cpus_are_never_shared_even_by_stale_replicas(fleet: Store) -> None:
    report(fleet, "compute-1", machine(4, nodes=2, ratio=4.0))
    first, second = replica(fleet), replica(fleet)
    pinned = VmSize(2, 512, cpu_policy=DEDICATED)
    one = boot(first, pinned)
    # The second replica picks the same CPUs; the pins' primary key refuses them and it
    # places the VM again on the other node.
    two = boot(second, pinned)
    assert pins(fleet) == {0: one, 1: one, 2: two, 3: two}
    with fleet.read() as session:
        rows = {s.uuid: s for s in session.scalars(select(ServerRow))}
        assert (rows[one].numa_node, rows[one].pinned_cpus) == (0, [0, 1])
        assert (rows[two].numa_node, rows[two].pinned_cpus) == (1, [2, 3])
    # Shared vCPUs still fit (16 vCPUs at ratio 4), dedicated ones have no CPU left.
    boot(first, VmSize(4, 512))
    with pytest.raises(NoValidHostError, match="closest: compute-1 has 0 host CPUs free to pin"):
        boot(second, VmSize(1, 512, cpu_policy=DEDICATED))
    delete(first, one)
    assert sorted(pins(fleet)) == [2, 3]
    assert boot(first, VmSize(2, 512, cpu_policy=DEDICATED)) in pins(fleet).values()


def test_a_host_without_resources_takes_shared_vms_but_counts_them(fleet: Store) -> None:
    report(fleet, "compute-1", None)
    scheduler = replica(fleet)
    for _ in range(3):
        boot(scheduler, VmSize(64, 10**6))
    assert used(fleet) == (192, 3 * 10**6, 0)
    with pytest.raises(NoValidHostError, match="compute-1 reports no CPUs to pin"):
        boot(scheduler, VmSize(1, cpu_policy=DEDICATED))


def test_a_report_below_what_is_used_keeps_the_vms_and_refuses_new_ones(fleet: Store) -> None:
    report(fleet, "compute-1", machine(8))
    scheduler = replica(fleet)
    owners = [boot(scheduler, VmSize(2, 512)) for _ in range(3)]
    report(fleet, "compute-1", machine(4))  # CPUs went offline
    scheduler.refresh(["compute-1"])
    with fleet.read() as session:
        placed = session.scalars(select(ServerRow.host_id).where(ServerRow.uuid.in_(owners)))
        assert None not in set(placed)
        message = session.scalars(select(EventRow.message).where(
            EventRow.kind == "host-resources").order_by(EventRow.id.desc())).first()
    assert message == ("capacity 4 vCPUs, 4096 MiB memory, 100 GB disk, below what its VMs "
                       "hold (6 vCPUs, 1536 MiB, 0 GB): they keep running, new VMs go elsewhere")
    with pytest.raises(NoValidHostError, match="compute-1 has 0 of 4 vCPUs free"):
        boot(scheduler, VmSize(1, 512))
    for owner in owners[:2]:
        delete(scheduler, owner)
    assert used(fleet) == (2, 512, 0)
    boot(scheduler, VmSize(2, 512))


def test_a_failed_spawn_then_a_delete_gives_back_once(fleet: Store) -> None:
    report(fleet, "compute-1", machine(4, nodes=2), [gpu(0, numa=1)])
    scheduler = replica(fleet)
    owner = boot(scheduler, VmSize(2, 1024, 5, DEDICATED), gpus(1, policy=NumaPolicy.REQUIRED))
    assert used(fleet) == (2, 1024, 5) and sorted(pins(fleet)) == [2, 3]
    with fleet.write() as session:
        spawned(session, "compute-1", OrderResult(owner, ok=False, fault="qemu said no"))
    assert used(fleet) == (0, 0, 0) and pins(fleet) == {}
    with fleet.write() as session:
        server = session.get_one(ServerRow, owner)
        assert (server.status, server.host_id, server.pinned_cpus) == (ServerStatus.ERROR,
                                                                       None, [])
        delete_server(session, server)
    assert used(fleet) == (0, 0, 0)


def test_a_lost_server_gives_back_its_room_and_pins(fleet: Store) -> None:
    report(fleet, "compute-1", machine(4))
    scheduler = replica(fleet)
    owner = boot(scheduler, VmSize(2, 1024, 5, DEDICATED))
    with fleet.write() as session:
        spawned(session, "compute-1", OrderResult(owner, ok=True, domain_xml="<domain/>"))
    assert used(fleet) == (2, 1024, 5) and sorted(pins(fleet)) == [0, 1]
    with fleet.write() as session:
        lost(session, "compute-1", owner, "the domain is gone")
    assert used(fleet) == (0, 0, 0) and pins(fleet) == {}


def test_a_spawn_order_names_the_node_and_the_pinned_cpus(fleet: Store) -> None:
    report(fleet, "compute-1", machine(8, nodes=2), [gpu(0, numa=1)])
    with fleet.write() as session:
        flavor = FlavorRow(name="pinned", vcpus=3, ram_mb=2048, extra=[
            FlavorExtraSpecRow(key=CPU_POLICY_KEY, value="dedicated")])
        session.add(flavor)
        session.flush()
        flavor_id = flavor.id
    size, request = VmSize(3, 2048, 0, DEDICATED), gpus(1)
    owner = new_server(fleet, size, (request,))
    with fleet.write() as session:
        session.execute(update(ServerRow).where(ServerRow.uuid == owner)
                        .values(flavor_id=flavor_id))
    replica(fleet).schedule(owner, [request], size)
    with fleet.read() as session:
        order = pending_orders(session, "compute-1")[0].spawn[0]
    # Dedicated CPUs make the VM NUMA-bound: it sits with its GPU on node 1.
    assert (order.vcpus, order.ram_mb, order.numa_node, order.pinned_cpus) == (
        3, 2048, 1, [4, 5, 6])


def test_the_socket_policy_uses_the_reported_socket_map(fleet: Store) -> None:
    # Two NUMA nodes on one socket (sub-NUMA clustering), a GPU on each.
    report(fleet, "snc", machine(8, nodes=2, sockets=1), [gpu(0, numa=0), gpu(1, numa=1)])
    scheduler = replica(fleet)
    assert scheduler.index.hosts["snc"].socket_of == {0: 0, 1: 0}
    request = gpus(2, policy=NumaPolicy.SOCKET)
    placement = scheduler.schedule(new_server(fleet, VmSize(), (request,)), [request])
    assert placement.host == "snc" and len(placement.selection.addresses) == 2
    # The same devices on a host whose nodes are two sockets do not do.
    report(fleet, "split", machine(8, nodes=2), [gpu(0, numa=0), gpu(1, numa=1)])
    scheduler.refresh(["split"])
    assert scheduler.index.hosts["split"].socket_of == {0: 0, 1: 1}
    again = gpus(2, policy=NumaPolicy.SOCKET)
    with pytest.raises(NoValidHostError, match="2 free devices of pci flavor bigGPU on one "
                       "socket; closest: split has 1"):
        scheduler.schedule(new_server(fleet, VmSize(), (again,)), [again])


# --- the property: concurrent boots and deletes never overcommit, and all comes back ---

_examples = count()
vm_sizes = st.tuples(st.integers(1, 4), st.sampled_from([256, 512, 1024, 2048]),
                     st.integers(0, 20), st.sampled_from([CpuPolicy.SHARED, CpuPolicy.SHARED,
                                                          DEDICATED]),
                     st.booleans())


def _check_accounting(store: Store, prefix: str) -> None:
    """Every host's use is the sum of the servers placed on it and within its capacity
    (ratios applied), and each of its pinned CPUs belongs to a server placed there. One
    statement, so that PostgreSQL reads it all from one snapshot."""
    placed = (ServerRow.host_id == HostRow.id) & (ServerRow.status != ServerStatus.DELETED)

    def held(column: Any) -> Any:
        return (select(func.coalesce(func.sum(column), 0)).where(placed)
                .correlate(HostRow).scalar_subquery())

    pins_total = (select(func.count()).select_from(CpuPinRow)
                  .where(CpuPinRow.host_id == HostRow.id).correlate(HostRow).scalar_subquery())
    pins_owned = (select(func.count()).select_from(CpuPinRow)
                  .join(ServerRow, ServerRow.uuid == CpuPinRow.server_uuid)
                  .where(CpuPinRow.host_id == HostRow.id, placed)
                  .correlate(HostRow).scalar_subquery())
    with store.read() as session:
        rows = session.execute(select(
            HostRow.name, HostRow.vcpus_used, HostRow.ram_mb_used, HostRow.disk_gb_used,
            held(ServerRow.vcpus), held(ServerRow.ram_mb), held(ServerRow.disk_gb),
            HostRow.vcpus_capacity, HostRow.ram_mb_capacity, HostRow.disk_gb_capacity,
            pins_total, pins_owned).where(HostRow.name.startswith(prefix))).all()
    for name, *use, v, r, d, cap_v, cap_r, cap_d, total, owned in rows:
        assert (name, *use) == (name, v, r, d)
        assert use[0] <= cap_v and use[1] <= cap_r and use[2] <= cap_d, name
        assert total == owned, name


@settings(max_examples=12, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(shapes=st.lists(st.tuples(st.integers(2, 6), st.sampled_from([1.0, 2.0]),
                                 st.booleans()), min_size=1, max_size=3),
       vms=st.lists(vm_sizes, min_size=2, max_size=14))
def test_concurrent_boots_and_deletes_never_exceed_capacity(
        fleet: Store, shapes: list[tuple[int, float, bool]],
        vms: list[tuple[int, int, int, CpuPolicy, bool]]) -> None:
    # The store lives across examples: the hosts of earlier ones go down, so that a
    # failed example does not leave its VMs in the way of the next.
    prefix = f"compute-{next(_examples)}-"
    with fleet.write() as session:
        session.execute(update(HostRow).values(status=HostStatus.DOWN))
    for n, (cpus, ratio, with_gpu) in enumerate(shapes):
        report(fleet, f"{prefix}{n}",
               machine(2 * cpus, nodes=2, ratio=ratio, memory_mb=512 + 1024 * cpus,
                       disk_gb=30),
               [gpu(0, numa=0), gpu(1, numa=1)] if with_gpu else [])
        with fleet.write() as session:
            heartbeat(session, f"{prefix}{n}")
    replicas = [replica(fleet), replica(fleet)]
    booted: list[tuple[Scheduler, str]] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def worker(number: int) -> None:
        try:
            for i, (vcpus, ram, disk, policy, wants_gpu) in enumerate(vms[number::3]):
                scheduler = replicas[(number + i) % 2]
                size = VmSize(vcpus, ram, disk, policy)
                requests = (gpus(1),) if wants_gpu else ()
                owner = new_server(fleet, size, requests)
                try:
                    scheduler.schedule(owner, list(requests), size)
                except NoValidHostError:
                    pass
                else:
                    with lock:
                        booted.append((scheduler, owner))
                _check_accounting(fleet, prefix)
                if i % 2:  # every other round deletes someone's VM, maybe another's
                    with lock:
                        victim = booted.pop(0) if booted else None
                    if victim is not None:
                        delete(replicas[number % 2], victim[1])
                        _check_accounting(fleet, prefix)
        except BaseException as error:  # surfaced below, in the test's own thread
            errors.append(error)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [repr(error) for error in errors] == []
    _check_accounting(fleet, prefix)
    for scheduler, owner in booted:
        delete(scheduler, owner)
    with fleet.read() as session:
        mine = HostRow.name.startswith(prefix)
        assert set(session.execute(select(HostRow.vcpus_used, HostRow.ram_mb_used,
                                          HostRow.disk_gb_used).where(mine))) == {(0, 0, 0)}
        assert session.scalar(select(func.count()).select_from(CpuPinRow).join(HostRow)
                              .where(mine)) == 0
    # Every replica, told of the frees, can place on an empty fleet again.
    for scheduler in replicas:
        scheduler.resync()
        assert {name: entry.usage for name, entry in scheduler.index.hosts.items()
                if name.startswith(prefix) and entry.usage != Usage()} == {}
