"""The fleet by PCI flavor, for admins: how many devices of each flavor are free and used.

A pool counts for every flavor that matches it (`PciFlavor.matches_pool`, as the
scheduler matches), so overlapping flavors share devices. `free` counts only devices a VM
could get now: available, on a host that is up.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from fastapi import APIRouter
from pydantic import BaseModel
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from passthru.controller.api.deps import StoreDep, TenantCaller
from passthru.controller.api.errors import ERROR_RESPONSES
from passthru.controller.mapping import pool_from_row
from passthru.controller.models import DeviceRow, HostRow, HostStatus, PoolRow
from passthru.controller.scheduler.snapshot import load_flavors
from passthru.pci.device import DeviceStatus
from passthru.pci.flavor import PciFlavor
from passthru.pci.pool import Pool

router = APIRouter(prefix="/v2/{tenant_id}", tags=["hosts"], responses=ERROR_RESPONSES)


class Usage(BaseModel):
    count: int = 0
    free: int = 0
    used: int = 0

    def add(self, other: Usage) -> None:
        self.count += other.count
        self.free += other.free
        self.used += other.used


class HostUsage(Usage):
    host: str


class FlavorUsage(Usage):
    name: str
    description: str
    spec: dict[str, str]
    hosts: list[HostUsage]


class FlavorUsageList(BaseModel):
    pci_flavor_stats: list[FlavorUsage]


@dataclass(frozen=True, slots=True)
class _PoolUsage:
    host: str
    pool: Pool
    usage: Usage


def _pool_usages(session: Session) -> list[_PoolUsage]:
    statuses: dict[int, Counter[DeviceStatus]] = {}
    for pool_id, status, number in session.execute(
            select(DeviceRow.pool_id, DeviceRow.status, func.count())
            .where(DeviceRow.pool_id.is_not(None), DeviceRow.status != DeviceStatus.REMOVED)
            .group_by(DeviceRow.pool_id, DeviceRow.status)):
        statuses.setdefault(pool_id, Counter())[status] = number
    usages = []
    for row, host, host_status in session.execute(
            select(PoolRow, HostRow.name, HostRow.status).join(HostRow)
            .order_by(HostRow.name, PoolRow.id)):
        counts = statuses.get(row.id, Counter())
        up = host_status is HostStatus.UP
        usage = Usage(count=counts.total(),
                      free=counts[DeviceStatus.AVAILABLE] if up else 0,
                      used=counts[DeviceStatus.CLAIMED] + counts[DeviceStatus.ALLOCATED])
        usages.append(_PoolUsage(host, pool_from_row(row, devices=()), usage))
    return usages


def _flavor_usage(flavor: PciFlavor, pools: list[_PoolUsage]) -> FlavorUsage:
    total = FlavorUsage(name=flavor.name, description=flavor.description,
                        spec=dict(flavor.spec), hosts=[])
    per_host: dict[str, HostUsage] = {}
    for entry in pools:
        if flavor.matches_pool(entry.pool):
            total.add(entry.usage)
            per_host.setdefault(entry.host, HostUsage(host=entry.host)).add(entry.usage)
    total.hosts = list(per_host.values())
    return total


@router.get("/os-pci-flavor-stats", response_model=FlavorUsageList,
            summary="PCI flavor stats: each PCI flavor's devices across the fleet, free "
                    "(on hosts that are up) and used, in total and per host (admin)")
def pci_flavor_stats(who: TenantCaller, store: StoreDep) -> FlavorUsageList:
    who.require_admin("reading PCI flavor stats")
    with store.read() as session:
        pools = _pool_usages(session)
        flavors = sorted(load_flavors(session).values(), key=lambda f: f.name.lower())
    return FlavorUsageList(pci_flavor_stats=[_flavor_usage(f, pools) for f in flavors])
