"""Launching servers: create them, place and claim their devices, or fail them clearly.

Creating the rows and claiming the devices are two transactions: the claim is the
scheduler's conditional update, which needs the server and its requests to exist. When no
host fits, the servers go to ERROR with the scheduler's message and keep nothing.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from passthru.controller.boot import BootRequest, boot_server
from passthru.controller.db import Store
from passthru.controller.events import record
from passthru.controller.mapping import request_from_row
from passthru.controller.models import ServerRow, ServerStatus
from passthru.controller.scheduler.claim import ServerGoneError
from passthru.controller.scheduler.placement import NoValidHostError
from passthru.controller.scheduler.service import Scheduler


def _servers(session: Session, uuids: Sequence[str]) -> list[ServerRow]:
    query = (select(ServerRow).where(ServerRow.uuid.in_(uuids))
             .options(selectinload(ServerRow.requests)))
    by_uuid = {row.uuid: row for row in session.scalars(query)}
    return [by_uuid[uuid] for uuid in uuids]


def launch(store: Store, scheduler: Scheduler, boots: Sequence[BootRequest]) -> list[str]:
    """Create the servers and place them all on hosts, or none of them.

    Returns their uuids; they are BUILD on their hosts, or ERROR with the reason.
    """
    with store.write() as session:
        uuids = [boot_server(session, boot).uuid for boot in boots]
    with store.read() as session:
        vms = [(row.uuid, [request_from_row(r) for r in row.requests])
               for row in _servers(session, uuids)]
    try:
        scheduler.schedule_many(vms)
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
        for row in _servers(session, uuids):
            if row.status is ServerStatus.DELETED:
                continue
            row.status, row.fault = ServerStatus.ERROR, reason
            record(session, "server-error", reason, server=row.uuid)
