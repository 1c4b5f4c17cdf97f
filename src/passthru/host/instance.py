"""A VM's own files on the host, in one directory per server under `instances_path`:
its disk (a qcow2 overlay over the cached image), its NoCloud seed ISO and its console
log. Removing the directory removes everything the VM had on the host's disks.

The overlay never writes to the cached image, so any number of VMs share one base file;
its backing format is given explicitly (`-F`), so qemu never guesses a format from an
image's content.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from passthru.host.seed import write_seed_iso
from passthru.pci.errors import PassthruError
from passthru.pci.work import canonical_uuid

GIB = 1 << 30
#: The most of a console log a tail reads: a guest can write gigabytes to its console.
TAIL_BYTES = 256 * 1024


class InstanceError(PassthruError):
    """A VM's disk or seed could not be made, or its files read."""


def _qemu_img(*args: str) -> str:
    try:
        done = subprocess.run(["qemu-img", *args], capture_output=True, text=True,
                              check=False)
    except FileNotFoundError:
        raise InstanceError("qemu-img is not installed; install Debian's qemu-utils") from None
    if done.returncode != 0:
        raise InstanceError(f"qemu-img {args[0]} failed: {done.stderr.strip()}")
    return done.stdout


def virtual_size(image: Path, fmt: str) -> int:
    """The size in bytes the guest sees of disk image `image` in format `fmt`."""
    info = json.loads(_qemu_img("info", "--output=json", "-f", fmt, str(image)))
    return int(info["virtual-size"])


@dataclass(frozen=True, slots=True)
class InstanceFiles:
    directory: Path

    @property
    def disk(self) -> Path:
        return self.directory / "disk.qcow2"

    @property
    def seed(self) -> Path:
        return self.directory / "seed.iso"

    @property
    def console_log(self) -> Path:
        return self.directory / "console.log"


class Instances:
    """The VMs' directories under `root` (the host config's `instances_path`)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def files(self, server_uuid: str) -> InstanceFiles:
        return InstanceFiles(self.root / canonical_uuid(server_uuid))

    def create(self, server_uuid: str) -> InstanceFiles:
        """The server's directory, made now; refuses one that is there already (another
        VM's files, or the leftovers of a spawn that was not rolled back)."""
        files = self.files(server_uuid)
        self.root.mkdir(parents=True, exist_ok=True)
        try:
            files.directory.mkdir(mode=0o755)
        except FileExistsError:
            raise InstanceError(f"{files.directory} exists already; destroy server "
                                f"{server_uuid} before spawning it again") from None
        return files

    def create_disk(self, files: InstanceFiles, base: Path, base_format: str,
                    disk_gb: int) -> Path:
        """A qcow2 overlay over `base` of `disk_gb` GiB (0: the image's own size)."""
        own = virtual_size(base, base_format)
        wanted = disk_gb * GIB if disk_gb else own
        if wanted < own:
            raise InstanceError(f"the flavor's disk of {disk_gb} GiB is smaller than the "
                                f"image ({own / GIB:.1f} GiB); pick a flavor with a larger "
                                f"disk or a smaller image")
        _qemu_img("create", "-q", "-f", "qcow2", "-F", base_format, "-b", str(base),
                  str(files.disk), str(wanted))
        return files.disk

    def create_seed(self, files: InstanceFiles, instance_id: str, hostname: str,
                    public_keys: Mapping[str, str], user_data: str | None) -> Path:
        write_seed_iso(files.seed, instance_id, hostname, public_keys, user_data)
        return files.seed

    def remove(self, server_uuid: str) -> None:
        """Remove the server's directory and all in it; nothing to do when it is gone."""
        with contextlib.suppress(FileNotFoundError):
            shutil.rmtree(self.files(server_uuid).directory)

    def console_tail(self, server_uuid: str, lines: int,
                     max_bytes: int = TAIL_BYTES) -> list[str]:
        """The last `lines` lines of the server's console log, from at most its last
        `max_bytes` bytes; empty while the guest has written nothing."""
        files = self.files(server_uuid)
        if not files.directory.is_dir():
            raise InstanceError(f"server {server_uuid} has no instance on this host "
                                f"(no {files.directory})")
        if lines <= 0:
            return []
        try:
            with files.console_log.open("rb") as log:
                start = max(0, log.seek(0, 2) - max_bytes)
                log.seek(start)
                data = log.read(max_bytes)
        except FileNotFoundError:
            return []
        found = data.decode("utf-8", errors="replace").replace("\r\n", "\n").splitlines()
        if start > 0:
            found = found[1:]  # the first line was cut by the byte bound
        return found[-lines:]
