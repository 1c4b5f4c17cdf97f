"""End-to-end boot benchmark: REST clients, a real `passthru serve`, real agents; prints JSON.

    python bench/e2e.py [--hosts 500] [--agents 40] [--vms 5000] [--clients 8]
                        [--latency-vms 30] [--db-url URL] [--baseline REV]

The DRA-comparable shape is `--hosts 500 --vms 5000 --clients 8` (500 hosts x 10 A100
GPUs, 5,000 one-GPU VMs: the fleet filled exactly); `make bench` runs a smaller one.

What runs, all on this machine:
- one `passthru serve` process (this tree's code, or REV's with `--baseline`) on SQLite in
  a fresh data dir on disk, as it ships (its journal and sync mode are read back from a
  connection the store opens and printed under "store"), or on `--db-url` (PostgreSQL);
- `--agents` real `passthru agent` processes (default: every host up to 40), one per
  simulated host (`passthru.sim.big(gpus=10)`: its own sysfs tree and libvirt test:///
  driver over its own node XML, so spawning a domain is quick and no guest runs), each
  with the agent's shipped defaults (order polls, re-scans) and only host, token and
  paths set. An agent serves one host and costs about 110 MiB and 1 CPU-second to start,
  so 500 of them do not fit 2 cores;
- the other hosts (`--hosts` minus `--agents`) are *reported only*: the bench sends the
  same inventory and resources an agent of that host would (read once from a simulated
  host with the agent's own config code) through the agent API, and heart-beats them
  every 60 s. Servers placed on them are placed and claimed like any other but stay BUILD
  (no agent takes their order); they count in time to 202 and placements/s, not in time
  to ACTIVE. The JSON says how many servers landed on each kind of host.

Phases, in this order:
1. latency runs (`--latency-clients`, default 1 and 16), before the reported-only hosts
   exist, so every server lands on a real agent's host: each client boots a server,
   waits until it is ACTIVE, deletes it, and boots the next (`--latency-vms` boots per
   run); the run ends when every deleted server's domain is destroyed. Controller CPU
   per boot here is a whole lifecycle: create, spawned, delete, destroyed.
2. the throughput run: the reported-only hosts are added, then `--clients` clients each
   POST boots back to back (a client sends its next boot when it has its 202) until
   `--vms` are sent; then the bench waits for every server on an agent's host to be
   ACTIVE.

Figures (seconds unless the name says otherwise):
- `time_to_202`: from sending `POST /v2/admin/servers` to its 202 (placed, devices and
  room claimed, committed), measured by the client;
- `time_to_active`: from sending the POST to the time of the controller's
  `server-active` event (written in the transaction that marks the server ACTIVE, on
  this machine's clock), read through `GET /v2/admin/os-events`, which the bench polls
  every 0.2 s: its polls cost the controller CPU too and are included below;
- `placements_per_s`: servers answered 202 / (last 202 - first POST);
- `controller_cpu_s`: utime + stime of the serve process (/proc/PID/stat) over the
  phase, beside its wall time; `..._ms_per_boot` divides it by the boots; it includes
  the agents' order polls, reports and heart-beats and the bench's event polls during
  the phase, so `idle` gives the controller's CPU rate with the same fleet and nothing
  booting, and `net_of_idle` subtracts that rate times the phase's wall time;
- `agents_cpu_s`: the same for all agent processes together;
- `load_avg`: the machine's 1/5/15-minute load average before and after the run (the
  machine is shared: other work shows there).

Baselines, run on the same machine by the same invocation:
- `in_process`: `bench/scheduler.py`'s durable fill of the same fleet shape (every host's
  10 GPUs, the same number of one-GPU servers) in one process, no HTTP and no agents:
  what the REST path and the agents add over the scheduler and its SQLite claim;
- `--baseline REV`: the whole benchmark again with git revision REV's `src` (extracted
  with `git archive`), right after, with the ratio old / new for every figure.
- `kubernetes_dra`: kube-scheduler's published DRA scheduler_perf figures (the
  5000pods_500nodes case: 473 pods/s, Perc90, on 6 CPUs), cited with their sources in
  `bench/dra.py`; not measured here.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

import dra  # bench/dra.py: the cited Kubernetes figures
from passthru.host.config import load_host_config, offered, resources
from passthru.sim import HostProfile, big, build_sysfs, host_config_toml, nodedev_xml
from serving import (
    ROOT,
    child_env,
    extract,
    free_port,
    passthru_command,
    process_cpu_seconds,
)

BENCH = Path(__file__).resolve().parent
#: Every host: ten A100s, five per NUMA node, and the chipset's own devices (not offered).
PROFILE: HostProfile = big(pfs=0, vfs=0, gpus=10)
GPUS_PER_HOST = 10
PCI_FLAVOR = "a100"
FLAVOR = "g1.a100"
EVENT_POLL = 0.2
REPORTED_HEARTBEAT = 60.0
EVENT_KINDS = ("server-active", "server-error", "server-destroyed")
EVENT_PAGE = 500

# --- processes ---------------------------------------------------------------------------


def say(message: str) -> None:
    """Progress on standard error; the JSON alone goes to standard output."""
    print(f"  e2e: {message}", file=sys.stderr, flush=True)


def percentiles(samples: Sequence[float]) -> dict[str, float] | None:
    if not samples:
        return None
    ordered = sorted(samples)

    def rank(q: float) -> float:
        return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]

    return {"p50": round(rank(0.5), 4), "p99": round(rank(0.99), 4),
            "max": round(ordered[-1], 4), "n": len(ordered)}


def until(what: str, check: Callable[[], bool], timeout: float, tail: Callable[[], str],
          every: float = 0.2) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise SystemExit(f"bench: {what} did not happen within {timeout:.0f} s\n{tail()}")
        time.sleep(every)


class Controller:
    """`passthru serve` from `src` on a fresh data dir (or `db_url`)."""

    def __init__(self, src: Path, work: Path, db_url: str | None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.data = work / "data"
        self.db_url = db_url
        self.log_path = work / "serve.log"
        command = passthru_command("serve", "--listen", f"127.0.0.1:{self.port}",
                                   "--data-dir", str(self.data))
        if db_url:
            command += ["--db", db_url]
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(command, env=child_env(src), stdout=log,
                                            stderr=subprocess.STDOUT)
        until("passthru serve answering", self._answers, 120, self.tail)
        self.token = (self.data / "admin-token").read_text().strip()
        self.http = self.client()

    def _answers(self) -> bool:
        if self.process.poll() is not None:
            raise SystemExit(f"bench: passthru serve exited\n{self.tail()}")
        try:
            httpx.get(f"{self.url}/openapi.json", timeout=2.0)
        except httpx.TransportError:
            return False
        return True

    def client(self, token: str | None = None) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=300.0,
                            headers={"Authorization": f"Bearer {token or self.token}"})

    def tail(self) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return f"--- serve log ---\n{text[-3000:]}"

    def cpu(self) -> float:
        return process_cpu_seconds(self.process.pid)

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self.http.request(method, path, **kwargs)
        if response.status_code >= 400:
            raise SystemExit(f"bench: {method} {path}: HTTP {response.status_code} "
                             f"{response.text[:500]}")
        return response.json() if response.content else None

    def list_all(self, path: str, key: str) -> list[dict[str, Any]]:
        """Every item of a list, following next links if the list is paginated."""
        items: list[dict[str, Any]] = []
        url: str | None = path
        while url is not None:
            page = self.call("GET", url)
            items += page[key]
            url = next((link["href"] for link in page.get(f"{key}_links", [])
                        if link.get("rel") == "next"), None)
        return items

    def stop(self) -> None:
        self.http.close()
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def store_mode(controller: Controller) -> dict[str, Any]:
    """The journal and sync mode of a connection passthru's Store opens on the same store
    (per-connection settings: the serve process's own connections are made the same way)."""
    from sqlalchemy import text

    from passthru.controller.settings import DATABASE_FILE
    from passthru.controller.store.db import Store

    url = controller.db_url or f"sqlite:///{controller.data / DATABASE_FILE}"
    store = Store(url)
    try:
        with store.engine.connect() as connection:
            if url.startswith("sqlite"):
                level = connection.exec_driver_sql("PRAGMA synchronous").scalar_one()
                journal = connection.exec_driver_sql("PRAGMA journal_mode").scalar()
                names = {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}
                return {"engine": "sqlite", "file": "data dir on disk",
                        "journal_mode": journal, "synchronous": names.get(level, level)}
            return {"engine": "postgresql",
                    **{name: connection.execute(text(f"SHOW {name}")).scalar()
                       for name in ("synchronous_commit", "fsync", "server_version")}}
    finally:
        store.close()


@dataclass
class AgentHost:
    """A simulated host and its real `passthru agent` process."""

    name: str
    config: Path
    log: Path
    process: subprocess.Popen[bytes] | None = None

    @classmethod
    def make(cls, name: str, work: Path, controller: str, token: str) -> AgentHost:
        home = work / name
        root = build_sysfs(PROFILE, home / "sys")
        node = home / "node.xml"
        node.write_text(nodedev_xml(PROFILE))
        settings = {"host": name, "token": token, "instances_path": str(home / "instances"),
                    "image_cache": str(home / "images")}
        head = "".join(f"{key} = {json.dumps(value)}\n" for key, value in settings.items())
        body = host_config_toml(PROFILE, sysfs_root=root, nodedev_xml=node,
                                controller=controller)
        config = home / "host.toml"
        config.write_text(head + "".join(line + "\n" for line in body.splitlines()
                                         if not line.startswith("host = ")))
        return cls(name, config, home / "agent.log")

    def start(self, src: Path) -> None:
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(passthru_command("agent", "--config",
                                                             str(self.config)),
                                            env=child_env(src), stdout=log,
                                            stderr=subprocess.STDOUT)

    def tail(self) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return f"--- agent {self.name} ---\n{text[-1500:]}"


class ReportedHosts:
    """Hosts with no agent process: reported and heart-beaten by the bench through the
    agent API, with what an agent of the simulated host would send."""

    def __init__(self, controller: Controller, template: Path, names: list[str]) -> None:
        config = load_host_config(template)
        found = resources(config)
        self.body = {"pool_attrs": list(config.pool_attrs),
                     "devices": [asdict(device) for device in offered(config)],
                     "resources": asdict(found) if found is not None else None}
        self.controller = controller
        self.clients: dict[str, httpx.Client] = {}
        for name in names:
            token = controller.call("POST", f"/v2/admin/os-hosts/{name}/tokens",
                                    json={"token": {}})["token"]
            self.clients[name] = controller.client(token)
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._heartbeats, daemon=True)

    def _heartbeat(self, name: str) -> int:
        response = self.clients[name].post(f"/v2/agent/hosts/{name}/heartbeat")
        response.raise_for_status()
        return int(response.json()["generation"])

    def report(self) -> None:
        for name, client in self.clients.items():
            generation = self._heartbeat(name)
            client.put(f"/v2/agent/hosts/{name}/inventory",
                       json={"base_generation": generation, **self.body}).raise_for_status()
            self._heartbeat(name)
        self.thread.start()

    def _heartbeats(self) -> None:
        while not self.stopped.wait(REPORTED_HEARTBEAT):
            for name in self.clients:
                self._heartbeat(name)

    def close(self) -> None:
        self.stopped.set()
        for client in self.clients.values():
            client.close()


# --- what happened to each server, from the event history ---------------------------------


class EventWatch:
    """Polls the controller's event history for servers going ACTIVE, ERROR or destroyed,
    and wakes whoever waits for one. An event's time is the controller's (same clock)."""

    def __init__(self, controller: Controller) -> None:
        self.http = controller.client()
        self.since = time.time() - 1.0
        self.seen: set[int] = set()
        self.times: dict[str, dict[str, float]] = {}
        self.faults: dict[str, str] = {}
        self.changed = threading.Condition()
        self.stopped = threading.Event()
        self.polls = 0
        self.failed: Exception | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _page(self, until_time: str | None) -> list[dict[str, Any]]:
        # httpx's type of a query value: a list of pairs is invariant in it.
        params: list[tuple[str, str | int | float | bool | None]] = [
            ("kind", kind) for kind in EVENT_KINDS]
        params += [("since", datetime.fromtimestamp(self.since).astimezone().isoformat()),
                   ("limit", EVENT_PAGE)]
        if until_time is not None:
            params.append(("until", until_time))
        response = self.http.get("/v2/admin/os-events", params=params)
        response.raise_for_status()
        self.polls += 1
        events: list[dict[str, Any]] = response.json()["events"]
        return events

    def poll(self) -> None:
        events, until_time = [], None
        while True:  # newest first; older pages while a page is full
            page = self._page(until_time)
            events += page
            if len(page) < EVENT_PAGE:
                break
            until_time = page[-1]["time"]
        newest = self.since
        with self.changed:
            for event in events:
                if event["id"] in self.seen:
                    continue
                self.seen.add(event["id"])
                moment = datetime.fromisoformat(event["time"]).timestamp()
                newest = max(newest, moment)
                self.times.setdefault(event["server"], {})[event["kind"]] = moment
                if event["kind"] == "server-error":
                    self.faults[event["server"]] = event["message"]
            # Events are timed when written and seen when committed: look back a little.
            self.since = max(self.since, newest - 2.0)
            self.changed.notify_all()

    def _run(self) -> None:
        try:
            while not self.stopped.wait(EVENT_POLL):
                self.poll()
        except (httpx.HTTPError, KeyError, ValueError) as error:
            with self.changed:
                self.failed = error
                self.changed.notify_all()

    def when(self, server: str, kind: str) -> float | None:
        return self.times.get(server, {}).get(kind)

    def wait(self, server: str, kinds: Sequence[str], timeout: float) -> str | None:
        """The first of `kinds` that happened to `server` (None: not within `timeout`)."""
        deadline = time.monotonic() + timeout
        with self.changed:
            while True:
                if self.failed is not None:
                    raise SystemExit(f"bench: reading the event history failed: "
                                     f"{self.failed!r}")
                done = next((k for k in kinds if self.when(server, k) is not None), None)
                left = deadline - time.monotonic()
                if done is not None or left <= 0:
                    return done
                self.changed.wait(left)

    def close(self) -> None:
        self.stopped.set()
        self.thread.join()
        self.http.close()


# --- clients ------------------------------------------------------------------------------


@dataclass
class Boot:
    uuid: str | None
    host: str | None
    sent: float  # time.time() when the POST was sent
    accepted_s: float | None  # POST to 202, by the client's perf_counter
    accepted_at: float  # time.time() of the answer
    refused: str | None = None


@dataclass
class Counter:
    total: int
    taken: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def take(self) -> int | None:
        with self.lock:
            if self.taken >= self.total:
                return None
            self.taken += 1
            return self.taken


def boot_one(http: httpx.Client, name: str) -> Boot:
    body = {"server": {"name": name, "flavorRef": FLAVOR, "networks": []}}
    sent, started = time.time(), time.perf_counter()
    response = http.post("/v2/admin/servers", json=body)
    elapsed = time.perf_counter() - started
    if response.status_code != 202:
        return Boot(None, None, sent, None, time.time(),
                    f"HTTP {response.status_code}: {response.text[:300]}")
    server = response.json()["server"]
    refused = server["fault"] if server["status"] == "ERROR" else None
    return Boot(server["id"], server["host"], sent, elapsed, time.time(), refused)


def run_clients(controller: Controller, clients: int,
                work: Callable[[httpx.Client], None]) -> None:
    """`work(http)` in `clients` threads, each with its own connection."""
    def client() -> None:
        with controller.client() as http:
            work(http)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


# --- phases -------------------------------------------------------------------------------


@dataclass
class Meters:
    controller: Controller
    agents: list[AgentHost]

    def read(self) -> tuple[float, float, float]:
        """(wall, controller CPU, agents' CPU), in seconds."""
        return (time.monotonic(), self.controller.cpu(),
                sum(process_cpu_seconds(a.process.pid) for a in self.agents if a.process))

    def since(self, start: tuple[float, float, float], idle_rate: float | None,
              boots: int) -> dict[str, Any]:
        wall, controller, agents = (now - then for now, then in zip(self.read(), start,
                                                                     strict=True))
        figures: dict[str, Any] = {
            "wall_s": round(wall, 2), "controller_cpu_s": round(controller, 2),
            "controller_cpu_ms_per_boot": round(controller * 1e3 / max(boots, 1), 2),
            "agents_cpu_s": round(agents, 2)}
        if idle_rate is not None:
            net = controller - idle_rate * wall
            figures["controller_cpu_ms_per_boot_net_of_idle"] = round(
                net * 1e3 / max(boots, 1), 2)
        return figures


def idle_rate(meters: Meters, seconds: float) -> dict[str, float]:
    start = meters.read()
    time.sleep(seconds)
    wall, controller, agents = (now - then for now, then in zip(meters.read(), start,
                                                                 strict=True))
    return {"seconds": round(wall, 1), "controller_cpu_per_s": round(controller / wall, 4),
            "agents_cpu_per_s": round(agents / wall, 4)}


def latency_run(controller: Controller, watch: EventWatch, meters: Meters, clients: int,
                boots: int, idle: float) -> dict[str, Any]:
    """Closed loop: boot, wait for ACTIVE, delete, again; then wait for every destroy."""
    counter = Counter(boots)
    done: list[Boot] = []
    deleted: list[str] = []
    lock = threading.Lock()

    def work(http: httpx.Client) -> None:
        while (number := counter.take()) is not None:
            boot = boot_one(http, f"lat{clients}-{number}")
            with lock:
                done.append(boot)
            if boot.uuid is None or boot.refused:
                continue
            if watch.wait(boot.uuid, ("server-active", "server-error"),
                          timeout=300) == "server-active":
                http.delete(f"/v2/admin/servers/{boot.uuid}").raise_for_status()
                with lock:
                    deleted.append(boot.uuid)

    start = meters.read()
    run_clients(controller, clients, work)
    placed = [b for b in done if b.uuid and not b.refused]
    for server in deleted:
        watch.wait(server, ("server-destroyed",), timeout=300)
    figures = meters.since(start, idle, len(placed))
    return {"clients": clients, "boots": boots, **summary(done, watch),
            **figures, "controller_cpu_includes": "a whole lifecycle per boot: create, "
            "spawned, delete, destroyed; and the phase's polls and heart-beats"}


def summary(boots: list[Boot], watch: EventWatch,
            agent_hosts: set[str] | None = None) -> dict[str, Any]:
    placed = [b for b in boots if b.uuid and not b.refused]
    watched = [b for b in placed if agent_hosts is None or b.host in agent_hosts]
    active = [(watch.when(b.uuid, "server-active") or 0) - b.sent for b in watched if b.uuid
              and watch.when(b.uuid, "server-active") is not None]
    errors = [b.refused for b in boots if b.refused]
    errors += [watch.faults[b.uuid] for b in placed if b.uuid in watch.faults]
    return {"placed": len(placed), "errors": len(errors), "first_error": next(iter(errors), None),
            "time_to_202": percentiles([b.accepted_s for b in placed if b.accepted_s]),
            "time_to_active": percentiles(active),
            "active": len(active), "expected_active": len(watched)}


def throughput_run(controller: Controller, watch: EventWatch, meters: Meters,
                   agent_hosts: set[str], clients: int, vms: int,
                   idle: float) -> dict[str, Any]:
    counter = Counter(vms)
    done: list[Boot] = []
    lock = threading.Lock()

    def work(http: httpx.Client) -> None:
        while (number := counter.take()) is not None:
            boot = boot_one(http, f"vm-{number}")
            with lock:
                done.append(boot)

    start = meters.read()
    first_sent = time.time()
    run_clients(controller, clients, work)
    last_202 = max(b.accepted_at for b in done)
    placing = meters.since(start, idle, vms)
    waiting = [b for b in done if b.uuid and not b.refused and b.host in agent_hosts]
    for boot in waiting:
        assert boot.uuid is not None
        watch.wait(boot.uuid, ("server-active", "server-error"), timeout=600)
    result = summary(done, watch, agent_hosts)
    last_active = max((watch.when(b.uuid, "server-active") or 0 for b in waiting
                       if b.uuid), default=last_202)
    return {"clients": clients, "vms": vms, **result,
            "on_agent_hosts": len(waiting), "on_reported_only_hosts": result["placed"]
            - len(waiting),
            "placements_per_s": round(result["placed"] / (last_202 - first_sent), 1),
            "active_per_s_on_agent_hosts": round(len(waiting) / (last_active - first_sent), 1)
            if waiting else None,
            "placing": {**placing, "controller_cpu_includes": "every placement and claim, "
                        "the spawned reports of the servers on agent hosts that came in "
                        "meanwhile, polls, heart-beats"},
            "until_active": meters.since(start, idle, vms)}


# --- one whole run ------------------------------------------------------------------------


def catalog(controller: Controller) -> None:
    controller.call("POST", "/v2/admin/os-pci-flavors",
                    json={"pci-flavor": {"name": PCI_FLAVOR, "description": "A100"}})
    controller.call("PUT", f"/v2/admin/os-pci-flavors/{PCI_FLAVOR}", json={
        "action": "set", "pci-flavor": {"vendor_id": "10de", "product_id": "20b5"}})
    controller.call("POST", "/v2/admin/flavors",
                    json={"flavor": {"name": FLAVOR, "vcpus": 1, "ram": 512, "disk": 0}})
    controller.call("POST", f"/v2/admin/flavors/{FLAVOR}/os-extra_specs", json={
        "extra_specs": {"pci_passthrough:pci_flavor": f"1:{PCI_FLAVOR}"}})


def hosts_up(controller: Controller, names: set[str]) -> bool:
    up = {h["name"] for h in controller.list_all("/v2/admin/os-hosts", "hosts")
          if h["status"] == "up"}
    return names <= up


def run(src: Path, options: argparse.Namespace) -> dict[str, Any]:
    hosts = options.hosts
    agents = min(options.agents if options.agents is not None else 40, hosts)
    names = [f"gpu-{n:04d}" for n in range(hosts)]
    with tempfile.TemporaryDirectory(prefix="passthru-bench-e2e-", dir="/var/tmp") as tmp:
        work = Path(tmp)
        load_before = os.getloadavg()
        controller = Controller(src, work, options.db_url)
        fleet: list[AgentHost] = []
        reported: ReportedHosts | None = None
        watch: EventWatch | None = None
        try:
            store = store_mode(controller)
            catalog(controller)
            for name in names[:agents]:
                token = controller.call("POST", f"/v2/admin/os-hosts/{name}/tokens",
                                        json={"token": {}})["token"]
                fleet.append(AgentHost.make(name, work / "hosts", controller.url, token))
            started = time.monotonic()
            say(f"starting {agents} agents")
            for agent in fleet:
                agent.start(src)

            def tails() -> str:
                return controller.tail() + "\n" + "\n".join(a.tail() for a in fleet[:3])

            until("every agent's host up", lambda: hosts_up(controller, set(names[:agents])),
                  max(120.0, 3.0 * agents), tails, every=1.0)
            agents_up_s = time.monotonic() - started
            meters = Meters(controller, fleet)
            watch = EventWatch(controller)
            idle_agents = idle_rate(meters, options.idle_seconds)
            say(f"latency runs with {options.latency_clients} clients")
            latency = [latency_run(controller, watch, meters, clients,
                                   options.latency_vms, idle_agents["controller_cpu_per_s"])
                       for clients in options.latency_clients]
            say(f"reporting {hosts - agents} hosts without an agent process")
            reported = ReportedHosts(controller, fleet[0].config, names[agents:])
            reported.report()
            until("every host up", lambda: hosts_up(controller, set(names)), 300, tails,
                  every=1.0)
            idle_fleet = idle_rate(meters, options.idle_seconds)
            say(f"throughput run: {options.vms} boots, {options.clients} clients")
            throughput = throughput_run(controller, watch, meters, {a.name for a in fleet},
                                        options.clients, options.vms,
                                        idle_fleet["controller_cpu_per_s"])
        finally:
            if watch is not None:
                watch.close()
            if reported is not None:
                reported.close()
            for agent in fleet:
                if agent.process is not None:
                    agent.process.terminate()
            for agent in fleet:
                if agent.process is not None:
                    try:
                        agent.process.wait(timeout=30)
                    except subprocess.TimeoutExpired:
                        agent.process.kill()
                        agent.process.wait()
            controller.stop()
        return {
            "store": store,
            "load_avg": {"before": [round(x, 2) for x in load_before],
                         "after": [round(x, 2) for x in os.getloadavg()]},
            "fleet": {"hosts": hosts, "gpus_per_host": GPUS_PER_HOST,
                      "agent_processes": agents, "hosts_per_agent_process": 1,
                      "reported_only_hosts": hosts - agents,
                      "agents_up_s": round(agents_up_s, 1),
                      "how": "one real passthru agent process per agent host (simulated "
                             "sysfs, libvirt test:/// driver); the other hosts reported and "
                             "heart-beaten by the bench through the agent API, their "
                             "servers placed but never spawned"},
            "idle": {"agents_only": idle_agents, "whole_fleet": idle_fleet},
            "latency": latency,
            "throughput": throughput,
            "event_polls": watch.polls if watch is not None else 0,
        }


# --- baselines ----------------------------------------------------------------------------


def in_process_fill(hosts: int, vms: int) -> dict[str, Any]:
    """bench/scheduler.py's durable fill of the same shape, in its own processes."""
    def part(*args: object) -> dict[str, Any]:
        output = subprocess.run([sys.executable, str(BENCH / "scheduler.py"), "--part",
                                 *map(str, args)], check=True, capture_output=True,
                                text=True).stdout
        result: dict[str, Any] = json.loads(output)
        return result

    with tempfile.TemporaryDirectory(prefix="passthru-bench-fill-") as directory:
        db = str(Path(directory) / "passthru.sqlite")
        part("populate", db, "gpu", hosts, vms)
        durable = part("durable", db)
    return {"what": "bench/scheduler.py: the index loaded from SQLite, then every server "
                    "placed and claimed (one transaction each) in one process; no HTTP, "
                    "no agents, no server rows written by a request",
            "hosts": hosts, "servers": vms,
            "placements_per_s": durable["placements_per_s_with_durable_claim"]}


def flatten(figures: Any, prefix: str = "") -> Iterator[tuple[str, float]]:
    if isinstance(figures, dict):
        for key, value in figures.items():
            yield from flatten(value, f"{prefix}.{key}" if prefix else key)
    elif isinstance(figures, list):
        for number, value in enumerate(figures):
            yield from flatten(value, f"{prefix}[{number}]")
    elif isinstance(figures, int | float) and not isinstance(figures, bool):
        yield prefix, float(figures)


RATIO_KEYS = ("time_to_202.p50", "time_to_202.p99", "time_to_active.p50",
              "time_to_active.p99", "placements_per_s", "controller_cpu_ms_per_boot",
              "wall_s")


def ratios(old: dict[str, Any], new: dict[str, Any]) -> dict[str, float]:
    before = dict(flatten({"latency": old["latency"], "throughput": old["throughput"]}))
    after = dict(flatten({"latency": new["latency"], "throughput": new["throughput"]}))
    return {key: round(before[key] / after[key], 2) for key in after
            if key in before and after[key] and key.endswith(RATIO_KEYS)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hosts", type=int, default=500)
    parser.add_argument("--agents", type=int, default=None,
                        help="real agent processes, one host each (default: up to 40)")
    parser.add_argument("--vms", type=int, default=5000, help="boots in the throughput run")
    parser.add_argument("--clients", type=int, default=8,
                        help="concurrent clients in the throughput run")
    parser.add_argument("--latency-clients", type=lambda s: [int(x) for x in s.split(",")],
                        default=[1, 16], help="comma-separated, one latency run each")
    parser.add_argument("--latency-vms", type=int, default=None,
                        help="boots per latency run (default: 30, at most --vms)")
    parser.add_argument("--idle-seconds", type=float, default=5.0,
                        help="how long the idle CPU rate is measured")
    parser.add_argument("--db-url", help="a PostgreSQL URL instead of SQLite in the data dir")
    parser.add_argument("--baseline", metavar="REV",
                        help="run again with this git revision's src, and give ratios")
    parser.add_argument("--no-in-process", action="store_true",
                        help="skip the in-process scheduler baseline")
    options = parser.parse_args()
    if options.latency_vms is None:
        options.latency_vms = min(30, options.vms)
    if options.vms > options.hosts * GPUS_PER_HOST:
        parser.error(f"--vms {options.vms} is more than the fleet's "
                     f"{options.hosts * GPUS_PER_HOST} GPUs")
    new = run(ROOT / "src", options)
    report: dict[str, Any] = {
        "benchmark": "boots through the REST API of a real passthru serve, real agents",
        "what": __doc__.split("Figures (", 1)[1].split("\n\nBaselines", 1)[0],
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "shape": {"hosts": options.hosts, "gpus_per_host": GPUS_PER_HOST,
                  "server": f"flavor {FLAVOR}: 1 vCPU, 512 MiB, one A100, no image, "
                            "no network", "weigher": "serve's default"},
        **new,
        "kubernetes_dra": dra.CITATION,
        "ratio_over_kubernetes_dra": dra.ratio(new["throughput"]["placements_per_s"]),
    }
    if not options.no_in_process:
        say("the in-process baseline (bench/scheduler.py's durable fill)")
        fill = in_process_fill(options.hosts, options.vms)
        report["in_process"] = fill
        report["ratio_rest_over_in_process_placements"] = round(
            new["throughput"]["placements_per_s"] / fill["placements_per_s"], 3)
    if options.baseline:
        with tempfile.TemporaryDirectory(prefix="passthru-baseline-") as tree:
            old = run(extract(options.baseline, Path(tree)), options)
        report["baseline"] = {"revision": options.baseline, **old}
        report["ratio_old_over_new"] = ratios(old, new)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
