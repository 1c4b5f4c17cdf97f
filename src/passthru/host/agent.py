"""The host agent: report this host's devices, then keep the controller's picture true,
and carry out the controller's orders (spawn and destroy servers).

The first report after start is complete, with the host's CPUs, memory and disk; later
ones carry only what changed since the last report the controller accepted, and are
complete again whenever those resources change (a CPU taken offline, a config edit).
Orders come in a thread of their own, as soon as they change: the agent holds a
long-poll that the controller answers when they do, and carries out orders of different
servers at once (`OrderWorker`); an older controller is polled every `order_interval`
seconds.

A host whose agent stops is marked down by the controller and no longer scheduled to:
the agent's held long-poll is its heart-beat (the controller counts it as one while it
is held), so an idle agent sends nothing else, one long-poll every `poll_wait` seconds.
Only a round that reported something, or one without a long-poll held (an older
controller, or the controller unreachable), heart-beats as well; so does every round
against a controller whose orders answers tell no inventory generation (an older one,
which counts a long-poll as a heart-beat only when it comes). What that heart-beat
also checked, that the controller's copy of the inventory is the one this agent built
(not a restored one, or another reporter's), the orders answers tell (their inventory
generation, and a report wakes the long-poll): a generation told that is not the one
last got back is checked with a heart-beat, and a copy that differs is reported in full.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from passthru.errors import ConflictError
from passthru.host.worker import OrderWorker
from passthru.pci.device import PciDevice
from passthru.pci.inventory import InventoryDelta, diff_inventory
from passthru.pci.resources import HostResources

log = logging.getLogger(__name__)


class StaleReportError(ConflictError):
    """The controller's copy moved on (a restore, or another agent reported): resend all."""


class ControllerLink(Protocol):
    """How the agent talks to the controller; `passthru.host.link` speaks HTTP."""

    def report_full(self, devices: Sequence[PciDevice], pool_attrs: Sequence[str],
                    resources: HostResources | None, base_generation: int) -> int:
        """Replace the host's inventory; returns the new inventory generation. Raises
        StaleReportError if `base_generation` is not the controller's."""

    def report_delta(self, delta: InventoryDelta, pool_attrs: Sequence[str],
                     generation: int) -> int:
        """Apply changes on top of `generation`; raises StaleReportError if it is not current."""

    def heartbeat(self) -> int:
        """Say the agent is alive; returns the inventory generation the controller holds."""


@dataclass
class Agent:
    scan: Callable[[], list[PciDevice]]
    link: ControllerLink
    pool_attrs: Sequence[str]
    interval: float = 60.0
    jitter: float = 0.1
    worker: OrderWorker | None = None
    order_interval: float = 2.0
    #: The longest the controller is asked to hold a long-poll of the orders (it holds
    #: at most its orders_wait_max, 300 s unless told otherwise).
    poll_wait: float = 300.0
    #: The host's CPUs, memory and disk; None (or returning None): not reported.
    resources: Callable[[], HostResources | None] | None = None
    _reported: dict[str, PciDevice] | None = field(default=None, init=False)
    _resources: HostResources | None = field(default=None, init=False)
    #: The inventory generation last got back (None: not asked yet).
    _generation: int | None = field(default=None, init=False)
    #: When the long-poll under way began (None: none, the controller is polled or
    #: unreachable), and the generation the last orders answer told.
    _long_poll_began: float | None = field(default=None, init=False)
    _told_generation: int | None = field(default=None, init=False)
    #: Whether the controller's orders answers tell the generation: it then counts a
    #: held long-poll as a heart-beat for as long as it is held.
    _long_poll_beats: bool = field(default=False, init=False)

    def _report_full(self, devices: Sequence[PciDevice], found: HostResources | None) -> int:
        """A full report built on the generation last got back. The controller refuses one
        built on a generation it has moved past (this report, replayed, may be older than
        another one that got in): the agent then reads the generation again (heart-beat)
        and sends what it has now."""
        if self._generation is None:
            self._generation = self.link.heartbeat()
        try:
            return self.link.report_full(devices, self.pool_attrs, found, self._generation)
        except StaleReportError:
            log.info("controller's inventory moved on; sending a full report on its "
                     "current generation")
            self._generation = self.link.heartbeat()
            return self.link.report_full(devices, self.pool_attrs, found, self._generation)

    def report_once(self) -> InventoryDelta | None:
        """Scan and report. Returns what was sent as a delta (None for a full report)."""
        devices = self.scan()
        found = self.resources() if self.resources is not None else None
        delta: InventoryDelta | None = None
        if self._reported is None or self._generation is None or found != self._resources:
            self._generation = self._report_full(devices, found)
        else:
            delta = diff_inventory(self._reported, devices)
            if not delta and self._beating():
                return delta  # nothing to say, and the long-poll says the agent is alive
            if delta:
                try:
                    self._generation = self.link.report_delta(delta, self.pool_attrs,
                                                              self._generation)
                except StaleReportError:
                    log.info("controller's inventory moved on; sending a full report")
                    self._generation = self.link.heartbeat()
                    self._generation = self._report_full(devices, found)
                    delta = None
        self._reported = {d.address: d for d in devices}
        self._resources = found
        alive = self.link.heartbeat()
        if alive != self._generation:
            # The controller's copy is not the one this agent built (a restore, or another
            # agent reporting for this host): make it true again.
            self._generation = alive
            self._generation = self._report_full(devices, found)
            delta = None
        return delta

    def _beating(self) -> bool:
        """Whether the long-poll is heart-beat enough: one is held (begun at most
        `poll_wait` and a minute ago), and the controller told no other inventory
        generation than the one this agent last got back."""
        began, told = self._long_poll_began, self._told_generation
        if (not self._long_poll_beats or began is None
                or time.monotonic() - began > self.poll_wait + 60):
            return False
        if told is not None and told != self._generation:
            self._told_generation = None  # checked now, by the heart-beat
            return False
        return True

    def next_wait(self) -> float:
        """The interval with jitter, so that a fleet started together does not report
        in lock-step."""
        spread = self.interval * self.jitter
        return max(0.0, self.interval + random.uniform(-spread, spread))

    def run(self, stop: threading.Event) -> None:
        """Report, and carry out orders, until `stop` is set. A failed round is logged
        and tried again: a controller that is briefly away must not kill the agent."""
        orders: threading.Thread | None = None
        next_report = time.monotonic()
        while not stop.is_set():
            if time.monotonic() >= next_report:
                try:
                    self.report_once()
                except Exception as error:
                    # After a failure the next round starts over with a full report.
                    log.warning("report failed: %s", error)
                    self._reported = None
                next_report = time.monotonic() + self.next_wait()
            if self.worker is not None and self._reported is not None and orders is None:
                orders = threading.Thread(target=self.follow_orders, args=(self.worker, stop),
                                          name="orders", daemon=True)
                orders.start()
            stop.wait(max(0.0, next_report - time.monotonic()))

    def follow_orders(self, worker: OrderWorker, stop: threading.Event) -> None:
        """Carry out the controller's orders until `stop` is set: long-polled (held by
        the controller until they change, `poll_wait` seconds at most), or polled every
        `order_interval` seconds from a controller that gives the orders no version (an
        older one). Whenever orders came, and every `order_interval` seconds, the host's
        servers are looked at (in a thread of their own), and power states that changed
        are sent (all of them every `interval`), with the console logs that changed."""
        started = False
        version: str | None = None
        try:
            while not stop.is_set():
                try:
                    if not started:
                        worker.start()
                        started = True
                        threading.Thread(target=self._watch, args=(worker, stop),
                                         name="watch", daemon=True).start()
                    self._long_poll_began = time.monotonic() if version is not None else None
                    polled = worker.follow(version, self.poll_wait, self.interval)
                    version = polled.version
                    if polled.generation is not None:
                        self._told_generation = polled.generation
                        self._long_poll_beats = True
                    if version is None:
                        self._long_poll_began = None
                        stop.wait(self.order_interval)
                except Exception as error:
                    self._long_poll_began = None
                    if stop.is_set():
                        return
                    log.warning("orders failed: %s", error)
                    version = None
                    stop.wait(self.order_interval)
        finally:
            self._long_poll_began = None  # the report rounds heart-beat again

    def _watch(self, worker: OrderWorker, stop: threading.Event) -> None:
        while not stop.is_set():
            worker.report_due(self.order_interval)
            if stop.is_set():
                return
            try:
                worker.watch()
            except Exception as error:
                log.warning("reporting on the host's servers failed: %s", error)
