"""Normal ports on host bridges: which bridge a physical network is on, and the VLAN of a
VM's tap.

A physical network maps to a Linux bridge in the host config (`bridge_mappings`); libvirt
makes the VM's tap and enslaves it. libvirt tags taps only on Open vSwitch bridges, so for
a VLAN network passthru uses the Linux bridge's own VLAN filtering: the tap's bridge port
gets the network's VLAN as its only VLAN, untagged and as PVID (what `bridge vlan add dev
<tap> vid <N> pvid untagged` does), after its default VLAN 1 is removed. The bridge must
have `vlan_filtering` on and its uplink must carry the VLANs tagged; that is the host's
network setup, which passthru checks and does not change (turning filtering on would
re-wire every other port of the bridge). The domain is started paused, its taps tagged,
and only then resumed, so a guest never sends a frame on the wrong VLAN.
"""

from __future__ import annotations

import errno
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from passthru.errors import HostError

#: The VLAN a Linux bridge gives every new port (its `default_pvid`).
_DEFAULT_PVID = 1


class BridgeError(HostError):
    """A bridge that is missing, cannot carry the port's VLAN, or a tap that could not be
    tagged."""


def bridge_for(mappings: Mapping[str, str], physical_network: str, port_id: str) -> str:
    """The host bridge of `physical_network`; refuses one the host config does not map."""
    try:
        return mappings[physical_network]
    except KeyError:
        known = ", ".join(f"{net} = {br!r}" for net, br in sorted(mappings.items())) or "none"
        raise BridgeError(f"port {port_id} is on physical network {physical_network!r}, which "
                          f"this host maps to no bridge (bridge_mappings: {known}); add "
                          f"{physical_network} = \"<bridge>\" to bridge_mappings in the host "
                          f"config, or schedule the server elsewhere") from None


class BridgePorts(Protocol):
    """Checks bridges and tags taps; `NetlinkBridgePorts` does it through the kernel."""

    def check(self, bridge: str, tagged: bool) -> None:
        """Refuse a bridge that is missing, or without VLAN filtering for a tagged port."""

    def tag(self, tap: str, vlan: int) -> None:
        """Make `vlan` the only VLAN of `tap`'s bridge port, untagged."""


@dataclass(frozen=True, slots=True)
class NetlinkBridgePorts:
    """Bridges and taps through netlink in network namespace `netns` (None: the agent's
    own), the one libvirt makes its taps in."""

    netns: str | None = None

    def _open(self) -> IPRoute:
        if self.netns is None:
            return IPRoute()
        try:
            return IPRoute(netns=self.netns, flags=0)  # never create the namespace
        except FileNotFoundError:
            raise BridgeError(f"network namespace {self.netns!r} does not exist") from None

    def check(self, bridge: str, tagged: bool) -> None:
        with self._open() as ipr:
            found = ipr.link_lookup(ifname=bridge)
            if not found:
                raise BridgeError(f"bridge {bridge!r} does not exist on this host; create it "
                                  f"or fix bridge_mappings in the host config")
            info = ipr.get_links(found[0])[0].get_attr("IFLA_LINKINFO")
            if info is None or info.get_attr("IFLA_INFO_KIND") != "bridge":
                raise BridgeError(f"{bridge!r} is not a Linux bridge; bridge_mappings must "
                                  f"name bridges")
            filtering = info.get_attr("IFLA_INFO_DATA").get_attr("IFLA_BR_VLAN_FILTERING")
            if tagged and not filtering:
                raise BridgeError(f"bridge {bridge!r} has VLAN filtering off, so it cannot keep "
                                  f"a VLAN port's traffic apart; turn it on (ip link set "
                                  f"{bridge} type bridge vlan_filtering 1) and carry the "
                                  f"VLANs tagged on its uplink")

    def tag(self, tap: str, vlan: int) -> None:
        with self._open() as ipr:
            found = ipr.link_lookup(ifname=tap)
            if not found:
                raise BridgeError(f"tap {tap!r} is gone; the VM stopped before its VLAN "
                                  f"{vlan} was set")
            try:
                try:
                    ipr.vlan_filter("del", index=found[0], vlan_info={"vid": _DEFAULT_PVID})
                except NetlinkError as error:
                    if error.code != errno.ENOENT:  # a bridge without a default VLAN
                        raise
                ipr.vlan_filter("add", index=found[0],
                                vlan_info={"vid": vlan, "flags": ["pvid", "untagged"]})
            except NetlinkError as error:
                raise BridgeError(f"cannot put tap {tap!r} on VLAN {vlan}: {error.args[1]} "
                                  f"(does the kernel have bridge VLAN filtering, "
                                  f"CONFIG_BRIDGE_VLAN_FILTERING?)") from None
