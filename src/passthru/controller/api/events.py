"""The event history, for admins: who had which device, when hosts went down.

Events are written by the code that makes each change, in the same transaction
(`controller.store.events.record`); this only reads them, newest first. A page carries an ETag
(`api.conditional`), so that a poller asking for what happened since its newest gets a
304 while nothing did.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Query, Response
from pydantic import BaseModel

from passthru.controller.api.conditional import NOT_MODIFIED, answer
from passthru.controller.api.deps import StoreDep, TenantCaller
from passthru.controller.api.errors import ERROR_RESPONSES
from passthru.controller.api.fields import CheckedName, name_query
from passthru.controller.api.paging import Links, Page, PagedList
from passthru.controller.enums import EventKind
from passthru.controller.store.events import EventFilter, event_page
from passthru.controller.store.mapping import event_record
from passthru.errors import InvalidInputError
from passthru.pci.address import PciAddress

router = APIRouter(prefix="/v2/{tenant_id}", tags=["events"], responses=ERROR_RESPONSES)

KINDS_HELP = "only these kinds (repeatable): " + ", ".join(kind.value for kind in EventKind)


class Event(BaseModel):
    id: int
    time: datetime
    kind: str
    host: str | None
    device: str | None
    server: str | None
    #: The server's name and project, kept after the server is deleted.
    server_name: str | None
    project: str | None
    message: str


class EventList(PagedList):
    events: list[Event]
    events_links: Links


def _utc(moment: datetime, name: str) -> datetime:
    """The moment in UTC; a time without a zone means UTC, as every time the API answers is."""
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    try:
        return moment.astimezone(UTC)
    except OverflowError:
        raise InvalidInputError(f"{name} {moment.isoformat()} is out of range in UTC; give a "
                                "time between years 1 and 9999") from None


def _canonical_device(text: str) -> str:
    try:
        return str(PciAddress.parse(text))
    except InvalidInputError as error:
        raise InvalidInputError(f"device filter: {error}") from None


@router.get("/os-events", response_model=EventList, responses=NOT_MODIFIED,
            summary="List events: claims, frees, inventory changes, hosts up and down (admin)")
def list_events(
    who: TenantCaller, store: StoreDep,
    host: Annotated[CheckedName | None, name_query("only this host's events")] = None,
    device: str | None = Query(None, max_length=64,
                               description="only this PCI address (e.g. 0000:3b:02.1 or "
                                           "3b:02.1), on any host unless host is given"),
    server: Annotated[CheckedName | None,
                      name_query("only this server, by UUID or name")] = None,
    kind: list[EventKind] | None = Query(None, description=KINDS_HELP),
    since: datetime | None = Query(None, description="only at or after this time (UTC "
                                                     "unless a zone is given)"),
    until: datetime | None = Query(None, description="only before this time"),
    after: int | None = Query(None, ge=0, description="only events with an id above this "
                              "(the newest a client has seen: what happened since)"),
    *, page: Page,
) -> Response:
    """Newest first (by time, then id); the marker is an event's id."""
    who.require_admin("listing events")
    matching = EventFilter(
        host=host, device=None if device is None else _canonical_device(device),
        server=server, kinds=kind or (), after=after,
        since=None if since is None else _utc(since, "since"),
        until=None if until is None else _utc(until, "until"))
    with store.read() as session:
        rows, more = event_page(session, page, matching)
        return answer(page.request, EventList(
            events=[Event(**event_record(row, name, project)) for row, name, project in rows],
            events_links=page.next_links(rows, more, lambda r: r[0].id)))
