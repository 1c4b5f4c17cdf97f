"""A simulated host: the cards in its slots, the PCI functions they show the kernel, and
its CPUs and NUMA memory."""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from passthru.errors import InvalidInputError
from passthru.pci.address import PciAddress
from passthru.pci.pool import DEFAULT_POOL_ATTRS
from passthru.sim.hardware import DeviceModel


@dataclass(frozen=True, slots=True)
class Card:
    """A card (or on-board device) whose first function is at `address`.

    `ports` functions follow it (.0, .1, ...); on an SR-IOV model each port is a PF with
    `numvfs` VFs enabled. `numa_node` None is a device the firmware gives no node (-1).
    `bound_to` replaces the model's driver, e.g. a GPU handed to vfio-pci.
    """

    model: DeviceModel
    address: str
    numa_node: int | None = 0
    ports: int = 1
    numvfs: int = 0
    bound_to: str | None = None

    @property
    def driver(self) -> str | None:
        return self.bound_to or self.model.driver


@dataclass(frozen=True, slots=True)
class Topology:
    """A host's sockets, NUMA nodes and memory as the kernel numbers them: node `n` holds
    logical CPUs `n * cpus_per_node` onwards and sits on socket `n // nodes_per_socket`.
    `hugepages` is what each node has reserved (page size in KiB → pages)."""

    sockets: int = 2
    nodes_per_socket: int = 1
    cpus_per_node: int = 16
    memory_mb_per_node: int = 131072
    hugepages: Mapping[int, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("sockets", "nodes_per_socket", "cpus_per_node", "memory_mb_per_node"):
            if getattr(self, name) < 1:
                raise InvalidInputError(f"topology {name}={getattr(self, name)} must be at least 1")

    @property
    def nodes(self) -> range:
        return range(self.sockets * self.nodes_per_socket)

    def cpus_of(self, node: int) -> range:
        return range(node * self.cpus_per_node, (node + 1) * self.cpus_per_node)

    def socket_of(self, node: int) -> int:
        return node // self.nodes_per_socket


@dataclass(frozen=True, slots=True)
class HostProfile:
    """A host's hardware and a host config that fits it (for demos and dry runs).

    `pci_information` holds entries in the host config's TOML shape: dicts with `match`,
    `extra` and `exclude`. Every card's NUMA node must be one of the topology's.
    """

    name: str
    description: str
    cards: tuple[Card, ...]
    pool_attrs: tuple[str, ...] = DEFAULT_POOL_ATTRS
    pci_information: tuple[Mapping[str, object], ...] = field(default=())
    topology: Topology = field(default_factory=Topology)

    def __post_init__(self) -> None:
        for card in self.cards:
            if card.numa_node is not None and card.numa_node not in self.topology.nodes:
                raise InvalidInputError(
                    f"profile {self.name!r}: card {card.model.key} at {card.address} is on "
                    f"NUMA node {card.numa_node}, but the host has nodes "
                    f"0-{len(self.topology.nodes) - 1}; give it a bigger topology")


@dataclass(frozen=True, slots=True)
class SimFunction:
    """One PCI function of a simulated host, with everything sysfs and libvirt show."""

    address: str
    vendor_id: str
    product_id: str
    dev_class: str
    subsystem_vendor_id: str
    subsystem_device_id: str
    driver: str | None
    numa_node: int | None
    iommu_group: int = 0
    netdev: str | None = None
    mac: str | None = None
    physfn: str | None = None
    virtfns: tuple[str, ...] = ()
    totalvfs: int | None = None


def _netdev_name(address: PciAddress) -> str:
    """systemd's predictable name for a PCI netdev, e.g. enp59s0f1."""
    prefix = f"P{address.domain}" if address.domain else ""
    return f"en{prefix}p{address.bus}s{address.slot}f{address.function}"


def _mac(oui: str, address: PciAddress) -> str:
    rid = address.routing_id
    return f"{oui}:{address.domain & 0xFF:02x}:{rid >> 8:02x}:{rid & 0xFF:02x}"


def _check_vfs(card: Card) -> None:
    model = card.model
    limit = model.totalvfs if model.vf else 0
    if card.numvfs > limit:
        raise InvalidInputError(
            f"card {model.key} at {card.address}: numvfs={card.numvfs} but the model "
            f"supports at most {limit} VFs per port"
        )


def _function(card: Card, address: PciAddress) -> SimFunction:
    """The function of `card` at `address` as the card's model describes it."""
    model = card.model
    return SimFunction(
        address=str(address),
        vendor_id=model.vendor_id,
        product_id=model.product_id,
        dev_class=model.dev_class,
        subsystem_vendor_id=model.subsystem_vendor_id,
        subsystem_device_id=model.subsystem_device_id,
        driver=card.driver,
        numa_node=card.numa_node,
        mac=_mac(model.oui, address) if model.oui else None,
    )


def _card_functions(card: Card) -> list[SimFunction]:
    _check_vfs(card)
    model = card.model
    try:
        first = PciAddress.parse(card.address)
    except InvalidInputError as error:
        raise InvalidInputError(f"card {model.key}: {error}") from None
    functions: list[SimFunction] = []
    for port in range(card.ports):
        pf = PciAddress.from_routing_id(first.domain, first.routing_id + port)
        netdev = _netdev_name(pf) if model.oui else None
        virtfns: list[str] = []
        if model.vf is not None:
            first_vf = first.routing_id + model.vf.offset + port * model.totalvfs
            for index in range(card.numvfs):
                vf = replace(
                    _function(card, PciAddress.from_routing_id(first.domain, first_vf + index)),
                    product_id=model.vf.product_id,
                    subsystem_device_id=model.vf.subsystem_device_id,
                    driver=model.vf.driver,
                    netdev=f"{netdev}v{index}" if netdev else None,
                    physfn=str(pf),
                )
                virtfns.append(vf.address)
                functions.append(vf)
        functions.append(replace(
            _function(card, pf),
            netdev=netdev,
            virtfns=tuple(virtfns),
            totalvfs=model.totalvfs if model.vf else None,
        ))
    return functions


def expand(profile: HostProfile) -> list[SimFunction]:
    """Every PCI function of the host, sorted by address; each has its own IOMMU group."""
    functions = sorted(
        (function for card in profile.cards for function in _card_functions(card)),
        key=lambda function: function.address,
    )
    for before, after in itertools.pairwise(functions):
        if before.address == after.address:
            raise InvalidInputError(
                f"profile {profile.name!r}: two functions at {after.address}; "
                "move a card or enable fewer VFs"
            )
    # ACS-capable platforms isolate every function; groups count up in address order.
    return [replace(function, iommu_group=group) for group, function in enumerate(functions)]
