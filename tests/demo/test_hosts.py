"""The demo's hosts: simulated ones built with their configs, and this machine's own
devices offered without its bridges."""

from __future__ import annotations

import tomllib
from pathlib import Path

from passthru.demo.hosts import SIMULATED, local_host, simulated_hosts
from passthru.host.config import decide, load_host_config, offered, scan
from passthru.sim import HostProfile, build_sysfs
from passthru.sim.hardware import HOST_BRIDGE
from passthru.sim.profile import Card
from passthru.sim.profiles import GPU_2NUMA

CONTROLLER = "http://127.0.0.1:9"


def test_simulated_hosts_record_vfs_and_use_libvirt_over_their_node_xml(
        tmp_path: Path) -> None:
    hosts = simulated_hosts(tmp_path, CONTROLLER)

    assert [h.profile for h in hosts] == list(SIMULATED)
    for host in hosts:
        assert host.profile is not None
        config = load_host_config(host.config_file)
        assert (config.host, config.controller, config.vf_applier, config.order_interval) == (
            host.name, CONTROLLER, "simulated", 0.5)
        assert config.libvirt_uri == f"test://{tmp_path / host.profile}/node.xml"
        assert Path(config.libvirt_uri.removeprefix("test://")).is_file()
        assert config.sysfs_root == host.sysfs_root
        assert host.offered == len(offered(config)) > 0
        assert "token" not in tomllib.loads(host.config_file.read_text())


def test_this_machine_offers_every_device_but_its_bridges(tmp_path: Path) -> None:
    sysfs = build_sysfs(GPU_2NUMA, tmp_path / "sys")

    host = local_host(tmp_path / "local", CONTROLLER, sysfs_root=sysfs)

    assert host is not None and host.profile is None
    config = load_host_config(host.config_file)
    taken = offered(config)
    everything = scan(config)
    assert {d.address for d in everything} - {d.address for d in taken} == {"0000:00:00.0"}
    assert {d.tags["e.group"] for d in taken} == {"local"}
    assert host.offered == len(taken) == 8  # two I350 ports and six GPUs
    assert (config.libvirt_uri, config.vf_applier) == ("test:///default", "netlink")


def test_on_this_machine_what_it_runs_on_is_kept_out_of_the_demo(tmp_path: Path) -> None:
    host = local_host(tmp_path / "local", CONTROLLER)
    written = tmp_path / "local" / "agent.toml"
    if not written.exists():  # no PCI function here but bridges: nothing to keep out
        assert host is None
        return
    config = load_host_config(written)
    preflight, decisions = decide(config)
    taken = {d.device.address for d in decisions if d.taken}
    assert not taken & set(preflight.kept)
    assert (host.offered if host is not None else 0) == len(taken)
    assert config.allow_no_iommu  # the test driver takes no device from the machine


def test_a_machine_with_nothing_to_offer_takes_no_part(tmp_path: Path) -> None:
    bridges_only = HostProfile("bridges", "only a host bridge",
                               (Card(HOST_BRIDGE, "0000:00:00.0"),))
    sysfs = build_sysfs(bridges_only, tmp_path / "sys")

    assert local_host(tmp_path / "a", CONTROLLER, sysfs_root=sysfs) is None
    assert local_host(tmp_path / "b", CONTROLLER, sysfs_root=tmp_path / "no-sysfs") is None
