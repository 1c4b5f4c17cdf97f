"""libvirt domain XML for a VM with passthrough devices, and reading its devices back.

Flavor devices and `direct-physical` PFs become `<hostdev>`; `direct` VFs become
`<interface type='hostdev'>` so that libvirt sets the VF's MAC and VLAN; `macvtap` ports
become `<interface type='direct'>` in passthrough mode on the VF's netdev. Everything we
write validates against libvirt's schema (`validate_domain_xml`).

A real guest (`GuestDisks`) boots its virtio qcow2 overlay, directly from the image's
kernel when it has one, reads its cloud-init seed from a read-only SATA CD-ROM, and writes
its serial console to a log file on the host (a pty with a `<log>`: qemu opens the file
itself on every start, so a stopped and started domain logs again, and `virsh console`
still works). Normal ports are taps on a host bridge (`BridgeNic`); libvirt cannot tag a
tap on a Linux bridge, so a port's VLAN goes into the domain's `<metadata>` and the host
sets it on the tap's bridge port after each start (`passthru.host.bridge`). A NUMA-bound VM
(`NumaPlacement`) has its vCPUs pinned to its node's CPUs, or one each to dedicated CPUs,
its memory bound strictly to the node, and one guest NUMA cell.
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from lxml import etree

from passthru.errors import HostError, InvalidInputError
from passthru.pci.address import FIELD_NAMES, PciAddress
from passthru.pci.binding import Binding, VifType, VnicType

#: The namespace of passthru's own `<metadata>`: what libvirt keeps but does not act on.
METADATA_NS = "urn:passthru:domain:1"

#: libvirt's RelaxNG schemas, shipped by Debian's libvirt0 (the library itself).
SCHEMA = Path("/usr/share/libvirt/schemas/domain.rng")


class DomainXmlError(HostError):
    """A domain XML that libvirt's schema refuses."""


@dataclass(frozen=True, slots=True)
class GuestDisks:
    """The host files a real guest runs from: its disk (a `disk_format` file, the VM's
    overlay), a kernel and initrd for direct kernel boot (else it boots from the disk), the
    NoCloud seed ISO, and the file its serial console is logged to."""

    disk: Path
    disk_format: str = "qcow2"
    kernel: Path | None = None
    initrd: Path | None = None
    cmdline: str | None = None
    seed: Path | None = None
    console_log: Path | None = None


@dataclass(frozen=True, slots=True)
class BridgeNic:
    """A normal port: a virtio NIC whose tap libvirt enslaves to host bridge `bridge`;
    `vlan` is the tag its bridge port gets after start (None: untagged)."""

    port_id: str
    mac: str
    bridge: str
    vlan: int | None = None


@dataclass(frozen=True, slots=True)
class NumaPlacement:
    """Host NUMA node `node` with its CPUs `node_cpus`; `pinned` are dedicated host CPUs,
    one per vCPU in order (empty: each vCPU floats over the node's CPUs)."""

    node: int
    node_cpus: tuple[int, ...]
    pinned: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class DomainSpec:
    """What a VM is made of: size, whole devices (`hostdevs`) and bound ports, and for a
    real guest its disks, normal NICs and NUMA placement.

    libvirt detaches each device from its host driver and binds vfio-pci itself (managed),
    but for those in `unmanaged`, Nova's `managed: "no"` devices, which the host binds to
    vfio-pci beforehand and libvirt leaves alone. `title` is a person's name
    for the VM (libvirt's one-line `<title>`), since `name` may be an id. `domain_type` is
    `kvm`, or `qemu` where KVM cannot run guests (TCG).
    """

    name: str
    uuid: str
    memory_mib: int
    vcpus: int
    hostdevs: tuple[str, ...] = ()
    ports: tuple[Binding, ...] = ()
    unmanaged: frozenset[str] = frozenset()
    domain_type: str = "kvm"
    arch: str = "x86_64"
    machine: str = "q35"
    title: str | None = None
    guest: GuestDisks | None = None
    nics: tuple[BridgeNic, ...] = ()
    numa: NumaPlacement | None = None


@dataclass(frozen=True, slots=True)
class DomainDevices:
    """The host devices a domain holds: PCI functions and the VF netdevs of macvtaps.

    Both are sorted: libvirt regroups devices by kind, so document order means nothing.
    """

    pci_addresses: tuple[str, ...]
    macvtap_netdevs: tuple[str, ...]


def _check_spec(spec: DomainSpec) -> None:
    where = f"domain {spec.name!r}"
    if not spec.name or "/" in spec.name:
        raise InvalidInputError(f"domain name {spec.name!r} is empty or has a '/'; "
                                f"libvirt needs a plain name")
    try:
        uuid.UUID(spec.uuid)
    except ValueError:
        raise InvalidInputError(f"{where}: uuid {spec.uuid!r} is not a UUID") from None
    if spec.memory_mib < 1 or spec.vcpus < 1:
        raise InvalidInputError(f"{where}: memory {spec.memory_mib} MiB and {spec.vcpus} vcpus; "
                                f"both must be at least 1")
    seen: set[str] = set()
    slots = [p.pci_slot for p in spec.ports if p.pci_slot is not None]
    for address in (str(PciAddress.parse(text)) for text in (*spec.hostdevs, *slots)):
        if address in seen:
            raise InvalidInputError(f"{where}: device {address} is given to the VM twice; "
                                    f"each PCI function can be passed through once")
        seen.add(address)
    if spec.domain_type not in ("kvm", "qemu"):
        raise InvalidInputError(f"{where}: domain type {spec.domain_type!r} is neither 'kvm' "
                                f"nor 'qemu'")
    if spec.guest is not None:
        _check_guest(where, spec.guest)
    if spec.numa is not None:
        _check_numa(where, spec.numa, spec.vcpus)


def _check_guest(where: str, guest: GuestDisks) -> None:
    if guest.disk_format not in ("qcow2", "raw"):
        raise InvalidInputError(f"{where}: disk format {guest.disk_format!r} is neither qcow2 "
                                f"nor raw")
    if guest.kernel is None and (guest.initrd is not None or guest.cmdline is not None):
        raise InvalidInputError(f"{where}: an initrd or kernel command line needs a kernel to "
                                f"boot directly; give the image a kernel or drop them")


def _check_numa(where: str, numa: NumaPlacement, vcpus: int) -> None:
    if not numa.node_cpus:
        raise InvalidInputError(f"{where}: NUMA node {numa.node} has no CPUs to pin to")
    if numa.pinned and len(numa.pinned) != vcpus:
        raise InvalidInputError(f"{where}: {vcpus} vCPUs but {len(numa.pinned)} dedicated CPUs "
                                f"{list(numa.pinned)}; give one host CPU per vCPU")
    if outside := sorted(set(numa.pinned) - set(numa.node_cpus)):
        raise InvalidInputError(f"{where}: dedicated CPUs {outside} are not on NUMA node "
                                f"{numa.node} (its CPUs: {list(numa.node_cpus)})")


def _sub(parent: etree._Element, tag: str, **attrs: str) -> etree._Element:
    return etree.SubElement(parent, tag, attrs)


def _yes_no(flag: bool) -> str:
    return "yes" if flag else "no"


def _hostdev(devices: etree._Element, address: str, managed: bool) -> None:
    hostdev = _sub(devices, "hostdev", mode="subsystem", type="pci", managed=_yes_no(managed))
    _sub(_sub(hostdev, "source"), "address", **PciAddress.parse(address).libvirt_attrs())


def _network_settings(interface: etree._Element, port: Binding) -> None:
    _sub(interface, "mac", address=port.mac)
    if port.vlan is not None:
        _sub(_sub(interface, "vlan"), "tag", id=str(port.vlan))
    if port.profile_id is not None:
        virtualport = _sub(interface, "virtualport", type="802.1Qbh")
        _sub(virtualport, "parameters", profileid=port.profile_id)


def _port(devices: etree._Element, port: Binding, managed: bool) -> None:
    if port.vif_type is VifType.UNBOUND or port.pci_slot is None:
        return
    if port.vif_type is VifType.HOSTDEV_PHYSICAL:
        _hostdev(devices, port.pci_slot, managed)
    elif port.vnic_type is VnicType.MACVTAP:
        if port.netdev is None:
            raise InvalidInputError(f"port {port.port_id} is macvtap on {port.pci_slot} but names "
                                    f"no VF netdev to put the macvtap on")
        interface = _sub(devices, "interface", type="direct")
        _sub(interface, "source", dev=port.netdev, mode="passthrough")
        _network_settings(interface, port)
        _sub(interface, "model", type="virtio")
    else:
        interface = _sub(devices, "interface", type="hostdev", managed=_yes_no(managed))
        slot = PciAddress.parse(port.pci_slot)
        _sub(_sub(interface, "source"), "address", type="pci", **slot.libvirt_attrs())
        _network_settings(interface, port)


def _cpuset(cpus: Iterable[int]) -> str:
    return ",".join(str(cpu) for cpu in sorted(set(cpus)))


def _numa(domain: etree._Element, spec: DomainSpec, numa: NumaPlacement) -> None:
    cputune = _sub(domain, "cputune")
    for vcpu in range(spec.vcpus):
        cpus = (numa.pinned[vcpu],) if numa.pinned else numa.node_cpus
        _sub(cputune, "vcpupin", vcpu=str(vcpu), cpuset=_cpuset(cpus))
    # qemu's own threads stay on the node too, next to the memory they touch.
    _sub(cputune, "emulatorpin", cpuset=_cpuset(numa.node_cpus))
    _sub(_sub(domain, "numatune"), "memory", mode="strict", nodeset=str(numa.node))
    _sub(_sub(_sub(domain, "cpu"), "numa"), "cell", id="0", cpus=f"0-{spec.vcpus - 1}",
         memory=str(spec.memory_mib), unit="MiB")


def _os(domain: etree._Element, spec: DomainSpec) -> None:
    boot = _sub(domain, "os")
    _sub(boot, "type", arch=spec.arch, machine=spec.machine).text = "hvm"
    guest = spec.guest
    if guest is None:
        return
    if guest.kernel is not None:
        _sub(boot, "kernel").text = str(guest.kernel)
        if guest.initrd is not None:
            _sub(boot, "initrd").text = str(guest.initrd)
        if guest.cmdline is not None:
            _sub(boot, "cmdline").text = guest.cmdline
    else:
        _sub(boot, "boot", dev="hd")


def _file_disk(devices: etree._Element, path: Path, fmt: str, *, device: str, target: str,
               bus: str) -> etree._Element:
    disk = _sub(devices, "disk", type="file", device=device)
    _sub(disk, "driver", name="qemu", type=fmt)
    _sub(disk, "source", file=str(path))
    _sub(disk, "target", dev=target, bus=bus)
    return disk


def _guest_devices(devices: etree._Element, guest: GuestDisks) -> None:
    _file_disk(devices, guest.disk, guest.disk_format, device="disk", target="vda",
               bus="virtio")
    if guest.seed is not None:
        cdrom = _file_disk(devices, guest.seed, "raw", device="cdrom", target="sda",
                           bus="sata")
        _sub(cdrom, "readonly")
    if guest.console_log is not None:
        serial = _sub(devices, "serial", type="pty")
        _sub(serial, "log", file=str(guest.console_log), append="off")
        _sub(serial, "target", port="0")
        _sub(_sub(devices, "console", type="pty"), "target", type="serial", port="0")


def _bridge_nic(devices: etree._Element, nic: BridgeNic) -> None:
    interface = _sub(devices, "interface", type="bridge")
    _sub(interface, "mac", address=nic.mac)
    _sub(interface, "source", bridge=nic.bridge)
    _sub(interface, "model", type="virtio")


def _metadata(domain: etree._Element, nics: tuple[BridgeNic, ...]) -> None:
    tagged = [nic for nic in nics if nic.vlan is not None]
    if not tagged:
        return
    ports = etree.SubElement(_sub(domain, "metadata"), f"{{{METADATA_NS}}}ports",
                             nsmap={"passthru": METADATA_NS})
    for nic in tagged:
        etree.SubElement(ports, f"{{{METADATA_NS}}}port", mac=nic.mac, vlan=str(nic.vlan))


def build_domain_xml(spec: DomainSpec) -> str:
    """The domain XML for `spec`; refuses an invalid name, uuid, size or a device twice."""
    _check_spec(spec)
    domain = etree.Element("domain", type=spec.domain_type)
    etree.SubElement(domain, "name").text = spec.name
    etree.SubElement(domain, "uuid").text = str(uuid.UUID(spec.uuid))
    if spec.title is not None:
        etree.SubElement(domain, "title").text = spec.title
    _metadata(domain, spec.nics)
    etree.SubElement(domain, "memory", unit="MiB").text = str(spec.memory_mib)
    etree.SubElement(domain, "vcpu").text = str(spec.vcpus)
    if spec.numa is not None:
        _numa(domain, spec, spec.numa)
    _os(domain, spec)
    # ACPI lets a guest hear the power button: graceful shutdown and reboot need it.
    features = _sub(domain, "features")
    _sub(features, "acpi")
    _sub(features, "apic")
    devices = _sub(domain, "devices")
    if spec.guest is not None:
        _guest_devices(devices, spec.guest)
    for address in spec.hostdevs:
        _hostdev(devices, address, address not in spec.unmanaged)
    for port in spec.ports:
        _port(devices, port, port.pci_slot not in spec.unmanaged)
    for nic in spec.nics:
        _bridge_nic(devices, nic)
    return etree.tostring(domain, pretty_print=True, encoding="unicode")


def _parse(xml: str) -> etree._Element:
    parser = etree.XMLParser(resolve_entities=False, no_network=True)
    try:
        root = etree.fromstring(xml.encode(), parser)
    except etree.XMLSyntaxError as error:
        raise InvalidInputError(f"domain XML is not well-formed: {error}") from None
    if root.tag != "domain":
        raise InvalidInputError(f"expected a <domain> document, got <{root.tag}>")
    return root


def _canonical(addresses: object) -> list[str]:
    """The canonical addresses of the `<address>` elements an XPath query found."""
    assert isinstance(addresses, list)
    try:
        return [str(PciAddress.from_libvirt({name: element.get(name) for name in FIELD_NAMES}))
                for element in addresses if isinstance(element, etree._Element)]
    except InvalidInputError as error:
        raise InvalidInputError(f"domain XML: {error}") from None


def read_domain_devices(xml: str) -> DomainDevices:
    """The PCI functions and macvtap VF netdevs a domain XML holds (from libvirt or us)."""
    root = _parse(xml)
    addresses = root.xpath("devices/hostdev[@mode='subsystem'][@type='pci']/source/address"
                           " | devices/interface[@type='hostdev']/source/address"
                           "[not(@type) or @type='pci']")
    netdevs = root.xpath("devices/interface[@type='direct']/source[@mode='passthrough']/@dev")
    assert isinstance(netdevs, list)
    return DomainDevices(tuple(sorted(_canonical(addresses))),
                         tuple(sorted(str(dev) for dev in netdevs)))


@functools.cache
def _schema(path: Path) -> etree.RelaxNG:
    """libvirt's domain schema, parsed once per process (it includes a dozen files)."""
    try:
        return etree.RelaxNG(etree.parse(str(path)))
    except OSError:
        raise DomainXmlError(f"libvirt's domain schema {path} is missing; install Debian's "
                             f"libvirt0 (scripts/setup.sh does)") from None
    except etree.RelaxNGParseError as error:
        raise DomainXmlError(f"libvirt's domain schema {path} does not load: {error}") from None


@dataclass(frozen=True, slots=True)
class BridgeTap:
    """A running domain's tap on a host bridge, and the VLAN its port wants (None: none)."""

    mac: str
    bridge: str
    tap: str
    vlan: int | None


def _port_vlans(root: etree._Element) -> dict[str, int]:
    return {str(port.get("mac")): int(str(port.get("vlan")))
            for port in root.iterfind(f"metadata/{{{METADATA_NS}}}ports/{{{METADATA_NS}}}port")}


def read_port_vlans(xml: str) -> dict[str, int]:
    """The VLAN of each tagged bridge NIC of a domain, by MAC (from our `<metadata>`)."""
    return _port_vlans(_parse(xml))


def read_bridge_taps(xml: str) -> list[BridgeTap]:
    """The taps of a running domain's bridge NICs (the live XML names them), with the VLANs
    our `<metadata>` asks for, in document order."""
    root = _parse(xml)
    vlans = _port_vlans(root)
    taps = []
    for interface in root.iterfind("devices/interface[@type='bridge']"):
        mac, bridge = interface.find("mac"), interface.find("source")
        target = interface.find("target")
        if mac is None or bridge is None or target is None or not target.get("dev"):
            continue  # a defined-only domain has no tap yet
        address = str(mac.get("address"))
        taps.append(BridgeTap(address, str(bridge.get("bridge")), str(target.get("dev")),
                              vlans.get(address)))
    return taps


def validate_domain_xml(xml: str) -> None:
    """Check `xml` against libvirt's domain schema, in process (lxml's RelaxNG)."""
    schema = _schema(SCHEMA)
    if not schema.validate(_parse(xml)):
        problems = "; ".join(f"line {e.line}: {e.message}" for e in schema.error_log)
        raise DomainXmlError(f"domain XML does not match libvirt's schema: {problems}")
