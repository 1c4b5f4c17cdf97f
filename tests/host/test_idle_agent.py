"""An idle agent sends nothing but its orders long-poll, which the controller counts as
its heart-beat: a report round with nothing to report sends no heart-beat while a
long-poll is held. It heart-beats again when no long-poll is held, and when an orders
answer tells an inventory generation other than the one it last got back, after which a
controller copy that differs is reported in full, and always against a controller that
tells no generation (an older one, which counts a long-poll only when it comes)."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from passthru.host.agent import Agent
from passthru.host.worker import OrderWorker, PolledOrders, ReadOrders
from passthru.pci.device import PciDevice
from passthru.pci.inventory import InventoryDelta
from passthru.pci.resources import HostResources
from tests.host.test_concurrent_orders import Hypervisor, Link, until


class Controller(Link):
    """Holds every long-poll briefly and answers it unchanged, unless `tell` holds a
    generation to tell (once, with orders)."""

    def __init__(self) -> None:
        super().__init__(ReadOrders())
        self.generation = 1
        self.heartbeats = 0
        self.full_reports = 0
        self.long_polls = 0
        self.tell: int | None = None

    def report_full(self, devices: Sequence[PciDevice], pool_attrs: Sequence[str],
                    resources: HostResources | None, base_generation: int) -> int:
        self.full_reports += 1
        self.generation += 1
        return self.generation

    def report_delta(self, delta: InventoryDelta, pool_attrs: Sequence[str],
                     generation: int) -> int:
        raise AssertionError("nothing changed on the host")

    def heartbeat(self) -> int:
        self.heartbeats += 1
        return self.generation

    def poll_orders(self, version: str | None, wait: float) -> PolledOrders:
        if version is None:
            return PolledOrders(self.current, "v1", self.generation)
        self.long_polls += 1
        told, self.tell = self.tell, None
        if told is not None:
            return PolledOrders(self.current, "v2", told)
        threading.Event().wait(0.01)
        return PolledOrders(None, version)


@contextmanager
def _following(agent: Agent, controller: Controller) -> Iterator[None]:
    """The agent following its orders (a long-poll held) for the block's length."""
    worker = OrderWorker(controller, Hypervisor())  # type: ignore[arg-type]
    stop = threading.Event()
    follower = threading.Thread(target=agent.follow_orders, args=(worker, stop), daemon=True)
    follower.start()
    try:
        until("a long-poll is held", lambda: controller.long_polls > 0)
        yield
    finally:
        stop.set()
        follower.join(60)
        worker.close()


def test_an_idle_agent_heart_beats_only_without_a_long_poll_or_on_another_generation(
        ) -> None:
    controller = Controller()
    agent = Agent(scan=list, link=controller, pool_attrs=[])
    agent.report_once()
    beats = controller.heartbeats
    with _following(agent, controller):
        for _ in range(3):
            assert agent.report_once() == InventoryDelta()
        assert controller.heartbeats == beats
        assert controller.full_reports == 1
        # Another reporter (or a restore) moved the controller's copy on: the orders
        # tell, a heart-beat checks, and the agent makes the copy true.
        controller.generation = 9
        controller.tell = 9
        until("the generation is told", lambda: controller.tell is None)
        agent.report_once()
        assert controller.heartbeats > beats
        assert controller.full_reports == 2
        beats = controller.heartbeats
        agent.report_once()
        assert controller.heartbeats == beats
    # No long-poll held: the report round heart-beats again.
    agent.report_once()
    assert controller.heartbeats == beats + 1


class OlderController(Controller):
    """Long-polls its agents but tells no generation: it counts a long-poll as a
    heart-beat only when it comes."""

    def poll_orders(self, version: str | None, wait: float) -> PolledOrders:
        polled = super().poll_orders(version, wait)
        return PolledOrders(polled.orders, polled.version)


def test_an_agent_heart_beats_a_controller_that_tells_no_generation() -> None:
    controller = OlderController()
    agent = Agent(scan=list, link=controller, pool_attrs=[])
    agent.report_once()
    with _following(agent, controller):
        beats = controller.heartbeats
        agent.report_once()
        assert controller.heartbeats == beats + 1
