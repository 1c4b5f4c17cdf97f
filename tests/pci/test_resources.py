"""Capacity after ratios and reserves, what a VM finds short, and the CPUs it is pinned to."""

from __future__ import annotations

from typing import Any

import pytest

from passthru.errors import InvalidInputError
from passthru.pci.resources import (
    Cpu,
    CpuPolicy,
    HostResources,
    NumaNode,
    Usage,
    VmSize,
    parse_cpu_policy,
    pick_cpus,
    shortfall,
)

DEDICATED = CpuPolicy.DEDICATED


def two_nodes(cpus_per_node: int = 4, **settings: object) -> HostResources:
    cpus = tuple(Cpu(n, n // cpus_per_node, n // cpus_per_node)
                 for n in range(2 * cpus_per_node))
    settings = {"disk_gb": 100, **settings}
    return HostResources(cpus=cpus, numa=(NumaNode(0, 8192), NumaNode(1, 8192)),
                         **settings)  # type: ignore[arg-type]


def test_nova_defaults_overcommit_cpus_four_times_and_reserve_512_mib() -> None:
    capacity = two_nodes().capacity()
    assert (capacity.vcpus, capacity.ram_mb, capacity.disk_gb) == (32, 16384 - 512, 100)


def test_ratios_and_reserves_apply_to_what_is_left() -> None:
    capacity = two_nodes(cpu_allocation_ratio=1.5, ram_allocation_ratio=2.0,
                         disk_allocation_ratio=0.9, reserved_cpus=(0, 5),
                         reserved_host_memory_mb=1024, reserved_host_disk_gb=50).capacity()
    assert capacity.vcpus == 9  # floor(6 * 1.5)
    assert capacity.ram_mb == (16384 - 1024) * 2
    assert capacity.disk_gb == 45
    assert capacity.pinnable == {0: (1, 2, 3), 1: (4, 6, 7)}
    assert capacity.pinnable_on(None) == (1, 2, 3, 4, 6, 7)


def test_reserving_more_than_the_host_has_leaves_nothing_not_less() -> None:
    capacity = two_nodes(reserved_host_memory_mb=10**6, reserved_host_disk_gb=10**3).capacity()
    assert (capacity.ram_mb, capacity.disk_gb) == (0, 0)


def test_socket_of_follows_the_cpus() -> None:
    shared_socket = HostResources(cpus=(Cpu(0, 0, 0), Cpu(1, 1, 0), Cpu(2, 2, 1)),
                                  numa=(NumaNode(0, 1), NumaNode(1, 1), NumaNode(2, 1)))
    assert shared_socket.socket_of() == {0: 0, 1: 0, 2: 1}


@pytest.mark.parametrize(("settings", "message"), [
    ({"cpu_allocation_ratio": 0.0}, "cpu_allocation_ratio is 0.0, not a number above 0"),
    ({"ram_allocation_ratio": float("inf")}, "ram_allocation_ratio is inf"),
    ({"reserved_cpus": (9,)}, "reserved CPU 9 is not one of the host's CPUs"),
    ({"disk_gb": -1}, "disk_gb is -1, below 0"),
])
def test_impossible_resources_are_refused(settings: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        two_nodes(**settings)


def test_a_cpu_on_an_unknown_node_is_refused() -> None:
    with pytest.raises(InvalidInputError, match="CPU 0 is on NUMA node 3, which is not listed"):
        HostResources(cpus=(Cpu(0, 3, 0),), numa=(NumaNode(0, 1),))


def test_shortfall_names_the_first_thing_missing() -> None:
    capacity = two_nodes().capacity()
    assert shortfall(capacity, Usage(), VmSize(32, 1024)) is None
    assert shortfall(capacity, Usage(vcpus=30), VmSize(4, 1024)) == "2 of 32 vCPUs free"
    assert shortfall(capacity, Usage(ram_mb=16000), VmSize(1, 1024)) == (
        "0 of 15872 MiB memory free")
    assert shortfall(capacity, Usage(), VmSize(1, 512, 101)) == "100 of 100 GB disk free"


def test_dedicated_vcpus_need_their_own_cpus_on_the_vms_node() -> None:
    capacity = two_nodes(reserved_cpus=(0,)).capacity()
    size = VmSize(3, 512, cpu_policy=DEDICATED)
    used = Usage().plus(size, pick_cpus(capacity, Usage(), size, 0))
    assert used.pinned == {1, 2, 3}
    assert shortfall(capacity, used, size, 0) == "0 host CPUs free to pin on NUMA node 0"
    assert pick_cpus(capacity, used, size, 1) == (4, 5, 6)
    assert pick_cpus(capacity, used, VmSize(2), 1) == ()  # shared vCPUs float
    assert used.minus(size, (1, 2, 3)) == Usage()


def test_cpu_policy_values() -> None:
    assert parse_cpu_policy(None) is CpuPolicy.SHARED
    assert parse_cpu_policy(" Dedicated ") is CpuPolicy.DEDICATED
    with pytest.raises(InvalidInputError, match="hw:cpu_policy='mixed' is not one of"):
        parse_cpu_policy("mixed")
