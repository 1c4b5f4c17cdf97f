import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from passthru.host.sysfs import DiscoveryError, discover_sysfs, parse_class
from passthru.pci.address import PciAddress
from passthru.pci.device import DevType
from passthru.sim import PROFILES, Card, HostProfile, build_sysfs
from passthru.sim.hardware import CONNECTX5, E810, QAT_C62X, X710
from tests.host.sim_expectations import expected_devices

SimSysfs = Callable[[str], Path]


@pytest.mark.parametrize("name", [n for n in PROFILES if not n.startswith("big")])
def test_discovery_finds_the_profiles_devices(sim_sysfs: SimSysfs, name: str) -> None:
    assert discover_sysfs(sim_sysfs(name)) == expected_devices(PROFILES[name])


def test_pf_vf_links(sim_sysfs: SimSysfs) -> None:
    devices = {d.address: d for d in discover_sysfs(sim_sysfs("x710-2x"))}
    vf = devices["0000:86:0a.7"]
    assert vf.dev_type is DevType.VF
    assert vf.parent_addr == "0000:86:00.1"
    assert (vf.product_id, vf.driver, vf.netdev) == ("154c", "iavf", "enp134s0f1v7")
    pf = devices["0000:86:00.1"]
    assert pf.dev_type is DevType.PF
    assert (pf.sriov_totalvfs, pf.sriov_numvfs, pf.netdev) == (64, 8, "enp134s0f1")
    children = [d for d in devices.values() if d.parent_addr == pf.address]
    assert len(children) == pf.sriov_numvfs


def test_sriov_capable_function_without_vfs_is_a_pf(sim_sysfs: SimSysfs) -> None:
    devices = {d.address: d for d in discover_sysfs(sim_sysfs("x710-2x"))}
    i350 = devices["0000:02:00.0"]
    assert (i350.dev_type, i350.sriov_totalvfs, i350.sriov_numvfs) == (DevType.PF, 7, 0)
    bridge = devices["0000:00:00.0"]
    assert (bridge.dev_type, bridge.driver, bridge.dev_class) == (DevType.PCI, None, "060000")


def test_numa_nodes_and_iommu_groups(sim_sysfs: SimSysfs) -> None:
    devices = {d.address: d for d in discover_sysfs(sim_sysfs("mixed"))}
    assert devices["0000:5e:00.0"].numa_node is None  # the NVMe, numa_node -1
    assert devices["0000:17:00.0"].numa_node == 0
    assert devices["0000:b1:00.0"].numa_node == 1
    groups = [d.iommu_group for d in devices.values()]
    assert None not in groups and len(set(groups)) == len(groups)
    assert devices["0000:17:00.0"].driver == "vfio-pci"


def test_names_come_from_pci_ids(sim_sysfs: SimSysfs) -> None:
    devices = {d.address: d for d in discover_sysfs(sim_sysfs("gpu-2numa"))}
    assert devices["0000:17:00.0"].vendor_name == "NVIDIA Corporation"
    assert devices["0000:17:00.0"].product_name == "GA100 [A100 PCIe 80GB]"


def test_missing_root_says_what_to_fix(tmp_path: Path) -> None:
    with pytest.raises(DiscoveryError, match="sysfs_root") as error:
        discover_sysfs(tmp_path / "nowhere")
    assert "bus/pci/devices" in str(error.value)


def test_a_device_unplugged_during_the_scan_is_skipped(sim_sysfs: SimSysfs) -> None:
    root = sim_sysfs("gpu-2numa")
    # The bus entry still exists but its directory is gone, as in a hot-unplug race.
    shutil.rmtree((root / "bus/pci/devices/0000:31:00.0").resolve())
    addresses = [d.address for d in discover_sysfs(root)]
    assert "0000:31:00.0" not in addresses
    assert "0000:17:00.0" in addresses


def test_garbage_in_an_id_file_names_the_file(sim_sysfs: SimSysfs) -> None:
    root = sim_sysfs("gpu-2numa")
    (root / "bus/pci/devices/0000:17:00.0/vendor").write_text("nvidia\n")
    with pytest.raises(DiscoveryError, match=r"0000:17:00\.0.*vendor 'nvidia'"):
        discover_sysfs(root)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("0x020000", "020000"), ("0x30200", "030200"), ("", ""), (None, ""), ("junk", "")],
)
def test_class_codes(text: str | None, expected: str) -> None:
    assert parse_class(text) == expected


def test_this_machines_sys() -> None:
    devices = discover_sysfs()
    assert len(devices) == len(list(Path("/sys/bus/pci/devices").iterdir()))
    for device in devices:
        assert str(PciAddress.parse(device.address)) == device.address
        assert len(device.vendor_id) == 4 and len(device.product_id) == 4


nic_cards = st.builds(
    Card,
    model=st.sampled_from([X710, E810, CONNECTX5, QAT_C62X]),
    address=st.sampled_from(["0000:3b:00.0", "0000:86:00.0", "0001:af:00.0"]),
    numa_node=st.sampled_from([None, 0, 1]),
    ports=st.integers(1, 2),
    numvfs=st.integers(0, 16),
)


@settings(max_examples=15, deadline=None)
@given(st.lists(nic_cards, max_size=3, unique_by=lambda card: card.address))
def test_any_nic_host_is_discovered_as_built(cards: list[Card]) -> None:
    profile = HostProfile("generated", "", tuple(cards))
    with tempfile.TemporaryDirectory() as tmp:
        root = build_sysfs(profile, Path(tmp) / "sys")
        devices = discover_sysfs(root)
    assert devices == expected_devices(profile)
    for pf in (d for d in devices if d.dev_type is DevType.PF):
        assert sum(d.parent_addr == pf.address for d in devices) == pf.sriov_numvfs
