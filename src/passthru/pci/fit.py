"""Fit rules: whether one host's pools satisfy a VM's requests, and which devices.

`select_devices` decides whether a host's pools satisfy a *set* of requests at once (no
device counted twice, PF/VF exclusion, NUMA policy) and names the devices: a `Selection`,
which `pci.lifecycle.claim` then takes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from itertools import islice
from typing import Protocol

from passthru.pci.device import PHYSICAL_NETWORK, DevType, PciDevice
from passthru.pci.pool import Pool, Signature
from passthru.pci.request import Criteria, NumaPolicy, PciRequest

#: Whether a pool can serve a request (flavors, network, type), as `select_devices` asks.
PoolFilter = Callable[[PciRequest, Pool], bool]
#: Whether pools of a signature serve requests of some criteria, as the scheduler asks.
SignatureFilter = Callable[[Criteria, Signature], bool]

# Backtracking is exact for the small request sets VMs carry; the budget keeps a
# pathological set from stalling the scheduler: past it the host simply does not fit.
_SEARCH_BUDGET = 20_000


class PoolMatcher(Protocol):
    """What a request's alternatives are: PCI flavors, or anything that matches pools by
    what they show (their signature)."""

    def matches_pool(self, pool: Signature) -> bool: ...


def signature_filter(flavors: Mapping[str, PoolMatcher]) -> SignatureFilter:
    """Whether pools of a signature serve requests of some criteria: their type, their
    physical network, one alternative."""

    def serves(criteria: Criteria, signature: Signature) -> bool:
        if criteria.dev_type is not None and signature.dev_type is not criteria.dev_type:
            return False
        if (criteria.physical_network is not None
                and signature.attr(PHYSICAL_NETWORK) != criteria.physical_network):
            return False
        if not criteria.alternatives:
            return True
        return any(name in flavors and flavors[name].matches_pool(signature)
                   for name in criteria.alternatives)

    return serves


def flavor_filter(flavors: Mapping[str, PoolMatcher]) -> PoolFilter:
    """`signature_filter` for `select_devices`: one request and one pool at a time."""
    serves = signature_filter(flavors)
    return lambda request, pool: serves(request.criteria, pool.signature)


@dataclass(frozen=True, slots=True)
class Selection:
    """The devices chosen for each request (soft requests that could not be met are absent)."""

    devices: Mapping[str, tuple[PciDevice, ...]]
    numa_cells: frozenset[int] | None

    @property
    def addresses(self) -> list[str]:
        return [d.address for picked in self.devices.values() for d in picked]


def numa_filter(
    pools: Sequence[Pool],
    request: PciRequest,
    cells: frozenset[int] | None,
    socket_of: Mapping[int, int] | None = None,
) -> list[Pool]:
    """Nova's PCI NUMA affinity: the pools a request may use when the VM sits on `cells`.

    With no cells the VM is not NUMA-bound and every pool serves. `required` keeps only
    the VM's nodes; `legacy` also accepts devices that report no node; `preferred` widens
    step by step as long as the stricter set cannot supply `count`; `socket` accepts any
    node on the same socket as one of the VM's nodes. Pools come back in the order they
    should be used.
    """
    if not cells:
        return list(pools)
    if request.numa_policy is NumaPolicy.SOCKET:
        sockets = socket_of or {}
        wanted = {sockets.get(cell, cell) for cell in cells}
        return [p for p in pools
                if p.numa_node is not None and sockets.get(p.numa_node, p.numa_node) in wanted]
    local = [p for p in pools if p.numa_node in cells]
    if request.numa_policy is NumaPolicy.REQUIRED or _free(local) >= request.count:
        return local
    with_unknown = [p for p in pools if p.numa_node in cells or p.numa_node is None]
    if request.numa_policy is NumaPolicy.LEGACY or _free(with_unknown) >= request.count:
        return with_unknown
    # Preferred: anything goes, but local devices are used up first, then node-less ones.
    preferred = {id(p) for p in with_unknown}
    return with_unknown + [p for p in pools if id(p) not in preferred]


def _free(pools: Iterable[Pool]) -> int:
    return sum(p.free for p in pools)


class _Search:
    """Backtracking over how each request's count is spread across its candidate pools."""

    def __init__(self) -> None:
        self.taken: set[str] = set()
        self.busy_parents: dict[str, int] = {}  # PF address → VFs of it taken here
        self.taken_pfs: set[str] = set()
        self.steps = 0

    def usable(self, device: PciDevice) -> bool:
        if not device.is_free or device.address in self.taken:
            return False
        if device.dev_type is DevType.VF:
            return device.parent_addr not in self.taken_pfs
        if device.dev_type is DevType.PF:
            return self.busy_parents.get(device.address, 0) == 0
        return True

    def take(self, device: PciDevice) -> None:
        self.taken.add(device.address)
        if device.dev_type is DevType.VF and device.parent_addr:
            self.busy_parents[device.parent_addr] = self.busy_parents.get(
                device.parent_addr, 0) + 1
        elif device.dev_type is DevType.PF:
            self.taken_pfs.add(device.address)

    def give_back(self, device: PciDevice) -> None:
        self.taken.discard(device.address)
        if device.dev_type is DevType.VF and device.parent_addr:
            self.busy_parents[device.parent_addr] -= 1
        elif device.dev_type is DevType.PF:
            self.taken_pfs.discard(device.address)

    def spreads(self, pools: Sequence[Pool], need: int) -> Iterator[list[PciDevice]]:
        """Every way of taking `need` devices from `pools`, greedy (first pools first) first."""
        if need == 0:
            yield []
            return
        if not pools or self.steps > _SEARCH_BUDGET:
            return
        self.steps += 1
        head, rest = pools[0], pools[1:]
        # Only the first `need` usable devices of a pool can ever be taken from it.
        usable = list(islice(filter(self.usable, head.devices), need))
        for take in range(min(need, len(usable)), -1, -1):
            picked = usable[:take]
            for device in picked:
                self.take(device)
            for more in self.spreads(rest, need - take):
                yield picked + more
            for device in picked:
                self.give_back(device)

    def solve(self, plan: Sequence[tuple[PciRequest, list[Pool]]],
              chosen: dict[str, tuple[PciDevice, ...]]) -> bool:
        if not plan:
            return True
        (request, pools), rest = plan[0], plan[1:]
        # `spreads` keeps what it yields taken until it is resumed, so on success the
        # chosen devices stay taken for whatever is solved next (soft requests).
        for picked in self.spreads(pools, request.count):
            chosen[request.request_id] = tuple(picked)
            if self.solve(rest, chosen):
                return True
            del chosen[request.request_id]
        return False


def select_devices(
    pools: Sequence[Pool],
    requests: Sequence[PciRequest],
    serves: PoolFilter,
    *,
    numa_cells: frozenset[int] | None = None,
    socket_of: Mapping[int, int] | None = None,
) -> Selection | None:
    """Pick devices for every hard request at once, then for soft ones where possible.

    Returns None when the hard requests cannot all be met on these pools.
    """
    search = _Search()
    chosen: dict[str, tuple[PciDevice, ...]] = {}

    def plan_for(batch: Iterable[PciRequest]) -> list[tuple[PciRequest, list[Pool]]]:
        return [(r, numa_filter([p for p in pools if serves(r, p)], r, numa_cells, socket_of))
                for r in batch]

    hard = plan_for(r for r in requests if not r.soft)
    # The scarcest request goes first: fewer candidates means less to backtrack over.
    hard.sort(key=lambda item: _free(item[1]) - item[0].count)
    if not search.solve(hard, chosen):
        return None
    for item in plan_for(r for r in requests if r.soft):
        soft_choice: dict[str, tuple[PciDevice, ...]] = {}
        if search.solve([item], soft_choice):
            chosen.update(soft_choice)
    return Selection(chosen, numa_cells)
