"""Host preflight: a host without an IOMMU offers nothing unless told to, and no host offers
what it runs on. Interfaces, addresses and routes are read by netlink in a network
namespace of the test's own; what the host's disks and NICs sit on is read from simulated
sysfs trees laid out as the kernel's, and once from this machine's real /sys."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from passthru.cli.main import app
from passthru.errors import HostError
from passthru.host.config import decide, host_config_from, offered
from passthru.host.preflight import (
    NO_IOMMU,
    NetlinkReadError,
    Preflight,
    busy_interfaces,
    kept_functions,
)
from passthru.sim import PROFILES, build_sysfs

runner = CliRunner()
#: The first PF of the simulated x710-2x host, and the netdev the kernel gives it.
NIC, NETDEV = "0000:3b:00.0", "enp59s0f0"
SATA = "0000:00:1f.2"
#: The whitelist every test here uses: take every device.
EVERYTHING = {"pci_information": [{"match": {"vendor_id": "*"}}]}


def ip(namespace: str, *args: str) -> None:
    subprocess.run(["ip", "-n", namespace, *args], check=True, capture_output=True)


def with_disk(root: Path) -> Path:
    """A SATA controller with disk sda, its partition sda2 (8:2) and a device-mapper volume
    on it (253:0), as the kernel links them."""
    disk = root / "devices/pci0000:00" / SATA / "ata1/host0/target0:0:0/0:0:0:0/block/sda"
    (disk / "sda2").mkdir(parents=True)
    volume = root / "devices/virtual/block/dm-0"
    (volume / "slaves").mkdir(parents=True)
    (volume / "slaves/sda2").symlink_to(os.path.relpath(disk / "sda2", volume / "slaves"))
    block = root / "dev/block"
    block.mkdir(parents=True)
    (block / "8:2").symlink_to(os.path.relpath(disk / "sda2", block))
    (block / "253:0").symlink_to(os.path.relpath(volume, block))
    return root


def mountinfo(*mounts: tuple[str, str]) -> str:
    """`/proc/self/mountinfo` lines for (MAJ:MIN, mount point) pairs."""
    return "".join(f"{n} 1 {dev} / {point} rw,relatime shared:1 - ext4 /dev/x rw\n"
                   for n, (dev, point) in enumerate(mounts, 20))


def test_interfaces_in_use_are_those_with_a_route_or_an_address_and_all_beneath_them(
        namespace: str) -> None:
    ip(namespace, "link", "add", "up0", "type", "veth", "peer", "name", "port0")
    ip(namespace, "link", "add", "br0", "type", "bridge")
    ip(namespace, "link", "set", "port0", "master", "br0")
    ip(namespace, "link", "add", "link", "up0", "name", "mv0", "type", "macvlan")
    ip(namespace, "link", "add", "idle0", "type", "veth", "peer", "name", "idle1")
    for link in ("up0", "port0", "br0", "mv0", "idle0", "idle1", "lo"):
        ip(namespace, "link", "set", link, "up")
    ip(namespace, "addr", "add", "10.9.0.1/24", "dev", "up0")
    ip(namespace, "route", "add", "default", "via", "10.9.0.254", "dev", "up0")
    ip(namespace, "addr", "add", "10.8.0.1/24", "dev", "br0")
    ip(namespace, "addr", "add", "10.7.0.1/24", "dev", "mv0")

    busy = busy_interfaces(namespace)

    # idle0/idle1 have only link-local IPv6 addresses, lo only loopback ones: not in use.
    assert set(busy) == {"up0", "br0", "port0", "mv0"}
    assert busy["up0"] == "default route, address 10.9.0.1/24; address 10.7.0.1/24 (on mv0)"
    assert busy["port0"] == "address 10.8.0.1/24 (on br0)"
    assert busy["mv0"] == "address 10.7.0.1/24"


def test_a_namespace_that_does_not_exist_is_named() -> None:
    with pytest.raises(NetlinkReadError, match="network namespace 'pt-none-such'"):
        busy_interfaces("pt-none-such")


def test_the_functions_under_mounted_filesystems_and_interfaces_in_use_are_kept(
        tmp_path: Path) -> None:
    root = with_disk(build_sysfs(PROFILES["x710-2x"], tmp_path / "sys"))
    mounts = mountinfo(("8:2", "/"), ("253:0", "/var/lib\\040data"), ("0:23", "/run"))
    kept = kept_functions(root, mounts, {NETDEV: "default route", "br0": "address x"})
    assert kept == {
        SATA: "it holds the host's mounted filesystems /, /var/lib data",
        NIC: f"{NETDEV} carries the host's default route",
    }
    assert kept_functions(root, mountinfo(("0:23", "/run")), {"lo": "address"}) == {}


def test_review_refuses_what_the_host_keeps_whatever_the_whitelist_says(
        tmp_path: Path) -> None:
    config = host_config_from({**EVERYTHING, "sysfs_root": str(
        build_sysfs(PROFILES["x710-2x"], tmp_path / "sys"))})
    preflight, decisions = decide(config)
    assert preflight.iommu and not preflight.kept  # a simulated tree: not this kernel's
    kept = Preflight(True, False, {NIC: f"{NETDEV} carries the host's default route"})
    reviewed = {d.device.address: d for d in kept.review(decisions)}
    assert (reviewed[NIC].taken, reviewed[NIC].reason, reviewed[NIC].entry) == (
        False, f"kept by the host: {NETDEV} carries the host's default route", 1)
    assert sum(d.taken for d in reviewed.values()) == len(decisions) - 1


def test_a_host_without_an_iommu_offers_nothing_unless_its_config_allows_it(
        tmp_path: Path) -> None:
    root = build_sysfs(PROFILES["x710-2x"], tmp_path / "sys")
    for link in (root / "devices").glob("pci*/*/iommu_group"):
        link.unlink()
    config = host_config_from({**EVERYTHING, "sysfs_root": str(root)})
    preflight, decisions = decide(config)
    assert not preflight.iommu
    assert offered(config) == []
    assert {d.reason for d in decisions} == {NO_IOMMU}
    assert "nothing is offered" in preflight.iommu_line()

    allowed = host_config_from({**EVERYTHING, "sysfs_root": str(root), "allow_no_iommu": True})
    assert len(offered(allowed)) == len(decisions)
    assert "allow_no_iommu = true offers devices anyway" in decide(allowed)[0].iommu_line()


def test_discover_on_this_machine_says_why_it_offers_what_it_does_not(tmp_path: Path) -> None:
    config = tmp_path / "host.toml"
    config.write_text(f'host = "here"\ninstances_path = "{tmp_path}"\n'
                      '[[pci_information]]\nmatch = { vendor_id = "*" }\n')
    result = runner.invoke(app, ["discover", "--config", str(config), "--json"])
    if not Path("/sys/bus/pci/devices").is_dir():  # no PCI bus visible (a container)
        assert result.exit_code == HostError.exit_code
        assert "cannot list /sys/bus/pci/devices" in result.output
        return
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    groups = Path("/sys/kernel/iommu_groups")
    assert document["iommu"] == (groups.is_dir() and any(groups.iterdir()))
    refused = [d for d in document["devices"] if not d["taken"]]
    assert all(d["reason"] for d in refused)
    if not document["iommu"]:
        assert len(refused) == len(document["devices"]) > 0
    # Whatever holds / here, if it is a PCI function, is kept for the host.
    for address, reason in document["kept_by_host"].items():
        assert next(d for d in refused if d["address"] == address)["reason"] == (
            f"kept by the host: {reason}")
    table = runner.invoke(app, ["discover", "--config", str(config)])
    assert "IOMMU: " + ("on" if document["iommu"] else "off") in table.stdout
