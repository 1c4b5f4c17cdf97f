"""Flavors (vcpus, RAM, disk) and their extra specs, where PCI requests are written:
`pci_passthrough:pci_flavor` = `1:bigGPU,bigGPU2;1:QA`."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Response
from pydantic import BaseModel, Field, StrictInt

from passthru.controller.api.deps import StoreDep, TenantCaller
from passthru.controller.api.errors import ERROR_RESPONSES
from passthru.controller.api.fields import Key, Name, NamePath, Text
from passthru.controller.api.paging import Links, Page, PagedList
from passthru.controller.api.respond import model_answer
from passthru.controller.catalog import cache as catalog
from passthru.controller.catalog import flavors
from passthru.controller.store.models import FlavorRow

router = APIRouter(prefix="/v2/{tenant_id}/flavors", tags=["flavors"],
                   responses=ERROR_RESPONSES)


class FlavorCreate(BaseModel):
    name: Name
    vcpus: StrictInt = Field(1, ge=1, le=4096)
    ram: StrictInt = Field(512, ge=1, le=64 * 1024 * 1024, description="MiB")
    disk: StrictInt = Field(0, ge=0, le=1024 * 1024, description="GiB")


class FlavorCreateBody(BaseModel):
    flavor: FlavorCreate


class Flavor(BaseModel):
    id: str
    name: str
    vcpus: int
    ram: int
    disk: int
    extra_specs: dict[str, str]


class FlavorBody(BaseModel):
    flavor: Flavor


class FlavorList(PagedList):
    flavors: list[Flavor]
    flavors_links: Links


class ExtraSpecs(BaseModel):
    extra_specs: dict[Key, Text]


def flavor_view(row: FlavorRow | catalog.Flavor) -> Flavor:
    return Flavor(id=row.id, name=row.name, vcpus=row.vcpus, ram=row.ram_mb, disk=row.disk_gb,
                  extra_specs=dict(row.extra_specs))


@router.get("", response_model=FlavorList, summary="List flavors")
def list_flavors(who: TenantCaller, store: StoreDep, page: Page) -> FlavorList:
    """By name; the marker is a flavor's id."""
    with store.read() as session:
        rows, more = flavors.page(session, page)
        return FlavorList(flavors=[flavor_view(r) for r in rows],
                          flavors_links=page.next_links(rows, more, lambda r: r.id))


@router.post("", status_code=201, response_model=FlavorBody, summary="Create a flavor")
def create_flavor(who: TenantCaller, store: StoreDep, body: FlavorCreateBody) -> FlavorBody:
    who.require_admin("creating a flavor")
    spec = body.flavor
    with store.write() as session:
        row = flavors.create(session, spec.name, vcpus=spec.vcpus, ram_mb=spec.ram,
                             disk_gb=spec.disk)
        return FlavorBody(flavor=flavor_view(row))


@router.get("/{flavor}", response_model=FlavorBody, summary="Show a flavor by UUID or name")
def show_flavor(who: TenantCaller, store: StoreDep, flavor: NamePath) -> Response:
    with store.read() as session:
        found = catalog.read_flavor(session, flavor)
    return model_answer(FlavorBody(flavor=flavor_view(found)))


@router.delete("/{flavor}", status_code=204, summary="Delete a flavor no server uses")
def delete_flavor(who: TenantCaller, store: StoreDep, flavor: NamePath) -> Response:
    who.require_admin("deleting a flavor")
    with store.write() as session:
        flavors.delete(session, flavor)
    return Response(status_code=204)


@router.get("/{flavor}/os-extra_specs", response_model=ExtraSpecs,
            summary="Show a flavor's extra specs")
def show_extra_specs(who: TenantCaller, store: StoreDep, flavor: NamePath) -> ExtraSpecs:
    with store.read() as session:
        return ExtraSpecs(extra_specs=flavors.find(session, flavor).extra_specs)


@router.post("/{flavor}/os-extra_specs", response_model=ExtraSpecs,
             summary="Set extra specs (merged into the existing ones)")
def set_extra_specs(who: TenantCaller, store: StoreDep, flavor: NamePath,
                    body: Annotated[ExtraSpecs, Body()]) -> ExtraSpecs:
    who.require_admin("changing a flavor's extra specs")
    with store.write() as session:
        row = flavors.set_extra_specs(session, flavor, body.extra_specs)
        return ExtraSpecs(extra_specs=row.extra_specs)


@router.delete("/{flavor}/os-extra_specs/{key}", status_code=204,
               summary="Remove one extra spec")
def delete_extra_spec(who: TenantCaller, store: StoreDep, flavor: NamePath, key: NamePath
                      ) -> Response:
    who.require_admin("changing a flavor's extra specs")
    with store.write() as session:
        flavors.delete_extra_spec(session, flavor, key)
    return Response(status_code=204)
