"""uvicorn's HTTP/1.1 protocol with a deadline for each request's headers, and a bound on
their size.

The protocol is uvicorn's httptools one (a C parser: a tenth of the CPU h11's pure Python
takes per request) when `httptools` is installed, else its h11 one. `protocol(...)`
gives the factory uvicorn takes as `http`.

uvicorn closes a keep-alive connection that stays idle for `timeout_keep_alive` after a
response, but nothing bounds the time headers take: the idle timer stops at the first
byte, and a new connection has none. A client sending one header byte now and then would
hold its connection, and a task, for ever. Here a connection that has not sent a whole
request's headers within `timeout` seconds of opening, or of its last response, is
closed (there is no request yet to answer 408 to). A slow body is `api.limits`' to time
out.

h11 bounds the headers' size itself (`h11_max_incomplete_event_size`); httptools does
not, so with it the bytes a connection sends before its headers end are counted here, and
past `max_header_bytes` it gets 400 and is closed (give or take one read of the socket).

Every connection has TCP keep-alive on (`KEEPALIVE_IDLE`, `_INTERVAL`, `_PROBES`): an
agent's long-poll is held for minutes and counts as its heart-beat while its connection
stands, so a peer that vanished without closing it (power lost, cable cut) must not keep
the connection, and its host, alive. The kernel probes a connection silent for a while
and drops it when no probe is answered; the long-poll then sees it gone.
"""

from __future__ import annotations

import asyncio
import math
import socket
from collections.abc import Callable
from functools import partial
from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol

from passthru.controller.settings import Settings

#: Seconds a connection may be silent before the kernel probes its peer, between probes,
#: and how many unanswered probes end it: a vanished peer's connection ends at most 60 s
#: after its last byte, well within an agent's heart-beat timeout (180 s by default).
KEEPALIVE_IDLE, KEEPALIVE_INTERVAL, KEEPALIVE_PROBES = 30, 10, 3


def _keep_alive(transport: asyncio.BaseTransport) -> None:
    sock = transport.get_extra_info("socket")
    if sock is None or sock.family not in (socket.AF_INET, socket.AF_INET6):
        return
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, KEEPALIVE_IDLE)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, KEEPALIVE_INTERVAL)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, KEEPALIVE_PROBES)


class _HeaderDeadline(asyncio.Protocol):
    """A uvicorn HTTP protocol closing connections whose request headers are late, with
    TCP keep-alive on. Mixed
    into one of uvicorn's protocols, whose `loop`, `transport`, `cycle` and
    `on_response_complete` it uses."""

    loop: asyncio.AbstractEventLoop
    transport: asyncio.Transport
    cycle: Any

    def __init__(self, *args: Any, header_timeout: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_timeout = header_timeout
        self._deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        _keep_alive(transport)
        self._wait_for_headers()

    def on_response_complete(self) -> None:
        super().on_response_complete()  # type: ignore[misc]
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


class HeaderDeadlineProtocol(_HeaderDeadline, H11Protocol):
    """`H11Protocol` closing connections whose request headers are late."""


try:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
except ImportError:  # httptools is not installed: h11 it is
    _FAST: Callable[..., asyncio.Protocol] | None = None
else:
    class FastHeaderDeadlineProtocol(_HeaderDeadline, HttpToolsProtocol):
        """`HttpToolsProtocol` closing connections whose request headers are late or
        larger than `max_header_bytes`."""

        def __init__(self, *args: Any, max_header_bytes: int, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._max_header_bytes = max_header_bytes
            self._header_bytes = 0
            self._in_headers = True

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            if not self._in_headers or self.transport.is_closing():
                return
            self._header_bytes += len(data)
            if self._header_bytes > self._max_header_bytes:
                self.send_400_response(f"request headers over {self._max_header_bytes} "
                                       "bytes")

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._in_headers, self._header_bytes = True, 0

        def on_headers_complete(self) -> None:
            self._in_headers = False
            super().on_headers_complete()

    _FAST = FastHeaderDeadlineProtocol


def protocol(header_timeout: float, max_header_bytes: int) -> Callable[..., asyncio.Protocol]:
    """The protocol factory uvicorn takes as `http` (h11's also needs uvicorn's
    `h11_max_incomplete_event_size=max_header_bytes`)."""
    if _FAST is None:
        return partial(HeaderDeadlineProtocol, header_timeout=header_timeout)
    return partial(_FAST, header_timeout=header_timeout, max_header_bytes=max_header_bytes)


#: The bytes a request's headers may take: h11's default, said here for httptools.
HEADER_BYTES = 16 << 10


def uvicorn_options(settings: Settings) -> dict[str, Any]:
    """The options the controller's web server runs with, but where it listens and how
    it logs: `passthru serve` passes them to uvicorn, and so do the tests that serve the
    app in a thread."""
    # Request headers may take --body-timeout seconds to arrive, and so may the next
    # request on a kept-alive connection: that is its idle bound too. uvicorn's own (5 s)
    # is not used: httpx, the agents' client, reuses a connection idle for up to 5 s, and
    # a request sent as the controller closes it gets no answer. The event loop is
    # uvloop's where it is installed (uvicorn's "auto").
    return {"timeout_keep_alive": math.ceil(settings.body_timeout),
            "h11_max_incomplete_event_size": HEADER_BYTES, "loop": "auto",
            "http": protocol(settings.body_timeout, HEADER_BYTES)}
