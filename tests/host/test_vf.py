"""VF settings: the netlink request (checked through pyroute2's own encoder), the applier
against a real kernel in a throwaway network namespace, and VF numbers from sysfs."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pyroute2 import IPRoute, netns
from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg
from pyroute2.requests.link import LinkIPRouteFilter

from passthru.errors import InvalidInputError
from passthru.host.vf import (
    RESET,
    LinkState,
    VfConfig,
    VfConfigError,
    VfRate,
    apply_vf_config,
    reset_vf,
    vf_config_for,
    vf_index,
    vf_request,
)
from passthru.pci.binding import Binding, NetworkSpec, PortSpec, bind_port
from passthru.pci.device import PHYSICAL_NETWORK, DevType, PciDevice
from passthru.sim.profile import expand
from passthru.sim.profiles import E810_HOST
from passthru.sim.sysfs_tree import build_sysfs

FULL = VfConfig(mac="FA:16:3E:00:00:01", vlan=100, spoofchk=False, trust=True,
                link_state=LinkState.DISABLE, rate=VfRate(10, 1000))
SETTINGS = ("mac", "vlan", "spoofchk", "trust", "link_state", "rate")


def encoded(request: dict[str, object]) -> dict[str, dict[str, object]]:
    """What the kernel would receive: the request encoded as an RTM_SETLINK message by
    pyroute2 and decoded again, as {IFLA_VF_* name: fields}."""
    vf_list = LinkIPRouteFilter("set").get_vf(dict(request))
    message = ifinfmsg()
    message["index"] = 7
    message["attrs"] = [("IFLA_VFINFO_LIST", vf_list)]
    message.encode()
    decoded = ifinfmsg(message.data)
    decoded.decode()
    (info,) = decoded.get_attr("IFLA_VFINFO_LIST").get_attrs("IFLA_VF_INFO")
    return {name: dict(value) for name, value in info["attrs"]}


def test_request_carries_every_setting() -> None:
    assert vf_request(3, FULL) == {
        "vf": 3, "mac": "fa:16:3e:00:00:01", "vlan": 100, "spoofchk": 0, "trust": 1,
        "link_state": 2, "rate": {"min_tx_rate": 10, "max_tx_rate": 1000}}


def test_request_encodes_to_the_ifla_vf_attributes() -> None:
    assert encoded(vf_request(3, FULL)) == {
        "IFLA_VF_MAC": {"vf": 3, "mac": "fa:16:3e:00:00:01"},
        "IFLA_VF_VLAN": {"vf": 3, "vlan": 100, "qos": 0},
        "IFLA_VF_SPOOFCHK": {"vf": 3, "spoofchk": 0},
        "IFLA_VF_TRUST": {"vf": 3, "trust": 1},
        "IFLA_VF_LINK_STATE": {"vf": 3, "link_state": 2},
        "IFLA_VF_RATE": {"vf": 3, "min_tx_rate": 10, "max_tx_rate": 1000},
    }


def test_unset_settings_are_not_sent() -> None:
    assert vf_request(0, VfConfig()) == {"vf": 0}
    assert vf_request(5, VfConfig(vlan=0)) == {"vf": 5, "vlan": 0}


def test_reset_clears_everything() -> None:
    assert vf_request(1, RESET) == {
        "vf": 1, "mac": "00:00:00:00:00:00", "vlan": 0, "spoofchk": 1, "trust": 0,
        "link_state": 0, "rate": {"min_tx_rate": 0, "max_tx_rate": 0}}


configs = st.builds(
    VfConfig,
    mac=st.none() | st.binary(min_size=6, max_size=6).map(
        lambda raw: ":".join(f"{raw[0] & 0xFE:02x}" if i == 0 else f"{b:02x}"
                             for i, b in enumerate(raw))),
    vlan=st.none() | st.integers(0, 4094),
    spoofchk=st.none() | st.booleans(),
    trust=st.none() | st.booleans(),
    link_state=st.none() | st.sampled_from(LinkState),
    rate=st.none() | st.builds(VfRate, st.just(0), st.integers(0, 100_000)),
)


@given(st.integers(0, 255), configs)
def test_any_config_survives_pyroute2_encoding(vf: int, config: VfConfig) -> None:
    request = vf_request(vf, config)
    sent = encoded(request)
    assert all(fields["vf"] == vf for fields in sent.values())
    names = {"IFLA_VF_" + key.upper() for key in request if key != "vf"}
    assert set(sent) == names
    if config.mac is not None:
        assert sent["IFLA_VF_MAC"]["mac"] == config.mac
    if config.vlan is not None:
        assert sent["IFLA_VF_VLAN"]["vlan"] == config.vlan
    if config.rate is not None:
        assert sent["IFLA_VF_RATE"]["max_tx_rate"] == config.rate.max_mbps


@pytest.mark.parametrize(("make", "message"), [
    (lambda: VfConfig(mac="01:00:5e:00:00:01"), r"is a multicast address .*; a port or VF needs a unicast MAC"),
    (lambda: VfConfig(mac="fa:16:3e"), r"VF mac address 'fa:16:3e' is not a MAC"),
    (lambda: VfConfig(vlan=4095), r"VF vlan 4095 is out of range"),
    (lambda: VfConfig(vlan=-1), r"VF vlan -1 is out of range"),
    (lambda: VfRate(-1, 0), r"rates cannot be negative"),
    (lambda: VfRate(100, 10), r"min 100 Mbit/s exceeds max 10 Mbit/s"),
    (lambda: vf_request(-1, RESET), r"VF number -1 is negative"),
])
def test_bad_settings_are_refused(make: Callable[[], object], message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        make()


def vf_device() -> PciDevice:
    return PciDevice("0000:3b:02.1", "8086", "154c", DevType.VF, parent_addr="0000:3b:00.0",
                     netdev="enp59s0f0v1", tags={PHYSICAL_NETWORK: "physnet1"})


def config_for(vnic: str = "direct", network: NetworkSpec | None = None,
               **port: object) -> VfConfig | None:
    network = network or NetworkSpec("prod", "vlan", "physnet1", 100)  # type: ignore[arg-type]
    spec = PortSpec("p1", vnic, "fa:16:3e:00:00:01", **port)  # type: ignore[arg-type]
    binding: Binding = bind_port(spec, network, None if vnic == "normal" else vf_device())
    return vf_config_for(binding)


def test_config_for_a_direct_port_sets_mac_vlan_spoofchk_and_trust() -> None:
    assert config_for() == VfConfig(mac="fa:16:3e:00:00:01", vlan=100, spoofchk=True,
                                    trust=False)


def test_config_without_port_security_turns_spoof_checking_off_and_keeps_rates() -> None:
    config = config_for(port_security=False, trusted=True, max_tx_rate=500)
    assert config is not None
    assert (config.spoofchk, config.trust, config.rate) == (False, True, VfRate(0, 500))


def test_config_on_flat_network_untags_and_profile_leaves_vlan_alone() -> None:
    flat = NetworkSpec("ext", "flat", "physnet1")  # type: ignore[arg-type]
    assert config_for(network=flat) == VfConfig(mac="fa:16:3e:00:00:01", vlan=0,
                                                spoofchk=True, trust=False)
    profiled = config_for(profile_id="finance")
    assert profiled is not None and profiled.vlan is None


def test_macvtap_configures_its_vf_while_whole_pfs_and_normal_ports_need_none() -> None:
    macvtap = config_for("macvtap")
    assert macvtap is not None and (macvtap.mac, macvtap.vlan) == ("fa:16:3e:00:00:01", 100)
    assert config_for("normal") is None
    pf = PciDevice("0000:3b:00.0", "8086", "1572", DevType.PF, tags={PHYSICAL_NETWORK: "physnet1"})
    port = PortSpec("p2", "direct-physical", "fa:16:3e:00:00:02")  # type: ignore[arg-type]
    whole = bind_port(port, NetworkSpec("prod", "vlan", "physnet1", 100), pf)  # type: ignore[arg-type]
    assert vf_config_for(whole) is None


@pytest.fixture
def namespace() -> Iterator[str]:
    """A throwaway network namespace holding a veth pair: a netdev without SR-IOV."""
    name = f"passthru-test-{uuid.uuid4().hex[:8]}"
    netns.create(name)
    try:
        with IPRoute(netns=name, flags=0) as ipr:
            ipr.link("add", ifname="pf0", kind="veth", peer="pf0peer")
        yield name
    finally:
        netns.remove(name)


def test_kernel_refusal_names_pf_vf_and_setting(namespace: str) -> None:
    with pytest.raises(VfConfigError) as error:
        apply_vf_config("pf0", 3, FULL, netns=namespace)
    assert str(error.value) == (
        "cannot set mac fa:16:3e:00:00:01 on VF 3 of PF pf0: operation not supported "
        "(the PF has no SR-IOV VFs or its driver does not offer this setting)")


@pytest.mark.parametrize(("config", "shown"), [
    (VfConfig(vlan=42), "vlan 42"),
    (VfConfig(spoofchk=False), "spoofchk off"),
    (VfConfig(trust=True), "trust on"),
    (VfConfig(link_state=LinkState.ENABLE), "link_state enable"),
    (VfConfig(rate=VfRate(0, 1000)), "rate min 0 / max 1000 Mbit/s"),
])
def test_each_setting_is_sent_on_its_own(namespace: str, config: VfConfig, shown: str) -> None:
    with pytest.raises(VfConfigError, match=f"cannot set {shown} on VF 0 of PF pf0"):
        apply_vf_config("pf0", 0, config, netns=namespace)


def test_reset_skips_what_the_driver_cannot_do(namespace: str) -> None:
    assert reset_vf("pf0", 3, netns=namespace) == SETTINGS


def test_nothing_to_set_sends_nothing(namespace: str) -> None:
    assert apply_vf_config("pf0", 3, VfConfig(), netns=namespace) == ()


def test_missing_pf_netdev_is_named(namespace: str) -> None:
    with pytest.raises(VfConfigError, match=rf"PF netdev 'eth9' not found in network "
                                            rf"namespace '{namespace}'"):
        apply_vf_config("eth9", 0, RESET, netns=namespace)


def test_missing_namespace_is_not_created() -> None:
    name = f"passthru-absent-{uuid.uuid4().hex[:8]}"
    with pytest.raises(VfConfigError, match=f"network namespace '{name}' does not exist"):
        apply_vf_config("pf0", 0, RESET, netns=name)
    assert name not in netns.listnetns()


def sysfs_pf(root: Path, pf: str, vfs: list[str]) -> None:
    """A PF with `virtfnN` links laid out as the kernel does (VFs beside their PF)."""
    devices = root / "devices" / f"pci{pf[:7]}"
    bus = root / "bus" / "pci" / "devices"
    bus.mkdir(parents=True, exist_ok=True)
    for address in (pf, *vfs):
        (devices / address).mkdir(parents=True)
        (bus / address).symlink_to(os.path.relpath(devices / address, bus))
    for number, vf in enumerate(vfs):
        (devices / pf / f"virtfn{number}").symlink_to(f"../{vf}")


def test_vf_index_follows_virtfn_links(tmp_path: Path) -> None:
    vfs = [f"0000:3b:{2 + n // 8:02x}.{n % 8}" for n in range(12)]
    sysfs_pf(tmp_path, "0000:3b:00.0", vfs)
    sysfs_pf(tmp_path, "0000:3b:00.1", ["0000:3b:0a.0"])
    assert vf_index(tmp_path, "0000:3b:00.0", "0000:3b:02.0") == 0
    assert vf_index(tmp_path, "0000:3b:00.0", "0000:3b:03.3") == 11
    assert vf_index(str(tmp_path), "0000:3b:00.1", "0000:3b:0a.0") == 0


def test_vf_index_on_a_simulated_e810_host(tmp_path: Path) -> None:
    functions = expand(E810_HOST)
    build_sysfs(E810_HOST, tmp_path)
    pfs = [f for f in functions if f.virtfns]
    assert pfs, "the E810 host has PFs with VFs"
    for pf in pfs:
        found = [vf_index(tmp_path, pf.address, vf) for vf in pf.virtfns]
        assert found == list(range(len(pf.virtfns)))


def test_vf_index_names_what_is_missing(tmp_path: Path) -> None:
    sysfs_pf(tmp_path, "0000:3b:00.0", ["0000:3b:02.0", "0000:3b:02.1"])
    with pytest.raises(VfConfigError, match=r"0000:3b:0a.0 is not a VF of PF 0000:3b:00.0 "
                                            r"\(.* has 2 virtfn links\)"):
        vf_index(tmp_path, "0000:3b:00.0", "0000:3b:0a.0")
    with pytest.raises(VfConfigError, match=r"PF 0000:86:00.0 not found under"):
        vf_index(tmp_path, "0000:86:00.0", "0000:86:02.0")
