"""Reading servers for the API: the ones a caller may see, one found by UUID or name, a
page of them, each loaded with everything its view shows (its requests and their
devices, flavor, image, host and ports) in a few statements rather than one per server.

A member sees their own project's servers; an admin sees every project's when asking
for all of them, and finds any server by reference. A DELETED server is seen by nobody
here (the event history still names it).
"""

from __future__ import annotations

from sqlalchemy import ColumnElement, select
from sqlalchemy.orm import Session, selectinload

from passthru.controller.store.lookup import find
from passthru.controller.store.models import PciRequestRow, ServerRow, ServerStatus
from passthru.controller.store.paging import Window, by, keyset, split

_LOAD = (selectinload(ServerRow.requests).selectinload(PciRequestRow.devices),
         selectinload(ServerRow.flavor), selectinload(ServerRow.image),
         selectinload(ServerRow.host), selectinload(ServerRow.ports))


def _scope(project: str | None) -> list[ColumnElement[bool]]:
    """Servers not deleted, of `project` (None: of every project)."""
    alive = ServerRow.status != ServerStatus.DELETED
    return [alive] if project is None else [alive, ServerRow.project == project]


def find_server(session: Session, ref: str, project: str | None) -> ServerRow:
    """The server `ref` (UUID or name) of `project` (None: of any project)."""
    return find(session, ServerRow, ref, "server", *_scope(project),
                create_hint="list them with passthru list")


def server_page(session: Session, page: Window, project: str | None
                ) -> tuple[list[ServerRow], bool]:
    """Oldest first (by creation, then UUID); the marker is a server's UUID."""
    scope = _scope(project)
    query = keyset(session, select(ServerRow).where(*scope).options(*_LOAD),
                   (ServerRow.created_at, ServerRow.uuid), page, "server", "UUID",
                   by(ServerRow.uuid, scope=scope[1:]))
    return split(session.scalars(query).all(), page)


def loaded_server(session: Session, uuid: str) -> ServerRow:
    """The server `uuid`, whatever its state, with everything its view shows."""
    return session.scalars(select(ServerRow).where(ServerRow.uuid == uuid)
                           .options(*_LOAD)).one()
