"""The history of devices, servers, hosts and tokens, written in the same transaction as
the change, and read back newest first, page by page."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Select, insert, or_, select
from sqlalchemy.orm import Session

from passthru.controller.enums import EventKind
from passthru.controller.store.models import EventRow, ServerRow
from passthru.controller.store.paging import Window, by, keyset, split


def record(session: Session, kind: EventKind, message: str = "", *, host: str | None = None,
           device: str | None = None, server: str | None = None) -> None:
    session.add(EventRow(kind=str(kind), message=message, host=host, device_address=device,
                         server=server))


def record_devices(session: Session, host: str,
                   events: Iterable[tuple[EventKind, str, str]]) -> None:
    """Many device events of one host (kind, device address, message) in one statement: a
    report can add 100,000 devices, and one ORM object per event would dominate its cost."""
    rows = [{"kind": str(kind), "message": message, "host": host, "device_address": address}
            for kind, address, message in events]
    if rows:
        session.execute(insert(EventRow.__table__), rows)


@dataclass(frozen=True, slots=True)
class EventFilter:
    """Which events a page holds: those matching every field given. `server` is a UUID
    or a name (every server ever called that); `device` a canonical PCI address; the
    times are in UTC; `after` an event id."""

    host: str | None = None
    device: str | None = None
    server: str | None = None
    kinds: Sequence[EventKind] = ()
    since: datetime | None = None
    until: datetime | None = None
    after: int | None = None

    def query(self) -> Select[EventRow, str | None, str | None]:
        """The matching events, with their server's name and project."""
        query = (select(EventRow, ServerRow.name, ServerRow.project)
                 .outerjoin(ServerRow, ServerRow.uuid == EventRow.server))
        if self.after is not None:
            query = query.where(EventRow.id > self.after)
        if self.host is not None:
            query = query.where(EventRow.host == self.host)
        if self.device is not None:
            query = query.where(EventRow.device_address == self.device)
        if self.server is not None:
            named = select(ServerRow.uuid).where(ServerRow.name == self.server)
            query = query.where(or_(EventRow.server == self.server, EventRow.server.in_(named)))
        if self.kinds:
            query = query.where(EventRow.kind.in_(self.kinds))
        if self.since is not None:
            query = query.where(EventRow.time >= self.since)
        if self.until is not None:
            query = query.where(EventRow.time < self.until)
        return query


def event_page(session: Session, page: Window, matching: EventFilter
               ) -> tuple[list[tuple[EventRow, str | None, str | None]], bool]:
    """Newest first (by time, then id); the marker is an event's id."""
    query = keyset(session, matching.query(), (EventRow.time, EventRow.id), page, "event",
                   "id", by(EventRow.id, int), descending=True)
    rows, more = split(session.execute(query).all(), page)
    return [(row, name, project) for row, name, project in rows], more
