"""The agent's order worker: destroy, spawn and power servers as the controller asks, and
on start set the host's libvirt domains against what the controller believes runs here.

Each order stands alone: whatever goes wrong inside one (any exception, not only a refused
step) becomes that server's answer, and the next order still runs. After the orders, the
round tells the controller what it finds of the servers placed here: the power state of
each domain (a guest may shut itself down) and the tail of each console log that changed.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Protocol

from passthru.host.attach import Attacher
from passthru.host.instance import Instances, read_console_tail
from passthru.host.reconcile import reconcile
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
)

log = logging.getLogger(__name__)


class OrderLink(Protocol):
    def orders(self) -> Orders: ...

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
            self.link.lost(server, "its domain is gone from the host (found when the "
                                   "host's agent restarted)")
        for server, fault in report.orphan_faults.items():
            log.warning("could not remove the leftover domain of server %s: %s", server, fault)
        return report

    def run_orders(self) -> int:
        """Carry out the host's pending orders, destroys first, then report what the
        host's servers are doing; returns how many orders ran."""
        orders = self.link.orders()
        for destroy in orders.destroy:
            self.destroy(destroy)
        for spawn in orders.spawn:
            self.spawn(spawn)
        for power in orders.power:
            self.power(power)
        self.report_power_states(orders.running)
        self.send_consoles(orders.running)
        return len(orders.destroy) + len(orders.spawn) + len(orders.power)

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

    def report_power_states(self, servers: Sequence[str]) -> None:
        """Tell the controller which of `servers` run and which are shut off, read after
        this round's power orders so that they see what those did."""
        states: dict[str, PowerState] = {}
        for uuid in servers:
            try:
                state = self.attacher.power_state(uuid)
            except PassthruError as error:
                log.warning("cannot read the power state of server %s: %s", uuid, error)
                continue
            if state is not None:  # a missing domain is reconcile's business
                states[uuid] = state
        if states:
            self.link.power_states(states)

    def send_consoles(self, servers: Sequence[str]) -> None:
        """Send the tail of each server's console log that changed since it was last sent."""
        if self.instances_path is None:
            return
        for uuid in servers:
            try:
                text = read_console_tail(Instances(self.instances_path).files(uuid).console_log)
            except OSError as error:
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
