"""What catalog writes check: that a name is free, and that no server uses a row deleted.

A delete locks the row before it counts the row's users: a boot that made a server of it
meanwhile holds the row (its foreign key), so that server is counted once committed.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import ColumnElement, func, select
from sqlalchemy.orm import InstrumentedAttribute, Session

from passthru.controller.store.models import ServerRow, ServerStatus
from passthru.errors import ConflictError


def require_free(session: Session, name: InstrumentedAttribute[str], value: str,
                 refusal: str, *scope: ColumnElement[bool]) -> None:
    """Refuse (`ConflictError(refusal)`) a `value` some row already has in column `name`,
    among the rows in `scope`."""
    if session.scalars(select(name).where(name == value, *scope).limit(1)).first() is not None:
        raise ConflictError(refusal)


def delete_unused(session: Session, row: Any, column: InstrumentedAttribute[Any],
                  what: str) -> None:
    """Delete `row` (a `what` named by `column` of servers), refused while a server that is
    not deleted names it; `row` is locked first."""
    session.refresh(row, with_for_update=True)
    users = session.scalar(select(func.count()).select_from(ServerRow).where(
        column == row.id, ServerRow.status != ServerStatus.DELETED))
    if users:
        raise ConflictError(f"{what} {row.name} is used by {users} server(s); delete them "
                            "first")
    session.delete(row)
