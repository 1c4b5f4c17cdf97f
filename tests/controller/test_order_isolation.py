"""One bad order never blocks the next: the real agent code (order worker, attacher, image
cache, simulated VF settings in the host's sysfs tree) on a simulated host with a libvirt
test:/// connection, against the controller in-process.

Each failure is provoked by real means — a VF's sysfs node removed, the kernel refusing a
VF setting, a libvirt domain that already has the server's UUID, an image file changed
on the controller or in the host's cache, an image fetched from a controller that is not
there, a port row whose MAC predates the API's check, an order an older controller
wrote, an answer the controller refuses. Each time the failing server ends in ERROR with
a fault naming the cause, its devices are free again (its VFs reset on the host), and
the server booted right after it, in the same round and in the next, is ACTIVE.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update

from passthru.controller.scheduler.service import Scheduler
from passthru.controller.servers.reschedule import sweep_builds
from passthru.controller.settings import Settings
from passthru.controller.store.db import Store
from passthru.controller.store.models import PortRow, ServerRow, utcnow
from passthru.host.agent import Agent
from passthru.host.attach import Attacher, GuestHost, NetlinkVfApplier, VfApplier, domain_name
from passthru.host.config import offered, scan
from passthru.host.domain_xml import DomainSpec, build_domain_xml
from passthru.host.image_cache import ImageCache
from passthru.host.instance import Instances
from passthru.host.libvirt_driver import LibvirtDriver
from passthru.host.link import HttpLink, connect
from passthru.host.sim_vf import SimulatedVfApplier, read_vf_state, vf_state_path
from passthru.host.vf import RESET
from passthru.host.worker import OrderWorker, ReadOrders, read_orders
from passthru.pci.binding import ZERO_MAC
from passthru.pci.work import SHA256_HEADER, ImagePart, PowerState
from tests.controller.conftest import ON_BOTH, Api
from tests.controller.test_boot_attach import held, seed_catalog
from tests.host.simhost import PF1, PF1_NETDEV, SimHost, make_host
from tests.host.test_attach_guest import RecordingBridges
from tests.pg import free_port
from tests.support.machine import cannot_run

V2 = "/v2/admin"
HOST = "compute-1"
MULTICAST = "01:00:5e:00:00:01"


class Compute:
    """One host as its agent process runs it, with its own HTTP client (its agent token)."""

    def __init__(self, api: Api, root: Path, applier: Callable[[SimHost], VfApplier],
                 link: type[HttpLink] = HttpLink) -> None:
        self.sim = make_host(root)
        self.driver = LibvirtDriver(self.sim.uri)
        client = TestClient(api.client.app,
                            headers={"Authorization": f"Bearer {api.agent(HOST)}"})
        self.link = link(client, HOST)
        config = self.sim.config()
        Agent(scan=lambda: offered(config), link=self.link,
              pool_attrs=config.pool_attrs).report_once()
        self.instances = Instances(root / "instances")
        self.images = ImageCache(root / "images", self.link.fetch_image)
        guests = GuestHost(self.instances, self.images,
                           {"physnet1": "br-prov", "physnet2": "br-ext"}, RecordingBridges(),
                           domain_type="qemu", shutdown_timeout=0.0)
        self.attacher = Attacher(self.driver, applier(self.sim), self.sim.root,
                                 lambda: scan(config), guests)
        self.worker = OrderWorker(self.link, self.attacher, root / "instances")
        self.worker.start()

    def run(self) -> int:
        return self.worker.run_orders()

    def vf_state(self) -> dict[str, dict[str, Any]]:
        return read_vf_state(vf_state_path(self.sim.root))

    def domains(self) -> set[str]:
        return {state.name for state in self.driver.domains()
                if state.name.startswith("passthru-")}




def simulated(sim: SimHost) -> VfApplier:
    return SimulatedVfApplier(sim.root)


@pytest.fixture
def compute(api: Api, tmp_path: Path) -> Iterator[Compute]:
    made = Compute(api, tmp_path / HOST, simulated)
    seed_catalog(api)
    yield made
    made.driver.close()


def qcow2(path: Path, size: str = "32M") -> bytes:
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(path), size], check=True)
    return path.read_bytes()


def new_image(api: Api, name: str, disk: bytes) -> str:
    body = {"image": {"name": name, "disk_format": "qcow2"}}
    image = api.ok("POST", f"{V2}/images", json=body)["image"]
    answer = api.client.put(f"{V2}/images/{name}/file/disk", content=disk, headers={
        "Authorization": f"Bearer {api.admin}",
        SHA256_HEADER: hashlib.sha256(disk).hexdigest()})
    assert answer.status_code < 300, answer.text
    return str(image["id"])


def boot(api: Api, name: str, flavor: str = "m1.small", image: str | None = None,
         **nic: str) -> dict[str, Any]:
    body: dict[str, Any] = {"name": name, "flavorRef": flavor,
                            "networks": [nic] if nic else []}
    if image is not None:
        body["imageRef"] = image
    return api.ok("POST", f"{V2}/servers", json={"server": body})["server"]


def server(api: Api, name: str) -> dict[str, Any]:
    return api.ok("GET", f"{V2}/servers/{name}")["server"]


def devices(api: Api, name: str) -> set[str]:
    return {device["address"] for request in server(api, name)["pci_requests"]
            for device in request["devices"]}


def direct(network: str = "prod") -> dict[str, str]:
    return {"uuid": network, "vnic_type": "direct"}


def assert_isolated(api: Api, compute: Compute, bad: str, good: str, *cause: str) -> None:
    """`bad` is ERROR with a fault naming `cause`, holds nothing and left nothing on the
    host; `good` is ACTIVE with its devices; and a server booted now runs too."""
    failed = server(api, bad)
    assert failed["status"] == "ERROR", failed
    for words in cause:
        assert words in failed["fault"], failed["fault"]
    running = server(api, good)
    assert running["status"] == "ACTIVE", running["fault"]
    assert set(held(api)) == devices(api, good)
    assert compute.domains() == {domain_name(running["id"])}
    assert not compute.instances.files(failed["id"]).directory.exists()
    boot(api, "next")
    compute.run()
    assert server(api, "next")["status"] == "ACTIVE", server(api, "next")["fault"]


def reset(setting: dict[str, Any]) -> bool:
    return (setting["mac"], setting["vlan"]) == (ZERO_MAC, RESET.vlan)


def time_out_build(settings: Settings, uuid: str) -> None:
    """Make the server's build an hour old and run the build sweep, which fails it."""
    store = Store(settings.database_url)
    with store.write() as session:
        session.execute(update(ServerRow).where(ServerRow.uuid == uuid).values(
            created_at=utcnow() - timedelta(hours=1)))
    sweep_builds(store, Scheduler(store), settings)
    store.close()


def test_a_vf_whose_sysfs_node_vanished(api: Api, compute: Compute) -> None:
    boot(api, "bad", **direct())
    [vf] = devices(api, "bad")
    boot(api, "good", **direct())
    pf = compute.sim.root / "bus" / "pci" / "devices" / PF1
    [link] = [link for link in pf.glob("virtfn*") if link.readlink().name == vf]
    link.unlink()

    compute.run()

    assert_isolated(api, compute, "bad", "good", "configure VF failed", vf)
    assert vf not in compute.vf_state()


def test_the_kernel_refusing_a_vf_setting(api: Api, tmp_path: Path, pf_namespace: str) -> None:
    compute = Compute(api, tmp_path / HOST, lambda _sim: NetlinkVfApplier(netns=pf_namespace))
    seed_catalog(api)
    try:
        boot(api, "bad", **direct())
        [vf] = devices(api, "bad")
        boot(api, "good", "m1.gpu")
        compute.run()
        assert_isolated(api, compute, "bad", "good", "configure VF failed", vf,
                        f"of PF {PF1_NETDEV}: operation not supported")
    finally:
        compute.driver.close()


def test_libvirt_refusing_the_define_resets_the_vf_it_had_set(api: Api,
                                                              compute: Compute) -> None:
    bad = boot(api, "bad", **direct())
    [vf] = devices(api, "bad")
    boot(api, "good", **direct())
    # Another domain already has the server's UUID: libvirt refuses to define it.
    compute.driver.define(build_domain_xml(DomainSpec(name="squatter", uuid=bad["id"],
                                                      memory_mib=64, vcpus=1)))

    compute.run()

    assert "squatter" in {state.name for state in compute.driver.domains()}
    compute.driver.undefine("squatter")
    assert_isolated(api, compute, "bad", "good", "define domain failed", "squatter")
    # The VF was set up before the define, and reset by the undo.
    assert reset(compute.vf_state()[vf]), compute.vf_state()[vf]


def test_an_image_changed_on_the_controller_fails_its_sha256_check(
        api: Api, settings: Settings, compute: Compute, tmp_path: Path) -> None:
    disk = qcow2(tmp_path / "disk.qcow2")
    image = new_image(api, "tiny", disk)
    stored = settings.image_dir / image / "disk"
    stored.write_bytes(disk[:-1] + bytes([disk[-1] ^ 1]))  # same size, other bytes
    boot(api, "bad", image="tiny", **direct())
    boot(api, "good", **direct())

    compute.run()

    assert_isolated(api, compute, "bad", "good", "fetch image failed", "has sha256",
                    f"recorded {hashlib.sha256(disk).hexdigest()}")
    assert not any(compute.images.root.iterdir())


def test_an_image_file_gone_from_the_controller(api: Api, settings: Settings,
                                                compute: Compute, tmp_path: Path) -> None:
    image = new_image(api, "tiny", qcow2(tmp_path / "disk.qcow2"))
    (settings.image_dir / image / "disk").unlink()
    boot(api, "bad", image="tiny")
    boot(api, "good", "m1.gpu")

    compute.run()

    assert_isolated(api, compute, "bad", "good", "fetch image failed",
                    "image tiny has no disk file")


class ImagesElsewhere(HttpLink):
    """A link whose image downloads go to a controller address nothing listens on."""

    def fetch_image(self, image_id: str, part: ImagePart, dest: Path) -> None:
        gone = connect(f"http://127.0.0.1:{free_port()}", self.host, "token", timeout=2.0)
        try:
            gone.fetch_image(image_id, part, dest)
        finally:
            gone.close()


def test_an_unreachable_image_url(api: Api, tmp_path: Path) -> None:
    compute = Compute(api, tmp_path / HOST, simulated, link=ImagesElsewhere)
    seed_catalog(api)
    new_image(api, "tiny", qcow2(tmp_path / "disk.qcow2"))
    try:
        boot(api, "bad", image="tiny", **direct())
        boot(api, "good", **direct())
        compute.run()
        assert_isolated(api, compute, "bad", "good", "fetch image failed",
                        "cannot reach the controller")
    finally:
        compute.driver.close()


def test_a_disk_overlay_that_qemu_img_cannot_make(api: Api, compute: Compute,
                                                  tmp_path: Path) -> None:
    disk = qcow2(tmp_path / "disk.qcow2")
    new_image(api, "tiny", disk)
    boot(api, "first", image="tiny")
    compute.run()  # the image is in the host's cache now
    api.ok("DELETE", f"{V2}/servers/first")
    compute.run()
    [cached] = compute.images.root.iterdir()
    cached.write_bytes(b"not a disk image at all\n" * 100)  # the host's cache, damaged
    boot(api, "bad", image="tiny", **direct())
    [vf] = devices(api, "bad")
    boot(api, "good", **direct())

    compute.run()

    assert_isolated(api, compute, "bad", "good", "make VM files failed", "qemu-img info")
    assert vf not in compute.vf_state() or reset(compute.vf_state()[vf])


@ON_BOTH
def test_a_port_row_whose_mac_predates_the_apis_check(api: Api, settings: Settings,
                                                      compute: Compute) -> None:
    bad = boot(api, "bad", **direct())
    boot(api, "good", **direct())
    store = Store(settings.database_url)
    with store.write() as session:
        session.execute(update(PortRow).where(PortRow.device_id == bad["id"])
                        .values(mac_address=MULTICAST))
    store.close()

    compute.run()

    assert_isolated(api, compute, "bad", "good", "spawn order cannot be made", MULTICAST,
                    "multicast")


class OlderController(HttpLink):
    """Orders as an older controller sent them: it let a port have a multicast MAC."""

    def orders(self) -> ReadOrders:
        document = self._call("GET", "/orders")
        for spawn in document["spawn"]:
            if spawn["name"] == "bad":
                for attached in spawn["devices"]:
                    attached["port"]["mac"] = MULTICAST
        return read_orders(document)


def test_an_order_this_agent_cannot_read(api: Api, tmp_path: Path) -> None:
    compute = Compute(api, tmp_path / HOST, simulated, link=OlderController)
    seed_catalog(api)
    try:
        boot(api, "bad", **direct())
        [vf] = devices(api, "bad")
        boot(api, "good", **direct())
        compute.run()
        assert_isolated(api, compute, "bad", "good", "cannot read the spawn order",
                        MULTICAST, "multicast")
        assert vf not in compute.vf_state()
    finally:
        compute.driver.close()


@ON_BOTH
def test_a_spawn_answer_the_controller_refuses(api: Api, settings: Settings,
                                               compute: Compute) -> None:
    late = boot(api, "bad", **direct())
    [vf] = devices(api, "bad")
    boot(api, "good", **direct())
    orders = compute.link.orders()
    # The build times out while the agent works on it: the controller has moved on.
    time_out_build(settings, late["id"])

    for order in orders.spawn:
        compute.worker.spawn(order)

    assert_isolated(api, compute, "bad", "good", "build timed out")
    assert reset(compute.vf_state()[vf])


def test_one_servers_console_or_power_state_does_not_stop_the_others(
        api: Api, compute: Compute) -> None:
    one, two = boot(api, "one"), boot(api, "two")
    compute.run()
    console = compute.instances.files(one["id"]).console_log
    console.mkdir(parents=True)  # unreadable as a file
    log = compute.instances.files(two["id"]).console_log
    log.parent.mkdir(parents=True)
    log.write_text("two login: \n")
    compute.driver.stop(domain_name(two["id"]))  # its guest shut itself down

    compute.run()

    assert api.ok("GET", f"{V2}/servers/two/console-log")["output"] == "two login: \n"
    assert server(api, "two")["status"] == "SHUTOFF"
    assert compute.attacher.power_state(one["id"]) is PowerState.RUNNING


@ON_BOTH
def test_a_domain_whose_answer_was_lost_goes_once_the_controller_moved_on(
        api: Api, settings: Settings, compute: Compute) -> None:
    late = boot(api, "bad", **direct())
    [vf] = devices(api, "bad")
    [order] = compute.link.orders().spawn
    assert compute.attacher.spawn(order).ok  # ...and its answer never reached the controller
    time_out_build(settings, late["id"])
    boot(api, "good", **direct())

    compute.run()

    assert_isolated(api, compute, "bad", "good", "build timed out")
    assert reset(compute.vf_state()[vf])


@pytest.fixture
def small_instances(tmp_path: Path) -> Iterator[Path]:
    """A 212 KiB file system for the VMs' files: room for a disk overlay of a small image
    (196 KiB), none for its seed ISO after it."""
    if os.geteuid() != 0:
        cannot_run("mounting a small tmpfs needs root")
    path = tmp_path / "small"
    path.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=212k", "tmpfs", str(path)], check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", str(path)], check=True)


def test_a_seed_iso_that_does_not_fit(api: Api, compute: Compute, tmp_path: Path,
                                      small_instances: Path) -> None:
    new_image(api, "tiny", qcow2(tmp_path / "disk.qcow2"))
    compute.instances.root = small_instances
    boot(api, "bad", image="tiny", **direct())
    boot(api, "good", "m1.gpu")

    compute.run()

    assert_isolated(api, compute, "bad", "good", "make VM files failed",
                    "writing the cloud-init seed ISO", "No space left on device")
    assert list(small_instances.iterdir()) == []
