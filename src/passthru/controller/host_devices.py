"""One host's devices loaded as core `PciDevice`s, changed by core rules, saved back.

Every change to a host's devices goes through here: inventory reports, claims and frees.
The host row is locked for the unit of work (PostgreSQL: SELECT ... FOR UPDATE; SQLite
transactions already hold the write lock), and device rows are written only where a field
differs, so each device's generation counts its real changes.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from passthru.controller.events import EventKind, record
from passthru.controller.mapping import (
    device_from_row,
    new_device_row,
    new_pool_row,
    pool_key_text,
    write_device,
)
from passthru.controller.models import DeviceRow, HostRow, PoolRow
from passthru.pci.device import DeviceStatus, PciDevice
from passthru.pci.pool import build_pools


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


@dataclass
class HostDevices:
    host: HostRow
    rows: dict[str, DeviceRow]
    devices: dict[str, PciDevice]

    @classmethod
    def load(cls, session: Session, host: HostRow) -> HostDevices:
        query = (select(DeviceRow).where(DeviceRow.host_id == host.id)
                 .options(selectinload(DeviceRow.pool)))
        rows = {row.address: row for row in session.scalars(query)}
        return cls(host, rows, {a: device_from_row(r) for a, r in rows.items()})

    def save(self, session: Session) -> None:
        """Write every device back and regroup the host's pools, in one flush so that
        each changed device row is updated (and its generation bumped) once."""
        with session.no_autoflush:
            for address, device in self.devices.items():
                row = self.rows.get(address)
                if row is None:
                    row = self.rows[address] = new_device_row(self.host.id, device)
                    session.add(row)
                else:
                    write_device(row, device)
            self._regroup(session)
        session.flush()

    def _regroup(self, session: Session) -> None:
        existing = {row.key: row for row in
                    session.scalars(select(PoolRow).where(PoolRow.host_id == self.host.id))}
        live = [d for d in self.devices.values() if d.status is not DeviceStatus.REMOVED]
        used: set[str] = set()
        for pool in build_pools(live, self.host.pool_attrs):
            key = pool_key_text(pool.key)
            used.add(key)
            row = existing.get(key)
            if row is None:
                row = existing[key] = new_pool_row(self.host.id, pool)
                session.add(row)
            for device in pool.devices:
                if self.rows[device.address].pool is not row:
                    self.rows[device.address].pool = row
        for device in self.devices.values():
            if device.status is DeviceStatus.REMOVED and self.rows[device.address].pool:
                self.rows[device.address].pool = None
        for key, row in existing.items():
            if key not in used:
                session.delete(row)
