"""Several `passthru serve` replicas on one store, a scarce fleet reported to them, clients
booting and deleting VMs through all of them, and the check of what the store recorded.

The fleet is scarce on purpose (fewer GPUs and VFs than the VMs that want them, PFs
blocked by any VF in use), so that replicas race for the same devices and many boots end
in ERROR.
"""

from __future__ import annotations

import itertools
import random
import shutil
import threading
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx

from passthru.pci.device import DevType, PciDevice
from tests.pci.builders import gpu, nic
from tests.support.live import LiveController

PROJECT = "demo"
NETWORKS = {"net1": "physnet1", "net2": "physnet2"}
CLAIM_KINDS = ("device-claimed", "device-freed")
#: The most events one listing returns (the API's limit).
EVENT_LIMIT = 10_000
#: Boots and deletes queue behind each other on 2 cores: generous, never a pass criterion.
TIMEOUT = 120.0


def host_devices() -> list[PciDevice]:
    """One host: two PFs with 2 VFs each per physical network, and 2 GPUs.

    Few VFs per PF, so that a PF often has just one VF in use: that is when a free and a
    claim of sibling VFs race over whether the PF is blocked."""
    return [*nic(0, 2, "physnet1"), *nic(1, 2, "physnet1"), *nic(2, 2, "physnet2", numa=1),
            *nic(3, 2, "physnet2", numa=1), gpu(0), gpu(1, numa=1)]


def relatives() -> dict[str, set[str]]:
    """Per address of a host: the devices that may not be held at the same time (a PF's
    VFs, a VF's PF)."""
    related: dict[str, set[str]] = {}
    for device in host_devices():
        if device.dev_type is DevType.VF and device.parent_addr:
            related.setdefault(device.address, set()).add(device.parent_addr)
            related.setdefault(device.parent_addr, set()).add(device.address)
    return related


def what(device: dict[str, Any]) -> str:
    """A device as a VM kind names it: `gpu`, `vf:physnet1`, `pf:physnet2`."""
    if device["dev_type"] == DevType.PCI:
        return "gpu"
    kind = "pf" if device["dev_type"] == DevType.PF else "vf"
    return f"{kind}:{device['tags']['e.physical_network']}"


@dataclass(frozen=True, slots=True)
class Kind:
    """A kind of VM: its flavor and, if it has one, the vnic type of its SR-IOV nic."""

    name: str
    flavor: str
    vnic_type: str | None = None
    gpus: int = 0


KINDS = (Kind("vf", "m1.small", "direct"), Kind("gpu", "m1.gpu", gpus=1),
         Kind("gpu+vf", "m1.gpu", "direct", gpus=1), Kind("pf", "m1.small", "direct-physical"))
WEIGHTS = (40, 20, 25, 15)


@dataclass(frozen=True, slots=True)
class Boot:
    """A boot's answer as a client saw it."""

    server: str
    kind: str
    status: str
    #: (host, address) of every device it got; empty for a boot in ERROR.
    devices: frozenset[tuple[str, str]]


def check_answer(server: dict[str, Any], kind: Kind, network: str | None) -> Boot:
    """A boot's answer is all or nothing: BUILD on a host with exactly the devices the
    kind asks for, claimed for it; or ERROR saying why, with no host and no device."""
    got = [(request, device) for request in server["pci_requests"]
           for device in request["devices"]]
    if server["status"] == "ERROR":
        assert "no host" in server["fault"], server["fault"]
        assert server["host"] is None and not got, server
        return Boot(server["id"], kind.name, "ERROR", frozenset())
    assert server["status"] == "BUILD", server
    wants = ["gpu"] * kind.gpus
    if kind.vnic_type is not None and network is not None:
        wants.append(f"{'pf' if kind.vnic_type == 'direct-physical' else 'vf'}:"
                     f"{NETWORKS[network]}")
    assert sorted(what(device) for _, device in got) == sorted(wants), server
    for request in server["pci_requests"]:
        assert len(request["devices"]) == request["request"]["count"], server
    for _, device in got:
        assert (device["status"], device["owner"]) == ("claimed", server["id"]), server
    return Boot(server["id"], kind.name, "BUILD",
                frozenset((server["host"], device["address"]) for _, device in got))


class Cluster:
    """`replicas` controllers on one database, all answering to one admin token: the
    first one writes it, the others find it in their data dirs (copied, mode kept) and in
    the shared store."""

    def __init__(self, root: Path, db_url: str, replicas: int) -> None:
        # The churn is a member's flood on purpose: no rate limit.
        self.controllers = [LiveController(root / f"replica-{n}", db_url,
                                           ("--rate-limit", "0"))
                            for n in range(replicas)]

    def start(self) -> None:
        first, *others = self.controllers
        first.start()
        for controller in others:
            controller.data_dir.mkdir(parents=True)
            shutil.copy2(first.data_dir / "admin-token", controller.data_dir / "admin-token")
            controller.start()

    def stop(self) -> None:
        for controller in self.controllers:
            controller.stop()

    @property
    def admin_token(self) -> str:
        return self.controllers[0].admin_token

    def client(self, replica: int, token: str, tenant: str) -> httpx.Client:
        url = f"{self.controllers[replica % len(self.controllers)].url}/v2/{tenant}"
        return httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"},
                            timeout=TIMEOUT)

    @contextmanager
    def admin(self, replica: int = 0) -> Iterator[httpx.Client]:
        with self.client(replica, self.admin_token, "admin") as client:
            yield client


def ok(response: httpx.Response) -> Any:
    assert response.is_success, f"{response.request.method} {response.request.url}: " \
                                f"{response.status_code} {response.text}"
    return response.json() if response.content else None


def create_catalog(admin: httpx.Client) -> None:
    """PCI flavor, flavors and networks, made once through one replica."""
    ok(admin.post("/os-pci-flavors", json={"pci-flavor": {"name": "gpu",
                                                         "vendor_id": "10de"}}))
    ok(admin.post("/flavors", json={"flavor": {"name": "m1.small"}}))
    ok(admin.post("/flavors", json={"flavor": {"name": "m1.gpu"}}))
    ok(admin.post("/flavors/m1.gpu/os-extra_specs",
                  json={"extra_specs": {"pci_passthrough:pci_flavor": "1:gpu"}}))
    for vlan, (name, physnet) in enumerate(NETWORKS.items(), 100):
        ok(admin.post("/networks", json={"network": {
            "name": name, "physical_network": physnet, "segmentation_id": vlan}}))


class Agents:
    """The hosts' agents: a full inventory report each, then heart-beats and (every few
    rounds) the same inventory again, through every replica in turn, until stopped."""

    def __init__(self, cluster: Cluster, hosts: int) -> None:
        self.cluster = cluster
        self.hosts = [f"compute-{n}" for n in range(hosts)]
        self.inventory = {"devices": [asdict(device) for device in host_devices()]}
        with cluster.admin(1) as admin:
            self.tokens = {host: ok(admin.post(f"/os-hosts/{host}/tokens"))["token"]
                           for host in self.hosts}
        self.stop = threading.Event()

    def report(self, host: str, replica: int) -> None:
        with self.cluster.client(replica, self.tokens[host], "agent") as agent:
            path = f"/hosts/{host}"
            ok(agent.put(f"{path}/inventory", json=self.inventory))
            ok(agent.post(f"{path}/heartbeat"))

    def run(self) -> None:
        for beat in itertools.count():
            for number, host in enumerate(self.hosts):
                replica = beat + number
                if beat % 5 == 0:
                    self.report(host, replica)
                else:
                    with self.cluster.client(replica, self.tokens[host], "agent") as agent:
                        ok(agent.post(f"/hosts/{host}/heartbeat"))
            if self.stop.wait(1.0):
                return


@dataclass
class Churn:
    """`clients` threads, client n talking to replica n mod replicas, booting VMs of the
    KINDS mix until `boots` were attempted. Each keeps at most `hold` VMs, deleting a
    random one when over; a VM in ERROR is deleted at once; at the end each deletes what
    it still has."""

    cluster: Cluster
    token: str
    boots: int
    clients: int
    hold: int
    answers: list[Boot] = field(default_factory=list)
    # next() on itertools.count is atomic under the GIL: each boot number is handed out once.
    _tickets: Iterator[int] = field(default_factory=itertools.count)

    def run(self) -> list[Boot]:
        with ThreadPoolExecutor(self.clients) as pool:
            for done in [pool.submit(self._client, n) for n in range(self.clients)]:
                done.result()
        return self.answers

    def _client(self, number: int) -> None:
        rng = random.Random(number)
        live: list[str] = []
        with self.cluster.client(number, self.token, PROJECT) as api:
            while (ticket := next(self._tickets)) < self.boots:
                kind = rng.choices(KINDS, WEIGHTS)[0]
                network = rng.choice(list(NETWORKS)) if kind.vnic_type else None
                nics = ([{"uuid": network, "vnic_type": kind.vnic_type}]
                        if network is not None else [])
                server = ok(api.post("/servers", json={"server": {
                    "name": f"vm-{ticket}", "flavorRef": kind.flavor, "networks": nics}}))
                answer = check_answer(server["server"], kind, network)
                self.answers.append(answer)
                live.append(answer.server)
                if answer.status == "ERROR":
                    ok(api.delete(f"/servers/{live.pop()}"))
                while len(live) > self.hold:
                    ok(api.delete(f"/servers/{live.pop(rng.randrange(len(live)))}"))
            for server in live:
                ok(api.delete(f"/servers/{server}"))


@dataclass
class History:
    """The claims and frees the store recorded, replayed in event id order."""

    #: Everything found wrong, as sentences.
    problems: list[str] = field(default_factory=list)
    #: Per server, the (host, address) of every device it was ever given.
    claimed: dict[str, set[tuple[str, str]]] = field(default_factory=dict)
    #: Who holds what after the last event.
    holders: dict[tuple[str, str], str] = field(default_factory=dict)
    events: int = 0


def claim_events(admin: httpx.Client, hosts: list[str]) -> list[dict[str, Any]]:
    """Every device-claimed and device-freed event, host by host (each listing must hold
    all of its host's: the API returns at most EVENT_LIMIT)."""
    events: list[dict[str, Any]] = []
    for host in hosts:
        listed = ok(admin.get("/os-events", params={
            "host": host, "kind": list(CLAIM_KINDS), "limit": EVENT_LIMIT}))["events"]
        assert len(listed) < EVENT_LIMIT, f"{host}: more events than one listing holds"
        events += listed
    return events


def replay(events: list[dict[str, Any]]) -> History:
    """A device is never claimed while someone holds it, never freed by anyone but its
    holder, and never held at the same time as one of its PF/VF relatives."""
    related = relatives()
    history = History(events=len(events))
    for event in sorted(events, key=lambda e: e["id"]):
        host, address, server = event["host"], event["device"], event["server"]
        device = (host, address)
        holder = history.holders.get(device)
        if event["kind"] == "device-freed":
            if holder != server:
                history.problems.append(f"event {event['id']}: {server} freed {device}, "
                                        f"held by {holder}")
            history.holders.pop(device, None)
            continue
        if holder is not None:
            history.problems.append(f"event {event['id']}: {device} claimed by {server} "
                                    f"while held by {holder}")
        for relative in related.get(address, ()):
            if (host, relative) in history.holders:
                history.problems.append(
                    f"event {event['id']}: {device} claimed by {server} while its relative "
                    f"{relative} is held by {history.holders[(host, relative)]}")
        history.holders[device] = server
        history.claimed.setdefault(server, set()).add(device)
    return history


def outcomes(boots: list[Boot]) -> dict[str, Counter[str]]:
    """Per kind of VM, how many boots ended BUILD and how many ERROR."""
    tally: dict[str, Counter[str]] = {kind.name: Counter() for kind in KINDS}
    for boot in boots:
        tally[boot.kind][boot.status] += 1
    return tally
