"""A real guest on a real libvirtd + qemu (TCG here): spawn with disk, seed, console, a NIC
on a bridge and NUMA pinning; the guest reports what it sees on its serial console; power
stop, start and reboot; destroy leaves nothing. Also: libvirt's qemu driver takes the
domain XML of every passthrough shape."""

from __future__ import annotations

import hashlib
import re
import shutil
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import libvirt
import pytest

from passthru.host.attach import Attacher, GuestHost, NetlinkVfApplier, domain_name
from passthru.host.bridge import NetlinkBridgePorts
from passthru.host.domain_type import resolve_domain_type
from passthru.host.domain_xml import build_domain_xml, read_bridge_taps, read_domain_devices
from passthru.host.image_cache import ImageCache
from passthru.host.instance import GIB, Instances
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
from passthru.sim.guest import MARKER, GuestImage, boot_id, build_guest_image
from tests.host.test_domain_xml import SHAPES
from tests.support.libvirtd import Libvirtd

pytestmark = pytest.mark.slow

BRIDGE, BRIDGE_IP, GUEST_IP = "br-test", "10.77.0.1", "10.77.0.2"
MAC = "fa:16:3e:77:00:02"
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPassthruTestKey test@passthru"
USER_DATA = f"""#!/bin/sh
ip link set eth0 up
ip addr add {GUEST_IP}/24 dev eth0
ping -c 3 -W 5 {BRIDGE_IP} >/dev/null && echo "{MARKER} ping ok"
"""
#: Under TCG on two shared cores a boot takes a minute or so; give it several.
BOOT_SECONDS = 600.0


@pytest.fixture(scope="module")
def guest_image(tmp_path_factory: pytest.TempPathFactory) -> GuestImage:
    return build_guest_image(tmp_path_factory.mktemp("guest-image"))


def image_ref(image: GuestImage) -> tuple[ImageRef, dict[ImagePart, Path]]:
    paths = {ImagePart.DISK: image.disk, ImagePart.KERNEL: image.kernel,
             ImagePart.INITRD: image.initrd}
    files = [ImageFile(part, hashlib.sha256(path.read_bytes()).hexdigest(),
                       path.stat().st_size) for part, path in paths.items()]
    return ImageRef("img-guest", "passthru-guest", "qcow2", files, image.kernel_args), paths


@dataclass
class Host:
    daemon: Libvirtd
    driver: LibvirtDriver
    attacher: Attacher
    instances: Instances
    image: ImageRef


@pytest.fixture
def host(real_libvirtd: Libvirtd, guest_image: GuestImage, tmp_path: Path) -> Iterator[Host]:
    real_libvirtd.ip("link", "add", BRIDGE, "type", "bridge")
    real_libvirtd.ip("addr", "add", f"{BRIDGE_IP}/24", "dev", BRIDGE)
    real_libvirtd.ip("link", "set", BRIDGE, "up")
    image, paths = image_ref(guest_image)

    def fetch(image_id: str, part: ImagePart, dest: Path) -> None:
        assert image_id == image.id
        shutil.copyfile(paths[part], dest)

    instances = Instances(tmp_path / "instances")
    try:
        with LibvirtDriver(real_libvirtd.uri) as driver:
            domain_type = resolve_domain_type("auto", driver)
            guests = GuestHost(instances, ImageCache(tmp_path / "images", fetch),
                               {"physnet1": BRIDGE}, NetlinkBridgePorts(real_libvirtd.netns),
                               domain_type=domain_type, shutdown_timeout=BOOT_SECONDS)
            attacher = Attacher(driver, NetlinkVfApplier(real_libvirtd.netns), Path("/sys"),
                                lambda: [], guests)
            yield Host(real_libvirtd, driver, attacher, instances, image)
    finally:
        real_libvirtd.ip("link", "del", BRIDGE)


def wait_for(log: Path, marker: str, count: int = 1) -> str:
    """The console log once it holds `marker` `count` times; fails after BOOT_SECONDS."""
    deadline = time.monotonic() + BOOT_SECONDS
    text = ""
    while time.monotonic() < deadline:
        text = log.read_text(errors="replace") if log.exists() else ""
        if text.count(marker) >= count:
            return text
        time.sleep(1)
    pytest.fail(f"no {marker!r} (x{count}) on the guest's console after {BOOT_SECONDS:.0f} s; "
                f"it shows:\n{text[-3000:]}")


def first_output(log: Path) -> float:
    deadline = time.monotonic() + BOOT_SECONDS
    while time.monotonic() < deadline:
        if log.exists() and log.stat().st_size > 0:
            return time.monotonic()
        time.sleep(0.1)
    pytest.fail("the guest wrote nothing to its console")


def test_a_real_guest_boots_reads_its_seed_and_obeys_power_orders(
        host: Host, capsys: pytest.CaptureFixture[str]) -> None:
    server = str(uuid.uuid4())
    order = SpawnOrder(server, "web-1", 2, 256,
                       nics=[AttachedPort(PortSpec("p1", "normal", MAC),  # type: ignore[arg-type]
                                          NetworkSpec("prov", "flat", "physnet1"))],  # type: ignore[arg-type]
                       guest=GuestSpec(host.image, 1, "web-1", {"test": KEY}, USER_DATA),
                       numa_node=0, pinned_cpus=[1, 0])
    name = domain_name(server)
    files = host.instances.files(server)
    started = time.monotonic()
    result = host.attacher.spawn(order)
    spawned = time.monotonic() - started
    assert result.ok, result.fault
    first_line = first_output(files.console_log) - started
    console = wait_for(files.console_log, f"{MARKER} ready")
    with capsys.disabled():
        print(f"\nspawn returned after {spawned:.1f} s; first console line after "
              f"{first_line:.1f} s; guest ready after "
              f"{time.monotonic() - started:.1f} s (domain type {host.attacher.guests.domain_type})")  # type: ignore[union-attr]

    assert f"{MARKER} booted" in console
    assert f"{MARKER} instance-id {server}" in console
    assert f"{MARKER} hostname web-1" in console
    assert f"{MARKER} public-key {KEY}" in console
    assert f"{MARKER} disk vda {GIB} bytes" in console
    assert f"{MARKER} nic eth0 {MAC}" in console
    assert f"{MARKER} user-data exit 0" in console
    assert f"{MARKER} ping ok" in console

    [tap] = read_bridge_taps(host.driver.xml(name))
    assert (tap.mac, tap.bridge) == (MAC, BRIDGE)
    assert f"master {BRIDGE}" in host.daemon.ip("-o", "link", "show", tap.tap)

    conn = libvirt.open(host.daemon.uri)
    try:
        domain = conn.lookupByName(name)
        assert [tuple(cpus) for cpus in domain.vcpuPinInfo(0)] == [(False, True), (True, False)]
        _, maps = domain.vcpus()
        assert [tuple(cpus) for cpus in maps] == [(False, True), (True, False)]
        numa = domain.numaParameters(0)
        assert (numa["numa_mode"], numa["numa_nodeset"]) == (
            libvirt.VIR_DOMAIN_NUMATUNE_MEM_STRICT, "0")
    finally:
        conn.close()

    def power(action: PowerAction) -> None:
        done = host.attacher.power(PowerOrder(server, "web-1", action))
        assert done.ok, done.fault

    power(PowerAction.STOP)
    assert host.attacher.power_state(server) is PowerState.SHUTOFF
    assert f"{MARKER} power button" in files.console_log.read_text()  # it shut down itself
    power(PowerAction.START)
    assert host.attacher.power_state(server) is PowerState.RUNNING
    wait_for(files.console_log, f"{MARKER} ready")
    power(PowerAction.REBOOT)
    console = wait_for(files.console_log, f"{MARKER} ready", count=2)
    assert console.count(f"{MARKER} booted") == 2  # the same qemu, booted again
    boots = re.findall(f"{MARKER} boot ([0-9a-f-]{{36}})", console)
    assert len(set(boots)) == 2 and boot_id(console.splitlines()) == boots[-1]
    assert host.attacher.power_state(server) is PowerState.RUNNING

    assert host.attacher.destroy(DestroyOrder(server, "web-1")).ok
    assert host.driver.domains() == []
    assert not files.directory.exists()
    assert not files.disk.exists() and not files.seed.exists()
    assert not files.console_log.exists()
    assert tap.tap not in host.daemon.ip("-o", "link", "show")


# Starting these needs VFIO and the devices themselves (IOMMU groups, vfio-pci, SR-IOV
# VFs); this machine has none, so the real qemu driver only defines them: its checks of
# the XML at define time are what a host would meet first.
@pytest.mark.parametrize("shape", ["flavor-gpu", "direct-vlan", "direct-802.1qbh", "macvtap",
                                   "direct-physical", "every-shape"])
def test_the_qemu_driver_defines_every_passthrough_shape(real_libvirtd: Libvirtd,
                                                         shape: str) -> None:
    spec = replace(SHAPES[shape], name=f"shape-{shape}", domain_type="qemu")
    with LibvirtDriver(real_libvirtd.uri) as driver:
        name = driver.define(build_domain_xml(spec))
        try:
            assert read_domain_devices(driver.xml(name)) == read_domain_devices(
                build_domain_xml(spec))
            assert driver.state(name) is PowerState.SHUTOFF
        finally:
            driver.undefine(name)
