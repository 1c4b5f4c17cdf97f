from pathlib import Path

import libvirt
from lxml import etree

from passthru.sim import PROFILES, expand, nodedev_xml
from tests.support.trees import elements, one


def test_libvirt_test_driver_loads_every_function(tmp_path: Path) -> None:
    profile = PROFILES["mixed"]
    node = tmp_path / "node.xml"
    node.write_text(nodedev_xml(profile))
    connection = libvirt.openReadOnly(f"test://{node}")
    try:
        pci = connection.listAllDevices(libvirt.VIR_CONNECT_LIST_NODE_DEVICES_CAP_PCI_DEV)
        nets = connection.listAllDevices(libvirt.VIR_CONNECT_LIST_NODE_DEVICES_CAP_NET)
        assert sorted(d.name() for d in pci) == sorted(
            "pci_" + f.address.replace(":", "_").replace(".", "_") for f in expand(profile)
        )
        assert len(nets) == sum(1 for f in expand(profile) if f.netdev)
        pf = etree.fromstring(connection.nodeDeviceLookupByName("pci_0000_3b_00_1").XMLDesc(0))
    finally:
        connection.close()
    vfs = one(pf, "capability/capability[@type='virt_functions']")
    assert vfs.get("maxCount") == "64"
    assert len(vfs.findall("address")) == 4
    assert pf.findtext("capability/bus") == "59"
    assert one(pf, "capability/numa").get("node") == "0"


def test_no_numa_element_for_a_device_without_node() -> None:
    node = etree.fromstring(nodedev_xml(PROFILES["mixed"]).encode())
    nvme = elements(node, "device[name='pci_0000_5e_00_0']")[0]
    assert nvme.find("capability/numa") is None
    assert nvme.findtext("driver/name") == "nvme"


def test_netdevs_are_children_of_their_function() -> None:
    node = etree.fromstring(nodedev_xml(PROFILES["connectx"]).encode())
    net = elements(node, "device[capability/interface='enp175s0f1v3']")[0]
    # Port 1's VF 3: 0000:af:00.1 + offset 2 + 16 - 1 + 3.
    assert net.findtext("parent") == "pci_0000_af_02_5"
    assert net.findtext("capability/address") == "0c:42:a1:00:af:15"
