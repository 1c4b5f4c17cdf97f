"""The host agent against the controller (in-process): full report, deltas, hot-add,
removal of a free device, a stale base generation, a rejected token."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest

from passthru.host.agent import Agent
from passthru.host.config import host_config_from, offered, resources
from passthru.host.link import HttpLink, LinkError
from passthru.pci.device import DeviceStatus
from passthru.sim import PROFILES, HostProfile, build_sysfs
from passthru.sim.hardware import A100
from passthru.sim.profile import Card
from tests.controller.conftest import Api

GPU_HOST = PROFILES["gpu-2numa"]
EXTRA_GPU = Card(A100, "0000:d0:00.0", numa_node=1, bound_to="vfio-pci")
#: `gpu_host`: (re)writes the host's sysfs as a profile has it, in one place; gives its root.
GpuHost = Callable[[HostProfile], Path]


def agent_for(api: Api, host: str, root: Path, profile: HostProfile,
              token: str | None = None) -> Agent:
    config = host_config_from({
        "host": host, "sysfs_root": str(root), "pool_attrs": list(profile.pool_attrs),
        "pci_information": [dict(entry) for entry in profile.pci_information]})
    api.client.headers["Authorization"] = f"Bearer {token or api.agent(host)}"
    link = HttpLink(api.client, host)
    return Agent(scan=lambda: offered(config), link=link,
                 pool_attrs=config.pool_attrs)


def devices_of(api: Api, host: str) -> dict[str, DeviceStatus]:
    body = api.ok("GET", "/v2/admin/os-pci-devices", params={"host": host})
    return {row["device"]["address"]: DeviceStatus(row["device"]["status"])
            for row in body["pci_devices"] if row["host"] == host}


def gpu_addresses(profile: HostProfile) -> set[str]:
    return {card.address for card in profile.cards if card.model.vendor_id == "10de"}


@pytest.fixture
def gpu_host(tmp_path: Path) -> GpuHost:
    root = tmp_path / "sys"

    def build(profile: HostProfile) -> Path:
        return build_sysfs(profile, root)

    return build


def test_full_report_then_hot_add_and_free_removal(api: Api, gpu_host: GpuHost) -> None:
    root = gpu_host(GPU_HOST)
    agent = agent_for(api, "compute-1", root, GPU_HOST)
    assert agent.report_once() is None  # the first report is complete
    assert devices_of(api, "compute-1") == {a: DeviceStatus.AVAILABLE
                                            for a in gpu_addresses(GPU_HOST)}
    # Nothing changed: nothing but a heart-beat is sent.
    assert not agent.report_once()

    grown = replace(GPU_HOST, cards=(*GPU_HOST.cards, EXTRA_GPU))
    gpu_host(grown)
    delta = agent.report_once()
    assert delta is not None and [d.address for d in delta.added] == [EXTRA_GPU.address]
    assert devices_of(api, "compute-1")[EXTRA_GPU.address] is DeviceStatus.AVAILABLE

    first_gpu = min(gpu_addresses(GPU_HOST))
    shrunk = replace(grown, cards=tuple(c for c in grown.cards if c.address != first_gpu))
    gpu_host(shrunk)
    delta = agent.report_once()
    assert delta is not None and delta.removed == [first_gpu]
    # A free device that disappears is removed, not offered.
    assert devices_of(api, "compute-1").get(first_gpu, DeviceStatus.REMOVED) is DeviceStatus.REMOVED
    stats = api.ok("GET", "/v2/admin/os-pci-stats")["pci_stats"]
    assert sum(p["free"] for p in stats if p["host"] == "compute-1") == len(gpu_addresses(shrunk))


def test_a_stale_delta_falls_back_to_a_full_report(api: Api, gpu_host: GpuHost) -> None:
    root = gpu_host(GPU_HOST)
    agent = agent_for(api, "compute-1", root, GPU_HOST)
    agent.report_once()
    # Another report moves the controller's generation on behind this agent's back.
    other = agent_for(api, "compute-1", root, GPU_HOST)
    grown = replace(GPU_HOST, cards=(*GPU_HOST.cards, EXTRA_GPU))
    gpu_host(grown)
    other.report_once()
    # This agent's delta (one GPU gone) builds on a generation the store has left: it is
    # refused and the agent reports in full, so the extra GPU it never saw goes away too.
    first_gpu = min(gpu_addresses(GPU_HOST))
    gpu_host(replace(GPU_HOST, cards=tuple(c for c in GPU_HOST.cards if c.address != first_gpu)))
    assert agent.report_once() is None
    held = devices_of(api, "compute-1")
    assert held.get(EXTRA_GPU.address, DeviceStatus.REMOVED) is DeviceStatus.REMOVED
    assert held.get(first_gpu, DeviceStatus.REMOVED) is DeviceStatus.REMOVED


def test_a_controller_copy_that_differs_is_made_true_on_heartbeat(api: Api,
                                                                   gpu_host: GpuHost) -> None:
    root = gpu_host(GPU_HOST)
    agent = agent_for(api, "compute-1", root, GPU_HOST)
    agent.report_once()
    other = agent_for(api, "compute-1", root, GPU_HOST)
    gpu_host(replace(GPU_HOST, cards=(*GPU_HOST.cards, EXTRA_GPU)))
    other.report_once()
    gpu_host(GPU_HOST)
    # Nothing changed in this agent's view, but the heart-beat shows the controller holds
    # another generation: the agent reports in full and the extra GPU goes away.
    assert agent.report_once() is None
    assert devices_of(api, "compute-1").get(EXTRA_GPU.address,
                                            DeviceStatus.REMOVED) is DeviceStatus.REMOVED


def test_an_agent_token_reports_only_its_own_host(api: Api, gpu_host: GpuHost) -> None:
    root = gpu_host(GPU_HOST)
    agent = agent_for(api, "compute-2", root, GPU_HOST, token=api.agent("compute-1"))
    with pytest.raises(LinkError, match="compute-2"):
        agent.report_once()
    assert devices_of(api, "compute-2") == {}


def test_the_agent_reports_the_hosts_resources_and_a_change_in_full(api: Api,
                                                                    gpu_host: GpuHost) -> None:
    root = gpu_host(GPU_HOST)
    settings: dict[str, object] = {"host": "compute-1", "sysfs_root": str(root),
                                   "pci_information": [dict(e) for e in GPU_HOST.pci_information]}
    agent = agent_for(api, "compute-1", root, GPU_HOST)
    agent.resources = lambda: resources(host_config_from(settings))
    assert agent.report_once() is None

    def capacity() -> tuple[int | None, int | None, int]:
        host = api.ok("GET", "/v2/admin/os-hosts/compute-1")["host"]
        return host["vcpus_capacity"], host["ram_mb_capacity"], host["vcpus_used"]

    assert capacity() == (64 * 4, 2 * 262144 - 512, 0)
    assert not agent.report_once()  # nothing changed: no report at all
    settings["reserved_cpus"] = [0, 1, 2, 3]
    assert agent.report_once() is None  # the devices did not change, the resources did
    assert capacity() == (60 * 4, 2 * 262144 - 512, 0)


def test_an_agent_without_resources_leaves_the_host_uncounted(api: Api, gpu_host: GpuHost) -> None:
    agent = agent_for(api, "compute-1", gpu_host(GPU_HOST), GPU_HOST)
    agent.report_once()
    host = api.ok("GET", "/v2/admin/os-hosts/compute-1")["host"]
    assert (host["vcpus_capacity"], host["ram_mb_capacity"], host["disk_gb_capacity"]) == (
        None, None, None)


def test_impossible_resources_are_refused_with_the_reason(api: Api) -> None:
    token = api.agent("compute-1")
    resources_body = {"cpus": [{"id": 0, "node": 0, "socket": 0}],
                      "numa": [{"id": 0, "memory_mb": 1024}], "reserved_cpus": [7]}
    answer = api.call("PUT", "/v2/agent/hosts/compute-1/inventory", token,
                      json={"devices": [], "resources": resources_body})
    assert 400 <= answer.status_code < 500
    assert "reserved CPU 7 is not one of the host's CPUs" in answer.text
