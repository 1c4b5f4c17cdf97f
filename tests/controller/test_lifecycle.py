"""Server lifecycle through the controller onto host agents with libvirt test:///
connections over simulated hosts: stop, start and reboot with Nova's states, delete in
every state, the power state a guest changes by itself, the console log, a failed spawn
placed on another host, and the sweep of stalled builds."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update

from passthru.controller.agents.orders import spawned
from passthru.controller.catalog.cache import Catalog
from passthru.controller.scheduler.service import Scheduler
from passthru.controller.servers.boot import BootRequest, boot_server
from passthru.controller.servers.reschedule import sweep_builds
from passthru.controller.settings import Settings
from passthru.controller.store.db import Store
from passthru.controller.store.models import HostRow, HostStatus, ServerRow
from passthru.host.agent import Agent
from passthru.host.attach import Attacher, domain_name
from passthru.host.config import offered
from passthru.host.domain_xml import DomainSpec, build_domain_xml
from passthru.host.libvirt_driver import LibvirtDriver
from passthru.host.link import HttpLink
from passthru.host.worker import OrderWorker
from passthru.pci.work import OrderResult, PowerState, SpawnOrder
from tests.controller.conftest import ON_BOTH, Api
from tests.controller.test_boot_attach import seed_catalog
from tests.host.simhost import GPUS, RecordingApplier, SimHost, make_host

V2 = "/v2/admin"
SQUATTER = "6f1d6a43-0000-4000-8000-000000000001"


class Exploding(Attacher):
    """An attacher whose spawn of a server named `bad` raises, as a bug would."""

    def spawn(self, order: SpawnOrder) -> OrderResult:
        if order.name == "bad":
            raise RuntimeError("boom")
        return super().spawn(order)


class Compute:
    """One host as its agent runs it, with an HTTP client of its own (its agent token)."""

    def __init__(self, api: Api, name: str, root: Path,
                 attacher: type[Attacher] = Attacher) -> None:
        self.name = name
        self.sim: SimHost = make_host(root)
        self.driver = LibvirtDriver(self.sim.uri)
        self.applier = RecordingApplier()
        self.token = api.agent(name)
        client = TestClient(api.client.app, headers={"Authorization": f"Bearer {self.token}"})
        self.link = HttpLink(client, name)
        config = self.sim.config()
        Agent(scan=lambda: offered(config), link=self.link,
              pool_attrs=config.pool_attrs).report_once()
        self.instances = root / "instances"
        made = attacher(self.driver, self.applier, self.sim.root,
                        self.sim.attacher(self.driver, self.applier).host_devices)
        self.worker = OrderWorker(self.link, made, self.instances)
        self.worker.start()

    def run(self) -> int:
        return self.worker.run_orders()

    def active(self, server_id: str) -> bool:
        return self.driver.state(domain_name(server_id)) is PowerState.RUNNING

    def refuse_define(self, server_id: str) -> None:
        """Another domain already has the server's domain name: libvirt refuses the define."""
        self.driver.define(build_domain_xml(DomainSpec(
            name=domain_name(server_id), uuid=SQUATTER, memory_mib=64, vcpus=1)))




@pytest.fixture
def one(api: Api, tmp_path: Path) -> Iterator[Compute]:
    compute = Compute(api, "compute-1", tmp_path / "compute-1")
    seed_catalog(api)
    yield compute
    compute.driver.close()


@pytest.fixture
def two(api: Api, tmp_path: Path) -> Iterator[dict[str, Compute]]:
    computes = {name: Compute(api, name, tmp_path / name) for name in ("compute-1", "compute-2")}
    seed_catalog(api)
    yield computes
    for compute in computes.values():
        compute.driver.close()


def boot(api: Api, name: str, flavor: str = "m1.gpu", **nic: str) -> dict[str, Any]:
    body = {"server": {"name": name, "flavorRef": flavor, "networks": [nic] if nic else []}}
    return api.ok("POST", f"{V2}/servers", json=body)["server"]


def server(api: Api, name: str) -> dict[str, Any]:
    return api.ok("GET", f"{V2}/servers/{name}")["server"]


def act(api: Api, name: str, action: dict[str, Any], expect: int = 202) -> Any:
    response = api.call("POST", f"{V2}/servers/{name}/action", json=action, expect=expect)
    return response.json()


def held(api: Api, host: str | None = None) -> dict[str, str]:
    listed = api.ok("GET", f"{V2}/os-pci-devices",
                    params={"host": host} if host else None)["pci_devices"]
    return {f"{row['host']}/{row['device']['address']}": row["device"]["status"]
            for row in listed if row["device"]["status"] != "available"}


def kinds(api: Api, server_id: str) -> list[str]:
    events = api.ok("GET", f"{V2}/os-events", params={"server": server_id})["events"]
    return [e["kind"] for e in events]


STOP, START = {"os-stop": None}, {"os-start": None}
SOFT, HARD = {"reboot": {"type": "SOFT"}}, {"reboot": {"type": "HARD"}}


@ON_BOTH
def test_stop_start_and_reboots_follow_novas_states(api: Api, one: Compute) -> None:
    vm = boot(api, "vm")
    one.run()
    devices = held(api)
    assert server(api, "vm")["status"] == "ACTIVE" and len(devices) == len(GPUS)

    stopping = act(api, "vm", STOP)["server"]
    assert (stopping["status"], stopping["task_state"]) == ("ACTIVE", "powering-off")
    assert one.run() == 1
    stopped = server(api, "vm")
    assert (stopped["status"], stopped["task_state"]) == ("SHUTOFF", None)
    assert not one.active(vm["id"])
    assert held(api) == devices  # a stopped server keeps its devices, as in Nova
    # A restarted agent keeps a stopped server's domain, and the server keeps its state.
    assert [d.server_uuid for d in one.worker.start().kept] == [vm["id"]]
    assert server(api, "vm")["status"] == "SHUTOFF" and held(api) == devices

    starting = act(api, "vm", START)["server"]
    assert (starting["status"], starting["task_state"]) == ("SHUTOFF", "powering-on")
    one.run()
    assert server(api, "vm")["status"] == "ACTIVE" and one.active(vm["id"])

    assert act(api, "vm", SOFT)["server"]["status"] == "REBOOT"
    one.run()
    assert server(api, "vm")["status"] == "ACTIVE" and one.active(vm["id"])

    assert act(api, "vm", HARD)["server"]["status"] == "HARD_REBOOT"
    one.run()
    assert server(api, "vm")["status"] == "ACTIVE" and one.active(vm["id"])

    # A hard reboot starts a stopped server too.
    act(api, "vm", STOP)
    one.run()
    assert act(api, "vm", HARD)["server"]["status"] == "HARD_REBOOT"
    one.run()
    assert server(api, "vm")["status"] == "ACTIVE" and one.active(vm["id"])
    assert held(api) == devices
    seen = kinds(api, vm["id"])
    for kind in ("power-requested", "server-shutoff", "server-started", "server-rebooted"):
        assert kind in seen, kind


def test_a_hard_reboot_replaces_a_soft_one_still_pending(api: Api, one: Compute) -> None:
    vm = boot(api, "vm")
    one.run()
    act(api, "vm", SOFT)
    order = one.link.orders().power[0]
    assert act(api, "vm", HARD)["server"]["status"] == "HARD_REBOOT"
    # The soft reboot's late answer does not end the hard one.
    refused = api.call("POST", f"/v2/agent/hosts/compute-1/orders/{vm['id']}/powered",
                       one.token, params={"action": "reboot"},
                       json={"server_uuid": order.server_uuid, "ok": True})
    assert refused.status_code == 400 and "replaced by hard-reboot" in refused.text
    assert server(api, "vm")["task_state"] == "rebooting_hard"
    one.run()
    assert server(api, "vm")["status"] == "ACTIVE"


def test_a_failed_power_change_keeps_the_state_before_with_the_fault(
        api: Api, one: Compute) -> None:
    vm = boot(api, "vm")
    one.run()
    devices = held(api)
    # The guest is gone when the soft reboot comes: libvirt cannot reboot it.
    one.driver.stop(domain_name(vm["id"]))
    act(api, "vm", SOFT)
    one.worker.power(one.link.orders().power[0])
    failed = server(api, "vm")
    assert (failed["status"], failed["task_state"]) == ("ACTIVE", None)
    assert failed["fault"].startswith("reboot failed on compute-1: reboot failed for domain")
    assert "is shut off; start it" in failed["fault"]
    assert "power-failed" in kinds(api, vm["id"])
    # The round's power report then finds the domain off.
    one.run()
    assert server(api, "vm")["status"] == "SHUTOFF"
    assert held(api) == devices
    act(api, "vm", START)
    one.run()
    started = server(api, "vm")
    assert (started["status"], started["fault"]) == ("ACTIVE", None)


def test_transitions_nova_forbids_are_refused_with_the_state_and_what_it_allows(
        api: Api, one: Compute) -> None:
    boot(api, "vm", "m1.small")
    refused = act(api, "vm", STOP, expect=409)["error"]["message"]
    assert "is BUILD" in refused and "allowed now: none but delete" in refused
    one.run()
    refused = act(api, "vm", START, expect=409)["error"]["message"]
    assert "is ACTIVE" in refused and "allowed now: stop, reboot, hard-reboot" in refused
    act(api, "vm", STOP)
    refused = act(api, "vm", SOFT, expect=409)["error"]["message"]
    assert "ACTIVE (powering-off)" in refused and "allowed now: none" in refused
    one.run()
    for action in (STOP, SOFT):
        refused = act(api, "vm", action, expect=409)["error"]["message"]
        assert "is SHUTOFF" in refused and "allowed now: start, hard-reboot" in refused
    assert server(api, "vm")["status"] == "SHUTOFF"
    assert "error" in act(api, "vm", {}, expect=400)
    assert "error" in act(api, "vm", {**STOP, **START}, expect=400)
    assert "error" in act(api, "vm", {"os-pause": None}, expect=422)


def test_delete_in_every_state_frees_every_device(api: Api, one: Compute) -> None:
    failed = boot(api, "failed")
    one.refuse_define(failed["id"])
    one.run()
    assert server(api, "failed")["status"] == "ERROR"
    for name in ("active", "shutoff", "reboot", "hard"):
        boot(api, name, "m1.small", uuid="prod", vnic_type="direct")
    one.run()
    act(api, "shutoff", STOP)
    one.run()
    act(api, "reboot", SOFT)
    act(api, "hard", HARD)
    boot(api, "build", "m1.small", uuid="prod", vnic_type="direct")
    states = {s["name"]: s["status"] for s in api.ok("GET", f"{V2}/servers")["servers"]}
    assert states == {"failed": "ERROR", "active": "ACTIVE", "shutoff": "SHUTOFF",
                      "reboot": "REBOOT", "hard": "HARD_REBOOT", "build": "BUILD"}
    assert len(held(api)) == 5
    for name in states:
        api.call("DELETE", f"{V2}/servers/{name}", expect=204)
    one.run()
    assert held(api) == {}
    assert [d.uuid for d in one.driver.domains()] == [SQUATTER]
    assert one.applier.configured == {}
    assert api.ok("GET", f"{V2}/ports")["ports"] == []


def shutoff_events(api: Api, server_id: str) -> list[str]:
    return [e["message"] for e in api.ok("GET", f"{V2}/os-events", params={
        "server": server_id, "kind": "server-shutoff"})["events"]]


@ON_BOTH
def test_a_guest_that_shuts_itself_down_becomes_shutoff(api: Api, one: Compute) -> None:
    vm = boot(api, "vm")
    stopping = boot(api, "stopping", "m1.small")
    one.run()
    # Behind the agent's back, as when the guest powers itself off.
    one.driver.stop(domain_name(vm["id"]))
    act(api, "stopping", STOP)
    one.link.power_states({stopping["id"]: PowerState.SHUTOFF})
    # A server with a power change pending is the order's business, not the sync's.
    assert server(api, "stopping")["task_state"] == "powering-off"
    assert shutoff_events(api, stopping["id"]) == []
    one.run()
    assert server(api, "vm")["status"] == "SHUTOFF"
    assert ["the guest shut itself down" in m for m in shutoff_events(api, vm["id"])] == [True]
    assert server(api, "stopping")["status"] == "SHUTOFF"
    assert ["stop of server stopping done" in m
            for m in shutoff_events(api, stopping["id"])] == [True]
    assert len(held(api)) == len(GPUS)  # still its devices
    act(api, "vm", START)
    one.run()
    assert server(api, "vm")["status"] == "ACTIVE" and one.active(vm["id"])


def test_the_console_log_goes_through_the_controller(api: Api, one: Compute) -> None:
    vm = boot(api, "vm", "m1.small")
    one.run()
    assert api.ok("GET", f"{V2}/servers/vm/console-log")["output"] == ""
    log = one.instances / vm["id"] / "console.log"
    log.parent.mkdir(parents=True)
    log.write_text("SeaBIOS\nLinux version 6.1\nlogin: \n")
    one.run()
    assert api.ok("GET", f"{V2}/servers/vm/console-log")["output"] == log.read_text()
    assert api.ok("GET", f"{V2}/servers/vm/console-log",
                  params={"lines": 2})["output"] == "Linux version 6.1\nlogin: \n"
    nova = act(api, "vm", {"os-getConsoleOutput": {"length": 1}}, expect=200)
    assert nova == {"output": "login: \n"}
    # Sent only when it changed: a log the agent already sent is not sent again.
    with api.client.app.state.store.write() as session:  # type: ignore[attr-defined]
        session.get_one(ServerRow, vm["id"]).console_log = "marker\n"
    one.run()
    assert api.ok("GET", f"{V2}/servers/vm/console-log")["output"] == "marker\n"
    # A guest that logs without end: only the tail reaches the controller, from a line on.
    log.write_text("".join(f"line {n}\n" for n in range(20000)))
    one.run()
    kept = api.ok("GET", f"{V2}/servers/vm/console-log")["output"]
    assert kept.endswith("line 19999\n") and kept.startswith("line ")
    assert 60 * 1024 < len(kept) <= 64 * 1024
    assert "line 0\n" not in kept


@ON_BOTH
def test_a_failed_spawn_runs_on_another_host(api: Api, two: dict[str, Compute]) -> None:
    vm = boot(api, "vm")
    first = two[vm["host"]]
    second = next(c for c in two.values() if c is not first)
    first.refuse_define(vm["id"])
    first.run()
    moved = server(api, "vm")
    assert (moved["status"], moved["host"]) == ("BUILD", second.name)
    assert held(api, first.name) == {}
    assert "server-rescheduled" in kinds(api, vm["id"])
    second.run()
    assert server(api, "vm")["status"] == "ACTIVE" and second.active(vm["id"])
    assert set(held(api)) == {f"{second.name}/{gpu}" for gpu in GPUS}
    assert set(held(api, second.name).values()) == {"allocated"}


@ON_BOTH
def test_a_spawn_failing_on_every_host_names_every_fault(api: Api,
                                                         two: dict[str, Compute]) -> None:
    vm = boot(api, "vm")
    first = two[vm["host"]]
    second = next(c for c in two.values() if c is not first)
    for compute in (first, second):
        compute.refuse_define(vm["id"])
    first.run()
    second.run()
    failed = server(api, "vm")
    assert failed["status"] == "ERROR" and failed["host"] is None
    assert f"{first.name}: define domain failed" in failed["fault"]
    assert f"{second.name}: define domain failed" in failed["fault"]
    assert "no other host fits" in failed["fault"]
    assert held(api) == {}


def test_a_spawn_with_its_attempts_used_up_goes_to_error(
        api: Api, two: dict[str, Compute], settings: Settings) -> None:
    api.client.app.state.settings = replace(settings, max_build_attempts=1)  # type: ignore[attr-defined]
    vm = boot(api, "vm")
    first = two[vm["host"]]
    first.refuse_define(vm["id"])
    first.run()
    failed = server(api, "vm")
    assert failed["status"] == "ERROR"
    assert failed["fault"].startswith(f"could not be built in 1 attempt: {first.name}: define")
    assert held(api) == {}


def test_one_bad_order_does_not_block_the_next(api: Api, tmp_path: Path) -> None:
    compute = Compute(api, "compute-1", tmp_path / "compute-1", attacher=Exploding)
    seed_catalog(api)
    boot(api, "bad", "m1.small", uuid="prod", vnic_type="direct")
    boot(api, "good", "m1.small", uuid="prod", vnic_type="direct")
    assert compute.run() == 2
    bad = server(api, "bad")
    assert bad["status"] == "ERROR" and "spawn failed on the host: RuntimeError: boom" in bad["fault"]
    assert server(api, "good")["status"] == "ACTIVE"
    assert set(held(api).values()) == {"allocated"} and len(held(api)) == 1
    compute.driver.close()


def _sweep(api: Api, **later: float) -> Any:
    app = api.client.app
    store: Store = app.state.store  # type: ignore[attr-defined]
    scheduler: Scheduler = app.state.scheduler  # type: ignore[attr-defined]
    settings: Settings = app.state.settings  # type: ignore[attr-defined]
    with store.read() as session:
        newest = max(session.query(ServerRow.updated_at).all())[0]
    return sweep_builds(store, scheduler, settings, now=newest + timedelta(**later))


@ON_BOTH
def test_a_build_that_takes_too_long_fails_and_frees_all(api: Api, one: Compute) -> None:
    vm = boot(api, "vm", "m1.gpu", uuid="prod", vnic_type="direct")
    assert _sweep(api, seconds=60).failed == []
    assert server(api, "vm")["status"] == "BUILD"
    order = one.link.orders().spawn[0]  # the agent is slow with it...
    assert _sweep(api, seconds=1801).failed == [vm["id"]]
    failed = server(api, "vm")
    assert failed["status"] == "ERROR"
    assert failed["fault"] == "build timed out after 1800 s on compute-1"
    assert held(api) == {} and api.ok("GET", f"{V2}/ports")["ports"] == []
    assert one.link.orders().spawn == []
    # ...and answers once the controller has given up: what it made is removed again,
    # since the controller counts those devices free.
    one.worker.spawn(order)
    assert one.driver.domains() == [] and one.applier.configured == {}
    assert server(api, "vm")["status"] == "ERROR" and held(api) == {}


@ON_BOTH
def test_a_build_on_a_host_that_went_down_moves_to_another(
        api: Api, two: dict[str, Compute]) -> None:
    vm = boot(api, "vm")
    down = two[vm["host"]]
    up = next(c for c in two.values() if c is not down)
    app = api.client.app
    with app.state.store.write() as session:  # type: ignore[attr-defined]
        session.execute(update(HostRow).where(HostRow.name == down.name)
                        .values(status=HostStatus.DOWN))
    app.state.scheduler.refresh([down.name])  # type: ignore[attr-defined]
    swept = _sweep(api, seconds=1)
    assert swept.placed_again == [vm["id"]]
    moved = server(api, "vm")
    assert (moved["status"], moved["host"]) == ("BUILD", up.name)
    assert moved["fault"] == f"{down.name}: host {down.name} went down during the build"
    assert held(api, down.name) == {}
    up.run()
    assert server(api, "vm")["status"] == "ACTIVE"


@ON_BOTH
def test_a_server_its_controller_never_placed_is_failed_after_a_grace(
        api: Api, one: Compute) -> None:
    with api.client.app.state.store.write() as session:  # type: ignore[attr-defined]
        orphan = boot_server(session, Catalog(), BootRequest("orphan", "admin", "m1.gpu")).uuid
    assert _sweep(api, seconds=10).failed == []
    assert server(api, "orphan")["status"] == "BUILD"
    assert _sweep(api, seconds=121).failed == [orphan]
    failed = server(api, "orphan")
    assert failed["status"] == "ERROR" and "never placed" in failed["fault"]
    assert held(api) == {}


@ON_BOTH
def test_a_controller_stopped_between_a_failed_spawn_and_the_new_placement(
        api: Api, two: dict[str, Compute]) -> None:
    vm = boot(api, "vm")
    first = two[vm["host"]]
    second = next(c for c in two.values() if c is not first)
    app = api.client.app
    # The failed spawn's answer is recorded, then the controller dies before placing again.
    with app.state.store.write() as session:  # type: ignore[attr-defined]
        spawned(session, first.name, OrderResult(vm["id"], ok=False, fault="it broke"), 3)
    app.state.scheduler.refresh([first.name])  # type: ignore[attr-defined]
    left = server(api, "vm")
    assert (left["status"], left["host"]) == ("BUILD", None)
    assert held(api) == {}
    assert _sweep(api, seconds=10).placed_again == []
    assert _sweep(api, seconds=121).placed_again == [vm["id"]]
    assert server(api, "vm")["host"] == second.name
    second.run()
    assert server(api, "vm")["status"] == "ACTIVE"
    # The first host's GPUs are free for the next VM.
    assert boot(api, "next")["host"] == first.name
