"""The simulated VF applier: what a simulated host records instead of calling netlink."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from passthru.errors import InvalidInputError
from passthru.host.attach import VfSlot
from passthru.host.config import HostConfigError, host_config_from
from passthru.host.sim_vf import SimulatedVfApplier, read_vf_state, vf_state_path
from passthru.host.vf import LinkState, VfConfig, VfConfigError, VfRate

VF = VfSlot("0000:5e:01.1", "enp94s0f0", 1)
OTHER = VfSlot("0000:5e:01.2", "enp94s0f0", 2)

SimSysfs = Callable[[str], Path]


@pytest.fixture
def applier(sim_sysfs: SimSysfs) -> SimulatedVfApplier:
    return SimulatedVfApplier(sim_sysfs("e810"))


def test_settings_are_recorded_per_vf_as_netlink_would_get_them(
        applier: SimulatedVfApplier) -> None:
    applier.apply(VF, VfConfig(mac="FA:16:3E:00:00:01", vlan=100, spoofchk=True, trust=False))
    applier.apply(OTHER, VfConfig(mac="fa:16:3e:00:00:02", vlan=0, link_state=LinkState.ENABLE,
                                  rate=VfRate(0, 1000)))

    assert json.loads(applier.state_file.read_text()) == {
        "0000:5e:01.1": {"pf": "enp94s0f0", "vf": 1, "mac": "fa:16:3e:00:00:01", "vlan": 100,
                         "spoofchk": True, "trust": False},
        "0000:5e:01.2": {"pf": "enp94s0f0", "vf": 2, "mac": "fa:16:3e:00:00:02", "vlan": 0,
                         "link_state": "enable",
                         "rate": {"min_tx_rate": 0, "max_tx_rate": 1000}},
    }
    assert applier.state_file == vf_state_path(applier.sysfs_root)


def test_a_setting_not_sent_keeps_its_value_and_a_reset_clears_everything(
        applier: SimulatedVfApplier) -> None:
    applier.apply(VF, VfConfig(mac="fa:16:3e:00:00:01", vlan=100, trust=True))
    applier.apply(VF, VfConfig(vlan=200))
    assert read_vf_state(applier.state_file)[VF.address] == {
        "pf": "enp94s0f0", "vf": 1, "mac": "fa:16:3e:00:00:01", "vlan": 200, "trust": True}

    applier.reset(VF)

    assert read_vf_state(applier.state_file)[VF.address] == {
        "pf": "enp94s0f0", "vf": 1, "mac": "00:00:00:00:00:00", "vlan": 0, "spoofchk": True,
        "trust": False, "link_state": "auto", "rate": {"min_tx_rate": 0, "max_tx_rate": 0}}


def test_the_file_is_replaced_whole_and_lives_in_the_simulated_tree(
        applier: SimulatedVfApplier) -> None:
    assert read_vf_state(applier.state_file) == {}
    for vlan in range(1, 4):
        applier.apply(VF, VfConfig(vlan=vlan))
    assert sorted(p.name for p in applier.sysfs_root.iterdir() if "vf-state" in p.name) == [
        "vf-state.json"]
    assert applier.state_file.parent == applier.sysfs_root


def test_a_request_netlink_would_refuse_is_refused_and_nothing_recorded(
        applier: SimulatedVfApplier) -> None:
    with pytest.raises(InvalidInputError, match="VF number -1 is negative"):
        applier.apply(VfSlot(VF.address, VF.pf_netdev, -1), VfConfig(vlan=5))
    assert not applier.state_file.exists()


def test_the_real_sysfs_is_refused() -> None:
    with pytest.raises(VfConfigError, match=r"this machine's own /sys; use vf_applier = "
                                            r"'netlink'"):
        SimulatedVfApplier(Path("/sys"))


def test_a_directory_without_a_sysfs_tree_is_refused(tmp_path: Path) -> None:
    with pytest.raises(VfConfigError, match=r"holds no sysfs tree .*passthru sim"):
        SimulatedVfApplier(tmp_path)


def test_the_host_config_chooses_the_applier() -> None:
    assert host_config_from({"host": "h"}).vf_applier == "netlink"
    assert host_config_from({"host": "h", "vf_applier": "simulated"}).vf_applier == "simulated"
    with pytest.raises(HostConfigError, match=r"key 'vf_applier'.*'netlink' or 'simulated'"):
        host_config_from({"host": "h", "vf_applier": "fake"})
