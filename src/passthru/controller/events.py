"""The history of devices and hosts, written in the same transaction as the change."""

from __future__ import annotations

from sqlalchemy.orm import Session

from passthru.controller.models import EventRow


def record(session: Session, kind: str, message: str = "", *, host: str | None = None,
           device: str | None = None, server: str | None = None) -> None:
    session.add(EventRow(kind=kind, message=message, host=host, device_address=device,
                         server=server))
