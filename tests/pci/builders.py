"""Small hand-built hosts for the core's tests."""

from __future__ import annotations

from passthru.pci.device import DevType, PciDevice
from passthru.pci.pool import Pool, build_pools
from passthru.pci.request import PciRequest


def by_product(request: PciRequest, pool: Pool) -> bool:
    """Alternatives name product ids: enough to exercise the rules without flavors."""
    if request.dev_type is not None and pool.dev_type is not request.dev_type:
        return False
    if request.physical_network and pool.attr("e.physical_network") != request.physical_network:
        return False
    return not request.alternatives or pool.attr("product_id") in request.alternatives


def gpu(n: int, product: str = "20b5", numa: int | None = 0) -> PciDevice:
    return PciDevice(f"0000:{0x40 + n:02x}:00.0", "10de", product, numa_node=numa)


def nic(pf: int, vfs: int, physnet: str, numa: int | None = 0) -> list[PciDevice]:
    pf_addr = f"0000:{0x10 + pf:02x}:00.0"
    devices = [PciDevice(pf_addr, "8086", "1572", DevType.PF, numa_node=numa,
                         tags={"e.physical_network": physnet})]
    devices += [PciDevice(f"0000:{0x10 + pf:02x}:02.{i}", "8086", "154c", DevType.VF,
                          parent_addr=pf_addr, numa_node=numa,
                          tags={"e.physical_network": physnet}) for i in range(vfs)]
    return devices


def host(*groups: list[PciDevice] | PciDevice) -> tuple[list[Pool], dict[str, PciDevice]]:
    devices: list[PciDevice] = []
    for group in groups:
        devices += group if isinstance(group, list) else [group]
    return build_pools(devices), {d.address: d for d in devices}
