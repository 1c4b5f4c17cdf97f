"""Ports: a project's attachment points on networks, with Neutron's binding fields."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query, Response
from pydantic import BaseModel, ConfigDict, Field, StrictBool

from passthru.controller.api.deps import StoreDep, TenantCaller
from passthru.controller.api.errors import ERROR_RESPONSES
from passthru.controller.api.fields import MAX_NAME, CheckedName, Name, NamePath, Text
from passthru.controller.api.paging import Links, Page, PagedList
from passthru.controller.auth import Principal
from passthru.controller.catalog import ports
from passthru.controller.catalog.networks import visible_network
from passthru.controller.store.models import PortRow
from passthru.pci.binding import VnicType

router = APIRouter(prefix="/v2/{tenant_id}/ports", tags=["ports"], responses=ERROR_RESPONSES)


class PortCreate(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    network_id: Name = Field(description="network UUID or name")
    name: CheckedName = Field("", max_length=MAX_NAME)
    vnic_type: VnicType = Field(VnicType.NORMAL, alias="binding:vnic_type")
    pci_flavor: Name | None = Field(
        None, description="plan A: the PCI flavor the port's device must come from")
    mac_address: Text | None = Field(
        None, description="a unicast MAC (first octet even, not all zeros); default: a random "
                          "locally administered one")
    port_security_enabled: StrictBool = True


class PortCreateBody(BaseModel):
    port: PortCreate


class Port(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    id: str
    name: str
    network_id: str
    project_id: str
    mac_address: str
    vnic_type: VnicType = Field(alias="binding:vnic_type")
    pci_flavor: str | None
    port_security_enabled: bool
    host_id: str | None = Field(alias="binding:host_id")
    vif_type: str | None = Field(alias="binding:vif_type")
    profile: dict[str, Any] = Field(alias="binding:profile")
    device_id: str | None


class PortBody(BaseModel):
    port: Port


class PortList(PagedList):
    ports: list[Port]
    ports_links: Links


def port_view(row: PortRow) -> Port:
    return Port(id=row.id, name=row.name, network_id=row.network_id, project_id=row.project,
                mac_address=row.mac_address, vnic_type=row.vnic_type,
                pci_flavor=row.pci_flavor, port_security_enabled=row.port_security,
                host_id=row.binding_host_id, vif_type=row.binding_vif_type,
                profile=dict(row.binding_profile), device_id=row.device_id)


def _project(who: Principal, tenant_id: str, all_projects: bool) -> str | None:
    """Members see their project's ports; admins too, or every port with all_projects."""
    return None if who.is_admin and all_projects else tenant_id


@router.get("", response_model=PortList, response_model_by_alias=True,
            summary="List the project's ports")
def list_ports(tenant_id: NamePath, who: TenantCaller, store: StoreDep, page: Page,
               all_projects: bool = Query(False, description="admin: every project's ports"),
               ) -> PortList:
    """Oldest first; the marker is a port's id."""
    with store.read() as session:
        rows, more = ports.page(session, _project(who, tenant_id, all_projects), page)
        return PortList(ports=[port_view(r) for r in rows],
                        ports_links=page.next_links(rows, more, lambda r: r.id))


@router.post("", status_code=201, response_model=PortBody, response_model_by_alias=True,
             summary="Create a port on a network")
def create(tenant_id: NamePath, who: TenantCaller, store: StoreDep, body: PortCreateBody
           ) -> PortBody:
    spec = body.port
    with store.write() as session:
        network = visible_network(session, spec.network_id,
                                  None if who.is_admin else tenant_id)
        row = ports.create_port(session, network, tenant_id, vnic_type=spec.vnic_type,
                                pci_flavor=spec.pci_flavor, mac_address=spec.mac_address,
                                name=spec.name, port_security=spec.port_security_enabled)
        return PortBody(port=port_view(row))


@router.get("/{port}", response_model=PortBody, response_model_by_alias=True,
            summary="Show a port by UUID or name")
def show_port(tenant_id: NamePath, who: TenantCaller, store: StoreDep, port: NamePath) -> PortBody:
    with store.read() as session:
        row = ports.find(session, port, _project(who, tenant_id, True))
        return PortBody(port=port_view(row))


@router.delete("/{port}", status_code=204, summary="Delete a port no server uses")
def delete_port(tenant_id: NamePath, who: TenantCaller, store: StoreDep,
                port: NamePath) -> Response:
    with store.write() as session:
        ports.delete(session, port, _project(who, tenant_id, True))
    return Response(status_code=204)
