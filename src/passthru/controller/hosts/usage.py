"""How many devices are free and used, pool by pool, as the store has them: the
definition the views follow.

`free` counts what a VM could get now: available devices that are not tainted, on a host
that is up, as the scheduler sees them. `used` counts claimed and allocated ones; what is
neither (blocked by a PF/VF relative, tainted, or free on a host that is down) is the rest
of `count`. Counted by the
database, so no device row is loaded, but every one is read: at 10k hosts that takes
seconds. The views answer from the scheduler's index instead (`index.PoolTally`, counted
the same way); this is the store's answer they are checked against.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from passthru.controller.store.mapping import pool_from_row
from passthru.controller.store.models import DeviceRow, HostRow, HostStatus, PoolRow
from passthru.pci.device import DeviceStatus
from passthru.pci.pool import Pool


@dataclass(frozen=True, slots=True)
class PoolUsage:
    host: str
    pool_id: int
    pool: Pool  # its attributes; devices are counted, not loaded
    count: int
    free: int
    used: int


def pool_usages(session: Session, host: str | None = None) -> list[PoolUsage]:
    """Every pool (of `host`, if given) with its counts, by host name then pool."""
    pools = (select(PoolRow, HostRow.name, HostRow.status).join(HostRow)
             .order_by(HostRow.name, PoolRow.id))
    untainted = DeviceRow.taint.is_(None)
    counted = (select(DeviceRow.pool_id, DeviceRow.status, untainted, func.count())
               .where(DeviceRow.pool_id.is_not(None), DeviceRow.status != DeviceStatus.REMOVED)
               .group_by(DeviceRow.pool_id, DeviceRow.status, untainted))
    if host is not None:
        pools = pools.where(HostRow.name == host)
        counted = counted.join(HostRow, DeviceRow.host_id == HostRow.id).where(
            HostRow.name == host)
    statuses: dict[int | None, Counter[tuple[DeviceStatus, bool]]] = {}
    for pool_id, status, free_of_taint, number in session.execute(counted):
        statuses.setdefault(pool_id, Counter())[status, bool(free_of_taint)] = number
    usages = []
    for row, name, host_status in session.execute(pools):
        counts = statuses.get(row.id, Counter())
        up = host_status is HostStatus.UP
        usages.append(PoolUsage(
            host=name, pool_id=row.id, pool=pool_from_row(row, devices=()),
            count=counts.total(), free=counts[DeviceStatus.AVAILABLE, True] if up else 0,
            used=sum(number for (status, _), number in counts.items()
                     if status in (DeviceStatus.CLAIMED, DeviceStatus.ALLOCATED))))
    return usages
