"""Provider networks: where SR-IOV ports live. `physical_network` is what ties a port to
the devices tagged `e.physical_network` on the hosts (the seed's plan B)."""

from __future__ import annotations

from fastapi import APIRouter, Response
from pydantic import BaseModel, Field

from passthru.controller.api.deps import StoreDep, TenantCaller
from passthru.controller.api.errors import ERROR_RESPONSES
from passthru.controller.api.fields import Int32, Name, NamePath
from passthru.controller.api.paging import Links, Page, PagedList
from passthru.controller.catalog import networks
from passthru.controller.catalog.networks import visible_network
from passthru.controller.store.models import NetworkRow
from passthru.pci.binding import NetworkSpec, NetworkType

router = APIRouter(prefix="/v2/{tenant_id}/networks", tags=["networks"],
                   responses=ERROR_RESPONSES)


class NetworkCreate(BaseModel):
    name: Name
    physical_network: Name
    network_type: NetworkType | None = Field(
        None, description="vlan or flat; default vlan when a segmentation_id is given")
    segmentation_id: Int32 | None = Field(None, description="the VLAN id of a vlan network")
    project: Name | None = Field(None, description="owning project; none: every project")


class NetworkCreateBody(BaseModel):
    network: NetworkCreate


class Network(BaseModel):
    id: str
    name: str
    project: str | None
    network_type: NetworkType
    physical_network: NamePath
    segmentation_id: int | None
    ports: int


class NetworkBody(BaseModel):
    network: Network


class NetworkList(PagedList):
    networks: list[Network]
    networks_links: Links


def network_view(row: NetworkRow) -> Network:
    return Network(id=row.id, name=row.name, project=row.project,
                   network_type=row.network_type, physical_network=row.physical_network,
                   segmentation_id=row.segmentation_id, ports=len(row.ports))


@router.get("", response_model=NetworkList, summary="List the networks the project can use")
def list_networks(tenant_id: NamePath, who: TenantCaller, store: StoreDep, page: Page
                  ) -> NetworkList:
    """By name; the marker is a network's id."""
    with store.read() as session:
        rows, more = networks.page(session, None if who.is_admin else tenant_id, page)
        return NetworkList(networks=[network_view(r) for r in rows],
                           networks_links=page.next_links(rows, more, lambda r: r.id))


@router.post("", status_code=201, response_model=NetworkBody,
             summary="Create a provider network")
def create_network(who: TenantCaller, store: StoreDep, body: NetworkCreateBody) -> NetworkBody:
    who.require_admin("creating a network")
    spec = body.network
    kind = spec.network_type or (
        NetworkType.VLAN if spec.segmentation_id is not None else NetworkType.FLAT)
    checked = NetworkSpec(spec.name, kind, spec.physical_network, spec.segmentation_id)
    with store.write() as session:
        return NetworkBody(network=network_view(networks.create(session, checked,
                                                                spec.project)))


@router.get("/{network}", response_model=NetworkBody, summary="Show a network by UUID or name")
def show_network(tenant_id: NamePath, who: TenantCaller, store: StoreDep, network: NamePath
                 ) -> NetworkBody:
    with store.read() as session:
        row = visible_network(session, network, None if who.is_admin else tenant_id)
        return NetworkBody(network=network_view(row))


@router.delete("/{network}", status_code=204, summary="Delete a network that has no ports")
def delete_network(who: TenantCaller, store: StoreDep, network: NamePath) -> Response:
    who.require_admin("deleting a network")
    with store.write() as session:
        networks.delete(session, network)
    return Response(status_code=204)
