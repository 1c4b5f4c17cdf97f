"""What host agents call: inventory reports (full or delta) and heart-beats.

A full report replaces what the controller knows of the host; a delta carries only the
devices added, changed and removed since the generation the agent last got back, and is
refused with 409 when the store moved on (the agent then sends a full report). Pools are
grouped here from the reported `pool_attrs` with the same core function the agent uses.
"""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter
from pydantic import BaseModel, Field, StrictInt

from passthru.controller.api.deps import Caller, StoreDep
from passthru.controller.api.errors import ERROR_RESPONSES
from passthru.controller.api.fields import Key
from passthru.controller.models import HostRow, HostStatus
from passthru.controller.reports import heartbeat, report_delta, report_full
from passthru.pci.device import PciDevice
from passthru.pci.inventory import InventoryDelta
from passthru.pci.pool import DEFAULT_POOL_ATTRS

router = APIRouter(prefix="/v2/agent/hosts/{host}", tags=["agent"], responses=ERROR_RESPONSES)

PoolAttrs = list[Key]
_POOL_ATTRS = Field(list(DEFAULT_POOL_ATTRS), max_length=64,
                    description="the host's pci_flavor_attrs; 'e.*' stands for every tag")


class FullInventory(BaseModel):
    pool_attrs: PoolAttrs = _POOL_ATTRS
    devices: list[PciDevice] = Field(max_length=65536)


class DeltaInventory(BaseModel):
    base_generation: StrictInt = Field(description="the generation the last report returned")
    pool_attrs: PoolAttrs = _POOL_ATTRS
    delta: InventoryDelta


class InventoryAccepted(BaseModel):
    host: str
    generation: int


class HostAlive(BaseModel):
    host: str
    status: HostStatus
    last_heartbeat: datetime | None
    generation: int = Field(description="the inventory generation the controller holds; an "
                            "agent whose last report got another one reports in full")


def _accepted(row: HostRow) -> InventoryAccepted:
    return InventoryAccepted(host=row.name, generation=row.generation)


@router.put("/inventory", response_model=InventoryAccepted,
            summary="Report the host's whole inventory")
def put_inventory(host: str, who: Caller, store: StoreDep, body: FullInventory
                  ) -> InventoryAccepted:
    who.require_host(host)
    with store.write() as session:
        return _accepted(report_full(session, host, body.devices, body.pool_attrs))


@router.patch("/inventory", response_model=InventoryAccepted,
              summary="Report what changed since the last accepted report")
def patch_inventory(host: str, who: Caller, store: StoreDep, body: DeltaInventory
                    ) -> InventoryAccepted:
    who.require_host(host)
    with store.write() as session:
        return _accepted(report_delta(session, host, body.delta, body.pool_attrs,
                                      body.base_generation))


@router.post("/heartbeat", response_model=HostAlive, summary="The host's agent is alive")
def post_heartbeat(host: str, who: Caller, store: StoreDep) -> HostAlive:
    who.require_host(host)
    with store.write() as session:
        row = heartbeat(session, host)
        return HostAlive(host=row.name, status=row.status, last_heartbeat=row.last_heartbeat,
                         generation=row.generation)
