"""CPU, NUMA and disk discovery: simulated sysfs trees, this machine's own /sys, and the
host config's ratios and reservations turned into resources."""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from passthru.host.config import HostConfigError, host_config_from, resources
from passthru.host.sysfs import DiscoveryError
from passthru.host.topology import disk_gb, format_cpulist, parse_cpulist, read_topology
from passthru.pci.resources import Cpu
from passthru.sim import PROFILES, HostProfile, Topology

SimSysfs = Callable[[str | HostProfile], Path]


def test_the_gpu_host_has_two_sockets_of_one_node_each(sim_sysfs: SimSysfs) -> None:
    topology = read_topology(sim_sysfs("gpu-2numa"))
    assert topology is not None
    assert len(topology.cpus) == 64
    assert topology.cpus[0] == Cpu(0, node=0, socket=0)
    assert topology.cpus[40] == Cpu(40, node=1, socket=1)
    assert [(n.id, n.memory_mb, dict(n.hugepages)) for n in topology.numa] == [
        (0, 262144, {2048: 0, 1048576: 16}), (1, 262144, {2048: 0, 1048576: 16})]


def test_sub_numa_clustering_puts_two_nodes_on_one_socket(sim_sysfs: SimSysfs) -> None:
    snc = HostProfile("snc", "", (), topology=Topology(sockets=1, nodes_per_socket=2,
                                                       cpus_per_node=4, memory_mb_per_node=2048))
    found = resources(host_config_from({"sysfs_root": str(sim_sysfs(snc))}))
    assert found is not None
    assert found.socket_of() == {0: 0, 1: 0}
    assert [cpu.node for cpu in found.cpus] == [0, 0, 0, 0, 1, 1, 1, 1]
    assert found.memory_mb == 4096


def test_every_profile_reports_the_nodes_its_cards_sit_on(sim_sysfs: SimSysfs) -> None:
    for name in ("x710-2x", "mixed", "qat"):
        topology = read_topology(sim_sysfs(name))
        assert topology is not None
        nodes = {node.id for node in topology.numa}
        cards = {c.numa_node for c in PROFILES[name].cards if c.numa_node is not None}
        assert cards <= nodes


def test_a_card_on_a_node_the_host_lacks_is_refused() -> None:
    card = PROFILES["x710-2x"].cards[-1]
    with pytest.raises(ValueError, match=r"on NUMA node 1, but the host has nodes 0-0"):
        HostProfile("small", "", (card,), topology=Topology(sockets=1))


def _cpulist(path: Path) -> list[int]:
    cpus: list[int] = []
    for part in path.read_text().strip().split(","):
        low, _, high = part.partition("-")
        cpus += range(int(low), int(high or low) + 1)
    return cpus


def test_this_machines_own_sys_is_read_as_the_kernel_shows_it() -> None:
    system = Path("/sys/devices/system")
    topology = read_topology(Path("/sys"))
    assert topology is not None
    online = _cpulist(system / "cpu" / "online")
    assert [cpu.id for cpu in topology.cpus] == online
    assert [cpu.socket for cpu in topology.cpus] == [
        max(0, int((system / "cpu" / f"cpu{n}" / "topology" / "physical_package_id")
                   .read_text())) for n in online]
    nodes = sorted(int(p.name[4:]) for p in (system / "node").glob("node[0-9]*"))
    assert [node.id for node in topology.numa] == nodes
    for node in topology.numa:
        meminfo = (system / "node" / f"node{node.id}" / "meminfo").read_text()
        total_kb = int(re.search(r"MemTotal:\s+(\d+) kB", meminfo).group(1))  # type: ignore[union-attr]
        assert node.memory_mb == total_kb // 1024
        for cpu in _cpulist(system / "node" / f"node{node.id}" / "cpulist"):
            assert topology.cpus[online.index(cpu)].node == node.id
    stat = os.statvfs("/")
    assert disk_gb(Path("/")) == stat.f_blocks * stat.f_frsize // 2**30


def test_a_tree_without_cpus_reports_no_resources(tmp_path: Path) -> None:
    (tmp_path / "bus" / "pci" / "devices").mkdir(parents=True)
    assert read_topology(tmp_path) is None
    assert resources(host_config_from({"sysfs_root": str(tmp_path)})) is None


def test_a_broken_topology_is_an_error_that_names_the_file(sim_sysfs: SimSysfs) -> None:
    root = sim_sysfs("x710-2x")
    meminfo = root / "devices" / "system" / "node" / "node1" / "meminfo"
    meminfo.write_text("nothing here\n")
    with pytest.raises(DiscoveryError, match=f"{meminfo} has no 'Node 1 MemTotal"):
        read_topology(root)
    shutil.rmtree(root / "devices" / "system" / "node")
    with pytest.raises(DiscoveryError, match="needs a kernel with NUMA support"):
        read_topology(root)


def test_cpu_lists_parse_and_print_the_kernels_way() -> None:
    assert parse_cpulist("0-3,8,10-11\n", "x") == [0, 1, 2, 3, 8, 10, 11]
    assert parse_cpulist("\n", "x") == []
    assert format_cpulist([11, 0, 1, 2, 3, 8, 10]) == "0-3,8,10-11"
    with pytest.raises(DiscoveryError, match=r"cpulist: 'zero' is not a CPU list"):
        parse_cpulist("zero", "cpulist")
    with pytest.raises(DiscoveryError, match="runs backwards"):
        parse_cpulist("3-1", "cpulist")


def test_the_config_sets_ratios_and_reserves(sim_sysfs: SimSysfs, tmp_path: Path) -> None:
    config = host_config_from({
        "sysfs_root": str(sim_sysfs("gpu-2numa")), "instances_path": str(tmp_path / "new" / "x"),
        "cpu_allocation_ratio": 2.0, "ram_allocation_ratio": 1.5, "disk_allocation_ratio": 0.5,
        "reserved_cpus": [0, 1, 32], "reserved_host_memory_mb": 4096,
        "reserved_host_disk_gb": 10})
    found = resources(config)
    assert found is not None
    # A path not created yet is measured on the filesystem that will hold it.
    assert found.disk_gb == disk_gb(tmp_path)
    capacity = found.capacity()
    assert capacity.vcpus == (64 - 3) * 2
    assert capacity.ram_mb == int((2 * 262144 - 4096) * 1.5)
    assert capacity.disk_gb == int((found.disk_gb - 10) * 0.5)
    assert capacity.pinnable_on(0) == tuple(range(2, 32))
    assert capacity.pinnable_on(1) == tuple(range(33, 64))


def test_reserving_a_cpu_the_host_lacks_is_a_config_error(sim_sysfs: SimSysfs) -> None:
    config = host_config_from({"sysfs_root": str(sim_sysfs("x710-2x")),
                               "reserved_cpus": [1, 40, 99]})
    with pytest.raises(HostConfigError, match=r"reserved_cpus names CPU 40, 99, which the host "
                       r"does not have online \(its CPUs: 0-31\)"):
        resources(config)


@pytest.mark.parametrize(("key", "value"), [("cpu_allocation_ratio", 0),
                                            ("reserved_host_memory_mb", -1),
                                            ("reserved_cpus", [-1])])
def test_bad_capacity_settings_are_refused_by_key(key: str, value: object) -> None:
    with pytest.raises(HostConfigError, match=key):
        host_config_from({key: value})
