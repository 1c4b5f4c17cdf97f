"""Write a simulated host as a sysfs tree, laid out the way the kernel lays out /sys.

```
<root>/devices/pci0000:3b/0000:3b:00.0/        vendor device class ... numa_node
    driver -> ../../../bus/pci/drivers/i40e     iommu_group -> ../../../kernel/iommu_groups/N
    sriov_totalvfs sriov_numvfs virtfn0 -> ../0000:3b:02.0     net/enp59s0f0/address
<root>/bus/pci/devices/0000:3b:00.0 -> ../../../devices/pci0000:3b/0000:3b:00.0
<root>/class/net/enp59s0f0 -> ../../devices/pci0000:3b/0000:3b:00.0/net/enp59s0f0
<root>/devices/system/cpu/online                 0-31
<root>/devices/system/cpu/cpu5/topology/physical_package_id
<root>/devices/system/node/node0/cpulist meminfo hugepages/hugepages-2048kB/nr_hugepages
```
All links are relative, so a tree can be moved or copied as a whole.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from passthru.errors import InvalidInputError
from passthru.sim.profile import HostProfile, SimFunction, Topology, expand

#: Marks a directory as ours, so that rebuilding may replace it and nothing else.
MARKER = ".passthru-sim"


class SimRootError(InvalidInputError):
    """The directory asked for cannot take a simulated host."""


def _prepare(root: Path) -> None:
    if root.exists() and any(root.iterdir()):
        if not (root / MARKER).is_file():
            raise SimRootError(
                f"{root} is not empty and holds no simulated host; "
                "pick a new or empty directory"
            )
        shutil.rmtree(root)
    root.mkdir(parents=True, exist_ok=True)


def _write(path: Path, value: object) -> None:
    path.write_text(f"{value}\n")


def _device_dir(root: Path, function: SimFunction) -> Path:
    """Where the kernel puts a function: under its root complex; VFs beside their PF."""
    home = function.physfn or function.address
    return root / "devices" / f"pci{home[:7]}" / function.address


def _write_function(root: Path, function: SimFunction) -> None:
    directory = _device_dir(root, function)
    directory.mkdir(parents=True)
    _write(directory / "vendor", f"0x{function.vendor_id}")
    _write(directory / "device", f"0x{function.product_id}")
    _write(directory / "class", f"0x{function.dev_class}")
    _write(directory / "subsystem_vendor", f"0x{function.subsystem_vendor_id}")
    _write(directory / "subsystem_device", f"0x{function.subsystem_device_id}")
    _write(directory / "numa_node", -1 if function.numa_node is None else function.numa_node)
    group = root / "kernel" / "iommu_groups" / str(function.iommu_group)
    (group / "devices").mkdir(parents=True)
    _link(group / "devices" / function.address, directory)
    _link(directory / "iommu_group", group)
    if function.driver:
        driver = root / "bus" / "pci" / "drivers" / function.driver
        driver.mkdir(parents=True, exist_ok=True)
        _link(driver / function.address, directory)
        _link(directory / "driver", driver)
    if function.totalvfs is not None:
        _write(directory / "sriov_totalvfs", function.totalvfs)
        _write(directory / "sriov_numvfs", len(function.virtfns))
        for index, vf in enumerate(function.virtfns):
            _link(directory / f"virtfn{index}", directory.parent / vf)
    if function.physfn:
        _link(directory / "physfn", directory.parent / function.physfn)
    if function.netdev:
        netdev = directory / "net" / function.netdev
        netdev.mkdir(parents=True)
        _write(netdev / "address", function.mac)
        (root / "class" / "net").mkdir(parents=True, exist_ok=True)
        _link(root / "class" / "net" / function.netdev, netdev)
    _link(root / "bus" / "pci" / "devices" / function.address, directory)


def _write_topology(root: Path, topology: Topology) -> None:
    """CPUs and NUMA nodes as the kernel shows them (every CPU online)."""
    cpus, nodes = root / "devices" / "system" / "cpu", root / "devices" / "system" / "node"
    last_cpu = len(topology.nodes) * topology.cpus_per_node - 1
    cpus.mkdir(parents=True)
    nodes.mkdir(parents=True)
    _write(cpus / "online", f"0-{last_cpu}")
    _write(cpus / "present", f"0-{last_cpu}")
    _write(nodes / "online", f"0-{len(topology.nodes) - 1}")
    for node in topology.nodes:
        node_dir = nodes / f"node{node}"
        node_dir.mkdir()
        span = topology.cpus_of(node)
        _write(node_dir / "cpulist", f"{span.start}-{span.stop - 1}")
        total_kb = topology.memory_mb_per_node * 1024
        _write(node_dir / "meminfo", f"Node {node} MemTotal:       {total_kb} kB\n"
               f"Node {node} MemFree:        {total_kb // 2} kB")
        for size_kb in sorted({2048, 1048576, *topology.hugepages}):
            pages = node_dir / "hugepages" / f"hugepages-{size_kb}kB"
            pages.mkdir(parents=True)
            _write(pages / "nr_hugepages", topology.hugepages.get(size_kb, 0))
        for cpu in span:
            cpu_dir = cpus / f"cpu{cpu}"
            (cpu_dir / "topology").mkdir(parents=True)
            _write(cpu_dir / "topology" / "physical_package_id", topology.socket_of(node))
            _link(node_dir / f"cpu{cpu}", cpu_dir)


def _link(link: Path, target: Path) -> None:
    link.symlink_to(os.path.relpath(target, link.parent))


def build_sysfs(profile: HostProfile, root: Path) -> Path:
    """Write `profile` as a sysfs tree under `root` and return `root`.

    `root` must be new, empty, or an earlier simulated host (which is replaced).
    """
    _prepare(root)
    (root / "bus" / "pci" / "devices").mkdir(parents=True)
    (root / "bus" / "pci" / "drivers").mkdir()
    for function in expand(profile):
        _write_function(root, function)
    _write_topology(root, profile.topology)
    _write(root / MARKER, profile.name)
    return root
