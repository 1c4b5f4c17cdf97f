"""The scheduler's in-memory picture of the fleet, indexed so that a decision never scans
every host.

Per host: its pools with their counts (devices not removed, free, used), whether it is
up, its NUMA node → socket map, and its capacity with what VMs use of it (vCPUs, memory,
disk and pinned CPUs; capacity None: not counted). Capacity is checked per candidate host
in O(1) (O(CPUs) for dedicated CPUs), so it needs no index of its own.

A host's devices (core `PciDevice`s in its core `Pool`s) are held only while it is
*loaded*: the shapes, the rankings and the views work on the counts alone, so start-up
reads counts (`summarize`) and no device. The exact check of a candidate host, a claim
and a change to its devices need them: `loaded` reads them through the `loader` the
index was given (the store), which replaces the host's pools and recounts its shapes, so
a host read again is as current as the store. The least recently used hosts are
unloaded again (`trim`) once more devices than a budget are held, except those the
caller still needs (claims in flight): memory stays bounded whatever the fleet's size.
An index without a loader (a fleet given whole by `report`) never unloads.

Across hosts: one `Shape` per request criteria, created on first use and from then on kept
current in O(changed pools) whenever a host's devices change (claim, free, inventory
report, host up/down): `recount` after status changes, `regroup` when devices join, leave
or move pools (the device ledger's change records say which). Whether a PCI flavor
matches is asked once per (flavor, pool signature) and remembered. A PCI flavor edit
touches only the shapes whose criteria name an edited flavor: at 10k hosts a full
rebuild cost the next boot 100-250 ms.
"""

from __future__ import annotations

from collections import Counter, OrderedDict
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from operator import attrgetter

from passthru.controller.scheduler.shapes import Locality, Ranking, Shape
from passthru.errors import NotFoundError
from passthru.pci.device import DeviceStatus, PciDevice
from passthru.pci.fit import (
    PoolFilter,
    PoolMatcher,
    Selection,
    SignatureFilter,
    signature_filter,
)
from passthru.pci.lifecycle import claim, free
from passthru.pci.pool import Pool, Signature, empty_pool, pool_key
from passthru.pci.request import Criteria, PciRequest
from passthru.pci.resources import Capacity, CpuPolicy, Usage, VmSize, pick_cpus, shortfall


class UnknownHostError(NotFoundError):
    """A host the scheduler has never been told about."""


@dataclass(frozen=True, slots=True)
class PoolTally:
    """A pool of a host as the views count it (`controller.hosts.usage` counts the store the
    same way): devices not removed, available ones, and claimed or allocated ones."""

    pool: Pool
    signature: Signature
    count: int
    available: int
    used: int


@dataclass(frozen=True, slots=True)
class PoolCount:
    """A pool without its devices: how many are not removed, available, and claimed or
    allocated (`controller.hosts.usage` counts the same way)."""

    pool: Pool
    count: int
    free: int
    used: int
    #: `pool.signature`, when the caller has it already.
    signature: Signature | None = None


_status = attrgetter("status")


def _counts(slot: _Slot) -> tuple[int, int]:
    """The pool's devices that are not removed, and those claimed or allocated."""
    if slot.count >= 0:
        return slot.count, slot.used
    devices = slot.pool.devices
    if slot.free == len(devices):
        # Every device available (`recount` keeps `free` true): nothing to count.
        return slot.free, 0
    statuses = list(map(_status, devices))
    return (len(statuses) - statuses.count(DeviceStatus.REMOVED),
            statuses.count(DeviceStatus.CLAIMED) + statuses.count(DeviceStatus.ALLOCATED))


@dataclass(slots=True)
class _Slot:
    """A pool of a host, with the free count the shapes were last told about; on a host
    not loaded, also its counts (`count` -1: count its devices)."""

    pool: Pool
    signature: Signature
    free: int
    count: int = -1
    used: int = 0


@dataclass(slots=True)
class HostEntry:
    name: str
    slots: list[_Slot]
    socket_of: dict[int, int]
    up: bool
    #: Whether `devices` and the pools' devices are held (see the module's docstring).
    loaded: bool = True
    devices: dict[str, PciDevice] = field(default_factory=dict)
    slot_of: dict[str, _Slot] = field(default_factory=dict)
    signature_by_pool: dict[int, Signature] = field(default_factory=dict)
    #: The NUMA nodes a NUMA-bound VM may sit on: those of the socket map and the devices.
    numa_nodes: tuple[int, ...] = ()
    capacity: Capacity | None = None
    usage: Usage = field(default_factory=Usage)
    #: What each VM claimed here in the index (not yet, or also, in the store), so that a
    #: claim given back gives back exactly that.
    held: dict[str, tuple[VmSize, tuple[int, ...]]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.index_slots()

    def index_slots(self) -> None:
        """Index the slots' devices (if loaded) and NUMA nodes."""
        nodes = set(self.socket_of)
        self.devices, self.slot_of, self.signature_by_pool = {}, {}, {}
        for slot in self.slots:
            if slot.pool.numa_node is not None:
                nodes.add(slot.pool.numa_node)
            if not self.loaded:
                continue
            self.signature_by_pool[id(slot.pool)] = slot.signature
            for device in slot.pool.devices:
                self.devices[device.address] = device
                self.slot_of[device.address] = slot
        self.numa_nodes = tuple(sorted(nodes))

    @property
    def device_count(self) -> int:
        return len(self.devices)

    @property
    def pools(self) -> list[Pool]:
        return [slot.pool for slot in self.slots]

    def room(self, size: VmSize, node: int | None = None) -> str | None:
        """Why the VM does not fit here besides devices (None: it fits). A host that
        reports no resources takes any VM of shared vCPUs, but has no CPU to pin."""
        if self.capacity is None:
            if size.cpu_policy is CpuPolicy.DEDICATED:
                return "reports no CPUs to pin"
            return None
        return shortfall(self.capacity, self.usage, size, node)

    def cpus_for(self, size: VmSize, node: int | None = None) -> tuple[int, ...]:
        """The host CPUs a VM that has room here gets pinned to (() for shared vCPUs)."""
        if self.capacity is None:
            return ()
        return pick_cpus(self.capacity, self.usage, size, node)


def fleet_totals(entries: Sequence[HostEntry], down: Collection[str]
                 ) -> dict[Signature, list[int]]:
    """[devices, free, used] of these hosts per pool signature, nothing free on the hosts
    in `down`: one pass over their pools, no object per pool. Reads statuses without the
    scheduler's lock (each read is whole; a placement made meanwhile may be half in)."""
    totals: dict[Signature, list[int]] = {}
    get = totals.get
    removed, claimed, allocated = (DeviceStatus.REMOVED, DeviceStatus.CLAIMED,
                                   DeviceStatus.ALLOCATED)
    for entry in entries:
        for slot in entry.slots:
            total = get(slot.signature)
            if total is None:
                total = totals[slot.signature] = [0, 0, 0]
            # The devices before the count: `trim` sets the count before it drops them.
            devices = slot.pool.devices
            free, count = slot.free, slot.count
            total[1] += free
            if count >= 0:  # a host not loaded: counted already
                total[0] += count
                total[2] += slot.used
            elif free == len(devices):  # all available: nothing to count (see _counts)
                total[0] += free
            else:
                statuses = list(map(_status, devices))
                total[0] += len(statuses) - statuses.count(removed)
                total[2] += statuses.count(claimed) + statuses.count(allocated)
    # Few hosts are down: their free devices come off afterwards.
    for entry in entries:
        if entry.name in down:
            for slot in entry.slots:
                totals[slot.signature][1] -= slot.free
    return totals


def _free_by_node(slots: Iterable[_Slot]) -> Counter[tuple[Signature, int | None, int]]:
    return Counter((slot.signature, slot.pool.numa_node, slot.free) for slot in slots)


class _RememberedMatch:
    """A PCI flavor whose answer per pool signature is computed once."""

    __slots__ = ("answers", "flavor")

    def __init__(self, flavor: PoolMatcher) -> None:
        self.flavor = flavor
        self.answers: dict[Signature, bool] = {}

    def matches_pool(self, pool: Signature) -> bool:
        answer = self.answers.get(pool)
        if answer is None:
            answer = self.answers[pool] = self.flavor.matches_pool(pool)
        return answer


#: Reads a host's pools with their devices (from the store); None: the host is gone.
Loader = Callable[[str], list[Pool] | None]


class HostIndex:
    def __init__(self, flavors: Mapping[str, PoolMatcher] | None = None,
                 loader: Loader | None = None) -> None:
        self.hosts: dict[str, HostEntry] = {}
        self._loader = loader
        #: The hosts loaded, least recently used first, with how many devices each holds.
        self._recent: OrderedDict[str, int] = OrderedDict()
        self._held_devices = 0
        #: Bumped whenever loading a host moved its rankings (the store had changed).
        self.moves = 0
        self._shapes: dict[Criteria, Shape] = {}
        self._shapes_by_signature: dict[Signature, list[Shape]] = {}
        self._flavors: dict[str, PoolMatcher] = {}
        self._matches: dict[str, _RememberedMatch] = {}
        self._serves: SignatureFilter = signature_filter({})
        #: Bumped by every change to hosts, pools or device states (views keep what they
        #: counted from the index until it moves: `Scheduler.pool_totals`).
        self.version = 0
        self.set_flavors(flavors or {})

    # --- what the fleet tells us ----------------------------------------------------

    def set_flavors(self, flavors: Mapping[str, PoolMatcher]) -> None:
        """The PCI flavors now. Only what names a flavor that was added, removed or changed
        is matched again: its remembered answers, and the shapes whose criteria name it
        (their signatures, then their counts on the hosts with a gained or lost signature).
        Every other shape keeps its counts and rankings, so an edit costs the next boot
        nothing unless it asks for the edited flavor."""
        edited = {name for name in self._flavors.keys() | flavors.keys()
                  if self._flavors.get(name) != flavors.get(name)}
        self._flavors = dict(flavors)
        self._matches = {name: self._matches[name] if name not in edited
                         else _RememberedMatch(flavor) for name, flavor in flavors.items()}
        self._serves = signature_filter(self._matches)
        for shape in self._shapes.values():
            if not edited.isdisjoint(shape.criteria.alternatives):
                self._rematch(shape)

    def report(self, host: str, pools: Iterable[Pool], *,
               socket_of: Mapping[int, int] | None = None, up: bool = True,
               capacity: Capacity | None = None, usage: Usage | None = None) -> None:
        """The whole truth about a host's devices and capacity (from the store)."""
        self._install(HostEntry(host, [_Slot(p, p.signature, p.free) for p in pools],
                                dict(socket_of or {}), up, capacity=capacity,
                                usage=usage or Usage()))

    def summarize(self, host: str, pools: Iterable[PoolCount], *,
                  socket_of: Mapping[int, int] | None = None, up: bool = True,
                  capacity: Capacity | None = None, usage: Usage | None = None) -> None:
        """A host's pools by their counts alone, its devices left to be loaded when
        needed (`loaded`); otherwise as `report`."""
        self._install(HostEntry(host, [_Slot(p.pool, p.signature or p.pool.signature,
                                             p.free, p.count, p.used) for p in pools],
                                dict(socket_of or {}), up, loaded=False, capacity=capacity,
                                usage=usage or Usage()))

    def _install(self, entry: HostEntry) -> None:
        host = entry.name
        self.version += 1
        old = self.hosts.get(host)
        if old is not None:
            for shape in self._shapes_of(old):
                shape.forget(host)
        self._forget_load(host)
        self.hosts[host] = entry
        for slot in entry.slots:
            for shape in self._register(slot.signature):
                shape.add_free(host, slot.pool.numa_node, slot.free)
        for shape in self._shapes_of(entry):
            shape.rerank(host, entry.socket_of, entry.up)
        if entry.loaded:
            self._recent[host] = entry.device_count
            self._held_devices += entry.device_count

    def remove(self, host: str) -> None:
        self.version += 1
        entry = self.hosts.pop(host, None)
        if entry is not None:
            for shape in self._shapes_of(entry):
                shape.forget(host)
        self._forget_load(host)

    # --- loading and unloading devices ------------------------------------------------

    def loaded(self, host: str) -> HostEntry:
        """The host's entry with its devices, read through the loader if they are not
        held (its pools and shapes then become the store's; its status, capacity, use
        and what VMs hold are kept)."""
        entry = self.entry(host)
        if entry.loaded:
            if host in self._recent:
                self._recent.move_to_end(host)
            return entry
        if self._loader is None:
            raise UnknownHostError(f"host {host!r} has no devices loaded, and the scheduler "
                                   "has nowhere to read them from")
        return self._replace_slots(entry, [_Slot(p, p.signature, p.free)
                                           for p in self._loader(host) or []], loaded=True)

    def recounted(self, host: str, pools: Iterable[PoolCount]) -> None:
        """The counts of a host not loaded, read again (its devices changed in the store)."""
        entry = self.entry(host)
        if entry.loaded:
            raise ValueError(f"host {host!r} has its devices loaded: apply their changes")
        self._replace_slots(entry, [_Slot(p.pool, p.signature or p.pool.signature,
                                          p.free, p.count, p.used) for p in pools],
                            loaded=False)

    def _replace_slots(self, entry: HostEntry, slots: list[_Slot], loaded: bool
                       ) -> HostEntry:
        """The host's pools now, its status, capacity, use and holders kept."""
        if _free_by_node(slots) == _free_by_node(entry.slots):
            # What the shapes were told stands: no ranking moves (a walk over one may be
            # under way).
            entry.slots, entry.loaded = slots, loaded
            entry.index_slots()
            if loaded:
                self._recent[entry.name] = entry.device_count
                self._held_devices += entry.device_count
            return entry
        self.moves += 1
        fresh = HostEntry(entry.name, slots, entry.socket_of, entry.up, loaded=loaded,
                          capacity=entry.capacity, usage=entry.usage, held=entry.held)
        self._install(fresh)
        return fresh

    def trim(self, budget: int, keep: Collection[str] = ()) -> list[str]:
        """Unload the least recently used hosts (not those in `keep`) until at most
        `budget` devices are held; returns the hosts unloaded. Their counts stay, so
        shapes and views do not move. Does nothing without a loader."""
        if self._loader is None or self._held_devices <= budget:
            return []
        unloaded = []
        for host in list(self._recent):
            if self._held_devices <= budget:
                break
            if host in keep:
                continue
            self._unload(self.hosts[host])
            unloaded.append(host)
        return unloaded

    def _unload(self, entry: HostEntry) -> None:
        for slot in entry.slots:
            # The counts first: a view reading without the lock sees either.
            count, slot.used = _counts(slot)
            slot.count = count
            pool = slot.pool
            slot.pool = Pool(pool.attrs, pool.dev_type, pool.numa_node, pool.parent_addr)
        entry.loaded = False
        entry.index_slots()
        self._forget_load(entry.name)

    def _forget_load(self, host: str) -> None:
        self._held_devices -= self._recent.pop(host, 0)

    def set_up(self, host: str, up: bool) -> None:
        entry = self.entry(host)
        entry.up = up
        for shape in self._shapes_of(entry):
            shape.rerank(host, entry.socket_of, up)

    def claim(self, host: str, selection: Selection, owner: str,
              size: VmSize | None = None, cpus: tuple[int, ...] = ()) -> list[PciDevice]:
        """Apply a selection to the in-memory devices (the core's claim rules), and count
        the VM's size and pinned CPUs against the host."""
        entry = self.loaded(host) if selection.devices else self.entry(host)
        changed = claim(entry.devices, selection, owner)
        if size is not None:
            entry.usage = entry.usage.plus(size, cpus)
            entry.held[owner] = (size, cpus)
        self.recount(host, changed)
        return changed

    def free(self, host: str, owner: str) -> list[PciDevice]:
        entry = self.loaded(host)
        changed = free(entry.devices, owner)
        if owner in entry.held:
            entry.usage = entry.usage.minus(*entry.held.pop(owner))
        self.recount(host, changed)
        return changed

    def recount(self, host: str, devices: Iterable[PciDevice]) -> None:
        """Devices of `host` changed status: bring the shapes of their pools up to date."""
        entry = self.entry(host)
        self._recount(entry, {id(slot): slot for slot in (entry.slot_of[d.address]
                                                          for d in devices)}.values())

    def regroup(self, host: str, devices: Iterable[PciDevice],
                pool_attrs: Sequence[str]) -> None:
        """Devices of `host` joined, left, moved or changed (`devices`: their new state,
        adopted as they are): each goes to the pool its key names under `pool_attrs`,
        pools are made and dropped as needed, and the shapes of the pools touched are
        brought up to date; O(devices changed and the pools they touch)."""
        entry = self.loaded(host)
        by_key = {slot.pool.key: slot for slot in entry.slots}
        touched: dict[int, _Slot] = {}
        for device in devices:
            old_slot = entry.slot_of.pop(device.address, None)
            old = entry.devices.pop(device.address, None)
            if old_slot is not None and old is not None:
                old_slot.pool.devices = [d for d in old_slot.pool.devices if d is not old]
                touched[id(old_slot)] = old_slot
            if device.status is DeviceStatus.REMOVED:
                continue
            key = pool_key(device, pool_attrs)
            slot = by_key.get(key)
            if slot is None:
                pool = empty_pool(key)
                slot = by_key[key] = _Slot(pool, pool.signature, 0)
                entry.slots.append(slot)
                entry.signature_by_pool[id(pool)] = slot.signature
                if pool.numa_node is not None and pool.numa_node not in entry.numa_nodes:
                    entry.numa_nodes = tuple(sorted({*entry.numa_nodes, pool.numa_node}))
                self._register(slot.signature)
            slot.pool.devices.append(device)
            entry.devices[device.address] = device
            entry.slot_of[device.address] = slot
            touched[id(slot)] = slot
        self._recount(entry, touched.values())
        empty = {id(slot) for slot in touched.values() if not slot.pool.devices}
        if empty:
            entry.slots = [slot for slot in entry.slots if id(slot) not in empty]
            entry.signature_by_pool = {id(slot.pool): slot.signature for slot in entry.slots}
        if host in self._recent:
            self._held_devices += entry.device_count - self._recent[host]
            self._recent[host] = entry.device_count

    def restate(self, host: str, uses: Iterable[tuple[PciDevice, PciDevice]]) -> None:
        """Devices of `host` whose use changed in the store: each (held, stored) pair has
        the index's device take the stored one's status, owner, request, missing and taint, and
        the shapes of their pools move by the change in their free counts, in O(devices
        changed) however big their pools."""
        entry = self.entry(host)
        deltas: dict[int, tuple[_Slot, int]] = {}
        for device, stored in uses:
            was = device.is_free
            device.status, device.owner = stored.status, stored.owner
            device.request_id, device.missing = stored.request_id, stored.missing
            device.taint = stored.taint
            if device.is_free != was:
                slot = entry.slot_of[device.address]
                moved = deltas.get(id(slot), (slot, 0))[1] + (1 if device.is_free else -1)
                deltas[id(slot)] = (slot, moved)
        self._shift(entry, deltas.values())

    def _recount(self, entry: HostEntry, slots: Iterable[_Slot]) -> None:
        self._shift(entry, [(slot, slot.pool.free - slot.free) for slot in slots])

    def _shift(self, entry: HostEntry, deltas: Iterable[tuple[_Slot, int]]) -> None:
        """The free counts of some of `entry`'s pools moved by these amounts."""
        self.version += 1
        host = entry.name
        touched: dict[int, Shape] = {}
        for slot, delta in deltas:
            if not delta:
                continue
            for shape in self._shapes_by_signature[slot.signature]:
                shape.add_free(host, slot.pool.numa_node, delta)
                touched[id(shape)] = shape
            slot.free += delta
        for shape in touched.values():
            shape.rerank(host, entry.socket_of, entry.up)

    # --- what placement asks ----------------------------------------------------------

    def entry(self, host: str) -> HostEntry:
        try:
            return self.hosts[host]
        except KeyError:
            raise UnknownHostError(f"host {host!r} is not known to the scheduler") from None

    def shape(self, criteria: Criteria) -> Shape:
        shape = self._shapes.get(criteria)
        if shape is not None:
            return shape
        shape = self._shapes[criteria] = Shape(criteria)
        for signature, shapes in self._shapes_by_signature.items():
            if self._serves(criteria, signature):
                shape.signatures.add(signature)
                shapes.append(shape)
        for entry in self.hosts.values():
            for slot in entry.slots:
                if slot.signature in shape.signatures:
                    shape.add_free(entry.name, slot.pool.numa_node, slot.free)
        return shape

    def ranking(self, criteria: Criteria, locality: Locality) -> Ranking:
        shape = self.shape(criteria)
        ranking = shape.rankings.get(locality)
        if ranking is None:
            ranking = shape.rankings[locality] = Ranking(locality)
            for host in shape.per_host:
                entry = self.hosts[host]
                shape.rerank(host, entry.socket_of, entry.up)
        return ranking

    def pool_filter(self, entry: HostEntry, requests: Sequence[PciRequest]) -> PoolFilter:
        """`select_devices`' predicate for these requests on this host, answered from the
        shapes' signatures rather than by matching flavors again."""
        wanted = {r.request_id: self.shape(r.criteria).signatures for r in requests}
        signature_by_pool = entry.signature_by_pool

        def serves(request: PciRequest, pool: Pool) -> bool:
            return signature_by_pool[id(pool)] in wanted[request.request_id]

        return serves

    # --- what the views ask (read-only) ---------------------------------------------

    def tallies(self, host: str) -> list[PoolTally]:
        """Each pool of `host` with its counts (none for a host not in the index)."""
        entry = self.hosts.get(host)
        if entry is None:
            return []
        tallies = []
        for slot in entry.slots:
            count, used = _counts(slot)
            tallies.append(PoolTally(slot.pool, slot.signature, count, slot.free, used))
        return tallies

    # --- bookkeeping ------------------------------------------------------------------

    def _register(self, signature: Signature) -> list[Shape]:
        """The shapes a signature serves; a signature seen for the first time is matched
        against every existing shape once."""
        shapes = self._shapes_by_signature.get(signature)
        if shapes is None:
            shapes = self._shapes_by_signature[signature] = [
                s for s in self._shapes.values() if self._serves(s.criteria, signature)]
            for shape in shapes:
                shape.signatures.add(signature)
        return shapes

    def _rematch(self, shape: Shape) -> None:
        """Match a shape's criteria against every known signature again, and move the
        free counts of the signatures it gained or lost."""
        now = {signature for signature in self._shapes_by_signature
               if self._serves(shape.criteria, signature)}
        gained, lost = now - shape.signatures, shape.signatures - now
        if not gained and not lost:
            return
        for signature in gained:
            self._shapes_by_signature[signature].append(shape)
        for signature in lost:
            self._shapes_by_signature[signature].remove(shape)
        shape.signatures = now
        moved = gained | lost
        for entry in self.hosts.values():
            slots = [slot for slot in entry.slots if slot.signature in moved]
            if not slots:
                continue
            if not any(slot.signature in now for slot in entry.slots):
                shape.forget(entry.name)
                continue
            for slot in slots:
                sign = 1 if slot.signature in gained else -1
                shape.add_free(entry.name, slot.pool.numa_node, sign * slot.free)
            shape.rerank(entry.name, entry.socket_of, entry.up)

    def _shapes_of(self, entry: HostEntry) -> list[Shape]:
        seen: dict[int, Shape] = {}
        for slot in entry.slots:
            for shape in self._shapes_by_signature[slot.signature]:
                seen[id(shape)] = shape
        return list(seen.values())
