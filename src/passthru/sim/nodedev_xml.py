"""Write a simulated host as libvirt node-device XML, for libvirt's `test:///FILE` driver.

The file is a `<node>` holding one `<device>` per PCI function (the `pci` capability, with
`virt_functions` / `phys_function`, `iommuGroup` and `numa`) and one per netdev (the `net`
capability, whose `<parent>` is its PCI function), as `virsh nodedev-dumpxml` shows them.
Names are left out: libvirt's test driver keeps only what the file says, and discovery
looks missing names up in pci.ids.
"""

from __future__ import annotations

from lxml import etree

from passthru.pci.address import FIELD_NAMES, PciAddress
from passthru.sim.profile import HostProfile, SimFunction, expand


def nodedev_name(address: str) -> str:
    """libvirt's name for a PCI function: pci_0000_3b_00_0."""
    return "pci_" + address.replace(":", "_").replace(".", "_")


def _sub(parent: etree._Element, tag: str, text: object = None, **attrs: str) -> etree._Element:
    element = etree.SubElement(parent, tag, attrs)
    if text is not None:
        element.text = str(text)
    return element


def _address(parent: etree._Element, address: str) -> None:
    _sub(parent, "address", **PciAddress.parse(address).libvirt_attrs())


def _pci_device(node: etree._Element, function: SimFunction) -> None:
    device = _sub(node, "device")
    _sub(device, "name", nodedev_name(function.address))
    _sub(device, "parent", "computer")
    if function.driver:
        _sub(_sub(device, "driver"), "name", function.driver)
    pci = _sub(device, "capability", type="pci")
    _sub(pci, "class", f"0x{function.dev_class}")
    address = PciAddress.parse(function.address)
    for tag in FIELD_NAMES:  # decimal, as libvirt writes these
        _sub(pci, tag, getattr(address, tag))
    _sub(pci, "product", id=f"0x{function.product_id}")
    _sub(pci, "vendor", id=f"0x{function.vendor_id}")
    if function.physfn:
        _address(_sub(pci, "capability", type="phys_function"), function.physfn)
    if function.totalvfs is not None:
        vfs = _sub(pci, "capability", type="virt_functions", maxCount=str(function.totalvfs))
        for vf in function.virtfns:
            _address(vfs, vf)
    _address(_sub(pci, "iommuGroup", number=str(function.iommu_group)), function.address)
    if function.numa_node is not None:
        _sub(pci, "numa", node=str(function.numa_node))


def _net_device(node: etree._Element, function: SimFunction) -> None:
    device = _sub(node, "device")
    _sub(device, "name", f"net_{function.netdev}_{(function.mac or '').replace(':', '_')}")
    _sub(device, "parent", nodedev_name(function.address))
    net = _sub(device, "capability", type="net")
    _sub(net, "interface", function.netdev)
    if function.mac:
        _sub(net, "address", function.mac)
    _sub(net, "capability", type="80203")


def nodedev_xml(profile: HostProfile) -> str:
    """The host as a libvirt test-driver node file (`test:///path/to/this.xml`)."""
    node = etree.Element("node")
    functions = expand(profile)
    for function in functions:
        _pci_device(node, function)
    for function in functions:
        if function.netdev:
            _net_device(node, function)
    return etree.tostring(node, pretty_print=True, encoding="unicode")
