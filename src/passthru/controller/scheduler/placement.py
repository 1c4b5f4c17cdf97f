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
take a NUMA-bound VM.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from itertools import chain

from passthru.controller.scheduler.index import HostEntry, HostIndex
from passthru.controller.scheduler.shapes import Criteria, Locality, Ranking
from passthru.controller.scheduler.weighers import Weigher
from passthru.pci.claims import PoolFilter, Selection, select_devices
from passthru.pci.errors import PassthruError
from passthru.pci.request import NumaPolicy, PciRequest


class NoValidHostError(PassthruError):
    """No host can take the VM; the message names the request and the closest host."""

    def __init__(self, message: str, request: PciRequest | None = None,
                 closest: str | None = None) -> None:
        super().__init__(message)
        self.request = request
        self.closest = closest


@dataclass(frozen=True, slots=True)
class Placement:
    host: str
    selection: Selection


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


def numa_bound(requests: Sequence[PciRequest]) -> bool:
    return any(r.numa_policy is not NumaPolicy.LEGACY for r in requests)


def fit(entry: HostEntry, requests: Sequence[PciRequest], serves: PoolFilter,
        bound: bool) -> Selection | None:
    """The exact check on one host, trying each NUMA node as the cell of a bound VM."""
    pools = entry.pools
    if not bound:
        return select_devices(pools, requests, serves)
    for node in entry.numa_nodes:
        selection = select_devices(pools, requests, serves, numa_cells=frozenset((node,)),
                                   socket_of=entry.socket_of)
        if selection is not None:
            return selection
    return None


def place(index: HostIndex, requests: Sequence[PciRequest], *,
          weigher: Weigher = Weigher.PACK, exclude: frozenset[str] = frozenset()) -> Placement:
    """The best host for one VM and the devices it gets there; nothing is claimed."""
    bound = numa_bound(requests)
    demands = _demands(index, requests, bound)
    if demands:
        primary = min(demands, key=_Demand.selectivity)
        others = [d for d in demands if d is not primary]
        candidates = primary.ranking.walk(primary.need, weigher.fewest_first)
    else:
        others = []
        candidates = _anywhere(index, requests, bound, weigher)
    for host in candidates:
        if host in exclude or not all(d.met_by(host) for d in others):
            continue
        entry = index.hosts[host]
        selection = fit(entry, requests, index.pool_filter(entry, requests), bound)
        if selection is not None:
            return Placement(host, selection)
    raise _explain(index, demands, requests, bound, exclude)


def place_many(index: HostIndex, vms: Sequence[tuple[str, Sequence[PciRequest]]], *,
               weigher: Weigher = Weigher.PACK,
               exclude: frozenset[str] = frozenset()) -> list[Placement]:
    """Place every (owner, requests) VM or none: each placement is claimed in the index
    so the next VM sees it; if one fails, all of them are released again."""
    placed: list[tuple[str, Placement]] = []
    try:
        for number, (owner, requests) in enumerate(vms, 1):
            try:
                placement = place(index, requests, weigher=weigher, exclude=exclude)
            except NoValidHostError as error:
                if len(vms) == 1:
                    raise
                raise NoValidHostError(f"VM {number} of {len(vms)}: {error}", error.request,
                                       error.closest) from None
            index.claim(placement.host, placement.selection, owner)
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
        key = (Criteria.of(request), Locality.of(request, bound))
        example, need = grouped.get(key, (request, 0))
        grouped[key] = (example, need + request.count)
    return [_Demand(example, need, index.ranking(*key))
            for key, (example, need) in grouped.items()]


def _anywhere(index: HostIndex, requests: Sequence[PciRequest], bound: bool,
              weigher: Weigher) -> Iterator[str]:
    """Candidates for a VM with no hard request: hosts with what its soft requests want
    first, then any host that is up."""
    preferred = (index.ranking(Criteria.of(r), Locality.of(r, bound))
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
