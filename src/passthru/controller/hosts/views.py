"""What the admin views read of the fleet from the store: pages of hosts, of their
devices and of their pools, which hosts are not up, and the counts the fleet summary
gives. The routers (`api.hosts`, `api.fleet`) add the scheduler's counts and render.

Host and pool rows come back as plain records (`Record`: named columns, no ORM object),
since a page of 1,000 hosts is read for its columns only.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import ColumnElement, Row, func, select
from sqlalchemy.orm import Session

from passthru.controller.store.models import (
    DeviceRow,
    EventRow,
    HostRow,
    HostStatus,
    PoolRow,
    ServerRow,
    ServerStatus,
)
from passthru.controller.store.paging import Window, by, keyset, split
from passthru.pci.device import DeviceStatus

#: A row of named columns (`record.name`, `record._asdict()`).
Record = Row[*tuple[Any, ...]]

_HOST_COLUMNS = (HostRow.name, HostRow.status, HostRow.last_heartbeat, HostRow.generation,
                 HostRow.pool_attrs, HostRow.vcpus_capacity, HostRow.vcpus_used,
                 HostRow.ram_mb_capacity, HostRow.ram_mb_used, HostRow.disk_gb_capacity,
                 HostRow.disk_gb_used)


def host_page(session: Session, page: Window, status: HostStatus | None
              ) -> tuple[list[Record], bool]:
    """Hosts by name (the marker is a host's name), in `status` if given."""
    scope = [] if status is None else [HostRow.status == status]
    query = keyset(session, select(*_HOST_COLUMNS).where(*scope), (HostRow.name,), page,
                   "host", "name", by(HostRow.name, scope=scope))
    return split(session.execute(query).all(), page)


def host_record(session: Session, name: str) -> Record | None:
    return session.execute(select(*_HOST_COLUMNS).where(HostRow.name == name)).one_or_none()


def host_names_page(session: Session, page: Window) -> tuple[list[str], bool]:
    query = keyset(session, select(HostRow.name), (HostRow.name,), page, "host", "name",
                   by(HostRow.name))
    return split(session.scalars(query).all(), page)


def _device_marker(marker: str) -> list[ColumnElement[bool]]:
    host, slash, address = marker.rpartition("/")
    if not slash:
        raise ValueError(marker)
    return [HostRow.name == host, DeviceRow.address == address, DeviceRow.host_id == HostRow.id]


def device_page(session: Session, page: Window, host: str | None,
                status: DeviceStatus | None) -> tuple[list[tuple[DeviceRow, str]], bool]:
    """Devices with their host's name, by host name then address (the marker is
    HOST/ADDRESS), of `host` and in `status` if given."""
    query = select(DeviceRow, HostRow.name).join(HostRow)
    if host is not None:
        query = query.where(HostRow.name == host)
    if status is not None:
        query = query.where(DeviceRow.status == status)
    query = keyset(session, query, (HostRow.name, DeviceRow.address), page, "device",
                   "HOST/ADDRESS", _device_marker)
    rows, more = split(session.execute(query).all(), page)
    return [(row, name) for row, name in rows], more


def pool_page(session: Session, page: Window, host: str | None
              ) -> tuple[list[Record], bool]:
    """Pools (what makes up each one's key, its host's name and status), by host name
    then pool id (the marker is a pool id), of `host` if given."""
    query = select(PoolRow.id, PoolRow.attrs, PoolRow.dev_type, PoolRow.numa_node,
                   PoolRow.parent_addr, HostRow.name, HostRow.status).join(HostRow)
    if host is not None:
        query = query.where(HostRow.name == host)
    query = keyset(session, query, (HostRow.name, PoolRow.id), page, "pool", "id",
                   lambda marker: [PoolRow.id == int(marker), PoolRow.host_id == HostRow.id])
    return split(session.execute(query).all(), page)


def hosts_not_up(session: Session) -> set[str]:
    """The hosts the store has not up: few, as a rule."""
    return set(session.scalars(select(HostRow.name).where(HostRow.status != HostStatus.UP)))


def host_count(session: Session) -> int:
    return session.scalar(select(func.count()).select_from(HostRow)) or 0


def servers_by_status(session: Session) -> dict[ServerStatus, int]:
    """How many servers are in each status but DELETED."""
    counted: Sequence[Record] = session.execute(
        select(ServerRow.status, func.count()).where(ServerRow.status != ServerStatus.DELETED)
        .group_by(ServerRow.status)).all()
    return {status: count for status, count in counted}


def newest_event(session: Session) -> int | None:
    return session.scalar(select(func.max(EventRow.id)))
