"""Giving back what a server holds: its devices and its ports; and failing a server, which
gives back everything."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from passthru.controller.events import EventKind, record
from passthru.controller.host_devices import HostDevices, lock_host
from passthru.controller.models import DeviceRow, HostRow, PortRow, ServerRow, ServerStatus
from passthru.pci import claims


def hosts_holding(session: Session, server: ServerRow) -> list[str]:
    """The hosts where `server` holds devices, in name order (the order hosts are locked
    in, so that two deletes never lock hosts crosswise)."""
    return sorted(session.scalars(
        select(HostRow.name).join(DeviceRow, DeviceRow.host_id == HostRow.id)
        .where(DeviceRow.owner == server.uuid).distinct()))


def free_devices(session: Session, server: ServerRow) -> list[str]:
    """Free every device `server` holds, on whatever host; returns their addresses."""
    freed: list[str] = []
    for name in hosts_holding(session, server):
        host = lock_host(session, name)
        if host is None:
            continue
        state = HostDevices.load(session, host)
        held = [a for a, d in state.devices.items() if d.owner == server.uuid]
        claims.free(state.devices, server.uuid)
        state.save(session)
        for address in held:
            record(session, EventKind.DEVICE_FREED, host=name, device=address, server=server.uuid,
                   message=f"freed by server {server.name}")
        freed += held
    return freed


def release_ports(session: Session, server: ServerRow) -> None:
    """Ports a boot made die with the server; ports the tenant made are unbound and kept."""
    for port in session.scalars(select(PortRow).where(PortRow.device_id == server.uuid)):
        if port.created_by_boot:
            session.delete(port)
        else:
            port.device_id = None
            port.binding_host_id = port.binding_vif_type = None
            port.binding_profile = {}


def delete_server(session: Session, server: ServerRow) -> list[str]:
    """Delete the server; returns the hosts whose devices it freed."""
    # The server before its hosts, as claims lock them: a claim in flight either commits
    # first (and its devices are freed here) or finds the server deleted.
    session.refresh(server, with_for_update=True)
    hosts = hosts_holding(session, server)
    free_devices(session, server)
    release_ports(session, server)
    server.status, server.task_state = ServerStatus.DELETED, None
    record(session, EventKind.SERVER_DELETED, server=server.uuid,
           host=server.host.name if server.host else None, message=f"server {server.name}")
    return hosts


def fail_server(session: Session, server: ServerRow, fault: str, host: str | None) -> None:
    """ERROR with `fault`, off its host, holding nothing (`host` names it for the event)."""
    server.status, server.fault, server.task_state = ServerStatus.ERROR, fault, None
    server.host = None
    free_devices(session, server)
    release_ports(session, server)
    record(session, EventKind.SERVER_ERROR, fault, host=host, server=server.uuid)
