"""Ports in the store, and their one writer: a project's own (an admin may see every
project's), made with a MAC unique on their network, attached to one server at a time,
bound where the host bound them, and deleted only while no server has them."""

from __future__ import annotations

import secrets
from collections.abc import Iterable

from sqlalchemy import ColumnElement, CursorResult, select, update
from sqlalchemy import delete as delete_rows
from sqlalchemy.orm import Session

from passthru.controller.store import lookup
from passthru.controller.store.models import NetworkRow, PciFlavorRow, PortRow
from passthru.controller.store.paging import Window, by, rows_page
from passthru.errors import ConflictError, InvalidInputError, NotFoundError
from passthru.pci.binding import VnicType, unicast_mac
from passthru.pci.work import PortBinding


def _owned_by(project: str | None) -> list[ColumnElement[bool]]:
    """A project's ports; `project` None (an admin asking for all projects): every port."""
    return [] if project is None else [PortRow.project == project]


def page(session: Session, project: str | None, window: Window) -> tuple[list[PortRow], bool]:
    """`project`'s ports, oldest first; the marker is a port's id."""
    scope = _owned_by(project)
    return rows_page(session, select(PortRow).where(*scope), (PortRow.created_at, PortRow.id),
                     window, "port", "id", by(PortRow.id, scope=scope))


def find(session: Session, ref: str, project: str | None) -> PortRow:
    """A port of `project` (None: of any project) by UUID or name."""
    return lookup.find(session, PortRow, ref, "port", *_owned_by(project))


def delete(session: Session, ref: str, project: str | None) -> None:
    row = find(session, ref, project)
    # Conditional: a boot that attaches the port meanwhile keeps it (on PostgreSQL this
    # waits for that boot's commit and then finds the port in use).
    gone = session.execute(delete_rows(PortRow).where(PortRow.id == row.id,
                                                      PortRow.device_id.is_(None))
                           .execution_options(synchronize_session=False))
    assert isinstance(gone, CursorResult)  # a DELETE's result counts its rows
    if gone.rowcount != 1:
        if session.get(PortRow, row.id, populate_existing=True) is None:
            raise NotFoundError(f"no port {ref!r}: it was deleted meanwhile")
        raise ConflictError(f"port {row.name or row.id} is attached to server "
                            f"{row.device_id}; delete the server first")


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
                server: str | None = None) -> PortRow:
    """A new port on `network`; made for `server` (a boot's NIC), it dies with it."""
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
                   port_security=port_security, created_by_boot=server is not None,
                   device_id=server, binding_profile={})
    session.add(port)
    session.flush()
    return port


def attach_port(session: Session, ref: str, project: str, server: str, where: str) -> PortRow:
    """The project's free port `ref`, attached to `server` (`where`: the boot's NIC)."""
    port = find(session, ref, project)
    # Conditional, in the boot's transaction: of boots racing for one port, the first to
    # write it wins, and the others (on PostgreSQL, waiting for its commit) find it taken.
    taken = session.execute(
        update(PortRow).where(PortRow.id == port.id, PortRow.device_id.is_(None))
        .values(device_id=server).execution_options(synchronize_session=False))
    if session.get(PortRow, port.id, populate_existing=True) is None:
        raise NotFoundError(f"{where}: port {ref!r} was deleted meanwhile")
    assert isinstance(taken, CursorResult)  # an UPDATE's result counts its rows
    if taken.rowcount != 1:
        raise ConflictError(f"port {port.id} is in use by server {port.device_id}; "
                            "use a free port or net-id=")
    return port


def bind_ports(ports: Iterable[PortRow], host: str, bindings: Iterable[PortBinding]) -> None:
    """Record how `host` bound a server's `ports` (Neutron's binding fields)."""
    by_id = {port.id: port for port in ports}
    for binding in bindings:
        port = by_id.get(binding.port_id)
        if port is None:
            continue
        port.binding_host_id = host
        port.binding_vif_type = str(binding.vif_type)
        port.binding_profile = {**binding.profile, "vlan": binding.vlan}


def release_ports(session: Session, server: str) -> None:
    """Ports a boot made die with `server`; ports the tenant made are unbound and kept."""
    for port in session.scalars(select(PortRow).where(PortRow.device_id == server)):
        if port.created_by_boot:
            session.delete(port)
        else:
            port.device_id = None
            port.binding_host_id = port.binding_vif_type = None
            port.binding_profile = {}
