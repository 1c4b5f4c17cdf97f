"""Discover a host's CPUs, NUMA nodes and instance disk: what VMs may take besides devices.

From sysfs (`<root>` is the host config's `sysfs_root`, so simulated hosts built by
`passthru sim` report their own shape):
- the online CPUs (`devices/system/cpu/online`), each with its socket
  (`cpuN/topology/physical_package_id`);
- the NUMA nodes (`devices/system/node/nodeN`): the CPUs each holds (`cpulist`), its
  memory (`meminfo`, `MemTotal`) and its hugepages (`hugepages/hugepages-*kB/nr_hugepages`);
  a CPU that no node lists is on node 0;
- the size of the filesystem that holds `instances_path` (statvfs), or of the nearest
  existing folder above it when it is not created yet.

A tree without `devices/system/cpu` (hand-built PCI trees, simulated trees older than
topology) has no resources to report: the controller then does not count VMs against
the host. A tree that has CPUs but cannot be read is an error, not an empty host.
"""

# Strings and os calls, as in sysfs.py: hundreds of CPUs are read on every scan.
# ruff: noqa: PTH110, PTH112, PTH118, PTH123, PTH208

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from passthru.host.sysfs import DiscoveryError
from passthru.pci.resources import Cpu, NumaNode

_NODE_DIR = re.compile(r"node(\d+)")
_CPU_DIR = re.compile(r"cpu(\d+)")
_HUGEPAGES_DIR = re.compile(r"hugepages-(\d+)kB")
_MEM_TOTAL = re.compile(r"^Node\s+\d+\s+MemTotal:\s+(\d+)\s*kB", re.MULTILINE)


@dataclass(frozen=True, slots=True)
class Topology:
    """The CPUs and NUMA nodes sysfs shows, sorted by number."""

    cpus: tuple[Cpu, ...]
    numa: tuple[NumaNode, ...]


def parse_cpulist(text: str, where: str) -> list[int]:
    """The kernel's CPU list format: '0-3,8,10-11' (empty: no CPUs)."""
    cpus: list[int] = []
    for part in text.strip().split(","):
        if not part:
            continue
        first, dash, last = part.partition("-")
        try:
            low, high = int(first), int(last) if dash else int(first)
        except ValueError:
            raise DiscoveryError(f"{where}: {text.strip()!r} is not a CPU list "
                                 "(expected e.g. 0-3,8)") from None
        if high < low:
            raise DiscoveryError(f"{where}: range {part!r} runs backwards")
        cpus.extend(range(low, high + 1))
    return cpus


def format_cpulist(cpus: list[int] | tuple[int, ...]) -> str:
    """CPU numbers in the kernel's list format: [0, 1, 2, 3, 8] → '0-3,8'."""
    parts: list[str] = []
    ordered = sorted(set(cpus))
    start = 0
    for i, cpu in enumerate(ordered):
        if i + 1 == len(ordered) or ordered[i + 1] != cpu + 1:
            first = ordered[start]
            parts.append(str(first) if first == cpu else f"{first}-{cpu}")
            start = i + 1
    return ",".join(parts)


def _read(path: str) -> str:
    try:
        with open(path) as file:
            return file.read()
    except OSError as error:
        raise DiscoveryError(f"cannot read {path} ({error.strerror}); the CPU and NUMA "
                             "topology under sysfs_root is incomplete") from None


def _online_cpus(cpu_dir: str) -> list[int]:
    online = os.path.join(cpu_dir, "online")
    if os.path.exists(online):
        return parse_cpulist(_read(online), online)
    # Kernels without CPU hot-plug have no list: every cpuN with a topology is online.
    return sorted(int(m.group(1)) for name in os.listdir(cpu_dir)
                  if (m := _CPU_DIR.fullmatch(name))
                  and os.path.isdir(os.path.join(cpu_dir, name, "topology")))


def _node(node_dir: str, node: int) -> tuple[NumaNode, list[int]]:
    cpulist = os.path.join(node_dir, "cpulist")
    meminfo = os.path.join(node_dir, "meminfo")
    found = _MEM_TOTAL.search(_read(meminfo))
    if found is None:
        raise DiscoveryError(f"{meminfo} has no 'Node {node} MemTotal: ... kB' line")
    hugepages: dict[int, int] = {}
    pages_dir = os.path.join(node_dir, "hugepages")
    if os.path.isdir(pages_dir):
        for name in sorted(os.listdir(pages_dir)):
            size = _HUGEPAGES_DIR.fullmatch(name)
            if size is None:
                continue
            path = os.path.join(pages_dir, name, "nr_hugepages")
            try:
                hugepages[int(size.group(1))] = int(_read(path))
            except ValueError:
                raise DiscoveryError(f"{path} does not hold a page count") from None
    return (NumaNode(node, int(found.group(1)) // 1024, dict(sorted(hugepages.items()))),
            parse_cpulist(_read(cpulist), cpulist))


def read_topology(root: Path) -> Topology | None:
    """The host's online CPUs and NUMA nodes under sysfs `root`; None when the tree shows
    no CPUs at all (see the module's docstring)."""
    system = os.path.join(root, "devices", "system")
    cpu_dir, nodes_dir = os.path.join(system, "cpu"), os.path.join(system, "node")
    if not os.path.isdir(cpu_dir):
        return None
    if not os.path.isdir(nodes_dir):
        raise DiscoveryError(f"{nodes_dir} is missing: passthru needs a kernel with NUMA "
                             "support (CONFIG_NUMA) to know the host's memory")
    numa: list[NumaNode] = []
    node_of: dict[int, int] = {}
    for name in os.listdir(nodes_dir):
        found = _NODE_DIR.fullmatch(name)
        if found is None:
            continue
        node, held = _node(os.path.join(nodes_dir, name), int(found.group(1)))
        numa.append(node)
        node_of.update(dict.fromkeys(held, node.id))
    if not numa:
        raise DiscoveryError(f"{nodes_dir} lists no NUMA node (node0, node1, ...)")
    cpus: list[Cpu] = []
    for cpu in _online_cpus(cpu_dir):
        package = os.path.join(cpu_dir, f"cpu{cpu}", "topology", "physical_package_id")
        try:
            socket = int(_read(package))
        except ValueError:
            raise DiscoveryError(f"{package} does not hold a socket number") from None
        # Some hypervisors' guests show -1: one socket.
        cpus.append(Cpu(cpu, node_of.get(cpu, 0), max(socket, 0)))
    if not cpus:
        raise DiscoveryError(f"{cpu_dir} shows no online CPU")
    return Topology(tuple(cpus), tuple(sorted(numa, key=lambda n: n.id)))


def disk_gb(path: Path) -> int:
    """Whole GiB of the filesystem that holds (or will hold) `path`."""
    where = path
    while not where.exists() and where != where.parent:
        where = where.parent
    try:
        stat = os.statvfs(where)
    except OSError as error:
        raise DiscoveryError(f"cannot read the size of the filesystem of {where} "
                             f"({error.strerror}); check instances_path") from None
    return stat.f_blocks * stat.f_frsize // 2**30
