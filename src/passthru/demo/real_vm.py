"""The demo's real VM: a host whose libvirt is a real libvirtd with the qemu driver, and
the use case that boots a guest there and reads its console.

Wherever the machine can run one (root, libvirtd, qemu, qemu-img: `scripts/setup.sh`
installs them), the demo starts a private libvirtd in its own mount and network
namespaces (`passthru.sim.hypervisor`), with a bridge `br-mgmt` in that namespace as the
management network's bridge, and builds the small guest of `passthru.sim.guest` (a Debian
kernel downloaded once into the user's cache dir). The host's agent picks the domain type
itself: KVM only where a probe shows that KVM really runs a guest, TCG otherwise. Its PCI
devices are simulated (none are offered), so the guest takes none: no device leaves this
machine.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console

from passthru.demo.hosts import DemoHost, checked_config
from passthru.demo.outcome import Check, check, exists, server
from passthru.demo.walk import StepFailedError, Walk
from passthru.sim import HostProfile, build_sysfs, host_config_toml
from passthru.sim.guest import MARKER, GuestBuildError, GuestImage, boot_id, build_guest_image
from passthru.sim.hypervisor import HypervisorError, Libvirtd, missing, running_libvirtd

HOST = "real-qemu"
BRIDGE = "br-mgmt"
MGMT = "mgmt"
#: A TCG boot on two busy cores takes up to a minute.
_GUEST_SECONDS = 240.0


@dataclass(frozen=True, slots=True)
class RealVmHost:
    """The real hypervisor and what the use case needs of it."""

    host: DemoHost
    libvirtd: Libvirtd
    guest: GuestImage
    instances: Path


def _host_config(home: Path, controller: str, libvirtd: Libvirtd) -> DemoHost:
    profile = HostProfile(HOST, "a real libvirtd with the qemu driver; simulated PCI, none "
                          "offered", cards=())
    sysfs = build_sysfs(profile, home / "sys")
    settings = {"host": HOST, "libvirt_uri": libvirtd.uri, "libvirt_netns": libvirtd.netns,
                "instances_path": str(home / "instances"), "image_cache": str(home / "images"),
                "domain_type": "auto", "interval": 2, "order_interval": 0.5}
    head = "".join(f"{key} = {json.dumps(value)}\n" for key, value in settings.items())
    head += f'bridge_mappings = {{ {MGMT} = "{BRIDGE}" }}\n'
    body = "\n".join(line for line in host_config_toml(profile, sysfs_root=sysfs,
                                                       controller=controller).splitlines()
                     if not line.startswith("host = "))
    config = checked_config(head + body + "\n", home / "agent.toml")
    return DemoHost(config.host, "this machine's libvirtd and qemu: real guests",
                    home / "agent.toml", 0, sysfs, profile=HOST)


@contextlib.contextmanager
def real_hypervisor(root: Path, controller: str, console: Console) -> Iterator[RealVmHost | None]:
    """The real VM host, or None (and why) where this machine cannot run one."""
    if (reason := missing()) is not None:
        console.print(f"No real VM in this demo: {reason} (scripts/setup.sh installs "
                      "libvirtd and qemu; run as root).")
        yield None
        return
    console.print("Building the demo guest: a Debian kernel (downloaded once), an initrd "
                  "with busybox, a qcow2 disk ...", highlight=False)
    with contextlib.ExitStack() as stack:
        try:
            guest = build_guest_image(root / "guest")
            # Named after the demo's own temporary dir: two demos get two namespaces.
            libvirtd = stack.enter_context(running_libvirtd(
                root / "libvirtd", f"ptd-{root.parent.name[-12:]}"))
        except (GuestBuildError, HypervisorError) as error:
            console.print(f"No real VM in this demo: {error}", highlight=False)
            yield None
            return
        libvirtd.ip("link", "add", BRIDGE, "type", "bridge")
        libvirtd.ip("link", "set", BRIDGE, "up")
        home = root / "hosts" / HOST
        home.mkdir(parents=True)
        host = _host_config(home, controller, libvirtd)
        yield RealVmHost(host, libvirtd, guest, home / "instances")


def _console(walk: Walk, name: str) -> list[str]:
    log = walk.api.call("GET", walk.api.tenant(f"/servers/{name}/console-log"))
    return [line.strip() for line in log["output"].splitlines()]


def _wait(what: str, done: Callable[[], bool], timeout: float = _GUEST_SECONDS) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            raise StepFailedError(f"{what} did not happen within {timeout:.0f} s")
        time.sleep(0.5)


def _status(walk: Walk, name: str, wanted: str) -> bool:
    found = server(walk.api, name)
    if found["status"] == "ERROR":
        raise StepFailedError(f"{name} went to ERROR: {found['fault']}")
    return bool(found["status"] == wanted and not found.get("task_state"))


def play(walk: Walk, real: RealVmHost) -> list[Check]:
    key = real.instances.parent / "demo-key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "demo@passthru",
                    "-f", str(key)], check=True)
    guest = real.guest
    walk.catalog("image-create", "guest", "--file", str(guest.disk), "--kernel",
                 str(guest.kernel), "--initrd", str(guest.initrd), "--property",
                 f"os_command_line={guest.kernel_args}",
                 note="a direct-kernel-boot image: disk, kernel and initrd, checked and kept")
    walk.catalog("keypair-create", "demo", "--public-key", f"{key}.pub")
    walk.catalog("flavor-create", "m1.vm", "--vcpus", "1", "--ram", "256", "--disk", "1")
    walk.catalog("net-create", MGMT, "--physical-network", MGMT,
                 note=f"the management network: {HOST} bridges it on {BRIDGE}")
    found = walk.boot("vm-real", "--flavor", "m1.vm", "--image", "guest", "--key-name",
                      "demo", "--nic", f"net-id={MGMT}", timeout=_GUEST_SECONDS)
    uuid = found["id"]
    if found["status"] != "ACTIVE":
        raise StepFailedError(f"vm-real is {found['status']}, not ACTIVE")
    walk.note("waiting for the guest to boot (under TCG this takes a while) ...")
    _wait("the guest's boot", lambda: f"{MARKER} ready" in _console(walk, "vm-real"))
    walk.run("console-log", "vm-real", "--lines", "9",
             note="the guest's serial console, as its host last sent it")
    seen = _console(walk, "vm-real")
    public = key.with_suffix(".pub").read_text().strip()
    checks = [
        check(f"vm-real ACTIVE on {HOST}", found["status"] == "ACTIVE" and found["host"] == HOST,
              f"{found['status']} on {found['host']}"),
        check("the guest booted and read its seed: instance-id and public key",
              f"{MARKER} instance-id {uuid}" in seen and f"{MARKER} public-key {public}" in seen),
        check("the guest saw its 1 GB disk", f"{MARKER} disk vda {1 << 30} bytes" in seen),
    ]
    walk.run("stop", "vm-real", note="an ACPI power-off; the guest shuts itself down")
    _wait("SHUTOFF", lambda: _status(walk, "vm-real", "SHUTOFF"))
    walk.run("start", "vm-real")
    _wait("ACTIVE again", lambda: _status(walk, "vm-real", "ACTIVE"))
    first = boot_id(seen)

    def booted_again() -> str | None:
        lines = _console(walk, "vm-real")
        now = boot_id(lines)
        return now if f"{MARKER} ready" in lines and now != first else None

    # Until its host sends the new log, the controller's copy is the first boot's.
    _wait("the guest's second boot", lambda: booted_again() is not None)
    again = booted_again()
    checks.append(check("stop, then start: the guest booted again", again is not None,
                        f"boot {first}, then boot {again}"))
    walk.run("delete", "vm-real")
    _wait("the VM's files removed", lambda: not (real.instances / uuid).exists())
    checks.append(check("after delete, no domain, disk, seed or console log is left",
                        not exists(walk.api, "vm-real") and not (real.instances / uuid).exists()))
    return checks
