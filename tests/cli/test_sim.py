import json
import tomllib
from pathlib import Path

from typer.testing import CliRunner

from passthru.cli.main import app
from passthru.errors import InvalidInputError
from passthru.host.config import load_host_config
from passthru.sim import PROFILES

runner = CliRunner()


def test_list_profiles() -> None:
    result = runner.invoke(app, ["sim", "--list", "--json"])
    assert result.exit_code == 0, result.output
    shapes = {shape["name"]: shape for shape in json.loads(result.stdout)}
    assert set(shapes) == set(PROFILES)
    assert (shapes["x710-2x"]["pfs"], shapes["x710-2x"]["vfs"]) == (6, 32)
    table = runner.invoke(app, ["sim", "--list"], env={"COLUMNS": "200"})
    assert "gpu-2numa" in table.stdout and "QuickAssist" in table.stdout


def test_build_prints_a_config_that_works(tmp_path: Path) -> None:
    root, node = tmp_path / "sys", tmp_path / "node.xml"
    result = runner.invoke(app, ["sim", "e810", "--root", str(root), "--nodedev-xml", str(node)])
    assert result.exit_code == 0, result.output
    assert (root / "bus/pci/devices/0000:5e:00.0/sriov_numvfs").read_text() == "16\n"
    assert node.read_text().startswith("<node>")
    settings = tomllib.loads(result.stdout)
    assert (settings["source"], settings["sysfs_root"]) == ("sysfs", str(root.resolve()))
    config_file = tmp_path / "host.toml"
    config_file.write_text(result.stdout)
    discovered = runner.invoke(app, ["discover", "--config", str(config_file), "--json"])
    assert sum(d["taken"] for d in json.loads(discovered.stdout)["devices"]) == 33
    assert "built e810 as a sysfs tree" in result.stderr


def test_nodedev_only_config_uses_libvirt(tmp_path: Path) -> None:
    node = tmp_path / "node.xml"
    result = runner.invoke(app, ["sim", "qat", "--nodedev-xml", str(node), "--json"])
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["sysfs_root"] is None
    config_file = tmp_path / "host.toml"
    config_file.write_text(document["host_config"])
    config = load_host_config(config_file)
    assert (config.source, config.libvirt_uri) == ("libvirt", f"test://{node.resolve()}")


def test_unknown_profile(tmp_path: Path) -> None:
    result = runner.invoke(app, ["sim", "mixd", "--root", str(tmp_path / "x")])
    assert result.exit_code == InvalidInputError.exit_code
    assert "no profile 'mixd' (did you mean 'mixed'?)" in result.stderr
    assert not (tmp_path / "x").exists()


def test_needs_a_profile_and_a_target(tmp_path: Path) -> None:
    assert "name a profile" in runner.invoke(app, ["sim"]).stderr
    result = runner.invoke(app, ["sim", "qat"])
    assert result.exit_code == InvalidInputError.exit_code
    assert "--root DIR" in result.stderr


def test_refuses_a_foreign_directory(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    result = runner.invoke(app, ["sim", "qat", "--root", str(tmp_path)])
    assert result.exit_code == InvalidInputError.exit_code
    assert "holds no simulated host" in result.stderr
    assert (tmp_path / "notes.txt").read_text() == "mine"
