import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from passthru.sim import PROFILES, HostProfile, SimRootError, build_sysfs, expand


def test_tree_is_laid_out_like_the_kernels(sim_sysfs: Callable[[str], Path]) -> None:
    root = sim_sysfs("x710-2x")
    entry = root / "bus/pci/devices/0000:3b:00.1"
    assert entry.is_symlink()
    assert str(entry.readlink()) == "../../../devices/pci0000:3b/0000:3b:00.1"
    pf = entry.resolve()
    assert pf == (root / "devices/pci0000:3b/0000:3b:00.1").resolve()
    assert (pf / "vendor").read_text() == "0x8086\n"
    assert (pf / "device").read_text() == "0x1572\n"
    assert (pf / "class").read_text() == "0x020000\n"
    assert (pf / "subsystem_vendor").read_text() == "0x8086\n"
    assert (pf / "numa_node").read_text() == "0\n"
    assert (pf / "sriov_totalvfs").read_text() == "64\n"
    assert (pf / "sriov_numvfs").read_text() == "8\n"
    assert (pf / "driver").resolve() == (root / "bus/pci/drivers/i40e").resolve()
    assert (root / "bus/pci/drivers/i40e/0000:3b:00.1").resolve() == pf
    group = (pf / "iommu_group").resolve()
    assert group.parent == (root / "kernel/iommu_groups").resolve()
    assert (group / "devices/0000:3b:00.1").resolve() == pf
    vf = (pf / "virtfn7").resolve()
    assert vf.name == "0000:3b:0a.7"
    assert (vf / "physfn").resolve() == pf
    assert (vf / "device").read_text() == "0x154c\n"
    assert (vf / "driver").resolve().name == "iavf"
    assert (pf / "net/enp59s0f1/address").read_text() == "3c:fd:fe:00:3b:01\n"
    assert (vf / "net/enp59s0f1v7").is_dir()


def test_one_entry_per_function(sim_sysfs: Callable[[str], Path]) -> None:
    for name, profile in PROFILES.items():
        if name.startswith("big"):
            continue
        root = sim_sysfs(name)
        listed = sorted(p.name for p in (root / "bus/pci/devices").iterdir())
        assert listed == [f.address for f in expand(profile)]


def test_no_numa_node_is_written_as_minus_one(sim_sysfs: Callable[[str], Path]) -> None:
    root = sim_sysfs("mixed")
    assert (root / "bus/pci/devices/0000:5e:00.0/numa_node").read_text() == "-1\n"


def test_rebuilding_replaces_an_earlier_host(tmp_path: Path) -> None:
    root = tmp_path / "host"
    build_sysfs(PROFILES["mixed"], root)
    build_sysfs(PROFILES["qat"], root)
    assert not (root / "bus/pci/devices/0000:17:00.0").exists()
    assert (root / "bus/pci/devices/0000:88:00.0").exists()


def test_a_foreign_directory_is_never_replaced(tmp_path: Path) -> None:
    (tmp_path / "precious.txt").write_text("keep me")
    with pytest.raises(SimRootError, match="not empty"):
        build_sysfs(PROFILES["qat"], tmp_path)
    assert (tmp_path / "precious.txt").read_text() == "keep me"


def test_tree_can_be_moved(tmp_path: Path) -> None:
    build_sysfs(PROFILES["connectx"], tmp_path / "a")
    shutil.copytree(tmp_path / "a", tmp_path / "b", symlinks=True)
    shutil.rmtree(tmp_path / "a")
    pf = (tmp_path / "b/bus/pci/devices/0000:af:00.0").resolve()
    assert (pf / "virtfn0").resolve().parent == pf.parent
    assert (pf / "driver").resolve() == (tmp_path / "b/bus/pci/drivers/mlx5_core").resolve()


def test_empty_host_builds(tmp_path: Path) -> None:
    root = build_sysfs(HostProfile("empty", "", ()), tmp_path / "empty")
    assert list((root / "bus/pci/devices").iterdir()) == []
