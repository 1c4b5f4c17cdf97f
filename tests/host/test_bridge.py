"""Normal ports on bridges, through netlink in a network namespace of the test's own:
bridge mapping, the checks before a VM is plugged in, and tagging a tap with its VLAN."""

from __future__ import annotations

import json
import subprocess

import pytest

from passthru.host.bridge import BridgeError, NetlinkBridgePorts, bridge_for


def ip(namespace: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", "-n", namespace, *args], capture_output=True, text=True,
                          check=False)


def test_a_physical_network_maps_to_its_bridge() -> None:
    assert bridge_for({"physnet1": "br-prov"}, "physnet1", "p1") == "br-prov"
    with pytest.raises(BridgeError, match=r"port p1 is on physical network 'physnet2', which "
                                          r"this host maps to no bridge \(bridge_mappings: "
                                          r"physnet1 = 'br-prov'\); add physnet2"):
        bridge_for({"physnet1": "br-prov"}, "physnet2", "p1")


def test_checks_refuse_a_missing_bridge_a_non_bridge_and_a_tag_without_filtering(
        namespace: str) -> None:
    bridges = NetlinkBridgePorts(namespace)
    with pytest.raises(BridgeError, match=r"bridge 'br-x' does not exist on this host"):
        bridges.check("br-x", tagged=False)
    ip(namespace, "link", "add", "veth-a", "type", "veth", "peer", "name", "veth-b")
    with pytest.raises(BridgeError, match=r"'veth-a' is not a Linux bridge"):
        bridges.check("veth-a", tagged=False)
    ip(namespace, "link", "add", "br-x", "type", "bridge")
    bridges.check("br-x", tagged=False)
    with pytest.raises(BridgeError, match=r"bridge 'br-x' has VLAN filtering off"):
        bridges.check("br-x", tagged=True)


def test_a_missing_namespace_is_named() -> None:
    with pytest.raises(BridgeError, match=r"network namespace 'pt-none' does not exist"):
        NetlinkBridgePorts("pt-none").check("br0", tagged=False)


def test_a_tap_gets_its_vlan_as_its_only_untagged_pvid(namespace: str) -> None:
    ip(namespace, "link", "add", "br-v", "type", "bridge")
    if ip(namespace, "link", "set", "br-v", "type", "bridge", "vlan_filtering", "1").returncode:
        # Kernels without CONFIG_BRIDGE_VLAN_FILTERING (this machine's) cannot tag at all.
        bridges = NetlinkBridgePorts(namespace)
        ip(namespace, "tuntap", "add", "tap-v", "mode", "tap")
        ip(namespace, "link", "set", "tap-v", "master", "br-v")
        with pytest.raises(BridgeError, match=r"cannot put tap 'tap-v' on VLAN 100: "):
            bridges.tag("tap-v", 100)
        pytest.skip("this kernel has no bridge VLAN filtering; the refusal is checked")
    bridges = NetlinkBridgePorts(namespace)
    bridges.check("br-v", tagged=True)
    ip(namespace, "tuntap", "add", "tap-v", "mode", "tap")
    ip(namespace, "link", "set", "tap-v", "master", "br-v")
    bridges.tag("tap-v", 100)
    vlans = subprocess.run(["bridge", "-n", namespace, "-j", "vlan", "show", "dev", "tap-v"],
                           capture_output=True, text=True, check=True).stdout
    [port] = json.loads(vlans)
    assert [(vlan["vlan"], sorted(vlan.get("flags", []))) for vlan in port["vlans"]] == [
        (100, ["Egress Untagged", "PVID"])]


def test_tagging_a_tap_that_is_gone_says_so(namespace: str) -> None:
    with pytest.raises(BridgeError, match=r"tap 'vnet9' is gone"):
        NetlinkBridgePorts(namespace).tag("vnet9", 7)
