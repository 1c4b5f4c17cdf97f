"""The CLI's HTTP client: where the controller is, which token to send, and errors."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from functools import cached_property
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

from passthru.controller.settings import ADMIN_TOKEN_FILE, DEFAULT_LISTEN, default_data_dir
from passthru.pci.errors import PassthruError
from passthru.pci.work import SHA256_HEADER

DEFAULT_URL = f"http://{DEFAULT_LISTEN}"
URL_ENV = "PASSTHRU_URL"
TOKEN_ENV = "PASSTHRU_TOKEN"
_CHUNK = 1 << 20
#: An upload's answer waits for the controller's checks of the file (qemu-img).
_UPLOAD_TIMEOUT = httpx.Timeout(30.0, read=600.0)


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


def _chunks(path: Path) -> Iterator[bytes]:
    with path.open("rb") as file:
        while chunk := file.read(_CHUNK):
            yield chunk


def _message(response: httpx.Response) -> str:
    try:
        body = response.json()
        return str(body["error"]["message"])
    except (ValueError, KeyError, TypeError):
        return f"{response.status_code} {response.reason_phrase}: {response.text[:200]}"


class Client:
    """Calls the controller at `url` with `token`; `tenant(...)` builds project paths."""

    def __init__(self, url: str | None = None, token: str | None = None) -> None:
        self.url = (url or os.environ.get(URL_ENV) or DEFAULT_URL).rstrip("/")
        self._http = httpx.Client(base_url=self.url, timeout=30.0, headers={
            "Authorization": f"Bearer {token or local_admin_token()}"})

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
        headers = {SHA256_HEADER: file_sha256(file), "Content-Length": str(file.stat().st_size)}
        return self._send("PUT", path, content=_chunks(file), headers=headers,
                          timeout=_UPLOAD_TIMEOUT)

    def _send(self, method: str, path: str, **options: Any) -> Any:
        try:
            response = self._http.request(method, path, **options)
        except httpx.TransportError as error:
            raise ApiError(f"cannot reach the controller at {self.url} ({error}); is "
                           f"passthru serve running? (--url or {URL_ENV})") from None
        if response.status_code >= 400:
            raise ApiError(_message(response), response.status_code)
        return response.json() if response.content else None

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
