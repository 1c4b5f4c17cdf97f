"""Images and their properties; `pci_passthrough:supported` lists the PCI flavors an
image's drivers work with, and narrows what a boot from it may get."""

from __future__ import annotations

from fastapi import APIRouter, Response
from pydantic import BaseModel
from sqlalchemy import select

from passthru.controller.api.deps import StoreDep, TenantCaller
from passthru.controller.api.errors import ERROR_RESPONSES
from passthru.controller.api.fields import Key, Name
from passthru.controller.errors import ConflictError
from passthru.controller.lookup import find
from passthru.controller.models import ImagePropertyRow, ImageRow
from passthru.controller.pci_flavors import SUPPORTED_KEY, known_pci_flavors, supported_flavors
from passthru.pci.errors import PciValueError

router = APIRouter(prefix="/v2/{tenant_id}/images", tags=["images"], responses=ERROR_RESPONSES)


class ImageCreate(BaseModel):
    name: Name
    properties: dict[Key, str] = {}


class ImageCreateBody(BaseModel):
    image: ImageCreate


class Image(BaseModel):
    id: str
    name: str
    properties: dict[str, str]


class ImageBody(BaseModel):
    image: Image


class ImageList(BaseModel):
    images: list[Image]


def image_view(row: ImageRow) -> Image:
    return Image(id=row.id, name=row.name, properties=row.properties)


@router.get("", response_model=ImageList, summary="List images")
def list_images(who: TenantCaller, store: StoreDep) -> ImageList:
    with store.read() as session:
        rows = session.scalars(select(ImageRow).order_by(ImageRow.name))
        return ImageList(images=[image_view(r) for r in rows])


@router.post("", status_code=201, response_model=ImageBody, summary="Register an image")
def create_image(who: TenantCaller, store: StoreDep, body: ImageCreateBody) -> ImageBody:
    who.require_admin("registering an image")
    spec = body.image
    with store.write() as session:
        if session.scalars(select(ImageRow.id).where(ImageRow.name == spec.name)).first():
            raise ConflictError(f"an image named {spec.name!r} exists already")
        names = supported_flavors(spec.properties)
        if names is not None:
            known = known_pci_flavors(session)
            unknown = [n for n in names if n not in known]
            if unknown or not names:
                raise PciValueError(
                    f"image {spec.name}: {SUPPORTED_KEY} must list existing PCI flavors "
                    f"separated by commas; unknown: {', '.join(unknown) or '(none listed)'}; "
                    f"known: {', '.join(sorted(known)) or 'none yet'}")
        row = ImageRow(name=spec.name, props=[ImagePropertyRow(key=k, value=v)
                                              for k, v in sorted(spec.properties.items())])
        session.add(row)
        session.flush()
        return ImageBody(image=image_view(row))


@router.get("/{image}", response_model=ImageBody, summary="Show an image by UUID or name")
def show_image(who: TenantCaller, store: StoreDep, image: str) -> ImageBody:
    with store.read() as session:
        return ImageBody(image=image_view(find(session, ImageRow, image, "image")))


@router.delete("/{image}", status_code=204, summary="Delete an image")
def delete_image(who: TenantCaller, store: StoreDep, image: str) -> Response:
    who.require_admin("deleting an image")
    with store.write() as session:
        session.delete(find(session, ImageRow, image, "image"))
    return Response(status_code=204)
