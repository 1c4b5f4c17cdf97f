"""Pages of a list, as Nova pages them, and the refusal of query parameters a list does
not know.

Every list takes `limit` (default `Settings.page_size`, cut to `Settings.max_page_size`
as Nova cuts to `max_limit`) and `marker`: the id (UUID, or the name where a resource is
known by name) of the last item of the previous page. A page that is not the last one
carries `<list>_links: [{"rel": "next", "href": ...}]`, the request's own address with the
marker of its last item, as Nova's `servers_links`; a client follows it until it is gone.

The store reads each page as a keyset page (`controller.store.paging`).

A query parameter the route does not declare is a 400 that names it: a misspelt filter
must never silently widen a list to everything.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Query, Request
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from pydantic import BaseModel, Field, SerializerFunctionWrapHandler, model_serializer

from passthru.controller.api.deps import SettingsDep
from passthru.controller.api.fields import INT32_MAX, MAX_NAME
from passthru.errors import InvalidInputError

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
