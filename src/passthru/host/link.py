"""The agent's HTTP link to the controller's agent endpoints: reports, orders, and the
image files its servers boot (streamed to disk, never held in memory).

A controller that is briefly away (restarting, its store failing over, overloaded) is
waited for: a call that cannot connect, times out, or gets 502, 503, 504 or 429 is sent
again with capped exponential backoff and full jitter (tenacity), honouring a
Retry-After, for up to `retry_for` seconds; only then does it fail the agent's round.
A call waiting out its backoff is sent again as soon as another call gets an answer (the
controller is back: an order's answer must not wait another half minute for its turn),
unless the controller asked for the wait (Retry-After).
Any other 4xx is the controller's answer and is never retried. Every call is safe to
send twice: reports name their base generation (a repeat is refused as stale), and each
answer to an order carries an idempotency key, the same on every retry, so the
controller applies it once and returns the first result to a replay.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

import httpx
from pydantic import TypeAdapter
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    stop_after_delay,
    stop_when_event_set,
    wait_random_exponential,
)

from passthru.errors import HostError
from passthru.host.agent import StaleReportError
from passthru.host.worker import AnswerRefusedError, PolledOrders, ReadOrders, read_orders
from passthru.pci.device import PciDevice
from passthru.pci.inventory import InventoryDelta
from passthru.pci.resources import HostResources
from passthru.pci.work import (
    GENERATION_HEADER,
    ImagePart,
    OrderResult,
    PowerAction,
    PowerState,
)

log = logging.getLogger(__name__)

_RESULT = TypeAdapter(OrderResult)
#: Answers worth sending again: the controller (or a proxy before it) is away or busy.
_TRANSIENT = frozenset({429, 502, 503, 504})
#: As `controller.agents.answers.IDEMPOTENCY_HEADER` (the agent does not import the controller).
IDEMPOTENCY_HEADER = "Idempotency-Key"
#: Backoff between retries: from `_FIRST_WAIT` seconds, doubling, at most `_MOST_WAIT`.
_FIRST_WAIT = 0.5
_MOST_WAIT = 30.0
#: How often a call waiting to be sent again looks whether the agent is stopping.
_STOP_POLL = 0.5
#: How much later than asked a long-poll may be answered before it counts as timed out.
_LATE = 30.0


class LinkError(HostError):
    """The controller refused a report or could not be reached."""


class RefusedError(LinkError, AnswerRefusedError):
    """The controller understood the call and refused it (an HTTP 4xx answer)."""


class _BusyError(Exception):
    """An answer worth waiting out (`_TRANSIENT`)."""

    def __init__(self, response: httpx.Response) -> None:
        super().__init__(f"HTTP {response.status_code}")
        self.response = response


def _retry_after(response: httpx.Response) -> float | None:
    """The controller's Retry-After, in seconds (a number or an HTTP date)."""
    text = response.headers.get("Retry-After")
    if text is None:
        return None
    try:
        return max(0.0, float(text))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(text).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


def connect(controller: str, host: str, token: str, *, timeout: float = 30.0,
            retry_for: float = 300.0, stop: threading.Event | None = None) -> HttpLink:
    """A link to the controller at `controller` (a URL) for `host`; retries end early
    once `stop` is set (the agent is shutting down)."""
    http = httpx.Client(base_url=controller.rstrip("/"), timeout=timeout,
                        headers={"Authorization": f"Bearer {token}"})
    return HttpLink(http, host, retry_for=retry_for, stop=stop)


class HttpLink:
    """Reports for one host over `http`, a client that carries the host's agent token.
    A call is retried for up to `retry_for` seconds (0: never), waiting `backoff(state)`
    seconds in between (tenacity's capped exponential backoff with jitter unless told),
    and no more once `stop` is set. `sleep` replaces the waiting (see the module)."""

    def __init__(self, http: httpx.Client, host: str, *, retry_for: float = 300.0,
                 sleep: Callable[[float], object] | None = None,
                 stop: threading.Event | None = None,
                 backoff: Callable[[RetryCallState], float] | None = None) -> None:
        self.host = host
        self._base = f"/v2/agent/hosts/{host}"
        self._http = http
        self.retry_for = retry_for
        self._stop = stop or threading.Event()
        self._sleep = sleep or self._until_answered
        self._backoff = backoff or wait_random_exponential(multiplier=_FIRST_WAIT,
                                                           max=_MOST_WAIT)
        #: The controller's answers so far; each wakes the calls waiting to be sent again.
        self._answers = 0
        self._answered = threading.Condition()
        #: Per thread: the answers counted when its attempt began (`seen`), and whether
        #: the wait under way is one the controller asked for (`wait`).
        self._asked = threading.local()

    def close(self) -> None:
        self._http.close()

    def _unreachable(self, error: httpx.TransportError) -> LinkError:
        return LinkError(f"cannot reach the controller at {self._http.base_url}: {error}")

    def _refused(self, method: str, path: str, response: httpx.Response) -> LinkError:
        try:
            message = response.json()["error"]["message"]
        except (ValueError, KeyError, TypeError):
            message = response.text[:300]
        # A controller still busy after every retry has not refused anything.
        refusal = response.status_code < 500 and response.status_code not in _TRANSIENT
        refused = RefusedError if refusal else LinkError
        return refused(f"controller refused {method} {path} for host {self.host} "
                       f"({response.status_code}): {message}")

    def _wait(self, state: RetryCallState) -> float:
        error = state.outcome.exception() if state.outcome is not None else None
        after = _retry_after(error.response) if isinstance(error, _BusyError) else None
        self._asked.wait = after is not None
        if after is not None:
            return min(after, _MOST_WAIT * 2)
        return self._backoff(state)

    def _until_answered(self, seconds: float) -> None:
        """Wait `seconds`, or until the agent stops, or, unless the controller asked for
        the wait, until another call gets an answer."""
        deadline = time.monotonic() + seconds
        asked = getattr(self._asked, "wait", False)
        with self._answered:
            # Counted from the failed attempt on: an answer that came while it failed wakes
            # this wait too.
            seen = getattr(self._asked, "seen", self._answers)
            while not self._stop.is_set() and (asked or self._answers == seen):
                left = deadline - time.monotonic()
                if left <= 0:
                    return
                self._answered.wait(min(left, _STOP_POLL))

    def _heard(self) -> None:
        with self._answered:
            self._answers += 1
            self._answered.notify_all()

    def _log_retry(self, state: RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome is not None else None
        wait = state.next_action.sleep if state.next_action is not None else 0.0
        log.warning("controller at %s: %s; trying again in %.1f s", self._http.base_url,
                    error, wait)

    def _pause(self, seconds: float) -> None:
        """tenacity's sleep: `Event.wait`'s answer (whether `stop` was set) is not its."""
        self._sleep(seconds)

    def _send(self, method: str, path: str, body: Any = None,
              headers: Mapping[str, str] | None = None,
              read_timeout: float | None = None) -> httpx.Response:
        """One call, sent again while the controller is away or busy (see the module)."""
        retrying = Retrying(
            retry=retry_if_exception_type((httpx.TransportError, _BusyError)),
            stop=stop_after_delay(self.retry_for) | stop_when_event_set(self._stop),
            wait=self._wait, sleep=self._pause,
            before_sleep=self._log_retry, reraise=True)
        try:
            for attempt in retrying:
                with attempt:
                    self._asked.seen = self._answers
                    timeout: Any = httpx.USE_CLIENT_DEFAULT
                    if read_timeout is not None:
                        client = self._http.timeout
                        timeout = httpx.Timeout(client.connect, read=read_timeout,
                                                write=client.write, pool=client.pool)
                    response = self._http.request(method, self._base + path, json=body,
                                                  headers=headers, timeout=timeout)
                    if response.status_code in _TRANSIENT:
                        raise _BusyError(response)
                    self._heard()
        except httpx.TransportError as error:
            raise self._unreachable(error) from None
        except _BusyError as busy:
            return busy.response
        return response

    def _call(self, method: str, path: str, body: Any = None,
              headers: Mapping[str, str] | None = None) -> Any:
        response = self._send(method, path, body, headers)
        if response.status_code == 409 and path == "/inventory":
            raise StaleReportError(response.text)
        if response.status_code >= 400:
            raise self._refused(method, path, response)
        return response.json()

    def _answer(self, kind: str, server_uuid: str, body: Any, query: str = "") -> None:
        """An answer to an order, with a key of its own that every retry repeats."""
        key = f"{kind}-{server_uuid}-{uuid.uuid4().hex}"
        self._call("POST", f"/orders/{server_uuid}/{kind}{query}", body,
                   headers={IDEMPOTENCY_HEADER: key})

    def fetch_image(self, image_id: str, part: ImagePart, dest: Path) -> None:
        """Stream one of an image's files to `dest`; nothing is left there on failure.
        The caller checks it against the order's SHA-256."""
        path = f"/images/{image_id}/file/{ImagePart(part)}"
        try:
            with self._http.stream("GET", self._base + path) as response:
                if response.status_code >= 400:
                    response.read()
                    raise self._refused("GET", path, response)
                with dest.open("wb") as file:
                    for chunk in response.iter_bytes():
                        file.write(chunk)
        except httpx.TransportError as error:
            dest.unlink(missing_ok=True)
            raise self._unreachable(error) from None
        except BaseException:
            dest.unlink(missing_ok=True)
            raise

    def report_full(self, devices: Sequence[PciDevice], pool_attrs: Sequence[str],
                    resources: HostResources | None, base_generation: int) -> int:
        body = {"base_generation": base_generation, "pool_attrs": list(pool_attrs),
                "devices": [asdict(d) for d in devices],
                "resources": asdict(resources) if resources is not None else None}
        return int(self._call("PUT", "/inventory", body)["generation"])

    def report_delta(self, delta: InventoryDelta, pool_attrs: Sequence[str],
                     generation: int) -> int:
        body = {"base_generation": generation, "pool_attrs": list(pool_attrs),
                "delta": asdict(delta)}
        return int(self._call("PATCH", "/inventory", body)["generation"])

    def heartbeat(self) -> int:
        return int(self._call("POST", "/heartbeat")["generation"])

    def orders(self) -> ReadOrders:
        return read_orders(self._call("GET", "/orders"))

    def poll_orders(self, version: str | None, wait: float) -> PolledOrders:
        """The orders once they are past `version` (an ETag; None: at once), or None
        after `wait` seconds unchanged, with the host's inventory generation when the
        controller tells it. The version is None when the controller keeps none (an
        older one): the agent then polls."""
        if version is None:
            response = self._send("GET", "/orders")
        else:
            response = self._send("GET", f"/orders?wait={wait:g}",
                                  headers={"If-None-Match": version},
                                  read_timeout=wait + _LATE)
        if response.status_code == 304:
            return PolledOrders(None, version)
        if response.status_code >= 400:
            raise self._refused("GET", "/orders", response)
        told = response.headers.get(GENERATION_HEADER, "")
        return PolledOrders(read_orders(response.json()), response.headers.get("ETag"),
                            int(told) if told.isdigit() else None)

    def spawned(self, result: OrderResult) -> None:
        self._answer("spawned", result.server_uuid, _RESULT.dump_python(result, mode="json"))

    def destroyed(self, result: OrderResult) -> None:
        self._answer("destroyed", result.server_uuid, _RESULT.dump_python(result, mode="json"))

    def powered(self, result: OrderResult, action: PowerAction) -> None:
        self._answer("powered", result.server_uuid, _RESULT.dump_python(result, mode="json"),
                     f"?action={action}")

    def lost(self, server_uuid: str, reason: str) -> None:
        self._answer("lost", server_uuid, {"reason": reason})

    def power_states(self, states: Mapping[str, PowerState]) -> None:
        self._call("POST", "/power-states", {uuid: str(state) for uuid, state in states.items()})

    def console(self, server_uuid: str, text: str) -> None:
        self._call("POST", f"/orders/{server_uuid}/console", {"output": text})
