"""The fleet, for admins: hosts (with their capacity and use), their PCI devices, and PCI
stats (pools with free/used)."""

from __future__ import annotations

from collections import Counter
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import BaseModel
from sqlalchemy import select
from sqlalchemy.orm import Session

from passthru.controller.api.deps import StoreDep, TenantCaller
from passthru.controller.api.errors import ERROR_RESPONSES
from passthru.controller.api.fields import CheckedName, NamePath, name_query
from passthru.controller.api.tokens import IssuedToken, TokenOptions
from passthru.controller.enums import Role
from passthru.controller.errors import NotFoundError
from passthru.controller.mapping import device_from_row
from passthru.controller.models import DeviceRow, HostRow, HostStatus
from passthru.controller.usage import pool_usages
from passthru.pci.device import DeviceStatus, DevType, PciDevice

router = APIRouter(prefix="/v2/{tenant_id}", tags=["hosts"], responses=ERROR_RESPONSES)


class Host(BaseModel):
    """A host; `*_capacity` is what VMs may take after ratios and reserves (None: the
    agent reports no resources, and VMs are not counted), `*_used` what they hold."""

    name: str
    status: HostStatus
    last_heartbeat: datetime | None
    generation: int
    pool_attrs: list[str]
    devices: int
    free: int
    vcpus_capacity: int | None = None
    vcpus_used: int = 0
    ram_mb_capacity: int | None = None
    ram_mb_used: int = 0
    disk_gb_capacity: int | None = None
    disk_gb_used: int = 0


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
    """One pool as the seed's PCI stats show it, with its free and used counts (free: what
    a VM could get now, so nothing on a host that is down)."""

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


class AgentTokenCreateBody(BaseModel):
    token: TokenOptions = TokenOptions()


class AgentToken(IssuedToken):
    host: str


def _hosts(session: Session, name: str | None = None) -> list[Host]:
    where = [HostRow.name == name] if name is not None else []
    hosts = session.scalars(select(HostRow).where(*where).order_by(HostRow.name)).all()
    tallies: dict[str, Counter[str]] = {}
    for usage in pool_usages(session, name):
        tallies.setdefault(usage.host, Counter()).update(count=usage.count, free=usage.free)
    views = []
    for host in hosts:
        tally = tallies.get(host.name, Counter())
        views.append(Host(name=host.name, status=host.status,
                          last_heartbeat=host.last_heartbeat, generation=host.generation,
                          pool_attrs=host.pool_attrs, devices=tally["count"],
                          free=tally["free"], vcpus_capacity=host.vcpus_capacity,
                          vcpus_used=host.vcpus_used, ram_mb_capacity=host.ram_mb_capacity,
                          ram_mb_used=host.ram_mb_used, disk_gb_capacity=host.disk_gb_capacity,
                          disk_gb_used=host.disk_gb_used))
    return views


@router.get("/os-hosts", response_model=HostList, summary="List hosts (admin)")
def list_hosts(who: TenantCaller, store: StoreDep) -> HostList:
    who.require_admin("listing hosts")
    with store.read() as session:
        return HostList(hosts=_hosts(session))


@router.get("/os-hosts/{host}", response_model=HostBody, summary="Show a host (admin)")
def show_host(who: TenantCaller, store: StoreDep, host: NamePath) -> HostBody:
    who.require_admin("showing a host")
    with store.read() as session:
        found = _hosts(session, host)
    if not found:
        raise NotFoundError(f"no host {host!r} has reported yet (start its agent with a "
                            f"token from passthru host-token {host})")
    return HostBody(host=found[0])


@router.post("/os-hosts/{host}/tokens", status_code=201, response_model=AgentToken,
             summary="Issue an agent token that can report only this host (admin)")
def create_host_token(who: TenantCaller, store: StoreDep, host: NamePath,
                      body: AgentTokenCreateBody | None = None) -> AgentToken:
    who.require_admin("issuing a host token")
    issued = (body or AgentTokenCreateBody()).token.issue(store, Role.AGENT, host=host)
    return AgentToken(id=issued.row.id, role=Role.AGENT, host=host, name=issued.row.name,
                      expires_at=issued.row.expires_at, token=issued.token)


@router.get("/os-pci-devices", response_model=HostDeviceList,
            summary="List PCI devices (admin)")
def list_devices(who: TenantCaller, store: StoreDep,
                 host: Annotated[CheckedName | None,
                                 name_query("only this host's devices")] = None,
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
              host: Annotated[CheckedName | None, name_query("only this host's pools")] = None,
              ) -> PoolStatsList:
    who.require_admin("reading PCI stats")
    with store.read() as session:
        stats = [PoolStats(host=u.host, pool_id=u.pool_id, attrs=u.pool.attrs,
                           dev_type=u.pool.dev_type, numa_node=u.pool.numa_node,
                           parent_addr=u.pool.parent_addr, count=u.count, free=u.free,
                           used=u.used)
                 for u in pool_usages(session, host)]
        return PoolStatsList(pci_stats=stats)
