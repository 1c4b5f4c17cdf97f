"""The durable claim: one transaction of conditional updates that succeeds only if every
chosen device is still free and unchanged since the scheduler read it.

Each chosen device is updated `WHERE id = … AND status = 'available' AND generation = …`;
a row count of zero means another claim (from this replica or another) or an inventory
report got there first, and the whole transaction is rolled back. PF/VF relatives of the
chosen devices become unavailable in the same transaction (only those still available,
so a relative already blocked by someone else's VF is left alone). Two replicas that
claim a PF and one of its VFs at once both write both rows, so one of them waits for the
other and then finds its own chosen row changed, or the database breaks the deadlock:
either way exactly one wins.

First of all the claim locks the host row, as inventory reports and frees do
(`host_devices.lock_host`), and goes on only if the host is still up. Without that lock a
free could read the host's devices before this claim commits and, seeing no VF of a PF in
use any more, make the PF available next to the VF this claim takes (the claim leaves an
already unavailable PF alone, so no row lock of its own would stop that write).
Frees go through the store's host rules (`release.py`).

The VM's vCPUs, memory and disk are added to the host's `*_used` columns by one
conditional update that holds only while they stay within the host's capacity (hosts
that report no resources have none and always pass, but are still counted); the amounts
come from the server row itself, so that a free, which subtracts the row's amounts, gives
back exactly what was added. Dedicated CPUs are rows keyed by (host, CPU): a CPU pinned
by another VM meanwhile makes the insert fail, and the claim with it.

Before any host, the claim locks the servers it places and goes on only while they are
still being built: a delete locks its server first too, so a server deleted while its
claim is in flight either has its devices freed after the claim commits, or makes the
claim fail with ServerGoneError. Servers before hosts, in every transaction that takes
both, so that none waits on the other crosswise.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping

from sqlalchemy import ScalarSelect, bindparam, insert, or_, select, update
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.orm import Session

from passthru.controller.events import EventKind
from passthru.controller.models import (
    CpuPinRow,
    DeviceRow,
    EventRow,
    HostRow,
    HostStatus,
    ServerRow,
    ServerStatus,
)
from passthru.controller.scheduler.snapshot import StoredHost
from passthru.controller.wakeups import wake
from passthru.pci.claims import Selection, relatives
from passthru.pci.device import DeviceStatus, PciDevice
from passthru.pci.errors import PassthruError

_DEVICES = DeviceRow.__table__
# Built once: each claim only binds values to these.
_TAKE = (update(_DEVICES)
         .where(_DEVICES.c.id == bindparam("row"), _DEVICES.c.status == DeviceStatus.AVAILABLE,
                _DEVICES.c.generation == bindparam("seen"))
         .values(status=DeviceStatus.CLAIMED, owner=bindparam("owner"),
                 request_id=bindparam("request"), generation=bindparam("seen") + 1))
_BLOCK = (update(_DEVICES)
          .where(_DEVICES.c.id.in_(bindparam("rows", expanding=True)),
                 _DEVICES.c.status == DeviceStatus.AVAILABLE)
          .values(status=DeviceStatus.UNAVAILABLE, generation=_DEVICES.c.generation + 1)
          .returning(_DEVICES.c.address, _DEVICES.c.generation))
_HOSTS = HostRow.__table__
_SERVERS = ServerRow.__table__
_LOCK_SERVERS = (select(_SERVERS.c.uuid, _SERVERS.c.status, _SERVERS.c.host_id)
                 .where(_SERVERS.c.uuid.in_(bindparam("owners", expanding=True)))
                 .order_by(_SERVERS.c.uuid).with_for_update())
_LOCK_HOST = select(_HOSTS.c.status).where(_HOSTS.c.id == bindparam("host")).with_for_update()
_PLACE_SERVER = (update(_SERVERS)
                 .where(_SERVERS.c.uuid == bindparam("owner"))
                 .values(host_id=bindparam("host"), numa_node=bindparam("node"),
                         pinned_cpus=bindparam("cpus")))


def _size_of_owner(column: str) -> ScalarSelect[int]:
    return (select(_SERVERS.c[column]).where(_SERVERS.c.uuid == bindparam("owner"))
            .scalar_subquery())


_SIZE = {column: _size_of_owner(column) for column in ("vcpus", "ram_mb", "disk_gb")}
_COUNT = (update(_HOSTS)
          .where(_HOSTS.c.id == bindparam("host"),
                 *(or_(_HOSTS.c[f"{column}_capacity"].is_(None),
                       _HOSTS.c[f"{column}_used"] + amount <= _HOSTS.c[f"{column}_capacity"])
                   for column, amount in _SIZE.items()))
          .values({f"{column}_used": _HOSTS.c[f"{column}_used"] + amount
                   for column, amount in _SIZE.items()}))
_PIN = insert(CpuPinRow.__table__)
_RECORD = insert(EventRow.__table__)
# PostgreSQL's serialization failure and deadlock: the database picked another winner.
_LOST_RACE_STATES = {"40001", "40P01"}


class LostRaceError(PassthruError):
    """Since the scheduler chose it, a chosen device was taken or changed, its host went
    down or ran out of room, or a chosen CPU was pinned by another VM."""

    def __init__(self, host: str, address: str | None = None,
                 reason: str = "was taken or changed") -> None:
        what = f"device {address} on {host}" if address else f"host {host}"
        super().__init__(f"{what} {reason} since it was chosen; choose again")
        self.host = host


class ServerGoneError(PassthruError):
    """A server was deleted (or placed by someone else) while its devices were being
    claimed: nothing to place."""

    def __init__(self, server: str, what: str = "deleted") -> None:
        super().__init__(f"server {server} was {what} while it was being placed")
        self.server = server


def lock_servers(session: Session, owners: Collection[str]) -> None:
    """Lock the servers a claim places; raises ServerGoneError unless all are being built
    and on no host yet (a server placed again after a failed build could otherwise be
    placed twice, by its spawn's answer and by the build sweep)."""
    found = {uuid: (status, host) for uuid, status, host in session.connection().execute(
        _LOCK_SERVERS, {"owners": sorted(owners)})}
    for owner in sorted(owners):
        status, host = found.get(owner, (None, None))
        if status != ServerStatus.BUILD:
            raise ServerGoneError(owner)
        if host is not None:
            raise ServerGoneError(owner, "placed on another host")


def is_lost_race(error: DBAPIError) -> bool:
    return getattr(error.orig, "sqlstate", None) in _LOST_RACE_STATES


def claim_in_store(session: Session, host: StoredHost, selection: Selection, owner: str,
                   devices: Mapping[str, PciDevice], *, numa_node: int | None = None,
                   cpus: Collection[int] = ()) -> dict[str, int]:
    """Claim the selection for `owner` on `host` (whose devices, for finding relatives,
    are `devices`), count the server's size against the host, pin `cpus` to it and place
    it there (on `numa_node`). Returns the new generation of every device row it changed;
    raises LostRaceError, leaving the caller to roll back, if any chosen device is no
    longer what the scheduler saw, the host has no room left or a CPU was pinned."""
    chosen = sorted(((request_id, device) for request_id, picked in selection.devices.items()
                     for device in picked), key=lambda item: host.refs[item[1].address].id)
    # Plain statements on the session's connection: a claim needs no ORM unit of work.
    connection = session.connection()
    if connection.execute(_LOCK_HOST, {"host": host.id}).scalar_one_or_none() != HostStatus.UP:
        raise LostRaceError(host.name, reason="went down")
    changed: dict[str, int] = {}
    for request_id, device in chosen:
        ref = host.refs[device.address]
        taken = connection.execute(_TAKE, {"row": ref.id, "seen": ref.generation,
                                           "owner": owner, "request": request_id})
        if taken.rowcount != 1:
            raise LostRaceError(host.name, device.address)
        changed[device.address] = ref.generation + 1
    blocked = sorted({host.refs[r.address].id for _, device in chosen
                      for r in relatives(device, devices) if r.address not in changed})
    if blocked:
        changed.update({address: generation for address, generation
                        in connection.execute(_BLOCK, {"rows": blocked})})
    if connection.execute(_COUNT, {"host": host.id, "owner": owner}).rowcount != 1:
        raise LostRaceError(host.name, reason="ran out of room for the VM")
    if cpus:
        try:
            connection.execute(_PIN, [{"host_id": host.id, "cpu": cpu, "server_uuid": owner}
                                      for cpu in sorted(cpus)])
        except IntegrityError:
            raise LostRaceError(host.name, reason="had a chosen CPU pinned by another VM"
                                ) from None
    connection.execute(_PLACE_SERVER, {"owner": owner, "host": host.id, "node": numa_node,
                                       "cpus": sorted(cpus)})
    wake(session, host.name)
    if chosen:
        connection.execute(_RECORD, [
            {"kind": EventKind.DEVICE_CLAIMED, "host": host.name, "device_address": device.address,
             "server": owner, "message": f"claimed for request {request_id}"}
            for request_id, device in chosen])
    return changed
