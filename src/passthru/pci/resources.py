"""A host's CPUs, memory and disk, and what VMs may take of them (no I/O).

The agent reads the topology from sysfs (`host.topology`) and the operator's allocation
ratios and reservations from the host config; both travel in the full inventory report
as one `HostResources`. The controller keeps the capacity this yields and counts every
VM's vCPUs, memory and disk against it in the same conditional transaction that claims
its devices, so two VMs can never be placed on a host that has room for one.

Capacity follows Nova's rules: `(total - reserved) * allocation ratio`, with CPUs
reserved by number (`reserved_cpus`, the host's own) rather than by count. A VM with
`hw:cpu_policy=dedicated` also gets one host CPU per vCPU that no other pinned VM shares;
those come from the unreserved CPUs of its NUMA node when it is NUMA-bound.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from passthru.errors import InvalidInputError
from passthru.pci.device import INT_RANGES, quote

CPU_POLICY_KEY = "hw:cpu_policy"
#: What the controller counts in its Integer columns (32 bits on PostgreSQL): memory in
#: MiB, disk in GB, vCPUs, and each NUMA node's memory and hugepages.
MAX_AMOUNT = 2**31 - 1
MAX_NUMA_NODE = INT_RANGES["numa_node"][1]
#: Linux's largest CPU number (NR_CPUS is at most 8192 today) with room to spare.
MAX_CPU_ID = 65535
#: An allocation ratio past this is a typo, not a policy (Nova's defaults are 4 to 16).
MAX_RATIO = 1000.0
MAX_NETWORK_NAME = 255


class CpuPolicy(StrEnum):
    """Nova's `hw:cpu_policy`: shared vCPUs float, dedicated ones each own a host CPU."""

    SHARED = "shared"
    DEDICATED = "dedicated"


def parse_cpu_policy(value: str | None) -> CpuPolicy:
    if value is None:
        return CpuPolicy.SHARED
    try:
        return CpuPolicy(value.strip().lower())
    except ValueError:
        raise InvalidInputError(f"{CPU_POLICY_KEY}={value!r} is not one of: shared, dedicated"
                                ) from None


@dataclass(frozen=True, slots=True)
class Cpu:
    """One logical CPU: its number, NUMA node and socket (physical package)."""

    id: int
    node: int
    socket: int


@dataclass(frozen=True, slots=True)
class NumaNode:
    """One NUMA node's memory in MiB, and its hugepages (page size in KiB → pages)."""

    id: int
    memory_mb: int
    hugepages: Mapping[int, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Capacity:
    """What VMs may take on one host: vCPUs, memory and disk after ratios and reserves,
    and the host CPUs that dedicated vCPUs may be pinned to (node → CPU numbers)."""

    vcpus: int
    ram_mb: int
    disk_gb: int
    pinnable: Mapping[int, tuple[int, ...]] = field(default_factory=dict)
    #: The physical networks the host can plug normal ports into (its bridge_mappings).
    networks: frozenset[str] = frozenset()

    def pinnable_on(self, node: int | None) -> tuple[int, ...]:
        """Host CPUs a dedicated vCPU may take: those of `node`, or all when None."""
        if node is not None:
            return self.pinnable.get(node, ())
        return tuple(sorted(cpu for cpus in self.pinnable.values() for cpu in cpus))


@dataclass(frozen=True, slots=True)
class HostResources:
    """A host's CPUs, NUMA memory and disk as the agent found them, with the operator's
    ratios and reservations from the host config."""

    cpus: tuple[Cpu, ...] = ()
    numa: tuple[NumaNode, ...] = ()
    disk_gb: int = 0
    cpu_allocation_ratio: float = 4.0
    ram_allocation_ratio: float = 1.0
    disk_allocation_ratio: float = 1.0
    reserved_cpus: tuple[int, ...] = ()
    reserved_host_memory_mb: int = 512
    reserved_host_disk_gb: int = 0
    #: The physical networks whose normal ports the host plugs into a bridge.
    networks: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        ids = [cpu.id for cpu in self.cpus]
        nodes = {node.id for node in self.numa}
        problems = [f"{name} is {value}, not a number above 0 and at most {MAX_RATIO}"
                    for name, value in (
                        ("cpu_allocation_ratio", self.cpu_allocation_ratio),
                        ("ram_allocation_ratio", self.ram_allocation_ratio),
                        ("disk_allocation_ratio", self.disk_allocation_ratio))
                    if not 0 < value <= MAX_RATIO]  # also refuses nan
        problems += [f"{name} is {value}, {'below 0' if value < 0 else f'above {most}'}"
                     for name, value, most in (
            ("disk_gb", self.disk_gb, MAX_AMOUNT),
            ("reserved_host_memory_mb", self.reserved_host_memory_mb, MAX_AMOUNT),
            ("reserved_host_disk_gb", self.reserved_host_disk_gb, MAX_AMOUNT),
            *((f"NUMA node {node.id} memory_mb", node.memory_mb, MAX_AMOUNT)
              for node in self.numa),
            *((f"NUMA node {node.id} hugepages of {size} KiB", count, MAX_AMOUNT)
              for node in self.numa for size, count in node.hugepages.items()),
            *((f"NUMA node {node.id} hugepage size", size, MAX_AMOUNT)
              for node in self.numa for size in node.hugepages),
            *(("NUMA node id", node.id, MAX_NUMA_NODE) for node in self.numa),
            *(("CPU id", cpu.id, MAX_CPU_ID) for cpu in self.cpus),
            *((f"CPU {cpu.id} NUMA node", cpu.node, MAX_NUMA_NODE) for cpu in self.cpus),
            *((f"CPU {cpu.id} socket", cpu.socket, MAX_CPU_ID) for cpu in self.cpus))
                     if not 0 <= value <= most]
        problems += [f"physical network {quote(name)} is not 1 to {MAX_NETWORK_NAME} "
                     "characters" for name in self.networks
                     if not 0 < len(name) <= MAX_NETWORK_NAME]
        if len(set(ids)) != len(ids):
            problems.append("a CPU is listed twice")
        if len(nodes) != len(self.numa):
            problems.append("a NUMA node is listed twice")
        problems += [f"CPU {cpu.id} is on NUMA node {cpu.node}, which is not listed"
                     for cpu in self.cpus if cpu.node not in nodes]
        problems += [f"reserved CPU {cpu} is not one of the host's CPUs"
                     for cpu in sorted(set(self.reserved_cpus) - set(ids))]
        if not problems:
            capacity = self.capacity()
            problems += [f"the capacity this gives, {value} {unit}, is more than the "
                         f"controller counts (at most {MAX_AMOUNT}); lower the ratio"
                         for value, unit in ((capacity.vcpus, "vCPUs"),
                                             (capacity.ram_mb, "MiB memory"),
                                             (capacity.disk_gb, "GB disk"))
                         if value > MAX_AMOUNT]
        if problems:
            raise InvalidInputError(f"host resources: {'; '.join(problems[:10])}")

    @property
    def memory_mb(self) -> int:
        return sum(node.memory_mb for node in self.numa)

    def socket_of(self) -> dict[int, int]:
        """NUMA node → socket, from the CPUs the node holds (a node spans one socket)."""
        return {cpu.node: cpu.socket for cpu in sorted(self.cpus, key=lambda c: c.id)}

    def capacity(self) -> Capacity:
        reserved = set(self.reserved_cpus)
        usable = [cpu for cpu in self.cpus if cpu.id not in reserved]
        pinnable: dict[int, list[int]] = {}
        for cpu in sorted(usable, key=lambda c: c.id):
            pinnable.setdefault(cpu.node, []).append(cpu.id)
        return Capacity(
            vcpus=math.floor(len(usable) * self.cpu_allocation_ratio),
            ram_mb=max(0, math.floor((self.memory_mb - self.reserved_host_memory_mb)
                                     * self.ram_allocation_ratio)),
            disk_gb=max(0, math.floor((self.disk_gb - self.reserved_host_disk_gb)
                                      * self.disk_allocation_ratio)),
            pinnable={node: tuple(cpus) for node, cpus in pinnable.items()},
            networks=frozenset(self.networks),
        )


@dataclass(frozen=True, slots=True)
class VmSize:
    """What one VM takes of a host besides devices, and the physical networks its normal
    ports need the host to bridge."""

    vcpus: int = 1
    ram_mb: int = 512
    disk_gb: int = 0
    cpu_policy: CpuPolicy = CpuPolicy.SHARED
    networks: frozenset[str] = frozenset()

    def describe(self) -> str:
        pinned = ", dedicated" if self.cpu_policy is CpuPolicy.DEDICATED else ""
        return f"{self.vcpus} vCPUs{pinned}, {self.ram_mb} MiB memory, {self.disk_gb} GB disk"


@dataclass(frozen=True, slots=True)
class Usage:
    """What the VMs on a host take now: vCPUs, memory, disk, and the pinned host CPUs."""

    vcpus: int = 0
    ram_mb: int = 0
    disk_gb: int = 0
    pinned: frozenset[int] = frozenset()

    def plus(self, size: VmSize, cpus: Iterable[int] = ()) -> Usage:
        return Usage(self.vcpus + size.vcpus, self.ram_mb + size.ram_mb,
                     self.disk_gb + size.disk_gb, self.pinned | frozenset(cpus))

    def minus(self, size: VmSize, cpus: Iterable[int] = ()) -> Usage:
        return Usage(self.vcpus - size.vcpus, self.ram_mb - size.ram_mb,
                     self.disk_gb - size.disk_gb, self.pinned - frozenset(cpus))


def shortfall(capacity: Capacity, usage: Usage, size: VmSize,
              node: int | None = None) -> str | None:
    """Why `size` does not fit next to `usage` (None: it fits). `node` is the NUMA node a
    NUMA-bound VM is on, which is where its dedicated CPUs must come from."""
    if unbridged := sorted(size.networks - capacity.networks):
        return (f"no bridge for physical network {', '.join(unbridged)} "
                f"(its bridge_mappings: {', '.join(sorted(capacity.networks)) or 'none'})")
    # Free counts are never shown below 0: a host whose capacity shrank under its VMs
    # keeps them, and simply has nothing free.
    if usage.vcpus + size.vcpus > capacity.vcpus:
        return f"{max(0, capacity.vcpus - usage.vcpus)} of {capacity.vcpus} vCPUs free"
    if usage.ram_mb + size.ram_mb > capacity.ram_mb:
        return (f"{max(0, capacity.ram_mb - usage.ram_mb)} of {capacity.ram_mb} "
                "MiB memory free")
    if usage.disk_gb + size.disk_gb > capacity.disk_gb:
        return f"{max(0, capacity.disk_gb - usage.disk_gb)} of {capacity.disk_gb} GB disk free"
    if size.cpu_policy is CpuPolicy.DEDICATED:
        free = [c for c in capacity.pinnable_on(node) if c not in usage.pinned]
        if len(free) < size.vcpus:
            where = f" on NUMA node {node}" if node is not None else ""
            return f"{len(free)} host CPUs free to pin{where}"
    return None


def pick_cpus(capacity: Capacity, usage: Usage, size: VmSize,
              node: int | None = None) -> tuple[int, ...]:
    """The host CPUs a dedicated VM gets (lowest numbers first); () for shared vCPUs.
    Call only when `shortfall` found none."""
    if size.cpu_policy is not CpuPolicy.DEDICATED:
        return ()
    free = [c for c in capacity.pinnable_on(node) if c not in usage.pinned]
    return tuple(free[:size.vcpus])
