"""Host preflight: whether the host can pass devices through safely at all, and which of
its devices it needs for itself. `discover` and the agent apply it alike, after the
whitelist, so a device is never offered that the host runs on.

- **The IOMMU.** Without one a device given to a VM can reach all of the host's memory by
  DMA. The kernel puts every device in an IOMMU group when, and only when, an IOMMU
  translates for it, so the host's IOMMU counts as on when its devices have groups (sysfs
  `iommu_group`, libvirt's `iommuGroup`). A host without one offers nothing unless its
  config says `allow_no_iommu = true`, which warns.
- **What the host runs on.** The PCI function under a mounted filesystem
  (`/proc/self/mountinfo` → `/sys/dev/block/MAJ:MIN`, through partitions and the slaves of
  device-mapper and md), and under a network interface that carries a default route or an
  address in use (netlink; a bridge's or bond's ports and a VLAN's parent carry it too),
  is kept by the host, whatever the whitelist says.

A simulated host (a sysfs tree of its own, libvirt's test driver) is not this machine:
this machine's mounts and routes name none of its devices, so they are not read for it.
"""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from passthru.errors import HostError, InvalidInputError
from passthru.pci.address import PciAddress
from passthru.pci.device import PciDevice
from passthru.pci.spec import Decision

#: This machine's sysfs, as its kernel shows it.
KERNEL_SYSFS = Path("/sys")
_MOUNTINFO = Path("/proc/self/mountinfo")
#: How mountinfo escapes a blank, tab, newline or backslash in a path: \040 for a space.
_OCTAL = re.compile(r"\\([0-7]{3})")
#: Address scopes a host does not serve anything on: link-local (253) and host (254).
_UNUSED_SCOPES = (253, 254)
_RTN_UNICAST = 1
_LOCAL_TABLE = 255

#: Why a device is not offered on a host without an IOMMU; `Preflight.iommu_line` says more.
NO_IOMMU = "the host has no IOMMU (allow_no_iommu = true offers it anyway)"


class NetlinkReadError(HostError):
    """The host's interfaces, addresses or routes could not be read."""


@dataclass(frozen=True, slots=True)
class Preflight:
    """What the host may offer: whether its IOMMU is on, and why it keeps some functions
    (address → reason)."""

    iommu: bool
    allow_no_iommu: bool
    kept: Mapping[str, str]

    def iommu_line(self) -> str:
        """The IOMMU's state, as `discover` says it."""
        if self.iommu:
            return "IOMMU: on (the devices have IOMMU groups)"
        risk = "a VM given a device could reach all of the host's memory by DMA"
        if self.allow_no_iommu:
            return f"IOMMU: off, and allow_no_iommu = true offers devices anyway: {risk}"
        return (f"IOMMU: off (no device has an IOMMU group), so nothing is offered: {risk}. "
                "Turn it on (intel_iommu=on or amd_iommu=on on the kernel command line, "
                "VT-d or AMD-Vi in the firmware), or set allow_no_iommu = true in the host "
                "config to offer devices anyway")

    def review(self, decisions: Sequence[Decision]) -> list[Decision]:
        """The whitelist's decisions, with what the host keeps or cannot offer refused."""
        return [self._review(decision) for decision in decisions]

    def _review(self, decision: Decision) -> Decision:
        if not decision.taken:
            return decision
        reason = self.kept.get(decision.device.address)
        if reason is not None:
            reason = f"kept by the host: {reason}"
        elif not self.iommu and not self.allow_no_iommu:
            reason = NO_IOMMU
        else:
            return decision
        return replace(decision, device=replace(decision.device, tags={}), taken=False,
                       tags={}, reason=reason)


def check(devices: Sequence[PciDevice], allow_no_iommu: bool, own: bool) -> Preflight:
    """The preflight of the host whose functions are `devices`; what it runs on only when
    they are this machine's (`own`), as its kernel's `/sys` shows them."""
    iommu = any(device.iommu_group is not None for device in devices)
    kept: dict[str, str] = {}
    if own:
        kept = kept_functions(KERNEL_SYSFS, _MOUNTINFO.read_text(), busy_interfaces())
    return Preflight(iommu, allow_no_iommu, kept)


def kept_functions(sysfs_root: Path, mountinfo: str, busy: Mapping[str, str]
                   ) -> dict[str, str]:
    """The PCI functions the host runs on, and why: those under a filesystem that
    `mountinfo` (`/proc/self/mountinfo`'s text) lists, and those under an interface of
    `busy` (interface name → why the host uses it)."""
    kept: dict[str, list[str]] = {}
    for address, mounted in _mounted_functions(sysfs_root, mountinfo).items():
        kept.setdefault(address, []).append(
            f"it holds the host's mounted {_listed('filesystem', mounted)}")
    for name, why in busy.items():
        nic = _function_of(sysfs_root / "class" / "net" / name)
        if nic is not None:
            kept.setdefault(nic, []).append(f"{name} carries the host's {why}")
    return {address: "; ".join(reasons) for address, reasons in sorted(kept.items())}


def _listed(what: str, items: Sequence[str], most: int = 3) -> str:
    if len(items) == 1:
        return f"{what} {items[0]}"
    more = f" and {len(items) - most} more" if len(items) > most else ""
    return f"{what}s {', '.join(items[:most])}{more}"


def _mounted_functions(sysfs_root: Path, mountinfo: str) -> dict[str, list[str]]:
    """PCI address → the mount points on the block devices behind it."""
    found: dict[str, list[str]] = {}
    for line in mountinfo.splitlines():
        fields = line.split()
        if len(fields) < 5:
            continue
        mount_point = _OCTAL.sub(lambda escape: chr(int(escape[1], 8)), fields[4])
        block = sysfs_root / "dev" / "block" / fields[2]
        for address in _block_functions(block, set()):
            found.setdefault(address, [])
            if mount_point not in found[address]:
                found[address].append(mount_point)
    return found


def _block_functions(block: Path, seen: set[Path]) -> set[str]:
    """The PCI functions under block device `block`: its own controller, else its slaves'
    (device-mapper, md). A filesystem with no device (tmpfs, overlay, proc) has none."""
    real = block.resolve()
    if real in seen or not real.exists():
        return set()
    seen.add(real)
    own = _last_function(real)
    if own is not None:
        return {own}
    # A partition's slaves are its disk's: list them on the disk when the partition has none.
    slaves = real / "slaves" if (real / "slaves").is_dir() else real.parent / "slaves"
    if not slaves.is_dir():
        return set()
    return {address for slave in sorted(slaves.iterdir())
            for address in _block_functions(slave, seen)}


def _last_function(path: Path) -> str | None:
    """The PCI function nearest the end of a resolved sysfs device path."""
    for part in reversed(path.parts):
        try:
            return str(PciAddress.parse(part))
        except InvalidInputError:
            continue
    return None


def _function_of(link: Path) -> str | None:
    """The PCI function a sysfs link (`class/net/eth0`) leads into: the kernel puts a
    netdev under its device (None: a virtual one, or no such link)."""
    if not link.exists():
        return None
    return _last_function(Path(os.path.realpath(link)))


def busy_interfaces(netns: str | None = None) -> dict[str, str]:
    """The interfaces the host uses, and for what: those with a default route or an address
    (not a link-local one), and beneath them their ports (a bridge's, a bond's) and parents
    (a VLAN's, a macvlan's). Read by netlink in `netns` (None: the agent's own)."""
    try:
        with IPRoute(netns=netns, flags=0) if netns else IPRoute() as ipr:
            links = list(ipr.get_links())
            addresses = list(ipr.get_addr())
            routes = list(ipr.get_routes(family=socket.AF_INET)) + list(
                ipr.get_routes(family=socket.AF_INET6))
    except (OSError, NetlinkError) as error:
        where = f"network namespace {netns!r}" if netns else "this host"
        raise NetlinkReadError(f"cannot read the interfaces of {where}: {error}") from None
    names = {link["index"]: str(link.get_attr("IFLA_IFNAME")) for link in links}
    uses: dict[int, list[str]] = {}
    for route in routes:
        if route["dst_len"] or route["type"] != _RTN_UNICAST or route["table"] == _LOCAL_TABLE:
            continue
        for index in _route_devices(route):
            uses.setdefault(index, []).append("default route")
    for address in addresses:
        if address["scope"] in _UNUSED_SCOPES:
            continue
        text = f"address {address.get_attr('IFA_ADDRESS')}/{address['prefixlen']}"
        uses.setdefault(address["index"], []).append(text)
    below: dict[int, list[int]] = {}
    for link in links:
        upper = link.get_attr("IFLA_MASTER")
        if upper is not None:
            below.setdefault(upper, []).append(link["index"])
        if _parent_carries(link):
            below.setdefault(link["index"], []).append(link.get_attr("IFLA_LINK"))
    busy: dict[str, list[str]] = {}
    for index, why in uses.items():
        if names.get(index) == "lo":
            continue
        reason = _listed_uses(why)
        for lower, via in _beneath(index, below, names):
            busy.setdefault(names[lower], []).append(
                reason if via is None else f"{reason} (on {via})")
    return {name: "; ".join(reasons) for name, reasons in busy.items()}


def _parent_carries(link: Any) -> bool:
    """Whether the link's IFLA_LINK is a parent whose traffic it is (a VLAN's, a
    macvlan's, a tunnel's underlay) in this namespace: a veth's names its peer instead."""
    parent = link.get_attr("IFLA_LINK")
    if parent is None or parent == link["index"] or link.get_attr("IFLA_LINK_NETNSID") is not None:
        return False
    info = link.get_attr("IFLA_LINKINFO")
    return info is None or info.get_attr("IFLA_INFO_KIND") != "veth"


def _listed_uses(uses: Iterable[str]) -> str:
    return ", ".join(dict.fromkeys(uses))


def _route_devices(route: Any) -> list[int]:
    """The interfaces a route leaves by: its own, or each of its next hops'."""
    oif = route.get_attr("RTA_OIF")
    hops = route.get_attr("RTA_MULTIPATH") or []
    return ([oif] if oif is not None else []) + [hop["oif"] for hop in hops if "oif" in hop]


def _beneath(index: int, below: Mapping[int, list[int]], names: Mapping[int, str]
             ) -> list[tuple[int, str | None]]:
    """Interface `index` (via None) and every interface beneath it, with the name of the
    interface in use above it."""
    found: list[tuple[int, str | None]] = [(index, None)]
    seen = {index}
    queue = list(below.get(index, []))
    while queue:
        lower = queue.pop()
        if lower in seen or lower not in names:
            continue
        seen.add(lower)
        found.append((lower, names[index]))
        queue += below.get(lower, [])
    return found
