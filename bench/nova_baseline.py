"""Nova's scheduling of a PCI VM, over the same fleet and requests: Placement, then filters.

Nova schedules in two steps, and both are run here:
1. Placement's `GET /allocation_candidates` with `limit` = `[scheduler]
   max_placement_results` (1,000 by default): openstack-placement's own code, in process
   over its own schema in SQLite (`bench/placement_candidates.py`), run by the Python of a
   virtualenv made for it (`bench/.venv-placement`, git-ignored: `placement_python`):
   openstack-placement brings keystonemiddleware, WebOb, Routes and a dozen oslo.*
   libraries that passthru does not need, and only a floor on SQLAlchemy (>= 1.4; 16.0.0
   resolves to the same 2.1 as passthru today), so keeping them apart means neither can
   move the other's versions;
2. the scheduler's host filters over only the hosts of those candidates (below).

How Nova's objects are built without a database, as Nova itself builds them:
1. compute side: one `PciDeviceStats(numa_topology, dev_filter=Whitelist(device_spec))`
   gets every device of a host through `add_device` (Nova `PciDevice` objects converted
   from ours); `[pci] device_spec` lines are derived from our devices (vendor, product,
   PCI bus, and their tags such as physical_network), so Nova pools them as we do;
2. the resource tracker's report: `to_device_pools_obj()`, serialised as Nova stores it in
   `compute_nodes.pci_stats`;
3. scheduler side: per host, `PciDeviceStats(numa_topology, stats=<that pool list>)`,
   exactly what `HostState.update` does with `compute.pci_device_pools`.
Every host of the fleet has the same hardware, so step 1 runs once and each host gets
its own deserialised copy of the pools.

The filter pass for one VM is what Nova's scheduler spends on PCI per host:
`PciPassthroughFilter` calls `support_requests(requests, None)`, and for a VM with a NUMA
topology `NUMATopologyFilter` (through `numa_fit_instance_to_host`) calls it again with
each host cell in turn until one fits. It runs over the hosts of Placement's candidates
only (at most `MAX_PLACEMENT_RESULTS`), as Nova's does; Nova's other filters (compute
status, RAM, ...) are not run, so the filter figure is a lower bound.
"""

from __future__ import annotations

import copy
import json
import subprocess
import sys
import uuid
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from passthru.pci.device import DevType, PciDevice
from passthru.pci.flavor import PciFlavor
from passthru.pci.request import NumaPolicy, PciRequest

warnings.filterwarnings("ignore")  # eventlet and oslo deprecation chatter on import

import nova.conf  # noqa: E402
from nova import objects  # noqa: E402
from nova.pci import stats as nova_stats  # noqa: E402
from nova.pci import whitelist  # noqa: E402

objects.register_all()
nova.conf.CONF([], project="nova")

NovaVm = tuple[list[Any], list[Any] | None]

#: Nova's `[scheduler] max_placement_results` default: the most candidates it asks for.
MAX_PLACEMENT_RESULTS = 1000
HERE = Path(__file__).resolve().parent
PLACEMENT_VENV = HERE / ".venv-placement"
PLACEMENT_PACKAGE = "openstack-placement==16.0.0"


def placement_python() -> Path:
    """The Python of the Placement virtualenv, made (and openstack-placement installed
    from PyPI) on first use. Raises CalledProcessError with pip's words if it cannot."""
    python = PLACEMENT_VENV / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(PLACEMENT_VENV)], check=True)
    if subprocess.run([str(python), "-c", "import placement.objects.allocation_candidate"],
                      capture_output=True, check=False).returncode != 0:
        subprocess.run([str(python), "-m", "pip", "install", "-q", PLACEMENT_PACKAGE],
                       check=True, capture_output=True, text=True)
    return python


def allocation_candidates(hosts: int, repeats: int) -> dict[str, Any]:
    """Placement's allocation candidates for each VM kind over `hosts` hosts (JSON of
    `bench/placement_candidates.py`)."""
    output = subprocess.run([str(placement_python()), str(HERE / "placement_candidates.py"),
                             str(hosts), str(MAX_PLACEMENT_RESULTS), str(repeats)],
                            check=True, capture_output=True, text=True).stdout
    result: dict[str, Any] = json.loads(output)
    return result


def _tag_name(key: str) -> str:
    return key.removeprefix("e.")


def device_spec(devices: Sequence[PciDevice]) -> list[str]:
    """`[pci] device_spec` lines that whitelist these devices with their tags."""
    lines: dict[str, None] = {}
    for device in devices:
        domain, bus, _ = device.address.split(":")
        entry = {"vendor_id": device.vendor_id, "product_id": device.product_id,
                 "address": {"domain": domain, "bus": bus},
                 **{_tag_name(k): v for k, v in device.tags.items()}}
        lines[json.dumps(entry, sort_keys=True)] = None
    return list(lines)


def _nova_device(device: PciDevice) -> Any:
    return objects.PciDevice(
        address=device.address, vendor_id=device.vendor_id, product_id=device.product_id,
        dev_type=str(device.dev_type), numa_node=device.numa_node,
        parent_addr=device.parent_addr, extra_info={}, compute_node_id=1,
        status="available", request_id=None, label=f"label_{device.vendor_id}",
        dev_id="pci_" + device.address.replace(":", "_").replace(".", "_"))


def nova_pooling(devices: Sequence[PciDevice], taken: Sequence[PciDevice]) -> Any:
    """Nova's compute side over one host: the whitelist decides for every device, and the
    devices it takes are pooled. Returns the stats."""
    dev_filter = whitelist.Whitelist(device_spec(taken))
    stats = nova_stats.PciDeviceStats(numa_topology({0: 0, 1: 1}), dev_filter=dev_filter)
    for device in devices:
        candidate = {"vendor_id": device.vendor_id, "product_id": device.product_id,
                     "address": device.address, "parent_addr": device.parent_addr,
                     "dev_type": str(device.dev_type)}
        if dev_filter.device_assignable(candidate):
            stats.add_device(_nova_device(device))
    return stats


def numa_topology(nodes: Mapping[int, int]) -> Any:
    """The host's NUMA cells (node → socket) as Nova's scheduler sees them."""
    return objects.NUMATopology(cells=[
        objects.NUMACell(id=node, socket=socket, cpuset=set(), pcpuset=set(),
                         memory=256 * 1024, cpu_usage=0, memory_usage=0, pinned_cpus=set(),
                         siblings=[], mempages=[],
                         network_metadata=objects.NetworkMetadata(physnets=set(),
                                                                  tunneled=False))
        for node, socket in nodes.items()])


def scheduler_stats(devices: Sequence[PciDevice], socket_of: Mapping[int, int],
                    hosts: int) -> list[Any]:
    """One scheduler-side `PciDeviceStats` per host, all built from `devices`."""
    topology = numa_topology(socket_of)
    compute = nova_stats.PciDeviceStats(topology,
                                        dev_filter=whitelist.Whitelist(device_spec(devices)))
    for device in devices:
        compute.add_device(_nova_device(device))
    stored = compute.to_device_pools_obj().obj_to_primitive()
    empty_filter = whitelist.Whitelist([])
    return [nova_stats.PciDeviceStats(
        topology, stats=objects.PciDevicePoolList.obj_from_primitive(copy.deepcopy(stored)),
        dev_filter=empty_filter) for _ in range(hosts)]


def nova_vm(vm: Sequence[PciRequest], flavors: Mapping[str, PciFlavor],
            cells: Sequence[int]) -> NovaVm:
    """Nova's requests for the same VM: an alias per PCI flavor, a port per network; and
    the instance cells to try when the VM has a NUMA topology."""
    requests = []
    for request in vm:
        policy = request.numa_policy.value
        if request.physical_network is not None:
            spec: dict[str, str] = {"physical_network": request.physical_network,
                                    "remote_managed": "False"}
            if request.dev_type is DevType.PF:
                spec["dev_type"] = str(DevType.PF)
            requests.append(objects.InstancePCIRequest(
                count=request.count, spec=[spec], request_id=str(uuid.uuid4()),
                requester_id=str(uuid.uuid4()), numa_policy=policy))
        else:
            specs = [dict(flavors[name].spec) for name in request.alternatives]
            requests.append(objects.InstancePCIRequest(
                count=request.count, spec=specs, request_id=str(uuid.uuid4()),
                alias_name=",".join(request.alternatives), numa_policy=policy))
    bound = any(r.numa_policy is not NumaPolicy.LEGACY for r in vm)
    instance_cells = ([objects.InstanceNUMACell(id=cell, cpuset=set(), pcpuset=set(),
                                                memory=1024) for cell in cells]
                      if bound else None)
    return requests, instance_cells


def filter_pass(hosts: Sequence[Any], vm: NovaVm) -> int:
    """Nova's PCI checks for one VM over every host; how many hosts pass."""
    requests, cells = vm
    passing = 0
    for stats in hosts:
        if not stats.support_requests(requests, None):
            continue
        if cells is None or any(stats.support_requests(requests, None, [cell])
                                for cell in cells):
            passing += 1
    return passing
