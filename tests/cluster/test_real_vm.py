"""A real VM from end to end: `passthru serve`, a `passthru agent` process whose libvirt is
a real libvirtd with the qemu driver (TCG here), and the CLI.

The sequence is the one an operator types: an image with a file (a Debian kernel, an
initrd made here, a qcow2 disk), a keypair, a flavor with a disk, a management network
on a bridge, `boot --key-name --nic net-id=mgmt`, then `console-log`, `stop`, `start`,
`reboot` and `delete`. What is checked comes from the guest itself (its console lines:
booted, its seed's instance-id and key, its disk, its NIC) and from the host (the domain,
its disk overlay, seed ISO and console log gone after the delete).

The host's PCI devices are simulated (this kernel has no VFIO): the agent reports a
simulated GPU host, and the VM takes no device, so that it can start on this qemu.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import libvirt
import pytest

from passthru.sim import PROFILES, build_sysfs, host_config_toml
from passthru.sim.guest import MARKER, GuestImage, boot_id, build_guest_image
from tests.cli.runner import as_json, ok, run
from tests.cluster.hosts import wait_for as cluster_wait_for
from tests.support.libvirtd import Libvirtd
from tests.support.live import PASSTHRU, Child, LiveController, child_env

pytestmark = pytest.mark.slow

T = TypeVar("T")
BRIDGE = "br-mgmt"
HOST = "sim-gpu-2numa"
#: A TCG boot on two busy cores takes up to a minute; stop and reboot wait on the guest.
GUEST_SECONDS = 300.0


@dataclass
class RealHost(Child):
    """The agent process of a simulated GPU host whose domains run on `libvirtd`."""

    home: Path
    config: Path
    instances: Path
    libvirtd: Libvirtd
    process: subprocess.Popen[bytes] | None = None
    title = "agent"

    @property
    def log(self) -> Path:  # type: ignore[override]
        return self.home / "agent.log"

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.process = subprocess.Popen([str(PASSTHRU), "agent", "--config", str(self.config)],
                                            stdout=out, stderr=subprocess.STDOUT, env=child_env())

    def domains(self) -> list[str]:
        with contextlib.closing(libvirt.open(self.libvirtd.uri)) as conn:
            return [domain.name() for domain in conn.listAllDomains(0)]


def _host(home: Path, controller: str, token: str, libvirtd: Libvirtd) -> RealHost:
    profile = PROFILES["gpu-2numa"]
    home.mkdir(parents=True)
    sysfs = build_sysfs(profile, home / "sys")
    settings = {"token": token, "interval": 2, "order_interval": 0.3,
                "libvirt_uri": libvirtd.uri, "instances_path": str(home / "instances"),
                "image_cache": str(home / "images"), "domain_type": "auto",
                "libvirt_netns": libvirtd.netns}
    head = "".join(f"{key} = {json.dumps(value)}\n" for key, value in settings.items())
    head += f'bridge_mappings = {{ mgmt = "{BRIDGE}" }}\n'
    config = home / "host.toml"
    config.write_text(head + host_config_toml(profile, sysfs_root=sysfs, controller=controller))
    return RealHost(home, config, home / "instances", libvirtd)


@pytest.fixture
def guest(tmp_path_factory: pytest.TempPathFactory) -> GuestImage:
    return build_guest_image(tmp_path_factory.mktemp("guest"))


@pytest.fixture
def host(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
         real_libvirtd: Libvirtd) -> Iterator[RealHost]:
    real_libvirtd.ip("link", "add", BRIDGE, "type", "bridge")
    real_libvirtd.ip("link", "set", BRIDGE, "up")
    controller = LiveController(tmp_path / "data")
    agent: RealHost | None = None
    try:
        controller.start()
        monkeypatch.setenv("PASSTHRU_URL", controller.url)
        monkeypatch.setenv("PASSTHRU_TOKEN", controller.admin_token)
        token = ok(f"passthru host-token {HOST}").stdout.strip()
        agent = _host(tmp_path / "host", controller.url, token, real_libvirtd)
        agent.start()
        yield agent
    finally:
        if agent is not None:
            agent.stop()
        controller.stop()
        real_libvirtd.ip("link", "del", BRIDGE)


def wait_for(what: str, check: Callable[[], T | None], host: RealHost) -> T:
    return cluster_wait_for(what, check, [host], GUEST_SECONDS)


def server(name: str) -> dict[str, Any]:
    return as_json(f"passthru show {name}")


def status_is(name: str, wanted: str) -> Callable[[], dict[str, Any] | None]:
    def check() -> dict[str, Any] | None:
        found = server(name)
        assert found["status"] != "ERROR", f"{name}: {found['fault']}"
        return found if found["status"] == wanted and not found.get("task_state") else None
    return check


def console(name: str) -> list[str]:
    return [line.strip() for line in ok(f"passthru console-log {name}").stdout.splitlines()]


def console_shows(name: str, *lines: str) -> Callable[[], list[str] | None]:
    def check() -> list[str] | None:
        seen = console(name)
        return seen if all(line in seen for line in lines) else None
    return check


def test_boot_console_stop_start_reboot_delete_a_real_vm(host: RealHost, guest: GuestImage,
                                                         tmp_path: Path) -> None:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "me@e2e",
                    "-f", str(tmp_path / "key")], check=True)
    key = (tmp_path / "key.pub").read_text().strip()
    ok(f"passthru image-create tiny --file {guest.disk} --kernel {guest.kernel} "
       f"--initrd {guest.initrd} --property os_command_line='{guest.kernel_args}'")
    ok(f"passthru keypair-create mine --public-key {tmp_path / 'key.pub'}")
    ok("passthru flavor-create m1.tiny --vcpus 1 --ram 256 --disk 1")
    ok("passthru net-create mgmt --physical-network mgmt")
    wait_for("host up", lambda: any(h["name"] == HOST and h["status"] == "up"
                                    for h in as_json("passthru host-list")), host)

    ok("passthru boot vm1 --flavor m1.tiny --image tiny --key-name mine --nic net-id=mgmt")
    booted = wait_for("vm1 ACTIVE", status_is("vm1", "ACTIVE"), host)
    uuid = booted["id"]
    assert booted["host"] == HOST and booted["key_name"] == "mine"
    mac = as_json(f"passthru port-show {booted['ports'][0]}")["mac_address"]
    seen = wait_for("the guest's console: booted, seed, disk, NIC", console_shows(
        "vm1", f"{MARKER} booted", f"{MARKER} instance-id {uuid}", f"{MARKER} public-key {key}",
        f"{MARKER} hostname vm1", f"{MARKER} disk vda {1 << 30} bytes",
        f"{MARKER} nic eth0 {mac}"), host)
    assert seen.index(f"{MARKER} booted") < seen.index(f"{MARKER} instance-id {uuid}")
    assert len(ok("passthru console-log vm1 --lines 2").stdout.splitlines()) == 2
    xml = ok("passthru show vm1 --xml").stdout
    assert f"<source bridge=\"{BRIDGE}\"/>" in xml or f"<source bridge='{BRIDGE}'/>" in xml
    files = host.instances / uuid
    assert {p.name for p in files.iterdir()} >= {"disk.qcow2", "seed.iso", "console.log"}
    assert host.domains() == [f"passthru-{uuid}"]

    ok("passthru stop vm1")
    wait_for("vm1 SHUTOFF", status_is("vm1", "SHUTOFF"), host)
    ok("passthru start vm1")
    wait_for("vm1 ACTIVE again", status_is("vm1", "ACTIVE"), host)
    # Until the agent sends the new log, the controller's copy is the first boot's, "ready"
    # included; a reboot sent before this boot listens to its power button would be lost.
    first = boot_id(seen)
    assert first is not None

    def booted_again() -> list[str] | None:
        lines = console("vm1")
        return lines if f"{MARKER} ready" in lines and boot_id(lines) != first else None
    wait_for("the guest booted again", booted_again, host)
    ok("passthru reboot vm1")
    wait_for("vm1 rebooted", status_is("vm1", "ACTIVE"), host)
    wait_for("the guest's second boot in one log", lambda: console("vm1").count(
        f"{MARKER} booted") >= 2 or None, host)

    ok("passthru delete vm1")
    wait_for("domain removed", lambda: host.domains() == [] or None, host)
    wait_for("vm1 gone", lambda: run("passthru show vm1").exit_code != 0 or None, host)
    assert not files.exists(), sorted(p.name for p in files.iterdir())
    held = [row["device"]["address"] for row in as_json(f"passthru pci-device-list --host {HOST}")
            if row["device"]["status"] != "available"]
    assert held == []
