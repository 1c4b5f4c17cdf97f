"""The CLI's HTTP client: where the controller is, which token to send, and errors.

A controller that is restarting, whose store is briefly gone (503) or that asks a caller
to slow down (429) is waited for: a request is sent again with capped exponential
backoff and jitter, after at least the Retry-After the controller named, for at most
`PASSTHRU_RETRY_SECONDS` in all. Only what is safe to send twice is sent again: GET, PUT
and DELETE; a POST only when it surely was not acted on — its connection was refused,
or the controller answered 429, or 503 with Retry-After (a store outage that met the
request before any of it was stored; one that met it later gets no Retry-After).

httpx is imported when a request is made, not with this module: every command imports
it, and `passthru --help` has no request to make. A plain-HTTP controller gets no TLS
context, whose building (loading the CA bundle) costs a CLI call more than its requests.
"""

from __future__ import annotations

import hashlib
import os
import random
import time
from collections.abc import Iterator
from contextlib import suppress
from functools import cached_property
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from passthru.controller.settings import ADMIN_TOKEN_FILE, DEFAULT_LISTEN, default_data_dir
from passthru.pci.errors import PassthruError
from passthru.pci.work import SHA256_HEADER

if TYPE_CHECKING:
    import httpx

DEFAULT_URL = f"http://{DEFAULT_LISTEN}"
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
#: Seconds a request may take, and an upload's answer, which waits for the controller's
#: checks of the file (qemu-img).
_TIMEOUT = 30.0
_UPLOAD_READ_TIMEOUT = 600.0


class ApiError(PassthruError):
    """The controller refused a request, or could not be reached."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


def local_admin_token(data_dir: Path | None = None) -> str:
    """The admin token `passthru serve` left in this machine's data dir."""
    path = (data_dir or default_data_dir()) / ADMIN_TOKEN_FILE
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        raise ApiError(f"no token: give --token or set {TOKEN_ENV}, or run passthru serve "
                       f"on this machine once (it writes {path})") from None
    except PermissionError:
        raise ApiError(f"{path} is not readable by this user; give --token or set "
                       f"{TOKEN_ENV}") from None


def file_sha256(path: Path) -> str:
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


def retryable(method: str, outcome: httpx.Response | httpx.TransportError) -> bool:
    """Whether a request that got this answer (or failed so) may be sent again."""
    import httpx

    if isinstance(outcome, httpx.TransportError):
        if isinstance(outcome, httpx.ConnectError | httpx.ConnectTimeout):
            return True  # no connection, so the controller never saw the request
        return method in _IDEMPOTENT and isinstance(outcome, httpx.NetworkError
                                                    | httpx.RemoteProtocolError)
    status = outcome.status_code
    if status not in _LATER:
        return False
    return (method in _IDEMPOTENT or status == 429
            or (status == 503 and "Retry-After" in outcome.headers))


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
        raise ApiError(f"{RETRY_ENV}={text!r} is not a number of seconds from 0 (no "
                       f"retries) to 3600; unset it for {DEFAULT_RETRY_SECONDS:g}")
    return seconds


def _pause(tries: int, response: httpx.Response | None) -> float:
    """Seconds to wait before try number `tries + 1`: backoff with jitter, and no less
    than the controller's Retry-After."""
    ceiling = min(_BACKOFF_CAP, _BACKOFF * 2 ** (tries - 1))
    pause = random.uniform(ceiling / 2, ceiling)
    if response is not None:
        # None, or an HTTP date, counts for nothing: this controller sends seconds.
        with suppress(ValueError):
            pause = max(pause, float(response.headers.get("Retry-After", "")))
    return pause


def _message(response: httpx.Response) -> str:
    try:
        body = response.json()
        return str(body["error"]["message"])
    except (ValueError, KeyError, TypeError):
        return f"{response.status_code} {response.reason_phrase}: {response.text[:200]}"


class Client:
    """Calls the controller at `url` with `token`; `tenant(...)` builds project paths."""

    def __init__(self, url: str | None = None, token: str | None = None) -> None:
        import httpx

        self.url = (url or os.environ.get(URL_ENV) or DEFAULT_URL).rstrip("/")
        self._http = httpx.Client(
            base_url=self.url, timeout=_TIMEOUT, verify=self.url.startswith("https:"),
            headers={"Authorization": f"Bearer {token or local_admin_token()}"})

    def __enter__(self) -> Client:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self._http.close()

    def call(self, method: str, path: str, *, json: Any = None,
             params: dict[str, Any] | None = None) -> Any:
        return self._send(method, path, json=json, params=params)

    def upload(self, path: str, file: Path) -> Any:
        """PUT `file` to `path`, streamed from disk, with its SHA-256 for the controller
        to check."""
        import httpx

        headers = {SHA256_HEADER: file_sha256(file), "Content-Length": str(file.stat().st_size)}
        return self._send("PUT", path, content=_FileChunks(file), headers=headers,
                          timeout=httpx.Timeout(_TIMEOUT, read=_UPLOAD_READ_TIMEOUT))

    def _send(self, method: str, path: str, **options: Any) -> Any:
        import httpx

        started = time.monotonic()
        deadline = started + retry_seconds()
        tries = 0
        while True:
            tries += 1
            response: httpx.Response | None = None
            try:
                response = self._http.request(method, path, **options)
            except httpx.TransportError as error:
                failure, status = self._unreachable(error), None
                if not retryable(method, error):
                    raise ApiError(failure) from None
            else:
                if not retryable(method, response):
                    if response.status_code >= 400:
                        raise ApiError(_message(response), response.status_code)
                    return response.json() if response.content else None
                failure, status = _message(response), response.status_code
            pause = _pause(tries, response)
            if time.monotonic() + pause > deadline:
                if tries > 1:
                    failure += (f"; still so after {tries} tries in "
                                f"{time.monotonic() - started:.0f} s ({RETRY_ENV})")
                raise ApiError(failure, status)
            time.sleep(pause)

    def _unreachable(self, error: httpx.TransportError) -> str:
        """What to say when the controller cannot be reached."""
        return (f"cannot reach the controller at {self.url} ({error}); is passthru serve "
                f"running? (--url or {URL_ENV})")

    @cached_property
    def project(self) -> str:
        """The project of the token, asked of the controller once."""
        identity = self.call("GET", "/v2/whoami")
        if not identity.get("project"):
            raise ApiError(f"this is an {identity['role']} token of host {identity['host']}; "
                           "it can only report inventory (use an admin or member token)")
        return str(identity["project"])

    def tenant(self, path: str) -> str:
        return f"/v2/{self.project}{path}"
