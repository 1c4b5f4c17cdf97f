"""Serves the fleet page at `/ui`: one HTML file, its script and its style sheet.

The files themselves are public (a browser cannot put a bearer token on a page load);
the page reads its token from the URL fragment and sends it on every API call, so what
it shows is exactly what the token may read.
"""

from __future__ import annotations

from importlib.resources import files

from fastapi import APIRouter
from fastapi.responses import Response

from passthru.errors import NotFoundError

router = APIRouter(include_in_schema=False)

_ASSETS = {"fleet.js": "text/javascript", "fleet.css": "text/css"}
# Only our own files run and only our own API is called; no page may frame this one.
_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; "
                               "connect-src 'self'; img-src 'self' data:; base-uri 'none'; "
                               "form-action 'none'; frame-ancestors 'none'",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-cache",
}


def _asset(name: str, media_type: str) -> Response:
    body = files("passthru.web").joinpath(name).read_bytes()
    return Response(body, media_type=media_type, headers=_HEADERS)


@router.get("/ui")
def fleet_page() -> Response:
    return _asset("fleet.html", "text/html; charset=utf-8")


@router.get("/ui/{name}")
def fleet_asset(name: str) -> Response:
    media_type = _ASSETS.get(name)
    if media_type is None:
        raise NotFoundError(f"the fleet page has no file {name!r}; open /ui")
    return _asset(name, f"{media_type}; charset=utf-8")
