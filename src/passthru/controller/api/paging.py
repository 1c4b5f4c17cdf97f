"""Pages of a list, as Nova pages them, and the refusal of query parameters a list does
not know.

Every list takes `limit` (default `Settings.page_size`, cut to `Settings.max_page_size`
as Nova cuts to `max_limit`) and `marker`: the id (UUID, or the name where a resource is
known by name) of the last item of the previous page. A page that is not the last one
carries `<list>_links: [{"rel": "next", "href": ...}]`, the request's own address with the
marker of its last item, as Nova's `servers_links`; a client follows it until it is gone.

Pages are keyset pages: each list has a stable total order ending in a unique column, and
the next page is what comes after the marker's position in that order (`tuple_(...) >
marker`), so that items added or removed between two pages neither repeat nor shift the
rest, and the store reads a page as an index range scan rather than skipping an offset.
A marker that names no item of the list is a 400, as Nova answers.

A query parameter the route does not declare is a 400 that names it: a misspelt filter
must never silently widen a list to everything.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, TypeVar

from fastapi import Depends, Query, Request
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from pydantic import BaseModel, Field, SerializerFunctionWrapHandler, model_serializer
from sqlalchemy import ColumnElement, Select, select, tuple_
from sqlalchemy.orm import Session

from passthru.controller.api.deps import SettingsDep
from passthru.controller.api.fields import INT32_MAX, MAX_NAME
from passthru.errors import InvalidInputError

T = TypeVar("T")

_known: dict[int, frozenset[str]] = {}


def _query_names(dependant: Dependant) -> Iterator[str]:
    yield from (param.alias for param in dependant.query_params)
    for sub in dependant.dependencies:
        yield from _query_names(sub)


def _declared(route: APIRoute) -> frozenset[str]:
    names = _known.get(id(route))
    if names is None:
        names = _known[id(route)] = frozenset(_query_names(route.dependant))
    return names


def refuse_unknown_query(request: Request) -> None:
    """400 for any query parameter the matched route does not declare."""
    route = request.scope.get("route")
    if not isinstance(route, APIRoute):
        return
    declared = _declared(route)
    unknown = sorted(set(request.query_params) - declared)
    if unknown:
        raise InvalidInputError(
            f"unknown query parameter{'s' if len(unknown) > 1 else ''} "
            f"{', '.join(repr(name) for name in unknown)}; {request.url.path} takes "
            f"{', '.join(sorted(declared)) or 'none'}")


@dataclass(frozen=True, slots=True)
class PageParams:
    """What a list request asked for: at most `limit` items after `marker`."""

    limit: int
    marker: str | None
    request: Request

    def next_links(self, items: Sequence[Any], more: bool,
                   marker_of: Callable[[Any], object]) -> list[Link]:
        """A page's `<list>_links`: a next link only when more follow."""
        if not more or not items:
            return []
        url = self.request.url.include_query_params(marker=str(marker_of(items[-1])))
        return [Link(rel="next", href=str(url))]


class Link(BaseModel):
    rel: str = Field(description="next: the page after this one")
    href: str


#: A list body's `<list>_links`: the next page, if more follow (left out on the last
#: page, as Nova leaves it out). Bodies with one derive from `PagedList`.
Links = Annotated[list[Link], Field(default_factory=list,
                                    description="the next page; absent on the last page")]


class PagedList(BaseModel):
    """A list body; its empty `*_links` are left out, as Nova leaves them out."""

    @model_serializer(mode="wrap")
    def _without_empty_links(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        body: dict[str, Any] = handler(self)
        return {key: value for key, value in body.items()
                if value or not key.endswith("_links")}


async def _page_params(request: Request, settings: SettingsDep,
                 limit: str | None = Query(None, max_length=20, description=(
                     "at most this many items (default and cap: the controller's "
                     "page_size and max_page_size); follow the next link for more")),
                 marker: str | None = Query(None, max_length=MAX_NAME, description=(
                     "the id of the last item of the previous page: this page starts "
                     "after it")),
                 ) -> PageParams:
    refuse_unknown_query(request)
    if limit is None:
        size = settings.page_size
    else:
        try:
            size = int(limit)
        except ValueError:
            size = 0
        if not 1 <= size <= INT32_MAX:
            raise InvalidInputError(f"limit must be a whole number of at least 1, got {limit!r}; "
                                    f"a page holds at most {settings.max_page_size} items (a "
                                    f"bigger limit up to {INT32_MAX} is cut to that)")
    return PageParams(min(size, settings.max_page_size), marker or None, request)


#: A list request's page: declares `limit` and `marker`, and refuses unknown parameters.
Page = Annotated[PageParams, Depends(_page_params)]


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


def keyset(session: Session, query: Statement, order: Sequence[Any], page: PageParams,
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


def rows_page(session: Session, query: Statement, order: Sequence[Any], page: PageParams,
              what: str, how: str, locate: Locate) -> tuple[list[Any], bool]:
    """One page of the ORM rows of `query` (see `keyset`), and whether more follow."""
    return split(session.scalars(keyset(session, query, order, page, what, how, locate)
                                 ).all(), page)


def split(rows: Sequence[T], page: PageParams) -> tuple[list[T], bool]:
    """The page's items, and whether more follow (the query asked for one more)."""
    return list(rows[:page.limit]), len(rows) > page.limit
