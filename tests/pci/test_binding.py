"""Port binding: vif types, binding profiles, VLANs, and the seed's plan-A refusals."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from passthru.errors import InvalidInputError
from passthru.pci.binding import (
    NetworkSpec,
    NetworkType,
    PortSpec,
    VifType,
    VnicType,
    bind_port,
    normalize_mac,
    unicast_mac,
)
from passthru.pci.device import PHYSICAL_NETWORK, DevType, PciDevice

PF = "0000:0a:00.0"


def vf(physnet: str | None = "physnet1", netdev: str | None = "enp10s0f0v1") -> PciDevice:
    tags = {PHYSICAL_NETWORK: physnet} if physnet else {}
    return PciDevice("0000:0a:10.1", "8086", "154c", DevType.VF, parent_addr=PF,
                     netdev=netdev, driver="iavf", tags=tags)


def pf() -> PciDevice:
    return PciDevice(PF, "8086", "1572", DevType.PF, netdev="enp10s0f0",
                     tags={PHYSICAL_NETWORK: "physnet1"})


def vlan_net(vlan: int = 100) -> NetworkSpec:
    return NetworkSpec("prod", NetworkType.VLAN, "physnet1", vlan)


def flat_net() -> NetworkSpec:
    return NetworkSpec("ext", NetworkType.FLAT, "physnet1")


def port(vnic: VnicType | str, **kwargs: object) -> PortSpec:
    return PortSpec("p1", vnic, "FA:16:3E:00:00:01", **kwargs)  # type: ignore[arg-type]


def test_direct_binds_vf_as_hw_veb_with_profile_and_vlan() -> None:
    binding = bind_port(port(VnicType.DIRECT), vlan_net(100), vf())
    assert binding.vif_type is VifType.HW_VEB
    assert binding.vlan == 100
    assert binding.mac == "fa:16:3e:00:00:01"
    assert binding.netdev is None
    assert binding.profile == {"pci_slot": "0000:0a:10.1", "pci_vendor_info": "8086:154c",
                               "physical_network": "physnet1"}


def test_flat_network_gives_no_vlan() -> None:
    assert bind_port(port("direct"), flat_net(), vf()).vlan is None


def test_macvtap_binds_over_the_vf_netdev() -> None:
    binding = bind_port(port("macvtap"), vlan_net(42), vf(netdev="ens1f0v3"))
    assert (binding.vif_type, binding.netdev, binding.vlan) == (VifType.HW_VEB, "ens1f0v3", 42)
    assert binding.pci_slot == "0000:0a:10.1"


def test_direct_physical_binds_whole_pf_untagged() -> None:
    binding = bind_port(port(VnicType.DIRECT_PHYSICAL), vlan_net(100), pf())
    assert binding.vif_type is VifType.HOSTDEV_PHYSICAL
    assert binding.pci_slot == PF
    assert binding.pci_vendor_info == "8086:1572"
    assert binding.vlan is None


def test_normal_port_gets_no_device() -> None:
    binding = bind_port(port("normal"), vlan_net(), None)
    assert binding.vif_type is VifType.UNBOUND
    assert binding.pci_slot is None
    assert binding.profile == {}


def test_normal_port_refuses_a_device() -> None:
    with pytest.raises(InvalidInputError, match=r"vnic_type normal and takes no PCI device"):
        bind_port(port("normal"), vlan_net(), vf())


def test_802_1qbh_profile_carries_the_vlan() -> None:
    binding = bind_port(port("direct", profile_id="finance"), vlan_net(100), vf())
    assert binding.profile_id == "finance"
    assert binding.vlan is None


def test_trusted_port_shows_in_binding_profile_and_keeps_limits() -> None:
    binding = bind_port(port("direct", trusted=True, port_security=False,
                             min_tx_rate=100, max_tx_rate=1000), flat_net(), vf())
    assert binding.profile["trusted"] is True
    assert (binding.port_security, binding.min_tx_rate, binding.max_tx_rate) == (False, 100, 1000)


@pytest.mark.parametrize(("vnic", "device", "message"), [
    ("direct", pf(), r"needs a type-VF, but 0000:0a:00.0 is a type-PF"),
    ("macvtap", pf(), r"needs a type-VF"),
    ("direct-physical", vf(), r"needs a type-PF, but 0000:0a:10.1 is a type-VF"),
    ("direct", None, r"port p1 \(vnic_type direct\) needs a type-VF on physical_network "
                     r"physnet1 and none was claimed"),
])
def test_wrong_or_missing_device_is_refused(vnic: str, device: PciDevice | None,
                                            message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        bind_port(port(vnic), vlan_net(), device)


def test_device_on_another_physical_network_aborts_the_boot() -> None:
    with pytest.raises(InvalidInputError) as error:
        bind_port(port("direct"), NetworkSpec("dmz", NetworkType.VLAN, "physnet2", 7),
                  vf("physnet1"))
    text = str(error.value)
    assert "network 'dmz' (physical_network physnet2)" in text
    assert "0000:0a:10.1 on physnet1" in text
    assert "e.physical_network=physnet2" in text


def test_untagged_device_is_not_on_the_network() -> None:
    with pytest.raises(InvalidInputError, match="on no physical_network tag"):
        bind_port(port("direct"), vlan_net(), vf(physnet=None))


def test_macvtap_needs_a_vf_netdev() -> None:
    with pytest.raises(InvalidInputError, match=r"has none \(driver iavf\)"):
        bind_port(port("macvtap"), vlan_net(), vf(netdev=None))


@pytest.mark.parametrize(("args", "message"), [
    (("n", "vxlan", "physnet1", 5), r"network type 'vxlan' is not one of: flat, vlan"),
    (("n", "flat", "physnet1", 5), r"flat but has segmentation_id 5"),
    (("n", "vlan", "physnet1", None), r"needs a segmentation_id from 1 to 4094, got None"),
    (("n", "vlan", "physnet1", 4095), r"got 4095"),
    (("n", "vlan", "physnet1", 0), r"got 0"),
    (("n", "flat", "", None), r"names no physical_network"),
])
def test_bad_networks_are_refused(args: tuple[str, str, str, int | None], message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        NetworkSpec(*args)  # type: ignore[arg-type]


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"vnic_type": "sriov"}, r"port p1: vnic_type 'sriov' is not one of: normal, direct"),
    ({"mac": "fa:16:3e:00:01"}, r"port p1: mac address 'fa:16:3e:00:01' is not a MAC"),
    ({"profile_id": "x", "vnic_type": "direct-physical"}, r"802.1Qbh port profile needs"),
    ({"min_tx_rate": -1}, r"min_tx_rate -1 is negative"),
    ({"min_tx_rate": 20, "max_tx_rate": 10}, r"min_tx_rate 20 exceeds max_tx_rate 10"),
    ({"port_id": ""}, r"non-empty port_id"),
    ({"mac": "01:00:5e:00:00:01"}, r"port p1: mac address '01:00:5e:00:00:01' is a multicast"),
])
def test_bad_ports_are_refused(kwargs: dict[str, object], message: str) -> None:
    fields: dict[str, object] = {"port_id": "p1", "vnic_type": "direct",
                                 "mac": "fa:16:3e:00:00:01", **kwargs}
    with pytest.raises(InvalidInputError, match=message):
        PortSpec(**fields)  # type: ignore[arg-type]


def test_min_rate_alone_is_a_guarantee_without_limit() -> None:
    assert PortSpec("p", VnicType.DIRECT, "fa:16:3e:00:00:01", min_tx_rate=50).min_tx_rate == 50


def test_vnic_types_map_to_device_types() -> None:
    assert {v: v.dev_type for v in VnicType} == {
        VnicType.NORMAL: None, VnicType.DIRECT: DevType.VF,
        VnicType.MACVTAP: DevType.VF, VnicType.DIRECT_PHYSICAL: DevType.PF}


@given(st.binary(min_size=6, max_size=6), st.sampled_from([":", "-"]), st.booleans())
def test_normalize_mac_round_trips_any_spelling(raw: bytes, sep: str, upper: bool) -> None:
    canonical = ":".join(f"{b:02x}" for b in raw)
    spelled = canonical.replace(":", sep)
    assert normalize_mac(spelled.upper() if upper else spelled) == canonical



@pytest.mark.parametrize(("mac", "why"), [
    ("00:00:00:00:00:00", "is all zeros, which names no interface"),
    ("FF-FF-FF-FF-FF-FF", "is the broadcast address"),
    ("01:00:5e:00:00:fb", "is a multicast address"),
    ("33:33:00:00:00:01", "is a multicast address"),
])
def test_only_unicast_macs_are_taken(mac: str, why: str) -> None:
    with pytest.raises(InvalidInputError) as refused:
        unicast_mac(mac)
    assert str(refused.value) == (
        f"mac address {mac!r} {why}" + (" (the first octet's lowest bit is 1)"
                                        if "multicast" in why else "")
        + "; a port or VF needs a unicast MAC, whose first octet is even, "
          "e.g. 'fa:16:3e:12:34:56'")


@given(st.binary(min_size=6, max_size=6))
def test_unicast_mac_takes_exactly_the_nonzero_ones_with_an_even_first_octet(raw: bytes) -> None:
    spelled = ":".join(f"{b:02X}" for b in raw)
    if raw[0] & 1 or not any(raw):
        with pytest.raises(InvalidInputError, match="a port or VF needs a unicast MAC"):
            unicast_mac(spelled)
    else:
        assert unicast_mac(spelled) == spelled.lower()


def test_unicast_mac_still_checks_the_spelling() -> None:
    with pytest.raises(InvalidInputError, match=r"'fa:16:3e' is not a MAC address"):
        unicast_mac("fa:16:3e")
