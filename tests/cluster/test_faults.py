"""Fault injection: a burst of boots and deletes from several clients while the controller
and the host agents are SIGKILLed at random points and restarted; once things settle,
the invariants of `tests.support.invariants` hold, on SQLite and on PostgreSQL.

Real processes throughout: `passthru serve` and one `passthru agent` per simulated host
(a GPU host and an E810 host with VFs on one physical network and a whole PF on
another). Each host's libvirt is the test driver served by a private libvirtd of its own,
so that, as on a real host, its domains outlive a killed agent and the test reads them
from the daemon. The kills come from a seeded random schedule: a failure replays.

After the burst every process runs again; the sweeps (a short build timeout and
heart-beat timeout) and the agents' reconciliation bring every server to a settled state:
no device with two owners, no leaked claim, room counted right, no BUILD, no orphan
domain and no ACTIVE server without one. Then everything is deleted, and the fleet must
end holding nothing at all.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, func, select
from sqlalchemy.orm import Session

from passthru.controller.settings import Settings
from passthru.controller.store.models import DeviceRow, ServerRow, ServerStatus
from passthru.host.libvirt_driver import LibvirtDriver
from passthru.sim import PROFILES
from passthru.sim.hypervisor import missing, running_libvirtd
from tests.cluster.hosts import AgentProcess, wait_for
from tests.pg import PostgresCluster
from tests.support.invariants import assert_invariants, problems
from tests.support.live import LiveController
from tests.support.machine import cannot_run

#: Another schedule: FAULT_SEED=n in the environment.
SEED = int(os.environ.get("FAULT_SEED", "20261202"))
CLIENTS = 3
BURST = 24.0  # seconds of boots and deletes
KILLS = 3  # of the controller, and as many of agents
BUILD_TIMEOUT = 12
V2 = "/v2/admin"

#: What the clients boot: (flavor, nic), drawn at random.
KINDS: tuple[tuple[str, dict[str, str] | None], ...] = (
    ("m1.a100", None),
    ("m1.small", {"uuid": "prod", "vnic_type": "direct"}),
    ("m1.small", {"uuid": "prod", "vnic_type": "macvtap"}),
    ("m1.small", {"uuid": "ext", "vnic_type": "direct-physical"}),
    ("m1.small", None),
)
CATALOG: tuple[tuple[str, dict[str, Any]], ...] = (
    ("/os-pci-flavors", {"pci-flavor": {"name": "a100", "vendor_id": "10de",
                                        "product_id": "20b5"}}),
    ("/flavors", {"flavor": {"name": "m1.a100", "vcpus": 2, "ram": 1024}}),
    ("/flavors/m1.a100/os-extra_specs", {"extra_specs": {"pci_passthrough:pci_flavor":
                                                         "1:a100"}}),
    ("/flavors", {"flavor": {"name": "m1.small"}}),
    ("/networks", {"network": {"name": "prod", "physical_network": "physnet1",
                               "segmentation_id": 100}}),
    ("/networks", {"network": {"name": "ext", "physical_network": "physnet2"}}),
)


@dataclass
class Host:
    """A simulated host: its agent process, and the libvirtd its domains live in."""

    agent: AgentProcess
    libvirt: LibvirtDriver

    def domains(self) -> set[str]:
        return {state.name for state in self.libvirt.domains()}


@dataclass
class Fleet:
    controller: LiveController
    db_url: str
    hosts: list[Host]
    admin: httpx.Client

    @property
    def agents(self) -> list[AgentProcess]:
        return [host.agent for host in self.hosts]

    def domains(self) -> dict[str, set[str]]:
        return {host.agent.name: host.domains() for host in self.hosts}


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def fault_db(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return Settings(tmp_path / "data").database_url
    cluster: PostgresCluster = request.getfixturevalue("postgres")
    return cluster.new_database()


@pytest.fixture
def fleet(fault_db: str, tmp_path: Path) -> Iterator[Fleet]:
    if (reason := missing()) is not None:
        cannot_run(reason)
    sqlite = fault_db.startswith("sqlite")
    controller = LiveController(tmp_path / "data", None if sqlite else fault_db, options=(
        "--heartbeat-timeout", "4", "--build-timeout", str(BUILD_TIMEOUT),
        "--max-build-attempts", "2"))
    with contextlib.ExitStack() as stack:
        controller.start()
        stack.callback(controller.stop)
        admin = stack.enter_context(httpx.Client(
            base_url=f"{controller.url}{V2}", timeout=30.0,
            headers={"Authorization": f"Bearer {controller.admin_token}"}))
        for path, body in CATALOG:
            admin.post(path, json=body).raise_for_status()
        hosts = []
        for number, profile in enumerate((PROFILES["gpu-2numa"], PROFILES["e810"])):
            root = tmp_path / f"libvirtd-{number}"
            daemon = stack.enter_context(running_libvirtd(root, f"pt-{os.getpid()}-f{number}"))
            uri = daemon.uri.replace("qemu+unix:///system", "test+unix:///default")
            # Held open for the whole test: the test driver keeps its domains while some
            # connection is open, as a host keeps them while it is up.
            libvirt = stack.enter_context(LibvirtDriver(uri))
            token = admin.post(f"/os-hosts/sim-{profile.name}/tokens").json()["token"]
            agent = AgentProcess(profile, tmp_path / "hosts", controller.url, token,
                                 libvirt_uri=uri)
            agent.start()
            stack.callback(agent.stop)
            hosts.append(Host(agent, libvirt))
        made = Fleet(controller, fault_db, hosts, admin)
        wait_for("every host up", lambda: hosts_up(made), made.agents, timeout=60)
        yield made


def hosts_up(fleet: Fleet) -> bool:
    listed = fleet.admin.get("/os-hosts").json()["hosts"]
    return {host["name"] for host in listed if host["status"] == "up"} >= {
        agent.name for agent in fleet.agents}


@dataclass
class Client:
    """One tenant's script: boots of random kinds and deletes of its own servers, going on
    through controller outages (a refused connection, a 5xx)."""

    number: int
    url: str
    token: str
    stop: threading.Event
    booted: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def run(self) -> None:
        rng = random.Random(SEED + self.number)
        mine: list[str] = []
        with httpx.Client(base_url=f"{self.url}{V2}", timeout=10.0,
                          headers={"Authorization": f"Bearer {self.token}"}) as http:
            for index in range(100_000):
                if self.stop.is_set():
                    return
                try:
                    if mine and rng.random() < 0.4:
                        self._delete(http, mine.pop(rng.randrange(len(mine))))
                    else:
                        flavor, nic = rng.choice(KINDS)
                        self._boot(http, f"c{self.number}-{index}", flavor, nic, mine)
                except httpx.TransportError:
                    time.sleep(0.3)  # the controller is down: try on
                time.sleep(rng.uniform(0.0, 0.3))

    def _boot(self, http: httpx.Client, name: str, flavor: str,
              nic: dict[str, str] | None, mine: list[str]) -> None:
        body = {"server": {"name": name, "flavorRef": flavor, "networks": [nic] if nic else []}}
        answer = http.post("/servers", json=body)
        if answer.status_code == 202:
            uuid = answer.json()["server"]["id"]
            mine.append(uuid)
            self.booted.append(uuid)
        elif answer.status_code < 500:
            self.errors.append(f"boot {name}: {answer.status_code} {answer.text[:300]}")

    def _delete(self, http: httpx.Client, uuid: str) -> None:
        answer = http.delete(f"/servers/{uuid}")
        if answer.status_code in (204, 404):
            self.deleted.append(uuid)
        elif answer.status_code < 500:
            self.errors.append(f"delete {uuid}: {answer.status_code} {answer.text[:300]}")


def every_server(admin: httpx.Client) -> list[dict[str, Any]]:
    """Every server the store has, page by page."""
    servers: list[dict[str, Any]] = []
    params: dict[str, Any] = {"limit": 1000}
    while True:
        page = admin.get("/servers", params=params).raise_for_status().json()
        servers += page["servers"]
        if not page["servers"] or not page.get("servers_links"):
            return servers
        params = {"limit": 1000, "marker": servers[-1]["id"]}


def inject_faults(fleet: Fleet, rng: random.Random, seconds: float) -> list[str]:
    """SIGKILL the controller and the agents at random moments for `seconds`, restarting
    each after a random pause; returns what was done, in order."""
    victims = ["controller"] * KILLS + [rng.choice(fleet.agents).name for _ in range(KILLS)]
    rng.shuffle(victims)
    agents = {agent.name: agent for agent in fleet.agents}
    done = []
    pause = seconds / (len(victims) + 1)
    for victim in victims:
        time.sleep(rng.uniform(0.3, 1.7) * pause)
        process = fleet.controller if victim == "controller" else agents[victim]
        process.kill()
        time.sleep(rng.uniform(0.1, 1.5))
        process.start()
        done.append(victim)
    return done


def unsettled(db_url: str) -> list[tuple[str, str, ServerStatus, int | None]]:
    """The servers being built, and those deleted whose domain their host has not removed:
    (id, name, status, host id)."""
    engine = create_engine(db_url)
    try:
        with Session(engine) as session:
            rows = session.execute(
                select(ServerRow.uuid, ServerRow.name, ServerRow.status, ServerRow.host_id)
                .where((ServerRow.status == ServerStatus.BUILD)
                       | ((ServerRow.status == ServerStatus.DELETED)
                          & ServerRow.host_id.is_not(None))))
            return [(row.uuid, row.name, row.status, row.host_id) for row in rows]
    finally:
        engine.dispose()


def stacks(fleet: Fleet) -> str:
    """What every agent's threads are doing now (`passthru agent` dumps them on SIGUSR1)."""
    for agent in fleet.agents:
        if agent.process is not None and agent.process.poll() is None:
            agent.process.send_signal(signal.SIGUSR1)
    time.sleep(1.0)
    return "\n".join(agent.log_tail(20_000) for agent in fleet.agents)


def settle(fleet: Fleet) -> None:
    wait_for("every host up again", lambda: hosts_up(fleet), fleet.agents, timeout=60)
    left: list[tuple[str, str, ServerStatus, int | None]] = []

    def settled() -> bool:
        left[:] = unsettled(fleet.db_url)
        return not left

    try:
        wait_for("no server in BUILD and every deleted one destroyed", settled,
                 [*fleet.agents, fleet.controller], timeout=BUILD_TIMEOUT + 60)
        # The hosts' domains follow: a spawn answered during an outage is refused once
        # the controller is back, and only then is its domain removed. A leak stays, and
        # fails here.
        wait_for("the hosts' domains are those the store says",
                 lambda: not problems(fleet.db_url, fleet.domains()), timeout=60)
    except AssertionError as error:
        raise AssertionError(f"{error}\nstill unsettled: {left}\n"
                             f"{problems(fleet.db_url, fleet.domains())}\n{stacks(fleet)}"
                             ) from None


@pytest.mark.slow
def test_sigkilled_controller_and_agents_mid_burst_leave_no_leak(fleet: Fleet) -> None:
    stop = threading.Event()
    clients = [Client(n, fleet.controller.url, fleet.controller.admin_token, stop)
               for n in range(CLIENTS)]
    threads = [threading.Thread(target=client.run, daemon=True) for client in clients]
    for thread in threads:
        thread.start()
    try:
        kills = inject_faults(fleet, random.Random(SEED), BURST)
    finally:
        stop.set()
        for thread in threads:
            thread.join(30)
    assert kills.count("controller") == KILLS
    assert [error for client in clients for error in client.errors] == []
    booted = [uuid for client in clients for uuid in client.booted]
    assert len(booted) > 20  # the burst did boot, through the kills

    settle(fleet)
    assert_invariants(fleet.db_url, fleet.domains())
    # Not vacuous: servers survived the kills, running on the hosts.
    assert any(name.startswith("passthru-") for names in fleet.domains().values()
               for name in names)

    # Deleting everything leaves the fleet holding nothing.
    for server in every_server(fleet.admin):
        answer = fleet.admin.delete(f"/servers/{server['id']}")
        assert answer.status_code in (204, 404), answer.text
    settle(fleet)
    assert_invariants(fleet.db_url, fleet.domains())
    assert {name for names in fleet.domains().values() for name in names
            if name.startswith("passthru-")} == set()
    engine = create_engine(fleet.db_url)
    with Session(engine) as session:
        assert session.scalar(select(func.count()).select_from(DeviceRow)
                              .where(DeviceRow.owner.is_not(None))) == 0
    engine.dispose()
