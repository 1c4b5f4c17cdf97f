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
import os
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from passthru.errors import HostError
from passthru.host.seed import write_seed_iso
from passthru.pci.work import CONSOLE_TAIL, canonical_uuid

GIB = 1 << 30


class InstanceError(HostError):
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
        try:
            write_seed_iso(files.seed, instance_id, hostname, public_keys, user_data)
        except Exception as error:  # pycdlib's own errors too
            raise InstanceError(f"writing the cloud-init seed ISO {files.seed} failed: "
                                f"{error}") from error
        return files.seed

    def remove(self, server_uuid: str) -> None:
        """Remove the server's directory and all in it; nothing to do when it is gone."""
        with contextlib.suppress(FileNotFoundError):
            shutil.rmtree(self.files(server_uuid).directory)


def read_console_tail(path: Path, limit: int = CONSOLE_TAIL) -> str | None:
    """The last `limit` bytes of the console log at `path` as text, starting at a line
    boundary so that the first line is whole; None while there is no log."""
    try:
        with path.open("rb") as file:
            start = max(0, file.seek(0, os.SEEK_END) - limit)
            file.seek(start)
            data = file.read(limit)
    except FileNotFoundError:
        return None
    if start > 0 and (newline := data.find(b"\n")) != -1:
        data = data[newline + 1:]
    # A guest writes whatever bytes it likes; a broken sequence must not stop the log.
    return data.decode("utf-8", errors="replace")
