"""Answers a poller can revalidate: a JSON body with a strong `ETag`, and `304 Not
Modified` (no body) when the request's `If-None-Match` names that tag, as RFC 9110 says.

The tag is a hash of the body's bytes, so it moves exactly when the answer does, whatever
moved it (this replica, another one, or the clock of a heart-beat), and two replicas give
the same answer the same tag. What the body costs to work out is the endpoint's own
business (the fleet summary keeps its pass over the index until the index moves: see
`Scheduler.pool_totals`); what a 304 spares is the body on the wire and, above all, the
client's work with it: the fleet page draws nothing again for an answer it already has.

`Cache-Control: private, no-cache` lets a browser keep the answer but never use it
without asking again, and no shared cache keep it at all (the answers are an admin's).
"""

from __future__ import annotations

import hashlib
from typing import Any

from fastapi import Request, Response
from pydantic import BaseModel

_CACHE_CONTROL = "private, no-cache"

#: What the routes that answer through `answer` add to their OpenAPI responses.
NOT_MODIFIED: dict[int | str, dict[str, Any]] = {
    304: {"description": "Not Modified: the answer is still the one whose ETag the "
                         "request's If-None-Match names"},
}


def etag(content: bytes) -> str:
    """The strong entity tag of a body."""
    return '"' + hashlib.blake2b(content, digest_size=16).hexdigest() + '"'


def _names(header: str, tag: str) -> bool:
    """Whether an If-None-Match value names `tag` (weak comparison, as for GET)."""
    if header.strip() == "*":
        return True
    return any(candidate.strip().removeprefix("W/") == tag for candidate in header.split(","))


def answer(request: Request, body: BaseModel) -> Response:
    """`body` as the route's JSON answer with its ETag, or a 304 if the client has it."""
    content = body.model_dump_json(by_alias=True).encode()
    tag = etag(content)
    headers = {"ETag": tag, "Cache-Control": _CACHE_CONTROL}
    seen = request.headers.get("if-none-match")
    if seen is not None and _names(seen, tag):
        return Response(status_code=304, headers=headers)
    return Response(content, media_type="application/json", headers=headers)
