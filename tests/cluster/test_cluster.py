"""A cluster of real processes: one `passthru serve` and three `passthru agent`s for
simulated hosts of different shapes (GPUs; E810 NICs; QuickAssist with a T4), driven
through the CLI the way an operator would.

VMs of every kind boot and land where their devices are; a SIGKILLed agent's host goes
down and is avoided; devices removed from and added to a live host's sysfs follow in the
controller; deleting everything leaves no device owned; the restarted agent's host comes
back up. libvirt's test:/// driver keeps its domains inside the agent process, so a
domain's end is read from what the agent tells the controller (its `server-destroyed`
answer) rather than from libvirt directly.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

import pytest

from passthru.errors import NoCapacityError
from passthru.host.domain_xml import DomainDevices, read_domain_devices
from passthru.pci.device import PHYSICAL_NETWORK
from passthru.sim import PROFILES, Card, HostProfile
from passthru.sim.hardware import A100, T4, DeviceModel
from tests.cli.runner import as_json, ok, run
from tests.cluster.hosts import AgentProcess, wait_for
from tests.support.live import LiveController

GPU_HOST = PROFILES["gpu-2numa"]
NIC_HOST = PROFILES["e810"]
QAT = PROFILES["qat"]
#: The host that is killed: QuickAssist VFs only it has, and a T4 that the GPU host has too.
QAT_T4 = replace(
    QAT, name="qat-t4",
    description=f"{QAT.description}; and a Tesla T4",
    cards=(*QAT.cards, Card(T4, "0000:e3:00.0", numa_node=1)),
    pool_attrs=("vendor_id", "product_id", "e.QAclass"),
    pci_information=(*QAT.pci_information, {"match": {"vendor_id": "10de"}, "extra": {}}),
)
HOT_ADDED = Card(A100, "0000:d0:00.0", numa_node=1, bound_to="vfio-pci")
WHOLE_PF = "0000:af:00.0"  # the E810 offered whole on physnet2
PF_PHYSNET1 = "0000:5e:00.0"  # whose VFs are on physnet1

T = TypeVar("T")

CATALOG = (
    "passthru pci-flavor-create a100",
    "passthru pci-flavor-update a100 set vendor_id=10de product_id=20b5",
    "passthru pci-flavor-create t4",
    "passthru pci-flavor-update t4 set vendor_id=10de product_id=1eb8",
    "passthru pci-flavor-create QA1",
    "passthru pci-flavor-update QA1 set e.QAclass=1",
    "passthru flavor-create m1.a100 --vcpus 2 --ram 1024",
    "passthru flavor-key m1.a100 set pci_passthrough:pci_flavor=2:a100",
    "passthru flavor-create m1.t4",
    "passthru flavor-key m1.t4 set pci_passthrough:pci_flavor=1:t4",
    "passthru flavor-create m1.qa",
    "passthru flavor-key m1.qa set pci_passthrough:pci_flavor=1:QA1",
    "passthru flavor-create m1.small",
    "passthru net-create prod --physical-network physnet1 --segmentation-id 100",
    "passthru net-create ext --physical-network physnet2",
)


@dataclass
class Cluster:
    """The three hosts, by role; the controller is reached through PASSTHRU_URL."""

    gpu: AgentProcess
    nic: AgentProcess
    qat: AgentProcess

    @property
    def agents(self) -> tuple[AgentProcess, ...]:
        return self.gpu, self.nic, self.qat

    def wait(self, what: str, check: Callable[[], T | None]) -> T:
        return wait_for(what, check, self.agents)


@pytest.fixture
def cluster(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Cluster]:
    # Pack (fullest host first) is named because the test relies on it: see the kill.
    # The agents beat every second; ten missed beats, not three, mark a host down, so a
    # busy machine's slow beat does not, and the killed agent's host is down within the
    # wait (the timeout, and a sweep every quarter of it).
    controller = LiveController(tmp_path / "data",
                                options=("--heartbeat-timeout", "10", "--weigher", "pack"))
    controller.start()
    monkeypatch.setenv("PASSTHRU_URL", controller.url)
    monkeypatch.setenv("PASSTHRU_TOKEN", controller.admin_token)
    agents = []
    try:
        for profile in (GPU_HOST, NIC_HOST, QAT_T4):
            token = ok(f"passthru host-token sim-{profile.name}").stdout.strip()
            agent = AgentProcess(profile, tmp_path / "hosts", controller.url, token)
            agents.append(agent)
            agent.start()
        yield Cluster(*agents)
    finally:
        for agent in agents:
            agent.stop()
        controller.stop()


def host_status() -> dict[str, str]:
    return {host["name"]: host["status"] for host in as_json("passthru host-list")}


def devices_of(host: str) -> dict[str, dict[str, Any]]:
    rows = as_json(f"passthru pci-device-list --host {host}")
    return {row["device"]["address"]: row["device"] for row in rows}


def events(kind: str, **filters: str) -> list[dict[str, Any]]:
    options = "".join(f" --{key} {value}" for key, value in filters.items())
    return as_json(f"passthru events --kind {kind}{options} --limit 1000")


def claimed(server: dict[str, Any]) -> list[dict[str, Any]]:
    return [device for request in server["pci_requests"] for device in request["devices"]]


def addresses(profile: HostProfile, model: DeviceModel) -> set[str]:
    return {card.address for card in profile.cards if card.model == model}


def boot(cluster: Cluster, name: str, flavor: str, nic: str | None = None) -> dict[str, Any]:
    """Boot and wait for ACTIVE; an ERROR fails at once with its fault."""
    ok(f"passthru boot {name} --flavor {flavor}" + (f" --nic {nic}" if nic else ""))

    def active() -> dict[str, Any] | None:
        server = as_json(f"passthru show {name}")
        assert server["status"] != "ERROR", f"{name}: {server['fault']}"
        return server if server["status"] == "ACTIVE" else None

    return cluster.wait(f"server {name} ACTIVE", active)


def hosts_up(cluster: Cluster) -> None:
    cluster.wait("every host up", lambda: all(
        host_status().get(agent.name) == "up" for agent in cluster.agents))


@pytest.mark.slow
def test_three_agents_boot_kill_remove_and_delete_everything(cluster: Cluster) -> None:
    hosts_up(cluster)
    for line in CATALOG:
        ok(line)

    # Every kind of VM lands on the one host that has its devices.
    servers = {
        "vm-a100": boot(cluster, "vm-a100", "m1.a100"),
        "vm-qa": boot(cluster, "vm-qa", "m1.qa"),
        "vm-direct": boot(cluster, "vm-direct", "m1.small", "net-id=prod,vnic-type=direct"),
        "vm-macvtap": boot(cluster, "vm-macvtap", "m1.small",
                           "net-id=prod,vnic-type=macvtap"),
        "vm-pf": boot(cluster, "vm-pf", "m1.small", "net-id=ext,vnic-type=direct-physical"),
    }
    where = {name: server["host"] for name, server in servers.items()}
    assert where == {"vm-a100": cluster.gpu.name, "vm-qa": cluster.qat.name,
                     "vm-direct": cluster.nic.name, "vm-macvtap": cluster.nic.name,
                     "vm-pf": cluster.nic.name}
    gpus = {d["address"] for d in claimed(servers["vm-a100"])}
    assert len(gpus) == 2 and gpus <= addresses(GPU_HOST, A100)
    assert [d["tags"]["e.QAclass"] for d in claimed(servers["vm-qa"])] == ["1"]
    assert [d["address"] for d in claimed(servers["vm-pf"])] == [WHOLE_PF]
    vfs = [vf["address"] for name in ("vm-direct", "vm-macvtap")
           for vf in claimed(servers[name])]
    for name in ("vm-direct", "vm-macvtap"):
        [vf] = claimed(servers[name])
        assert (vf["dev_type"], vf["parent_addr"]) == ("type-VF", PF_PHYSNET1), name
        assert vf["tags"][PHYSICAL_NETWORK] == "physnet1"
        port = as_json(f"passthru port-show {servers[name]['ports'][0]}")
        assert port["binding:host_id"] == cluster.nic.name
        assert port["binding:profile"]["pci_slot"] == vf["address"]
        # The NIC host's agent set the VF up (simulated netlink): the port's MAC and VLAN.
        setting = cluster.nic.vf_state()[vf["address"]]
        assert (setting["mac"], setting["vlan"]) == (port["mac_address"], 100), name
    # The agents answered with the domain XML they defined: it holds the claimed devices
    # (a macvtap rides on its VF's netdev instead).
    for name, server in servers.items():
        xml = as_json(f"passthru show {name}")["domain_xml"]
        devices = [d["address"] for d in claimed(server) if name != "vm-macvtap"]
        netdevs = [d["netdev"] for d in claimed(server) if name == "vm-macvtap"]
        assert read_domain_devices(xml) == DomainDevices(tuple(devices), tuple(netdevs)), name

    # A killed agent's host goes down; VMs avoid it.
    cluster.qat.kill()
    cluster.wait("the killed agent's host down",
                 lambda: host_status()[cluster.qat.name] == "down")
    assert events("host-down", host=cluster.qat.name)[0]["message"].startswith(
        "no heart-beat since")
    refused = run("passthru boot vm-qa2 --flavor m1.qa")
    assert refused.exit_code == NoCapacityError.exit_code
    assert "could not be placed: no host has 1 free device of pci flavor QA1" in refused.stderr
    assert as_json("passthru show vm-qa2")["status"] == "ERROR"
    # Under pack the down host's single free T4 would come before the GPU host's two.
    servers["vm-t4"] = boot(cluster, "vm-t4", "m1.t4")
    assert servers["vm-t4"]["host"] == cluster.gpu.name

    # Devices taken out of a live host: a free one goes, a held one is kept and flagged.
    held = min(gpus)
    free = min(addresses(GPU_HOST, A100) - gpus)
    shrunk = replace(GPU_HOST, cards=tuple(c for c in GPU_HOST.cards
                                           if c.address not in (held, free)))
    cluster.gpu.build(shrunk)
    gpu_devices = cluster.wait(
        "the removed GPUs reported",
        lambda: (found := devices_of(cluster.gpu.name)) and found[held]["missing"] and found)
    assert gpu_devices[free]["status"] == "removed"
    assert (gpu_devices[held]["status"], gpu_devices[held]["owner"]) == (
        "allocated", servers["vm-a100"]["id"])
    assert [e["device"] for e in events("device-removed", host=cluster.gpu.name)] == [free]
    assert [e["device"] for e in events("device-missing", host=cluster.gpu.name)] == [held]
    # ...and a hot-added one appears.
    cluster.gpu.build(replace(shrunk, cards=(*shrunk.cards, HOT_ADDED)))
    cluster.wait("the hot-added GPU offered",
                 lambda: devices_of(cluster.gpu.name).get(HOT_ADDED.address, {})
                 .get("status") == "available")

    # Delete everything, the down host's VM too: no device stays owned.
    for name in [*servers, "vm-qa2"]:
        ok(f"passthru delete {name}")
    assert as_json("passthru list") == []
    every_device = as_json("passthru pci-device-list")
    assert [row["device"]["address"] for row in every_device
            if row["device"]["owner"] is not None] == []
    assert devices_of(cluster.gpu.name)[held]["status"] == "removed"
    # The live hosts' agents remove the domains; the down host's waits for its agent.
    live = {name: server["id"] for name, server in servers.items() if name != "vm-qa"}

    def destroyed() -> set[str]:
        return {e["server"] for e in events("server-destroyed")}

    cluster.wait("the live hosts' domains removed", lambda: set(live.values()) <= destroyed())
    assert servers["vm-qa"]["id"] not in destroyed()
    # ...and the NIC host's agent reset the VFs.
    state = cluster.nic.vf_state()
    assert {(state[vf]["mac"], state[vf]["vlan"]) for vf in vfs} == {("00:00:00:00:00:00", 0)}

    # The restarted agent brings its host back up and removes what was deleted meanwhile.
    cluster.qat.start()
    hosts_up(cluster)
    ups_and_downs = as_json(f"passthru events --host {cluster.qat.name} --kind host-down "
                            "--kind host-up")
    assert [e["kind"] for e in ups_and_downs][:2] == ["host-up", "host-down"]
    cluster.wait("the down host's domain removed",
                 lambda: servers["vm-qa"]["id"] in destroyed())
    assert {row["device"]["status"] for row in as_json("passthru pci-device-list")} == {
        "available", "removed"}
