"""The agent's order worker: destroy and spawn servers as the controller asks, and on
start set the host's libvirt domains against what the controller believes runs here."""

from __future__ import annotations

import logging
from typing import Protocol

from passthru.host.attach import Attacher
from passthru.host.reconcile import reconcile
from passthru.pci.work import KnownServer, OrderResult, Orders, ReconcileReport

log = logging.getLogger(__name__)


class OrderLink(Protocol):
    def orders(self) -> Orders: ...

    def spawned(self, result: OrderResult) -> None: ...

    def destroyed(self, result: OrderResult) -> None: ...

    def lost(self, server_uuid: str, reason: str) -> None: ...


class OrderWorker:
    def __init__(self, link: OrderLink, attacher: Attacher) -> None:
        self.link = link
        self.attacher = attacher

    def start(self) -> ReconcileReport:
        """After a (re)start: keep the domains of running servers, destroy the rest —
        also half-made ones of servers still being built, which are then spawned afresh —
        and report running servers whose domain is gone."""
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
        """Carry out the host's pending orders, destroys first; returns how many."""
        orders = self.link.orders()
        for destroy in orders.destroy:
            result = self.attacher.destroy(destroy)
            if result.ok:
                log.info("destroyed server %s (%s)", destroy.name, destroy.server_uuid)
            else:
                log.warning("destroying server %s: %s", destroy.server_uuid, result.fault)
            self.link.destroyed(result)
        for spawn in orders.spawn:
            result = self.attacher.spawn(spawn)
            if result.ok:
                log.info("started server %s (%s) with %s", spawn.name, spawn.server_uuid,
                         ", ".join(d.device.address for d in spawn.devices) or "no devices")
            else:
                log.warning("spawning server %s: %s", spawn.server_uuid, result.fault)
            self.link.spawned(result)
        return len(orders.destroy) + len(orders.spawn)
