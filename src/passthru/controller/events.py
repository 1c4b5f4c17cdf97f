"""The history of devices, servers, hosts and tokens, written in the same transaction as
the change."""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum

from sqlalchemy import insert
from sqlalchemy.orm import Session

from passthru.controller.models import EventRow


class EventKind(StrEnum):
    """Every kind of event the controller records."""

    SERVER_CREATED = "server-created"
    SERVER_ERROR = "server-error"
    #: A multi-create that no hosts could take whole: none of its servers was kept.
    SERVERS_REFUSED = "servers-refused"
    SERVER_ACTIVE = "server-active"
    SERVER_DELETED = "server-deleted"
    SERVER_DESTROYED = "server-destroyed"
    DESTROY_FAILED = "destroy-failed"
    SERVER_RESCHEDULED = "server-rescheduled"
    POWER_REQUESTED = "power-requested"
    POWER_FAILED = "power-failed"
    SERVER_SHUTOFF = "server-shutoff"
    SERVER_STARTED = "server-started"
    SERVER_REBOOTED = "server-rebooted"
    DEVICE_CLAIMED = "device-claimed"
    DEVICE_ALLOCATED = "device-allocated"
    DEVICE_FREED = "device-freed"
    DEVICE_ADDED = "device-added"
    DEVICE_UPDATED = "device-updated"
    DEVICE_REMOVED = "device-removed"
    DEVICE_MISSING = "device-missing"
    DEVICE_RETURNED = "device-returned"
    HOST_ADDED = "host-added"
    HOST_UP = "host-up"
    HOST_DOWN = "host-down"
    HOST_RESOURCES = "host-resources"
    TOKEN_ISSUED = "token-issued"
    TOKEN_REVOKED = "token-revoked"


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
