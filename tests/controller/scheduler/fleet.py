"""Small hand-built fleets and the requests VMs make of them."""

from __future__ import annotations

from collections.abc import Mapping

from passthru.controller.scheduler import HostIndex
from passthru.pci.device import DevType, PciDevice
from passthru.pci.flavor import PciFlavor
from passthru.pci.pool import build_pools
from passthru.pci.request import NumaPolicy, PciRequest, RequestSource
from tests.pci.builders import gpu, nic

__all__ = ["FLAVORS", "gpu", "gpus", "index_of", "mlx_nic", "nic", "pf_port", "vf_port"]

FLAVORS: dict[str, PciFlavor] = {
    "bigGPU": PciFlavor("bigGPU", {"vendor_id": "10de", "product_id": "20b5"}),
    "smallGPU": PciFlavor("smallGPU", {"vendor_id": "10de", "product_id": "20b6"}),
    "anyGPU": PciFlavor("anyGPU", {"vendor_id": "10de"}),
    "fastNIC": PciFlavor("fastNIC", {"vendor_id": "8086", "product_id": "154c"}),
}


def mlx_nic(pf: int, vfs: int, physnet: str, numa: int | None = 0) -> list[PciDevice]:
    """A ConnectX PF with its VFs: same network as Intel NICs, different PCI flavor."""
    pf_addr = f"0000:{0x30 + pf:02x}:00.0"
    tags = {"e.physical_network": physnet}
    return [PciDevice(pf_addr, "15b3", "1017", DevType.PF, numa_node=numa, tags=tags),
            *(PciDevice(f"0000:{0x30 + pf:02x}:00.{i + 1}", "15b3", "1018", DevType.VF,
                        parent_addr=pf_addr, numa_node=numa, tags=dict(tags))
              for i in range(vfs))]


def index_of(hosts: Mapping[str, list[PciDevice]],
             sockets: Mapping[str, dict[int, int]] | None = None) -> HostIndex:
    index = HostIndex(FLAVORS)
    for name, devices in hosts.items():
        index.report(name, build_pools(devices), socket_of=(sockets or {}).get(name))
    return index


def gpus(count: int = 1, *flavors: str, policy: NumaPolicy = NumaPolicy.LEGACY,
         soft: bool = False) -> PciRequest:
    return PciRequest(count, flavors or ("bigGPU",), numa_policy=policy, soft=soft)


def vf_port(physnet: str, flavor: str | None = None,
            policy: NumaPolicy = NumaPolicy.LEGACY) -> PciRequest:
    """A `--nic` with vnic-type direct: plan B without a flavor, plan A with one."""
    return PciRequest(1, (flavor,) if flavor else (), source=RequestSource.PORT,
                      physical_network=physnet, dev_type=DevType.VF, numa_policy=policy)


def pf_port(physnet: str) -> PciRequest:
    """A `--nic` with vnic-type direct-physical."""
    return PciRequest(1, (), source=RequestSource.PORT, physical_network=physnet,
                      dev_type=DevType.PF)
