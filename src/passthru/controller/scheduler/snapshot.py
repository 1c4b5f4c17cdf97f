"""Reading what the scheduler needs from the store: hosts with their pools, the row id
and generation of every device (for conditional updates), their capacity, what VMs use
of it and the CPUs they pinned, the NUMA node → socket map of their CPUs, and PCI flavors.

Start-up reads no device row: `load_summaries` has the database count each pool's
devices by status (one GROUP BY over the device table), which is all the scheduler's
shapes and the views need. A host's device rows (`load_hosts`) are read when a decision
or a change needs them. Rows are read with plain column selects, so that neither path
builds ORM objects.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterator
from itertools import groupby
from operator import itemgetter
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    Label,
    Select,
    SQLColumnExpression,
    Text,
    bindparam,
    case,
    cast,
    func,
    select,
)
from sqlalchemy.orm import Session

from passthru.controller.scheduler.index import PoolCount
from passthru.controller.store.mapping import DEVICE_FIELDS, device_from_values
from passthru.controller.store.models import (
    CpuPinRow,
    DeviceRow,
    HostRow,
    HostStatus,
    PciFlavorRow,
    PoolRow,
)
from passthru.controller.store.stored_host import DeviceRef, Fingerprint, StoredHost, stored_host
from passthru.pci.device import DeviceStatus, DevType
from passthru.pci.flavor import PciFlavor
from passthru.pci.pool import Pool, Signature

_STREAM = 20_000


def load_flavors(session: Session) -> dict[str, PciFlavor]:
    return {row.name: PciFlavor(row.name, row.spec, row.description, row.uuid)
            for row in session.scalars(select(PciFlavorRow))}


def _host_queries(named: bool) -> tuple[Select[*tuple[Any, ...]], ...]:
    """load_hosts' statements (for the hosts named in bind parameter `names`): made once,
    as building a statement cost more than running it for one host."""
    hosts_query = select(HostRow.id, HostRow.name, HostRow.status, HostRow.resources,
                         HostRow.vcpus_capacity, HostRow.ram_mb_capacity,
                         HostRow.disk_gb_capacity, HostRow.vcpus_used, HostRow.ram_mb_used,
                         HostRow.disk_gb_used).order_by(HostRow.id)
    pools_query = select(PoolRow.__table__)
    # Positional columns, the device's in DEVICE_FIELDS order: a big host has 65,536
    # devices, and reading rows by attribute name cost more than the query.
    table = DeviceRow.__table__
    devices_query = select(table.c.host_id, table.c.id, table.c.generation, table.c.pool_id,
                           *(table.c[name] for name in DEVICE_FIELDS)
                           ).order_by(table.c.host_id, table.c.id)
    pins_query = select(CpuPinRow.host_id, CpuPinRow.cpu)
    if named:
        wanted = (select(HostRow.id).where(HostRow.name.in_(bindparam("names", expanding=True)))
                  .scalar_subquery())
        hosts_query = hosts_query.where(HostRow.id.in_(wanted))
        pools_query = pools_query.where(PoolRow.host_id.in_(wanted))
        devices_query = devices_query.where(DeviceRow.host_id.in_(wanted))
        pins_query = pins_query.where(CpuPinRow.host_id.in_(wanted))
    return (hosts_query, pools_query, devices_query.execution_options(yield_per=_STREAM),
            pins_query)


_ALL_HOSTS, _NAMED_HOSTS = _host_queries(named=False), _host_queries(named=True)


def load_hosts(session: Session, names: Collection[str] | None = None) -> Iterator[StoredHost]:
    """Hosts (all, or those named) with their pools, device refs, capacity and usage, one
    at a time."""
    hosts_query, pools_query, devices_query, pins_query = (
        _ALL_HOSTS if names is None else _NAMED_HOSTS)
    values = {} if names is None else {"names": sorted(names)}
    # Core statements on the connection, as in `load_summaries`: a decision on a host not
    # loaded waits for this read.
    connection = session.connection()
    pins = _pins(connection, pins_query, values)
    hosts = {row.id: stored_host(row, pins.get(row.id, set()))
             for row in connection.execute(hosts_query, values)}
    pools = {row.id: Pool(dict(row.attrs), row.dev_type, row.numa_node, row.parent_addr)
             for row in connection.execute(pools_query, values)}
    rows = connection.execute(devices_query, values)
    seen: set[int] = set()
    for host_id, host_rows in groupby(rows, key=itemgetter(0)):
        host = hosts[host_id]
        members: dict[int, Pool] = {}
        for row in host_rows:
            _, row_id, generation, pool_id = row[:4]
            device = device_from_values(row[4:])
            host.refs[device.address] = DeviceRef(row_id, generation)
            if pool_id is not None:
                pool = members[pool_id] = pools[pool_id]
                pool.devices.append(device)
        host.pools = list(members.values())
        seen.add(host_id)
        yield host
    yield from (host for host_id, host in hosts.items() if host_id not in seen)


def _summary_queries(named: bool) -> tuple[Select[*tuple[Any, ...]], ...]:
    """load_summaries' statements (for the hosts named in bind parameter `names`), made
    once: building one cost more than running it for one host."""
    table = DeviceRow.__table__
    status = table.c.status
    wanted = (select(HostRow.id).where(HostRow.name.in_(bindparam("names", expanding=True)))
              .scalar_subquery() if named else None)

    def of_hosts(query: Select[*tuple[Any, ...]], column: SQLColumnExpression[int]
                 ) -> Select[*tuple[Any, ...]]:
        return query.where(column.in_(wanted)) if wanted is not None else query

    def how_many(condition: ColumnElement[bool]) -> Label[int]:
        return func.sum(case((condition, 1), else_=0)).label(None)

    counting = (select(table.c.pool_id, func.count().label("rows"),
                       func.sum(table.c.generation).label("generations"),
                       how_many(status != DeviceStatus.REMOVED).label("count"),
                       how_many((status == DeviceStatus.AVAILABLE) & table.c.taint.is_(None)
                                ).label("free"),
                       how_many(status.in_([DeviceStatus.CLAIMED, DeviceStatus.ALLOCATED])
                                ).label("used"))
                .where(table.c.pool_id.is_not(None)))
    counted = of_hosts(counting, table.c.host_id).group_by(table.c.pool_id).subquery()
    # The attributes as the database's text: decoded once per distinct value.
    pools_query = (select(PoolRow.host_id, cast(PoolRow.attrs, Text), PoolRow.dev_type,
                          PoolRow.numa_node, PoolRow.parent_addr, counted.c.count,
                          counted.c.free, counted.c.used, counted.c.rows,
                          counted.c.generations)
                   .join(counted, counted.c.pool_id == PoolRow.id).order_by(PoolRow.id))
    unpooled = of_hosts(select(table.c.host_id, func.count(), func.sum(table.c.generation))
                        .where(table.c.pool_id.is_(None)), table.c.host_id
                        ).group_by(table.c.host_id)
    hosts_query = of_hosts(select(HostRow.id, HostRow.name, HostRow.status, HostRow.resources,
                                  HostRow.vcpus_capacity, HostRow.ram_mb_capacity,
                                  HostRow.disk_gb_capacity, HostRow.vcpus_used,
                                  HostRow.ram_mb_used, HostRow.disk_gb_used),
                           HostRow.id).order_by(HostRow.id)
    pins_query = of_hosts(select(CpuPinRow.host_id, CpuPinRow.cpu), CpuPinRow.host_id)
    return pins_query, unpooled, pools_query, hosts_query


_ALL_SUMMARIES, _NAMED_SUMMARIES = _summary_queries(named=False), _summary_queries(named=True)


def load_summaries(session: Session, names: Collection[str] | None = None
                   ) -> Iterator[tuple[StoredHost, list[PoolCount]]]:
    """Hosts (all, or those named) with their pools counted by the database (one GROUP
    BY over the device rows, joined to the pools), no device row read: the hosts come
    back not `loaded`. Pools with the same attributes share one attribute dict and
    signature (a fleet has few kinds of device, and 100k hosts many pools)."""
    pins_query, unpooled, pools_query, hosts_query = (
        _ALL_SUMMARIES if names is None else _NAMED_SUMMARIES)
    values = {} if names is None else {"names": sorted(names)}
    # Core statements on the connection: the ORM's result machinery cost more than the
    # database's GROUP BY.
    connection = session.connection()
    pins = _pins(connection, pins_query, values)
    rows: dict[int, list[int]] = {host_id: [count, generations] for host_id, count, generations
                                  in connection.execute(unpooled, values)}
    kinds: dict[tuple[str, DevType], tuple[dict[str, str], Signature]] = {}
    pools: dict[int, list[PoolCount]] = {}
    for (host_id, attrs_text, dev_type, numa_node, parent_addr, count, free, used, in_pool,
         generations) in connection.execute(pools_query, values):
        kind = kinds.get((attrs_text, dev_type))
        if kind is None:
            attrs = json.loads(attrs_text)
            kind = kinds[attrs_text, dev_type] = (
                attrs, Signature(tuple(sorted(attrs.items())), dev_type))
        pools.setdefault(host_id, []).append(
            PoolCount(Pool(kind[0], dev_type, numa_node, parent_addr), count, free, used,
                      kind[1]))
        host_rows = rows.setdefault(host_id, [0, 0])
        host_rows[0] += in_pool
        host_rows[1] += generations
    for row in connection.execute(hosts_query, values):
        host = stored_host(row, pins.get(row.id, set()))
        count, generations = rows.get(row.id, (0, 0))
        host.loaded, host.rows = False, (count, generations)
        yield host, pools.get(row.id, [])


def _pins(connection: Connection, query: Select[*tuple[Any, ...]], values: dict[str, Any]
          ) -> dict[int, set[int]]:
    """The pinned CPUs of each host `query` selects, by host id."""
    pins: dict[int, set[int]] = {}
    for host_id, cpu in connection.execute(query, values):
        pins.setdefault(host_id, set()).add(cpu)
    return pins


def fingerprints(session: Session) -> dict[str, Fingerprint]:
    """Every host's fingerprint, computed by the database in one pass."""
    pinned = (select(func.count()).select_from(CpuPinRow)
              .where(CpuPinRow.host_id == HostRow.id).correlate(HostRow).scalar_subquery())
    query: Select[*tuple[Any, ...]] = (
        select(HostRow.name, HostRow.status, func.count(DeviceRow.id),
               func.coalesce(func.sum(DeviceRow.generation), 0),
               HostRow.vcpus_capacity, HostRow.ram_mb_capacity, HostRow.disk_gb_capacity,
               HostRow.vcpus_used, HostRow.ram_mb_used, HostRow.disk_gb_used, pinned)
        .outerjoin(DeviceRow, DeviceRow.host_id == HostRow.id).group_by(HostRow.id))
    return {row[0]: Fingerprint(row[1] is HostStatus.UP, row[2], row[3],
                                (row[4], row[5], row[6]), (row[7], row[8], row[9]), row[10])
            for row in session.execute(query)}
