"""Discover a host's PCI functions through libvirt's node devices (`source = "libvirt"`).

Each PCI node device's XML gives the address, ids, class, SR-IOV relations
(`virt_functions` with `maxCount`, `phys_function`), IOMMU group, NUMA node and bound
driver; netdev names come from the `net` node devices, whose parent is their PCI function.
The device types follow the sysfs rules: a `phys_function` makes a VF, a `virt_functions`
capability with room for VFs makes a PF.

libvirt shows no subsystem ids, so they stay None from this source. Its test driver also
drops `<driver>` when it loads a node file, so drivers are None under `test:///`.
"""

from __future__ import annotations

import libvirt
from lxml import etree

from passthru.errors import InvalidInputError
from passthru.host.pciids import PciIds, default_pci_ids
from passthru.host.sysfs import DiscoveryError, parse_class
from passthru.pci.address import FIELD_NAMES, PciAddress
from passthru.pci.device import DevType, PciDevice, normalize_id


def _address(element: etree._Element) -> str:
    """Canonical address from an `<address domain= bus= slot= function=>` element or a
    capability with `<domain>` … `<function>` children (libvirt writes those in decimal)."""
    if element.tag == "address":
        return str(PciAddress.from_libvirt({name: element.get(name) for name in FIELD_NAMES}))
    return str(PciAddress.from_libvirt({name: element.findtext(name) for name in FIELD_NAMES}))


def _int(text: str | None) -> int | None:
    return int(text) if text else None


def parse_pci_nodedev(
    xml: str | bytes, netdevs: dict[str, str] | None = None, pci_ids: PciIds | None = None
) -> PciDevice:
    """A device from one PCI node device's XML; `netdevs` maps node-device names to the
    interface of their `net` child."""
    device = etree.fromstring(xml.encode() if isinstance(xml, str) else xml)
    name = device.findtext("name") or "?"
    pci = device.find("capability[@type='pci']")
    if pci is None:
        raise DiscoveryError(f"libvirt node device {name} has no pci capability")
    try:
        address = _address(pci)
        vendor, product = pci.find("vendor"), pci.find("product")
        vendor_id = normalize_id(vendor.get("id", "") if vendor is not None else "", "vendor")
        product_id = normalize_id(product.get("id", "") if product is not None else "",
                                  "product")
    except (ValueError, InvalidInputError) as error:
        raise DiscoveryError(f"libvirt node device {name}: {error}") from error
    ids = pci_ids if pci_ids is not None else default_pci_ids()
    physfn = pci.find("capability[@type='phys_function']/address")
    virtfns = pci.find("capability[@type='virt_functions']")
    dev_type, totalvfs, numvfs = DevType.PCI, None, None
    if physfn is not None:
        dev_type = DevType.VF
    elif virtfns is not None:
        numvfs = len(virtfns.findall("address"))
        totalvfs = _int(virtfns.get("maxCount")) or numvfs
        if totalvfs:
            dev_type = DevType.PF
        else:
            numvfs = None
    group, numa = pci.find("iommuGroup"), pci.find("numa")
    numa_node = _int(numa.get("node")) if numa is not None else None
    return PciDevice(
        address=address,
        vendor_id=vendor_id,
        product_id=product_id,
        dev_type=dev_type,
        dev_class=parse_class(pci.findtext("class")),
        parent_addr=_address(physfn) if physfn is not None else None,
        numa_node=numa_node if numa_node is not None and numa_node >= 0 else None,
        iommu_group=_int(group.get("number")) if group is not None else None,
        driver=device.findtext("driver/name") or None,
        netdev=(netdevs or {}).get(name),
        vendor_name=(vendor.text if vendor is not None else None) or ids.vendor_name(vendor_id),
        product_name=(product.text if product is not None else None)
        or ids.product_name(vendor_id, product_id),
        sriov_totalvfs=totalvfs,
        sriov_numvfs=numvfs,
    )


def _netdevs(connection: libvirt.virConnect) -> dict[str, str]:
    """Interface name of each PCI node device that has a netdev (the first, by name)."""
    found: dict[str, str] = {}
    for net in connection.listAllDevices(libvirt.VIR_CONNECT_LIST_NODE_DEVICES_CAP_NET):
        element = etree.fromstring(net.XMLDesc(0).encode())
        parent, interface = element.findtext("parent"), element.findtext("capability/interface")
        if parent and interface and (parent not in found or interface < found[parent]):
            found[parent] = interface
    return found


def discover_libvirt(uri: str, pci_ids: PciIds | None = None) -> list[PciDevice]:
    """Every PCI function libvirt at `uri` knows, sorted by address."""
    try:
        connection = libvirt.openReadOnly(uri)
    except libvirt.libvirtError as error:
        raise DiscoveryError(
            f"cannot connect to libvirt at {uri!r}: {error.get_error_message()}; "
            "check libvirt_uri in the host config and that libvirtd is running"
        ) from error
    try:
        netdevs = _netdevs(connection)
        pci = connection.listAllDevices(libvirt.VIR_CONNECT_LIST_NODE_DEVICES_CAP_PCI_DEV)
        devices = [parse_pci_nodedev(d.XMLDesc(0), netdevs, pci_ids) for d in pci]
    except libvirt.libvirtError as error:
        raise DiscoveryError(
            f"cannot list node devices of libvirt at {uri!r}: {error.get_error_message()}"
        ) from error
    finally:
        connection.close()
    return sorted(devices, key=lambda device: device.address)
