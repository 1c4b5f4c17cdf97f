"""What changed between two scans of a host: the agent sends only this after its first report."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields, replace

from passthru.pci.claims import in_use, relatives
from passthru.pci.device import DeviceStatus, PciDevice

# What the controller tracks about a device's use; a scan never reports these.
_TRACKED = {"status", "owner", "request_id", "missing"}
_DISCOVERED = tuple(f.name for f in fields(PciDevice) if f.name not in _TRACKED)


def same_hardware(a: PciDevice, b: PciDevice) -> bool:
    """Whether two records describe the same discovered device (use is ignored)."""
    return all(getattr(a, name) == getattr(b, name) for name in _DISCOVERED)


@dataclass(slots=True)
class InventoryDelta:
    added: list[PciDevice] = field(default_factory=list)
    changed: list[PciDevice] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.added or self.changed or self.removed)


def diff_inventory(
    previous: Mapping[str, PciDevice], current: Iterable[PciDevice]
) -> InventoryDelta:
    """Devices that appeared, whose discovered properties changed, or that disappeared."""
    delta = InventoryDelta()
    seen: set[str] = set()
    for device in current:
        seen.add(device.address)
        before = previous.get(device.address)
        if before is None:
            delta.added.append(device)
        elif not same_hardware(before, device):
            delta.changed.append(device)
    delta.removed = sorted(address for address in previous if address not in seen)
    return delta


@dataclass(frozen=True, slots=True)
class InventoryChange:
    """One consequence of a report, worth an event: `added`, `updated`, `removed`,
    `missing` (gone while in use: kept until freed) or `returned`."""

    kind: str
    address: str


def apply_delta(tracked: dict[str, PciDevice], delta: InventoryDelta) -> list[InventoryChange]:
    """Bring the controller's devices of one host in line with a report.

    A device that disappears while free is removed; one that disappears while in use is
    kept and flagged `missing`, and becomes removed when its owner frees it — never lost
    silently.
    """
    changes: list[InventoryChange] = []
    for device in delta.added + delta.changed:
        known = tracked.get(device.address)
        if known is None or known.status is DeviceStatus.REMOVED:
            fresh = tracked[device.address] = replace(
                device, status=DeviceStatus.AVAILABLE, owner=None, request_id=None, missing=False)
            if any(in_use(r) for r in relatives(fresh, tracked)):
                fresh.status = DeviceStatus.UNAVAILABLE
            changes.append(InventoryChange("added", device.address))
            continue
        for name in _DISCOVERED:
            setattr(known, name, getattr(device, name))
        if known.missing:
            known.missing = False
            changes.append(InventoryChange("returned", device.address))
        else:
            changes.append(InventoryChange("updated", device.address))
    for address in delta.removed:
        known = tracked.get(address)
        if known is None or known.status is DeviceStatus.REMOVED:
            continue
        if in_use(known):
            if not known.missing:
                known.missing = True
                changes.append(InventoryChange("missing", address))
        else:
            known.status = DeviceStatus.REMOVED
            changes.append(InventoryChange("removed", address))
    return changes
