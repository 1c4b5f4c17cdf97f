"""The agent carries out orders of different servers at once, and one server's orders in
the order they come: an order for a server whose last one is still running waits for it
to end and comes from the orders read after that. A failing order fails only its own
server. The hypervisor here is a recorder whose spawns can be held, so that what runs
at the same time is seen."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from passthru.host.agent import Agent
from passthru.host.worker import OrderWorker, PolledOrders, ReadOrders
from passthru.pci.work import (
    DestroyOrder,
    OrderResult,
    PowerAction,
    PowerOrder,
    PowerState,
    SpawnOrder,
)

ONE = "6f1d6a43-0000-4000-8000-000000000001"
TWO = "6f1d6a43-0000-4000-8000-000000000002"
BAD = "6f1d6a43-0000-4000-8000-000000000003"


class Link:
    """The controller as the worker sees it: the orders it holds now, and the answers."""

    def __init__(self, orders: ReadOrders) -> None:
        self.current = orders
        self.answers: list[tuple[str, str, bool]] = []
        self.lock = threading.Lock()

    def orders(self) -> ReadOrders:
        return self.current

    def poll_orders(self, version: str | None, wait: float) -> PolledOrders:
        return PolledOrders(self.current, "v")

    def _answered(self, kind: str, result: OrderResult) -> None:
        """As the controller does: an answered order is no longer asked for."""
        server = result.server_uuid
        with self.lock:
            self.answers.append((kind, server, result.ok))
            now = self.current
            self.current = ReadOrders(
                destroy=[o for o in now.destroy if kind != "destroyed" or o.server_uuid != server],
                spawn=[o for o in now.spawn if kind != "spawned" or o.server_uuid != server],
                power=[o for o in now.power if kind != "powered" or o.server_uuid != server],
                running=[*now.running, server] if kind == "spawned" and result.ok
                else [uuid for uuid in now.running if uuid != server])

    def spawned(self, result: OrderResult) -> None:
        self._answered("spawned", result)

    def destroyed(self, result: OrderResult) -> None:
        self._answered("destroyed", result)

    def powered(self, result: OrderResult, action: PowerAction) -> None:
        self._answered("powered", result)

    def lost(self, server_uuid: str, reason: str) -> None:
        raise AssertionError("nothing is lost here")

    def power_states(self, states: Mapping[str, PowerState]) -> None:
        pass

    def console(self, server_uuid: str, text: str) -> None:
        pass


class Driver:
    def names(self) -> list[str]:
        return []

    def domains(self) -> list[Any]:
        return []


class Hypervisor:
    """Records when each order starts and ends; `hold(server, gate)` makes that server's
    orders wait for `gate()` to return."""

    def __init__(self) -> None:
        self.driver = Driver()
        self.log: list[str] = []
        self.gates: dict[str, Callable[[], Any]] = {}
        self.lock = threading.Lock()

    def _do(self, what: str, server: str) -> OrderResult:
        with self.lock:
            self.log.append(f"{what} {server} start")
        if server == BAD:
            raise RuntimeError("the hypervisor fell over")
        gate = self.gates.get(server)
        if gate is not None:
            gate()
        with self.lock:
            self.log.append(f"{what} {server} end")
        return OrderResult(server, ok=True)

    def spawn(self, order: SpawnOrder) -> OrderResult:
        return self._do("spawn", order.server_uuid)

    def destroy(self, order: DestroyOrder) -> OrderResult:
        return self._do("destroy", order.server_uuid)

    def power(self, order: PowerOrder) -> OrderResult:
        return self._do(str(order.action), order.server_uuid)

    def power_state(self, server_uuid: str) -> PowerState | None:
        return None


def spawn(uuid: str) -> SpawnOrder:
    return SpawnOrder(server_uuid=uuid, name=f"vm-{uuid[-1]}", vcpus=1, ram_mb=512)


def until(what: str, check: Callable[[], bool]) -> None:
    deadline = time.monotonic() + 60
    while not check():
        assert time.monotonic() < deadline, f"{what} never happened"
        time.sleep(0.01)


def test_two_spawns_run_at_once_and_a_failing_one_fails_alone(tmp_path: Path) -> None:
    hypervisor = Hypervisor()
    both = threading.Barrier(2, timeout=60)  # broken unless both spawns wait together
    hypervisor.gates = {ONE: both.wait, TWO: both.wait}
    link = Link(ReadOrders(spawn=[spawn(ONE), spawn(BAD), spawn(TWO)]))
    worker = OrderWorker(link, hypervisor)  # type: ignore[arg-type]
    try:
        assert worker.run_orders() == 3
    finally:
        worker.close()
    assert {answer[1:] for answer in link.answers} == {(ONE, True), (TWO, True), (BAD, False)}


def test_one_servers_orders_run_in_order(tmp_path: Path) -> None:
    hypervisor = Hypervisor()
    release = threading.Event()
    hypervisor.gates = {ONE: lambda: release.wait(60)}
    link = Link(ReadOrders(spawn=[spawn(ONE)]))
    worker = OrderWorker(link, hypervisor)  # type: ignore[arg-type]
    try:
        worker.follow(None, 0)
        until("the spawn starts", lambda: f"spawn {ONE} start" in hypervisor.log)
        # Deleted while it spawns: the destroy waits for the spawn; another server's
        # spawn does not.
        link.current = ReadOrders(destroy=[DestroyOrder(ONE, "vm-1")], spawn=[spawn(TWO)])
        worker.follow("v", 0)
        until("the other server spawns", lambda: f"spawn {TWO} end" in hypervisor.log)
        assert f"destroy {ONE} start" not in hypervisor.log
        release.set()
        until("the destroy ends", lambda: f"destroy {ONE} end" in hypervisor.log)
    finally:
        release.set()
        worker.close()
    mine = [line for line in hypervisor.log if ONE in line]
    assert mine == [f"spawn {ONE} start", f"spawn {ONE} end", f"destroy {ONE} start",
                    f"destroy {ONE} end"]
    # Read again after each end, the standing orders are not carried out twice.
    assert [line for line in hypervisor.log if TWO in line] == [f"spawn {TWO} start",
                                                                f"spawn {TWO} end"]


class OlderController(Link):
    """A controller that gives the orders no version: the agent polls it."""

    def __init__(self, orders: ReadOrders, stop: threading.Event) -> None:
        super().__init__(orders)
        self.stop = stop
        self.polls: list[str | None] = []

    def poll_orders(self, version: str | None, wait: float) -> PolledOrders:
        self.polls.append(version)
        if len(self.polls) == 3:
            self.stop.set()
        return PolledOrders(self.current, None)


def test_an_older_controller_is_polled_and_its_orders_carried_out() -> None:
    stop = threading.Event()
    hypervisor = Hypervisor()
    link = OlderController(ReadOrders(spawn=[spawn(ONE)]), stop)
    worker = OrderWorker(link, hypervisor)  # type: ignore[arg-type]
    agent = Agent(scan=list, link=link, pool_attrs=[],  # type: ignore[arg-type]
                  order_interval=0.01)
    try:
        agent.follow_orders(worker, stop)
        until("the spawn ends", lambda: f"spawn {ONE} end" in hypervisor.log)
    finally:
        worker.close()
    assert link.polls == [None, None, None]
    assert link.answers == [("spawned", ONE, True)]


def test_a_spawn_waits_for_a_destroy_to_free_the_host_not_for_its_answer() -> None:
    hypervisor = Hypervisor()
    answering = threading.Event()

    class SlowAnswers(Link):
        """The controller is slow to take the destroy's answer."""

        def destroyed(self, result: OrderResult) -> None:
            answering.wait(120)
            super().destroyed(result)

    link = SlowAnswers(ReadOrders(destroy=[DestroyOrder(ONE, "vm-1")], spawn=[spawn(TWO)]))
    worker = OrderWorker(link, hypervisor)  # type: ignore[arg-type]
    try:
        threading.Thread(target=worker.follow, args=(None, 0), daemon=True).start()
        until("the spawn ends", lambda: f"spawn {TWO} end" in hypervisor.log)
        assert hypervisor.log.index(f"destroy {ONE} end") < hypervisor.log.index(
            f"spawn {TWO} start")
        assert link.answers == [("spawned", TWO, True)]  # the destroy's still on its way
    finally:
        answering.set()
        worker.close()
