"""The fleet by PCI flavor, for admins: how many devices of each flavor are free and used.

A pool counts for every flavor that matches it (`PciFlavor.matches_pool`, as the
scheduler matches), so overlapping flavors share devices. Free and used are counted as
everywhere else (`controller.usage`).
"""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel

from passthru.controller.api.deps import StoreDep, TenantCaller
from passthru.controller.api.errors import ERROR_RESPONSES
from passthru.controller.scheduler.snapshot import load_flavors
from passthru.controller.usage import PoolUsage, pool_usages
from passthru.pci.flavor import PciFlavor

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


def _usage(entry: PoolUsage) -> Usage:
    return Usage(count=entry.count, free=entry.free, used=entry.used)


def _flavor_usage(flavor: PciFlavor, pools: list[PoolUsage]) -> FlavorUsage:
    total = FlavorUsage(name=flavor.name, description=flavor.description,
                        spec=dict(flavor.spec), hosts=[])
    per_host: dict[str, HostUsage] = {}
    for entry in pools:
        if flavor.matches_pool(entry.pool):
            total.add(_usage(entry))
            per_host.setdefault(entry.host, HostUsage(host=entry.host)).add(_usage(entry))
    total.hosts = list(per_host.values())
    return total


@router.get("/os-pci-flavor-stats", response_model=FlavorUsageList,
            summary="PCI flavor stats: each PCI flavor's devices across the fleet, free "
                    "(on hosts that are up) and used, in total and per host (admin)")
def pci_flavor_stats(who: TenantCaller, store: StoreDep) -> FlavorUsageList:
    who.require_admin("reading PCI flavor stats")
    with store.read() as session:
        pools = pool_usages(session)
        flavors = sorted(load_flavors(session).values(), key=lambda f: f.name.lower())
    return FlavorUsageList(pci_flavor_stats=[_flavor_usage(f, pools) for f in flavors])
