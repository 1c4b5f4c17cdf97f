"""A tiny real guest for tests and the demo: a Debian kernel, an initrd made here, a disk.

The kernel and its modules come from Debian's `linux-image-amd64`: downloaded with
`apt-get download` and unpacked with `dpkg-deb -x` into a cache directory, so building a
guest never installs a kernel on the host; where nothing can be downloaded, the host's
own `/boot` kernel and `/lib/modules` are used. The initrd is a gzipped cpio (newc)
archive written in Python with the static busybox of Debian's `busybox-static`, the
modules the guest needs (resolved through `modules.dep`, loaded dependencies first) and
an `/init` script that reports on the serial console what a VM must see, one line each,
prefixed with `MARKER`:

    passthru-guest: booted
    passthru-guest: boot <id>                   (the kernel's boot_id: new on every boot)
    passthru-guest: disk vda 1073741824 bytes
    passthru-guest: instance-id <uuid>          (from the cidata seed CD-ROM)
    passthru-guest: public-key <key>            (one line per key)
    passthru-guest: hostname <name>
    passthru-guest: nic eth0 fa:16:3e:..        (one line per NIC)
    passthru-guest: user-data exit 0            (user-data that is a shell script runs)
    passthru-guest: ready

It then powers off when the ACPI power button is pressed, so graceful shutdown and
reboot work. Under TCG the whole boot takes well under a minute.
"""

from __future__ import annotations

import gzip
import io
import lzma
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import platformdirs

from passthru.errors import HostError

MARKER = "passthru-guest:"
KERNEL_PACKAGE = "linux-image-amd64"
BUSYBOX = Path("/bin/busybox")
KERNEL_ARGS = "console=ttyS0 panic=-1"
#: Disk, NIC, the seed's SATA CD-ROM and ISO 9660, the power button and its events.
MODULES = ("virtio_pci", "virtio_blk", "virtio_net", "ahci", "sr_mod", "isofs", "button",
           "evdev")

INIT = r"""#!/bin/busybox sh
/bin/busybox mkdir -p /proc /sys /dev /seed /tmp /bin
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
say() { echo "MARKER $*"; }
say booted
say "boot $(cat /proc/sys/kernel/random/boot_id)"
while read module; do
  insmod "/lib/modules/$module" || say "insmod $module failed"
done < /modules.list
wait_for() { n=0; while [ ! -e "$1" ] && [ $n -lt 150 ]; do usleep 200000; n=$((n+1)); done; }
wait_for /dev/vda
[ -e /sys/block/vda/size ] && say "disk vda $(( $(cat /sys/block/vda/size) * 512 )) bytes"
wait_for /dev/sr0
if mount -t iso9660 -o ro /dev/sr0 /seed; then
  seed() { sed -n "$1" /seed/meta-data | while read line; do say "$line"; done; }
  seed 's/.*"instance-id": *"\([^"]*\)".*/instance-id \1/p'
  seed 's/.*"local-hostname": *"\([^"]*\)".*/hostname \1/p'
  seed 's/^    "\(.*\)",\{0,1\}$/public-key \1/p'
  if [ "$(head -c 2 /seed/user-data)" = "#!" ]; then
    cp /seed/user-data /tmp/user-data && chmod +x /tmp/user-data
    /tmp/user-data
    say "user-data exit $?"
  fi
else
  say "no seed"
fi
for nic in /sys/class/net/*; do
  [ "${nic##*/}" = lo ] || say "nic ${nic##*/} $(cat $nic/address)"
done
# The button driver registers its input device a moment after insmod returns.
buttons=""; n=0
while [ -z "$buttons" ] && [ $n -lt 100 ]; do
  for event in /sys/class/input/event*; do
    [ "$(cat $event/device/name 2>/dev/null)" = "Power Button" ] && buttons="$buttons ${event##*/}"
  done
  [ -z "$buttons" ] && usleep 100000; n=$((n+1))
done
# Each button is opened here, before "ready": a press from then on waits in the open
# device for its reader, however late the background reader gets to run under TCG.
fd=3
for event in $buttons; do
  eval "exec $fd</dev/input/$event"
  ( dd of=/dev/null bs=24 count=1 2>/dev/null <&$fd
    say "power button"; poweroff -f ) &
  fd=$((fd+1))
done
say ready
while true; do sleep 3600; done
""".replace("MARKER", MARKER)


_BOOT_ID = re.compile(re.escape(MARKER) + r" boot ([0-9a-f-]{36})")


def boot_id(console: Iterable[str]) -> str | None:
    """The boot id of the last boot in `console` (its lines), None before the guest says
    one: a copy of a log that a stop and start replaced can hold the same other lines."""
    ids = [found[1] for line in console if (found := _BOOT_ID.search(line))]
    return ids[-1] if ids else None


class GuestBuildError(HostError):
    """The guest could not be built: no kernel, no busybox, a module missing."""


@dataclass(frozen=True, slots=True)
class GuestImage:
    """The files of a direct-kernel-boot image, and the command line to boot it with."""

    kernel: Path
    initrd: Path
    disk: Path
    kernel_args: str = KERNEL_ARGS


@dataclass(frozen=True, slots=True)
class KernelTree:
    """An unpacked kernel package: the kernel file and its modules directory."""

    kernel: Path
    modules: Path


def _run(*command: str, cwd: Path | None = None) -> str:
    done = subprocess.run(command, cwd=cwd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise GuestBuildError(f"{' '.join(command)} failed: {done.stderr.strip()}")
    return done.stdout


def _download(package: str, into: Path, *, again: bool = True) -> Path:
    into.mkdir(parents=True, exist_ok=True)
    if again or not any(into.glob(f"{package}_*.deb")):
        _run("apt-get", "download", package, cwd=into)
    found = sorted(into.glob(f"{package}_*.deb"))
    if not found:
        raise GuestBuildError(f"apt-get download {package} left no .deb in {into}")
    return found[-1]


def _tree_in(root: Path) -> KernelTree | None:
    kernels = sorted(root.glob("boot/vmlinuz-*"))
    if not kernels:
        return None
    version = kernels[-1].name.removeprefix("vmlinuz-")
    modules = root / "lib/modules" / version
    return KernelTree(kernels[-1], modules) if (modules / "modules.dep").exists() else None


def downloaded_kernel(cache: Path, package: str = KERNEL_PACKAGE) -> KernelTree:
    """The kernel of Debian's `package` (a meta-package is followed to its kernel),
    downloaded and unpacked under `cache` once."""
    debs = cache / "debs"
    deb = _download(package, debs)
    depends = _run("dpkg-deb", "-f", str(deb), "Depends")
    real = re.search(r"\b(linux-image-[0-9][^\s,(]*)", depends)
    if real is not None:
        package = real.group(1)
    root = cache / package
    if (tree := _tree_in(root)) is not None:
        return tree
    deb = deb if real is None else _download(package, debs, again=False)
    partial = Path(tempfile.mkdtemp(dir=cache, prefix=f".{package}."))
    try:
        _run("dpkg-deb", "-x", str(deb), str(partial))
        kernels = sorted(partial.glob("boot/vmlinuz-*"))
        if not kernels:
            raise GuestBuildError(f"{deb.name} holds no /boot/vmlinuz-*")
        version = kernels[-1].name.removeprefix("vmlinuz-")
        # The package's postinst runs depmod; unpacked by hand, we run it ourselves.
        _run("depmod", "-b", str(partial), version)
        partial.rename(root)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    deb.unlink()  # unpacked, it is not needed again
    tree = _tree_in(root)
    assert tree is not None
    return tree


def host_kernel(boot: Path = Path("/boot"), lib: Path = Path("/lib/modules")) -> KernelTree:
    """The host's newest installed kernel and its modules."""
    for kernel in sorted(boot.glob("vmlinuz-*"), key=lambda path: path.stat().st_mtime,
                         reverse=True):
        modules = lib / kernel.name.removeprefix("vmlinuz-")
        if os.access(kernel, os.R_OK) and (modules / "modules.dep").exists():
            return KernelTree(kernel, modules)
    raise GuestBuildError(f"no readable kernel with modules in {boot} and {lib}; install "
                          f"Debian's linux-image-amd64 or let apt-get download it")


def kernel_tree(cache: Path, package: str = KERNEL_PACKAGE) -> KernelTree:
    """A downloaded kernel where apt can fetch one, else one downloaded before, else the
    host's own."""
    try:
        return downloaded_kernel(cache, package)
    except (GuestBuildError, OSError):
        for root in sorted(cache.glob("linux-image-*"), reverse=True):
            if root.is_dir() and (tree := _tree_in(root)) is not None:
                return tree
        return host_kernel()


def modules_in_load_order(modules_dir: Path, wanted: Iterable[str]) -> list[str]:
    """The module files (relative to `modules_dir`) that `wanted` need, each after the
    modules it depends on, from `modules.dep`. Built-in modules need no file."""
    depends: dict[str, list[str]] = {}
    by_name: dict[str, str] = {}
    for line in (modules_dir / "modules.dep").read_text().splitlines():
        path, _, deps = line.partition(":")
        depends[path] = deps.split()
        by_name[_module_name(path)] = path
    builtin_file = modules_dir / "modules.builtin"
    builtin = {_module_name(line) for line in builtin_file.read_text().split()} \
        if builtin_file.exists() else set()
    order: list[str] = []

    def visit(path: str) -> None:
        if path in order:
            return
        for dep in depends.get(path, []):
            visit(dep)
        order.append(path)

    for name in wanted:
        key = name.replace("-", "_")
        if key in by_name:
            visit(by_name[key])
        elif key not in builtin:
            raise GuestBuildError(f"kernel module {name} is neither in {modules_dir}/"
                                  f"modules.dep nor built in")
    return order


def _module_name(path: str) -> str:
    return Path(path).name.split(".ko")[0].replace("-", "_")


def _module_bytes(path: Path) -> bytes:
    data = path.read_bytes()
    if path.name.endswith(".ko.xz"):
        return lzma.decompress(data)
    if path.name.endswith(".ko"):
        return data
    raise GuestBuildError(f"{path}: only plain and xz-compressed modules can be loaded by "
                          f"busybox insmod")


class Cpio:
    """A cpio archive in the `newc` format the kernel unpacks as its initramfs."""

    def __init__(self) -> None:
        self._out = io.BytesIO()
        self._inode = 0

    def _entry(self, name: str, mode: int, data: bytes = b"", rdev: tuple[int, int] = (0, 0),
               ) -> None:
        self._inode += 1
        fields = (self._inode, mode, 0, 0, 1, 0, len(data), 0, 0, rdev[0], rdev[1],
                  len(name) + 1, 0)
        self._out.write(b"070701" + b"".join(b"%08x" % field for field in fields))
        self._out.write(name.encode() + b"\0")
        self._pad()
        self._out.write(data)
        self._pad()

    def _pad(self) -> None:
        self._out.write(b"\0" * (-self._out.tell() % 4))

    def directory(self, name: str) -> None:
        self._entry(name, 0o040755)

    def file(self, name: str, data: bytes, mode: int = 0o644) -> None:
        self._entry(name, 0o100000 | mode, data)

    def char_device(self, name: str, major: int, minor: int) -> None:
        self._entry(name, 0o020600, rdev=(major, minor))

    def finish(self) -> bytes:
        self._entry("TRAILER!!!", 0)
        return self._out.getvalue()


def build_initrd(tree: KernelTree, busybox: Path = BUSYBOX,
                 modules: Iterable[str] = MODULES) -> bytes:
    """The gzipped initramfs: busybox, `/init`, the modules and their load order."""
    if not busybox.exists():
        raise GuestBuildError(f"{busybox} is missing; install Debian's busybox-static")
    archive = Cpio()
    for directory in ("bin", "dev", "proc", "sys", "seed", "tmp", "lib", "lib/modules"):
        archive.directory(directory)
    # The kernel opens /dev/console for init before anything can mount devtmpfs.
    archive.char_device("dev/console", 5, 1)
    archive.file("bin/busybox", busybox.read_bytes(), 0o755)
    archive.file("init", INIT.encode(), 0o755)
    names = []
    for relative in modules_in_load_order(tree.modules, modules):
        name = Path(relative).name.removesuffix(".xz")
        archive.file(f"lib/modules/{name}", _module_bytes(tree.modules / relative))
        names.append(name)
    archive.file("modules.list", "".join(f"{name}\n" for name in names).encode())
    return gzip.compress(archive.finish(), compresslevel=6, mtime=0)


def default_cache() -> Path:
    """Where the downloaded kernel package is kept between builds: the user's cache dir
    (`PASSTHRU_GUEST_CACHE` overrides it), shared by the demo, the tests and the
    benchmarks so that one machine downloads it once."""
    if override := os.environ.get("PASSTHRU_GUEST_CACHE"):
        return Path(override)
    return Path(platformdirs.user_cache_dir("passthru")) / "guest"


def build_guest_image(directory: Path, cache: Path | None = None, disk_mb: int = 64,
                      package: str = KERNEL_PACKAGE) -> GuestImage:
    """Write the guest's kernel, initrd and empty qcow2 disk into `directory`; the kernel
    package is kept in `cache` (default: `default_cache()`) for the next build."""
    cache = cache if cache is not None else default_cache()
    directory.mkdir(parents=True, exist_ok=True)
    cache.mkdir(parents=True, exist_ok=True)
    tree = kernel_tree(cache, package)
    kernel = directory / "vmlinuz"
    shutil.copyfile(tree.kernel, kernel)
    initrd = directory / "initrd.gz"
    initrd.write_bytes(build_initrd(tree))
    disk = directory / "disk.qcow2"
    disk.unlink(missing_ok=True)
    _run("qemu-img", "create", "-q", "-f", "qcow2", str(disk), f"{disk_mb}M")
    return GuestImage(kernel, initrd, disk)
