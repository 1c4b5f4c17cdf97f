"""A simulated host for attach tests: its sysfs tree, a libvirt test driver of its own,
the devices its whitelist offers, and a VF applier that stands in for the kernel."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path

from passthru.host.attach import Attacher, VfApplier, VfSlot
from passthru.host.config import HostConfig, host_config_from, offered, scan
from passthru.host.libvirt_driver import LibvirtDriver
from passthru.host.vf import VfConfig, VfConfigError
from passthru.pci.binding import NetworkSpec
from passthru.pci.device import PciDevice
from passthru.sim import Card, build_sysfs, host_config_toml, nodedev_xml
from passthru.sim.hardware import A100, QAT_C62X
from passthru.sim.profiles import E810_HOST

#: An E810 host (VFs of 0000:5e:00.0 on physnet1, of 0000:5e:00.1 on physnet2, the whole
#: PF 0000:af:00.0 on physnet2) that also has two GPUs and a QuickAssist card.
HOST = replace(
    E810_HOST,
    name="e810-gpu-qat",
    cards=(*E810_HOST.cards,
           Card(A100, "0000:17:00.0", numa_node=0, bound_to="vfio-pci"),
           Card(A100, "0000:b1:00.0", numa_node=1, bound_to="vfio-pci"),
           Card(QAT_C62X, "0000:3d:00.0", numa_node=0, numvfs=4)),
    pci_information=(*E810_HOST.pci_information,
                     {"match": {"vendor_id": "10de"}, "extra": {"e.group": "gpu"}},
                     {"match": {"product_id": "37c9"}, "extra": {"e.QAclass": "1"}}),
)
PF1, PF1_NETDEV = "0000:5e:00.0", "enp94s0f0"
VLAN_NET = NetworkSpec("prod", "vlan", "physnet1", 100)  # type: ignore[arg-type]
FLAT_NET2 = NetworkSpec("ext", "flat", "physnet2")  # type: ignore[arg-type]
GPUS = ("0000:17:00.0", "0000:b1:00.0")
QAT_VF = "0000:3d:01.0"
WHOLE_PF = "0000:af:00.0"


@dataclass
class SimHost:
    """A simulated host: its sysfs tree, a libvirt test driver of its own, and the devices
    its whitelist offers, as the controller would hand them out in orders."""

    root: Path
    uri: str
    offered: dict[str, PciDevice]

    def attacher(self, driver: LibvirtDriver, applier: VfApplier) -> Attacher:
        return Attacher(driver, applier, self.root, lambda: scan(self.config()))

    def config(self) -> HostConfig:
        toml = host_config_toml(HOST, sysfs_root=self.root)
        return host_config_from(tomllib.loads(toml))


def make_host(tmp_path: Path) -> SimHost:
    root = build_sysfs(HOST, tmp_path / "sys")
    node = tmp_path / "node.xml"
    node.write_text(nodedev_xml(HOST))
    host = SimHost(root, f"test://{node}", {})
    config = host.config()
    host.offered = {d.address: d for d in offered(config)}
    return host


@dataclass
class RecordingApplier:
    """Stands in for the kernel: remembers what each VF is set to, and refuses to set or
    reset the VFs named in `refuse` / `refuse_reset` the way netlink refuses."""

    refuse: frozenset[str] = frozenset()
    refuse_reset: frozenset[str] = frozenset()
    applied: list[tuple[VfSlot, VfConfig]] = field(default_factory=list)
    resets: list[VfSlot] = field(default_factory=list)
    configured: dict[str, VfConfig] = field(default_factory=dict)

    def apply(self, vf: VfSlot, config: VfConfig) -> None:
        self.applied.append((vf, config))
        self.configured[vf.address] = replace(config, vlan=None)  # the MAC went in first
        if vf.address in self.refuse:
            raise VfConfigError(f"cannot set vlan {config.vlan} on VF {vf.index} of PF "
                                f"{vf.pf_netdev}: invalid argument")
        self.configured[vf.address] = config

    def reset(self, vf: VfSlot) -> None:
        self.resets.append(vf)
        if vf.address in self.refuse_reset:
            raise VfConfigError(f"PF netdev {vf.pf_netdev!r} not found")
        self.configured.pop(vf.address, None)
