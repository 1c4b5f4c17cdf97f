"""Images, their properties, and their files (Glance's two steps).

An image registered without a `disk_format` is catalog-only: its properties alone, e.g.
`pci_passthrough:supported`, which lists the PCI flavors the image's drivers work with and
narrows what a boot from it may get. An image with a `disk_format` (`qcow2` or `raw`) is
`queued` until its disk is uploaded with `PUT .../file/disk`, which checks the disk and
makes the image `active`. A direct-kernel-boot image uploads its `kernel` (and `initrd`)
first, while it is still queued: once active an image's files never change, so a server
booted from it gets what its hosts fetch later. `os_command_line` is the kernel's command
line.

Uploads are streamed to disk, never held in memory (see `controller.image_files`); the
checks (qemu-img) and the bookkeeping run in worker threads, off the event loop.
"""

from __future__ import annotations

from typing import Annotated, Any

from anyio.to_thread import run_sync
from fastapi import APIRouter, Header, Request, Response
from pydantic import BaseModel, Field
from sqlalchemy import func, select

from passthru.controller.api.deps import ImageFilesDep, StoreDep, TenantCaller
from passthru.controller.api.errors import ERROR_RESPONSES
from passthru.controller.api.fields import Key, Name, NamePath, Text
from passthru.controller.api.paging import Links, Page, PagedList, by, rows_page
from passthru.controller.db import Store
from passthru.controller.enums import DISK_FORMATS
from passthru.controller.image_files import (
    ImageFiles,
    Received,
    check_disk_format,
    check_part,
)
from passthru.controller.lookup import find
from passthru.controller.mapping import file_record, image_files
from passthru.controller.models import (
    ImagePropertyRow,
    ImageRow,
    ImageStatus,
    ServerRow,
    ServerStatus,
)
from passthru.controller.pci_flavors import SUPPORTED_KEY, known_pci_flavors, supported_flavors
from passthru.errors import ConflictError, InvalidInputError, NotFoundError
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
        rows, more = rows_page(session, select(ImageRow), (ImageRow.name,), page, "image",
                               "id", by(ImageRow.id))
        return ImageList(images=[image_view(r) for r in rows],
                         images_links=page.next_links(rows, more, lambda r: r.id))


@router.post("", status_code=201, response_model=ImageBody,
             summary="Register an image (queued for its files when it has a disk_format)")
def create_image(who: TenantCaller, store: StoreDep, body: ImageCreateBody) -> ImageBody:
    who.require_admin("registering an image")
    spec = body.image
    disk_format = check_disk_format(spec.disk_format) if spec.disk_format else None
    with store.write() as session:
        if session.scalars(select(ImageRow.id).where(ImageRow.name == spec.name)).first():
            raise ConflictError(f"an image named {spec.name!r} exists already")
        names = supported_flavors(spec.properties)
        if names is not None:
            known = known_pci_flavors(session, keep=True)
            unknown = [n for n in names if n not in known]
            if unknown or not names:
                raise InvalidInputError(
                    f"image {spec.name}: {SUPPORTED_KEY} must list existing PCI flavors "
                    f"separated by commas; unknown: {', '.join(unknown) or '(none listed)'}; "
                    f"known: {', '.join(sorted(known)) or 'none yet'}")
        row = ImageRow(name=spec.name, disk_format=disk_format,
                       status=ImageStatus.QUEUED if disk_format else ImageStatus.ACTIVE,
                       props=[ImagePropertyRow(key=k, value=v)
                              for k, v in sorted(spec.properties.items())])
        session.add(row)
        session.flush()
        return ImageBody(image=image_view(row))


@router.get("/{image}", response_model=ImageBody, summary="Show an image by UUID or name")
def show_image(who: TenantCaller, store: StoreDep, image: NamePath) -> ImageBody:
    with store.read() as session:
        return ImageBody(image=image_view(find(session, ImageRow, image, "image")))


def _check_target(row: ImageRow, part: ImagePart) -> None:
    """Refuse an upload the image cannot take (asked before and after the upload)."""
    if row.disk_format is None:
        raise ConflictError(f"image {row.name} is catalog-only (registered without a "
                            "disk_format) and takes no files; register an image with "
                            f"disk_format {' or '.join(DISK_FORMATS)}")
    if row.status is ImageStatus.ACTIVE:
        raise ConflictError(f"image {row.name} is active: its files do not change once its "
                            "disk is uploaded (a kernel and initrd go up before the disk); "
                            "delete it and create it again")
    parts = {f.part for f in image_files(row)}
    if part in parts:
        raise ConflictError(f"image {row.name} has its {part} already; delete the image "
                            "and create it again")
    if part is ImagePart.DISK and ImagePart.INITRD in parts and ImagePart.KERNEL not in parts:
        raise InvalidInputError(f"image {row.name} has an initrd but no kernel: upload its "
                                "kernel before its disk")


def _upload_target(store: Store, ref: str, part: ImagePart) -> tuple[str, str]:
    with store.read() as session:
        row = find(session, ImageRow, ref, "image",
                   create_hint="register it first with POST /v2/{tenant}/images")
        _check_target(row, part)
        assert row.disk_format is not None
        return row.id, row.disk_format


def _record(store: Store, files: ImageFiles, image_id: str, part: ImagePart,
            received: Received, virtual_size: int | None) -> Image:
    """Put the checked file in place and record it, both or neither."""
    kept = None
    try:
        with store.write() as session:
            # Locked: two uploads of one part cannot both be recorded, nor an upload
            # slip past a delete.
            row = session.get(ImageRow, image_id, with_for_update=True)
            if row is None:
                raise NotFoundError(f"image {image_id} was deleted during the upload")
            _check_target(row, part)
            row.files = [*row.files,
                         file_record(ImageFile(part, received.sha256, received.size))]
            if part is ImagePart.DISK:
                row.virtual_size, row.status = virtual_size, ImageStatus.ACTIVE
            kept = files.keep(received, image_id, part)
            session.flush()
            view = image_view(row)
    except BaseException:
        if kept is not None:
            kept.unlink(missing_ok=True)
        raise
    return view


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
    image_id, disk_format = await run_sync(_upload_target, store, image, part)
    # The web server has checked Content-Length is a number; chunked uploads have none.
    length = request.headers.get("content-length")
    received = await files.receive(request.stream(), sha256,
                                   int(length) if length is not None else None)
    try:
        virtual_size = await run_sync(check_part, received.path, part, disk_format)
        view = await run_sync(_record, store, files, image_id, part, received, virtual_size)
    finally:
        received.discard()
    return ImageBody(image=view)


@router.delete("/{image}", status_code=204,
               summary="Delete an image and its files; refused while a server uses it")
def delete_image(who: TenantCaller, store: StoreDep, files: ImageFilesDep,
                 image: NamePath) -> Response:
    who.require_admin("deleting an image")
    with store.write() as session:
        row = find(session, ImageRow, image, "image")
        session.refresh(row, with_for_update=True)
        users = session.scalar(select(func.count()).select_from(ServerRow).where(
            ServerRow.image_id == row.id, ServerRow.status != ServerStatus.DELETED))
        if users:
            raise ConflictError(f"image {row.name} is used by {users} server(s); delete "
                                "them first")
        image_id = row.id
        session.delete(row)
    files.remove(image_id)
    return Response(status_code=204)
