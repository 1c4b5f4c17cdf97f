"""Giving back what a server holds: its devices, its room on its host, and its ports; and
failing a server, which gives back everything.

A server holds its size (vCPUs, memory, disk, pinned CPUs) on `host_id` from the claim
that placed it until it is deleted or leaves the host, whichever comes first; a deleted
server stays on its host until the agent destroyed it, but holds nothing there any more.
`free_resources` gives the size back under exactly that rule, so calling it twice (a
delete after a failed spawn, say) subtracts once: call it before the server's status
becomes DELETED or its host None.
"""

from __future__ import annotations

from sqlalchemy import delete, update
from sqlalchemy.orm import Session

from passthru.controller import ledger
from passthru.controller.catalog.ports import release_ports
from passthru.controller.enums import EventKind
from passthru.controller.store.events import record
from passthru.controller.store.models import CpuPinRow, HostRow, ServerRow, ServerStatus
from passthru.controller.store.wakeups import wake
from passthru.errors import NotFoundError
from passthru.pci.resources import VmSize


def free_devices(session: Session, server: ServerRow) -> list[str]:
    """Free every device `server` holds, on whatever host; returns their addresses."""
    return ledger.free(session, server.uuid, server.name)


def holds_resources(server: ServerRow) -> bool:
    return server.host_id is not None and server.status is not ServerStatus.DELETED


def free_resources(session: Session, server: ServerRow) -> None:
    """Give back the vCPUs, memory, disk and pinned CPUs the server holds on its host
    (nothing when it holds none: see the module's docstring)."""
    if not holds_resources(server) or server.host is None:
        return
    ledger.record_released(session, server.host.name, server.uuid,
                           VmSize(server.vcpus, server.ram_mb, server.disk_gb),
                           server.pinned_cpus)
    session.execute(update(HostRow).where(HostRow.id == server.host_id).values(
        vcpus_used=HostRow.vcpus_used - server.vcpus,
        ram_mb_used=HostRow.ram_mb_used - server.ram_mb,
        disk_gb_used=HostRow.disk_gb_used - server.disk_gb))
    session.execute(delete(CpuPinRow).where(CpuPinRow.server_uuid == server.uuid))
    server.pinned_cpus = []


def delete_server(session: Session, server: ServerRow) -> list[str]:
    """Delete the server; returns the hosts whose devices or room it freed. NotFoundError
    if it is deleted already: of deletes racing for one server, exactly one does it."""
    # The server before its hosts, as claims lock them: a claim in flight either commits
    # first (and its devices are freed here) or finds the server deleted.
    session.refresh(server, with_for_update=True)
    if server.status is ServerStatus.DELETED:
        # Another delete committed while this one waited for the lock: it freed everything.
        raise NotFoundError(f"no server {server.uuid}: it was deleted meanwhile")
    hosts = ledger.hosts_holding(session, server.uuid)
    if holds_resources(server) and server.host is not None:
        hosts = sorted({*hosts, server.host.name})
    free_devices(session, server)
    free_resources(session, server)
    release_ports(session, server.uuid)
    server.status, server.task_state = ServerStatus.DELETED, None
    wake(session, server.host.name if server.host else None)
    record(session, EventKind.SERVER_DELETED, server=server.uuid,
           host=server.host.name if server.host else None, message=f"server {server.name}")
    return hosts


def fail_server(session: Session, server: ServerRow, fault: str, host: str | None) -> None:
    """ERROR with `fault`, off its host, holding nothing (`host` names it for the event)."""
    wake(session, host)
    free_devices(session, server)
    free_resources(session, server)
    server.status, server.fault, server.task_state = ServerStatus.ERROR, fault, None
    server.host, server.numa_node = None, None
    release_ports(session, server.uuid)
    record(session, EventKind.SERVER_ERROR, fault, host=host, server=server.uuid)
