"""Launching servers: create them, place and claim their devices, or fail them clearly.

Creating the rows and claiming the devices are two transactions: the claim is the
scheduler's conditional update, which needs the server and its requests to exist. When no
host fits, the servers go to ERROR with the scheduler's message and keep nothing.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import update

from passthru.controller.boot import BootRequest, boot_server
from passthru.controller.db import Store
from passthru.controller.events import EventKind, record
from passthru.controller.mapping import request_from_row, server_size
from passthru.controller.models import ServerRow, ServerStatus
from passthru.controller.scheduler.claim import ServerGoneError
from passthru.controller.scheduler.placement import NoValidHostError
from passthru.controller.scheduler.service import Scheduler


def launch(store: Store, scheduler: Scheduler, boots: Sequence[BootRequest]) -> list[str]:
    """Create the servers and place them all on hosts, or none of them.

    Returns their uuids; they are BUILD on their hosts, or ERROR with the reason.
    """
    with store.write() as session:
        servers = [boot_server(session, boot) for boot in boots]
        vms = [(row.uuid, [request_from_row(r) for r in row.requests]) for row in servers]
        sizes = [server_size(row) for row in servers]
    uuids = [uuid for uuid, _ in vms]
    try:
        scheduler.schedule_many(vms, sizes)
    except NoValidHostError as error:
        fail(store, uuids, str(error))
    except ServerGoneError as error:
        # Deleted by its owner before it was placed: the others of a multi-create fail
        # with it (all or none), and nothing is held.
        fail(store, uuids, str(error))
    return uuids


def fail(store: Store, uuids: Sequence[str], reason: str) -> None:
    """Servers that cannot be placed: ERROR with the reason. Like any server they keep
    their ports until deleted, so the tenant sees what was asked for."""
    with store.write() as session:
        # Conditional: a delete that commits meanwhile is not turned back into ERROR, nor
        # a server that another replica's build sweep has placed or failed.
        failed = session.scalars(
            update(ServerRow).where(ServerRow.uuid.in_(uuids),
                                    ServerRow.status == ServerStatus.BUILD,
                                    ServerRow.host_id.is_(None))
            .values(status=ServerStatus.ERROR, fault=reason).returning(ServerRow.uuid)
            .execution_options(synchronize_session=False)).all()
        for uuid in sorted(failed):
            record(session, EventKind.SERVER_ERROR, reason, server=uuid)
