"""One host's devices loaded as core `PciDevice`s, changed by core rules, saved back.

Every change to a host's devices goes through here: inventory reports, claims and frees.
The host row is locked for the unit of work (PostgreSQL: SELECT ... FOR UPDATE; SQLite
transactions already hold the write lock), and device rows are written only where a field
differs, so each device's generation counts its real changes.

Reads and writes are bulk Core statements, not ORM objects: a report may carry 65,536
devices, and one ORM object per row (its construction, its change tracking, its flush)
cost several times what the statements do (bench/reports.py). Each row is updated on
the generation it was read at, as the scheduler's claims update it, so a claim that
commits in between makes the save fail (StaleDataError, answered 409) rather than be
overwritten.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from itertools import islice
from typing import Any

from sqlalchemy import bindparam, delete, insert, select, update
from sqlalchemy.orm import Session
from sqlalchemy.orm.exc import StaleDataError

from passthru.controller.enums import EventKind
from passthru.controller.events import record
from passthru.controller.mapping import (
    DEVICE_FIELDS,
    device_from_values,
    device_values,
    pool_key_text,
    pool_record,
)
from passthru.controller.models import DeviceRow, HostRow, PciRequestRow, PoolRow
from passthru.pci.device import DeviceStatus, PciDevice
from passthru.pci.pool import build_pools

_DEVICES = DeviceRow.__table__
_POOLS = PoolRow.__table__
# The ids of rows an IN list names at once: well below SQLite's bound on parameters.
_CHUNK = 1000

_NEW = tuple(f"new_{name}" for name in DEVICE_FIELDS)
_UPDATE = (update(_DEVICES)
           .where(_DEVICES.c.id == bindparam("row_id"),
                  _DEVICES.c.generation == bindparam("seen"))
           .values(generation=bindparam("seen") + 1, pool_id=bindparam("new_pool_id"),
                   **{name: bindparam(new) for name, new in zip(DEVICE_FIELDS, _NEW,
                                                                 strict=True)}))


def lock_host(session: Session, name: str) -> HostRow | None:
    """The host row, locked for the rest of this transaction."""
    return session.scalars(select(HostRow).where(HostRow.name == name).with_for_update()
                           ).one_or_none()


def lock_or_create_host(session: Session, name: str) -> HostRow:
    host = lock_host(session, name)
    if host is None:
        host = HostRow(name=name, pool_attrs=[])
        session.add(host)
        session.flush()
        record(session, EventKind.HOST_ADDED, host=name, message="first report from its agent")
    return host


def _chunks(items: Sequence[int]) -> Iterator[list[int]]:
    iterator = iter(items)
    while chunk := list(islice(iterator, _CHUNK)):
        yield chunk


@dataclass(frozen=True, slots=True)
class _Stored:
    """A device row as it was read: what a save compares with and updates on."""

    id: int
    generation: int
    pool_id: int | None
    values: tuple[Any, ...]


@dataclass
class HostDevices:
    """Load once, change `devices` with core rules, save once."""

    host: HostRow
    devices: dict[str, PciDevice]
    _stored: dict[str, _Stored] = field(default_factory=dict, repr=False)

    @classmethod
    def load(cls, session: Session, host: HostRow) -> HostDevices:
        columns = [_DEVICES.c.id, _DEVICES.c.generation, _DEVICES.c.pool_id,
                   *(_DEVICES.c[name] for name in DEVICE_FIELDS)]
        devices: dict[str, PciDevice] = {}
        stored: dict[str, _Stored] = {}
        for row in session.execute(select(*columns).where(_DEVICES.c.host_id == host.id)):
            device = device_from_values(row[3:])
            devices[device.address] = device
            stored[device.address] = _Stored(row[0], row[1], row[2], device_values(device))
        return cls(host, devices, stored)

    def save(self, session: Session) -> None:
        """Write back every device that changed, and regroup the host's pools: new rows
        in one insert, changed ones in one update (each on the generation it was read
        at), pools no device is left in deleted."""
        session.flush()  # the ORM's pending changes first: the statements below follow
        pool_of, unused = self._regroup(session)
        new: list[dict[str, Any]] = []
        changed: list[dict[str, Any]] = []
        for address, device in self.devices.items():
            values, pool_id = device_values(device), pool_of.get(address)
            was = self._stored.get(address)
            if was is None:
                new.append({**dict(zip(DEVICE_FIELDS, values, strict=True)),
                            "host_id": self.host.id, "pool_id": pool_id, "generation": 1})
            elif values != was.values or pool_id != was.pool_id:
                changed.append({"row_id": was.id, "seen": was.generation,
                                "new_pool_id": pool_id,
                                **dict(zip(_NEW, values, strict=True))})
        if changed:
            updated = session.execute(_UPDATE, changed).rowcount
            if updated != len(changed):
                raise StaleDataError(f"{len(changed) - updated} devices of host "
                                     f"{self.host.name} changed while this was applied")
        if new:
            session.execute(insert(_DEVICES), new)
        for chunk in _chunks(unused):
            session.execute(delete(_POOLS).where(_POOLS.c.id.in_(chunk)))
        self._stored.clear()  # saved once: what it compared with is gone
        _expire(session, self.host)

    def _regroup(self, session: Session) -> tuple[dict[str, int], list[int]]:
        """Each live device's pool id (new pools inserted), and the pools left unused."""
        existing = dict(session.execute(
            select(_POOLS.c.key, _POOLS.c.id).where(_POOLS.c.host_id == self.host.id)).all())
        live = [d for d in self.devices.values() if d.status is not DeviceStatus.REMOVED]
        pools = build_pools(live, self.host.pool_attrs)
        keys = [pool_key_text(pool.key) for pool in pools]
        fresh = [pool_record(self.host.id, pool) for pool, key in zip(pools, keys, strict=True)
                 if key not in existing]
        if fresh:
            existing.update(session.execute(
                insert(_POOLS).returning(_POOLS.c.key, _POOLS.c.id), fresh).all())
        pool_of = {device.address: existing[key]
                   for pool, key in zip(pools, keys, strict=True) for device in pool.devices}
        used = {existing[key] for key in keys}
        return pool_of, [pool_id for pool_id in existing.values() if pool_id not in used]


def _expire(session: Session, host: HostRow) -> None:
    """ORM objects this session holds of what the statements changed are read again."""
    for obj in list(session.identity_map.values()):
        if isinstance(obj, DeviceRow | PoolRow | PciRequestRow) or obj is host:
            session.expire(obj, None if obj is not host else ["pools", "devices"])

