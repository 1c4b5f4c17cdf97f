"""Each simulated host with the host config `passthru sim` suggests for it: what the
whitelist takes, with which tags, and the pools it reports."""

from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from passthru.host.config import HostConfig, load_host_config, scan
from passthru.pci.device import PHYSICAL_NETWORK, DevType
from passthru.pci.pool import Pool, build_pools
from passthru.pci.spec import Decision
from passthru.sim import PROFILES, host_config_toml


def offer(
    tmp_path: Path, sim_sysfs: Callable[[str], Path], name: str
) -> tuple[HostConfig, list[Decision], list[Pool]]:
    path = tmp_path / f"{name}.toml"
    path.write_text(host_config_toml(PROFILES[name], sysfs_root=sim_sysfs(name)))
    config = load_host_config(path)
    decisions = config.whitelist.apply(scan(config))
    taken = [d.device for d in decisions if d.taken]
    return config, decisions, build_pools(taken, config.pool_attrs)


def test_x710_two_networks_with_excluded_vfs(
    tmp_path: Path, sim_sysfs: Callable[[str], Path]
) -> None:
    _, decisions, pools = offer(tmp_path, sim_sysfs, "x710-2x")
    taken = [d.device for d in decisions if d.taken]
    assert all(d.dev_type is DevType.VF and d.product_id == "154c" for d in taken)
    assert Counter(d.physical_network for d in taken) == {"physnet1": 16, "physnet2": 14}
    by_address = {d.device.address: d for d in decisions}
    assert by_address["0000:86:0a.7"].reason == "excluded by entry 4 (0000:86:0a.7)"
    assert not by_address["0000:86:0a.7"].taken
    assert by_address["0000:86:0a.5"].tags == {PHYSICAL_NETWORK: "physnet2"}
    assert by_address["0000:3b:00.0"].reason == "no entry matched"  # the PF itself
    # One pool per PF: the scheduler needs each VF's parent and NUMA node.
    assert sorted((p.parent_addr, p.numa_node, p.attrs[PHYSICAL_NETWORK], p.count)
                  for p in pools) == [
        ("0000:3b:00.0", 0, "physnet1", 8), ("0000:3b:00.1", 0, "physnet2", 8),
        ("0000:86:00.0", 1, "physnet1", 8), ("0000:86:00.1", 1, "physnet2", 6),
    ]


def test_gpu_host_pools_by_numa(tmp_path: Path, sim_sysfs: Callable[[str], Path]) -> None:
    _, _, pools = offer(tmp_path, sim_sysfs, "gpu-2numa")
    assert sorted((p.attrs["product_id"], p.numa_node, p.count) for p in pools) == [
        ("1eb8", 0, 1), ("1eb8", 1, 1), ("20b5", 0, 2), ("20b5", 1, 2)]
    assert all(p.attrs["e.group"] == "gpu" for p in pools)


def test_qat_classes(tmp_path: Path, sim_sysfs: Callable[[str], Path]) -> None:
    config, _, pools = offer(tmp_path, sim_sysfs, "qat")
    assert config.pool_attrs == ("e.QAclass",)
    counts: Counter[str] = Counter()
    for pool in pools:
        counts[pool.attrs["e.QAclass"]] += pool.count
    assert counts == {"1": 12, "2": 4, "3": 4}


def test_e810_offers_a_whole_pf(tmp_path: Path, sim_sysfs: Callable[[str], Path]) -> None:
    _, decisions, _ = offer(tmp_path, sim_sysfs, "e810")
    taken = {d.device.address: d.device for d in decisions if d.taken}
    assert taken["0000:af:00.0"].dev_type is DevType.PF
    assert taken["0000:af:00.0"].physical_network == "physnet2"
    assert sum(d.dev_type is DevType.VF for d in taken.values()) == 32


def test_mixed_host(tmp_path: Path, sim_sysfs: Callable[[str], Path]) -> None:
    _, decisions, pools = offer(tmp_path, sim_sysfs, "mixed")
    taken = {d.device.address: d.device for d in decisions if d.taken}
    assert taken["0000:5e:00.0"].tags == {"e.group": "nvme"}
    assert taken["0000:5e:00.0"].numa_node is None
    assert "0000:3b:0a.3" not in taken
    assert {d.tags.get("e.QAclass") for d in taken.values() if d.product_id == "37c9"} == {"1"}
    # Pools partition what was taken.
    assert sorted(a for p in pools for a in (d.address for d in p.devices)) == sorted(taken)


@pytest.mark.parametrize("name", [n for n in PROFILES if not n.startswith("big")])
def test_every_suggested_config_takes_something(
    tmp_path: Path, sim_sysfs: Callable[[str], Path], name: str
) -> None:
    _, decisions, pools = offer(tmp_path, sim_sysfs, name)
    assert any(d.taken for d in decisions)
    # The chipset and the management NIC always stay with the host.
    assert not any(d.taken for d in decisions if d.device.address.startswith("0000:0"))
    assert pools
