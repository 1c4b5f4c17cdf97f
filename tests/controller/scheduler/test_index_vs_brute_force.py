"""The index never loses a host that fits, and stays current through every kind of change.

Random fleets go through random claims, frees, hosts going down and up, inventory
reports, and hosts' devices dropped from memory (to be read again from a stand-in for the
store when a decision or a claim needs them). At every step placement must agree with a brute-force scan of every host with
the core's `select_devices` and `shortfall` (hosts have random capacities, VMs random
sizes, some with dedicated CPUs), and every ranking must equal one built from scratch.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import replace

from hypothesis import event, given, settings
from hypothesis import strategies as st

from passthru.controller.enums import Weigher
from passthru.controller.scheduler import HostIndex, NoValidHostError, place
from passthru.controller.scheduler.index import HostEntry
from passthru.controller.scheduler.shapes import Locality
from passthru.pci.device import PciDevice
from passthru.pci.fit import flavor_filter, select_devices
from passthru.pci.pool import Pool, build_pools
from passthru.pci.request import Criteria, NumaPolicy, PciRequest
from passthru.pci.resources import Capacity, CpuPolicy, VmSize, shortfall
from tests.controller.scheduler.fleet import (
    FLAVORS,
    gpu,
    gpus,
    mlx_nic,
    nic,
    pf_port,
    vf_port,
)

numa = st.sampled_from([0, 1, None])
physnet = st.sampled_from(["physnet1", "physnet2"])
policy = st.sampled_from(list(NumaPolicy))


@st.composite
def hosts(draw: st.DrawFn) -> list[PciDevice]:
    devices: list[PciDevice] = []
    for n, (product, node) in enumerate(draw(st.lists(
            st.tuples(st.sampled_from(["20b5", "20b6"]), numa), max_size=3))):
        devices.append(gpu(n, product, node))
    for n, (maker, net, vfs, node) in enumerate(draw(st.lists(
            st.tuples(st.sampled_from([nic, mlx_nic]), physnet, st.integers(0, 3), numa),
            max_size=2))):
        devices += maker(n, vfs, net, node)
    return devices


requests = st.one_of(
    st.builds(lambda count, names, p, soft: gpus(count, *names, policy=p, soft=soft),
              st.integers(1, 2), st.lists(st.sampled_from(["bigGPU", "smallGPU", "anyGPU"]),
                                          min_size=1, max_size=2, unique=True),
              policy, st.sampled_from([False, False, False, True])),
    st.builds(vf_port, physnet, st.sampled_from([None, "fastNIC"]), policy),
    st.builds(pf_port, physnet),
    st.builds(lambda count, net, p: PciRequest(count, (), physical_network=net, numa_policy=p),
              st.integers(1, 2), physnet, policy),
)

capacities = st.one_of(
    st.none(),
    st.builds(lambda vcpus, ram, cpus: Capacity(vcpus, ram, 20, {0: cpus[:2], 1: cpus[2:]}),
              st.integers(0, 8), st.sampled_from([512, 2048]),
              st.sampled_from([(), (0, 1, 2, 3), (0, 1, 2)])))
sizes = st.builds(VmSize, st.integers(1, 3), st.sampled_from([256, 1024]), st.integers(0, 10),
                  st.sampled_from([CpuPolicy.SHARED, CpuPolicy.SHARED, CpuPolicy.DEDICATED]))

operations = st.one_of(
    st.tuples(st.just("place"), st.lists(requests, min_size=0, max_size=3),
              st.sampled_from(list(Weigher)), sizes),
    st.tuples(st.just("free"), st.integers(0, 50)),
    st.tuples(st.just("toggle"), st.integers(0, 50)),
    st.tuples(st.just("report"), st.integers(0, 50), st.integers(0, 50)),
    st.tuples(st.just("unload"), st.integers(0, 60)),
)


def has_room(entry: HostEntry, size: VmSize, node: int | None) -> bool:
    if entry.capacity is None:  # not counted: any shared VM, no CPU to pin
        return size.cpu_policy is CpuPolicy.SHARED
    return shortfall(entry.capacity, entry.usage, size, node) is None


def fits(entry: HostEntry, pools: list[Pool], vm: list[PciRequest], size: VmSize) -> bool:
    """Brute force: the core's exact checks, with the documented NUMA-bound rule."""
    serves = flavor_filter(FLAVORS)
    if (size.cpu_policy is CpuPolicy.SHARED
            and all(r.numa_policy is NumaPolicy.LEGACY for r in vm)):
        return has_room(entry, size, None) and select_devices(pools, vm, serves) is not None
    nodes = set(entry.socket_of) | {p.numa_node for p in pools if p.numa_node is not None}
    return any(has_room(entry, size, node)
               and select_devices(pools, vm, serves, numa_cells=frozenset({node}),
                                  socket_of=entry.socket_of) is not None for node in nodes)


class Store:
    """Where the index reads a host's devices again once it dropped them: what they were
    when dropped (a copy each time, as a read of the store would give)."""

    def __init__(self) -> None:
        self.devices: dict[str, list[PciDevice]] = {}
        self.reads = 0

    def keep(self, index: HostIndex) -> None:
        """Before the index may drop devices: keep those it holds."""
        for name, entry in index.hosts.items():
            if entry.loaded:
                self.devices[name] = list(entry.devices.values())

    def load(self, name: str) -> list[Pool]:
        self.reads += 1
        return build_pools([replace(d) for d in self.devices[name]])

    def truth(self, index: HostIndex, name: str) -> list[PciDevice]:
        entry = index.hosts[name]
        return list(entry.devices.values()) if entry.loaded else self.devices[name]


def assert_rankings_current(index: HostIndex, store: Store,
                            seen: set[tuple[Criteria, Locality]]) -> None:
    fresh = HostIndex(FLAVORS)
    for name, entry in index.hosts.items():
        fresh.report(name, build_pools(store.truth(index, name)), socket_of=entry.socket_of,
                     up=entry.up)
    for criteria, locality in seen:
        assert index.ranking(criteria, locality).count == fresh.ranking(criteria, locality).count
        assert index.ranking(criteria, locality).buckets.keys() == fresh.ranking(
            criteria, locality).buckets.keys()
    for name in index.hosts:
        assert Counter(counts(index, name)) == Counter(counts(fresh, name))


def counts(index: HostIndex, name: str) -> list[tuple[object, ...]]:
    return [(t.pool.key, t.signature, t.count, t.available, t.used) for t in index.tallies(name)]


@settings(max_examples=150, deadline=None)
@given(fleet=st.lists(hosts(), min_size=1, max_size=4),
       sockets=st.sampled_from([{}, {0: 0, 1: 0}, {0: 0, 1: 1}]),
       room=st.lists(capacities, min_size=4, max_size=4),
       steps=st.lists(operations, min_size=4, max_size=12),
       unloaded=st.sampled_from([True, True, False]))
def test_placement_agrees_with_a_scan_of_every_host(
        fleet: list[list[PciDevice]], sockets: dict[int, int], room: list[Capacity | None],
        steps: list[tuple], unloaded: bool) -> None:
    names = [f"compute-{n}" for n in range(len(fleet))]
    store = Store()
    index = HostIndex(FLAVORS, loader=store.load)
    for name, devices, capacity in zip(names, fleet, room, strict=False):
        index.report(name, build_pools(devices), socket_of=sockets, capacity=capacity)
    if unloaded:  # as the service starts: counts only
        store.keep(index)
        index.trim(0)
    owners: list[tuple[str, str]] = []
    seen: set[tuple[Criteria, Locality]] = set()
    for number, step in enumerate(steps):
        if step[0] == "place":
            _, vm, weigher, size = step
            seen |= {(r.criteria, locality) for r in vm for locality in Locality}
            fitting = {name for name, entry in index.hosts.items()
                       if entry.up and fits(entry, build_pools(store.truth(index, name)), vm,
                                            size)}
            try:
                placement = place(index, vm, weigher=weigher, size=size)
            except NoValidHostError:
                assert not fitting
            else:
                assert placement.host in fitting
                entry = index.hosts[placement.host]
                before = entry.usage
                assert len(placement.cpus) == (
                    size.vcpus if size.cpu_policy is CpuPolicy.DEDICATED else 0)
                assert not set(placement.cpus) & before.pinned
                owner = f"vm{number}"
                index.claim(placement.host, placement.selection, owner, placement.size,
                            placement.cpus)
                assert entry.usage == before.plus(size, placement.cpus)
                owners.append((placement.host, owner))
        elif step[0] == "free" and owners:
            host, owner = owners.pop(step[1] % len(owners))
            index.free(host, owner)
        elif step[0] == "toggle":
            name = names[step[1] % len(names)]
            index.set_up(name, not index.hosts[name].up)
        elif step[0] == "report":
            # The agent reports again; a free device may have disappeared meanwhile.
            entry = index.hosts[names[step[1] % len(names)]]
            devices = list(store.truth(index, entry.name))
            free_ones = [d for d in devices if d.is_free]
            if free_ones:
                devices.remove(free_ones[step[2] % len(free_ones)])
            index.report(entry.name, build_pools(devices), socket_of=entry.socket_of,
                         up=entry.up, capacity=entry.capacity, usage=entry.usage)
        elif step[0] == "unload":
            # Drop devices down to a budget (none, one host's, ...), least recently used
            # first, as the service does after each decision.
            store.keep(index)
            untrimmed = {name: counts(index, name) for name in names}
            index.trim(step[1] % 30)
            assert {name: counts(index, name) for name in names} == untrimmed
        assert_rankings_current(index, store, seen)
    event("devices read again" if store.reads else "no device read again")
