"""The seed's PCI flavor API, with the seed's bodies.

    GET    /v2/{tenant_id}/os-pci-flavors            {"os-pci-flavors": [{...}, ...]}
    GET    /v2/{tenant_id}/os-pci-flavor/{UUID|name} {"os-pci-flavor": {"UUID", "name",
                                                        "description", <key>: <value>...}}
    GET    /v2/{tenant_id}/os-pci-flavor/0           the attributes hosts expose
    POST   /v2/{tenant_id}/os-pci-flavors            {"pci-flavor": {"name", "description"}}
    PUT    /v2/{tenant_id}/os-pci-flavors/{UUID|name}
                                   {"action": "update", "pci-flavor": {"description", <k>: <v>}}
    DELETE /v2/{tenant_id}/os-pci-flavor/{UUID|name}

Every change bumps the store's topic `pci_flavors` in its transaction, so that every
controller replica's scheduler reads the flavors again before its next placement
(`controller.catalog.pci_flavors`, where the rules of a change are).

`update` makes the given pairs the flavor's whole definition, as the seed says; `set`
merges them into it, a null value removing a key. Singular and plural paths both work.
"""

from __future__ import annotations

from fastapi import APIRouter, Response
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.orm import Session

from passthru.controller.api.deps import SchedulerDep, StoreDep, TenantCaller
from passthru.controller.api.errors import ERROR_RESPONSES
from passthru.controller.api.fields import CheckedName, Key, NamePath, Text
from passthru.controller.api.paging import Links, Page, PagedList
from passthru.controller.catalog import pci_flavors
from passthru.controller.catalog.pci_flavors import Action, exposed_attrs
from passthru.controller.store.models import PciFlavorRow
from passthru.pci.flavor import FLAVOR_ATTRS_NAME, FLAVOR_ATTRS_UUID, MAX_NAME, PciFlavor

router = APIRouter(prefix="/v2/{tenant_id}", tags=["pci-flavors"], responses=ERROR_RESPONSES)

# Described rather than given as a schema pattern: `validate_flavor_name` explains a bad
# name far better than a pattern mismatch would.
NAME_RULE = "a letter, then letters, digits, '_', '.' or '-' (e.g. bigGPU, phyX_NIC)"


class PciFlavorView(BaseModel):
    """A PCI flavor: its UUID, name and description, and its match pairs as more keys."""

    model_config = ConfigDict(extra="allow")
    __pydantic_extra__: dict[str, str] = Field(init=False)

    UUID: str
    name: str
    description: str


class PciFlavorBody(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    pci_flavor: PciFlavorView = Field(alias="os-pci-flavor")


class PciFlavorList(PagedList):
    model_config = ConfigDict(populate_by_name=True)

    pci_flavors: list[PciFlavorView] = Field(alias="os-pci-flavors")
    pci_flavors_links: Links = Field(alias="os-pci-flavors_links")


class PciFlavorCreate(BaseModel):
    """`name` and `description`; any further keys are match pairs."""

    model_config = ConfigDict(extra="allow")
    __pydantic_extra__: dict[Key, Text] = Field(init=False)

    name: CheckedName = Field(max_length=MAX_NAME, description=NAME_RULE)
    description: Text = ""


class PciFlavorCreateBody(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    pci_flavor: PciFlavorCreate = Field(alias="pci-flavor")


class PciFlavorChange(BaseModel):
    """New `name`/`description` if given; further keys are match pairs (null: remove)."""

    model_config = ConfigDict(extra="allow")
    __pydantic_extra__: dict[Key, Text | None] = Field(init=False)

    name: CheckedName | None = Field(None, max_length=MAX_NAME, description=NAME_RULE)
    description: Text | None = None


class PciFlavorUpdateBody(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    action: Action = Field(
        "update", description="update: the pairs become the whole definition; set: merge")
    pci_flavor: PciFlavorChange = Field(alias="pci-flavor")


def flavor_view(row: PciFlavorRow) -> PciFlavorView:
    return PciFlavorView(UUID=row.uuid, name=row.name, description=row.description,
                         **row.spec)


def _attrs_view(session: Session) -> PciFlavorView:
    attrs = {attr: "True" for attr in exposed_attrs(session)}
    return PciFlavorView(UUID=FLAVOR_ATTRS_UUID, name=FLAVOR_ATTRS_NAME,
                         description="Available flavor attrs", **attrs)


@router.get("/os-pci-flavors", response_model=PciFlavorList, response_model_by_alias=True,
            summary="List PCI flavors")
def list_pci_flavors(who: TenantCaller, store: StoreDep, page: Page) -> PciFlavorList:
    """By name; the marker is a PCI flavor's UUID."""
    with store.read() as session:
        rows, more = pci_flavors.page(session, page)
        return PciFlavorList(pci_flavors=[flavor_view(r) for r in rows],
                             pci_flavors_links=page.next_links(rows, more, lambda r: r.uuid))


@router.post("/os-pci-flavors", status_code=201, response_model=PciFlavorBody,
             response_model_by_alias=True, summary="Create a PCI flavor")
def create_pci_flavor(who: TenantCaller, store: StoreDep, scheduler: SchedulerDep,
                      body: PciFlavorCreateBody) -> PciFlavorBody:
    who.require_admin("creating a PCI flavor")
    spec = body.pci_flavor
    flavor = PciFlavor(spec.name, dict(spec.__pydantic_extra__), spec.description)
    with store.write() as session:
        created = PciFlavorBody(pci_flavor=flavor_view(pci_flavors.create(session, flavor)))
    scheduler.flavors_changed()
    return created


def show_pci_flavor(who: TenantCaller, store: StoreDep, flavor: NamePath) -> PciFlavorBody:
    with store.read() as session:
        if pci_flavors.is_attrs(flavor):
            who.require_admin("listing the attributes hosts expose")
            return PciFlavorBody(pci_flavor=_attrs_view(session))
        return PciFlavorBody(pci_flavor=flavor_view(pci_flavors.find(session, flavor,
                                                                     lock=False)))


def update_pci_flavor(who: TenantCaller, store: StoreDep, scheduler: SchedulerDep,
                      flavor: NamePath, body: PciFlavorUpdateBody) -> PciFlavorBody:
    who.require_admin("changing a PCI flavor")
    change = body.pci_flavor
    with store.write() as session:
        row = pci_flavors.change(session, flavor, body.action, change.__pydantic_extra__,
                                 name=change.name, description=change.description)
        updated = PciFlavorBody(pci_flavor=flavor_view(row))
    scheduler.flavors_changed()
    return updated


def delete_pci_flavor(who: TenantCaller, store: StoreDep, scheduler: SchedulerDep,
                      flavor: NamePath) -> Response:
    who.require_admin("deleting a PCI flavor")
    with store.write() as session:
        pci_flavors.delete(session, flavor)
    scheduler.flavors_changed()
    return Response(status_code=204)


# The seed writes both the plural and the singular path for one flavor.
for _path in ("/os-pci-flavors/{flavor}", "/os-pci-flavor/{flavor}"):
    router.get(_path, response_model=PciFlavorBody, response_model_by_alias=True,
               summary="Show a PCI flavor by UUID or name (0: the attributes hosts expose)",
               )(show_pci_flavor)
    router.put(_path, response_model=PciFlavorBody, response_model_by_alias=True,
               summary="Change a PCI flavor")(update_pci_flavor)
    router.delete(_path, status_code=204, summary="Delete a PCI flavor nothing uses",
                  )(delete_pci_flavor)
