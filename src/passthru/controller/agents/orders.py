"""Work for host agents, derived from the servers' state, and what their answers change.

Nothing is queued: a server BUILD on a host is a spawn order for that host, a DELETED
server still on a host is a destroy order, a placed server with a power change pending
(`task_state`) is a power order, and every placed server (ACTIVE, SHUTOFF, rebooting) is
listed so that a restarted agent can tell its domains apart and each round reports their
power state and console. A spawn answer moves the server on — ACTIVE with its devices
allocated and ports bound, or, failed, off to another host (`reschedule`) or ERROR with
the fault and nothing held; a destroyed server leaves its host; a power answer sets the
status the action ends in. Asking twice gives the same orders, so an agent that restarts
mid-way loses nothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from sqlalchemy import ColumnElement, select, tuple_, update
from sqlalchemy.orm import Session, selectinload

from passthru.controller import ledger
from passthru.controller.catalog.ports import bind_ports
from passthru.controller.enums import EventKind
from passthru.controller.servers.power import PLACED, RULES, describe_state, pending_action
from passthru.controller.servers.release import fail_server
from passthru.controller.servers.reschedule import leave_host
from passthru.controller.store.events import record
from passthru.controller.store.mapping import attached_ports, device_from_row, guest_spec, port_spec
from passthru.controller.store.models import (
    HostRow,
    KeypairRow,
    PciRequestRow,
    PortRow,
    ServerRow,
    ServerStatus,
)
from passthru.errors import InvalidInputError
from passthru.pci.work import (
    AttachedDevice,
    DestroyOrder,
    OrderResult,
    Orders,
    PowerAction,
    PowerOrder,
    PowerState,
    SpawnOrder,
)

#: What a power answer records when the action is done.
_DONE_EVENTS = {PowerAction.STOP: EventKind.SERVER_SHUTOFF,
                PowerAction.START: EventKind.SERVER_STARTED,
                PowerAction.REBOOT: EventKind.SERVER_REBOOTED,
                PowerAction.HARD_REBOOT: EventKind.SERVER_REBOOTED}


def spawn_order(server: ServerRow, public_key: str | None = None) -> SpawnOrder:
    """The order to spawn `server`; `public_key` is the key its key name names."""
    ports = {port.id: port for port in server.ports}
    devices: list[AttachedDevice] = []
    for request in server.requests:
        port = ports.get(request.port_id) if request.port_id else None
        spec, network = port_spec(port) if port is not None else (None, None)
        devices += [AttachedDevice(device_from_row(row), request.uuid, spec, network)
                    for row in sorted(request.devices, key=lambda d: d.address)]
    # The size fixed at boot, which is what the host counts, whatever became of the flavor.
    return SpawnOrder(server.uuid, server.name, server.vcpus, server.ram_mb, devices,
                      nics=attached_ports(server.ports),
                      guest=guest_spec(server, public_key),
                      numa_node=server.numa_node, pinned_cpus=list(server.pinned_cpus))


def _public_keys(session: Session, servers: Iterable[ServerRow]
                 ) -> dict[tuple[str, str | None], str]:
    """The keys the servers boot with, by (project, key name), in one query."""
    wanted = {(s.project, s.key_name) for s in servers if s.key_name is not None}
    if not wanted:
        return {}
    rows = session.execute(select(KeypairRow.project, KeypairRow.name, KeypairRow.public_key)
                           .where(tuple_(KeypairRow.project, KeypairRow.name).in_(wanted)))
    return {(project, name): key for project, name, key in rows}


def _on_host(host: str) -> ColumnElement[bool]:
    return ServerRow.host_id == select(HostRow.id).where(HostRow.name == host).scalar_subquery()


def pending_orders(session: Session, host: str) -> tuple[Orders, dict[str, str]]:
    """Asked every few seconds by each agent: one light query over the host's servers,
    and the devices, ports, image and keys loaded only for those to spawn.

    Also returns the servers whose spawn order cannot be made, with why (a port row
    written before its MAC was checked, say): one such server must not keep the host's
    other orders from being served; `fail_unbuildable` fails them."""
    orders = Orders()
    unbuildable: dict[str, str] = {}
    to_spawn: list[str] = []
    for uuid, name, status, task_state in session.execute(
            select(ServerRow.uuid, ServerRow.name, ServerRow.status, ServerRow.task_state)
            .where(_on_host(host), ServerRow.status.in_(
                {ServerStatus.BUILD, ServerStatus.DELETED, *PLACED}))
            .order_by(ServerRow.created_at)):
        if status is ServerStatus.DELETED:
            orders.destroy.append(DestroyOrder(uuid, name))
        elif status is ServerStatus.BUILD:
            to_spawn.append(uuid)
        else:
            orders.running.append(uuid)
            if task_state:
                orders.power.append(PowerOrder(uuid, name, PowerAction(task_state)))
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
                selectinload(ServerRow.image)))}
        keys = _public_keys(session, building.values())
        for server in (building[uuid] for uuid in to_spawn):
            try:
                orders.spawn.append(spawn_order(server, keys.get((server.project,
                                                                  server.key_name))))
            except InvalidInputError as error:
                unbuildable[server.uuid] = str(error)
    return orders, unbuildable


def fail_unbuildable(session: Session, host: str, faults: Mapping[str, str]) -> list[str]:
    """ERROR, holding nothing, for each server still being built on `host` whose spawn
    order cannot be made (uuid → why): no host could be given it. Returns those failed."""
    failed = []
    for uuid in sorted(faults):
        server = session.scalars(
            select(ServerRow).where(_on_host(host), ServerRow.uuid == uuid,
                                    ServerRow.status == ServerStatus.BUILD)
            .with_for_update()).one_or_none()
        if server is None:
            continue  # deleted, or moved on, meanwhile
        fail_server(session, server, f"its spawn order cannot be made: {faults[uuid]}", host)
        failed.append(uuid)
    return failed


def _server_on(session: Session, host: str, uuid: str) -> ServerRow:
    # Locked: a delete (which locks the server first too) cannot slip in between reading
    # the server here and marking it ACTIVE.
    server = session.scalars(
        select(ServerRow).join(HostRow, ServerRow.host_id == HostRow.id)
        .where(HostRow.name == host, ServerRow.uuid == uuid)
        .options(selectinload(ServerRow.ports)).with_for_update(of=ServerRow)).one_or_none()
    if server is None:
        raise InvalidInputError(f"server {uuid} is not placed on host {host}; "
                                "ask for this host's orders again")
    return server


def spawned(session: Session, host: str, result: OrderResult,
            max_attempts: int = 1) -> ServerRow:
    """Record how a spawn went: ACTIVE with its devices allocated; or failed, BUILD with
    no host and nothing held, to be placed on another host while it has attempts left of
    `max_attempts`, else ERROR with every host's fault. A spawn that ends after its server
    was deleted changes nothing: the destroy order that follows removes its domain."""
    server = _server_on(session, host, result.server_uuid)
    if server.status is ServerStatus.DELETED:
        return server
    if server.status is not ServerStatus.BUILD:
        raise InvalidInputError(f"server {server.uuid} is {server.status}, not being built; "
                                "ask for this host's orders again")
    if result.ok:
        _activate(session, host, server, result)
    else:
        leave_host(session, server, host, result.fault or "the host gave no reason",
                   max_attempts)
    return server


def lost(session: Session, host: str, server_uuid: str, reason: str) -> ServerRow:
    """A server placed here whose domain the host no longer has: ERROR, nothing held."""
    server = _server_on(session, host, server_uuid)
    if server.status not in PLACED:
        raise InvalidInputError(f"server {server.uuid} is {server.status}, not placed with a "
                                "domain; only a running or stopped server can be lost")
    fail_server(session, server, reason, host)
    return server


def powered(session: Session, host: str, result: OrderResult,
            action: PowerAction | None = None) -> ServerRow:
    """Record how a power change went: the status the action ends in, or, failed, the
    status before it with the fault. `action` names the order answered: an answer to one
    that was replaced meanwhile (a hard reboot asked during a soft one) is refused, and
    the pending one stays."""
    server = _server_on(session, host, result.server_uuid)
    if server.status is ServerStatus.DELETED:
        return server
    pending = pending_action(server)
    if pending is None or (action is not None and action is not pending):
        now = (f"the {action} answered was replaced by {pending}" if pending is not None
               else "no power change is pending")
        raise InvalidInputError(f"server {server.uuid} is {describe_state(server)}: {now}; ask "
                                "for this host's orders again")
    rule = RULES[pending]
    server.task_state = None
    if result.ok:
        server.status, server.fault = rule.done, None
        record(session, _DONE_EVENTS[pending], host=host, server=server.uuid,
               message=f"{pending} of server {server.name} done on {host}")
    else:
        server.status = rule.failed
        server.fault = f"{pending} failed on {host}: {result.fault or 'the host gave no reason'}"
        record(session, EventKind.POWER_FAILED, server.fault, host=host, server=server.uuid)
    return server


def power_states(session: Session, host: str, states: Mapping[str, PowerState]) -> list[str]:
    """What the agent found: a server ACTIVE here with no power change pending whose domain
    is shut off (its guest shut itself down) becomes SHUTOFF, as Nova's power-state sync.
    Conditional, so a stop or reboot asked meanwhile is not overtaken. Returns those."""
    off = [uuid for uuid, state in states.items() if state is PowerState.SHUTOFF]
    if not off:
        return []
    stopped = sorted(session.scalars(
        update(ServerRow).where(_on_host(host), ServerRow.uuid.in_(off),
                                ServerRow.status == ServerStatus.ACTIVE,
                                ServerRow.task_state.is_(None))
        .values(status=ServerStatus.SHUTOFF).returning(ServerRow.uuid)
        .execution_options(synchronize_session=False)).all())
    for uuid in stopped:
        record(session, EventKind.SERVER_SHUTOFF, host=host, server=uuid,
               message=f"its domain on {host} stopped without being asked (the guest shut "
                       "itself down)")
    return stopped


def console_output(session: Session, host: str, server_uuid: str, text: str) -> ServerRow:
    """Keep the tail of the server's console log as its host last sent it."""
    server = _server_on(session, host, server_uuid)
    if server.status is not ServerStatus.DELETED:
        server.console_log = text
    return server


def destroyed(session: Session, host: str, result: OrderResult) -> ServerRow:
    """Record how a destroy went: a server whose domain is gone leaves its host; a failed
    destroy is recorded and asked for again."""
    server = _server_on(session, host, result.server_uuid)
    if server.status is not ServerStatus.DELETED:
        raise InvalidInputError(f"server {server.uuid} is {server.status}, not deleted; "
                                "ask for this host's orders again")
    if result.ok:
        server.host = None
        record(session, EventKind.SERVER_DESTROYED, host=host, server=server.uuid,
               message=f"server {server.name} removed from {host}")
    else:
        record(session, EventKind.DESTROY_FAILED, result.fault or "", host=host, server=server.uuid)
    return server


def _activate(session: Session, host: str, server: ServerRow, result: OrderResult) -> None:
    locked = ledger.lock_host(session, host)
    if locked is None:
        raise InvalidInputError(f"host {host} is not known to the controller")
    ledger.allocate(session, locked, server.uuid, server.name)
    bind_ports(server.ports, host, result.bindings)
    server.status, server.fault, server.domain_xml = ServerStatus.ACTIVE, None, result.domain_xml
    record(session, EventKind.SERVER_ACTIVE, host=host, server=server.uuid,
           message=f"server {server.name} running on {host}")
