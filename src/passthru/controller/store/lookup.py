"""Finding resources by UUID or name, with errors that say what exists."""

from __future__ import annotations

from typing import Any, TypeVar

from sqlalchemy import ColumnElement, or_, select
from sqlalchemy.orm import Session

from passthru.errors import ConflictError, NotFoundError

Row = TypeVar("Row")


def find(session: Session, model: type[Row], ref: str, what: str,
         *where: ColumnElement[bool], create_hint: str = "") -> Row:
    """The one row of `model` whose primary key or name is `ref`.

    `where` narrows what the caller may see (a project's servers); rows outside it are
    reported as absent, so nobody learns of another project's resources.
    """
    table: Any = model
    key = table.__mapper__.primary_key[0]
    rows = session.scalars(select(model).where(or_(key == ref, table.name == ref), *where)
                           .limit(3)).all()
    exact = [r for r in rows if getattr(r, key.key) == ref]
    if exact:
        return exact[0]
    if len(rows) > 1:
        raise ConflictError(f"more than one {what} is named {ref!r}; use its UUID")
    if not rows:
        hint = f" ({create_hint})" if create_hint else ""
        raise NotFoundError(f"no {what} {ref!r}{hint}")
    return rows[0]
