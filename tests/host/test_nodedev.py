import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from passthru.host.nodedev import discover_libvirt, parse_pci_nodedev
from passthru.host.sysfs import DiscoveryError, discover_sysfs
from passthru.pci.device import DevType, PciDevice
from passthru.sim import PROFILES, nodedev_xml

# What libvirt's PCI capability does not carry (subsystem ids) or its test driver drops
# when loading a node file (<driver>); everything else must agree with sysfs.
NOT_FROM_TEST_DRIVER: dict[str, Any] = {
    "driver": None, "subsystem_vendor_id": None, "subsystem_device_id": None}


def from_test_driver(device: PciDevice) -> PciDevice:
    return dataclasses.replace(device, **NOT_FROM_TEST_DRIVER)


def node_uri(tmp_path: Path, name: str) -> str:
    node = tmp_path / f"{name}.xml"
    node.write_text(nodedev_xml(PROFILES[name]))
    return f"test://{node}"


@pytest.mark.parametrize("name", [n for n in PROFILES if not n.startswith("big")])
def test_same_host_gives_the_same_inventory_as_sysfs(
    tmp_path: Path, sim_sysfs: Callable[[str], Path], name: str
) -> None:
    from_libvirt = discover_libvirt(node_uri(tmp_path, name))
    from_sysfs = discover_sysfs(sim_sysfs(name))
    assert from_libvirt == [from_test_driver(device) for device in from_sysfs]


def test_pfs_vfs_gpus_and_netdevs(tmp_path: Path) -> None:
    devices = {d.address: d for d in discover_libvirt(node_uri(tmp_path, "mixed"))}
    vf = devices["0000:3b:0a.3"]
    assert (vf.dev_type, vf.parent_addr, vf.netdev) == (DevType.VF, "0000:3b:00.1",
                                                        "enp59s0f1v3")
    pf = devices["0000:3b:00.1"]
    assert (pf.dev_type, pf.sriov_totalvfs, pf.sriov_numvfs) == (DevType.PF, 64, 4)
    gpu = devices["0000:b1:00.0"]
    assert (gpu.dev_type, gpu.numa_node, gpu.dev_class) == (DevType.PCI, 1, "030200")
    assert devices["0000:5e:00.0"].numa_node is None
    assert gpu.product_name == "GA100 [A100 PCIe 80GB]"


# As `virsh nodedev-dumpxml` prints it on a real host: names, driver, and no maxCount.
REAL_HOST_XML = """\
<device>
  <name>pci_0000_3b_00_0</name>
  <path>/sys/devices/pci0000:3a/0000:3a:00.0/0000:3b:00.0</path>
  <parent>pci_0000_3a_00_0</parent>
  <driver><name>i40e</name></driver>
  <capability type='pci'>
    <class>0x020000</class>
    <domain>0</domain><bus>59</bus><slot>0</slot><function>0</function>
    <product id='0x1572'>Ethernet Controller X710 for 10GbE SFP+</product>
    <vendor id='0x8086'>Intel Corporation</vendor>
    <capability type='virt_functions'>
      <address domain='0x0000' bus='0x3b' slot='0x02' function='0x0'/>
      <address domain='0x0000' bus='0x3b' slot='0x02' function='0x1'/>
    </capability>
    <iommuGroup number='33'><address domain='0x0000' bus='0x3b' slot='0x00' function='0x0'/></iommuGroup>
    <numa node='-1'/>
  </capability>
</device>
"""


def test_real_host_xml() -> None:
    device = parse_pci_nodedev(REAL_HOST_XML, {"pci_0000_3b_00_0": "ens1f0"})
    assert device.address == "0000:3b:00.0"
    assert device.driver == "i40e"
    assert (device.dev_type, device.sriov_totalvfs, device.sriov_numvfs) == (DevType.PF, 2, 2)
    assert (device.iommu_group, device.numa_node, device.netdev) == (33, None, "ens1f0")
    assert device.vendor_name == "Intel Corporation"


def test_xml_without_pci_capability_is_refused() -> None:
    with pytest.raises(DiscoveryError, match="pci_x has no pci capability"):
        parse_pci_nodedev("<device><name>pci_x</name></device>")


def test_bad_vendor_id_names_the_node_device() -> None:
    xml = REAL_HOST_XML.replace("id='0x8086'", "id='intel'")
    with pytest.raises(DiscoveryError, match=r"pci_0000_3b_00_0.*vendor 'intel'"):
        parse_pci_nodedev(xml)


def test_unreachable_libvirt_says_what_to_check(tmp_path: Path) -> None:
    with pytest.raises(DiscoveryError, match="libvirt_uri"):
        discover_libvirt(f"test://{tmp_path}/missing.xml")
