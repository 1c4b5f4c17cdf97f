"""What agents tell the controller: full and delta inventories, heart-beats; and the
sweep that marks silent hosts down."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime, timedelta

from sqlalchemy import update
from sqlalchemy.orm import Session

from passthru.controller.events import EventKind, record
from passthru.controller.host_devices import HostDevices, lock_host, lock_or_create_host
from passthru.controller.mapping import resources_json
from passthru.controller.models import HostRow, HostStatus, utcnow
from passthru.pci.address import PciAddress
from passthru.pci.device import DeviceStatus, PciDevice, normalize_id
from passthru.pci.errors import PassthruError, PciValueError
from passthru.pci.inventory import InventoryDelta, apply_delta, diff_inventory
from passthru.pci.match import tag_key
from passthru.pci.resources import HostResources


class StaleInventoryError(PassthruError):
    """A delta built on a generation the store has moved past."""


def canonical_address(text: str) -> str:
    return str(PciAddress.parse(text))


def checked_device(device: PciDevice) -> PciDevice:
    """A reported device with normalised ids and tag names; the store's own fields
    (status, owner, request) are the controller's business and reset here."""
    where = f"device {device.address}"
    try:
        subsystem = {name: normalize_id(value, f"{where}: {name}")
                     for name in ("subsystem_vendor_id", "subsystem_device_id")
                     if (value := getattr(device, name)) is not None}
        return replace(
            device,
            address=canonical_address(device.address),
            parent_addr=(canonical_address(device.parent_addr)
                         if device.parent_addr is not None else None),
            vendor_id=normalize_id(device.vendor_id, f"{where}: vendor_id"),
            product_id=normalize_id(device.product_id, f"{where}: product_id"),
            tags={tag_key(k, what=f"{where}: tag"): v for k, v in device.tags.items()},
            status=DeviceStatus.AVAILABLE, owner=None, request_id=None, missing=False,
            **subsystem)
    except PciValueError as error:
        raise PciValueError(f"{error}; fix the agent's report") from None


def _apply(session: Session, host: HostRow, state: HostDevices, delta: InventoryDelta,
           pool_attrs: Sequence[str]) -> None:
    changes = apply_delta(state.devices, delta)
    attrs_changed = list(pool_attrs) != host.pool_attrs
    if attrs_changed:
        host.pool_attrs = list(pool_attrs)
    if changes or attrs_changed:
        host.generation += 1
    for change in changes:
        record(session, EventKind(f"device-{change.kind}"), host=host.name, device=change.address)
    state.save(session)


def report_full(session: Session, host_name: str, devices: Sequence[PciDevice],
                pool_attrs: Sequence[str], resources: HostResources | None = None) -> HostRow:
    """Make the stored inventory of `host_name` what the agent sees now: its devices and
    its CPUs, memory and disk (None: the agent reports none, and VMs are not counted
    against the host)."""
    reported = [checked_device(d) for d in devices]
    _refuse_duplicates(reported)
    host = lock_or_create_host(session, host_name)
    state = HostDevices.load(session, host)
    present = {a: d for a, d in state.devices.items() if d.status is not DeviceStatus.REMOVED}
    _apply(session, host, state, diff_inventory(present, reported), pool_attrs)
    set_resources(session, host, resources)
    return host


def set_resources(session: Session, host: HostRow, resources: HostResources | None) -> None:
    """Store what the host has and the capacity it gives. The VMs already counted stay
    counted even when the new capacity is below them (a host is never emptied by a
    report); claims simply find no room until enough of them are gone."""
    stored = resources_json(resources) if resources is not None else None
    if stored == host.resources:
        return
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


def report_delta(session: Session, host_name: str, delta: InventoryDelta,
                 pool_attrs: Sequence[str], base_generation: int) -> HostRow:
    """Apply the changes an agent saw since `base_generation`."""
    host = lock_host(session, host_name)
    if host is None or host.generation != base_generation:
        current = "no inventory" if host is None else f"generation {host.generation}"
        raise StaleInventoryError(
            f"host {host_name}: the delta builds on generation {base_generation} but the "
            f"controller has {current}; send a full report")
    checked = InventoryDelta([checked_device(d) for d in delta.added],
                             [checked_device(d) for d in delta.changed],
                             [canonical_address(a) for a in delta.removed])
    _refuse_duplicates(checked.added + checked.changed)
    _apply(session, host, HostDevices.load(session, host), checked, pool_attrs)
    return host


def _refuse_duplicates(devices: Sequence[PciDevice]) -> None:
    seen: set[str] = set()
    for device in devices:
        if device.address in seen:
            raise PciValueError(f"device {device.address} is reported twice; "
                                "each address may appear once per report")
        seen.add(device.address)


def heartbeat(session: Session, host_name: str, now: datetime | None = None) -> HostRow:
    host = lock_or_create_host(session, host_name)
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
    return sorted(name for name, _ in silent)
