"""uvicorn's HTTP/1.1 protocol (h11) with a deadline for each request's headers.

uvicorn closes a keep-alive connection that stays idle for `timeout_keep_alive` after a
response, and h11 bounds the headers' size (`h11_max_incomplete_event_size`), but
nothing bounds the time headers take: the idle timer stops at the first byte, and a new
connection has none. A client sending one header byte now and then would hold its
connection, and a task, for ever. Here a connection that has not sent a whole request's
headers within `timeout` seconds of opening, or of its last response, is closed (there
is no request yet to answer 408 to). A slow body is `api.limits`' to time out.
"""

from __future__ import annotations

import asyncio
from functools import partial
from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol


class HeaderDeadlineProtocol(H11Protocol):
    """`H11Protocol` closing connections whose request headers are late."""

    def __init__(self, *args: Any, header_timeout: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_timeout = header_timeout
        self._deadline: asyncio.TimerHandle | None = None

    @classmethod
    def with_timeout(cls, timeout: float) -> partial[HeaderDeadlineProtocol]:
        """The protocol factory uvicorn takes as `http`."""
        return partial(cls, header_timeout=timeout)

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._wait_for_headers()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._wait_for_headers()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_deadline()
        super().connection_lost(exc)

    def _wait_for_headers(self) -> None:
        self._cancel_deadline()
        if not self.transport.is_closing():
            self._deadline = self.loop.call_later(self._header_timeout, self._headers_late)

    def _cancel_deadline(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _headers_late(self) -> None:
        self._deadline = None
        # A request already in progress (pipelined, or begun just now) is on time.
        if self.cycle is None or self.cycle.response_complete:
            self.transport.close()
