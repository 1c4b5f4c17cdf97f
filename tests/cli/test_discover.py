import json
from pathlib import Path

from typer.testing import CliRunner

from passthru.cli.main import app
from passthru.errors import HostError
from passthru.sim import PROFILES, build_sysfs, host_config_toml, nodedev_xml

runner = CliRunner()


def sim_config(tmp_path: Path, name: str, *, libvirt: bool = False) -> Path:
    profile = PROFILES[name]
    if libvirt:
        node = tmp_path / "node.xml"
        node.write_text(nodedev_xml(profile))
        text = host_config_toml(profile, nodedev_xml=node)
    else:
        text = host_config_toml(profile, sysfs_root=build_sysfs(profile, tmp_path / "sys"))
    config = tmp_path / "host.toml"
    config.write_text(text)
    return config


def test_json_lists_every_device_with_its_decision_and_the_pools(tmp_path: Path) -> None:
    result = runner.invoke(app, ["discover", "--config", str(sim_config(tmp_path, "x710-2x")),
                                 "--json"])
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert (document["host"], document["source"]) == ("sim-x710-2x", "sysfs")
    devices = {d["address"]: d for d in document["devices"]}
    assert len(devices) == 39
    vf = devices["0000:3b:02.0"]
    assert (vf["taken"], vf["entry"], vf["tags"]) == (True, 1, {"e.physical_network": "physnet1"})
    assert (vf["dev_type"], vf["parent_addr"], vf["netdev"]) == ("type-VF", "0000:3b:00.0",
                                                               "enp59s0f0v0")
    kept = devices["0000:86:0a.6"]
    assert (kept["taken"], kept["reason"]) == (False, "excluded by entry 4 (0000:86:0a.6)")
    assert devices["0000:00:00.0"]["reason"] == "no entry matched"
    pooled = sorted(a for pool in document["pools"] for a in pool["devices"])
    assert pooled == sorted(a for a, d in devices.items() if d["taken"])
    assert {pool["count"] for pool in document["pools"]} == {8, 6}


def test_table_for_people(tmp_path: Path) -> None:
    config = sim_config(tmp_path, "mixed")
    result = runner.invoke(app, ["discover", "--config", str(config)],
                           env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "sim-mixed: 27 PCI devices from sysfs" in result.stdout
    assert "19 offered in 8 pools" in result.stdout
    assert "excluded by entry 2 (0000:3b:0a.3)" in result.stdout
    assert "e.group=nvme" in result.stdout


def test_libvirt_source(tmp_path: Path) -> None:
    config = sim_config(tmp_path, "gpu-2numa", libvirt=True)
    result = runner.invoke(app, ["discover", "--config", str(config), "--json"])
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["source"] == "libvirt"
    assert sum(d["taken"] for d in document["devices"]) == 6


def test_bad_config_exits_2_quoting_file_and_key(tmp_path: Path) -> None:
    config = tmp_path / "host.toml"
    config.write_text('sourse = "sysfs"\n')
    result = runner.invoke(app, ["discover", "--config", str(config)])
    assert result.exit_code == 2
    assert str(config) in result.stderr
    assert "unknown key 'sourse' (did you mean 'source'?)" in result.stderr
    assert result.stdout == ""


def test_unreadable_source_is_a_host_error(tmp_path: Path) -> None:
    config = tmp_path / "host.toml"
    config.write_text(f'sysfs_root = "{tmp_path / "nothing"}"\n')
    result = runner.invoke(app, ["discover", "--config", str(config), "--json"])
    assert result.exit_code == HostError.exit_code
    assert "is not a sysfs mount" in result.stderr


def test_resources_and_capacity_are_shown(tmp_path: Path) -> None:
    config = sim_config(tmp_path, "gpu-2numa")
    config.write_text(config.read_text().replace(
        "pool_attrs", "reserved_cpus = [0, 32]\ncpu_allocation_ratio = 2.0\npool_attrs", 1))
    document = json.loads(runner.invoke(app, ["discover", "--config", str(config),
                                              "--json"]).stdout)
    found = document["resources"]
    assert (len(found["cpus"]), [n["memory_mb"] for n in found["numa"]]) == (64, [262144] * 2)
    assert found["capacity"]["vcpus"] == 62 * 2
    assert found["capacity"]["pinnable"]["1"] == list(range(33, 64))
    table = runner.invoke(app, ["discover", "--config", str(config)], env={"COLUMNS": "200"})
    assert table.exit_code == 0, table.output
    assert "capacity: 124 vCPUs (64 CPUs, reserved 0,32, x2)" in table.stdout
    assert "16 x 1024 MiB" in table.stdout  # node 0's 1-GiB hugepages


def test_a_reserved_cpu_the_host_lacks_exits_2(tmp_path: Path) -> None:
    config = sim_config(tmp_path, "x710-2x")
    config.write_text(config.read_text().replace("pool_attrs", "reserved_cpus = [64]\npool_attrs", 1))
    result = runner.invoke(app, ["discover", "--config", str(config)])
    assert result.exit_code == 2
    assert "reserved_cpus names CPU 64" in result.stderr
