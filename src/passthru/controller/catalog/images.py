"""Images in the store: their properties (`pci_passthrough:supported` must name existing
PCI flavors), their files, uploaded one part at a time until the disk makes the image
active, and no delete while a server uses one."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TypeVar

from sqlalchemy import select
from sqlalchemy.orm import Session

from passthru.controller.catalog.image_files import ImageFiles, Received
from passthru.controller.catalog.pci_flavors import (
    SUPPORTED_KEY,
    known_pci_flavors,
    supported_flavors,
)
from passthru.controller.catalog.rules import delete_unused, require_free
from passthru.controller.enums import DISK_FORMATS
from passthru.controller.store import lookup
from passthru.controller.store.db import Store
from passthru.controller.store.mapping import file_record, image_files
from passthru.controller.store.models import ImagePropertyRow, ImageRow, ImageStatus, ServerRow
from passthru.controller.store.paging import Window, by, rows_page
from passthru.errors import ConflictError, InvalidInputError, NotFoundError
from passthru.pci.work import ImageFile, ImagePart

T = TypeVar("T")


def page(session: Session, window: Window) -> tuple[list[ImageRow], bool]:
    """Images by name; the marker is an image's id."""
    return rows_page(session, select(ImageRow), (ImageRow.name,), window, "image", "id",
                     by(ImageRow.id))


def find(session: Session, ref: str, create_hint: str = "") -> ImageRow:
    return lookup.find(session, ImageRow, ref, "image", create_hint=create_hint)


def create(session: Session, name: str, disk_format: str | None,
           properties: Mapping[str, str]) -> ImageRow:
    """Register an image: queued for its files when it has a `disk_format`, else active
    (catalog-only)."""
    require_free(session, ImageRow.name, name, f"an image named {name!r} exists already")
    names = supported_flavors(properties)
    if names is not None:
        known = known_pci_flavors(session, keep=True)
        unknown = [n for n in names if n not in known]
        if unknown or not names:
            raise InvalidInputError(
                f"image {name}: {SUPPORTED_KEY} must list existing PCI flavors "
                f"separated by commas; unknown: {', '.join(unknown) or '(none listed)'}; "
                f"known: {', '.join(sorted(known)) or 'none yet'}")
    row = ImageRow(name=name, disk_format=disk_format,
                   status=ImageStatus.QUEUED if disk_format else ImageStatus.ACTIVE,
                   props=[ImagePropertyRow(key=k, value=v)
                          for k, v in sorted(properties.items())])
    session.add(row)
    session.flush()
    return row


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


def upload_target(store: Store, ref: str, part: ImagePart) -> tuple[str, str]:
    """The id and disk format of the image `ref` whose `part` is about to be uploaded,
    refused if the image cannot take it."""
    with store.read() as session:
        row = find(session, ref,
                         create_hint="register it first with POST /v2/{tenant}/images")
        _check_target(row, part)
        assert row.disk_format is not None
        return row.id, row.disk_format


def record_file(store: Store, files: ImageFiles, image_id: str, part: ImagePart,
                received: Received, virtual_size: int | None,
                render: Callable[[ImageRow], T]) -> T:
    """Put the checked file in place and record it, both or neither; `render` the image
    as it is then."""
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
            view = render(row)
    except BaseException:
        if kept is not None:
            kept.unlink(missing_ok=True)
        raise
    return view


def delete(session: Session, ref: str) -> str:
    """Delete image `ref`'s row; returns its id, whose files go once this commits."""
    row = find(session, ref)
    image_id: str = row.id
    delete_unused(session, row, ServerRow.image_id, "image")
    return image_id
