"""`passthru image-*`: images, their properties and their files.

`image-create --file DISK` registers a queued image and uploads its files, each streamed
from disk with its SHA-256: the kernel and initrd first, the disk last, which makes the
image active. If any upload is refused the image is deleted again, so that a failed
create leaves no half-made image behind.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from passthru.cli.assignments import parse_assignments
from passthru.cli.files import readable
from passthru.cli.options import Json, Token, Url
from passthru.cli.output import command, out, print_record, print_table, show
from passthru.client import Client
from passthru.controller.enums import DISK_FORMATS
from passthru.errors import InvalidInputError, PassthruError

if TYPE_CHECKING:  # the image checks and work types load when an image is uploaded
    from passthru.pci.work import ImagePart


def _probed_format(disk: Path) -> str:
    """The disk's format as qemu-img reads it, when --disk-format is not given."""
    from passthru.controller.catalog.image_files import check_disk_format, disk_info

    try:
        found = str(disk_info(disk).get("format"))
    except PassthruError as error:
        raise error.restated(f"--file {disk}: {error}; or give --disk-format "
                             f"{'|'.join(DISK_FORMATS)}") from None
    try:
        return check_disk_format(found)
    except PassthruError as error:
        raise error.restated(f"--file {disk}: {error}") from None


def _files(disk: Path | None, kernel: Path | None,
           initrd: Path | None) -> list[tuple[ImagePart, Path]]:
    """The files to upload, in upload order (the disk last)."""
    from passthru.pci.work import ImagePart

    if disk is None and (kernel or initrd):
        raise InvalidInputError("--kernel and --initrd belong to an image with a disk: give "
                                "--file DISK too")
    if initrd is not None and kernel is None:
        raise InvalidInputError("--initrd needs --kernel: an initrd boots with a kernel")
    chosen = ((ImagePart.KERNEL, kernel, "--kernel"), (ImagePart.INITRD, initrd, "--initrd"),
              (ImagePart.DISK, disk, "--file"))
    return [(part, readable(path, option)) for part, path, option in chosen
            if path is not None]


def _record(image: dict[str, Any]) -> dict[str, Any]:
    files = [f"{f['part']}: {f['size']} bytes, sha256 {f['sha256']}" for f in image["files"]]
    return {**image, "files": files}


@command("image-create")
def create(
    name: Annotated[str, typer.Argument(help="e.g. cirros-0.6.2-x86_64")],
    disk: Annotated[Path | None, typer.Option(
        "--file", metavar="DISK", help="The disk image to upload (qcow2 or raw).")] = None,
    disk_format: Annotated[str | None, typer.Option(
        "--disk-format", metavar="|".join(DISK_FORMATS),
        help="The disk's format; by default as qemu-img reads it. The controller checks "
             "the disk really is this.")] = None,
    kernel: Annotated[Path | None, typer.Option(
        "--kernel", help="A kernel to boot directly (the image's os_command_line property "
                         "is its command line).")] = None,
    initrd: Annotated[Path | None, typer.Option(
        "--initrd", help="The kernel's initrd.")] = None,
    properties: Annotated[list[str] | None, typer.Option(
        "--property", metavar="KEY=VALUE",
        help="Repeatable. pci_passthrough:supported=QA1,QA3 limits the PCI flavors a boot "
             "from this image may get; os_command_line='console=ttyS0 root=/dev/vda' is the "
             "kernel command line of a --kernel image.")] = None,
    url: Url = None, token: Token = None, as_json: Json = False,
) -> None:
    """(admin) Register an image, and upload its disk (and kernel, initrd) when given.

    Without --file the image is catalog-only: properties alone, nothing to boot from.
    """
    if disk_format is not None and disk is None:
        raise InvalidInputError("--disk-format describes the --file DISK; give --file too")
    uploads = _files(disk, kernel, initrd)
    if disk is not None:
        from passthru.controller.catalog.image_files import check_disk_format

        disk_format = (check_disk_format(disk_format) if disk_format is not None
                       else _probed_format(disk))
    body = {"image": {"name": name, "properties": parse_assignments(properties or []),
                      "disk_format": disk_format}}
    with Client(url, token) as api:
        image = api.call("POST", api.tenant("/images"), json=body)["image"]
        try:
            for part, path in uploads:
                image = api.upload(api.tenant(f"/images/{image['id']}/file/{part}"),
                                   path)["image"]
        except PassthruError as error:
            api.call("DELETE", api.tenant(f"/images/{image['id']}"))
            raise error.restated(f"image {name} was not created: {error}") from None
    show(image, as_json, lambda: print_record(_record(image), title=f"Image {name}"))


@command("image-list")
def list_images(url: Url = None, token: Token = None, as_json: Json = False) -> None:
    """List images."""
    with Client(url, token) as api:
        images = api.list_all(api.tenant("/images"), "images")
    rows = [{**i, "parts": [f["part"] for f in i["files"]]} for i in images]
    show(images, as_json, lambda: print_table(
        rows, ("name", "status", "disk_format", "virtual_size", "parts", "properties", "id"),
        headers=("Name", "Status", "Format", "Virtual size", "Files", "Properties", "ID"),
        title="Images"))


@command("image-show")
def show_image(ref: Annotated[str, typer.Argument(metavar="NAME|ID")],
               url: Url = None, token: Token = None, as_json: Json = False) -> None:
    """Show an image: status, format, virtual size, checksum and files."""
    with Client(url, token) as api:
        image = api.call("GET", api.tenant(f"/images/{ref}"))["image"]
    show(image, as_json, lambda: print_record(_record(image), title=f"Image {image['name']}"))


@command("image-delete")
def delete(ref: Annotated[str, typer.Argument(metavar="NAME|ID")],
           url: Url = None, token: Token = None) -> None:
    """(admin) Delete an image and its files (refused while a server uses it)."""
    with Client(url, token) as api:
        api.call("DELETE", api.tenant(f"/images/{ref}"))
    out.print(f"deleted image {ref}", highlight=False)
