"""Images, their properties, and their files (Glance's two steps).

An image registered without a `disk_format` is catalog-only: its properties alone, e.g.
`pci_passthrough:supported`, which lists the PCI flavors the image's drivers work with and
narrows what a boot from it may get. An image with a `disk_format` (`qcow2` or `raw`) is
`queued` until its disk is uploaded with `PUT .../file/disk`, which checks the disk and
makes the image `active`. A direct-kernel-boot image uploads its `kernel` (and `initrd`)
first, while it is still queued: once active an image's files never change, so a server
booted from it gets what its hosts fetch later. `os_command_line` is the kernel's command
line.

Uploads are streamed to disk, never held in memory (see `controller.catalog.image_files`); the
checks (qemu-img) and the bookkeeping run in worker threads, off the event loop.
"""

from __future__ import annotations

from typing import Annotated, Any

from anyio.to_thread import run_sync
from fastapi import APIRouter, Header, Request, Response
from pydantic import BaseModel, Field

from passthru.controller.api.deps import ImageFilesDep, StoreDep, TenantCaller
from passthru.controller.api.errors import ERROR_RESPONSES
from passthru.controller.api.fields import Key, Name, NamePath, Text
from passthru.controller.api.paging import Links, Page, PagedList
from passthru.controller.catalog import images
from passthru.controller.catalog.image_files import check_disk_format, check_part
from passthru.controller.enums import DISK_FORMATS
from passthru.controller.store.mapping import image_files
from passthru.controller.store.models import ImageRow, ImageStatus
from passthru.pci.work import SHA256_HEADER, ImageFile, ImagePart

router = APIRouter(prefix="/v2/{tenant_id}/images", tags=["images"], responses=ERROR_RESPONSES)

#: A SHA-256 in hex, as `sha256sum` prints it.
Sha256 = Annotated[str, Field(pattern=r"^[0-9a-fA-F]{64}$")]
_OCTET_STREAM: dict[str, Any] = {"application/octet-stream": {
    "schema": {"type": "string", "format": "binary"}}}


class ImageCreate(BaseModel):
    name: Name
    properties: dict[Key, Text] = {}
    disk_format: Name | None = Field(None, max_length=64, description=(
        f"{' or '.join(DISK_FORMATS)}: the image is queued until its disk is uploaded; "
        "none: a catalog-only image (properties alone, no files)"))


class ImageCreateBody(BaseModel):
    image: ImageCreate


class Image(BaseModel):
    id: str
    name: str
    properties: dict[str, str]
    disk_format: str | None
    status: ImageStatus
    virtual_size: int | None = Field(description="bytes the guest's disk has")
    size: int | None = Field(description="bytes of the disk file")
    checksum: str | None = Field(description="the disk file's SHA-256")
    files: list[ImageFile]


class ImageBody(BaseModel):
    image: Image


class ImageList(PagedList):
    images: list[Image]
    images_links: Links


def image_view(row: ImageRow) -> Image:
    files = image_files(row)
    disk = next((f for f in files if f.part is ImagePart.DISK), None)
    return Image(id=row.id, name=row.name, properties=row.properties,
                 disk_format=row.disk_format, status=row.status,
                 virtual_size=row.virtual_size, size=disk.size if disk else None,
                 checksum=disk.sha256 if disk else None, files=files)


@router.get("", response_model=ImageList, summary="List images")
def list_images(who: TenantCaller, store: StoreDep, page: Page) -> ImageList:
    """By name; the marker is an image's id."""
    with store.read() as session:
        rows, more = images.page(session, page)
        return ImageList(images=[image_view(r) for r in rows],
                         images_links=page.next_links(rows, more, lambda r: r.id))


@router.post("", status_code=201, response_model=ImageBody,
             summary="Register an image (queued for its files when it has a disk_format)")
def create_image(who: TenantCaller, store: StoreDep, body: ImageCreateBody) -> ImageBody:
    who.require_admin("registering an image")
    spec = body.image
    disk_format = check_disk_format(spec.disk_format) if spec.disk_format else None
    with store.write() as session:
        row = images.create(session, spec.name, disk_format, spec.properties)
        return ImageBody(image=image_view(row))


@router.get("/{image}", response_model=ImageBody, summary="Show an image by UUID or name")
def show_image(who: TenantCaller, store: StoreDep, image: NamePath) -> ImageBody:
    with store.read() as session:
        return ImageBody(image=image_view(images.find(session, image)))


@router.put("/{image}/file/{part}", response_model=ImageBody,
            summary="Upload one of a queued image's files (the disk last: it makes the "
                    "image active)",
            openapi_extra={"requestBody": {"required": True, "content": _OCTET_STREAM}})
async def upload_file(
    who: TenantCaller, store: StoreDep, files: ImageFilesDep, image: NamePath, part: ImagePart,
    request: Request,
    sha256: Annotated[Sha256, Header(alias=SHA256_HEADER, description="the file's SHA-256; "
                                     "a file that does not match it is refused")],
) -> ImageBody:
    who.require_admin("uploading an image's files")
    image_id, disk_format = await run_sync(images.upload_target, store, image, part)
    # The web server has checked Content-Length is a number; chunked uploads have none.
    length = request.headers.get("content-length")
    received = await files.receive(request.stream(), sha256,
                                   int(length) if length is not None else None)
    try:
        virtual_size = await run_sync(check_part, received.path, part, disk_format)
        view = await run_sync(images.record_file, store, files, image_id, part, received,
                              virtual_size, image_view)
    finally:
        received.discard()
    return ImageBody(image=view)


@router.delete("/{image}", status_code=204,
               summary="Delete an image and its files; refused while a server uses it")
def delete_image(who: TenantCaller, store: StoreDep, files: ImageFilesDep,
                 image: NamePath) -> Response:
    who.require_admin("deleting an image")
    with store.write() as session:
        image_id = images.delete(session, image)
    files.remove(image_id)
    return Response(status_code=204)
