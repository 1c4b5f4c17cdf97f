"""The limits every request meets before the application reads a byte of its body.

One pure ASGI middleware (`RequestLimits`; a `BaseHTTPMiddleware` would re-wrap every
request and its body), checking in this order:

1. A token. Every path but the public pages (`/ui`, `/openapi.json`, `/docs`, `/redoc`)
   needs `Authorization: Bearer` with a token the store knows; any other request gets
   401 before its body is read, so an anonymous client cannot make the controller take
   in a large body. The lookup is `deps.identify`, the one every route relies on (from
   the replica's token cache when it may, in the event loop): its result is the
   request's principal, which the routes' `Caller` reads.
2. A rate. A member token gets `rate_limit` requests per second on average and
   `rate_burst` at once (a token bucket by token digest); past that, 429 with
   Retry-After. The buckets are each replica's own: behind a balancer over N replicas a
   token gets up to N times the rate. Admin and agent tokens are not limited.
3. A size. A Content-Length over the route's limit gets 413 at once; a chunked body is
   counted as it arrives and refused with 413 as soon as it passes the limit. The limit
   is `max_body_bytes`, or `max_report_bytes` for an agent's inventory report. An image
   file upload has its own, `max_image_bytes`, which `image_files` enforces the same way
   as it streams the file to disk.
4. A pace. A client that sends no byte of its body for `body_timeout` seconds gets 408.

Every refusal is the API's JSON error and names the `passthru serve` option that sets
the limit (Starlette's own body limit answers plain text). A refusal that leaves body
unread closes the connection, so that the web server drops the rest unread.
"""

from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass
from http import HTTPStatus

import anyio
from starlette.datastructures import Headers
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from passthru.controller.api.deps import identify
from passthru.controller.api.errors import error_response, store_unreachable
from passthru.controller.auth import Principal, digest
from passthru.controller.enums import Role
from passthru.controller.settings import Settings
from passthru.controller.store.db import count_commits, unreachable
from passthru.errors import UnauthorizedError

#: Paths anyone may read: the fleet page (it takes its token from the URL fragment)
#: and the API's description.
_PUBLIC = ("/ui", "/openapi.json", "/docs", "/redoc")
_REPORT = re.compile(r"/v2/agent/hosts/[^/]+/inventory")
_IMAGE_FILE = re.compile(r"/v2/[^/]+/images/[^/]+/file/[^/]+")
_CLOSE = {"Connection": "close"}


@dataclass(frozen=True, slots=True)
class _Limit:
    """How large one kind of request body may be, and the option that says so."""

    size: int
    what: str
    option: str


class _RefusedError(Exception):
    """A request refused by a limit, with the answer it gets."""

    def __init__(self, response: Response) -> None:
        super().__init__(response.status_code)
        self.response = response


class TokenBuckets:
    """`rate` requests per second for each key on average, `burst` at once."""

    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = burst
        self._buckets: dict[str, tuple[float, float]] = {}

    def wait(self, key: str) -> float:
        """0 if `key` may make a request now (it is counted), else the seconds until it
        may. Called on the event loop only, so it needs no lock."""
        now = time.monotonic()
        tokens, then = self._buckets.get(key, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - then) * self.rate)
        if tokens >= 1.0:
            self._buckets[key] = (tokens - 1.0, now)
            return 0.0
        self._buckets[key] = (tokens, now)
        return (1.0 - tokens) / self.rate


def _is_public(path: str) -> bool:
    return any(path == page or path.startswith(page + "/") for page in _PUBLIC)


def _declared_size(headers: Headers) -> int | None:
    try:
        return int(headers["content-length"])
    except (KeyError, ValueError):
        return None  # chunked, or none; the web server refuses a malformed length


def _bearer(headers: Headers) -> str | None:
    scheme, _, token = headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer":
        return None
    return token.strip() or None


class RequestLimits:
    """The middleware: token, rate, body size and pace of every HTTP request."""

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.settings = settings
        self._body = _Limit(settings.max_body_bytes, "a request", "--max-body-size")
        self._report = _Limit(settings.max_report_bytes, "an inventory report",
                              "--max-report-size")
        self._rates = (TokenBuckets(settings.rate_limit, settings.rate_burst)
                       if settings.rate_limit > 0 else None)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        declared = _declared_size(headers)
        limit = self._limit_of(scope)
        try:
            if not _is_public(scope["path"]):
                scope.setdefault("state", {})["principal"] = await self._admit(scope, headers)
            if limit is not None and declared is not None and declared > limit.size:
                raise _RefusedError(error_response(
                    HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                    f"the request body is {declared} bytes; the limit for {limit.what} is "
                    f"{limit.size} bytes (passthru serve {limit.option})", _CLOSE))
        except _RefusedError as refused:
            if declared or "transfer-encoding" in headers:
                refused.response.headers.update(_CLOSE)
            await refused.response(scope, receive, send)
            return
        count_commits()  # for the 503 of a store outage: was anything of it stored?
        await self._paced(scope, receive, send, limit)

    def _limit_of(self, scope: Scope) -> _Limit | None:
        method, path = scope["method"], scope["path"]
        if method in ("PUT", "PATCH") and _REPORT.fullmatch(path):
            return self._report
        if method == "PUT" and _IMAGE_FILE.fullmatch(path):
            return None
        return self._body

    async def _admit(self, scope: Scope, headers: Headers) -> Principal:
        """The caller, if its token is known and within its rate."""
        token = _bearer(headers)
        if token is None:
            raise _RefusedError(error_response(
                HTTPStatus.UNAUTHORIZED, "no token given: send 'Authorization: Bearer "
                "<token>' (the CLI takes --token or PASSTHRU_TOKEN)"))
        try:
            principal = await identify(scope["app"].state, token)
        except UnauthorizedError as error:
            raise _RefusedError(error_response(HTTPStatus.UNAUTHORIZED, str(error))) from None
        except Exception as error:
            if not unreachable(error):
                raise
            raise _RefusedError(store_unreachable(self.settings.store_retry_after)) from None
        if self._rates is not None and principal.role is Role.MEMBER:
            wait = self._rates.wait(digest(token))
            if wait > 0:
                seconds = math.ceil(wait)
                raise _RefusedError(error_response(
                    HTTPStatus.TOO_MANY_REQUESTS,
                    f"this token is over its rate of {self._rates.rate:g} requests a second "
                    f"(after {self._rates.burst} at once); retry in {seconds} s (the "
                    "controller's passthru serve --rate-limit and --rate-burst)",
                    {"Retry-After": str(seconds)}))
        return principal

    async def _paced(self, scope: Scope, receive: Receive, send: Send,
                     limit: _Limit | None) -> None:
        """Run the app on a body that must keep coming and stay within `limit`; when it
        does not, the app's own answer (to a body cut short) gives way to the refusal."""
        timeout = self.settings.body_timeout
        refused: _RefusedError | None = None
        received, more, started = 0, True, False

        def refuse(status: HTTPStatus, message: str) -> _RefusedError:
            nonlocal refused
            refused = _RefusedError(error_response(status, message, _CLOSE))
            return refused

        async def limited_receive() -> Message:
            nonlocal received, more
            if not more:  # the body is in: what follows is the wait for a disconnect
                return await receive()
            with anyio.move_on_after(timeout) as waiting:
                message = await receive()
            if waiting.cancelled_caught:
                raise refuse(HTTPStatus.REQUEST_TIMEOUT,
                             f"no byte of the request body came for {timeout:g} s; the "
                             "connection is closed (passthru serve --body-timeout)")
            if message["type"] != "http.request":
                more = False
                return message
            received += len(message.get("body", b""))
            more = bool(message.get("more_body", False))
            if limit is not None and received > limit.size:
                raise refuse(HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                             f"the request body is over {limit.size} bytes, the limit for "
                             f"{limit.what} (passthru serve {limit.option})")
            return message

        async def refusable_send(message: Message) -> None:
            nonlocal started
            if refused is not None and not started:
                return
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, refusable_send)
        except Exception:
            if refused is None or started:
                raise
        if refused is not None and not started:
            await refused.response(scope, receive, send)
