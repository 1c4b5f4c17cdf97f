"""The HTTP client the CLI and the demo share: where the controller is, which token to
send, and errors. It sits below both, beside the controller, whose published settings
(where a local controller listens and keeps its admin token) it reads.

A controller that is restarting, whose store is briefly gone (503) or that asks a caller
to slow down (429) is waited for: a request is sent again with capped exponential
backoff and jitter, after at least the Retry-After the controller named, for at most
`PASSTHRU_RETRY_SECONDS` in all. Only what is safe to send twice is sent again: GET, PUT
and DELETE; a POST only when it surely was not acted on — its connection was refused,
or the controller answered 429, or 503 with Retry-After (a store outage that met the
request before any of it was stored; one that met it later gets no Retry-After).

Requests go through the standard library's `http.client`, one connection each (a CLI
call sends one to a few), imported with the first request. Every command pays for what
its client imports before the first byte leaves: httpx brings anyio, httpcore, h11,
idna, certifi, and click, rich and pygments for its own command line, about half of a
command's start-up. For HTTPS the
system's CA store verifies the controller (`SSL_CERT_FILE` or `SSL_CERT_DIR` name
another).
"""

from __future__ import annotations

import json as jsons
import os
import random
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import suppress
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, quote, urlencode, urlsplit

from passthru.errors import (
    ForbiddenError,
    InvalidInputError,
    PassthruError,
    UnauthorizedError,
    for_answer,
)

if TYPE_CHECKING:  # the HTTP stack loads with the first request: --help sends none
    import ssl

URL_ENV = "PASSTHRU_URL"
TOKEN_ENV = "PASSTHRU_TOKEN"
RETRY_ENV = "PASSTHRU_RETRY_SECONDS"
DEFAULT_RETRY_SECONDS = 30.0
#: Methods whose second sending does what the first did.
_IDEMPOTENT = frozenset({"GET", "HEAD", "PUT", "DELETE"})
#: Answers that say "later": a proxy without its controller (502, 504), a store outage
#: (503), a rate limit (429). A 429, and a 503 with Retry-After, say nothing was done.
_LATER = frozenset({429, 502, 503, 504})
#: The first pause between tries, in seconds, doubling up to the cap.
_BACKOFF = 0.25
_BACKOFF_CAP = 5.0
_CHUNK = 1 << 20
#: Seconds to connect, and to wait for each piece of an answer; an upload's answer
#: waits for the controller's checks of the file (qemu-img).
_TIMEOUT = 30.0
_UPLOAD_TIMEOUT = 600.0


@dataclass(frozen=True, slots=True)
class Response:
    """The controller's answer: status, headers (any case) and body."""

    status: int
    reason: str
    headers: Mapping[str, str]
    content: bytes

    def header(self, name: str) -> str | None:
        wanted = name.lower()
        return next((v for k, v in self.headers.items() if k.lower() == wanted), None)


@dataclass(frozen=True, slots=True)
class Failure:
    """A request that got no answer: `sent` False when no connection was made (the
    controller never saw it); `timed_out` when the answer did not come in time."""

    error: Exception
    sent: bool
    timed_out: bool = False


class ApiError(PassthruError):
    """The controller refused a request, or could not be reached (`answered` False, the
    status then 503). Its `kind`, `status` and `exit_code` are those of the error class
    the answer names (`passthru.errors.for_answer`)."""

    def __init__(self, message: str, status: int | None = None, kind: str | None = None) -> None:
        super().__init__(message)
        meaning = for_answer(status, kind)
        self.answered = status is not None
        self.kind = meaning.kind
        self.status = meaning.status if status is None else status
        self.exit_code = meaning.exit_code


def _default_url() -> str:
    from passthru.controller.settings import DEFAULT_LISTEN

    return f"http://{DEFAULT_LISTEN}"


def local_admin_token(data_dir: Path | None = None) -> str:
    """The admin token `passthru serve` left in this machine's data dir."""
    # The controller's settings (platformdirs, the Settings class) load only when needed.
    from passthru.controller.settings import ADMIN_TOKEN_FILE, default_data_dir

    path = (data_dir or default_data_dir()) / ADMIN_TOKEN_FILE
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        raise UnauthorizedError(f"no token: give --token or set {TOKEN_ENV}, or run passthru serve "
                                f"on this machine once (it writes {path})") from None
    except PermissionError:
        raise UnauthorizedError(f"{path} is not readable by this user; give --token or set "
                                f"{TOKEN_ENV}") from None


def file_sha256(path: Path) -> str:
    import hashlib

    with path.open("rb") as file:
        return hashlib.file_digest(file, "sha256").hexdigest()


class _FileChunks:
    """A file's bytes, read afresh from disk each time a request (or its retry) sends it."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __iter__(self) -> Iterator[bytes]:
        with self.path.open("rb") as file:
            while chunk := file.read(_CHUNK):
                yield chunk


def retryable(method: str, outcome: Response | Failure) -> bool:
    """Whether a request that got this answer (or failed so) may be sent again."""
    if isinstance(outcome, Failure):
        if not outcome.sent:
            return True  # no connection, so the controller never saw the request
        return method in _IDEMPOTENT and not outcome.timed_out
    status = outcome.status
    if status not in _LATER:
        return False
    return (method in _IDEMPOTENT or status == 429
            or (status == 503 and outcome.header("Retry-After") is not None))


def retry_seconds() -> float:
    """How long a request is tried again for, from PASSTHRU_RETRY_SECONDS."""
    text = os.environ.get(RETRY_ENV)
    if text is None:
        return DEFAULT_RETRY_SECONDS
    try:
        seconds = float(text)
    except ValueError:
        seconds = -1.0
    if not 0 <= seconds <= 3600:
        raise InvalidInputError(f"{RETRY_ENV}={text!r} is not a number of seconds from 0 (no "
                                f"retries) to 3600; unset it for {DEFAULT_RETRY_SECONDS:g}")
    return seconds


def _pause(tries: int, response: Response | None) -> float:
    """Seconds to wait before try number `tries + 1`: backoff with jitter, and no less
    than the controller's Retry-After."""
    ceiling = min(_BACKOFF_CAP, _BACKOFF * 2 ** (tries - 1))
    pause = random.uniform(ceiling / 2, ceiling)
    if response is not None:
        # None, or an HTTP date, counts for nothing: this controller sends seconds.
        with suppress(ValueError):
            pause = max(pause, float(response.header("Retry-After") or ""))
    return pause


def _message(response: Response) -> str:
    try:
        body = jsons.loads(response.content)
        return str(body["error"]["message"])
    except (ValueError, KeyError, TypeError):
        text = response.content.decode(errors="replace")
        return f"{response.status} {response.reason}: {text[:200]}"


def _kind(response: Response) -> str | None:
    """The error class the body names; None from a proxy's answer, or an older controller's."""
    try:
        kind = jsons.loads(response.content)["error"]["kind"]
    except (ValueError, KeyError, TypeError):
        return None
    return kind if isinstance(kind, str) else None


def _target(path: str, params: Mapping[str, Any] | None = None) -> str:
    """The request target: the path percent-encoded (names may hold spaces, `?` or any
    letter), then the query."""
    quoted = quote(path, safe="/:@!$&'()*+,;=%~")
    return f"{quoted}?{_query(params)}" if params else quoted


def _query(params: Mapping[str, Any]) -> str:
    """Query parameters as the API reads them: a list repeats its key, booleans are
    true/false."""

    def text(value: Any) -> str:
        if isinstance(value, bool):
            return "true" if value else "false"
        return "" if value is None else str(value)

    pairs = [(key, text(item)) for key, value in params.items()
             for item in (value if isinstance(value, list | tuple) else [value])]
    return urlencode(pairs)


class Client:
    """Calls the controller at `url` with `token`; `tenant(...)` builds project paths."""

    def __init__(self, url: str | None = None, token: str | None = None) -> None:
        self.url = (url or os.environ.get(URL_ENV) or _default_url()).rstrip("/")
        where = urlsplit(self.url)
        if where.scheme not in ("http", "https") or not where.hostname:
            raise InvalidInputError(f"the controller's address {self.url!r} is not "
                                    f"http://HOST:PORT or https://HOST:PORT (--url or {URL_ENV})")
        self._where = where
        self._headers = {"Authorization": f"Bearer {token or local_admin_token()}",
                         "Accept": "application/json", "Connection": "close"}

    def __enter__(self) -> Client:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        """Nothing stays open: each request has its own connection."""

    def call(self, method: str, path: str, *, json: Any = None,
             params: dict[str, Any] | None = None) -> Any:
        target = _target(path, params)
        if json is None:
            return self._send(method, target)
        return self._send(method, target, body=jsons.dumps(json).encode(),
                          headers={"Content-Type": "application/json"})

    def list_all(self, path: str, key: str, params: dict[str, Any] | None = None, *,
                 limit: int | None = None) -> list[Any]:
        """Every item of the list at `path` (at most `limit`), page by page: each body's
        `<key>_links` next link gives the marker of the page after it, as Nova's do."""
        items: list[Any] = []
        query: dict[str, Any] = {**(params or {}), **({"limit": limit} if limit else {})}
        while True:
            body = self.call("GET", path, params=query)
            items.extend(body[key])
            following = [link["href"] for link in body.get(f"{key}_links", ())
                         if link.get("rel") == "next"]
            if not following or (limit is not None and len(items) >= limit):
                return items[:limit]
            # The same path and filters; only the marker (from the link) moves on.
            query = parse_qs(urlsplit(following[0]).query, keep_blank_values=True)

    def upload(self, path: str, file: Path) -> Any:
        """PUT `file` to `path`, streamed from disk, with its SHA-256 for the controller
        to check."""
        from passthru.pci.work import SHA256_HEADER

        headers = {SHA256_HEADER: file_sha256(file), "Content-Length": str(file.stat().st_size)}
        return self._send("PUT", _target(path), body=_FileChunks(file), headers=headers,
                          answer_timeout=_UPLOAD_TIMEOUT)

    @cached_property
    def _tls(self) -> ssl.SSLContext:
        import ssl

        return ssl.create_default_context()

    def _exchange(self, method: str, path: str, body: bytes | Iterable[bytes] | None,
                  headers: Mapping[str, str], answer_timeout: float) -> Response | Failure:
        """One request on a connection of its own."""
        import http.client

        where = self._where
        connection = (http.client.HTTPSConnection(where.hostname or "", where.port,
                                                  timeout=_TIMEOUT, context=self._tls)
                      if where.scheme == "https" else
                      http.client.HTTPConnection(where.hostname or "", where.port,
                                                 timeout=_TIMEOUT))
        try:
            try:
                connection.connect()
            except OSError as error:
                return Failure(error, sent=False)
            try:
                if connection.sock is not None:
                    connection.sock.settimeout(answer_timeout)
                connection.request(method, where.path + path, body=body,
                                   headers={**self._headers, **headers})
                answer = connection.getresponse()
                return Response(answer.status, answer.reason, dict(answer.getheaders()),
                                answer.read())
            except TimeoutError as error:
                return Failure(error, sent=True, timed_out=True)
            except (OSError, http.client.HTTPException) as error:
                return Failure(error, sent=True)
        finally:
            connection.close()

    def _send(self, method: str, path: str, *, body: bytes | Iterable[bytes] | None = None,
              headers: Mapping[str, str] | None = None,
              answer_timeout: float = _TIMEOUT) -> Any:
        started = time.monotonic()
        deadline = started + retry_seconds()
        tries = 0
        while True:
            tries += 1
            outcome = self._exchange(method, path, body, headers or {}, answer_timeout)
            response = None
            kind = None
            if isinstance(outcome, Failure):
                failure, status = self._unreachable(outcome), None
            else:
                response = outcome
                if not retryable(method, response):
                    if response.status >= 400:
                        raise ApiError(_message(response), response.status, _kind(response))
                    return jsons.loads(response.content) if response.content else None
                failure, status, kind = _message(response), response.status, _kind(response)
            if not retryable(method, outcome):
                raise ApiError(failure, status, kind)
            pause = _pause(tries, response)
            if time.monotonic() + pause > deadline:
                if tries > 1:
                    failure += (f"; still so after {tries} tries in "
                                f"{time.monotonic() - started:.0f} s ({RETRY_ENV})")
                raise ApiError(failure, status, kind)
            time.sleep(pause)

    def _unreachable(self, failure: Failure) -> str:
        """What to say when the controller cannot be reached."""
        said = str(failure.error) or type(failure.error).__name__
        return (f"cannot reach the controller at {self.url} ({said}); is passthru serve "
                f"running? (--url or {URL_ENV})")

    @cached_property
    def project(self) -> str:
        """The project of the token, asked of the controller once."""
        identity = self.call("GET", "/v2/whoami")
        if not identity.get("project"):
            raise ForbiddenError(f"this is an {identity['role']} token of host {identity['host']}; "
                                 "it can only report inventory (use an admin or member token)")
        return str(identity["project"])

    def tenant(self, path: str) -> str:
        return f"/v2/{self.project}{path}"
