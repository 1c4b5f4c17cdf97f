"""Which libvirt domain type this host runs guests with: `kvm`, or `qemu` (TCG) where KVM
does not really run them.

`/dev/kvm` existing proves little: under nested virtualisation KVM may abort on the first
MSR with `-cpu host`, and with other CPU models run the firmware and the kernel's
real-mode setup but never get a kernel to print. So `auto` asks libvirt whether it offers
KVM at all, then boots a kernel of the host's own `/boot` under qemu with KVM and the
default CPU model (the one our domains get) until it prints its `Linux version` banner on
the serial port: a guest that gets that far runs under KVM. The answer is cached per qemu
binary and kernel for the life of the process; the probe takes about a second where KVM
works and at most `PROBE_SECONDS` where it does not.
"""

from __future__ import annotations

import functools
import logging
import os
import selectors
import subprocess
import time
from pathlib import Path

from passthru.host.libvirt_driver import LibvirtDriver

log = logging.getLogger(__name__)

PROBE_SECONDS = 10.0
_BANNER = b"Linux version"


def probe_kernel(boot: Path = Path("/boot")) -> Path | None:
    """The newest readable kernel in `boot`, to probe with."""
    kernels = sorted((path for path in boot.glob("vmlinuz-*") if os.access(path, os.R_OK)),
                     key=lambda path: path.stat().st_mtime)
    return kernels[-1] if kernels else None


def _output_shows(command: list[str], marker: bytes, seconds: float) -> bool:
    """Whether `command`'s stdout shows `marker` within `seconds`; the process is killed."""
    try:
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                   stderr=subprocess.DEVNULL)
    except OSError:
        return False
    assert process.stdout is not None
    seen = b""
    deadline = time.monotonic() + seconds
    try:
        with selectors.DefaultSelector() as selector:
            selector.register(process.stdout, selectors.EVENT_READ)
            while marker not in seen and (left := deadline - time.monotonic()) > 0:
                if not selector.select(left):
                    break
                chunk = os.read(process.stdout.fileno(), 65536)
                if not chunk:
                    break  # qemu exited: it aborts where KVM cannot set the guest's MSRs
                seen = seen[-len(marker):] + chunk
    finally:
        process.kill()
        process.wait()
        process.stdout.close()
    return marker in seen


@functools.cache
def kvm_runs_guests(emulator: str, kernel: Path) -> bool:
    """Whether `emulator` with KVM gets `kernel` as far as printing its banner."""
    return _output_shows([emulator, "-machine", "q35,accel=kvm", "-nodefaults",
                          "-display", "none", "-m", "256", "-no-reboot", "-monitor", "none",
                          "-serial", "stdio", "-kernel", str(kernel),
                          "-append", "console=ttyS0 earlyprintk=serial,ttyS0 panic=-1"],
                         _BANNER, PROBE_SECONDS)


def resolve_domain_type(setting: str, driver: LibvirtDriver, arch: str = "x86_64",
                        machine: str = "q35") -> str:
    """`kvm` or `qemu` for the host config's `domain_type` (`auto` probes)."""
    if setting != "auto":
        return setting
    emulator = driver.kvm_emulator(arch, machine)
    if emulator is None:
        return "qemu"
    kernel = probe_kernel()
    if kernel is None:
        log.warning("no kernel in /boot to check that KVM runs guests with; using TCG "
                    "(domain type qemu). Set domain_type = \"kvm\" in the host config if "
                    "KVM works here")
        return "qemu"
    return "kvm" if kvm_runs_guests(emulator, kernel) else "qemu"
