"""The fleet at a glance, for admins: how many devices of each PCI flavor are free and
used (in total, and per host for a page of hosts), and a summary of the whole fleet small
enough to poll.

A pool counts for every flavor that matches it (`PciFlavor.matches_pool`, as the
scheduler matches), so overlapping flavors share devices; whether a flavor matches is
asked once per pool signature, and the fleet's totals are summed per signature by the
scheduler's index (`Scheduler.pool_totals`) in one pass over its pools, made again only
once the index moved. The counts are the index's, counted as `controller.hosts.usage` counts
the store; whether a host is up is the store's. Nothing here reads a device row.

Both answers carry an ETag (`api.conditional`): a poller that sends it back in
If-None-Match gets a 304 while nothing changed.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from fastapi import APIRouter, Depends, Query, Request, Response
from pydantic import BaseModel, Field

from passthru.controller.api.conditional import NOT_MODIFIED, answer
from passthru.controller.api.deps import SchedulerDep, StoreDep, TenantCaller
from passthru.controller.api.errors import ERROR_RESPONSES
from passthru.controller.api.fields import MAX_NAME
from passthru.controller.api.paging import Links, Page, PagedList, refuse_unknown_query
from passthru.controller.hosts.views import (
    host_count,
    host_names_page,
    hosts_not_up,
    newest_event,
    servers_by_status,
)
from passthru.controller.scheduler.index import PoolTally
from passthru.controller.scheduler.snapshot import load_flavors
from passthru.controller.store.models import ServerStatus
from passthru.pci.flavor import PciFlavor
from passthru.pci.pool import Signature

router = APIRouter(prefix="/v2/{tenant_id}", tags=["hosts"], responses=ERROR_RESPONSES)


class Usage(BaseModel):
    count: int = 0
    free: int = 0
    used: int = 0


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


class _Matching:
    """Which flavors (by position) match a pool signature, asked once per signature."""

    def __init__(self, flavors: list[PciFlavor]) -> None:
        self.flavors = flavors
        self.known: dict[Signature, list[int]] = {}

    def __call__(self, signature: Signature) -> list[int]:
        which = self.known.get(signature)
        if which is None:
            which = self.known[signature] = [
                i for i, f in enumerate(self.flavors) if f.matches_pool(signature)]
        return which


def _flavor_totals(matching: _Matching, totals: dict[Signature, list[int]]
                   ) -> list[list[int]]:
    """[devices, free, used] of each flavor, from the fleet's totals per signature."""
    sums = [[0, 0, 0] for _ in matching.flavors]
    for signature, (count, free, used) in totals.items():
        for i in matching(signature):
            sums[i][0] += count
            sums[i][1] += free
            sums[i][2] += used
    return sums


def _host_shares(matching: _Matching, names: list[str], down: set[str],
                 tallies: dict[str, list[PoolTally]]) -> list[list[HostUsage]]:
    """Each flavor's share of each of these hosts (only hosts with a matching pool)."""
    shares: list[list[HostUsage]] = [[] for _ in matching.flavors]
    for name in names:
        mine: dict[int, list[int]] = {}
        for tally in tallies.get(name, ()):
            free = 0 if name in down else tally.available
            for i in matching(tally.signature):
                share = mine.setdefault(i, [0, 0, 0])
                share[0] += tally.count
                share[1] += free
                share[2] += tally.used
        for i, (count, free, used) in mine.items():
            shares[i].append(HostUsage(host=name, count=count, free=free, used=used))
    return shares


def _sorted(flavors: Iterable[PciFlavor]) -> list[PciFlavor]:
    return sorted(flavors, key=lambda f: (f.name.lower(), f.name))


def _total(flavor: PciFlavor, sums: list[int]) -> dict[str, Any]:
    count, free, used = sums
    return {"name": flavor.name, "description": flavor.description, "spec": dict(flavor.spec),
            "count": count, "free": free, "used": used}


@router.get("/os-pci-flavor-stats", response_model=FlavorUsageList, responses=NOT_MODIFIED,
            summary="PCI flavor stats: each PCI flavor's devices across the fleet, free "
                    "(on hosts that are up) and used, in total and per host (admin)")
def pci_flavor_stats(who: TenantCaller, store: StoreDep, scheduler: SchedulerDep, page: Page,
                     name: str | None = Query(None, max_length=MAX_NAME,
                                              description="only this PCI flavor"),
                     ) -> Response:
    """Every PCI flavor (by name, case aside) with its totals over the whole fleet, and
    its share of each host of a page of hosts: the page, its limit and marker are of
    hosts (by name; the marker is a host's name), so that no answer holds every host.
    A client that wants every host's share follows the next link, and meets every
    flavor again with its shares of the next hosts."""
    who.require_admin("reading PCI flavor stats")
    with store.read() as session:
        flavors = [f for f in _sorted(load_flavors(session).values())
                   if name is None or f.name == name]
        down = hosts_not_up(session)
        names, more = host_names_page(session, page)
    matching = _Matching(flavors)
    sums = _flavor_totals(matching, scheduler.pool_totals(down))
    shares = _host_shares(matching, names, down, scheduler.pool_tallies(names))
    return answer(page.request, FlavorUsageList(
        pci_flavor_stats=[FlavorUsage(**_total(f, total), hosts=hosts)
                          for f, total, hosts in zip(flavors, sums, shares, strict=True)],
        pci_flavor_stats_links=page.next_links(names, more, lambda host: host)))


@router.get("/os-fleet-summary", response_model=FleetSummaryBody, responses=NOT_MODIFIED,
            dependencies=[Depends(refuse_unknown_query)],
            summary="The fleet in a few numbers: hosts up and down, devices and each PCI "
                    "flavor's free and used, servers by status, the newest event (admin)")
def fleet_summary(request: Request, who: TenantCaller, store: StoreDep,
                  scheduler: SchedulerDep) -> Response:
    """Small enough to poll; send its ETag back in If-None-Match for a 304 while the
    fleet is at rest."""
    who.require_admin("reading the fleet summary")
    with store.read() as session:
        flavors = _sorted(load_flavors(session).values())
        servers = servers_by_status(session)
        hosts = host_count(session)
        last_event = newest_event(session)
        down = hosts_not_up(session)
    totals = scheduler.pool_totals(down)
    count, free, used = (sum(t[k] for t in totals.values()) for k in range(3))
    sums = _flavor_totals(_Matching(flavors), totals)
    return answer(request, FleetSummaryBody(summary=FleetSummary(
        hosts=HostCounts(up=hosts - len(down), down=len(down)),
        devices=Usage(count=count, free=free, used=used),
        pci_flavors=[FlavorTotal(**_total(f, total)) for f, total in zip(flavors, sums,
                                                                          strict=True)],
        servers=servers, last_event=last_event)))
