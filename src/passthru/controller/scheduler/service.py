"""One controller replica's scheduler: the index kept in step with the store, and each
placement made durable by a conditional claim.

A decision and its tentative claim in the index happen under a lock (so two requests of
this replica never pick the same devices); the store transaction runs outside it. If the
store says a device was taken meanwhile (by another replica, or an inventory report), or
the host's room or a chosen CPU went to another VM, the tentative claim is dropped, that
host is read again from the store, and the VM is placed again, that host included: a lost
race is someone else's win, so it never makes a host look full that still has room.
A placement is refused only once the index, checked against the store after the last
lost race, has nothing that fits, and no claim of this replica is in flight (one that
fails gives its devices back); the refusal is the placement's own message.

Reading a host again replaces its in-memory devices with the store's, which drops other
requests' tentative claims on it that are not committed yet; their own store transactions
still decide, so the worst case is one more lost race.

The device ledger's change records (`apply`) carry each changed row's new state and
generation: a record is applied only to rows the index holds at an older generation, so
records and reads of the store that cross each other never take the index back in time.
Applying them keeps other requests' tentative claims on the host (only the rows the
committed transaction wrote change). Changes made by other replicas are not pushed here:
they show when a claim loses a race, or when `resync` finds a host's fingerprint moved.

PCI flavors can change through any replica: each change bumps the store's topic
`pci_flavors` (`controller.store.topics`) in its own transaction, and each placement first
compares that version with the one the index's flavors were read at, reading them again
when they differ (a boot passes the version its own transaction read, so its requests
are checked and placed against the same flavors). That check is what makes the next
boot on every replica honour an edit exactly; a push (PostgreSQL's LISTEN/NOTIFY)
could only make the reload earlier, never the answer more right, and is left out.

A boot claims inside its own transaction (`schedule_many(session=...)`), which it may
share with concurrent boots (`Store.grouped`): the claim's records reach the index when
its savepoint is released, and the hosts are read again if the transaction then fails.
Inside a shared transaction nothing waits for the store: a lost race, or a refusal
while claims of this replica are in flight, raises RetryError, and the boot is made
again in a new transaction once the host was read again or those claims ended.

Start-up reads each pool's counts, not its devices (`snapshot.load_summaries`); a host's
device rows are read when a placement picks it, and a change record for a host whose
devices are not held has that host's counts read again (the store holds the change
already). At most `loaded_devices` devices are held: the hosts least recently used are
dropped back to their counts, but never one a claim of this replica is still in flight
on (its devices hold the tentative claim).

The API tells the scheduler what else changed: `apply(changes)` with the device ledger's
change records after a free, an allocation, an inventory report or a host going down
(O(changed), no store read; one count query for a host whose devices are not held),
`refresh(hosts)` where it has none (a host back up),
`flavors_changed()` after PCI flavor edits (which spares the replica that made them the
reload at its next placement).
"""

from __future__ import annotations

import itertools
import threading
import weakref
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass
from functools import partial

from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from passthru.controller.enums import Weigher
from passthru.controller.ledger import (
    DeviceChange,
    HostChanges,
    LostRaceError,
    changes_of,
    take_changes,
)
from passthru.controller.scheduler.claim import (
    Claim,
    claim_all_in_store,
    is_lost_race,
    lock_servers,
)
from passthru.controller.scheduler.index import HostEntry, HostIndex, PoolTally, fleet_totals
from passthru.controller.scheduler.placement import (
    DEFAULT_SIZE,
    NoValidHostError,
    Placement,
    place_many,
)
from passthru.controller.scheduler.snapshot import (
    fingerprints,
    load_flavors,
    load_hosts,
    load_summaries,
)
from passthru.controller.settings import DEFAULT_LOADED_DEVICES
from passthru.controller.store import topics
from passthru.controller.store.db import Store, on_rollback
from passthru.controller.store.stored_host import DeviceRef, StoredHost
from passthru.pci.pool import Pool, Signature
from passthru.pci.request import PciRequest
from passthru.pci.resources import VmSize

#: Placements one VM gets before it is refused though the store may have room: each
#: lost race is another boot's win, so only a stampede of them exhausts this.
_MAX_ROUNDS = 100
#: The longest a placement waits for this replica's claims in flight (each is one short
#: store transaction; the wait ends as soon as they do).
_SETTLE_WAIT = 30.0

#: A VM: the server that will own the devices, and its PCI requests.
Vm = tuple[str, Sequence[PciRequest]]


class RetryError(Exception):
    """A placement inside a caller's transaction (`schedule_many(session=...)`) that must
    be made again in a new one, after `prepare()` has run outside any transaction: it lost
    a race (the host is read again), or it must wait for claims of this replica in flight
    (which may wait for the caller's transaction)."""

    def __init__(self, prepare: Callable[[], object], why: str) -> None:
        super().__init__(why)
        self.prepare = prepare


@dataclass(frozen=True, slots=True)
class _Totals:
    """`Scheduler.pool_totals` as counted from `index` (held weakly: an index replaced
    by a reload is freed) at its `version`, with the hosts in `down` down."""

    index: weakref.ref[HostIndex]
    version: int
    down: frozenset[str]
    totals: dict[Signature, list[int]]


class Scheduler:
    def __init__(self, store: Store, weigher: Weigher = Weigher.PACK,
                 loaded_devices: int = DEFAULT_LOADED_DEVICES) -> None:
        self.store = store
        self.weigher = weigher
        self.loaded_devices = loaded_devices
        self.index = HostIndex(loader=self._read_devices)
        self._hosts: dict[str, StoredHost] = {}
        self._lock = threading.Lock()
        #: The version of topic pci_flavors the index's flavors were read at.
        self._flavors_version = -1
        #: This replica's claims whose store transaction has not ended, by ticket, with
        #: their hosts: their devices are held in the index, tentatively.
        self._in_flight: dict[int, set[str]] = {}
        self._tickets = itertools.count()
        self._settled = threading.Condition(self._lock)
        #: The last `pool_totals` counted.
        self._totals: _Totals | None = None

    # --- keeping the index in step with the store -------------------------------------

    def load(self) -> None:
        """Build the index from the store (at start-up)."""
        with self.store.read() as session:
            seen = topics.version(session, topics.PCI_FLAVORS)
            flavors = load_flavors(session)
            with self._lock:
                self.index = HostIndex(flavors, loader=self._read_devices)
                self._flavors_version = seen
                self._hosts.clear()
                for host, pools in load_summaries(session):
                    self._hosts[host.name] = host
                    self.index.summarize(host.name, pools, up=host.up, socket_of=host.socket_of,
                                         capacity=host.capacity, usage=host.usage)

    def _read_devices(self, name: str) -> list[Pool] | None:
        """The index's loader: the host's device rows from the store, their refs taken
        for the claims to come (called under the lock)."""
        with self.store.read() as session:
            read = next(load_hosts(session, [name]), None)
        if read is None:
            return None
        host = self._hosts.get(name)
        if host is None:
            self._hosts[name] = host = read
        host.reload(read)
        return read.pools

    def _trim(self) -> None:
        """Drop the least recently used hosts' devices beyond the budget (under the lock)."""
        busy = set().union(*self._in_flight.values())
        for name in self.index.trim(self.loaded_devices, busy):
            self._hosts[name].unload()

    def refresh(self, names: Collection[str]) -> None:
        """Read these hosts again from the store; hosts that are gone leave the index."""
        with self.store.read() as session:
            hosts = list(load_hosts(session, names))
        with self._lock:
            for name in set(names) - {host.name for host in hosts}:
                self._hosts.pop(name, None)
                self.index.remove(name)
            for host in hosts:
                self._adopt(host)
            self._trim()

    def apply(self, changes: Iterable[HostChanges]) -> None:
        """What a committed transaction changed (the ledger's records), in O(changed):
        device states and row generations, the shapes recounted, the pools regrouped
        where devices joined, left or moved pools, what freed servers held given back. A
        host this replica has not read yet, or one handed over whole, is adopted as the
        store has it; a record older than what the index holds changes nothing."""
        unknown: list[str] = []
        with self._lock:
            for change in changes:
                if change.whole is not None:
                    self._adopt(change.whole)
                elif change.host in self._hosts and change.host in self.index.hosts:
                    self._apply(change)
                else:
                    unknown.append(change.host)
            self._trim()
        if unknown:
            self.refresh(unknown)

    def _apply(self, change: HostChanges) -> None:
        host, entry = self._hosts[change.host], self.index.hosts[change.host]
        for released in change.released:
            host.usage = host.usage.minus(released.size, released.cpus)
            held = entry.held.pop(released.owner, None)
            entry.usage = entry.usage.minus(*(held or (released.size, released.cpus)))
        if change.devices and not entry.loaded:
            self._count_again(host)
        elif change.devices:
            self._apply_devices(change, host, entry)
        if change.up is not None and change.up != host.up:
            host.up = change.up
            self.index.set_up(change.host, change.up)

    def _count_again(self, host: StoredHost) -> None:
        """Devices of a host not loaded changed: its counts are read again, the change
        included (one GROUP BY over its rows, whatever its size, and no device held)."""
        with self.store.read() as session:
            found = next(load_summaries(session, [host.name]), None)
        if found is not None:
            host.rows = found[0].rows
            self.index.recounted(host.name, found[1])

    def _apply_devices(self, change: HostChanges, host: StoredHost, entry: HostEntry) -> None:
        fresh = [c for c in change.devices if self._newer(host, c)]
        if change.regrouped is not None:
            self.index.regroup(change.host, [c.device for c in fresh], change.regrouped)
            host.pools = entry.pools
        else:
            self.index.restate(change.host, [
                (device, c.device) for c in fresh
                if (device := entry.devices.get(c.device.address)) is not None])

    @staticmethod
    def _newer(host: StoredHost, change: DeviceChange) -> bool:
        """Bring the row's ref up to `change`; whether it is news (not older than the ref:
        a host read again meanwhile may hold a later state already)."""
        ref = host.refs.get(change.device.address)
        if ref is None:
            host.refs[change.device.address] = DeviceRef(change.row_id, change.generation)
            return True
        if ref.id == change.row_id and ref.generation >= change.generation:
            return False
        ref.id, ref.generation = change.row_id, change.generation
        return True

    def flavors_changed(self) -> None:
        """Read the PCI flavors again (whichever replica changed them)."""
        with self.store.read() as session:
            seen = topics.version(session, topics.PCI_FLAVORS)
            flavors = load_flavors(session)
        with self._lock:
            self.index.set_flavors(flavors)
            self._flavors_version = seen

    def _check_flavors(self, seen: int | None = None) -> None:
        """Before each placement: the PCI flavors again if any replica changed them since
        they were read (one primary-key read when they did not; none when the caller read
        the version `seen` in its own transaction just before, as a boot does)."""
        if seen is None:
            with self.store.read() as session:
                seen = topics.version(session, topics.PCI_FLAVORS)
        if seen != self._flavors_version:
            self.flavors_changed()

    def sees_up(self, name: str) -> bool:
        """Whether the index has `name` as a host that is up."""
        with self._lock:
            host = self._hosts.get(name)
            return host is not None and host.up

    def resync(self) -> bool:
        """Refresh every host that changed in the store behind our back; whether any did."""
        with self.store.read() as session:
            stored = fingerprints(session)
        with self._lock:
            stale = {name for name, print_ in stored.items()
                     if name not in self._hosts or self._hosts[name].fingerprint != print_}
            stale |= set(self._hosts) - set(stored)
            # A refresh that read the store while a claim of ours committed can leave the
            # index's use apart from the host's (tentative claims in flight do too; reading
            # those hosts again costs at most one lost race).
            stale |= {name for name, host in self._hosts.items()
                      if name in self.index.hosts and self.index.hosts[name].usage != host.usage}
        if stale:
            self.refresh(stale)
        return bool(stale)

    def _adopt(self, host: StoredHost) -> None:
        self._hosts[host.name] = host
        self.index.report(host.name, host.pools, up=host.up, socket_of=host.socket_of,
                          capacity=host.capacity, usage=host.usage)

    # --- what the views read ------------------------------------------------------------

    def pool_tallies(self, hosts: Iterable[str]) -> dict[str, list[PoolTally]]:
        """The index's counts of each pool of these hosts, by host (those it has): a
        page of stats without a query over device rows. Read under the lock, so that a
        page never sees half a placement."""
        with self._lock:
            return {name: self.index.tallies(name) for name in hosts
                    if name in self.index.hosts}

    def pool_totals(self, down: Collection[str]) -> dict[Signature, list[int]]:
        """The whole fleet's [devices, free, used] per pool signature, nothing free on the
        hosts in `down` (`index.fleet_totals`), counted again only once the index moved
        (its version) or `down` changed: a poll of a fleet at rest costs nothing here.
        Only the list of hosts and the version are taken under the lock (a pass over every
        pool would hold placements up); a change made during the pass bumps the version
        after the one the result is kept under, so it is counted at the next call."""
        down = frozenset(down)
        with self._lock:
            index, version = self.index, self.index.version
            kept = self._totals
            if kept is not None and (kept.index() is not index or kept.version != version
                                     or kept.down != down):
                kept = None
            if kept is None:
                entries = list(index.hosts.values())
        if kept is None:
            kept = self._totals = _Totals(weakref.ref(index), version, down,
                                          fleet_totals(entries, down))
        return {signature: list(total) for signature, total in kept.totals.items()}

    # --- placing ------------------------------------------------------------------------

    def schedule(self, owner: str, requests: Sequence[PciRequest],
                 size: VmSize = DEFAULT_SIZE) -> Placement:
        """Place one VM and claim its devices and room in the store."""
        return self.schedule_many([(owner, requests)], [size])[0]

    def schedule_many(self, vms: Sequence[Vm],
                      sizes: Sequence[VmSize] | None = None,
                      exclude: Collection[str] = frozenset(),
                      flavors_version: int | None = None,
                      least: int | None = None,
                      session: Session | None = None) -> list[Placement]:
        """Place every VM (of its size in `sizes`, which should be its server row's, as
        the store counts those), on none of the hosts in `exclude`, and claim all their
        devices and room in one transaction, or none. `flavors_version`: the version of
        topic pci_flavors the VMs' requests were checked at (None: read it now).

        `least` (Nova's min_count, when it is below the number of VMs, its max_count):
        place the VMs in order, as many as the index fits, and at least `least` of them
        or none; the placements returned are those of the first VMs. A VM that does not
        fit ends the batch: the VMs of a multi-create ask for the same.

        `session`: claim in the caller's transaction (a savepoint of it), the one that
        created the servers (which are not locked again: no other transaction sees them
        before it commits), which must then hand the claims' records to the index once it
        commits (`Store.grouped`'s undos read the hosts again if it does not). Where the
        placement would wait for the store (a lost race, claims of this replica in
        flight) it raises RetryError instead."""
        self._check_flavors(flavors_version)
        least = len(vms) if least is None else least
        resynced = False
        for _ in range(_MAX_ROUNDS):
            placements: list[Placement] | None = None
            with self._lock:
                try:
                    placements = self._place(vms, sizes, frozenset(exclude), least)
                except NoValidHostError as error:
                    refused, busy = error, set(self._in_flight)
                    self._trim()
                else:
                    ticket = next(self._tickets)
                    self._in_flight[ticket] = {p.host for p in placements}
            if placements is None:
                if busy and session is not None:
                    raise RetryError(partial(self._wait_for, busy),
                                "claims of this replica are in flight")
                if busy:
                    # Claims of this replica in flight hold devices in the index that
                    # their store transaction may yet give back.
                    self._wait_for(busy)
                elif resynced or not self.resync():
                    raise refused
                else:
                    resynced = True
                continue
            try:
                self._claim(vms[:len(placements)], placements, ticket, session)
            except LostRaceError as race:
                if session is not None:
                    raise RetryError(partial(self.refresh, race.hosts), str(race)) from race
                self.refresh(race.hosts)
                resynced = False
                continue
            return placements
        raise NoValidHostError(f"lost the race for devices or room {_MAX_ROUNDS} times in "
                               "a row to other boots; boot it again")

    def _place(self, vms: Sequence[Vm], sizes: Sequence[VmSize] | None,
               exclude: frozenset[str], least: int) -> list[Placement]:
        """(Under the lock.) Place the first VMs, at least `least` of them, each claimed
        in the index so that the next one sees it; if fewer fit, none is (all are
        released again) and the refusal names the VM that did not fit."""
        if least >= len(vms):
            return place_many(self.index, vms, weigher=self.weigher, exclude=exclude,
                              sizes=sizes)
        placed: list[Placement] = []
        try:
            for number, vm in enumerate(vms, 1):
                size = [sizes[number - 1]] if sizes is not None else None
                try:
                    placed += place_many(self.index, [vm], weigher=self.weigher,
                                         exclude=exclude, sizes=size)
                except NoValidHostError as error:
                    if len(placed) >= least:
                        return placed
                    raise NoValidHostError(
                        f"VM {number} of {len(vms)} (at least {least} must be placed): "
                        f"{error}", error.request, error.closest) from None
        except BaseException:
            for (owner, _), placement in zip(vms, placed, strict=False):
                self.index.free(placement.host, owner)
            raise
        return placed

    def _claim_in(self, session: Session, placed: list[tuple[str, Placement]], *,
                  created: bool) -> None:
        """Claim in `session`; `created`: it made the servers, which hold their rows'
        locks already and are being built on no host."""
        if not created:
            lock_servers(session, [owner for owner, _ in placed])
        # Host rows are locked in name order, as deletes do: two multi-creates never lock
        # hosts crosswise.
        claim_all_in_store(session, [
            Claim(self._hosts[placement.host], placement.selection, owner,
                  placement.numa_node, placement.cpus)
            for owner, placement in sorted(placed, key=lambda item: item[1].host)])

    def _settle(self, ticket: int) -> None:
        """Claim `ticket` ended (call under the lock)."""
        self._in_flight.pop(ticket, None)
        self._settled.notify_all()

    def _wait_for(self, claims: set[int]) -> None:
        with self._settled:
            self._settled.wait_for(lambda: not claims & self._in_flight.keys(),
                                   timeout=_SETTLE_WAIT)

    def _claim(self, vms: Sequence[Vm], placements: list[Placement], ticket: int,
               outer: Session | None) -> None:
        placed = [(owner, p) for (owner, _), p in zip(vms, placements, strict=True)]
        # The hosts as read when they were chosen: a host read again meanwhile is a new
        # object, whose use the store already counts this claim in.
        claimed = [(self._hosts[p.host], p) for _, p in placed]
        try:
            if outer is None:
                with self.store.write() as session:
                    self._claim_in(session, placed, created=False)
                    changes = changes_of(session)
            else:
                # No savepoint of its own: a claim that fails fails the caller's work,
                # whose savepoint goes.
                try:
                    self._claim_in(outer, placed, created=True)
                finally:
                    changes = take_changes(outer)
                hosts = sorted({p.host for _, p in placed})
                on_rollback(outer, partial(self.refresh, hosts))
        except BaseException as error:
            with self._lock:
                for owner, placement in placed:
                    self.index.free(placement.host, owner)
                self._settle(ticket)
            if isinstance(error, DBAPIError) and is_lost_race(error):
                # The database does not say which row it fought over; the first host is
                # read again, and the database let the other transaction through.
                raise LostRaceError(placed[0][1].host,
                                    reason="was in a transaction the database rolled back"
                                    ) from error
            raise
        with self._lock:
            self._settle(ticket)
            # The index holds the claim already (tentatively); the ledger's records bring
            # the rows' generations up to the store's, so that the next claim on these
            # hosts does not lose a race against this one. The use the store counted is
            # added to what this replica knows of it: a host whose use moved otherwise
            # (another replica) no longer matches, and is read again (`resync`).
            for change in changes:
                if change.host in self._hosts and change.host in self.index.hosts:
                    self._apply(change)
            for host, placement in claimed:
                host.usage = host.usage.plus(placement.size, placement.cpus)
            self._trim()
