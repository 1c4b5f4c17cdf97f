"""What changed between two scans of a host (the agent sends only this after its first
report), how the controller applies it, and how it checks a report before that.

A report is checked whole before any of it is applied: every device's numbers and texts
(`pci.device.field_problems`), its address and ids, its tag names, duplicate addresses,
and each VF's PF. The first `MAX_PROBLEMS` problems are named in one `ReportError`, each
with the device address and the field, so that a bad report is refused in full and
never half-applied.

A VF names its PF in `parent_addr`; the PF itself is reported only when the host's
whitelist takes it (usually it does not, and only its VFs are offered), so a PF that is
absent is fine. One that is present must be a PF: a VF whose parent is a VF (or itself)
would make a cycle of relatives. Applying a report is linear in the host's devices: the
VFs of each PF are looked up in one index, never by scanning every device per PF.
"""

from __future__ import annotations

import operator
import re
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from typing import Any

from passthru.errors import InvalidInputError
from passthru.pci.address import PciAddress
from passthru.pci.device import (
    IDENTITY,
    MAX_TAINT,
    TEXT_LENGTHS,
    DeviceStatus,
    DevType,
    PciDevice,
    field_problems,
    normalize_id,
    quote,
)
from passthru.pci.lifecycle import in_use
from passthru.pci.match import tag_key

# What the controller tracks about a device's use; a scan never reports these.
_TRACKED = {"status", "owner", "request_id", "missing", "taint"}
_DISCOVERED = tuple(f.name for f in fields(PciDevice) if f.name not in _TRACKED)
# Their values for a device no one uses (status, owner, request_id, missing, taint).
_UNTRACKED = (DeviceStatus.AVAILABLE, None, None, False, None)


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
    `missing` (gone while in use: kept until freed), `returned`, or `identity-changed`
    (another card at the address of one in use); `detail` says what changed."""

    kind: str
    address: str
    detail: str = ""


_ALL_FIELDS = operator.attrgetter(*(f.name for f in fields(PciDevice)))


def _fresh(device: PciDevice) -> PciDevice:
    """A copy of a reported device, free and untouched (`replace` is 5 times slower)."""
    fresh = PciDevice(*_ALL_FIELDS(device))
    fresh.tags = dict(fresh.tags)
    fresh.status, fresh.owner, fresh.request_id, fresh.missing, fresh.taint = _UNTRACKED
    return fresh


def _vfs_by_pf(devices: Iterable[PciDevice]) -> dict[str, list[PciDevice]]:
    children: dict[str, list[PciDevice]] = defaultdict(list)
    for device in devices:
        if device.dev_type is DevType.VF and device.parent_addr is not None:
            children[device.parent_addr].append(device)
    return children


def apply_delta(tracked: dict[str, PciDevice], delta: InventoryDelta) -> list[InventoryChange]:
    """Bring the controller's devices of one host in line with a report.

    A device that disappears while free is removed; one that disappears while in use is
    kept and flagged `missing`, and becomes removed when its owner frees it — never lost
    silently.
    """
    changes: list[InventoryChange] = []
    # A device that comes (back) next to a relative in use is unavailable: the PFs with a
    # VF in use, found once (added devices are never in use themselves).
    busy_pfs = {d.parent_addr for d in tracked.values()
                if d.dev_type is DevType.VF and in_use(d)}
    for device in delta.added + delta.changed:
        known = tracked.get(device.address)
        if known is None or known.status is DeviceStatus.REMOVED:
            fresh = tracked[device.address] = _fresh(device)
            if fresh.dev_type is DevType.VF:
                parent = tracked.get(fresh.parent_addr or "")
                blocked = parent is not None and in_use(parent)
            else:
                blocked = fresh.dev_type is DevType.PF and fresh.address in busy_pfs
            if blocked:
                fresh.status = DeviceStatus.UNAVAILABLE
            changes.append(InventoryChange("added", device.address))
            continue
        changes.append(_update(known, device))
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


def _update(known: PciDevice, device: PciDevice) -> InventoryChange:
    """Bring a tracked device in line with what the host reports of it now, and say what
    changed. A device in use whose identity changed is another card than the one its
    owner was given: that is an alarm, not an update."""
    changed = [name for name in _DISCOVERED if getattr(known, name) != getattr(device, name)]
    detail = "; ".join(f"{name} {_shown(getattr(known, name))} → {_shown(getattr(device, name))}"
                       for name in changed)
    owner = known.owner
    for name in changed:
        setattr(known, name, getattr(device, name))
    if known.missing:
        known.missing = False
        return InventoryChange("returned", device.address, detail)
    if owner is not None and in_use(known) and set(changed) & set(IDENTITY):
        # Tainted: the card the server holds is not the one it was given, and whatever
        # sits there now goes to no other VM until an operator has looked.
        known.taint = f"identity changed while server {owner} held it: {detail}"[:MAX_TAINT]
        return InventoryChange("identity-changed", device.address,
                               f"{detail}, while server {owner} holds it: check what was "
                               "put in that slot; the device is tainted until cleared")
    return InventoryChange("updated", device.address, detail)


def _shown(value: object) -> str:
    return "none" if value is None or value == "" else str(value)


#: How many problems a refused report names.
MAX_PROBLEMS = 10


class ReportError(InvalidInputError):
    """A report that is refused whole: `problems` are the first ones found, each naming
    the device address and the field."""

    def __init__(self, problems: Sequence[str], more: bool = False) -> None:
        self.problems = tuple(problems)
        listed = "; ".join(self.problems) + ("; and more" if more else "")
        super().__init__(f"the report is refused and nothing of it was applied: {listed}; "
                         "fix the agent's report")


class _Problems:
    """Problems collected up to `MAX_PROBLEMS` (a hostile report can have millions)."""

    def __init__(self) -> None:
        self.found: list[str] = []
        self.more = False

    def add(self, where: str, problem: str) -> None:
        if len(self.found) < MAX_PROBLEMS:
            self.found.append(f"{where}: {problem}")
        else:
            self.more = True

    def raise_any(self) -> None:
        if self.found:
            raise ReportError(self.found, self.more)


# What agents send (sysfs spells addresses so): taken as is, without parsing.
_CANONICAL = re.compile(r"[0-9a-f]{4}:[0-9a-f]{2}:[01][0-9a-f]\.[0-7]")
_CANONICAL_ID = re.compile(r"[0-9a-f]{4}")


def _address(text: str, name: str, where: str, problems: _Problems) -> str | None:
    if _CANONICAL.fullmatch(text):
        return text
    if len(text) > TEXT_LENGTHS["address"]:
        problems.add(where, f"{name} {quote(text)} is not a PCI address (DDDD:BB:SS.F)")
        return None
    try:
        return str(PciAddress.parse(text))
    except InvalidInputError as error:
        problems.add(where, f"{name}: {error}")
        return None


def _checked_device(device: PciDevice, index: int, problems: _Problems) -> PciDevice | None:
    """The device with canonical address, ids and tag names, and the store's own fields
    (status, owner, request) reset: they are the controller's business, not the agent's.
    None, with the problems noted, when anything in it is wrong."""
    address = _address(device.address, "address", f"device #{index}", problems)
    where = f"device {address or quote(device.address)}"
    bad = field_problems(device)
    for problem in bad:
        problems.add(where, problem)
    values: dict[str, Any] = {}
    if device.parent_addr is not None:
        parent = _address(device.parent_addr, "parent_addr", where, problems)
        if parent is None:
            bad.append("parent_addr")
        elif parent != device.parent_addr:
            values["parent_addr"] = parent
    for name in ("vendor_id", "product_id", "subsystem_vendor_id", "subsystem_device_id"):
        value = getattr(device, name)
        if value is None or len(str(value)) > TEXT_LENGTHS[name]:
            continue  # a missing subsystem id is fine; a long one is named above
        if isinstance(value, str) and _CANONICAL_ID.fullmatch(value):
            continue
        try:
            values[name] = normalize_id(value, name)
        except InvalidInputError as error:
            problems.add(where, str(error))
            bad.append(name)
    tags: dict[str, str] = {}
    for key, value in device.tags.items():
        try:
            tags[tag_key(key[:300], what="tag")] = value
        except InvalidInputError as error:
            problems.add(where, str(error))
            bad.append("tags")
    if address is None or bad:
        return None
    if address != device.address:
        values["address"] = address
    if tags != device.tags or list(tags) != list(device.tags):
        values["tags"] = tags
    if (device.status, device.owner, device.request_id, device.missing,
            device.taint) != _UNTRACKED:
        values.update(status=DeviceStatus.AVAILABLE, owner=None, request_id=None,
                      missing=False, taint=None)
    # Most reports are canonical already: the device is taken as it is, not copied.
    return replace(device, **values) if values else device


def _checked_devices(devices: Iterable[PciDevice], problems: _Problems) -> list[PciDevice]:
    checked: list[PciDevice] = []
    seen: set[str] = set()
    for index, device in enumerate(devices):
        fixed = _checked_device(device, index, problems)
        if fixed is None:
            continue
        if fixed.address in seen:
            problems.add(f"device {fixed.address}", "reported twice; each address may "
                         "appear once per report")
        seen.add(fixed.address)
        checked.append(fixed)
    return checked


def _check_family(vfs: Iterable[PciDevice], view: Mapping[str, PciDevice],
                  problems: _Problems) -> None:
    """Each VF names a PF: itself, a VF or a plain function would make a cycle."""
    for vf in vfs:
        if vf.dev_type is not DevType.VF:
            continue
        where = f"device {vf.address}"
        if vf.parent_addr is None:
            problems.add(where, "a VF needs its PF's address in parent_addr")
        elif vf.parent_addr == vf.address:
            problems.add(where, "parent_addr names the VF itself; it must name its PF")
        elif (parent := view.get(vf.parent_addr)) is not None and parent.dev_type is not DevType.PF:
            problems.add(where, f"parent_addr {vf.parent_addr} is a {parent.dev_type}, not a "
                         "PF; a VF's parent must be its PF")


def check_report(devices: Iterable[PciDevice]) -> list[PciDevice]:
    """A full report's devices, canonical; raises ReportError naming the first problems."""
    problems = _Problems()
    checked = _checked_devices(devices, problems)
    _check_family(checked, {d.address: d for d in checked}, problems)
    problems.raise_any()
    return checked


def check_delta(delta: InventoryDelta, known: Mapping[str, PciDevice]) -> InventoryDelta:
    """A delta, canonical, checked against `known` (the host's devices the store holds):
    what the host has once it is applied must make sense too."""
    problems = _Problems()
    devices = _checked_devices(delta.added + delta.changed, problems)
    removed = [a for text in delta.removed
               if (a := _address(text, "removed address", "delta", problems)) is not None]
    view = {a: d for a, d in known.items() if d.status is not DeviceStatus.REMOVED}
    for address in removed:
        view.pop(address, None)
    view.update((d.address, d) for d in devices)
    _check_family(devices, view, problems)
    # A PF that this delta makes something else must not leave VFs behind it.
    vfs = _vfs_by_pf(view.values())
    for device in devices:
        if device.dev_type is not DevType.PF:
            _check_family(vfs.get(device.address, ()), view, problems)
    problems.raise_any()
    added = len(delta.added)  # nothing was dropped: any problem raised above
    return InventoryDelta(devices[:added], devices[added:], removed)
