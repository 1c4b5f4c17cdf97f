"""Networks as a project sees them, and making ports on them."""

from __future__ import annotations

import secrets

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from passthru.controller.lookup import find
from passthru.controller.models import NetworkRow, PciFlavorRow, PortRow
from passthru.errors import ConflictError, InvalidInputError, NotFoundError
from passthru.pci.binding import VnicType, unicast_mac


def visible_network(session: Session, ref: str, project: str | None) -> NetworkRow:
    """A network by UUID or name that `project` may use (its own or a shared one);
    `project` None (an admin) sees every network."""
    where = [] if project is None else [
        or_(NetworkRow.project.is_(None), NetworkRow.project == project)]
    return find(session, NetworkRow, ref, "network", *where,
                create_hint="list them with passthru net-list")


def _random_mac(session: Session, network_id: str) -> str:
    while True:
        # 02:... is a locally administered unicast address: it never collides with a
        # vendor's burnt-in MAC. 40 random bits almost never repeat; checking the one
        # candidate costs one indexed lookup, not every MAC of the network.
        mac = "02:" + ":".join(f"{b:02x}" for b in secrets.token_bytes(5))
        if session.scalars(select(PortRow.id).where(PortRow.network_id == network_id,
                                                    PortRow.mac_address == mac)).first() is None:
            return mac


def check_pci_flavor(session: Session, name: str) -> None:
    """That PCI flavor `name` exists, and keeps existing (under that name) until this
    transaction ends: locked as `known_pci_flavors(keep=True)` does."""
    if session.scalars(select(PciFlavorRow.uuid).where(PciFlavorRow.name == name)
                       .with_for_update(read=True)).first():
        return
    raise NotFoundError(f"no PCI flavor {name!r} (list them with passthru pci-flavor-list)")


def create_port(session: Session, network: NetworkRow, project: str, *,
                vnic_type: VnicType = VnicType.NORMAL, pci_flavor: str | None = None,
                mac_address: str | None = None, name: str = "", port_security: bool = True,
                by_boot: bool = False) -> PortRow:
    if pci_flavor is not None:
        if vnic_type is VnicType.NORMAL:
            raise InvalidInputError(f"a pci flavor ({pci_flavor}) needs vnic type direct, macvtap "
                                    "or direct-physical: a normal port takes no PCI device")
        check_pci_flavor(session, pci_flavor)
    if mac_address is None:
        mac = _random_mac(session, network.id)
    else:
        mac = unicast_mac(mac_address)
        if session.scalars(select(PortRow.id).where(
                PortRow.network_id == network.id, PortRow.mac_address == mac)).first():
            raise ConflictError(f"mac address {mac} is already used on network "
                                f"{network.name}; leave it out to get a fresh one")
    port = PortRow(network=network, project=project, vnic_type=vnic_type,
                   pci_flavor=pci_flavor, mac_address=mac, name=name,
                   port_security=port_security, created_by_boot=by_boot, binding_profile={})
    session.add(port)
    session.flush()
    return port
