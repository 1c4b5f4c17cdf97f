"""Reading what the scheduler needs from the store: hosts with their pools, the row id
and generation of every device (for conditional updates), and PCI flavors.

Rows are read with plain column selects, streamed host by host, so that loading a large
fleet at start-up builds no ORM objects.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator
from dataclasses import dataclass, field
from itertools import groupby

from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session

from passthru.controller.mapping import device_from_row
from passthru.controller.models import DeviceRow, HostRow, HostStatus, PciFlavorRow, PoolRow
from passthru.pci.flavor import PciFlavor
from passthru.pci.pool import Pool

_STREAM = 20_000


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


@dataclass(slots=True)
class StoredHost:
    name: str
    id: int
    up: bool
    pools: list[Pool] = field(default_factory=list)
    #: Every device row of the host, pooled or not, by address.
    refs: dict[str, DeviceRef] = field(default_factory=dict)

    @property
    def fingerprint(self) -> Fingerprint:
        return Fingerprint(self.up, len(self.refs), sum(r.generation for r in self.refs.values()))


def load_flavors(session: Session) -> dict[str, PciFlavor]:
    return {row.name: PciFlavor(row.name, row.spec, row.description, row.uuid)
            for row in session.scalars(select(PciFlavorRow))}


def load_hosts(session: Session, names: Collection[str] | None = None) -> Iterator[StoredHost]:
    """Hosts (all, or those named) with their pools and device refs, one at a time."""
    hosts_query = select(HostRow.id, HostRow.name, HostRow.status).order_by(HostRow.id)
    pools_query = select(PoolRow.__table__)
    devices_query = select(DeviceRow.__table__).order_by(DeviceRow.host_id, DeviceRow.id)
    if names is not None:
        wanted = select(HostRow.id).where(HostRow.name.in_(names)).scalar_subquery()
        hosts_query = hosts_query.where(HostRow.id.in_(wanted))
        pools_query = pools_query.where(PoolRow.host_id.in_(wanted))
        devices_query = devices_query.where(DeviceRow.host_id.in_(wanted))
    hosts = {row.id: StoredHost(row.name, row.id, row.status is HostStatus.UP)
             for row in session.execute(hosts_query)}
    pools = {row.id: Pool(dict(row.attrs), row.dev_type, row.numa_node, row.parent_addr)
             for row in session.execute(pools_query)}
    rows = session.execute(devices_query.execution_options(yield_per=_STREAM))
    seen: set[int] = set()
    for host_id, host_rows in groupby(rows, key=lambda row: row.host_id):
        host = hosts[host_id]
        members: dict[int, Pool] = {}
        for row in host_rows:
            host.refs[row.address] = DeviceRef(row.id, row.generation)
            if row.pool_id is not None:
                pool = members[row.pool_id] = pools[row.pool_id]
                pool.devices.append(device_from_row(row))
        host.pools = list(members.values())
        seen.add(host_id)
        yield host
    yield from (host for host_id, host in hosts.items() if host_id not in seen)


def fingerprints(session: Session) -> dict[str, Fingerprint]:
    """Every host's fingerprint, computed by the database in one pass."""
    query: Select[tuple[str, HostStatus, int, int]] = (
        select(HostRow.name, HostRow.status, func.count(DeviceRow.id),
               func.coalesce(func.sum(DeviceRow.generation), 0))
        .outerjoin(DeviceRow, DeviceRow.host_id == HostRow.id).group_by(HostRow.id))
    return {name: Fingerprint(status is HostStatus.UP, count, generations)
            for name, status, count, generations in session.execute(query)}
