"""Keyset pages of the store's lists.

Each list has a stable total order ending in a unique column, and the next page is what
comes after the marker's position in that order (`tuple_(...) > marker`), so that items
added or removed between two pages neither repeat nor shift the rest, and the store reads
a page as an index range scan rather than skipping an offset. A marker that names no item
of the list is refused (a 400, as Nova answers). What a page is (its `limit` and
`marker`) comes from the API's `PageParams`, or anything of that shape.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol, TypeVar

from sqlalchemy import ColumnElement, Select, select, tuple_
from sqlalchemy.orm import Session

from passthru.errors import InvalidInputError

T = TypeVar("T")


class Window(Protocol):
    """A page asked for: at most `limit` items after the item `marker` names."""

    @property
    def limit(self) -> int: ...

    @property
    def marker(self) -> str | None: ...


def no_marker(what: str, marker: str, how: str) -> InvalidInputError:
    return InvalidInputError(f"marker {marker!r} is no {what} of this list; a marker is the "
                             f"{how} of the last {what} of the previous page (follow the next "
                             "link, or list from the start without marker)")


#: Where the marker's row is: the criteria that find it, given the marker's text (a
#: ValueError: the text cannot name any item).
Locate = Callable[[str], Sequence[ColumnElement[bool]]]
#: A statement of any columns, as the lists page them.
Statement = Select[*tuple[Any, ...]]


def by(key: Any, parse: Callable[[str], Any] = str,
       scope: Sequence[ColumnElement[bool]] = ()) -> Locate:
    """The marker is the value of column `key` (among the rows `scope` admits)."""
    return lambda marker: [key == parse(marker), *scope]


def keyset(session: Session, query: Statement, order: Sequence[Any], page: Window,
           what: str, how: str, locate: Locate, *, descending: bool = False) -> Statement:
    """`query` limited to the page after `page.marker` in `order` (which ends in a unique
    column), one item more than the page so that `split` knows whether more follow. `how`
    says what a marker is ("UUID")."""
    if page.marker is not None:
        try:
            criteria = locate(page.marker)
        except ValueError:
            raise no_marker(what, page.marker, how) from None
        position = session.execute(select(*order).where(*criteria)).first()
        if position is None:
            raise no_marker(what, page.marker, how)
        mark = tuple_(*position)
        query = query.where(tuple_(*order) < mark if descending else tuple_(*order) > mark)
    columns = [c.desc() for c in order] if descending else list(order)
    return query.order_by(*columns).limit(page.limit + 1)


def rows_page(session: Session, query: Statement, order: Sequence[Any], page: Window,
              what: str, how: str, locate: Locate) -> tuple[list[Any], bool]:
    """One page of the ORM rows of `query` (see `keyset`), and whether more follow."""
    return split(session.scalars(keyset(session, query, order, page, what, how, locate)
                                 ).all(), page)


def split(rows: Sequence[T], page: Window) -> tuple[list[T], bool]:
    """The page's items, and whether more follow (the query asked for one more)."""
    return list(rows[:page.limit]), len(rows) > page.limit
