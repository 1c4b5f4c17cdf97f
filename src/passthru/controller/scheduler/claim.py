"""The durable claim: one transaction that succeeds only if every chosen device is still
free and unchanged since the scheduler read it, the host is up and has room.

The devices are claimed by the device ledger (`controller.ledger.claim`): it reads the
chosen rows and their PF/VF relatives, refuses (LostRaceError) unless each chosen row is
still at the generation the scheduler saw, runs the core's claim rules on them and writes
the rows that changed, each on the generation it was read at; the whole transaction is
then rolled back. Two replicas that claim a PF and one of its VFs at once both lock the
host row first, so the second reads what the first committed and finds its chosen row
changed: exactly one wins.

First of all the claim locks the host row, as inventory reports and frees do
(`ledger.lock_host`), and goes on only if the host is still up.

The VM's vCPUs, memory and disk are added to the host's `*_used` columns by one
conditional update that holds only while they stay within the host's capacity (hosts
that report no resources have none and always pass, but are still counted); the amounts
come from the server row itself, so that a free, which subtracts the row's amounts, gives
back exactly what was added. Dedicated CPUs are rows keyed by (host, CPU): a CPU pinned
by another VM meanwhile makes the insert fail, and the claim with it.

A multi-create claims all its servers together (`claim_all_in_store`), each statement
serving every server of the batch, whatever hosts they went to: one locks the hosts (in
name order), the ledger reads the chosen rows with their families in one and writes those
that changed in one, one counts the sizes and one places the servers. The room is one
conditional update per server sent at once: a row count short of the batch tells that
some host ran out, not which, so every host of the batch is read again before it is
placed again.

Before any host, the claim locks the servers it places and goes on only while they are
still being built: a delete locks its server first too, so a server deleted while its
claim is in flight either has its devices freed after the claim commits, or makes the
claim fail with ServerGoneError. Servers before hosts, in every transaction that takes
both, so that none waits on the other crosswise. A boot, which claims in the transaction
that inserted its servers, holds them already: no other transaction sees them yet, so
it does not read them again.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass

from sqlalchemy import ScalarSelect, bindparam, insert, or_, select, update
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.orm import Session

from passthru.controller import ledger
from passthru.controller.ledger import HostChanges, LostRaceError
from passthru.controller.store.models import CpuPinRow, HostRow, HostStatus, ServerRow, ServerStatus
from passthru.controller.store.stored_host import StoredHost
from passthru.controller.store.wakeups import wake
from passthru.errors import ConflictError
from passthru.pci.fit import Selection

_HOSTS = HostRow.__table__
_SERVERS = ServerRow.__table__
_LOCK_SERVERS = (select(_SERVERS.c.uuid, _SERVERS.c.status, _SERVERS.c.host_id)
                 .where(_SERVERS.c.uuid.in_(bindparam("owners", expanding=True)))
                 .order_by(_SERVERS.c.uuid).with_for_update())
_LOCK_HOSTS = (select(_HOSTS.c.id, _HOSTS.c.status)
               .where(_HOSTS.c.id.in_(bindparam("hosts", expanding=True)))
               .order_by(_HOSTS.c.name).with_for_update())
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
# PostgreSQL's serialization failure and deadlock: the database picked another winner.
_LOST_RACE_STATES = {"40001", "40P01"}


class ServerGoneError(ConflictError):
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


def claim_in_store(session: Session, host: StoredHost, selection: Selection, owner: str, *,
                   numa_node: int | None = None, cpus: Collection[int] = ()) -> HostChanges:
    """Claim the selection for `owner` on `host` (the ledger's `claim`: its rows must be at
    the generations `host.refs` holds), count the server's size against the host, pin
    `cpus` to it and place it there (on `numa_node`). Returns the ledger's change record
    for the host; raises LostRaceError, leaving the caller to roll back, if any chosen
    device is no longer what the scheduler saw, the host has no room left or a CPU was
    pinned."""
    return claim_all_in_store(session, [Claim(host, selection, owner, numa_node, cpus)])[0]


@dataclass(frozen=True, slots=True)
class Claim:
    """One server's placement to claim: its devices on `host`, its NUMA node and CPUs."""

    host: StoredHost
    selection: Selection
    owner: str
    numa_node: int | None = None
    cpus: Collection[int] = ()


def claim_all_in_store(session: Session, wanted: Sequence[Claim]) -> list[HostChanges]:
    """`claim_in_store` of each claim (servers locked by the caller), in statements that
    each serve every claim: the hosts locked (in name order) by one, the devices read by
    one and written by one (the ledger's `claim_many`), the servers' sizes counted by one
    and the servers placed by one. Returns the change record of each host; a claim that
    fails raises LostRaceError (naming every host of the batch when the database cannot
    tell which one ran out of room), leaving the caller to roll back."""
    # Plain statements on the session's connection: a claim needs no ORM unit of work.
    connection = session.connection()
    hosts = {claim.host.id: claim.host for claim in wanted}
    status = dict(connection.execute(_LOCK_HOSTS, {"hosts": sorted(hosts)}).all())
    for host in sorted(hosts.values(), key=lambda h: h.name):
        if status.get(host.id) != HostStatus.UP:
            raise LostRaceError(host.name, reason="went down")
    changes = ledger.claim_many(session, [(c.host, c.selection, c.owner) for c in wanted])
    if connection.execute(_COUNT, [{"host": c.host.id, "owner": c.owner} for c in wanted]
                          ).rowcount != len(wanted):
        names = sorted({c.host.name for c in wanted})
        raise LostRaceError(names[0] if len(names) == 1 else ", ".join(names),
                            reason="ran out of room for the VM", hosts=names)
    for claim in wanted:
        if claim.cpus:
            try:
                connection.execute(_PIN, [{"host_id": claim.host.id, "cpu": cpu,
                                           "server_uuid": claim.owner}
                                          for cpu in sorted(claim.cpus)])
            except IntegrityError:
                raise LostRaceError(claim.host.name, reason="had a chosen CPU pinned by "
                                    "another VM") from None
    connection.execute(_PLACE_SERVER, [{"owner": c.owner, "host": c.host.id,
                                        "node": c.numa_node, "cpus": sorted(c.cpus)}
                                       for c in wanted])
    for host in hosts.values():
        wake(session, host.name)
    return changes
