"""Builds that fail or stall: another host for the server, or ERROR with every fault.

A failed spawn (or a host that went down under a build) gives back what the server holds
there and counts the attempt in one transaction: the server is BUILD with no host and no
devices, its ports kept, the host added to `tried_hosts` and its fault to the server's
`fault`. It is then placed again, avoiding the hosts tried, by the same scheduler claim as
a boot — a second transaction, so a controller that stops in between leaves nothing held,
and the build sweep places the server later. Only when its attempts are used up or no
other host fits does it go to ERROR, the message naming every host's fault.

The build sweep runs with the down-host sweep, as soon as a controller starts and then
periodically: it fails builds older than the build timeout, moves builds off hosts that
went down, and picks up servers left BUILD with no host for longer than a grace period
(a controller stopped between a boot's two transactions, or between a failed spawn and
the new placement). One never placed is failed, which deletes the ports its boot made
and unbinds the tenant's; one that failed a spawn before is placed again. The grace
keeps the sweep off boots another replica is placing right now.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import and_, or_, select
from sqlalchemy.orm import Session, selectinload

from passthru.controller.enums import EventKind
from passthru.controller.ledger import changes_of
from passthru.controller.scheduler.claim import ServerGoneError
from passthru.controller.scheduler.placement import NoValidHostError
from passthru.controller.scheduler.service import Scheduler
from passthru.controller.servers.launch import fail
from passthru.controller.servers.release import fail_server, free_devices, free_resources
from passthru.controller.settings import Settings
from passthru.controller.store.db import Store
from passthru.controller.store.events import record
from passthru.controller.store.mapping import request_from_row, server_size
from passthru.controller.store.models import HostRow, HostStatus, ServerRow, ServerStatus, utcnow
from passthru.controller.store.wakeups import wake


def leave_host(session: Session, server: ServerRow, host: str, fault: str,
               max_attempts: int) -> bool:
    """The build of `server` on `host` failed with `fault`: free what it holds there and
    count the attempt. Returns whether to place it again (it is BUILD with no host); if
    not, it is ERROR with every host's fault and holds nothing."""
    wake(session, host)
    server.attempts += 1
    server.tried_hosts = [*server.tried_hosts, host]
    faults = f"{server.fault}; " if server.fault else ""
    faults += f"{host}: {fault}"
    if server.attempts >= max_attempts:
        fail_server(session, server, f"could not be built in {server.attempts} attempt"
                    f"{'s' if server.attempts > 1 else ''}: {faults}", host)
        return False
    free_devices(session, server)
    free_resources(session, server)
    server.host, server.fault, server.numa_node = None, faults, None
    record(session, EventKind.SERVER_RESCHEDULED, host=host, server=server.uuid,
           message=f"building server {server.name} on {host} failed (attempt "
                   f"{server.attempts} of {max_attempts}); placing it on another host")
    return True


def place_again(store: Store, scheduler: Scheduler, server_uuid: str) -> None:
    """Place a server a failed build left BUILD with no host, avoiding the hosts it was
    tried on; ERROR with every fault when no other host fits."""
    with store.read() as session:
        server = session.get(ServerRow, server_uuid, options=[selectinload(ServerRow.requests)])
        if server is None or server.status is not ServerStatus.BUILD or server.host_id:
            return
        requests = [request_from_row(row) for row in server.requests]
        size = server_size(server)
        tried, faults = frozenset(server.tried_hosts), server.fault
    try:
        scheduler.schedule_many([(server_uuid, requests)], [size], exclude=tried)
    except NoValidHostError as error:
        fail(store, [server_uuid], f"could not be built: {faults}; and no other host fits: "
                                   f"{error}")
    except ServerGoneError:
        pass  # deleted, or placed by another replica's sweep meanwhile


@dataclass
class BuildSweep:
    """What one sweep did: the servers it failed, and those it placed again (or failed
    there, when no other host fits)."""

    failed: list[str] = field(default_factory=list)
    placed_again: list[str] = field(default_factory=list)


def sweep_builds(store: Store, scheduler: Scheduler, settings: Settings,
                 now: datetime | None = None) -> BuildSweep:
    """Fail builds older than `settings.build_timeout`, move builds off hosts that are down,
    and pick up servers left BUILD with no host past `settings.unplaced_grace`."""
    now = now or utcnow()
    timed_out = now - timedelta(seconds=settings.build_timeout)
    forgotten = now - timedelta(seconds=settings.unplaced_grace)
    swept = BuildSweep()
    with store.write() as session:
        down = select(HostRow.id).where(HostRow.status == HostStatus.DOWN)
        # Servers locked before hosts (freeing locks those), in uuid order as claims do.
        stale = session.scalars(
            select(ServerRow).where(
                ServerRow.status == ServerStatus.BUILD,
                or_(ServerRow.created_at < timed_out, ServerRow.host_id.in_(down),
                    and_(ServerRow.host_id.is_(None), ServerRow.updated_at < forgotten)))
            .options(selectinload(ServerRow.host))
            .order_by(ServerRow.uuid).with_for_update(of=ServerRow)).all()
        for server in stale:
            host = server.host.name if server.host else None
            if server.created_at < timed_out:
                fail_server(session, server, f"build timed out after "
                            f"{settings.build_timeout:.0f} s on {host or 'no host'}", host)
                swept.failed.append(server.uuid)
            elif host is not None:
                if leave_host(session, server, host, f"host {host} went down during the "
                              "build", settings.max_build_attempts):
                    swept.placed_again.append(server.uuid)
                else:
                    swept.failed.append(server.uuid)
            elif server.attempts:
                swept.placed_again.append(server.uuid)
            else:
                fail_server(session, server, "was never placed on a host: the controller "
                            "stopped while booting it; delete it and boot it again", None)
                swept.failed.append(server.uuid)
        changes = changes_of(session)
    scheduler.apply(changes)
    for uuid in swept.placed_again:
        place_again(store, scheduler, uuid)
    return swept
