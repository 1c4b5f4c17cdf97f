"""Work for host agents, derived from the servers' state, and what their answers change.

Nothing is queued: a server BUILD on a host is a spawn order for that host, a DELETED
server still on a host is a destroy order, and the ACTIVE ones are listed so that a
restarted agent can tell its domains apart. An answer moves the server on — ACTIVE with its
devices allocated and ports bound, or ERROR with the fault and nothing held — and a
destroyed server leaves its host. Asking twice gives the same orders, so an agent that
restarts mid-way loses nothing.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from passthru.controller.events import EventKind, record
from passthru.controller.host_devices import HostDevices, lock_host
from passthru.controller.mapping import device_from_row
from passthru.controller.models import (
    HostRow,
    PciRequestRow,
    PortRow,
    ServerRow,
    ServerStatus,
)
from passthru.controller.release import free_devices, free_resources, release_ports
from passthru.pci import claims
from passthru.pci.binding import NetworkSpec, PortSpec
from passthru.pci.errors import PciValueError
from passthru.pci.work import AttachedDevice, DestroyOrder, OrderResult, Orders, SpawnOrder


def _port_spec(port: PortRow) -> tuple[PortSpec, NetworkSpec]:
    network = port.network
    return (PortSpec(port.id, port.vnic_type, port.mac_address,
                     port_security=port.port_security),
            NetworkSpec(network.name, network.network_type, network.physical_network,
                        network.segmentation_id))


def spawn_order(server: ServerRow) -> SpawnOrder:
    ports = {port.id: port for port in server.ports}
    devices: list[AttachedDevice] = []
    for request in server.requests:
        port = ports.get(request.port_id) if request.port_id else None
        spec, network = _port_spec(port) if port is not None else (None, None)
        devices += [AttachedDevice(device_from_row(row), request.uuid, spec, network)
                    for row in sorted(request.devices, key=lambda d: d.address)]
    # The size fixed at boot, which is what the host counts, whatever became of the flavor.
    return SpawnOrder(server.uuid, server.name, server.vcpus, server.ram_mb, devices,
                      numa_node=server.numa_node, pinned_cpus=list(server.pinned_cpus))


def pending_orders(session: Session, host: str) -> Orders:
    """Asked every few seconds by each agent: one light query over the host's servers,
    and the devices, ports and flavor loaded only for those to spawn."""
    on_host = (ServerRow.host_id == select(HostRow.id).where(HostRow.name == host)
               .scalar_subquery())
    orders = Orders()
    to_spawn: list[str] = []
    for uuid, name, status in session.execute(
            select(ServerRow.uuid, ServerRow.name, ServerRow.status)
            .where(on_host, ServerRow.status.in_(
                (ServerStatus.BUILD, ServerStatus.ACTIVE, ServerStatus.DELETED)))
            .order_by(ServerRow.created_at)):
        if status is ServerStatus.DELETED:
            orders.destroy.append(DestroyOrder(uuid, name))
        elif status is ServerStatus.ACTIVE:
            orders.running.append(uuid)
        else:
            to_spawn.append(uuid)
    if orders.destroy:
        xml = dict(session.execute(select(ServerRow.uuid, ServerRow.domain_xml).where(
            ServerRow.uuid.in_([order.server_uuid for order in orders.destroy]))).all())
        for order in orders.destroy:
            order.domain_xml = xml[order.server_uuid]
    if to_spawn:
        building = {row.uuid: row for row in session.scalars(
            select(ServerRow).where(ServerRow.uuid.in_(to_spawn)).options(
                selectinload(ServerRow.requests).selectinload(PciRequestRow.devices),
                selectinload(ServerRow.ports).selectinload(PortRow.network),
                selectinload(ServerRow.flavor)))}
        orders.spawn = [spawn_order(building[uuid]) for uuid in to_spawn]
    return orders


def _server_on(session: Session, host: str, uuid: str) -> ServerRow:
    # Locked: a delete (which locks the server first too) cannot slip in between reading
    # the server here and marking it ACTIVE.
    server = session.scalars(
        select(ServerRow).join(HostRow, ServerRow.host_id == HostRow.id)
        .where(HostRow.name == host, ServerRow.uuid == uuid)
        .options(selectinload(ServerRow.ports)).with_for_update(of=ServerRow)).one_or_none()
    if server is None:
        raise PciValueError(f"server {uuid} is not placed on host {host}; "
                            "ask for this host's orders again")
    return server


def spawned(session: Session, host: str, result: OrderResult) -> ServerRow:
    """Record how a spawn went: ACTIVE with its devices allocated, or ERROR with the fault
    and nothing held. A spawn that ends after its server was deleted changes nothing: the
    destroy order that follows removes its domain."""
    server = _server_on(session, host, result.server_uuid)
    if server.status is ServerStatus.DELETED:
        return server
    if server.status is not ServerStatus.BUILD:
        raise PciValueError(f"server {server.uuid} is {server.status}, not being built; "
                            "ask for this host's orders again")
    if result.ok:
        _activate(session, host, server, result)
    else:
        _fail(session, host, server, result.fault or "the host gave no reason")
    return server


def _fail(session: Session, host: str, server: ServerRow, fault: str) -> None:
    free_devices(session, server)
    free_resources(session, server)
    server.status, server.fault = ServerStatus.ERROR, fault
    server.host, server.numa_node = None, None
    release_ports(session, server)
    record(session, EventKind.SERVER_ERROR, fault, host=host, server=server.uuid)


def lost(session: Session, host: str, server_uuid: str, reason: str) -> ServerRow:
    """A server ACTIVE here whose domain the host no longer has: ERROR, nothing held."""
    server = _server_on(session, host, server_uuid)
    if server.status is not ServerStatus.ACTIVE:
        raise PciValueError(f"server {server.uuid} is {server.status}, not ACTIVE; "
                            "only a running server can be lost")
    _fail(session, host, server, reason)
    return server


def destroyed(session: Session, host: str, result: OrderResult) -> ServerRow:
    """Record how a destroy went: a server whose domain is gone leaves its host; a failed
    destroy is recorded and asked for again."""
    server = _server_on(session, host, result.server_uuid)
    if server.status is not ServerStatus.DELETED:
        raise PciValueError(f"server {server.uuid} is {server.status}, not deleted; "
                            "ask for this host's orders again")
    if result.ok:
        server.host = None
        record(session, EventKind.SERVER_DESTROYED, host=host, server=server.uuid,
               message=f"server {server.name} removed from {host}")
    else:
        record(session, EventKind.DESTROY_FAILED, result.fault or "", host=host, server=server.uuid)
    return server


def _activate(session: Session, host: str, server: ServerRow, result: OrderResult) -> None:
    locked = lock_host(session, host)
    if locked is None:
        raise PciValueError(f"host {host} is not known to the controller")
    state = HostDevices.load(session, locked)
    for device in claims.allocate(state.devices, server.uuid):
        record(session, EventKind.DEVICE_ALLOCATED, host=host, device=device.address,
               server=server.uuid, message=f"allocated to server {server.name}")
    state.save(session)
    ports = {port.id: port for port in server.ports}
    for binding in result.bindings:
        port = ports.get(binding.port_id)
        if port is None:
            continue
        port.binding_host_id = host
        port.binding_vif_type = str(binding.vif_type)
        port.binding_profile = {**binding.profile, "vlan": binding.vlan}
    server.status, server.fault, server.domain_xml = ServerStatus.ACTIVE, None, result.domain_xml
    record(session, EventKind.SERVER_ACTIVE, host=host, server=server.uuid,
           message=f"server {server.name} running on {host}")
