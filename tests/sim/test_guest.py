"""The guest builder's parts: modules in dependency order from modules.dep, and an initrd
that GNU cpio reads back as the kernel would unpack it. The guest booting is in
tests/host/test_real_guest.py."""

from __future__ import annotations

import gzip
import lzma
import subprocess
from pathlib import Path

import pytest

from passthru.sim.guest import (
    INIT,
    MARKER,
    GuestBuildError,
    KernelTree,
    build_initrd,
    modules_in_load_order,
)

DEP = """\
kernel/drivers/block/virtio_blk.ko: kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/virtio/virtio_ring.ko:
kernel/drivers/virtio/virtio.ko: kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/scsi/sr_mod.ko: kernel/drivers/scsi/scsi_mod.ko kernel/drivers/cdrom/cdrom.ko
kernel/drivers/scsi/scsi_mod.ko:
kernel/drivers/cdrom/cdrom.ko:
kernel/fs/isofs/isofs.ko.xz: kernel/drivers/cdrom/cdrom.ko
"""


@pytest.fixture
def tree(tmp_path: Path) -> KernelTree:
    modules = tmp_path / "lib/modules/6.1.0-test"
    for line in DEP.splitlines():
        path = modules / line.partition(":")[0]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"\x7fELF " + path.name.encode())
    (modules / "modules.dep").write_text(DEP)
    (modules / "modules.builtin").write_text("kernel/drivers/tty/serial/8250/8250.ko\n")
    isofs = modules / "kernel/fs/isofs/isofs.ko.xz"
    isofs.write_bytes(lzma.compress(b"\x7fELF isofs.ko"))
    kernel = tmp_path / "boot/vmlinuz-6.1.0-test"
    kernel.parent.mkdir()
    kernel.write_bytes(b"kernel")
    return KernelTree(kernel, modules)


def test_modules_come_after_what_they_depend_on(tree: KernelTree) -> None:
    order = [Path(path).name for path in modules_in_load_order(
        tree.modules, ["virtio_blk", "sr_mod", "isofs", "8250"])]
    assert order == ["virtio_ring.ko", "virtio.ko", "virtio_blk.ko", "scsi_mod.ko",
                     "cdrom.ko", "sr_mod.ko", "isofs.ko.xz"]
    with pytest.raises(GuestBuildError, match=r"kernel module e1000 is neither in"):
        modules_in_load_order(tree.modules, ["e1000"])


def test_the_initrd_holds_busybox_init_console_and_the_modules_in_order(
        tree: KernelTree, tmp_path: Path) -> None:
    archive = gzip.decompress(build_initrd(tree, modules=["sr_mod", "isofs"]))
    listing = subprocess.run(["cpio", "-itv", "--quiet"], input=archive, capture_output=True,
                             check=True).stdout.decode()
    entries = {line.split()[-1]: line.split()[0] for line in listing.splitlines()}
    assert entries["init"] == "-rwxr-xr-x"
    assert entries["bin/busybox"] == "-rwxr-xr-x"
    assert entries["dev/console"].startswith("c")
    out = tmp_path / "unpacked"
    out.mkdir()
    subprocess.run(["cpio", "-id", "--quiet"], input=archive, cwd=out, check=True)
    assert (out / "modules.list").read_text().split() == [
        "scsi_mod.ko", "cdrom.ko", "sr_mod.ko", "isofs.ko"]
    assert (out / "lib/modules/isofs.ko").read_bytes() == b"\x7fELF isofs.ko"  # unpacked xz
    assert (out / "init").read_text() == INIT
    assert f'echo "{MARKER} $*"' in INIT and "MARKER" not in INIT


def test_a_host_without_busybox_is_told_what_to_install(tree: KernelTree,
                                                        tmp_path: Path) -> None:
    with pytest.raises(GuestBuildError, match=r"install Debian's busybox-static"):
        build_initrd(tree, busybox=tmp_path / "busybox")
