"""Launching servers: create them, place and claim their devices, or fail them clearly.

A boot is one write transaction: its rows, then the scheduler's claim (a conditional
update, which needs them) in a savepoint of the same transaction, so that the server
exists only placed (or failed), and a crash between the two leaves nothing. Concurrent
boots share their transaction and its fsync (`Store.grouped`, group commit), each in a
savepoint of its own: one boot's failure is its own. A placement that lost a race, or
that must wait for this replica's claims in flight, is not retried inside the shared
transaction (the others' locks are held there): its savepoint goes, and the boot is made
again in the next group, once the lost host has been read again or the claims ended.

When no host fits, what is left follows Nova:
- one server goes to ERROR with the scheduler's message (its fault) and holds nothing, so
  the tenant sees what was asked for and why it failed (the boot answers 202 with it);
- a multi-create that cannot place `min_count` servers is refused whole: as Nova creates
  no server when `min_count` cannot be met, its servers, their requests and the ports the
  boot made are never committed (ports the tenant made stay free), one event says so, and
  the boot answers 409 with the scheduler's message. The tenant is left with nothing to
  clean;
- of a multi-create of up to `max_count` servers, as many as fit are placed (the first
  ones, at least `min_count`); the others are removed in the same transaction, with one
  event that names them, and the boot answers 202 with those placed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from passthru.controller.catalog.cache import Catalog
from passthru.controller.catalog.ports import release_ports
from passthru.controller.enums import EventKind
from passthru.controller.scheduler.placement import NoValidHostError, Placement
from passthru.controller.scheduler.service import RetryError, Scheduler
from passthru.controller.servers.boot import Booted, BootRequest, boot_servers
from passthru.controller.store.db import Store
from passthru.controller.store.events import record
from passthru.controller.store.models import EventRow, ServerRow, ServerStatus
from passthru.errors import ConflictError, NoCapacityError


@dataclass(frozen=True, slots=True)
class Launched:
    """A server as its boot wrote it, and where it was placed: None when it was not (it is
    ERROR, with the reason)."""

    server: Booted
    placement: Placement | None


#: Boots made again, each in a new group, before one is given up: each is another
#: boot's win, or a wait for this replica's claims to end.
_MAX_ROUNDS = 100


def launch(store: Store, scheduler: Scheduler, catalog: Catalog,
           boots: Sequence[BootRequest], least: int | None = None) -> list[Launched]:
    """Create the servers and place them on hosts: all of them, or (`least`, Nova's
    min_count of a multi-create whose max_count is `len(boots)`) the first ones, as many
    as fit and at least `least`; the others are removed again, as if never asked for.

    Returns those left: BUILD on their hosts, or the one server ERROR with the reason.
    A multi-create that cannot be placed leaves nothing and raises NoCapacityError.
    """
    for _ in range(_MAX_ROUNDS):
        try:
            launched = store.grouped(partial(_launch, scheduler, catalog, boots, least))
        except RetryError as retry:
            retry.prepare()
            continue
        if isinstance(launched, str):
            raise NoCapacityError(launched)
        return launched
    raise ConflictError(f"the boot of {_names(boots)} lost the race for devices or room "
                        f"{_MAX_ROUNDS} times in a row to other boots; boot it again")


def _launch(scheduler: Scheduler, catalog: Catalog, boots: Sequence[BootRequest],
            least: int | None, session: Session) -> list[Launched] | str:
    """The boot in `session`: what it placed, or why a multi-create was refused."""
    # What a refused multi-create takes back (a single server is kept in ERROR).
    created = session.begin_nested() if len(boots) > 1 else None
    servers = boot_servers(session, catalog, boots)
    uuids = [server.uuid for server in servers]
    try:
        placements: Sequence[Placement | None] = scheduler.schedule_many(
            [(server.uuid, server.requests) for server in servers],
            [server.size for server in servers],
            flavors_version=servers[0].pci_flavors_version, least=least, session=session)
    except NoValidHostError as error:
        if created is not None:
            created.rollback()
            refused = f"none of the {len(uuids)} servers {_names(boots)} was created: {error}"
            record(session, EventKind.SERVERS_REFUSED, f"project {boots[0].project}: {refused}")
            return refused
        fail_in(session, uuids, str(error))
        placements = [None]
    if created is not None:
        created.commit()
    if len(placements) < len(servers):
        left = boots[len(placements):]
        _discard(session, uuids[len(placements):],
                 f"{len(placements)} of the {len(boots)} servers {_names(boots)} were "
                 f"created (max_count {len(boots)}): no host fits {_names(left)} besides",
                 boots[0].project)
    return [Launched(server, placement)
            for server, placement in zip(servers, placements, strict=False)]


def _names(boots: Sequence[BootRequest]) -> str:
    return f"{boots[0].name} ... {boots[-1].name}" if len(boots) > 2 else " and ".join(
        boot.name for boot in boots)


def _discard(session: Session, uuids: Sequence[str], reason: str, project: str) -> None:
    """Remove servers of a multi-create its boot could not place, with their requests and
    the ports their boot made (ports the tenant made are freed); one event says why."""
    rows = session.scalars(select(ServerRow).where(ServerRow.uuid.in_(uuids))).all()
    for row in rows:
        release_ports(session, row.uuid)
        session.delete(row)
    # Their only history is their creation, of servers that now never were.
    session.execute(delete(EventRow).where(EventRow.server.in_(uuids),
                                           EventRow.kind == str(EventKind.SERVER_CREATED)))
    record(session, EventKind.SERVERS_REFUSED, f"project {project}: {reason}")


def fail(store: Store, uuids: Sequence[str], reason: str) -> None:
    """Servers that cannot be placed: ERROR with the reason. Like any server they keep
    their ports until deleted, so the tenant sees what was asked for."""
    with store.write() as session:
        fail_in(session, uuids, reason)


def fail_in(session: Session, uuids: Sequence[str], reason: str) -> None:
    """`fail` in the caller's transaction."""
    # Conditional: a delete that commits meanwhile is not turned back into ERROR, nor a
    # server that another replica's build sweep has placed or failed.
    failed = session.scalars(
        update(ServerRow).where(ServerRow.uuid.in_(uuids),
                                ServerRow.status == ServerStatus.BUILD,
                                ServerRow.host_id.is_(None))
        .values(status=ServerStatus.ERROR, fault=reason).returning(ServerRow.uuid)
        .execution_options(synchronize_session=False)).all()
    for uuid in sorted(failed):
        record(session, EventKind.SERVER_ERROR, reason, server=uuid)
