"""The fleet, for admins: hosts, their PCI devices, and PCI stats (pools with free/used)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from fastapi import APIRouter, Query
from pydantic import BaseModel
from sqlalchemy import ColumnElement, Row, func, select
from sqlalchemy.orm import Session, selectinload

from passthru.controller.api.deps import StoreDep, TenantCaller
from passthru.controller.api.errors import ERROR_RESPONSES
from passthru.controller.auth import issue_token
from passthru.controller.errors import NotFoundError
from passthru.controller.mapping import device_from_row, pool_from_row
from passthru.controller.models import DeviceRow, HostRow, HostStatus, PoolRow, Role
from passthru.pci.claims import in_use
from passthru.pci.device import DeviceStatus, DevType, PciDevice

router = APIRouter(prefix="/v2/{tenant_id}", tags=["hosts"], responses=ERROR_RESPONSES)


class Host(BaseModel):
    name: str
    status: HostStatus
    last_heartbeat: datetime | None
    generation: int
    pool_attrs: list[str]
    devices: int
    free: int


class HostList(BaseModel):
    hosts: list[Host]


class HostBody(BaseModel):
    host: Host


class HostDevice(BaseModel):
    host: str
    pool_id: int | None
    generation: int
    device: PciDevice


class HostDeviceList(BaseModel):
    pci_devices: list[HostDevice]


class PoolStats(BaseModel):
    """One pool as the seed's PCI stats show it, with its free and used counts."""

    host: str
    pool_id: int
    attrs: dict[str, str]
    dev_type: DevType
    numa_node: int | None
    parent_addr: str | None
    count: int
    free: int
    used: int


class PoolStatsList(BaseModel):
    pci_stats: list[PoolStats]


class AgentToken(BaseModel):
    host: str
    token: str


def _tally(rows: Iterable[Row[tuple[int, DeviceStatus, int]]]) -> dict[int, dict[str, int]]:
    """(host id, status, number) rows summed per host into devices and free ones."""
    tallies: dict[int, dict[str, int]] = {}
    for key, status, number in rows:
        tally = tallies.setdefault(key, {"count": 0, "free": 0})
        tally["count"] += number
        if status is DeviceStatus.AVAILABLE:
            tally["free"] += number
    return tallies


def _hosts(session: Session, *where: ColumnElement[bool]) -> list[Host]:
    hosts = session.scalars(select(HostRow).where(*where).order_by(HostRow.name)).all()
    tallies = _tally(session.execute(
        select(DeviceRow.host_id, DeviceRow.status, func.count())
        .where(DeviceRow.status != DeviceStatus.REMOVED)
        .group_by(DeviceRow.host_id, DeviceRow.status)))
    views = []
    for host in hosts:
        tally = tallies.get(host.id, {"count": 0, "free": 0})
        views.append(Host(name=host.name, status=host.status,
                          last_heartbeat=host.last_heartbeat, generation=host.generation,
                          pool_attrs=host.pool_attrs, devices=tally["count"],
                          free=tally["free"]))
    return views


@router.get("/os-hosts", response_model=HostList, summary="List hosts (admin)")
def list_hosts(who: TenantCaller, store: StoreDep) -> HostList:
    who.require_admin("listing hosts")
    with store.read() as session:
        return HostList(hosts=_hosts(session))


@router.get("/os-hosts/{host}", response_model=HostBody, summary="Show a host (admin)")
def show_host(who: TenantCaller, store: StoreDep, host: str) -> HostBody:
    who.require_admin("showing a host")
    with store.read() as session:
        found = _hosts(session, HostRow.name == host)
    if not found:
        raise NotFoundError(f"no host {host!r} has reported yet (start its agent with a "
                            f"token from passthru host-token {host})")
    return HostBody(host=found[0])


@router.post("/os-hosts/{host}/tokens", status_code=201, response_model=AgentToken,
             summary="Issue an agent token that can report only this host (admin)")
def create_host_token(who: TenantCaller, store: StoreDep, host: str) -> AgentToken:
    who.require_admin("issuing a host token")
    with store.write() as session:
        return AgentToken(host=host, token=issue_token(session, Role.AGENT, host=host))


@router.get("/os-pci-devices", response_model=HostDeviceList,
            summary="List PCI devices (admin)")
def list_devices(who: TenantCaller, store: StoreDep,
                 host: str | None = Query(None, description="only this host's devices"),
                 status: DeviceStatus | None = Query(None, description="only in this status"),
                 ) -> HostDeviceList:
    who.require_admin("listing PCI devices")
    query = (select(DeviceRow, HostRow.name).join(HostRow)
             .order_by(HostRow.name, DeviceRow.address))
    if host is not None:
        query = query.where(HostRow.name == host)
    if status is not None:
        query = query.where(DeviceRow.status == status)
    with store.read() as session:
        return HostDeviceList(pci_devices=[
            HostDevice(host=name, pool_id=row.pool_id, generation=row.generation,
                       device=device_from_row(row))
            for row, name in session.execute(query)])


@router.get("/os-pci-stats", response_model=PoolStatsList,
            summary="PCI stats: each host's pools with free and used counts (admin)")
def pci_stats(who: TenantCaller, store: StoreDep,
              host: str | None = Query(None, description="only this host's pools")
              ) -> PoolStatsList:
    who.require_admin("reading PCI stats")
    query = (select(PoolRow, HostRow.name).join(HostRow).options(selectinload(PoolRow.devices))
             .order_by(HostRow.name, PoolRow.id))
    if host is not None:
        query = query.where(HostRow.name == host)
    with store.read() as session:
        stats = []
        for row, name in session.execute(query):
            pool = pool_from_row(row)
            stats.append(PoolStats(host=name, pool_id=row.id, attrs=pool.attrs,
                                   dev_type=pool.dev_type, numa_node=pool.numa_node,
                                   parent_addr=pool.parent_addr, count=pool.count,
                                   free=pool.free,
                                   used=sum(1 for d in pool.devices if in_use(d))))
        return PoolStatsList(pci_stats=stats)
