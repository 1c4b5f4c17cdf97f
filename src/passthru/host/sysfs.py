"""Discover a host's PCI functions from sysfs (`<root>/bus/pci/devices`).

Device types, decided from what the kernel shows:
- a VF is a function with a `physfn` link (its parent PF is the link's target);
- a PF is a function whose `sriov_totalvfs` is above 0 — it is SR-IOV capable, even with
  no VF enabled right now (`sriov_numvfs` = 0), as libvirt's `virt_functions` capability
  and Nova's type-PF see it;
- everything else is a plain PCI function.

Plain `os` calls on strings rather than pathlib: a host with 500 functions is read in
tens of milliseconds this way, well within the agent's 100 ms scan budget.
"""

# Strings and os calls on purpose (see above), not pathlib.
# ruff: noqa: PTH115, PTH118, PTH119, PTH123, PTH208

from __future__ import annotations

import os
from pathlib import Path

from passthru.errors import HostError, InvalidInputError
from passthru.host.pciids import PciIds, default_pci_ids
from passthru.pci.device import DevType, PciDevice, normalize_id

#: Vendor of virtio devices, whose netdev sits one level down, under `virtioN/net/`.
_VIRTIO_VENDOR = "1af4"


class DiscoveryError(HostError):
    """The configured device source cannot be read."""


def _read(path: str) -> str | None:
    try:
        with open(path) as file:
            return file.read().strip()
    except OSError:
        return None


def _link_name(path: str) -> str | None:
    try:
        return os.path.basename(os.readlink(path))
    except OSError:
        return None


def _listdir(path: str) -> list[str]:
    try:
        return os.listdir(path)
    except OSError:
        return []


def _int(text: str | None) -> int | None:
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None


def parse_class(text: str | None) -> str:
    """A PCI class code as six lower-case hex digits: '0x020000' → '020000' ('' if unknown)."""
    try:
        return f"{int(text, 16):06x}" if text else ""
    except ValueError:
        return ""


def _netdev(path: str, entries: list[str], vendor_id: str) -> str | None:
    names = _listdir(f"{path}/net") if "net" in entries else []
    if not names and vendor_id == _VIRTIO_VENDOR:
        for entry in entries:
            if entry.startswith("virtio"):
                names = _listdir(f"{path}/{entry}/net")
                break
    return min(names) if names else None


def _read_device(path: str, address: str, ids: PciIds) -> PciDevice | None:
    """One function, or None when it vanished while being read (hot-unplug)."""
    entries = _listdir(path)
    vendor, product = _read(f"{path}/vendor"), _read(f"{path}/device")
    if vendor is None or product is None:
        return None
    try:
        vendor_id = normalize_id(vendor, "vendor")
        product_id = normalize_id(product, "device")
        subsystem_vendor = _read(f"{path}/subsystem_vendor")
        subsystem_device = _read(f"{path}/subsystem_device")
        subsystem_vendor_id = normalize_id(subsystem_vendor) if subsystem_vendor else None
        subsystem_device_id = normalize_id(subsystem_device) if subsystem_device else None
    except InvalidInputError as error:
        raise DiscoveryError(f"{path}: {error}") from error
    dev_type, parent, totalvfs, numvfs = DevType.PCI, None, None, None
    if "physfn" in entries:
        dev_type, parent = DevType.VF, _link_name(f"{path}/physfn")
    elif "sriov_totalvfs" in entries:
        totalvfs = _int(_read(f"{path}/sriov_totalvfs"))
        if totalvfs:
            dev_type = DevType.PF
            numvfs = _int(_read(f"{path}/sriov_numvfs"))
    numa = _int(_read(f"{path}/numa_node")) if "numa_node" in entries else None
    group = _link_name(f"{path}/iommu_group") if "iommu_group" in entries else None
    return PciDevice(
        address=address.lower(),
        vendor_id=vendor_id,
        product_id=product_id,
        dev_type=dev_type,
        dev_class=parse_class(_read(f"{path}/class")),
        subsystem_vendor_id=subsystem_vendor_id,
        subsystem_device_id=subsystem_device_id,
        parent_addr=parent,
        numa_node=numa if numa is not None and numa >= 0 else None,
        iommu_group=_int(group),
        driver=_link_name(f"{path}/driver") if "driver" in entries else None,
        netdev=_netdev(path, entries, vendor_id),
        vendor_name=ids.vendor_name(vendor_id),
        product_name=ids.product_name(vendor_id, product_id),
        sriov_totalvfs=totalvfs if dev_type is DevType.PF else None,
        sriov_numvfs=numvfs,
    )


def discover_sysfs(root: Path = Path("/sys"), pci_ids: PciIds | None = None) -> list[PciDevice]:
    """Every PCI function under `<root>/bus/pci/devices`, sorted by address."""
    devices_dir = os.path.join(root, "bus", "pci", "devices")
    try:
        addresses = sorted(os.listdir(devices_dir))
    except OSError as error:
        raise DiscoveryError(
            f"cannot list {devices_dir} ({error.strerror}): sysfs_root {str(root)!r} is not "
            "a sysfs mount; set sysfs_root in the host config to where sysfs is mounted "
            "(normally /sys) or to a tree built by `passthru sim`"
        ) from error
    ids = pci_ids if pci_ids is not None else default_pci_ids()
    devices = (_read_device(f"{devices_dir}/{a}", a, ids) for a in addresses)
    return [device for device in devices if device is not None]
