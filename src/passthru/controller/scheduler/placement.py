"""Placement: one host whose devices satisfy every request of a VM at once.

The decision walks only hosts that can possibly fit: it takes the VM's most selective
hard request, walks the hosts that have enough for it in weigher order, checks each other
request's count with a dict lookup, and only then runs the exact `select_devices` on the
host. The counts are necessary conditions, never sufficient ones, so the exact check
decides and no host that fits is ever skipped.

NUMA: a VM is NUMA-bound when any of its requests has a policy other than `legacy`
(Nova only applies PCI NUMA policies to VMs with a NUMA topology; here asking for one
is what gives the VM its topology). A NUMA-bound VM is one cell: each NUMA node of the
host is tried in turn as that cell, and every request — `legacy` ones included — is
then held to its policy relative to that node. A host that knows no NUMA node cannot
take a NUMA-bound VM. A VM with dedicated CPUs (`hw:cpu_policy=dedicated`) is NUMA-bound
too, as in Nova: its CPUs are pinned on the node it sits on.

Room: every candidate host must also have room for the VM's vCPUs, memory and disk (and,
for dedicated CPUs, enough unpinned CPUs on the VM's node); that check is a few integer
comparisons per host and runs before the exact device check. When no host fits, hosts
whose devices would have fitted but that lacked room are looked for first, so that the
error says what was short ("no host has room for 8 vCPUs, ...; closest: ...").

Devices: only a host that passed the counts and has room is loaded (`HostIndex.loaded`)
for the exact check (if loading it moves the rankings, the walk starts again), so a
decision reads the devices of the host it picks and of the few that the counts let
through wrongly. The error path reads none: a host whose devices are not loaded is
taken to fit its devices when its counts say so (the counts are exact for all but NUMA,
socket and PF/VF combinations), which can only make the error speak of room where the
exact check would have spoken of devices.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from itertools import chain

from passthru.controller.enums import Weigher
from passthru.controller.scheduler.index import HostEntry, HostIndex
from passthru.controller.scheduler.shapes import Locality, Ranking
from passthru.errors import NoCapacityError
from passthru.pci.fit import PoolFilter, Selection, select_devices
from passthru.pci.request import Criteria, NumaPolicy, PciRequest
from passthru.pci.resources import CpuPolicy, Usage, VmSize, shortfall

#: What a VM takes when the caller does not say: a server row's defaults.
DEFAULT_SIZE = VmSize()


class NoValidHostError(NoCapacityError):
    """No host can take the VM; the message names the request and the closest host."""

    def __init__(self, message: str, request: PciRequest | None = None,
                 closest: str | None = None) -> None:
        super().__init__(message)
        self.request = request
        self.closest = closest


@dataclass(frozen=True, slots=True)
class Placement:
    """A host and the devices the VM gets there; the NUMA node of a NUMA-bound VM and the
    host CPUs its dedicated vCPUs are pinned to; and the size counted against the host."""

    host: str
    selection: Selection
    size: VmSize = DEFAULT_SIZE
    numa_node: int | None = None
    cpus: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class _Demand:
    """The hard requests of one criteria and locality, which draw on the same devices."""

    example: PciRequest
    need: int
    ranking: Ranking

    def selectivity(self) -> int:
        return self.ranking.hosts_with_at_least(self.need)

    def met_by(self, host: str) -> bool:
        return self.ranking.count.get(host, 0) >= self.need

    def describe(self) -> str:
        count, rest = replace(self.example, count=self.need).describe().split(" ", 1)
        return f"{count} free {rest}{self.ranking.locality.phrase()}"


def numa_bound(requests: Sequence[PciRequest], size: VmSize = DEFAULT_SIZE) -> bool:
    return (size.cpu_policy is CpuPolicy.DEDICATED
            or any(r.numa_policy is not NumaPolicy.LEGACY for r in requests))


def fit(entry: HostEntry, requests: Sequence[PciRequest], serves: PoolFilter,
        bound: bool, size: VmSize | None = DEFAULT_SIZE) -> Placement | None:
    """The exact check on one host, trying each NUMA node as the cell of a bound VM: room
    for `size` there (None: devices only), then the devices."""
    pools = entry.pools
    for node in entry.numa_nodes if bound else (None,):
        if size is not None and entry.room(size, node) is not None:
            continue
        cells = frozenset((node,)) if node is not None else None
        selection = select_devices(pools, requests, serves, numa_cells=cells,
                                   socket_of=entry.socket_of if bound else None)
        if selection is not None:
            if size is None:
                return Placement(entry.name, selection, numa_node=node)
            return Placement(entry.name, selection, size, node, entry.cpus_for(size, node))
    return None


def place(index: HostIndex, requests: Sequence[PciRequest], *,
          weigher: Weigher = Weigher.PACK, exclude: frozenset[str] = frozenset(),
          size: VmSize = DEFAULT_SIZE) -> Placement:
    """The best host for one VM of `size` and the devices it gets there; nothing is
    claimed."""
    bound = numa_bound(requests, size)
    demands = _demands(index, requests, bound)
    placement = _walk(index, demands, requests, bound, weigher, exclude, size)
    while isinstance(placement, _Again):
        placement = _walk(index, demands, requests, bound, weigher, exclude, size)
    if placement is not None:
        return placement
    raise (_no_room(index, demands, requests, bound, weigher, size)
           or _explain(index, demands, requests, bound, exclude))


class _Again:
    """`_walk`'s answer when loading a host moved the rankings it walks."""


_AGAIN = _Again()


def _walk(index: HostIndex, demands: list[_Demand], requests: Sequence[PciRequest],
          bound: bool, weigher: Weigher, exclude: frozenset[str], size: VmSize
          ) -> Placement | _Again | None:
    """The first candidate that fits (None: none does), or _AGAIN: the store had moved
    on under a host that was loaded, so the walk starts again over the rankings now (a
    host loaded does not move again, so this ends)."""
    for host in _candidates(index, demands, requests, bound, weigher, exclude):
        entry = index.hosts[host]
        # The cheap check first, before any device is read: room (on some node).
        if bound:
            if all(entry.room(size, node) is not None for node in entry.numa_nodes):
                continue
        elif entry.room(size) is not None:
            continue
        if requests:
            moves = index.moves
            entry = index.loaded(host)
            if index.moves != moves:
                return _AGAIN
        placement = fit(entry, requests, index.pool_filter(entry, requests), bound, size)
        if placement is not None:
            return placement
    return None


def place_many(index: HostIndex, vms: Sequence[tuple[str, Sequence[PciRequest]]], *,
               weigher: Weigher = Weigher.PACK, exclude: frozenset[str] = frozenset(),
               sizes: Sequence[VmSize] | None = None) -> list[Placement]:
    """Place every (owner, requests) VM, each of its size in `sizes` (default: a server
    row's defaults), or none: each placement is claimed in the index so the next VM sees
    it; if one fails, all of them are released again."""
    placed: list[tuple[str, Placement]] = []
    try:
        for number, (owner, requests) in enumerate(vms, 1):
            size = sizes[number - 1] if sizes is not None else DEFAULT_SIZE
            try:
                placement = place(index, requests, weigher=weigher, exclude=exclude,
                                  size=size)
            except NoValidHostError as error:
                if len(vms) == 1:
                    raise
                raise NoValidHostError(f"VM {number} of {len(vms)}: {error}", error.request,
                                       error.closest) from None
            index.claim(placement.host, placement.selection, owner, placement.size,
                        placement.cpus)
            placed.append((owner, placement))
    except BaseException:
        for owner, placement in reversed(placed):
            index.free(placement.host, owner)
        raise
    return [placement for _, placement in placed]


def _demands(index: HostIndex, requests: Sequence[PciRequest], bound: bool) -> list[_Demand]:
    grouped: dict[tuple[Criteria, Locality], tuple[PciRequest, int]] = {}
    for request in requests:
        if request.soft:
            continue
        key = (request.criteria, Locality.of(request, bound))
        example, need = grouped.get(key, (request, 0))
        grouped[key] = (example, need + request.count)
    return [_Demand(example, need, index.ranking(*key))
            for key, (example, need) in grouped.items()]


def _candidates(index: HostIndex, demands: list[_Demand], requests: Sequence[PciRequest],
                bound: bool, weigher: Weigher, exclude: frozenset[str]) -> Iterator[str]:
    """Hosts that may fit, best first: those with enough for the most selective request
    that also have enough for each other one (or, with no hard request, any host up)."""
    if demands:
        primary = min(demands, key=_Demand.selectivity)
        others = [d for d in demands if d is not primary]
        candidates = primary.ranking.walk(primary.need, weigher.fewest_first)
    else:
        others = []
        candidates = _anywhere(index, requests, bound, weigher)
    return (host for host in candidates
            if host not in exclude and all(d.met_by(host) for d in others))


def _no_room(index: HostIndex, demands: list[_Demand], requests: Sequence[PciRequest],
             bound: bool, weigher: Weigher, size: VmSize) -> NoValidHostError | None:
    """The refusal when some host has the devices but none has room; None when no host
    has the devices either (the device explanation then says what is missing)."""
    short: dict[str, tuple[str, Usage, int | None]] = {}
    # Hosts already tried are read again since, so what they lack is current: they count
    # here (a lost race for room is explained by the room that is left).
    for host in _candidates(index, demands, requests, bound, weigher, frozenset()):
        entry = index.hosts[host]
        if host in short:
            continue  # a host is walked again for each soft request it may serve
        if entry.loaded:
            placement = fit(entry, requests, index.pool_filter(entry, requests), bound, None)
            fits, node = placement is not None, placement.numa_node if placement else None
        else:  # taken to fit by its counts (see the module's docstring)
            fits, node = True, entry.numa_nodes[0] if bound and entry.numa_nodes else None
        if fits or (bound and not entry.numa_nodes):
            # (A host that knows no NUMA node fits no bound VM; its room says why.)
            why = entry.room(size, node)
            if why is not None:
                short[host] = (why, entry.usage, node)
    if not short:
        return None
    wanted = f"no host has room for {size.describe()}"
    capacities = {host: index.hosts[host].capacity for host in short}
    counted = {host: c for host, c in capacities.items() if c is not None}
    if len(counted) == len(short):
        too_small = {host: shortfall(c, Usage(), size, short[host][2])
                     for host, c in counted.items()}
        if all(too_small.values()):
            host = max(counted, key=lambda h: (counted[h].vcpus, counted[h].ram_mb))
            return NoValidHostError(
                f"{wanted}: the flavor is larger than any host (the largest, {host}, has "
                f"{counted[host].vcpus} vCPUs, {counted[host].ram_mb} MiB memory and "
                f"{counted[host].disk_gb} GB disk in all)", closest=host)

    def free(host: str) -> tuple[int, int, int]:
        capacity, usage = capacities[host], short[host][1]
        if capacity is None:
            return (0, 0, 0)
        return (capacity.vcpus - usage.vcpus, capacity.ram_mb - usage.ram_mb,
                capacity.disk_gb - usage.disk_gb)

    host = max(short, key=free)
    return NoValidHostError(f"{wanted}; closest: {host} {_has(short[host][0])}", closest=host)


def _has(why: str) -> str:
    return why if why.startswith(("has ", "reports ")) else f"has {why}"


def _anywhere(index: HostIndex, requests: Sequence[PciRequest], bound: bool,
              weigher: Weigher) -> Iterator[str]:
    """Candidates for a VM with no hard request: hosts with what its soft requests want
    first, then any host that is up."""
    preferred = (index.ranking(r.criteria, Locality.of(r, bound))
                 .walk(r.count, weigher.fewest_first) for r in requests)
    return chain(chain.from_iterable(preferred),
                 (name for name, entry in index.hosts.items() if entry.up))


def _closest(ranking: Ranking, exclude: frozenset[str]) -> tuple[str, int] | None:
    for count in sorted(ranking.buckets, reverse=True):
        for host in ranking.buckets[count]:
            if host not in exclude:
                return host, count
    return None


def _explain(index: HostIndex, demands: list[_Demand], requests: Sequence[PciRequest],
             bound: bool, exclude: frozenset[str]) -> NoValidHostError:
    if not demands:
        untried = " that was not tried already" if exclude else ""
        if bound and any(e.up and h not in exclude for h, e in index.hosts.items()):
            return NoValidHostError(f"no host that is up{untried} knows its NUMA nodes, "
                                    "which a NUMA-bound VM needs")
        return NoValidHostError(f"no host is up{untried}")
    demands = sorted(demands, key=_Demand.selectivity)
    for demand in demands:
        closest = _closest(demand.ranking, exclude)
        if closest is None or closest[1] < demand.need:
            where = (f"closest: {closest[0]} has {closest[1]}" if closest
                     else "none is free on any host that is up")
            return NoValidHostError(f"no host has {demand.describe()}; {where}",
                                    demand.example, closest[0] if closest else None)
    primary, others = demands[0], demands[1:]
    host, met = max(((h, sum(d.met_by(h) for d in others))
                     for h in primary.ranking.walk(primary.need, True) if h not in exclude),
                    key=lambda item: item[1])
    together = " with the VM on one NUMA node" if bound else ""
    wanted = "; ".join(r.describe() for r in requests if not r.soft)
    if met == len(others):
        why = f"{host} has enough for each request alone, but not for all of them together"
    else:
        why = f"{host} has enough for {met + 1} of the {len(demands)} requests"
    return NoValidHostError(f"no host can give all of the VM's PCI requests at once{together} "
                            f"({wanted}); closest: {why}", primary.example, host)
