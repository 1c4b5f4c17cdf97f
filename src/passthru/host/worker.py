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
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from pydantic import TypeAdapter, ValidationError

from passthru.host.attach import Attacher
from passthru.host.instance import Instances, read_console_tail
from passthru.host.reconcile import reconcile, remove_strays
from passthru.pci.errors import PassthruError
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


class OrdersUnreadableError(PassthruError):
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


class OrderLink(Protocol):
    def orders(self) -> ReadOrders: ...

    def spawned(self, result: OrderResult) -> None: ...

    def destroyed(self, result: OrderResult) -> None: ...

    def powered(self, result: OrderResult, action: PowerAction) -> None: ...

    def lost(self, server_uuid: str, reason: str) -> None: ...

    def power_states(self, states: Mapping[str, PowerState]) -> None: ...

    def console(self, server_uuid: str, text: str) -> None: ...


class AnswerRefusedError(PassthruError):
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
                 instances_path: Path | None = None) -> None:
        self.link = link
        self.attacher = attacher
        self.instances_path = instances_path
        self._console_sent: dict[str, bytes] = {}

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
        """Carry out the host's pending orders, destroys first, then report what the
        host's servers are doing; returns how many orders ran."""
        orders = self.link.orders()
        for destroy in orders.destroy:
            self.destroy(destroy)
        for unreadable in orders.unreadable:
            self.refuse(unreadable)
        for spawn in orders.spawn:
            self.spawn(spawn)
        for power in orders.power:
            self.power(power)
        self.remove_strays(orders)
        self.report_power_states(orders.running)
        self.send_consoles(orders.running)
        return (len(orders.destroy) + len(orders.spawn) + len(orders.power)
                + len(orders.unreadable))

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

    def destroy(self, order: DestroyOrder) -> None:
        result = _isolated(order.server_uuid, "destroy", lambda: self.attacher.destroy(order))
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

    def remove_strays(self, orders: ReadOrders) -> None:
        """Destroy the domains of servers the controller no longer has here (see
        `passthru.host.reconcile`); the round's orders name every server it has."""
        known = {*orders.running, *(order.server_uuid for order in orders.spawn),
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

    def report_power_states(self, servers: Sequence[str]) -> None:
        """Tell the controller which of `servers` run and which are shut off, read after
        this round's power orders so that they see what those did."""
        states: dict[str, PowerState] = {}
        for uuid in servers:
            try:
                state = self.attacher.power_state(uuid)
            except Exception as error:
                log.warning("cannot read the power state of server %s: %s", uuid, error)
                continue
            if state is not None:  # a missing domain is reconcile's business
                states[uuid] = state
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
