"""Spawn, power and destroy of real guests on libvirt's test driver: the VM's files are
made and removed, normal ports go to the bridges of their physical networks, NUMA pinning
follows sysfs, and a failure leaves no file behind. The boot itself is in
tests/host/test_real_guest.py, on a real libvirtd."""

from __future__ import annotations

import hashlib
import re
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from lxml import etree

from passthru.host.attach import Attacher, GuestHost, domain_name
from passthru.host.bridge import BridgeError
from passthru.host.config import host_config_from
from passthru.host.domain_xml import validate_domain_xml
from passthru.host.image_cache import ImageCache
from passthru.host.instance import Instances
from passthru.host.libvirt_driver import LibvirtDriver
from passthru.pci.binding import NetworkSpec, PortSpec
from passthru.pci.work import (
    AttachedPort,
    DestroyOrder,
    GuestSpec,
    ImageFile,
    ImagePart,
    ImageRef,
    PowerAction,
    PowerOrder,
    PowerState,
    SpawnOrder,
)
from tests.host.simhost import RecordingApplier, SimHost, make_host
from tests.support.trees import one

VLAN_NET = NetworkSpec("prod", "vlan", "physnet1", 100)  # type: ignore[arg-type]
FLAT_NET = NetworkSpec("ext", "flat", "physnet2")  # type: ignore[arg-type]
KERNEL = b"kernel bytes\n" * 64


@dataclass
class RecordingBridges:
    """Stands in for netlink: the bridges that exist, those with VLAN filtering on, and
    the taps tagged."""

    bridges: set[str] = field(default_factory=lambda: {"br-prov", "br-ext"})
    filtering: set[str] = field(default_factory=lambda: {"br-prov"})
    tagged: list[tuple[str, int]] = field(default_factory=list)
    refuse_tags: bool = False

    def check(self, bridge: str, tagged: bool) -> None:
        if bridge not in self.bridges:
            raise BridgeError(f"bridge {bridge!r} does not exist on this host")
        if tagged and bridge not in self.filtering:
            raise BridgeError(f"bridge {bridge!r} has VLAN filtering off")

    def tag(self, tap: str, vlan: int) -> None:
        if self.refuse_tags:
            raise BridgeError(f"cannot put tap {tap!r} on VLAN {vlan}: operation not supported")
        self.tagged.append((tap, vlan))


@dataclass
class Guests:
    host: SimHost
    attacher: Attacher
    driver: LibvirtDriver
    bridges: RecordingBridges
    instances: Instances
    image: ImageRef


def qcow2(path: Path) -> bytes:
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(path), "32M"], check=True)
    return path.read_bytes()


@pytest.fixture
def guests(tmp_path: Path) -> Iterator[Guests]:
    host = make_host(tmp_path)
    node = host.root / "devices/system/node/node1"
    node.mkdir(parents=True, exist_ok=True)  # the simulated tree may have it
    (node / "cpulist").write_text("4-7\n")
    files = {ImagePart.DISK: qcow2(tmp_path / "base.qcow2"), ImagePart.KERNEL: KERNEL}
    image = ImageRef("img-1", "tiny", "qcow2", [
        ImageFile(part, hashlib.sha256(data).hexdigest(), len(data))
        for part, data in files.items()], kernel_args="console=ttyS0 quiet")

    def fetch(image_id: str, part: ImagePart, dest: Path) -> None:
        dest.write_bytes(files[part])

    bridges = RecordingBridges()
    instances = Instances(tmp_path / "instances")
    runtime = GuestHost(instances, ImageCache(tmp_path / "images", fetch),
                        {"physnet1": "br-prov", "physnet2": "br-ext"}, bridges,
                        domain_type="qemu", shutdown_timeout=0.0)
    with LibvirtDriver(host.uri) as driver:
        attacher = Attacher(driver, RecordingApplier(), host.root,
                            lambda: list(host.offered.values()), runtime)
        yield Guests(host, attacher, driver, bridges, instances, image)


def port(name: str, network: NetworkSpec, mac: str) -> AttachedPort:
    return AttachedPort(PortSpec(name, "normal", mac), network)  # type: ignore[arg-type]


def order(guests: Guests, **changes: object) -> SpawnOrder:
    fields: dict[str, object] = {
        "server_uuid": str(uuid.uuid4()), "name": "web-1", "vcpus": 2, "ram_mb": 512,
        "nics": [port("p1", VLAN_NET, "fa:16:3e:00:00:01"),
                 port("p2", FLAT_NET, "fa:16:3e:00:00:02")],
        "guest": GuestSpec(guests.image, 1, "web-1", {"k": "ssh-ed25519 AAAA k"}, None),
        "numa_node": 1, "pinned_cpus": [5, 6], **changes}
    return SpawnOrder(**fields)  # type: ignore[arg-type]


def test_spawn_makes_the_vms_files_and_a_domain_that_uses_them(guests: Guests) -> None:
    spawn = order(guests)
    result = guests.attacher.spawn(spawn)
    assert result.ok, result.fault
    assert result.domain_xml is not None
    validate_domain_xml(result.domain_xml)
    files = guests.instances.files(spawn.server_uuid)
    assert files.disk.exists() and files.seed.exists()
    root = etree.fromstring(guests.driver.xml(domain_name(spawn.server_uuid)).encode())
    assert root.get("type") == "qemu"
    assert root.findtext("os/cmdline") == "console=ttyS0 quiet"
    kernel = Path(str(root.findtext("os/kernel")))
    assert kernel.read_bytes() == KERNEL and kernel.parent.name == "images"
    assert [one(d, "source").get("file") for d in root.iterfind("devices/disk")] == [
        str(files.disk), str(files.seed)]
    assert one(root, "devices/serial/log").get("file") == str(files.console_log)
    assert [(one(i, "mac").get("address"), one(i, "source").get("bridge"))
            for i in root.iterfind("devices/interface")] == [
        ("fa:16:3e:00:00:01", "br-prov"), ("fa:16:3e:00:00:02", "br-ext")]
    assert [p.get("cpuset") for p in root.iterfind("cputune/vcpupin")] == ["5", "6"]
    assert one(root, "numatune/memory").get("nodeset") == "1"


def test_destroy_removes_the_domain_and_every_file(guests: Guests) -> None:
    spawn = order(guests)
    assert guests.attacher.spawn(spawn).ok
    result = guests.attacher.destroy(DestroyOrder(spawn.server_uuid, spawn.name))
    assert result.ok, result.fault
    assert not guests.instances.files(spawn.server_uuid).directory.exists()
    assert guests.driver.domains() == []


def test_destroy_of_a_domain_gone_already_still_removes_the_files(guests: Guests) -> None:
    spawn = order(guests)
    assert guests.attacher.spawn(spawn).ok
    name = domain_name(spawn.server_uuid)
    guests.driver.stop(name)
    guests.driver.undefine(name)
    assert guests.attacher.destroy(DestroyOrder(spawn.server_uuid, spawn.name)).ok
    assert not guests.instances.files(spawn.server_uuid).directory.exists()


@pytest.mark.parametrize(("changes", "fault"), [
    ({"nics": [port("p9", NetworkSpec("x", "flat", "physnet9"),  # type: ignore[arg-type]
                    "fa:16:3e:00:00:09")]},
     r"plug port failed for port p9 on network x: port p9 is on physical network "
     r"'physnet9', which this host maps to no bridge"),
    ({"nics": [port("p1", NetworkSpec("v", "vlan", "physnet2", 7),  # type: ignore[arg-type]
                    "fa:16:3e:00:00:01")]},
     r"bridge 'br-ext' has VLAN filtering off"),
    ({"numa_node": 3}, r"pin to NUMA node failed .*NUMA node 3 is not on this host"),
    ({"pinned_cpus": [1, 2]}, r"dedicated CPUs \[1, 2\] are not on NUMA node 1"),
    ({"guest": GuestSpec(ImageRef("img-2", "broken", "qcow2", [
        ImageFile(ImagePart.DISK, "0" * 64, 10)]))},
     r"fetch image failed for image broken \(img-2\): the disk of image broken .* is "),
    ({"guest": GuestSpec(ImageRef("img-3", "nodisk", "qcow2", []))},
     r"image nodisk \(img-3\) has no disk file"),
])
def test_a_refused_spawn_leaves_no_domain_and_no_file(guests: Guests, changes: dict[str, object],
                                                      fault: str) -> None:
    spawn = order(guests, **changes)
    result = guests.attacher.spawn(spawn)
    assert not result.ok
    assert result.fault is not None
    assert re.search(fault, result.fault), result.fault
    assert guests.driver.domains() == []
    assert not guests.instances.files(spawn.server_uuid).directory.exists()


def test_a_start_refused_by_libvirt_removes_the_vms_files(guests: Guests) -> None:
    spawn = order(guests)
    guests.driver.define(f"<domain type='test'><name>{domain_name(spawn.server_uuid)}</name>"
                         f"<memory>1024</memory><os><type>hvm</type></os></domain>")
    guests.driver.start(domain_name(spawn.server_uuid))
    result = guests.attacher.spawn(spawn)
    assert not result.ok
    assert not guests.instances.files(spawn.server_uuid).directory.exists()


def test_a_vlan_port_is_tagged_on_each_start(guests: Guests) -> None:
    spawn = order(guests)
    assert guests.attacher.spawn(spawn).ok
    assert [vlan for _, vlan in guests.bridges.tagged] == [100]
    power = guests.attacher.power
    assert power(PowerOrder(spawn.server_uuid, "web-1", PowerAction.HARD_REBOOT)).ok
    assert [vlan for _, vlan in guests.bridges.tagged] == [100, 100]
    assert guests.attacher.power_state(spawn.server_uuid) is PowerState.RUNNING


def test_a_tap_that_cannot_be_tagged_stops_the_domain(guests: Guests) -> None:
    spawn = order(guests)
    assert guests.attacher.spawn(spawn).ok
    guests.attacher.power(PowerOrder(spawn.server_uuid, "web-1", PowerAction.STOP))
    guests.bridges.refuse_tags = True
    result = guests.attacher.power(PowerOrder(spawn.server_uuid, "web-1", PowerAction.START))
    assert not result.ok
    assert result.fault is not None and "on VLAN 100: operation not supported" in result.fault
    assert guests.attacher.power_state(spawn.server_uuid) is PowerState.SHUTOFF


def test_power_stop_start_reboot(guests: Guests) -> None:
    spawn = order(guests, nics=[])
    assert guests.attacher.spawn(spawn).ok

    def power(action: PowerAction) -> tuple[bool, str | None, PowerState | None]:
        result = guests.attacher.power(PowerOrder(spawn.server_uuid, "web-1", action))
        return result.ok, result.fault, guests.attacher.power_state(spawn.server_uuid)

    assert power(PowerAction.REBOOT) == (True, None, PowerState.RUNNING)
    assert power(PowerAction.STOP) == (True, None, PowerState.SHUTOFF)
    assert power(PowerAction.STOP) == (True, None, PowerState.SHUTOFF)
    ok, fault, state = power(PowerAction.REBOOT)
    assert (ok, state) == (False, PowerState.SHUTOFF)
    assert fault is not None and "is shut off; start it instead" in fault
    assert power(PowerAction.START) == (True, None, PowerState.RUNNING)
    assert power(PowerAction.START) == (True, None, PowerState.RUNNING)


def test_power_of_a_missing_domain_names_it(guests: Guests) -> None:
    server = str(uuid.uuid4())
    result = guests.attacher.power(PowerOrder(server, "gone", PowerAction.START))
    assert not result.ok
    assert result.fault is not None and f"passthru-{server}" in result.fault


def test_a_host_without_guest_setup_refuses_images_and_normal_ports(guests: Guests) -> None:
    bare = Attacher(guests.driver, RecordingApplier(), guests.host.root, lambda: [])
    result = bare.spawn(order(guests, numa_node=None, pinned_cpus=[]))
    assert not result.ok
    assert result.fault is not None and "not set up for real guests" in result.fault
    assert guests.driver.domains() == []


def test_the_guest_setup_comes_from_the_host_config(tmp_path: Path) -> None:
    config = host_config_from({"instances_path": str(tmp_path / "vms"),
                               "image_cache": str(tmp_path / "images"), "domain_type": "qemu",
                               "bridge_mappings": {"physnet1": "br-prov"}})
    with LibvirtDriver("test:///default") as driver:
        guests = GuestHost.from_config(config, driver, lambda *_: None)
    assert (guests.instances.root, guests.images.root) == (tmp_path / "vms",
                                                           tmp_path / "images")
    assert (guests.bridge_mappings, guests.domain_type) == ({"physnet1": "br-prov"}, "qemu")
