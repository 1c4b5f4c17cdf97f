"""libvirt domain XML for a VM with passthrough devices, and reading its devices back.

Flavor devices and `direct-physical` PFs become `<hostdev>`; `direct` VFs become
`<interface type='hostdev'>` so that libvirt sets the VF's MAC and VLAN; `macvtap` ports
become `<interface type='direct'>` in passthrough mode on the VF's netdev. Everything we
write validates against libvirt's schema (`validate_domain_xml`).
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from lxml import etree

from passthru.pci.address import PciAddress
from passthru.pci.binding import Binding, VifType, VnicType
from passthru.pci.errors import PassthruError, PciValueError

#: libvirt's RelaxNG schemas, shipped by Debian's libvirt0 (the library itself).
SCHEMA = Path("/usr/share/libvirt/schemas/domain.rng")


class DomainXmlError(PassthruError):
    """A domain XML that libvirt's schema refuses."""


@dataclass(frozen=True, slots=True)
class DomainSpec:
    """What a VM is made of: size, whole devices (`hostdevs`) and bound ports.

    `managed` lets libvirt detach the devices from their host drivers and bind vfio-pci
    itself; turn it off only where the host pre-binds vfio-pci. `title` is a person's name
    for the VM (libvirt's one-line `<title>`), since `name` may be an id.
    """

    name: str
    uuid: str
    memory_mib: int
    vcpus: int
    hostdevs: tuple[str, ...] = ()
    ports: tuple[Binding, ...] = ()
    managed: bool = True
    domain_type: str = "kvm"
    arch: str = "x86_64"
    machine: str = "q35"
    title: str | None = None


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
        raise PciValueError(f"domain name {spec.name!r} is empty or has a '/'; "
                            f"libvirt needs a plain name")
    try:
        uuid.UUID(spec.uuid)
    except ValueError:
        raise PciValueError(f"{where}: uuid {spec.uuid!r} is not a UUID") from None
    if spec.memory_mib < 1 or spec.vcpus < 1:
        raise PciValueError(f"{where}: memory {spec.memory_mib} MiB and {spec.vcpus} vcpus; "
                            f"both must be at least 1")
    seen: set[str] = set()
    slots = [p.pci_slot for p in spec.ports if p.pci_slot is not None]
    for address in (str(PciAddress.parse(text)) for text in (*spec.hostdevs, *slots)):
        if address in seen:
            raise PciValueError(f"{where}: device {address} is given to the VM twice; "
                                f"each PCI function can be passed through once")
        seen.add(address)


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
            raise PciValueError(f"port {port.port_id} is macvtap on {port.pci_slot} but names "
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


def build_domain_xml(spec: DomainSpec) -> str:
    """The domain XML for `spec`; refuses an invalid name, uuid, size or a device twice."""
    _check_spec(spec)
    domain = etree.Element("domain", type=spec.domain_type)
    etree.SubElement(domain, "name").text = spec.name
    etree.SubElement(domain, "uuid").text = str(uuid.UUID(spec.uuid))
    if spec.title is not None:
        etree.SubElement(domain, "title").text = spec.title
    etree.SubElement(domain, "memory", unit="MiB").text = str(spec.memory_mib)
    etree.SubElement(domain, "vcpu").text = str(spec.vcpus)
    boot = _sub(domain, "os")
    _sub(boot, "type", arch=spec.arch, machine=spec.machine).text = "hvm"
    devices = _sub(domain, "devices")
    for address in spec.hostdevs:
        _hostdev(devices, address, spec.managed)
    for port in spec.ports:
        _port(devices, port, spec.managed)
    return etree.tostring(domain, pretty_print=True, encoding="unicode")


def _parse(xml: str) -> etree._Element:
    parser = etree.XMLParser(resolve_entities=False, no_network=True)
    try:
        root = etree.fromstring(xml.encode(), parser)
    except etree.XMLSyntaxError as error:
        raise PciValueError(f"domain XML is not well-formed: {error}") from None
    if root.tag != "domain":
        raise PciValueError(f"expected a <domain> document, got <{root.tag}>")
    return root


def _canonical(addresses: Iterable[etree._Element]) -> list[str]:
    try:
        return [str(PciAddress.from_libvirt(element.attrib)) for element in addresses]
    except PciValueError as error:
        raise PciValueError(f"domain XML: {error}") from None


def read_domain_devices(xml: str) -> DomainDevices:
    """The PCI functions and macvtap VF netdevs a domain XML holds (from libvirt or us)."""
    root = _parse(xml)
    addresses = root.xpath("devices/hostdev[@mode='subsystem'][@type='pci']/source/address"
                           " | devices/interface[@type='hostdev']/source/address"
                           "[not(@type) or @type='pci']")
    netdevs = root.xpath("devices/interface[@type='direct']/source[@mode='passthrough']/@dev")
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


def validate_domain_xml(xml: str) -> None:
    """Check `xml` against libvirt's domain schema, in process (lxml's RelaxNG)."""
    schema = _schema(SCHEMA)
    if not schema.validate(_parse(xml)):
        problems = "; ".join(f"line {e.line}: {e.message}" for e in schema.error_log)
        raise DomainXmlError(f"domain XML does not match libvirt's schema: {problems}")
