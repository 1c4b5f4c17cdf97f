"""The demo's hosts: simulated hosts of real hardware shapes, and this machine itself.

Each becomes a host config file that a real `passthru agent` reads. Every host's domains
go to libvirt's test driver (`test:///...`), so the demo starts no real VM and takes no
device away from this machine; simulated hosts record their VF settings in a file, since
there is no SR-IOV hardware to send them to.
"""

from __future__ import annotations

import json
import socket
import tomllib
from dataclasses import dataclass
from pathlib import Path

from passthru.host.config import HostConfig, host_config_from, offered
from passthru.host.sim_vf import vf_state_path
from passthru.host.sysfs import DiscoveryError, discover_sysfs
from passthru.pci.device import PciDevice
from passthru.sim import PROFILES, HostProfile, build_sysfs, host_config_toml, nodedev_xml

#: The simulated hosts, in the order they are started: a 2-NUMA GPU host, two SR-IOV NIC
#: hosts on physnet1 and physnet2 (Intel with a whole PF to give away, and Mellanox), and
#: the QuickAssist host whose VFs are the seed's encryption cards.
SIMULATED = ("gpu-2numa", "e810", "connectx", "qat")

#: Agents re-scan and heart-beat every 2 s and ask for orders every 0.5 s, so that the
#: demo does not wait on them.
_TIMING = "interval = 2\norder_interval = 0.5\n"
LOCAL_GROUP = "local"
_BRIDGE_CLASS = "06"


@dataclass(frozen=True, slots=True)
class DemoHost:
    """A host as its agent will run it: `config_file` is its host config (TOML, without
    the token), `offered` how many devices its whitelist takes (what it should report),
    and `profile` the simulated hardware (None for this machine)."""

    name: str
    summary: str
    config_file: Path
    offered: int
    sysfs_root: Path
    profile: str | None

    @property
    def vf_state(self) -> Path:
        """Where a simulated host records its VF settings."""
        return vf_state_path(self.sysfs_root)


def checked_config(text: str, path: Path) -> HostConfig:
    """Write a host config and check it as the agent will read it."""
    path.write_text(text)
    return host_config_from(tomllib.loads(text), f"host config {path}")


def simulated_host(profile: HostProfile, home: Path, controller: str) -> DemoHost:
    """Build `profile` under `home` (sysfs tree and libvirt node XML) with its config."""
    home.mkdir(parents=True)
    sysfs = build_sysfs(profile, home / "sys")
    node = home / "node.xml"
    node.write_text(nodedev_xml(profile))
    text = _TIMING + host_config_toml(profile, sysfs_root=sysfs, nodedev_xml=node,
                                      controller=controller)
    config = checked_config(text, home / "agent.toml")
    return DemoHost(config.host, profile.description, home / "agent.toml",
                    len(offered(config)), sysfs, profile.name)


def simulated_hosts(root: Path, controller: str) -> list[DemoHost]:
    return [simulated_host(PROFILES[name], root / name, controller) for name in SIMULATED]


def _local_devices(sysfs_root: Path) -> list[PciDevice]:
    try:
        return discover_sysfs(sysfs_root)
    except DiscoveryError:
        return []  # no PCI bus visible here (a container, say): nothing of its own to offer


def local_host(home: Path, controller: str, sysfs_root: Path = Path("/sys")) -> DemoHost | None:
    """This machine, offering every PCI device but its bridges and what it runs on (the
    preflight keeps its disks' and its NICs' functions), tagged e.group=local, with or
    without an IOMMU; None when it has nothing to offer."""
    devices = _local_devices(sysfs_root)
    candidates = [d for d in devices if not (d.dev_class or "").startswith(_BRIDGE_CLASS)]
    if not candidates:
        return None
    bridges = [d.address for d in devices if d not in candidates]
    home.mkdir(parents=True)
    lines = [
        "# passthru demo: this machine's own PCI devices, all but its bridges and what it",
        "# runs on, tagged e.group=local. Domains go to libvirt's test driver: no device",
        "# leaves the machine, so they are offered even without an IOMMU.",
        f"controller = {json.dumps(controller)}",
        f"host = {json.dumps(socket.gethostname())}",
        f"sysfs_root = {json.dumps(str(sysfs_root))}",
        'libvirt_uri = "test:///default"',
        _TIMING.rstrip("\n"),
        'pool_attrs = ["vendor_id", "product_id", "e.group"]',
        "allow_no_iommu = true",
        "",
        "[[pci_information]]",
        'match = { vendor_id = "*" }',
        f'extra = {{ "e.group" = "{LOCAL_GROUP}" }}',
    ]
    if bridges:
        lines.append(f"exclude = {json.dumps(bridges)}")
    config = checked_config("\n".join(lines) + "\n", home / "agent.toml")
    count = len(offered(config))
    if not count:
        return None
    return DemoHost(config.host, f"this machine: {len(candidates)} PCI devices of its own",
                    home / "agent.toml", count, sysfs_root, profile=None)
