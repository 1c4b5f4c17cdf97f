"""Domain XML: every shape we write validates against libvirt's schema and reads back."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from lxml import etree

from passthru.errors import InvalidInputError
from passthru.host.domain_xml import (
    BridgeNic,
    BridgeTap,
    DomainDevices,
    DomainSpec,
    DomainXmlError,
    GuestDisks,
    NumaPlacement,
    build_domain_xml,
    read_bridge_taps,
    read_domain_devices,
    validate_domain_xml,
)
from passthru.pci.binding import Binding, NetworkSpec, PortSpec, bind_port
from passthru.pci.device import PHYSICAL_NETWORK, DevType, PciDevice
from tests.support.trees import elements, one

VM_UUID = "6f0c3b2e-7c1d-4e53-9a3f-2b8f1f3c9a11"
GPU = "0000:81:00.0"
PF = "0000:0a:00.0"
PHYSNET = {PHYSICAL_NETWORK: "physnet1"}
VLAN_NET = NetworkSpec("prod", "vlan", "physnet1", 100)  # type: ignore[arg-type]
FLAT_NET = NetworkSpec("ext", "flat", "physnet1")  # type: ignore[arg-type]


def vf(function: int) -> PciDevice:
    return PciDevice(f"0000:0a:10.{function}", "8086", "154c", DevType.VF, parent_addr=PF,
                     netdev=f"enp10s0f0v{function}", tags=dict(PHYSNET))


def direct(function: int = 1, network: NetworkSpec = VLAN_NET, **kwargs: object) -> Binding:
    port = PortSpec(f"p{function}", "direct", f"fa:16:3e:00:00:0{function}",  # type: ignore[arg-type]
                    **kwargs)  # type: ignore[arg-type]
    return bind_port(port, network, vf(function))


def macvtap(function: int = 2) -> Binding:
    port = PortSpec(f"p{function}", "macvtap", f"fa:16:3e:00:00:0{function}")  # type: ignore[arg-type]
    return bind_port(port, VLAN_NET, vf(function))


def direct_physical() -> Binding:
    port = PortSpec("pf", "direct-physical", "fa:16:3e:00:00:ff")  # type: ignore[arg-type]
    pf = PciDevice(PF, "8086", "1572", DevType.PF, netdev="enp10s0f0", tags=dict(PHYSNET))
    return bind_port(port, FLAT_NET, pf)


def normal() -> Binding:
    return bind_port(PortSpec("pn", "normal", "fa:16:3e:00:00:aa"), VLAN_NET,  # type: ignore[arg-type]
                     None)


def spec(name: str = "vm1", *, hostdevs: tuple[str, ...] = (), ports: tuple[Binding, ...] = (),
         **kwargs: object) -> DomainSpec:
    return DomainSpec(name, VM_UUID, 512, 2, hostdevs, ports, **kwargs)  # type: ignore[arg-type]


def every_shape(name: str = "vm1", domain_type: str = "kvm") -> DomainSpec:
    """A VM with a flavor GPU, a whole PF, a tagged VF, an 802.1Qbh VF and a macvtap."""
    profiled = direct(3, profile_id="finance")
    return spec(name, hostdevs=(GPU,), domain_type=domain_type,
                ports=(direct(1), macvtap(2), profiled, direct_physical(), normal()))


def tree(xml: str) -> etree._Element:
    return etree.fromstring(xml.encode())


SHAPES = {
    "empty": spec(),
    "flavor-gpu": spec(hostdevs=(GPU, "0000:82:00.0")),
    "unmanaged": spec(hostdevs=(GPU,), unmanaged=frozenset({GPU})),
    "direct-vlan": spec(ports=(direct(),)),
    "direct-flat": spec(ports=(direct(network=FLAT_NET),)),
    "direct-802.1qbh": spec(ports=(direct(profile_id="finance"),)),
    "macvtap": spec(ports=(macvtap(),)),
    "direct-physical": spec(ports=(direct_physical(),)),
    "every-shape": every_shape(),
    "guest-kernel-boot": spec(domain_type="qemu", guest=GuestDisks(
        Path("/i/disk.qcow2"), kernel=Path("/c/vmlinuz"), initrd=Path("/c/initrd"),
        cmdline="console=ttyS0", seed=Path("/i/seed.iso"), console_log=Path("/i/console.log"))),
    "guest-disk-boot": spec(guest=GuestDisks(Path("/i/disk.raw"), "raw")),
    "bridge-nics": spec(nics=(BridgeNic("a", "fa:16:3e:00:00:0a", "br-prov", 100),
                              BridgeNic("b", "fa:16:3e:00:00:0b", "br-ext"))),
    "numa-floating": spec(numa=NumaPlacement(1, (2, 3, 6, 7))),
    "numa-dedicated": spec(numa=NumaPlacement(0, (0, 1, 4, 5), pinned=(4, 1))),
    "every-shape-real-guest": DomainSpec(
        "vm1", VM_UUID, 1024, 2, (GPU,), every_shape().ports, domain_type="qemu",
        guest=GuestDisks(Path("/i/disk.qcow2"), seed=Path("/i/seed.iso"),
                         console_log=Path("/i/console.log")),
        nics=(BridgeNic("a", "fa:16:3e:00:00:0a", "br-prov", 7),),
        numa=NumaPlacement(0, (0, 1))),
}


@pytest.mark.parametrize("name", SHAPES)
def test_every_shape_validates(name: str) -> None:
    validate_domain_xml(build_domain_xml(SHAPES[name]))


def test_vm_basics() -> None:
    root = tree(build_domain_xml(spec("web-1")))
    assert root.get("type") == "kvm"
    assert root.findtext("name") == "web-1"
    assert root.findtext("uuid") == VM_UUID
    assert (root.findtext("memory"), one(root, "memory").get("unit")) == ("512", "MiB")
    assert root.findtext("vcpu") == "2"


def test_flavor_devices_are_managed_pci_hostdevs() -> None:
    root = tree(build_domain_xml(spec(hostdevs=(GPU,))))
    hostdev = one(root, "devices/hostdev")
    assert dict(hostdev.attrib.items()) == {"mode": "subsystem", "type": "pci", "managed": "yes"}
    assert dict(one(hostdev, "source/address").attrib.items()) == {
        "domain": "0x0000", "bus": "0x81", "slot": "0x00", "function": "0x0"}


def test_unmanaged_devices_say_so_and_only_they() -> None:
    port = direct()
    assert port.pci_slot is not None
    root = tree(build_domain_xml(spec(hostdevs=(GPU, "0000:82:00.0"), ports=(port,),
                                      unmanaged=frozenset({GPU, port.pci_slot}))))
    assert [(h.get("managed"), one(h, "source/address").get("bus"))
            for h in elements(root, "devices/hostdev")] == [("no", "0x81"), ("yes", "0x82")]
    assert one(root, "devices/interface").get("managed") == "no"


def test_direct_port_is_hostdev_interface_with_mac_and_vlan() -> None:
    interface = one(tree(build_domain_xml(spec(ports=(direct(),)))), "devices/interface")
    assert (interface.get("type"), interface.get("managed")) == ("hostdev", "yes")
    assert one(interface, "mac").get("address") == "fa:16:3e:00:00:01"
    assert dict(one(interface, "source/address").attrib.items()) == {
        "type": "pci", "domain": "0x0000", "bus": "0x0a", "slot": "0x10", "function": "0x1"}
    assert one(interface, "vlan/tag").get("id") == "100"
    assert interface.find("virtualport") is None


def test_flat_network_writes_no_vlan() -> None:
    xml = build_domain_xml(spec(ports=(direct(network=FLAT_NET),)))
    assert tree(xml).find("devices/interface/vlan") is None


def test_port_profile_writes_802_1qbh_virtualport_and_no_vlan() -> None:
    interface = one(tree(build_domain_xml(spec(ports=(direct(profile_id="finance"),)))),
                    "devices/interface")
    assert one(interface, "virtualport").get("type") == "802.1Qbh"
    assert one(interface, "virtualport/parameters").get("profileid") == "finance"
    assert interface.find("vlan") is None


def test_macvtap_is_direct_passthrough_on_vf_netdev() -> None:
    interface = one(tree(build_domain_xml(spec(ports=(macvtap(),)))), "devices/interface")
    assert interface.get("type") == "direct"
    assert dict(one(interface, "source").attrib.items()) == {"dev": "enp10s0f0v2",
                                                     "mode": "passthrough"}
    assert one(interface, "mac").get("address") == "fa:16:3e:00:00:02"
    assert one(interface, "vlan/tag").get("id") == "100"


def test_direct_physical_is_a_plain_hostdev_and_normal_adds_nothing() -> None:
    root = tree(build_domain_xml(spec(ports=(direct_physical(), normal()))))
    assert root.find("devices/interface") is None
    hostdevs = root.findall("devices/hostdev")
    assert [one(h, "source/address").get("bus") for h in hostdevs] == ["0x0a"]


def test_devices_read_back_from_what_we_write() -> None:
    devices = read_domain_devices(build_domain_xml(every_shape()))
    assert devices == DomainDevices(
        pci_addresses=(PF, "0000:0a:10.1", "0000:0a:10.3", GPU),
        macvtap_netdevs=("enp10s0f0v2",))


def test_reader_takes_decimal_addresses_and_skips_other_devices() -> None:
    xml = """<domain type='kvm'><name>x</name><devices>
      <hostdev mode='subsystem' type='pci'><source>
        <address domain='0' bus='10' slot='16' function='7'/></source></hostdev>
      <hostdev mode='subsystem' type='usb'><source>
        <vendor id='0x1234'/><product id='0xbeef'/></source></hostdev>
      <interface type='direct'><source dev='eth0' mode='bridge'/></interface>
      <interface type='network'><source network='default'/></interface>
    </devices></domain>"""
    assert read_domain_devices(xml) == DomainDevices(("0000:0a:10.7",), ())


@pytest.mark.parametrize(("xml", "message"), [
    ("<domain><name>x</name>", r"not well-formed"),
    ("<network/>", r"expected a <domain> document, got <network>"),
    ("<domain><devices><hostdev mode='subsystem' type='pci'><source>"
     "<address domain='0x0000' bus='zz' slot='0' function='0'/></source></hostdev>"
     "</devices></domain>", r"bus='zz' is not a number"),
])
def test_reader_refuses_bad_xml(xml: str, message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        read_domain_devices(xml)


@pytest.mark.parametrize(("bad", "message"), [
    ({"name": "a/b"}, r"domain name 'a/b' is empty or has a '/'"),
    ({"name": ""}, r"domain name '' is empty"),
    ({"uuid": "nope"}, r"uuid 'nope' is not a UUID"),
    ({"memory_mib": 0}, r"must be at least 1"),
    ({"vcpus": 0}, r"must be at least 1"),
    ({"hostdevs": ("0000:0a:10.1",), "ports": (direct(1),)},
     r"device 0000:0a:10.1 is given to the VM twice"),
    ({"hostdevs": ("0000:0a:00",)}, r"PCI address '0000:0a:00' is malformed"),
    ({"hostdevs": ("0a:10.1",), "ports": (direct(1),)},
     r"device 0000:0a:10.1 is given to the VM twice"),
])
def test_builder_refuses_bad_specs(bad: dict[str, object], message: str) -> None:
    fields: dict[str, object] = {"name": "vm1", "uuid": VM_UUID, "memory_mib": 512,
                                 "vcpus": 1, **bad}
    with pytest.raises(InvalidInputError, match=message):
        build_domain_xml(DomainSpec(**fields))  # type: ignore[arg-type]


def test_validator_reports_what_the_schema_refuses() -> None:
    xml = build_domain_xml(spec(hostdevs=(GPU,))).replace("<vcpu>2</vcpu>", "<vcpu>two</vcpu>")
    with pytest.raises(DomainXmlError, match=r"does not match libvirt's schema"):
        validate_domain_xml(xml)


GUEST = GuestDisks(Path("/i/disk.qcow2"), kernel=Path("/c/vmlinuz"), initrd=Path("/c/initrd"),
                   cmdline="console=ttyS0 quiet", seed=Path("/i/seed.iso"),
                   console_log=Path("/i/console.log"))


def test_a_vm_without_a_guest_has_no_disks_console_or_boot_order() -> None:
    root = tree(build_domain_xml(spec()))
    assert root.find("devices/disk") is None
    assert root.find("devices/serial") is None
    assert [child.tag for child in one(root, "os")] == ["type"]
    assert root.find("cputune") is None and root.find("numatune") is None


def test_kernel_boot_names_kernel_initrd_and_cmdline() -> None:
    boot = one(tree(build_domain_xml(spec(guest=GUEST))), "os")
    assert [(child.tag, child.text) for child in boot][1:] == [
        ("kernel", "/c/vmlinuz"), ("initrd", "/c/initrd"), ("cmdline", "console=ttyS0 quiet")]
    assert boot.find("boot") is None


def test_without_a_kernel_the_vm_boots_from_its_disk() -> None:
    boot = one(tree(build_domain_xml(spec(guest=GuestDisks(Path("/i/disk.qcow2"))))), "os")
    assert boot.find("kernel") is None
    assert one(boot, "boot").get("dev") == "hd"


def test_disk_is_virtio_overlay_and_seed_a_read_only_sata_cdrom() -> None:
    root = tree(build_domain_xml(spec(guest=GUEST)))
    disk, cdrom = root.findall("devices/disk")
    assert (disk.get("device"), one(disk, "driver").get("type")) == ("disk", "qcow2")
    assert one(disk, "source").get("file") == "/i/disk.qcow2"
    assert dict(one(disk, "target").attrib.items()) == {"dev": "vda", "bus": "virtio"}
    assert cdrom.get("device") == "cdrom"
    assert one(cdrom, "source").get("file") == "/i/seed.iso"
    assert one(cdrom, "target").get("bus") == "sata"
    assert cdrom.find("readonly") is not None


def test_serial_console_is_logged_to_a_file_truncated_per_start() -> None:
    root = tree(build_domain_xml(spec(guest=GUEST)))
    serial = one(root, "devices/serial")
    assert serial.get("type") == "pty"
    assert dict(one(serial, "log").attrib.items()) == {
        "file": "/i/console.log", "append": "off"}
    assert one(root, "devices/console/target").get("type") == "serial"


def test_acpi_is_on_for_graceful_shutdown() -> None:
    assert tree(build_domain_xml(spec())).find("features/acpi") is not None


def test_bridge_nics_are_virtio_taps_with_the_ports_mac_and_vlan_in_metadata() -> None:
    xml = build_domain_xml(SHAPES["bridge-nics"])
    root = tree(xml)
    first, second = root.findall("devices/interface")
    assert first.get("type") == "bridge"
    assert one(first, "mac").get("address") == "fa:16:3e:00:00:0a"
    assert one(first, "source").get("bridge") == "br-prov"
    assert one(first, "model").get("type") == "virtio"
    assert first.find("vlan") is None  # libvirt cannot tag a tap on a Linux bridge
    assert one(second, "source").get("bridge") == "br-ext"
    # libvirt names the taps in the live XML; the VLAN comes from our metadata.
    live = xml.replace('<source bridge="br-prov"/>',
                       '<source bridge="br-prov"/><target dev="vnet3"/>')
    assert read_bridge_taps(live) == [BridgeTap("fa:16:3e:00:00:0a", "br-prov", "vnet3", 100)]


def test_numa_vm_floats_over_its_nodes_cpus_with_strict_memory_and_one_cell() -> None:
    root = tree(build_domain_xml(SHAPES["numa-floating"]))
    assert [(p.get("vcpu"), p.get("cpuset")) for p in root.iterfind("cputune/vcpupin")] == [
        ("0", "2,3,6,7"), ("1", "2,3,6,7")]
    assert one(root, "cputune/emulatorpin").get("cpuset") == "2,3,6,7"
    assert dict(one(root, "numatune/memory").attrib.items()) == {
        "mode": "strict", "nodeset": "1"}
    assert dict(one(root, "cpu/numa/cell").attrib.items()) == {
        "id": "0", "cpus": "0-1", "memory": "512", "unit": "MiB"}


def test_dedicated_vcpus_get_one_host_cpu_each_in_order() -> None:
    root = tree(build_domain_xml(SHAPES["numa-dedicated"]))
    assert [p.get("cpuset") for p in root.iterfind("cputune/vcpupin")] == ["4", "1"]


@pytest.mark.parametrize(("bad", "message"), [
    ({"domain_type": "xen"}, r"domain type 'xen' is neither 'kvm' nor 'qemu'"),
    ({"guest": GuestDisks(Path("/d"), "vmdk")}, r"disk format 'vmdk' is neither"),
    ({"guest": GuestDisks(Path("/d"), initrd=Path("/i"))}, r"needs a kernel"),
    ({"numa": NumaPlacement(0, ())}, r"NUMA node 0 has no CPUs"),
    ({"numa": NumaPlacement(0, (0, 1), pinned=(0,))}, r"2 vCPUs but 1 dedicated CPUs"),
    ({"numa": NumaPlacement(0, (0, 1), pinned=(0, 5))}, r"dedicated CPUs \[5\] are not on"),
])
def test_builder_refuses_bad_guests(bad: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        build_domain_xml(spec(**bad))
