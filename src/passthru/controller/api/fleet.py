"""The fleet at a glance, for admins: how many devices of each PCI flavor are free and
used (in total and per host), and a summary of the whole fleet small enough to poll.

A pool counts for every flavor that matches it (`PciFlavor.matches_pool`, as the
scheduler matches), so overlapping flavors share devices; whether a flavor matches is
asked once per pool signature. The counts are the scheduler's index
(`Scheduler.pool_tallies`), counted as `controller.usage` counts the store; whether a host
is up is the store's. Nothing here reads a device row.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, Field
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from passthru.controller.api.deps import SchedulerDep, StoreDep, TenantCaller
from passthru.controller.api.errors import ERROR_RESPONSES
from passthru.controller.api.fields import MAX_NAME
from passthru.controller.api.paging import Links, Page, PagedList, memory_page, refuse_unknown_query
from passthru.controller.models import EventRow, HostRow, HostStatus, ServerRow, ServerStatus
from passthru.controller.scheduler.index import PoolTally
from passthru.controller.scheduler.service import Scheduler
from passthru.controller.scheduler.shapes import Signature
from passthru.controller.scheduler.snapshot import load_flavors
from passthru.pci.flavor import PciFlavor

router = APIRouter(prefix="/v2/{tenant_id}", tags=["hosts"], responses=ERROR_RESPONSES)


class Usage(BaseModel):
    count: int = 0
    free: int = 0
    used: int = 0

    def add(self, count: int, free: int, used: int) -> None:
        self.count += count
        self.free += free
        self.used += used


class HostUsage(Usage):
    host: str


class FlavorTotal(Usage):
    name: str
    description: str
    spec: dict[str, str]


class FlavorUsage(FlavorTotal):
    hosts: list[HostUsage]


class FlavorUsageList(PagedList):
    pci_flavor_stats: list[FlavorUsage]
    pci_flavor_stats_links: Links


class HostCounts(BaseModel):
    up: int = 0
    down: int = 0


class FleetSummary(BaseModel):
    hosts: HostCounts
    devices: Usage = Field(description="every pooled device of the fleet")
    pci_flavors: list[FlavorTotal] = Field(description="each PCI flavor's devices, by name")
    servers: dict[ServerStatus, int] = Field(description="servers that are not deleted, by "
                                             "status")
    last_event: int | None = Field(description="the newest event's id: ask os-events with "
                                   "after=ID for what happens next")


class FleetSummaryBody(BaseModel):
    summary: FleetSummary


def _fleet(session: Session, scheduler: Scheduler
           ) -> Iterator[tuple[str, bool, list[PoolTally]]]:
    """Every host by name, whether the store has it up, and its pools' counts."""
    statuses = dict(session.execute(select(HostRow.name, HostRow.status)).all())
    tallies = scheduler.pool_tallies()
    for name in sorted(statuses):
        yield name, statuses[name] is HostStatus.UP, tallies.get(name, [])


def _flavor_usages(fleet: Iterator[tuple[str, bool, list[PoolTally]]],
                   flavors: list[PciFlavor], per_host: bool) -> list[FlavorUsage]:
    usages = [FlavorUsage(name=f.name, description=f.description, spec=dict(f.spec), hosts=[])
              for f in flavors]
    matching: dict[Signature, list[int]] = {}
    for name, up, tallies in fleet:
        shares: dict[int, HostUsage] = {}
        for tally in tallies:
            which = matching.get(tally.signature)
            if which is None:
                example = tally.signature.example_pool()
                which = matching[tally.signature] = [
                    i for i, f in enumerate(flavors) if f.matches_pool(example)]
            free = tally.available if up else 0
            for i in which:
                usages[i].add(tally.count, free, tally.used)
                if per_host:
                    shares.setdefault(i, HostUsage(host=name)).add(tally.count, free,
                                                                    tally.used)
        for i, share in shares.items():
            usages[i].hosts.append(share)
    return usages


def _sorted_flavors(session: Session) -> list[PciFlavor]:
    return sorted(load_flavors(session).values(), key=lambda f: (f.name.lower(), f.name))


@router.get("/os-pci-flavor-stats", response_model=FlavorUsageList,
            summary="PCI flavor stats: each PCI flavor's devices across the fleet, free "
                    "(on hosts that are up) and used, in total and per host (admin)")
def pci_flavor_stats(who: TenantCaller, store: StoreDep, scheduler: SchedulerDep, page: Page,
                     name: str | None = Query(None, max_length=MAX_NAME,
                                              description="only this PCI flavor"),
                     ) -> FlavorUsageList:
    """By name, case aside; the marker is a PCI flavor's name."""
    who.require_admin("reading PCI flavor stats")
    with store.read() as session:
        flavors = [f for f in _sorted_flavors(session) if name is None or f.name == name]
        chosen, more = memory_page(flavors, [(f.name.lower(), f.name) for f in flavors],
                                   page, "PCI flavor", "name", lambda m: (m.lower(), m))
        usages = _flavor_usages(_fleet(session, scheduler), chosen, per_host=True)
    return FlavorUsageList(pci_flavor_stats=usages, pci_flavor_stats_links=page.next_links(
        chosen, more, lambda f: f.name))


@router.get("/os-fleet-summary", response_model=FleetSummaryBody,
            dependencies=[Depends(refuse_unknown_query)],
            summary="The fleet in a few numbers: hosts up and down, devices and each PCI "
                    "flavor's free and used, servers by status, the newest event (admin)")
def fleet_summary(who: TenantCaller, store: StoreDep, scheduler: SchedulerDep,
                  ) -> FleetSummaryBody:
    who.require_admin("reading the fleet summary")
    hosts = HostCounts()
    devices = Usage()
    with store.read() as session:
        flavors = _sorted_flavors(session)
        servers = Counter(dict(session.execute(
            select(ServerRow.status, func.count()).where(ServerRow.status != ServerStatus.DELETED)
            .group_by(ServerRow.status)).all()))
        last_event = session.scalar(select(func.max(EventRow.id)))
        fleet = list(_fleet(session, scheduler))
    for _, up, tallies in fleet:
        if up:
            hosts.up += 1
        else:
            hosts.down += 1
        for tally in tallies:
            devices.add(tally.count, tally.available if up else 0, tally.used)
    totals = [FlavorTotal(**usage.model_dump(exclude={"hosts"}))
              for usage in _flavor_usages(iter(fleet), flavors, per_host=False)]
    return FleetSummaryBody(summary=FleetSummary(
        hosts=hosts, devices=devices, pci_flavors=totals, servers=dict(servers),
        last_event=last_event))
