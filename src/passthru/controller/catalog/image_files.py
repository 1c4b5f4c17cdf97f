"""Image files on the controller's disk, `<image_dir>/<image id>/<part>`, and the checks a
file passes before an image may use it.

An upload is streamed into `<image_dir>/.incoming/` while its size and SHA-256 are
counted, so no file is ever held in memory whatever its size. The caller moves it into
place only once it is checked and recorded; any failure removes it, so a refused upload
leaves nothing behind. Directories are created 0700 and files 0600, as everything in
the data dir (`controller.store.private_files`).

A disk must be what its image declares as qemu-img reads it: a raw declared qcow2 (or any
non-image) is refused, and so is a qcow2 declared raw, which a host would otherwise hand
to the guest as raw bytes. A qcow2 must stand alone: a backing file or an external data
file would make the host's qemu read whatever path the uploader wrote into the header.
`qemu-img check` catches a truncated or damaged qcow2. qemu-img runs under `prlimit`, as
OpenStack runs it, since a crafted header can make it eat memory or CPU.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import uuid
from collections.abc import AsyncIterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from passthru.controller.enums import DISK_FORMATS
from passthru.controller.store.private_files import create_private, private_dir
from passthru.errors import InvalidInputError, TooLargeError
from passthru.pci.work import ImagePart

#: The disk formats a host can boot.
_CONVERT = "convert it first: qemu-img convert -O qcow2 IN OUT"
#: What qemu-img may use on one untrusted file: 1 GiB of address space, 60 s of CPU.
_LIMITS = ("prlimit", "--as=1073741824", "--cpu=60", "--")
_TIMEOUT = 300.0
_INCOMING = ".incoming"


def check_disk_format(disk_format: str) -> str:
    if disk_format not in DISK_FORMATS:
        raise InvalidInputError(f"disk_format {disk_format!r} is not supported: hosts boot "
                                f"{' or '.join(DISK_FORMATS)} disks; {_CONVERT}")
    return disk_format


@dataclass(frozen=True, slots=True)
class Received:
    """An uploaded file not yet in place: its temporary path, SHA-256 and size."""

    path: Path
    sha256: str
    size: int

    def discard(self) -> None:
        self.path.unlink(missing_ok=True)


class ImageFiles:
    """The image files under `root`; an upload may bring at most `max_bytes`."""

    def __init__(self, root: Path, max_bytes: int) -> None:
        self.root = root
        self.max_bytes = max_bytes

    def path(self, image_id: str, part: ImagePart) -> Path:
        return self.root / image_id / ImagePart(part).value

    async def receive(self, chunks: AsyncIterable[bytes], sha256: str,
                      declared_size: int | None = None) -> Received:
        """Stream `chunks` to a temporary file; refused (and removed) when larger than the
        limit or when its SHA-256 is not `sha256`."""
        limit = f"the limit is {self.max_bytes} bytes (passthru serve --max-image-size)"
        if declared_size is not None and declared_size > self.max_bytes:
            raise TooLargeError(f"the file is {declared_size} bytes; {limit}")
        path = private_dir(self.root / _INCOMING) / uuid.uuid4().hex
        digest, size = hashlib.sha256(), 0
        try:
            # Plain writes on the event loop: each is one chunk into the page cache, far
            # cheaper than a thread hop per chunk.
            with os.fdopen(create_private(path), "wb") as file:
                async for chunk in chunks:
                    size += len(chunk)
                    if size > self.max_bytes:
                        raise TooLargeError(f"the file is over {self.max_bytes} bytes; "
                                            f"{limit}")
                    digest.update(chunk)
                    file.write(chunk)
        except BaseException:
            path.unlink(missing_ok=True)
            raise
        received = Received(path, digest.hexdigest(), size)
        if received.sha256 != sha256.lower():
            received.discard()
            raise InvalidInputError(f"the file's SHA-256 is {received.sha256}, not "
                                    f"{sha256.lower()} as X-Image-Sha256 says: it was damaged "
                                    "on the way or the checksum is of another file; nothing "
                                    "was kept")
        return received

    def keep(self, received: Received, image_id: str, part: ImagePart) -> Path:
        """Move an uploaded file into its place."""
        target = self.path(image_id, part)
        private_dir(target.parent)
        received.path.replace(target)
        return target

    def remove(self, image_id: str) -> None:
        """Every file of the image, gone."""
        shutil.rmtree(self.root / image_id, ignore_errors=True)


def _qemu_img(*args: str) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run([*_LIMITS, "qemu-img", *args], capture_output=True, text=True,
                              timeout=_TIMEOUT, check=False)
    except FileNotFoundError:
        raise InvalidInputError("disks cannot be checked here: qemu-img is not installed "
                                "(Debian: apt install qemu-utils)") from None
    except subprocess.TimeoutExpired:
        raise InvalidInputError(f"qemu-img took over {_TIMEOUT:.0f} s to read the disk; it is "
                                "refused") from None


def _first_line(text: str) -> str:
    return next((line for line in text.splitlines() if line.strip()), "no reason given")


def disk_info(path: Path) -> dict[str, Any]:
    """`qemu-img info` of an untrusted file, probing its format (never its backing file)."""
    answer = _qemu_img("info", "--output=json", str(path))
    if answer.returncode != 0:
        raise InvalidInputError(f"qemu-img cannot read the disk: {_first_line(answer.stderr)}")
    info: dict[str, Any] = json.loads(answer.stdout)
    return info


def check_part(path: Path, part: ImagePart, disk_format: str) -> int | None:
    """Refuse a file an image cannot use; returns a disk's virtual size in bytes."""
    if path.stat().st_size == 0:
        raise InvalidInputError(f"the {part} file is empty")
    if part is not ImagePart.DISK:
        return None
    info = disk_info(path)
    actual = str(info.get("format"))
    if actual != disk_format:
        hint = (f"if it is one, create the image with disk_format {actual}"
                if actual in DISK_FORMATS else _CONVERT)
        raise InvalidInputError(f"not a {disk_format} image: qemu-img reads it as {actual}; {hint}")
    if disk_format == "qcow2":
        _check_qcow2(path, info)
    return int(info["virtual-size"])


def _check_qcow2(path: Path, info: dict[str, Any]) -> None:
    flatten = "flatten it first: qemu-img convert -O qcow2 IN OUT"
    if "backing-filename" in info:
        raise InvalidInputError(f"a qcow2 with a backing file ({info['backing-filename']}) is "
                                f"refused: the host would read that file into the guest; {flatten}")
    data_file = info.get("format-specific", {}).get("data", {}).get("data-file")
    if data_file is not None:
        raise InvalidInputError(f"a qcow2 with an external data file ({data_file}) is refused: "
                                f"the host would read that file into the guest; {flatten}")
    answer = _qemu_img("check", "--output=json", "-f", "qcow2", str(path))
    # 0: clean; 3: leaked clusters only, which waste space but read correctly.
    if answer.returncode in (0, 3):
        return
    try:
        found = json.loads(answer.stdout)
        what = f"{found.get('corruptions', 0)} corruption(s), {found.get('check-errors', 0)} " \
               "check error(s)"
    except ValueError:
        what = _first_line(answer.stderr)
    raise InvalidInputError(f"the qcow2 image is damaged or truncated (qemu-img check: {what}); "
                            "upload it again whole")
