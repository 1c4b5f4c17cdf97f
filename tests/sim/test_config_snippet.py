import tomllib
from pathlib import Path

from passthru.sim import HostProfile, host_config_toml

ODD = HostProfile(
    name="odd",
    description='quotes " and backslashes \\ survive',
    cards=(),
    pool_attrs=("vendor_id", "e.group"),
    pci_information=({"match": {"address": "re:0000:0a:0[0-3]\\.[0-7]"},
                      "extra": {"e.note": 'say "hi"\n'}, "exclude": ["0000:0a:00.1"]},),
)


def test_values_round_trip_through_toml(tmp_path: Path) -> None:
    settings = tomllib.loads(host_config_toml(ODD, sysfs_root=tmp_path))
    assert settings["pool_attrs"] == ["vendor_id", "e.group"]
    assert settings["pci_information"] == [dict(ODD.pci_information[0])]
    assert settings["host"] == "sim-odd"
    assert settings["sysfs_root"] == str(tmp_path.resolve())


def test_both_read_devices_from_sysfs_and_run_domains_over_the_node_xml(tmp_path: Path) -> None:
    settings = tomllib.loads(
        host_config_toml(ODD, sysfs_root=tmp_path, nodedev_xml=tmp_path / "n.xml"))
    assert settings["source"] == "sysfs"
    assert settings["libvirt_uri"] == f"test://{tmp_path.resolve()}/n.xml"
    assert settings["vf_applier"] == "simulated"


def test_libvirt_only(tmp_path: Path) -> None:
    settings = tomllib.loads(host_config_toml(ODD, nodedev_xml=tmp_path / "n.xml",
                                              controller="http://ctl:8774"))
    assert (settings["source"], settings["controller"]) == ("libvirt", "http://ctl:8774")
    assert settings["libvirt_uri"] == f"test://{tmp_path.resolve()}/n.xml"
    assert "sysfs_root" not in settings
