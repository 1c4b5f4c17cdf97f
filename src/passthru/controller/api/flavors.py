"""Flavors (vcpus, RAM, disk) and their extra specs, where PCI requests are written:
`pci_passthrough:pci_flavor` = `1:bigGPU,bigGPU2;1:QA`."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Response
from pydantic import BaseModel, Field, StrictInt
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from passthru.controller import catalog, topics
from passthru.controller.api.deps import StoreDep, TenantCaller
from passthru.controller.api.errors import ERROR_RESPONSES
from passthru.controller.api.fields import Key, Name, NamePath, Text
from passthru.controller.api.paging import Links, Page, PagedList, by, rows_page
from passthru.controller.api.respond import model_answer
from passthru.controller.lookup import find
from passthru.controller.models import (
    FlavorExtraSpecRow,
    FlavorRow,
    ServerRow,
    ServerStatus,
)
from passthru.controller.pci_flavors import flavor_requests, known_pci_flavors
from passthru.errors import ConflictError, NotFoundError
from passthru.pci.request import check_flavor_names

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


def check_extra_specs(session: Session, flavor: str, extra_specs: dict[str, str]) -> None:
    """The PCI requests the specs write must parse and name existing PCI flavors."""
    check_flavor_names(flavor_requests(flavor, extra_specs),
                       known_pci_flavors(session, keep=True),
                       where=f"flavor {flavor}")


@router.get("", response_model=FlavorList, summary="List flavors")
def list_flavors(who: TenantCaller, store: StoreDep, page: Page) -> FlavorList:
    """By name; the marker is a flavor's id."""
    with store.read() as session:
        rows, more = rows_page(session, select(FlavorRow), (FlavorRow.name,), page, "flavor",
                               "id", by(FlavorRow.id))
        return FlavorList(flavors=[flavor_view(r) for r in rows],
                          flavors_links=page.next_links(rows, more, lambda r: r.id))


@router.post("", status_code=201, response_model=FlavorBody, summary="Create a flavor")
def create_flavor(who: TenantCaller, store: StoreDep, body: FlavorCreateBody) -> FlavorBody:
    who.require_admin("creating a flavor")
    spec = body.flavor
    with store.write() as session:
        if session.scalars(select(FlavorRow.id).where(FlavorRow.name == spec.name)).first():
            raise ConflictError(f"a flavor named {spec.name!r} exists already")
        row = FlavorRow(name=spec.name, vcpus=spec.vcpus, ram_mb=spec.ram, disk_gb=spec.disk)
        session.add(row)
        session.flush()
        topics.bump(session, topics.FLAVORS)
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
        row = find(session, FlavorRow, flavor, "flavor")
        # Locked before counting, as image deletes do: a boot that made a server of it
        # meanwhile holds the row (its foreign key), so it is counted once committed.
        session.refresh(row, with_for_update=True)
        users = session.scalar(select(func.count()).select_from(ServerRow).where(
            ServerRow.flavor_id == row.id, ServerRow.status != ServerStatus.DELETED))
        if users:
            raise ConflictError(f"flavor {row.name} is used by {users} server(s); delete "
                                "them first")
        session.delete(row)
        topics.bump(session, topics.FLAVORS)
    return Response(status_code=204)


@router.get("/{flavor}/os-extra_specs", response_model=ExtraSpecs,
            summary="Show a flavor's extra specs")
def show_extra_specs(who: TenantCaller, store: StoreDep, flavor: NamePath) -> ExtraSpecs:
    with store.read() as session:
        return ExtraSpecs(extra_specs=find(session, FlavorRow, flavor, "flavor").extra_specs)


@router.post("/{flavor}/os-extra_specs", response_model=ExtraSpecs,
             summary="Set extra specs (merged into the existing ones)")
def set_extra_specs(who: TenantCaller, store: StoreDep, flavor: NamePath,
                    body: Annotated[ExtraSpecs, Body()]) -> ExtraSpecs:
    who.require_admin("changing a flavor's extra specs")
    with store.write() as session:
        row = find(session, FlavorRow, flavor, "flavor")
        merged = {**row.extra_specs, **body.extra_specs}
        check_extra_specs(session, row.name, merged)
        current = {spec.key: spec for spec in row.extra}
        for key, value in body.extra_specs.items():
            if key in current:
                current[key].value = value
            else:
                row.extra.append(FlavorExtraSpecRow(key=key, value=value))
        session.flush()
        topics.bump(session, topics.FLAVORS)
        return ExtraSpecs(extra_specs=row.extra_specs)


@router.delete("/{flavor}/os-extra_specs/{key}", status_code=204,
               summary="Remove one extra spec")
def delete_extra_spec(who: TenantCaller, store: StoreDep,
                      flavor: NamePath, key: NamePath) -> Response:
    who.require_admin("changing a flavor's extra specs")
    with store.write() as session:
        row = find(session, FlavorRow, flavor, "flavor")
        spec = next((s for s in row.extra if s.key == key), None)
        if spec is None:
            raise NotFoundError(f"flavor {row.name} has no extra spec {key!r}")
        row.extra.remove(spec)
        topics.bump(session, topics.FLAVORS)
    return Response(status_code=204)
