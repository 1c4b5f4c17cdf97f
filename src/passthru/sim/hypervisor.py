"""A private libvirtd with the real qemu driver, for the demo, the tests and the
benchmarks, on a machine whose own libvirt state must stay untouched.

There may be no systemd, so the daemon runs in a mount namespace of its own
(`unshare -m`) inside a network namespace made for it: bridges and taps live in that
namespace, and libvirt's directories are bind mounts of a temp dir (`/run/libvirt` a
tmpfs). Its qemu.conf runs qemu as root with no security driver and no ownership changes
(nothing to label or chown for in a temp dir), qemu's output goes to plain files (no
virtlogd), and no cgroups or per-domain /dev namespace are set up (a container cannot
always give them). On the way out every domain is destroyed and undefined (qemu
outlives libvirtd otherwise), then the daemon is stopped and the namespace removed.

Guests may run under TCG: nested KVM often does not run them (see
`passthru.host.domain_type`).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import libvirt

from passthru.errors import HostError

QEMU_CONF = """\
user = "root"
group = "root"
dynamic_ownership = 0
remember_owner = 0
security_driver = "none"
stdio_handler = "file"
cgroup_controllers = [ ]
namespaces = [ ]
"""

START = """\
set -e
mkdir -p /run/libvirt
mount -t tmpfs none /run/libvirt
# Without Debian's libvirt-daemon-system these mount points may not exist yet.
mkdir -p /var/lib/libvirt /var/cache/libvirt /var/log/libvirt /etc/libvirt
mount --bind {root}/lib /var/lib/libvirt
mount --bind {root}/cache /var/cache/libvirt
mount --bind {root}/log /var/log/libvirt
# The host's libvirt config with our qemu.conf in place of its own (which it may lack).
cp -a /etc/libvirt/. {root}/etc/ 2>/dev/null || true
cp {root}/qemu.conf {root}/etc/qemu.conf
mount --bind {root}/etc /etc/libvirt
exec libvirtd -f {root}/libvirtd.conf -p {root}/libvirtd.pid
"""


@dataclass(frozen=True)
class Libvirtd:
    """A running private libvirtd: its URI, the network namespace it makes taps in, and its
    directory (the daemon's log is `log_file`)."""

    uri: str
    netns: str
    root: Path

    @property
    def log_file(self) -> Path:
        return self.root / "libvirtd.log"

    def ip(self, *args: str) -> str:
        """Run `ip` in the daemon's network namespace."""
        done = subprocess.run(["ip", "-n", self.netns, *args], capture_output=True, text=True,
                              check=True)
        return done.stdout


def _write_config(root: Path) -> None:
    for sub in ("lib", "cache", "log", "run", "etc"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    (root / "qemu.conf").write_text(QEMU_CONF)
    (root / "libvirtd.conf").write_text(
        f'unix_sock_dir = "{root}/run"\n'
        'unix_sock_rw_perms = "0700"\n'
        'auth_unix_rw = "none"\n'
        'auth_unix_ro = "none"\n'
        f'log_outputs = "3:file:{root}/libvirtd.log"\n')
    (root / "start.sh").write_text(START.format(root=root))


class HypervisorError(HostError):
    """The private libvirtd did not start; the message has the end of its logs."""


def _logs(root: Path) -> str:
    found = [path.read_text(errors="replace")[-1500:].strip()
             for path in (root / "daemon.out", root / "libvirtd.log") if path.exists()]
    return "\n".join(text for text in found if text) or "(it logged nothing)"


def _connect(uri: str, daemon: subprocess.Popen[bytes], root: Path,
             seconds: float = 60.0) -> None:
    # Quiet: libvirt would print every refused connection while the daemon comes up.
    libvirt.registerErrorHandler(lambda _context, _error: None, None)
    deadline = time.monotonic() + seconds
    while True:
        if daemon.poll() is not None:
            raise HypervisorError(f"libvirtd exited with {daemon.returncode}: {_logs(root)}")
        try:
            libvirt.open(uri).close()
            return
        except libvirt.libvirtError as error:
            if time.monotonic() > deadline:
                raise HypervisorError(f"libvirtd did not answer at {uri} within "
                                      f"{seconds:.0f} s ({error}): {_logs(root)}") from None
            time.sleep(0.2)


def _clean_domains(uri: str) -> None:
    with contextlib.closing(libvirt.open(uri)) as conn:
        for domain in conn.listAllDomains(0):
            with contextlib.suppress(libvirt.libvirtError):
                if domain.isActive():
                    domain.destroy()
            with contextlib.suppress(libvirt.libvirtError):
                domain.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE)


@contextlib.contextmanager
def running_libvirtd(root: Path, netns: str) -> Iterator[Libvirtd]:
    """Start libvirtd in network namespace `netns` (made here) with its files in `root`."""
    _write_config(root)
    subprocess.run(["ip", "netns", "add", netns], check=True)
    daemon: subprocess.Popen[bytes] | None = None
    uri = f"qemu+unix:///system?socket={root}/run/libvirt-sock"
    try:
        subprocess.run(["ip", "-n", netns, "link", "set", "lo", "up"], check=True)
        with (root / "daemon.out").open("wb") as out:
            # `ip netns exec` and `unshare` exec, and so does the script: the pid is the
            # daemon's.
            daemon = subprocess.Popen(["ip", "netns", "exec", netns, "unshare", "-m", "sh",
                                       str(root / "start.sh")], stdout=out,
                                      stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        _connect(uri, daemon, root)
        yield Libvirtd(uri, netns, root)
    finally:
        if daemon is not None:
            with contextlib.suppress(libvirt.libvirtError):
                if daemon.poll() is None:
                    _clean_domains(uri)
            daemon.terminate()
            try:
                daemon.wait(30)
            except subprocess.TimeoutExpired:
                daemon.kill()
                daemon.wait()
        subprocess.run(["ip", "netns", "del", netns], check=False)


def missing() -> str | None:
    """Why a private libvirtd cannot run here (None: it can)."""
    if os.geteuid() != 0:
        return "a private libvirtd needs root (namespaces, bind mounts)"
    for tool in ("libvirtd", "qemu-system-x86_64", "qemu-img", "unshare", "ip"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    return None
