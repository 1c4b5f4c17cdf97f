"""A host as the store holds it, in the form the scheduler and the device ledger share:
its status, capacity and use, its pools, and the row id and generation of each of its
devices (a claim succeeds only on rows still at the generation it read).

The scheduler's snapshot (`scheduler.snapshot`) reads hosts into this form, and the
ledger builds one from the rows it read (`ledger.whole_host`); neither imports the
other for it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Row

from passthru.controller.store.mapping import resources_from_json
from passthru.controller.store.models import HostRow, HostStatus
from passthru.pci.pool import Pool
from passthru.pci.resources import Capacity, Usage


@dataclass(slots=True)
class DeviceRef:
    """A device row as last seen: a claim only succeeds if it is still at `generation`."""

    id: int
    generation: int


@dataclass(frozen=True, slots=True)
class Fingerprint:
    """Changes whenever anything about a host's devices or status changes in the store."""

    up: bool
    devices: int
    generations: int
    #: Capacity and use: (vCPUs, MiB, GB) each, capacity None when not counted; and
    #: how many CPUs are pinned.
    capacity: tuple[int | None, int | None, int | None]
    used: tuple[int, int, int]
    pinned: int


@dataclass(slots=True)
class StoredHost:
    name: str
    id: int
    up: bool
    pools: list[Pool] = field(default_factory=list)
    #: Every device row of the host, pooled or not, by address, when they were read
    #: (`loaded`); else how many rows and the sum of their generations.
    refs: dict[str, DeviceRef] = field(default_factory=dict)
    loaded: bool = True
    rows: tuple[int, int] = (0, 0)
    #: None: the host reports no resources, and VMs are not counted against it.
    capacity: Capacity | None = None
    usage: Usage = field(default_factory=Usage)
    #: NUMA node → socket, from the host's reported CPUs.
    socket_of: dict[int, int] = field(default_factory=dict)

    @property
    def fingerprint(self) -> Fingerprint:
        capacity = ((self.capacity.vcpus, self.capacity.ram_mb, self.capacity.disk_gb)
                    if self.capacity is not None else (None, None, None))
        rows, generations = self.rows if not self.loaded else (
            len(self.refs), sum(r.generation for r in self.refs.values()))
        return Fingerprint(self.up, rows, generations, capacity,
                           (self.usage.vcpus, self.usage.ram_mb, self.usage.disk_gb),
                           len(self.usage.pinned))

    def unload(self) -> None:
        """Forget the device rows, keeping what the fingerprint needs of them."""
        if self.loaded:
            self.rows = (len(self.refs), sum(r.generation for r in self.refs.values()))
            self.refs, self.pools, self.loaded = {}, [], False

    def reload(self, read: StoredHost) -> None:
        """Take the device rows of `read` (the same host read again), keeping status,
        capacity and use as this replica knows them."""
        self.refs, self.pools, self.loaded = read.refs, read.pools, True



def stored_host(row: Row[*tuple[Any, ...]] | HostRow, pinned: set[int]) -> StoredHost:
    """A host row's StoredHost, without pools and refs: its status, capacity and use."""
    host = StoredHost(row.name, row.id, row.status is HostStatus.UP,
                      usage=Usage(row.vcpus_used, row.ram_mb_used, row.disk_gb_used,
                                  frozenset(pinned)))
    resources = resources_from_json(row.resources)
    if resources is not None:
        host.socket_of = resources.socket_of()
    if (resources is not None and row.vcpus_capacity is not None
            and row.ram_mb_capacity is not None and row.disk_gb_capacity is not None):
        # The columns are what the store's conditional claim checks against.
        whole = resources.capacity()
        host.capacity = Capacity(row.vcpus_capacity, row.ram_mb_capacity, row.disk_gb_capacity,
                                 whole.pinnable, whole.networks)
    return host
