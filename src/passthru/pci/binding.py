"""Port binding: how a port on a physical network gets its SR-IOV device.

Neutron's SR-IOV mechanism driver decides, per port, what the hypervisor plugs: a VF given
to the guest as an `<interface type='hostdev'>` (`direct`, vif_type `hw_veb`), a macvtap in
passthrough mode over the VF's netdev (`macvtap`, also `hw_veb`), or the whole PF as a
`<hostdev>` (`direct-physical`, vif_type `hostdev_physical`). A `normal` port is left to the
virtual switch: passthru gives it no device.

Binding is where the seed's "plan A" is enforced: a device whose physical network differs
from the port's network aborts the boot instead of wiring the VM to the wrong trunk.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from typing import TypeVar

from passthru.errors import InvalidInputError
from passthru.pci.device import DevType, PciDevice

_E = TypeVar("_E", bound=StrEnum)
_MAC = re.compile(r"[0-9a-f]{2}(:[0-9a-f]{2}){5}")
_MAX_VLAN = 4094


class VnicType(StrEnum):
    """Neutron's vnic types, as `--nic vnic-type=` spells them."""

    NORMAL = "normal"
    DIRECT = "direct"
    MACVTAP = "macvtap"
    DIRECT_PHYSICAL = "direct-physical"

    @property
    def dev_type(self) -> DevType | None:
        """The kind of device the port needs (None: no device)."""
        return _DEV_TYPE[self]


_DEV_TYPE: dict[VnicType, DevType | None] = {
    VnicType.NORMAL: None,
    VnicType.DIRECT: DevType.VF,
    VnicType.MACVTAP: DevType.VF,
    VnicType.DIRECT_PHYSICAL: DevType.PF,
}


class VifType(StrEnum):
    """What the host plugs, in Neutron's `binding:vif_type` words."""

    HW_VEB = "hw_veb"
    HOSTDEV_PHYSICAL = "hostdev_physical"
    #: passthru does not plug it: a normal port belongs to the virtual switch.
    UNBOUND = "unbound"


class NetworkType(StrEnum):
    """Provider network types an SR-IOV device can sit on."""

    FLAT = "flat"
    VLAN = "vlan"


def _choice(enum: type[_E], value: str, what: str) -> _E:
    try:
        return enum(value)
    except ValueError:
        choices = ", ".join(member.value for member in enum)
        raise InvalidInputError(f"{what} {value!r} is not one of: {choices}") from None


def normalize_mac(value: str, what: str = "mac address") -> str:
    """A MAC address as six lower-case hex pairs joined by colons ('FA-16-3E-…' is fine)."""
    text = value.strip().lower().replace("-", ":")
    if not _MAC.fullmatch(text):
        raise InvalidInputError(f"{what} {value!r} is not a MAC address "
                                f"(expected six hex pairs, e.g. 'fa:16:3e:12:34:56')")
    return text


#: The MAC that clears a VF's administrative address: no interface has it.
ZERO_MAC = "00:00:00:00:00:00"
_BROADCAST_MAC = "ff:ff:ff:ff:ff:ff"


def unicast_mac(value: str, what: str = "mac address") -> str:
    """A MAC an interface can own, normalized: not all zeros, not broadcast, not multicast.

    Ports and VFs share this rule so the controller refuses such a MAC up front: the host
    kernel would refuse it only at boot, when the VF is configured (and a virtio NIC would
    silently misbehave)."""
    mac = normalize_mac(value, what)
    if mac == ZERO_MAC:
        why = "is all zeros, which names no interface"
    elif mac == _BROADCAST_MAC:
        why = "is the broadcast address"
    elif int(mac[:2], 16) & 1:
        why = "is a multicast address (the first octet's lowest bit is 1)"
    else:
        return mac
    raise InvalidInputError(f"{what} {value!r} {why}; a port or VF needs a unicast MAC, whose "
                            f"first octet is even, e.g. 'fa:16:3e:12:34:56'")


def _check_rate(value: int, what: str) -> None:
    if value < 0:
        raise InvalidInputError(f"{what} {value} is negative (Mbit/s; 0 means no limit)")


@dataclass(slots=True)
class NetworkSpec:
    """The network a port is on: its type, physical network and VLAN id."""

    name: str
    network_type: NetworkType
    physical_network: str
    segmentation_id: int | None = None

    def __post_init__(self) -> None:
        self.network_type = _choice(NetworkType, self.network_type,
                                    f"network {self.name!r}: network type")
        if not self.physical_network:
            raise InvalidInputError(f"network {self.name!r} names no physical_network; "
                                    f"SR-IOV devices are tagged by e.physical_network, so give one")
        if self.network_type is NetworkType.FLAT and self.segmentation_id is not None:
            raise InvalidInputError(f"network {self.name!r} is flat but has segmentation_id "
                                    f"{self.segmentation_id}; make it a vlan network or drop "
                                    "the id")
        if self.network_type is NetworkType.VLAN and not (
                self.segmentation_id is not None and 1 <= self.segmentation_id <= _MAX_VLAN):
            raise InvalidInputError(f"network {self.name!r} is a vlan network and needs a "
                                    f"segmentation_id from 1 to {_MAX_VLAN}, "
                                    f"got {self.segmentation_id}")


@dataclass(slots=True)
class PortSpec:
    """A port as the tenant asked for it.

    `port_security` off lets the guest send from other MACs (VF spoof checking off);
    `trusted` lets it change its MAC and use promiscuous modes (VF trust on). Rates are
    in Mbit/s, 0 meaning none. `profile_id` is an 802.1Qbh port profile of the upstream
    switch, which then also decides the VLAN.
    """

    port_id: str
    vnic_type: VnicType
    mac: str
    port_security: bool = True
    trusted: bool = False
    profile_id: str | None = None
    min_tx_rate: int = 0
    max_tx_rate: int = 0

    def __post_init__(self) -> None:
        if not self.port_id:
            raise InvalidInputError("a port needs a non-empty port_id")
        where = f"port {self.port_id}"
        self.vnic_type = _choice(VnicType, self.vnic_type, f"{where}: vnic_type")
        self.mac = unicast_mac(self.mac, f"{where}: mac address")
        if self.profile_id is not None and self.vnic_type not in (
                VnicType.DIRECT, VnicType.MACVTAP):
            raise InvalidInputError(f"{where}: an 802.1Qbh port profile needs vnic_type direct or "
                                    f"macvtap (it is {self.vnic_type}); drop the profile id")
        _check_rate(self.min_tx_rate, f"{where}: min_tx_rate")
        _check_rate(self.max_tx_rate, f"{where}: max_tx_rate")
        if self.max_tx_rate and self.min_tx_rate > self.max_tx_rate:
            raise InvalidInputError(f"{where}: min_tx_rate {self.min_tx_rate} exceeds "
                                    f"max_tx_rate {self.max_tx_rate} Mbit/s")


@dataclass(frozen=True, slots=True)
class Binding:
    """A bound port: what to plug, on which device, with which MAC, VLAN and limits.

    `vlan` is the tag the host puts on the VF. It is None on flat networks, when an
    802.1Qbh profile carries the VLAN (libvirt refuses a tag next to such a profile), and
    for a whole PF, which the host cannot tag: its switch port must carry the VLAN.
    `netdev` is the VF's netdev for macvtap.
    """

    port_id: str
    vnic_type: VnicType
    vif_type: VifType
    mac: str
    physical_network: str
    pci_slot: str | None = None
    pci_vendor_info: str | None = None
    vlan: int | None = None
    profile_id: str | None = None
    netdev: str | None = None
    port_security: bool = True
    trusted: bool = False
    min_tx_rate: int = 0
    max_tx_rate: int = 0

    @property
    def profile(self) -> dict[str, str | bool]:
        """Neutron's `binding:profile` for the port (empty when no device is bound)."""
        if self.pci_slot is None or self.pci_vendor_info is None:
            return {}
        profile: dict[str, str | bool] = {
            "pci_slot": self.pci_slot,
            "pci_vendor_info": self.pci_vendor_info,
            "physical_network": self.physical_network,
        }
        if self.trusted:
            profile["trusted"] = True
        return profile


def _check_device(port: PortSpec, network: NetworkSpec, device: PciDevice | None) -> PciDevice:
    where = f"port {port.port_id} (vnic_type {port.vnic_type})"
    wanted = port.vnic_type.dev_type
    if device is None:
        raise InvalidInputError(f"{where} needs a {wanted} on physical_network "
                                f"{network.physical_network} and none was claimed for it")
    if device.dev_type is not wanted:
        raise InvalidInputError(f"{where} needs a {wanted}, but {device.address} is a "
                                f"{device.dev_type}; claim the port's device with dev_type "
                                f"{wanted}")
    if device.physical_network != network.physical_network:
        found = device.physical_network or "no physical_network tag"
        raise InvalidInputError(
            f"{where} is on network {network.name!r} (physical_network "
            f"{network.physical_network}) but got {device.address} on {found}; the VM must not "
            f"start wired to the wrong network. Tag the host's devices with "
            f"e.physical_network={network.physical_network} in pci_information, or pick a "
            f"pci flavor on that physical network")
    if port.vnic_type is VnicType.MACVTAP and not device.netdev:
        raise InvalidInputError(f"{where} needs the VF's netdev, but {device.address} has none "
                                f"(driver {device.driver or 'none'}); bind the VF to its network "
                                f"driver instead of vfio-pci")
    return device


def bind_port(port: PortSpec, network: NetworkSpec, device: PciDevice | None) -> Binding:
    """Bind `port` on `network` to the device claimed for it (None for a normal port)."""
    if port.vnic_type is VnicType.NORMAL:
        if device is not None:
            raise InvalidInputError(f"port {port.port_id} has vnic_type normal and takes no PCI "
                                    f"device, but got {device.address}; use vnic_type direct, "
                                    f"macvtap or direct-physical for a passthrough port")
        return Binding(port.port_id, port.vnic_type, VifType.UNBOUND, port.mac,
                       network.physical_network)
    device = _check_device(port, network, device)
    physical = port.vnic_type is VnicType.DIRECT_PHYSICAL
    return Binding(
        port_id=port.port_id,
        vnic_type=port.vnic_type,
        vif_type=VifType.HOSTDEV_PHYSICAL if physical else VifType.HW_VEB,
        mac=port.mac,
        physical_network=network.physical_network,
        pci_slot=device.address,
        pci_vendor_info=f"{device.vendor_id}:{device.product_id}",
        vlan=None if physical or port.profile_id is not None else network.segmentation_id,
        profile_id=port.profile_id,
        netdev=device.netdev if port.vnic_type is VnicType.MACVTAP else None,
        port_security=port.port_security,
        trusted=port.trusted,
        min_tx_rate=port.min_tx_rate,
        max_tx_rate=port.max_tx_rate,
    )
