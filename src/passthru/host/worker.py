"""The agent's order worker: destroy, spawn and power servers as the controller asks, and
on start set the host's libvirt domains against what the controller believes runs here.

Each order stands alone: whatever goes wrong inside one (any exception, not only a refused
step) becomes that server's answer, and the next order still runs. That starts with reading
them: the orders are read one by one (`read_orders`), so an order this agent cannot read
(a port MAC it refuses, sent by an older controller, say) is answered as that server's
failure instead of failing the whole round, and every round after it. After the orders,
the round tells the controller what it finds of the servers placed here: the power state
of each domain (a guest may shut itself down) and the tail of each console log that
changed; there too one server's trouble is logged and the others are served. Only an
unreachable controller fails a round: it is tried again, and the orders come again.

Orders that come by long-poll are started and not waited for, and that report on the
servers is left to the agent's watching thread (`watch`, woken at once), so that the
next long-poll is held again at once: an order's answer, a POST under a busy controller,
must not stand between the controller's next order and the agent. A spawn waits only
for the destroys before it to have freed their devices on the host, not for their
answers (the controller frees the devices it counts on an answer, and only then orders
them elsewhere).
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent import futures
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Protocol

from pydantic import TypeAdapter, ValidationError

from passthru.errors import ConflictError, HostError, PassthruError
from passthru.host.attach import Attacher
from passthru.host.instance import Instances, read_console_tail
from passthru.host.reconcile import reconcile, remove_strays
from passthru.pci.work import (
    DestroyOrder,
    KnownServer,
    OrderResult,
    Orders,
    PowerAction,
    PowerOrder,
    PowerState,
    ReconcileReport,
    SpawnOrder,
    canonical_uuid,
)

log = logging.getLogger(__name__)


class OrdersUnreadableError(HostError):
    """The controller's orders are not an orders document at all (not one bad order)."""


@dataclass(slots=True)
class UnreadableOrder:
    """An order the agent could not read: its kind (`destroy`, `spawn` or `power`), the
    server it names (None when even that is unreadable), the power action it asks (when
    readable), and why it could not be read."""

    kind: str
    server_uuid: str | None
    reason: str
    action: PowerAction | None = None


@dataclass(slots=True)
class ReadOrders(Orders):
    """The orders as this agent read them: those it can carry out, and those it cannot."""

    unreadable: list[UnreadableOrder] = field(default_factory=list)


_ORDER_KINDS: dict[str, TypeAdapter[Any]] = {
    "destroy": TypeAdapter(DestroyOrder),
    "spawn": TypeAdapter(SpawnOrder),
    "power": TypeAdapter(PowerOrder),
}


def _problems(error: Exception) -> str:
    if not isinstance(error, ValidationError):
        return str(error)
    shown = [f"{'.'.join(str(part) for part in problem['loc']) or 'order'}: {problem['msg']}"
             for problem in error.errors()[:3]]
    more = error.error_count() - len(shown)
    return "; ".join(shown) + (f" (and {more} more)" if more > 0 else "")


def _readable(item: Any, key: str, read: Callable[[Any], Any]) -> Any:
    try:
        return read(item[key])
    except (KeyError, TypeError, ValueError):
        return None


def read_orders(document: Any) -> ReadOrders:
    """The orders in the controller's answer, each read on its own."""
    if not isinstance(document, dict):
        raise OrdersUnreadableError(f"the controller's orders are a {type(document).__name__}"
                                    f", not an object; is it a passthru controller?")
    orders = ReadOrders()
    for kind, adapter in _ORDER_KINDS.items():
        items = document.get(kind) or []
        if not isinstance(items, list):
            raise OrdersUnreadableError(f"the controller's {kind} orders are not a list")
        for item in items:
            try:
                getattr(orders, kind).append(adapter.validate_python(item))
            except (ValidationError, ValueError, TypeError) as error:
                orders.unreadable.append(UnreadableOrder(
                    kind, _readable(item, "server_uuid", canonical_uuid), _problems(error),
                    _readable(item, "action", PowerAction)))
    running = document.get("running") or []
    for uuid in running if isinstance(running, list) else []:
        try:
            orders.running.append(canonical_uuid(uuid))
        except PassthruError:
            log.warning("the controller lists %r as a server running here, which is not a "
                        "server uuid; ignored", uuid)
    return orders


@dataclass(frozen=True, slots=True)
class PolledOrders:
    """What a long-poll of the orders brought: the orders (None: unchanged since the
    version sent), their version (None: the controller keeps none, so the agent polls),
    and the host's inventory generation the controller holds (None: not told)."""

    orders: ReadOrders | None
    version: str | None
    generation: int | None = None


class OrderLink(Protocol):
    def orders(self) -> ReadOrders: ...

    def poll_orders(self, version: str | None, wait: float) -> PolledOrders:
        """The orders once they are past `version` (None: at once), or None after
        `wait` seconds unchanged."""
        ...

    def spawned(self, result: OrderResult) -> None: ...

    def destroyed(self, result: OrderResult) -> None: ...

    def powered(self, result: OrderResult, action: PowerAction) -> None: ...

    def lost(self, server_uuid: str, reason: str) -> None: ...

    def power_states(self, states: Mapping[str, PowerState]) -> None: ...

    def console(self, server_uuid: str, text: str) -> None: ...


class AnswerRefusedError(ConflictError):
    """The controller refused what the agent said of one server: it has moved on from
    that order (the server was deleted, timed out, or placed elsewhere)."""


def _answer(send: Callable[[OrderResult], None], result: OrderResult) -> bool:
    """Send an order's answer; whether the controller took it. A refusal concerns that
    server only (the order comes again if it still stands); an unreachable controller
    fails the round."""
    try:
        send(result)
    except AnswerRefusedError as error:
        log.warning("answer for server %s not taken: %s", result.server_uuid, error)
        return False
    return True


def _isolated(server_uuid: str, what: str, run: Callable[[], OrderResult]) -> OrderResult:
    """`run()`, with anything it raises turned into a failed result for the server."""
    try:
        return run()
    except Exception as error:
        log.exception("%s of server %s raised", what, server_uuid)
        return OrderResult(server_uuid, ok=False,
                           fault=f"{what} failed on the host: {type(error).__name__}: {error}")


class OrderWorker:
    """`instances_path` holds each server's console log (None: no console logs sent)."""

    def __init__(self, link: OrderLink, attacher: Attacher,
                 instances_path: Path | None = None, *, concurrency: int = 8) -> None:
        self.link = link
        self.attacher = attacher
        self.instances_path = instances_path
        self._console_sent: dict[str, bytes] = {}
        self._pool = ThreadPoolExecutor(concurrency, thread_name_prefix="order")
        self._dispatching = threading.Lock()
        self._reporting = threading.Lock()
        self._lock = threading.Lock()
        #: Counts reads of the orders and ends of orders, to tell which came first.
        self._clock = 0
        #: The reads of the orders under way (their clock when they began).
        self._reads: set[int] = set()
        #: The servers with an order running, and when each server's last order ended.
        self._running: set[str] = set()
        self._ended_at: dict[str, int] = {}
        #: The destroys under way until each has freed its server's devices on the host.
        self._destroying: set[Future[None]] = set()
        #: The newest orders carried out, and the clock when they were read.
        self._last: tuple[ReadOrders, int] = (ReadOrders(), 0)
        self._ended = threading.Event()
        #: Set when orders came: the watching thread reports on the servers now.
        self._report_due = threading.Event()
        self._reader: threading.Thread | None = None
        #: Seconds between two reports of every server's power state (0: every round);
        #: between them only the states that changed are sent.
        self._resend_every = 0.0
        self._resent_at = 0.0
        self._states_sent: dict[str, PowerState] = {}

    def start(self) -> ReconcileReport:
        """After a (re)start: keep the domains of servers placed here (running or shut
        off), destroy the rest — also half-made ones of servers still being built, which
        are then spawned afresh — and report placed servers whose domain is gone."""
        orders = self.link.orders()
        report = reconcile(self.attacher, [KnownServer(uuid, active=True)
                                           for uuid in orders.running])
        for server in report.missing:
            try:
                self.link.lost(server, "its domain is gone from the host (found when the "
                                       "host's agent restarted)")
            except AnswerRefusedError as error:  # deleted or stopped meanwhile
                log.warning("server %s without a domain not taken as lost: %s", server, error)
        for server, fault in report.orphan_faults.items():
            log.warning("could not remove the leftover domain of server %s: %s", server, fault)
        return report

    def run_orders(self) -> int:
        """Read the host's orders, carry them out and report what the host's servers are
        doing, waiting until every order has run; returns how many orders ran."""
        with self._read() as read_at:
            orders = self.link.orders()
            started = self.carry_out(orders, read_at)
            futures.wait(started)
            self.report(orders, read_at)
        return len(started) + sum(1 for order in orders.unreadable if order.server_uuid is None)

    def follow(self, version: str | None, wait: float, resend_every: float = 0.0
               ) -> PolledOrders:
        """One long-poll of the host's orders past `version` (None: read them now): the
        orders it brings are started, not waited for, and the host's servers are to be
        reported on (`report`, by `watch`, which this wakes; power states only when they
        changed, and all of them every `resend_every` seconds). Whenever an order ends
        the orders are read again (in a thread of their own), since its answer changed
        them. Returns what the poll brought."""
        with self._lock:
            self._resend_every = resend_every
            if self._reader is None:
                self._reader = threading.Thread(target=self._read_again, daemon=True,
                                                name="orders-again")
                self._reader.start()
        with self._read() as read_at:
            polled = self.link.poll_orders(version, wait)
            if polled.orders is not None:
                self.carry_out(polled.orders, read_at)
        self._report_due.set()
        return polled

    def carry_out(self, orders: ReadOrders, read_at: int) -> list[Future[None]]:
        """Start the orders read from the clock's `read_at` on: destroys first, waited
        for (with any still running) until their domains are gone, so that the devices
        they free are free on the host before a spawn takes them; then the rest at once.
        A server's orders run one at a time, and orders that may predate a server's last
        answer are not trusted: an order for a server with one running, or one that
        ended after `read_at`, is left (the orders read after that one ends bring it if
        it still stands). Returns the orders started."""
        with self._dispatching:
            with self._lock:
                if read_at > self._last[1]:
                    self._last = (orders, read_at)
            started: list[Future[None] | None] = []
            for order in orders.destroy:
                freed: Future[None] = Future()
                started.append(self._start(order.server_uuid, read_at,
                                           partial(self.destroy, order, freed), freed=freed))
            with self._lock:
                destroying = list(self._destroying)
            futures.wait(destroying)
            for unreadable in orders.unreadable:
                if unreadable.server_uuid is None:
                    self.refuse(unreadable)
                else:
                    started.append(self._start(unreadable.server_uuid, read_at,
                                               partial(self.refuse, unreadable)))
            started += [self._start(order.server_uuid, read_at, partial(self.spawn, order))
                        for order in orders.spawn]
            started += [self._start(order.server_uuid, read_at, partial(self.power, order))
                        for order in orders.power]
        return [future for future in started if future is not None]

    def report(self, orders: ReadOrders, read_at: int) -> None:
        """Remove strays and send power states and consoles, by `orders` (read from the
        clock's `read_at` on) but for the servers with an order running or ended since:
        those orders may not know what that order did."""
        with self._reporting:
            with self._lock:
                busy = {*self._running, *(uuid for uuid, ended in self._ended_at.items()
                                          if ended > read_at)}
                every = self._resend_every
            self.remove_strays(orders, busy)
            running = [uuid for uuid in orders.running if uuid not in busy]
            whole = not every or time.monotonic() >= self._resent_at + every
            if whole:
                self._resent_at = time.monotonic()
            self.report_power_states(running, changed_only=not whole)
            self.send_consoles(running)

    def report_due(self, timeout: float) -> None:
        """Wait until orders came (a report on the servers is due), `timeout` seconds
        at most."""
        self._report_due.wait(timeout)
        self._report_due.clear()

    def watch(self) -> None:
        """Report on the host's servers by the newest orders (`report`), after orders
        came and between the orders' changes: a guest that shuts itself down is told as
        soon as it is seen."""
        with self._read():
            with self._lock:
                orders, read_at = self._last
            self.report(orders, read_at)

    def close(self) -> None:
        """Wait for the orders running to end."""
        self._pool.shutdown(wait=True)

    @contextmanager
    def _read(self) -> Iterator[int]:
        """A read of the orders and what is done with them: the clock before it (orders
        read then know the answers of every order that ended before)."""
        with self._lock:
            self._clock += 1
            read_at = self._clock
            self._reads.add(read_at)
        try:
            yield read_at
        finally:
            with self._lock:
                self._reads.discard(read_at)
                # An order's end is remembered while orders read before it are in use.
                oldest = min(self._reads | {self._last[1]})
                self._ended_at = {uuid: ended for uuid, ended in self._ended_at.items()
                                  if ended > oldest}

    def _start(self, server: str, read_at: int, run: Callable[[], None], *,
               freed: Future[None] | None = None) -> Future[None] | None:
        """Run `run` for `server` in the pool, unless it must wait (see `carry_out`);
        `freed` (a destroy's) is then waited for by spawns until it is done."""
        with self._lock:
            if server in self._running:
                return None  # its end reads the orders again
            if self._ended_at.get(server, 0) > read_at:
                # Read before that order ended: the orders are read again now, or an
                # order that still stands would wait for the host's next change.
                self._ended.set()
                return None
            self._running.add(server)
            future = self._pool.submit(self._run, server, run, freed)
            if freed is not None:
                self._destroying.add(freed)
        if freed is not None:
            freed.add_done_callback(self._destroyed)
        return future

    def _destroyed(self, future: Future[None]) -> None:
        with self._lock:
            self._destroying.discard(future)

    def _run(self, server: str, run: Callable[[], None], freed: Future[None] | None) -> None:
        try:
            run()
        finally:
            if freed is not None and not freed.done():  # it raised before freeing
                freed.set_result(None)
            with self._lock:
                self._running.discard(server)
                self._clock += 1
                self._ended_at[server] = self._clock
            self._ended.set()

    def _read_again(self) -> None:
        while True:
            self._ended.wait()
            self._ended.clear()
            try:
                with self._read() as read_at:
                    orders = self.link.orders()
                    self.carry_out(orders, read_at)
                self._report_due.set()
            except Exception as error:
                log.warning("reading the orders after one ended failed: %s", error)

    def refuse(self, order: UnreadableOrder) -> None:
        """Answer an order this agent cannot read as that server's failure: a spawn then
        fails (its devices are freed, and it may be placed elsewhere), a power change
        keeps the status before it. Nothing was done on the host for it."""
        fault = f"this host's agent cannot read the {order.kind} order: {order.reason}"
        log.warning("%s order for server %s unreadable: %s", order.kind,
                    order.server_uuid or "(unknown)", order.reason)
        if order.server_uuid is None:
            return
        result = OrderResult(order.server_uuid, ok=False, fault=fault)
        if order.kind == "spawn":
            _answer(self.link.spawned, result)
        elif order.kind == "destroy":
            _answer(self.link.destroyed, result)
        elif order.action is not None:
            action = order.action
            _answer(lambda answer: self.link.powered(answer, action), result)

    def destroy(self, order: DestroyOrder, freed: Future[None] | None = None) -> None:
        """Destroy the server's domain, `freed` done once it is gone from the host (its
        devices free for a spawn), then answer."""
        result = _isolated(order.server_uuid, "destroy", lambda: self.attacher.destroy(order))
        if freed is not None:
            freed.set_result(None)
        if result.ok:
            log.info("destroyed server %s (%s)", order.name, order.server_uuid)
        else:
            log.warning("destroying server %s: %s", order.server_uuid, result.fault)
        _answer(self.link.destroyed, result)

    def spawn(self, order: SpawnOrder) -> None:
        result = _isolated(order.server_uuid, "spawn", lambda: self.attacher.spawn(order))
        if result.ok:
            log.info("started server %s (%s) with %s", order.name, order.server_uuid,
                     ", ".join(d.device.address for d in order.devices) or "no devices")
        else:
            log.warning("spawning server %s: %s", order.server_uuid, result.fault)
        if not _answer(self.link.spawned, result) and result.ok:
            # The controller moved on (the build timed out, or went to another host) and
            # counts the devices free: the domain must not keep them.
            undone = self.attacher.destroy(DestroyOrder(order.server_uuid, order.name,
                                                        result.domain_xml))
            log.warning("removed server %s again: %s", order.server_uuid,
                        "done" if undone.ok else undone.fault)

    def power(self, order: PowerOrder) -> None:
        result = _isolated(order.server_uuid, str(order.action),
                           lambda: self.attacher.power(order))
        if result.ok:
            log.info("%s server %s (%s) done", order.action, order.name, order.server_uuid)
        else:
            log.warning("%s server %s: %s", order.action, order.server_uuid, result.fault)
        _answer(lambda answer: self.link.powered(answer, order.action), result)

    def remove_strays(self, orders: ReadOrders, busy: Iterable[str] = ()) -> None:
        """Destroy the domains of servers the controller no longer has here (see
        `passthru.host.reconcile`); the round's orders name every server it has, but
        those with an order running or just ended (`busy`)."""
        known = {*orders.running, *busy, *(order.server_uuid for order in orders.spawn),
                 *(order.server_uuid for order in orders.destroy),
                 *(order.server_uuid for order in orders.unreadable if order.server_uuid)}
        try:
            removed = remove_strays(self.attacher, known)
        except PassthruError as error:
            log.warning("cannot list this host's domains: %s", error)
            return
        for result in removed:
            if result.ok:
                log.warning("removed the domain of server %s, which the controller no longer "
                            "has on this host", result.server_uuid)
            else:
                log.warning("could not remove the leftover domain of server %s: %s",
                            result.server_uuid, result.fault)

    def report_power_states(self, servers: Sequence[str], *, changed_only: bool = False
                            ) -> None:
        """Tell the controller which of `servers` run and which are shut off, read after
        this round's power orders so that they see what those did (`changed_only`: only
        those whose state is not the one last sent)."""
        states: dict[str, PowerState] = {}
        for uuid in servers:
            try:
                state = self.attacher.power_state(uuid)
            except Exception as error:
                log.warning("cannot read the power state of server %s: %s", uuid, error)
                continue
            if state is not None:  # a missing domain is reconcile's business
                states[uuid] = state
        sent = self._states_sent
        self._states_sent = states
        if changed_only:
            states = {uuid: state for uuid, state in states.items() if sent.get(uuid) != state}
        if states:
            try:
                self.link.power_states(states)
            except AnswerRefusedError as error:
                log.warning("power states not taken: %s", error)

    def send_consoles(self, servers: Sequence[str]) -> None:
        """Send the tail of each server's console log that changed since it was last sent."""
        if self.instances_path is None:
            return
        for uuid in servers:
            try:
                text = read_console_tail(Instances(self.instances_path).files(uuid).console_log)
            except Exception as error:
                log.warning("cannot read the console log of server %s: %s", uuid, error)
                continue
            if text is None:
                continue
            digest = hashlib.blake2b(text.encode(), digest_size=16).digest()
            if self._console_sent.get(uuid) == digest:
                continue
            try:
                self.link.console(uuid, text)
            except AnswerRefusedError as error:
                log.warning("console log of server %s not taken: %s", uuid, error)
                continue
            self._console_sent[uuid] = digest
        for gone in set(self._console_sent) - set(servers):
            del self._console_sent[gone]
