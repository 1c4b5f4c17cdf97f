"""The history of devices, servers, hosts and tokens, written in the same transaction as
the change."""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import insert
from sqlalchemy.orm import Session

from passthru.controller.enums import EventKind
from passthru.controller.models import EventRow


def record(session: Session, kind: EventKind, message: str = "", *, host: str | None = None,
           device: str | None = None, server: str | None = None) -> None:
    session.add(EventRow(kind=str(kind), message=message, host=host, device_address=device,
                         server=server))


def record_devices(session: Session, host: str, events: Iterable[tuple[EventKind, str]]) -> None:
    """Many device events of one host (kind, device address) in one statement: a report
    can add 100,000 devices, and one ORM object per event would dominate its cost."""
    rows = [{"kind": str(kind), "message": "", "host": host, "device_address": address}
            for kind, address in events]
    if rows:
        session.execute(insert(EventRow.__table__), rows)
