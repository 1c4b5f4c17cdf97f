"""The devices' lifecycle: available → claimed → allocated → available, keeping a PF and
its VFs mutually exclusive (while one is held the other is unavailable).
"""

from __future__ import annotations

from collections.abc import Mapping

from passthru.errors import ConflictError
from passthru.pci.device import DeviceStatus, DevType, PciDevice
from passthru.pci.fit import Selection


class ClaimError(ConflictError):
    """A lifecycle step that the device's status does not allow."""


def relatives(device: PciDevice, devices: Mapping[str, PciDevice]) -> list[PciDevice]:
    """A VF's PF, or a PF's VFs: the devices that cannot be used at the same time."""
    if (device.dev_type is DevType.VF and device.parent_addr is not None
            and device.parent_addr in devices):
        return [devices[device.parent_addr]]
    if device.dev_type is DevType.PF:
        return [d for d in devices.values()
                if d.dev_type is DevType.VF and d.parent_addr == device.address]
    return []


#: The tag of Nova's one-time-use devices: once freed, one waits for an operator.
ONE_TIME_USE = "e.one_time_use"
#: The taint a one-time-use device gets when its first VM frees it.
USED_ONCE = "used once (one_time_use): an operator clears it once it is fit for another VM"


def in_use(device: PciDevice) -> bool:
    return device.status in (DeviceStatus.CLAIMED, DeviceStatus.ALLOCATED)


def claim(devices: Mapping[str, PciDevice], selection: Selection, owner: str) -> list[PciDevice]:
    """available → claimed for every selected device; their PF/VF relatives become
    unavailable. Returns every device whose status changed."""
    changed: list[PciDevice] = []
    for request_id, picked in selection.devices.items():
        for chosen in picked:
            device = devices[chosen.address]
            if not device.is_free:
                state = (f"tainted ({device.taint})" if device.taint is not None
                         else f"{device.status}, not available")
                raise ClaimError(f"device {device.address} is {state}; it was taken or "
                                 "tainted since the host was chosen — choose again")
            device.status, device.owner, device.request_id = (
                DeviceStatus.CLAIMED, owner, request_id)
            changed.append(device)
            for relative in relatives(device, devices):
                if relative.status is DeviceStatus.AVAILABLE:
                    relative.status = DeviceStatus.UNAVAILABLE
                    changed.append(relative)
    return changed


def allocate(devices: Mapping[str, PciDevice], owner: str) -> list[PciDevice]:
    """claimed → allocated for the owner's devices, once the VM runs with them."""
    changed = []
    for device in devices.values():
        if device.owner == owner and device.status is DeviceStatus.CLAIMED:
            device.status = DeviceStatus.ALLOCATED
            changed.append(device)
    return changed


def free(devices: Mapping[str, PciDevice], owner: str) -> list[PciDevice]:
    """Release everything the owner holds. Relatives come back once nothing blocks them;
    a device the host no longer reports becomes `removed` instead of available."""
    changed: list[PciDevice] = []
    released = [d for d in devices.values() if d.owner == owner and in_use(d)]
    for device in released:
        device.owner = device.request_id = None
        device.status = DeviceStatus.REMOVED if device.missing else DeviceStatus.AVAILABLE
        if device.tags.get(ONE_TIME_USE) == "true" and device.taint is None:
            device.taint = USED_ONCE
        changed.append(device)
    for device in released:
        for relative in relatives(device, devices):
            if relative.status is DeviceStatus.UNAVAILABLE and not any(
                    in_use(other) for other in relatives(relative, devices)):
                relative.status = (DeviceStatus.REMOVED if relative.missing
                                   else DeviceStatus.AVAILABLE)
                changed.append(relative)
    return changed
