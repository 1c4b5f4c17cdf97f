"""Ports: a project's attachment points on networks, with Neutron's binding fields."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query, Response
from pydantic import BaseModel, ConfigDict, Field, StrictBool
from sqlalchemy import CursorResult, delete, select

from passthru.controller.api.deps import StoreDep, TenantCaller
from passthru.controller.api.errors import ERROR_RESPONSES
from passthru.controller.api.fields import MAX_NAME, CheckedName, Name, NamePath, Text
from passthru.controller.api.paging import Links, Page, PagedList, by, rows_page
from passthru.controller.auth import Principal
from passthru.controller.lookup import find
from passthru.controller.models import PortRow
from passthru.controller.ports import create_port, visible_network
from passthru.errors import ConflictError, NotFoundError
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


def _scope(who: Principal, tenant_id: str, all_projects: bool) -> list[Any]:
    """Members see their project's ports; admins too, or every port with all_projects."""
    return [] if who.is_admin and all_projects else [PortRow.project == tenant_id]


@router.get("", response_model=PortList, response_model_by_alias=True,
            summary="List the project's ports")
def list_ports(tenant_id: NamePath, who: TenantCaller, store: StoreDep, page: Page,
               all_projects: bool = Query(False, description="admin: every project's ports"),
               ) -> PortList:
    """Oldest first; the marker is a port's id."""
    scope = _scope(who, tenant_id, all_projects)
    with store.read() as session:
        rows, more = rows_page(session, select(PortRow).where(*scope),
                               (PortRow.created_at, PortRow.id), page, "port", "id",
                               by(PortRow.id, scope=scope))
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
        row = create_port(session, network, tenant_id, vnic_type=spec.vnic_type,
                          pci_flavor=spec.pci_flavor, mac_address=spec.mac_address,
                          name=spec.name, port_security=spec.port_security_enabled)
        return PortBody(port=port_view(row))


@router.get("/{port}", response_model=PortBody, response_model_by_alias=True,
            summary="Show a port by UUID or name")
def show_port(tenant_id: NamePath, who: TenantCaller, store: StoreDep, port: NamePath) -> PortBody:
    with store.read() as session:
        row = find(session, PortRow, port, "port", *_scope(who, tenant_id, True))
        return PortBody(port=port_view(row))


@router.delete("/{port}", status_code=204, summary="Delete a port no server uses")
def delete_port(tenant_id: NamePath, who: TenantCaller, store: StoreDep,
                port: NamePath) -> Response:
    with store.write() as session:
        row = find(session, PortRow, port, "port", *_scope(who, tenant_id, True))
        # Conditional: a boot that attaches the port meanwhile keeps it (on PostgreSQL
        # this waits for that boot's commit and then finds the port in use).
        gone = session.execute(delete(PortRow).where(PortRow.id == row.id,
                                                     PortRow.device_id.is_(None))
                               .execution_options(synchronize_session=False))
        assert isinstance(gone, CursorResult)  # a DELETE's result counts its rows
        if gone.rowcount != 1:
            if session.get(PortRow, row.id, populate_existing=True) is None:
                raise NotFoundError(f"no port {port!r}: it was deleted meanwhile")
            raise ConflictError(f"port {row.name or row.id} is attached to server "
                                f"{row.device_id}; delete the server first")
    return Response(status_code=204)
