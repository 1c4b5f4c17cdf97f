"""The fleet, for admins: hosts (with their capacity and use), their PCI devices (and their
taints: a tainted device is given to no new VM until cleared), and PCI stats (pools with
free/used).

Host rows and pool rows are the store's; how many devices each pool has free and used is
the scheduler's index (`Scheduler.pool_tallies`), which counts them as `controller.hosts.usage`
counts the store, without a query over every device row. Whether a host is up is the
store's, so a host the sweep marked down has nothing free here at once.

A page of hosts and a page of PCI stats carry an ETag (`api.conditional`): the fleet page
polls the first page of hosts, and gets a 304 while nothing on it changed.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query, Response
from pydantic import BaseModel, Field

from passthru.controller.api.conditional import NOT_MODIFIED, answer
from passthru.controller.api.deps import SchedulerDep, StoreDep, TenantCaller
from passthru.controller.api.errors import ERROR_RESPONSES
from passthru.controller.api.fields import CheckedName, NamePath, Text, name_query
from passthru.controller.api.paging import Links, Page, PagedList
from passthru.controller.api.tokens import IssuedToken, TokenOptions
from passthru.controller.enums import Role
from passthru.controller.hosts.taints import set_taint
from passthru.controller.hosts.views import (
    Record,
    device_page,
    host_page,
    host_record,
    pool_page,
)
from passthru.controller.ledger import changes_of
from passthru.controller.scheduler.service import Scheduler
from passthru.controller.store.db import Store
from passthru.controller.store.mapping import device_from_row
from passthru.controller.store.models import HostStatus
from passthru.errors import NotFoundError
from passthru.pci.device import DeviceStatus, DevType, PciDevice
from passthru.pci.pool import Pool

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
    used: int = 0
    vcpus_capacity: int | None = None
    vcpus_used: int = 0
    ram_mb_capacity: int | None = None
    ram_mb_used: int = 0
    disk_gb_capacity: int | None = None
    disk_gb_used: int = 0


class HostList(PagedList):
    hosts: list[Host]
    hosts_links: Links


class HostBody(BaseModel):
    host: Host


class HostDevice(BaseModel):
    host: str
    pool_id: int | None
    generation: int
    device: PciDevice


class HostDeviceList(PagedList):
    pci_devices: list[HostDevice]
    pci_devices_links: Links


class HostDeviceBody(BaseModel):
    pci_device: HostDevice


class Taint(BaseModel):
    reason: Text = Field(min_length=1, max_length=255,
                         description="why no new VM may be given the device")


class TaintBody(BaseModel):
    taint: Taint


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


class PoolStatsList(PagedList):
    pci_stats: list[PoolStats]
    pci_stats_links: Links


class AgentTokenCreateBody(BaseModel):
    token: TokenOptions = TokenOptions()


class AgentToken(IssuedToken):
    host: str


def _host_views(rows: Sequence[Record], scheduler: Scheduler) -> list[Host]:
    """Host rows with their device counts from the scheduler's index."""
    tallies = scheduler.pool_tallies(row.name for row in rows)
    views = []
    for row in rows:
        pools = tallies.get(row.name, [])
        up = row.status is HostStatus.UP
        views.append(Host(**row._asdict(), devices=sum(t.count for t in pools),
                          free=sum(t.available for t in pools) if up else 0,
                          used=sum(t.used for t in pools)))
    return views


@router.get("/os-hosts", response_model=HostList, responses=NOT_MODIFIED,
            summary="List hosts (admin)")
def list_hosts(who: TenantCaller, store: StoreDep, scheduler: SchedulerDep, page: Page,
               status: HostStatus | None = Query(None, description="only hosts in this status"),
               ) -> Response:
    """By name; the marker is a host's name. Device counts are the scheduler's."""
    who.require_admin("listing hosts")
    with store.read() as session:
        rows, more = host_page(session, page, status)
    return answer(page.request, HostList(
        hosts=_host_views(rows, scheduler),
        hosts_links=page.next_links(rows, more, lambda r: r.name)))


@router.get("/os-hosts/{host}", response_model=HostBody, summary="Show a host (admin)")
def show_host(who: TenantCaller, store: StoreDep, scheduler: SchedulerDep, host: NamePath
              ) -> HostBody:
    who.require_admin("showing a host")
    with store.read() as session:
        found = host_record(session, host)
    if found is None:
        raise NotFoundError(f"no host {host!r} has reported yet (start its agent with a "
                            f"token from passthru host-token {host})")
    return HostBody(host=_host_views([found], scheduler)[0])


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
def list_devices(who: TenantCaller, store: StoreDep, page: Page,
                 host: Annotated[CheckedName | None,
                                 name_query("only this host's devices")] = None,
                 status: DeviceStatus | None = Query(None, description="only in this status"),
                 ) -> HostDeviceList:
    """By host name, then address; the marker is HOST/ADDRESS of a device."""
    who.require_admin("listing PCI devices")
    with store.read() as session:
        rows, more = device_page(session, page, host, status)
        return HostDeviceList(pci_devices=[
            HostDevice(host=name, pool_id=row.pool_id, generation=row.generation,
                       device=device_from_row(row)) for row, name in rows],
            pci_devices_links=page.next_links(
                rows, more, lambda r: f"{r[1]}/{r[0].address}"))


def _tainted(store: Store, scheduler: Scheduler, host: str, address: str,
             taint: str | None) -> HostDeviceBody:
    with store.write() as session:
        device, pool_id, generation = set_taint(session, host, address, taint)
        changes = changes_of(session)
    scheduler.apply(changes)
    return HostDeviceBody(pci_device=HostDevice(host=host, pool_id=pool_id,
                                                generation=generation, device=device))


@router.put("/os-pci-devices/{host}/{address}/taint", response_model=HostDeviceBody,
            summary="Taint a PCI device: no new VM is given it until cleared (admin)")
def taint_device(who: TenantCaller, store: StoreDep, scheduler: SchedulerDep,
                 host: NamePath, address: NamePath, body: TaintBody) -> HostDeviceBody:
    """A VM that holds the device keeps it, and frees it as ever; the device then waits
    for its taint to be cleared. Tainting it again replaces the reason."""
    who.require_admin("tainting a PCI device")
    return _tainted(store, scheduler, host, address, body.taint.reason)


@router.delete("/os-pci-devices/{host}/{address}/taint", response_model=HostDeviceBody,
               summary="Clear a PCI device's taint: new VMs may be given it again (admin)")
def clear_taint(who: TenantCaller, store: StoreDep, scheduler: SchedulerDep,
                host: NamePath, address: NamePath) -> HostDeviceBody:
    """Whatever tainted it: an operator, another card reported at its address, or a
    one-time-use device's first use."""
    who.require_admin("clearing a PCI device's taint")
    return _tainted(store, scheduler, host, address, None)


@router.get("/os-pci-stats", response_model=PoolStatsList, responses=NOT_MODIFIED,
            summary="PCI stats: each host's pools with free and used counts (admin)")
def pci_stats(who: TenantCaller, store: StoreDep, scheduler: SchedulerDep, page: Page,
              host: Annotated[CheckedName | None, name_query("only this host's pools")] = None,
              ) -> Response:
    """By host name, then pool id; the marker is a pool id. The pools are the store's,
    their counts the scheduler's (matched by what makes up the pool's key)."""
    who.require_admin("reading PCI stats")
    with store.read() as session:
        rows, more = pool_page(session, page, host)
    tallies = {(name, *_identity(t.pool)): t
               for name, found in scheduler.pool_tallies({row.name for row in rows}).items()
               for t in found}
    stats = []
    for row in rows:
        tally = tallies.get((row.name, *_identity(row)))
        count, available, used = (tally.count, tally.available, tally.used) if tally else (
            0, 0, 0)
        # Built without validation: every value is the store's or the index's already.
        stats.append(PoolStats.model_construct(
            host=row.name, pool_id=row.id, attrs=row.attrs, dev_type=row.dev_type,
            numa_node=row.numa_node, parent_addr=row.parent_addr, count=count,
            free=available if row.status is HostStatus.UP else 0, used=used))
    return answer(page.request, PoolStatsList(
        pci_stats=stats, pci_stats_links=page.next_links(rows, more, lambda r: r.id)))


def _identity(pool: Pool | Record) -> tuple[object, ...]:
    """What tells a host's pools apart (their key), for a core pool and a pool row alike:
    cheaper to compare than the key's canonical text."""
    return (pool.dev_type, pool.numa_node, pool.parent_addr, *sorted(pool.attrs.items()))
