"""Provider networks: where SR-IOV ports live. `physical_network` is what ties a port to
the devices tagged `e.physical_network` on the hosts (the seed's plan B)."""

from __future__ import annotations

from fastapi import APIRouter, Response
from pydantic import BaseModel, Field
from sqlalchemy import or_, select, text
from sqlalchemy.orm import Session

from passthru.controller.api.deps import StoreDep, TenantCaller
from passthru.controller.api.errors import ERROR_RESPONSES
from passthru.controller.api.fields import Int32, Name, NamePath
from passthru.controller.api.paging import Links, Page, PagedList, by, rows_page
from passthru.controller.models import NetworkRow
from passthru.controller.ports import visible_network
from passthru.errors import ConflictError
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
    scope = [] if who.is_admin else [
        or_(NetworkRow.project.is_(None), NetworkRow.project == tenant_id)]
    with store.read() as session:
        rows, more = rows_page(session, select(NetworkRow).where(*scope), (NetworkRow.name,),
                               page, "network", "id", by(NetworkRow.id, scope=scope))
        return NetworkList(networks=[network_view(r) for r in rows],
                           networks_links=page.next_links(rows, more, lambda r: r.id))


#: The PostgreSQL advisory lock network creates take turns on.
_CREATE_LOCK = 0x6E657473  # "nets"


def _one_create_at_a_time(session: Session) -> None:
    """A create checks that no network has its segment yet, then adds one: two creates of
    one segment must not both pass the check. SQLite writers take turns anyway; on
    PostgreSQL they take turns on an advisory lock held until the transaction ends (no
    row exists yet to lock, and no unique index can say "one flat network per physical
    network", whose segmentation id is null)."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _CREATE_LOCK})


@router.post("", status_code=201, response_model=NetworkBody,
             summary="Create a provider network")
def create_network(who: TenantCaller, store: StoreDep, body: NetworkCreateBody) -> NetworkBody:
    who.require_admin("creating a network")
    spec = body.network
    kind = spec.network_type or (
        NetworkType.VLAN if spec.segmentation_id is not None else NetworkType.FLAT)
    checked = NetworkSpec(spec.name, kind, spec.physical_network, spec.segmentation_id)
    with store.write() as session:
        _one_create_at_a_time(session)
        if session.scalars(select(NetworkRow.id).where(NetworkRow.name == spec.name)).first():
            raise ConflictError(f"a network named {spec.name!r} exists already")
        clash = session.scalars(select(NetworkRow).where(
            NetworkRow.physical_network == checked.physical_network,
            NetworkRow.network_type == checked.network_type,
            NetworkRow.segmentation_id.is_(checked.segmentation_id)
            if checked.segmentation_id is None
            else NetworkRow.segmentation_id == checked.segmentation_id)).first()
        if clash is not None:
            what = ("the flat network" if kind is NetworkType.FLAT
                    else f"VLAN {checked.segmentation_id}")
            raise ConflictError(f"{what} of physical network {checked.physical_network} is "
                                f"network {clash.name} already")
        row = NetworkRow(name=checked.name, project=spec.project, network_type=kind,
                         physical_network=checked.physical_network,
                         segmentation_id=checked.segmentation_id)
        session.add(row)
        session.flush()
        return NetworkBody(network=network_view(row))


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
        row = visible_network(session, network, None)
        # Locked first: a port made on it meanwhile holds the row (its foreign key), and
        # is listed here once committed.
        session.refresh(row, with_for_update=True)
        if row.ports:
            names = ", ".join(sorted(p.name or p.id for p in row.ports)[:5])
            raise ConflictError(f"network {row.name} still has {len(row.ports)} port(s) "
                                f"({names}); delete them (or their servers) first")
        session.delete(row)
    return Response(status_code=204)
