"""What agents tell the controller: full and delta inventories, heart-beats; and the
sweep that marks silent hosts down.

A report is checked whole (`pci.inventory.check_report`/`check_delta`) and is then
applied whole or not at all, through the device ledger (`controller.ledger`). A full
report is linear in the host's devices: one read of the host's rows, core rules in
memory, and bulk writes of what changed, so that a big report holds SQLite's one write
lock briefly. A delta reads only the devices it names and their PF/VF family, so it
costs what it changes, whatever the host's size.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from passthru.controller import ledger
from passthru.controller.enums import EventKind
from passthru.controller.store.events import record, record_devices
from passthru.controller.store.mapping import resources_json
from passthru.controller.store.models import HostRow, HostStatus, utcnow
from passthru.errors import ConflictError, InvalidInputError
from passthru.pci.device import DeviceStatus, PciDevice
from passthru.pci.inventory import (
    InventoryDelta,
    apply_delta,
    check_delta,
    check_report,
    diff_inventory,
)
from passthru.pci.pool import pool_attr
from passthru.pci.resources import HostResources


class StaleInventoryError(ConflictError):
    """A report built on a generation the store has moved past."""


def checked_pool_attrs(pool_attrs: Sequence[str]) -> list[str]:
    """The attributes pools may group by (`pci.pool.pool_attr`), in our spelling."""
    try:
        return [pool_attr(name) for name in pool_attrs]
    except InvalidInputError as error:
        raise InvalidInputError(f"{error}; fix the agent's pool_attrs") from None


def _apply(session: Session, host: HostRow, part: ledger.Part, delta: InventoryDelta,
           pool_attrs: Sequence[str]) -> ledger.HostChanges:
    changes = apply_delta(part.devices, delta)
    attrs_changed = list(pool_attrs) != host.pool_attrs
    if attrs_changed:
        host.pool_attrs = list(pool_attrs)
    if changes or attrs_changed:
        host.generation += 1
    record_devices(session, host.name, [
        (EventKind(f"device-{change.kind}"), change.address, change.detail)
        for change in changes])
    return ledger.save(session, part, pool_attrs, regroup_all=attrs_changed,
                       changed=[change.address for change in changes])


def _refuse_stale(host_name: str, host: HostRow | None, base_generation: int,
                  what: str) -> None:
    current = host.generation if host is not None else 0
    if base_generation != current:
        raise StaleInventoryError(
            f"host {host_name}: the {what} builds on generation {base_generation} but the "
            f"controller has generation {current}; heart-beat for the current generation "
            "and send a full report of what the host has now")


def report_full(session: Session, host_name: str, devices: Sequence[PciDevice],
                pool_attrs: Sequence[str], resources: HostResources | None = None, *,
                base_generation: int | None = None) -> HostRow:
    """Make the stored inventory of `host_name` what the agent sees now: its devices and
    its CPUs, memory and disk (None: the agent reports none, and VMs are not counted
    against the host).

    The report is checked whole before the first statement (so before SQLite's write
    lock is taken). `base_generation` is the generation the agent last got back (a host
    never reported has generation 0); a report built on another one is refused, as a
    stale delta is, so that a report delayed or replayed cannot bring back what the host
    has since removed. None (operators' tools, older agents): taken as it comes."""
    reported = check_report(devices)
    attrs = checked_pool_attrs(pool_attrs)
    host = ledger.lock_host(session, host_name)
    if base_generation is not None:
        _refuse_stale(host_name, host, base_generation, "full report")
    if host is None:
        host = ledger.lock_or_create_host(session, host_name)
    part = ledger.read_host(session, host.id, host.name)
    present = {a: d for a, d in part.devices.items() if d.status is not DeviceStatus.REMOVED}
    changes = _apply(session, host, part, diff_inventory(present, reported), attrs)
    if set_resources(session, host, resources) or changes.regrouped is not None:
        # A report of the whole host hands the scheduler the whole host: no store read.
        session.flush()
        changes.whole = ledger.whole_host(session, host, part)
    return host


def set_resources(session: Session, host: HostRow, resources: HostResources | None) -> bool:
    """Store what the host has and the capacity it gives; whether that changed. The VMs
    already counted stay counted even when the new capacity is below them (a host is
    never emptied by a report); claims simply find no room until enough of them are
    gone."""
    stored = resources_json(resources) if resources is not None else None
    if stored == host.resources:
        return False
    capacity = resources.capacity() if resources is not None else None
    host.resources = stored
    host.vcpus_capacity = capacity.vcpus if capacity else None
    host.ram_mb_capacity = capacity.ram_mb if capacity else None
    host.disk_gb_capacity = capacity.disk_gb if capacity else None
    if capacity is None:
        what = "no resources reported: VMs are not counted against the host"
    else:
        what = (f"capacity {capacity.vcpus} vCPUs, {capacity.ram_mb} MiB memory, "
                f"{capacity.disk_gb} GB disk")
        if (host.vcpus_used > capacity.vcpus or host.ram_mb_used > capacity.ram_mb
                or host.disk_gb_used > capacity.disk_gb):
            what += (f", below what its VMs hold ({host.vcpus_used} vCPUs, "
                     f"{host.ram_mb_used} MiB, {host.disk_gb_used} GB): they keep running, "
                     "new VMs go elsewhere")
    record(session, EventKind.HOST_RESOURCES, host=host.name, message=what)
    return True


def report_delta(session: Session, host_name: str, delta: InventoryDelta,
                 pool_attrs: Sequence[str], base_generation: int) -> HostRow:
    """Apply the changes an agent saw since `base_generation`, checked whole against what
    the store holds: refused in full, or applied in full."""
    attrs = checked_pool_attrs(pool_attrs)
    host = ledger.lock_host(session, host_name)
    if host is None:
        raise StaleInventoryError(f"host {host_name}: the delta builds on generation "
                                  f"{base_generation} but the controller has no inventory; "
                                  "send a full report")
    _refuse_stale(host_name, host, base_generation, "delta")
    if attrs != host.pool_attrs:
        # Every device may change pools: the whole host is read and handed over.
        part = ledger.read_host(session, host.id, host.name)
        changes = _apply(session, host, part, check_delta(delta, part.devices), attrs)
        session.flush()
        changes.whole = ledger.whole_host(session, host, part)
        return host
    # Only the devices named and their PF/VF family: all that checking and applying a
    # delta looks at (`check_delta`, `apply_delta`).
    reported = [*delta.added, *delta.changed]
    part = ledger.read_addresses(session, host.id, host.name,
                                 {d.address for d in reported} | set(delta.removed),
                                 around=reported)
    _apply(session, host, part, check_delta(delta, part.devices), attrs)
    return host


def host_state(session: Session, host_name: str) -> tuple[HostStatus, int] | None:
    """A host's status and inventory generation (None: a host not known yet), read
    without loading its row: an up host's heart-beat and every orders answer ask it."""
    known = session.execute(select(HostRow.status, HostRow.generation)
                            .where(HostRow.name == host_name)).one_or_none()
    return None if known is None else (known.status, known.generation)


def heartbeat(session: Session, host_name: str, now: datetime | None = None) -> HostRow:
    host = ledger.lock_or_create_host(session, host_name)
    host.last_heartbeat = now or utcnow()
    if host.status is not HostStatus.UP:
        host.status = HostStatus.UP
        record(session, EventKind.HOST_UP, host=host.name, message="heart-beat received")
    return host


def mark_silent_hosts_down(session: Session, timeout: float,
                           now: datetime | None = None) -> list[str]:
    """Hosts whose last heart-beat is older than `timeout` seconds go down.

    One conditional update: a heart-beat that commits while the sweep runs is seen (the
    database checks the condition again on the row it waited for), so a live host is
    never marked down behind its back."""
    limit = (now or utcnow()) - timedelta(seconds=timeout)
    silent = session.execute(
        update(HostRow).where(HostRow.status == HostStatus.UP, HostRow.last_heartbeat < limit)
        .values(status=HostStatus.DOWN)
        .returning(HostRow.name, HostRow.last_heartbeat)
        .execution_options(synchronize_session=False)).all()
    for name, last in sorted(silent):
        record(session, EventKind.HOST_DOWN, host=name,
               message=f"no heart-beat since {last:%Y-%m-%d %H:%M:%S} UTC")
    ledger.record_down(session, (name for name, _ in silent))
    return sorted(name for name, _ in silent)
