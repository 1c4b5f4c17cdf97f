"""What discovery must find on a simulated host, derived from the profile alone."""

from __future__ import annotations

from passthru.host.pciids import default_pci_ids
from passthru.pci.device import DevType, PciDevice
from passthru.sim import HostProfile, expand


def expected_devices(profile: HostProfile) -> list[PciDevice]:
    ids = default_pci_ids()
    devices = []
    for function in expand(profile):
        is_pf = function.totalvfs is not None
        devices.append(PciDevice(
            address=function.address,
            vendor_id=function.vendor_id,
            product_id=function.product_id,
            dev_type=DevType.VF if function.physfn else DevType.PF if is_pf else DevType.PCI,
            dev_class=function.dev_class,
            subsystem_vendor_id=function.subsystem_vendor_id,
            subsystem_device_id=function.subsystem_device_id,
            parent_addr=function.physfn,
            numa_node=function.numa_node,
            iommu_group=function.iommu_group,
            driver=function.driver,
            netdev=function.netdev,
            vendor_name=ids.vendor_name(function.vendor_id),
            product_name=ids.product_name(function.vendor_id, function.product_id),
            sriov_totalvfs=function.totalvfs,
            sriov_numvfs=len(function.virtfns) if is_pf else None,
        ))
    return devices
