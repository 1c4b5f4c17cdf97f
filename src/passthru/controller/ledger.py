"""The device ledger: every change to a device row goes through here — claims, allocations,
frees (with the PF/VF relatives they block and unblock), inventory reports (devices added,
updated, removed, missing) — and each hands back what it changed.

Each operation reads only the rows it needs: the owner's devices (`devices.owner` is
indexed) or the chosen ones, plus their PF/VF family (the parent PF of each VF, the VFs of
each PF, and for a free the parent's other VFs, through the indexed
`(host_id, parent_addr)`), never the whole host, except a full inventory report, which
compares everything the host has. The core's rules (`pci.lifecycle`, `pci.inventory`) run on
that partial set: they only ever look at a device's relatives, so on the family they
change exactly what they would on the whole host (tests/controller/test_ledger.py proves
it). The SQL works out no rule of its own.

Only rows that changed are written, each by a conditional UPDATE on the generation it was
read at; a row count short of what was sent means someone changed a row in between, and
the operation raises (StaleDataError, answered 409; a claim raises LostRaceError) for the
caller's transaction to roll back. A device's pool is worked out again only when one of
its pool-defining fields changed or it joined or left the host's pools (inventory), never
on a status change; a pool no device is left in is deleted.

Lock order, in every transaction that takes more than one of these:
1. server rows (SELECT ... FOR UPDATE, in uuid order);
2. host rows, in host name order (`lock_host`; SQLite's write lock is taken up front by
   BEGIN IMMEDIATE, so there it is the one lock);
3. device rows, each written in row id order, only under the lock of its host.
Device rows are only written under their host's lock, so the generation guard catches a
writer that broke this rule rather than an ordinary race.

Every operation adds a `HostChanges` record per host to the session (`changes_of`): the
changed devices' new state and row generation, and the pools' new membership when it
changed. After the transaction commits the API hands them to the scheduler
(`Scheduler.apply`), which brings its index up to date in O(changed) instead of reading
the host again.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import islice
from typing import Any, TypeVar

from sqlalchemy import and_, bindparam, delete, exists, insert, or_, select, update
from sqlalchemy.orm import Session
from sqlalchemy.orm.exc import StaleDataError

from passthru.controller.enums import EventKind
from passthru.controller.store.events import record
from passthru.controller.store.mapping import (
    DEVICE_FIELDS,
    device_from_values,
    device_values,
    pool_key_text,
    pool_record,
)
from passthru.controller.store.models import (
    CpuPinRow,
    DeviceRow,
    EventRow,
    HostRow,
    PciRequestRow,
    PoolRow,
)
from passthru.controller.store.stored_host import DeviceRef, StoredHost, stored_host
from passthru.errors import ConflictError, NotFoundError
from passthru.pci import lifecycle
from passthru.pci.device import DeviceStatus, DevType, PciDevice
from passthru.pci.fit import Selection
from passthru.pci.pool import build_pools, empty_pool, pool_key
from passthru.pci.resources import VmSize

T = TypeVar("T")

_DEVICES = DeviceRow.__table__
_HOSTS = HostRow.__table__
_POOLS = PoolRow.__table__
_EVENTS = EventRow.__table__
# The ids of rows an IN list names at once: well below SQLite's bound on parameters.
_CHUNK = 1000
_SESSION_KEY = "passthru.ledger"

_COLUMNS = (_DEVICES.c.id, _DEVICES.c.generation, _DEVICES.c.pool_id,
            *(_DEVICES.c[name] for name in DEVICE_FIELDS))
_NEW = tuple(f"new_{name}" for name in DEVICE_FIELDS)
_GUARD = (_DEVICES.c.id == bindparam("row_id"), _DEVICES.c.generation == bindparam("seen"))
#: A changed row: every column, for devices whose discovered fields or pool changed.
_UPDATE = (update(_DEVICES).where(*_GUARD)
           .values(generation=bindparam("seen") + 1, pool_id=bindparam("new_pool_id"),
                   **{name: bindparam(new) for name, new in zip(DEVICE_FIELDS, _NEW,
                                                                 strict=True)}))
#: A row whose use changed only (claim, allocate, free, block, taint): five columns.
_USE = ("status", "owner", "request_id", "missing", "taint")
_SET_USE = (update(_DEVICES).where(*_GUARD)
            .values(generation=bindparam("seen") + 1,
                    **{name: bindparam(f"new_{name}") for name in _USE}))
_USE_AT = tuple(DEVICE_FIELDS.index(name) for name in _USE)
_IN_USE = (DeviceStatus.CLAIMED, DeviceStatus.ALLOCATED)


class LostRaceError(ConflictError):
    """Since the scheduler chose it, a chosen device was taken or changed, its host went
    down or ran out of room, or a chosen CPU was pinned by another VM."""

    def __init__(self, host: str, address: str | None = None,
                 reason: str = "was taken or changed", *,
                 hosts: Sequence[str] | None = None) -> None:
        what = (f"device {address} on {host}" if address
                else f"one of hosts {host}" if hosts and len(hosts) > 1 else f"host {host}")
        super().__init__(f"{what} {reason} since it was chosen; choose again")
        self.host = host
        #: The hosts to read again (more than one when the database cannot tell which).
        self.hosts = list(hosts) if hosts else [host]


# --- change records ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DeviceChange:
    """A device row as a transaction left it: its new state and generation."""

    device: PciDevice
    row_id: int
    generation: int


@dataclass(frozen=True, slots=True)
class Released:
    """What a server gave back of its host besides devices: its size and pinned CPUs."""

    owner: str
    size: VmSize
    cpus: tuple[int, ...]


@dataclass(slots=True)
class HostChanges:
    """What one transaction changed on one host, for the scheduler's index."""

    host: str
    devices: list[DeviceChange] = field(default_factory=list)
    #: The pool attributes, when devices joined, left or moved pools: the index regroups
    #: those devices (None: every changed device stayed in its pool).
    regrouped: tuple[str, ...] | None = None
    #: The whole host as it now stands (full inventory reports), adopted as it is.
    whole: StoredHost | None = None
    released: list[Released] = field(default_factory=list)
    #: The host went up (True) or down (False).
    up: bool | None = None

    @property
    def removed(self) -> list[str]:
        """The addresses of devices that left the host's pools."""
        return [c.device.address for c in self.devices
                if c.device.status is DeviceStatus.REMOVED]


def changes_of(session: Session) -> list[HostChanges]:
    """The change records this session's operations made so far, one per host; hand them
    to `Scheduler.apply` once the transaction committed."""
    return list(_records(session).values())


def take_changes(session: Session) -> list[HostChanges]:
    """The change records made so far, removed from the session: those of a savepoint,
    handed on when it is released, or dropped when it is rolled back."""
    return list(session.info.pop(_SESSION_KEY, {}).values())


def with_changes(work: Callable[[Session], T]
                 ) -> Callable[[Session], tuple[T, list[HostChanges]]]:
    """`work`, returning the change records it made beside its result, taken from the
    session, so that works sharing one transaction (`Store.grouped`) each hand on their
    own; a work that raises drops its records with its savepoint."""
    def run(session: Session) -> tuple[T, list[HostChanges]]:
        try:
            result = work(session)
        finally:
            changes = take_changes(session)
        return result, changes
    return run


def _records(session: Session) -> dict[str, HostChanges]:
    records: dict[str, HostChanges] = session.info.setdefault(_SESSION_KEY, {})
    return records


def changes_for(session: Session, host: str) -> HostChanges:
    """This session's record for `host`, made on first use."""
    records = _records(session)
    found = records.get(host)
    if found is None:
        found = records[host] = HostChanges(host)
    return found


def record_released(session: Session, host: str, owner: str, size: VmSize,
                    cpus: Iterable[int]) -> None:
    changes_for(session, host).released.append(Released(owner, size, tuple(sorted(cpus))))


def record_down(session: Session, hosts: Iterable[str]) -> None:
    for name in hosts:
        changes_for(session, name).up = False


# --- locks ------------------------------------------------------------------------------


_LOCK_HOST = select(HostRow).where(HostRow.name == bindparam("name")).with_for_update()


def lock_host(session: Session, name: str) -> HostRow | None:
    """The host row, locked for the rest of this transaction."""
    return session.scalars(_LOCK_HOST, {"name": name}).one_or_none()


def lock_or_create_host(session: Session, name: str) -> HostRow:
    host = lock_host(session, name)
    if host is None:
        host = HostRow(name=name, pool_attrs=[])
        session.add(host)
        session.flush()
        record(session, EventKind.HOST_ADDED, host=name, message="first report from its agent")
    return host


# --- reading part of a host -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Stored:
    """A device row as it was read: what a save compares with and updates on."""

    id: int
    generation: int
    pool_id: int | None
    values: tuple[Any, ...]


@dataclass(slots=True)
class Part:
    """Some device rows of one host as core devices (changed in place by core rules), with
    what each row was read at."""

    host_id: int
    host: str
    devices: dict[str, PciDevice] = field(default_factory=dict)
    stored: dict[str, _Stored] = field(default_factory=dict)

    def add_rows(self, rows: Iterable[Any]) -> None:
        """Rows of `_COLUMNS`, taken in row id order; a device read already is kept as it
        is."""
        for row in sorted(rows, key=lambda row: row[0]):
            device = device_from_values(row[3:])
            if device.address not in self.devices:
                self.devices[device.address] = device
                self.stored[device.address] = _Stored(row[0], row[1], row[2], tuple(row[3:]))


# Built once: each read only binds values to these. The partial reads have no ORDER BY
# (`add_rows` sorts): ordered by id, SQLite walks the host's whole `host_id` index for
# its rowid order instead of looking the rows up by address or parent.
_HOST_ROWS = select(*_COLUMNS).where(_DEVICES.c.host_id == bindparam("host"))
_ROWS = _HOST_ROWS.order_by(_DEVICES.c.id)
_BY_ADDRESS = _HOST_ROWS.where(_DEVICES.c.address.in_(bindparam("addresses", expanding=True)))
_BY_OWNER = _HOST_ROWS.where(_DEVICES.c.owner == bindparam("owner"))
# The host's term in each branch of the OR, for SQLite to look each up in its own index.
_ON_HOST = _DEVICES.c.host_id == bindparam("host")
_FAMILY = select(*_COLUMNS).where(or_(
    and_(_ON_HOST, _DEVICES.c.address.in_(bindparam("wanted", expanding=True))),
    and_(_ON_HOST, _DEVICES.c.parent_addr.in_(bindparam("heads", expanding=True)))))
_SIBLING_IN_USE = _HOST_ROWS.where(_DEVICES.c.parent_addr == bindparam("parent"),
                                   _DEVICES.c.owner != bindparam("owner"),
                                   _DEVICES.c.status.in_(_IN_USE)).limit(1)
_POOL_IDS = select(_POOLS.c.key, _POOLS.c.id).where(
    _POOLS.c.host_id == bindparam("host"), _POOLS.c.key.in_(bindparam("keys", expanding=True)))
_HOSTS_HOLDING = (select(HostRow.name).join(DeviceRow, DeviceRow.host_id == HostRow.id)
                  .where(DeviceRow.owner == bindparam("owner")).distinct())


def _chunks(items: Collection[str]) -> Iterator[list[str]]:
    iterator = iter(sorted(items))
    while chunk := list(islice(iterator, _CHUNK)):
        yield chunk


def read_host(session: Session, host_id: int, name: str) -> Part:
    """Every device row of a host (a full report compares them all)."""
    part = Part(host_id, name)
    part.add_rows(session.connection().execute(_ROWS, {"host": host_id}))
    return part


def read_addresses(session: Session, host_id: int, name: str, addresses: Collection[str],
                   *, around: Iterable[PciDevice] = ()) -> Part:
    """The named devices of a host with their family (see `add_family`), and the family
    of the devices `around` too (those a report brings, which have no row yet)."""
    part = Part(host_id, name)
    for chunk in _chunks(addresses):
        part.add_rows(session.connection().execute(
            _BY_ADDRESS, {"host": host_id, "addresses": chunk}))
    add_family(session, part, siblings=None, around=around)
    return part


def read_owner(session: Session, host_id: int, name: str, owner: str) -> Part:
    """The devices `owner` holds on a host with their family, and what a free needs to
    tell whether a parent stays blocked (`add_family`)."""
    part = Part(host_id, name)
    part.add_rows(session.connection().execute(_BY_OWNER, {"host": host_id, "owner": owner}))
    add_family(session, part, siblings=owner)
    return part


def add_family(session: Session, part: Part, *, siblings: str | None,
               around: Iterable[PciDevice] = ()) -> None:
    """Add the PF/VF relatives of the devices read so far (and of those `around`): the
    parent of each VF and the VFs of each other device (`lifecycle.relatives`; a device that
    stops being a PF must not leave VFs behind, `inventory.check_delta`). With
    `siblings` (the owner being freed), also one VF in use by another owner of each
    parent, if there is one: all of the parents' relatives that `lifecycle.free` could
    find in use, as far as its answer goes."""
    seeds = [*part.devices.values(), *around]
    parents = {d.parent_addr for d in seeds
               if d.dev_type is DevType.VF and d.parent_addr is not None}
    heads = {d.address for d in seeds if d.dev_type is not DevType.VF}
    wanted = parents - part.devices.keys()
    for chunk in _chunks(wanted | heads):
        part.add_rows(session.connection().execute(_FAMILY, {
            "host": part.host_id, "wanted": [a for a in chunk if a in wanted],
            "heads": [a for a in chunk if a in heads]}))
    if siblings is not None:
        # Whether a parent stays blocked turns on whether any of its other VFs is in use
        # (`lifecycle.free`): one such VF of another owner tells it, whatever the PF's size.
        for parent in sorted(parents - heads):
            part.add_rows(session.connection().execute(_SIBLING_IN_USE, {
                "host": part.host_id, "parent": parent, "owner": siblings}))


# --- writing what changed ---------------------------------------------------------------


def save(session: Session, part: Part, pool_attrs: Sequence[str] | None, *,
         changed: Iterable[str] | None = None, regroup_all: bool = False) -> HostChanges:
    """Write back every device of `part` that changed (each on the generation it was read
    at), putting those that joined, left or moved pools in their pools (by `pool_attrs`;
    None for operations that never move a device, claims and allocations); with
    `regroup_all` (the host's pool attributes changed) every live device is put in its
    pool again. `changed` names the devices the core's rules changed (None: compare
    them all). Returns the host's change record (also kept in the session)."""
    session.flush()  # the ORM's pending changes first: the statements below follow
    used: list[tuple[str, _Stored]] = []
    kept: list[tuple[str, _Stored]] = []
    moved: list[tuple[str, _Stored | None]] = []
    for address in part.devices if changed is None or regroup_all else dict.fromkeys(changed):
        device = part.devices[address]
        was = part.stored.get(address)
        if was is None:
            moved.append((address, None))
            continue
        values = device_values(device)
        if values == was.values and not regroup_all:
            continue
        if not regroup_all and _same_pool_fields(values, was.values):
            used.append((address, was))
        elif not regroup_all and _same_pool(device, was, pool_attrs):
            kept.append((address, was))
        else:
            moved.append((address, was))
    found, regrouped = _pools_for(session, part, moved, pool_attrs)
    pool_of: dict[str, int | None] = {**found, **{a: was.pool_id for a, was in kept}}
    writes: list[tuple[str, _Stored, int | None]] = []
    _guarded(session, _SET_USE, part.host, [_use_row(part, address, was)
                                             for address, was in used])
    writes += [(address, was, was.pool_id) for address, was in used]
    rows = []
    for address, was in [*kept, *moved]:
        if was is None:
            continue
        values, pool_id = device_values(part.devices[address]), pool_of.get(address)
        if values == was.values and pool_id == was.pool_id:
            continue
        rows.append({"row_id": was.id, "seen": was.generation, "new_pool_id": pool_id,
                     **dict(zip(_NEW, values, strict=True))})
        writes.append((address, was, pool_id))
    _guarded(session, _UPDATE, part.host, rows)
    changes = changes_for(session, part.host)
    for address, was, pool_id in writes:
        _saved(part, changes, address, was.id, was.generation + 1, pool_id)
    new = [address for address, was in moved if was is None]
    if new:
        inserted = session.connection().execute(
            insert(_DEVICES).returning(_DEVICES.c.id, _DEVICES.c.address),
            [{**dict(zip(DEVICE_FIELDS, device_values(part.devices[a]), strict=True)),
              "host_id": part.host_id, "pool_id": pool_of.get(a), "generation": 1}
             for a in new]).all()
        for row_id, address in inserted:
            _saved(part, changes, address, row_id, 1, pool_of.get(address))
    left = {was.pool_id for address, was in moved if was is not None
            and was.pool_id is not None and was.pool_id != pool_of.get(address)}
    if left:
        # A pool is deleted once no device row is left in it.
        session.connection().execute(delete(_POOLS).where(
            _POOLS.c.id.in_(sorted(left)), ~exists().where(_DEVICES.c.pool_id == _POOLS.c.id)))
    if regrouped:
        changes.regrouped = tuple(pool_attrs or ())
    _expire(session, {part.host_id})
    return changes


def _use_row(part: Part, address: str, was: _Stored) -> dict[str, Any]:
    """The `_SET_USE` parameters of a device whose use changed."""
    device = part.devices[address]
    return {"row_id": was.id, "seen": was.generation,
            **{f"new_{name}": getattr(device, name) for name in _USE}}


def _same_pool_fields(values: tuple[Any, ...], was: tuple[Any, ...]) -> bool:
    """Whether only a device's use changed, and not whether it is in the host's pools."""
    return (all(values[i] == was[i] for i in range(len(values)) if i not in _USE_AT)
            and (values[_STATUS] is DeviceStatus.REMOVED) == (was[_STATUS] is DeviceStatus.REMOVED))


def _same_pool(device: PciDevice, was: _Stored, pool_attrs: Sequence[str] | None) -> bool:
    """Whether a live device whose discovered fields changed (a driver, say) stays in the
    pool its row is in, so that no pool needs looking up."""
    if pool_attrs is None or was.pool_id is None or device.status is DeviceStatus.REMOVED:
        return False
    old = device_from_values(was.values)
    return (old.status is not DeviceStatus.REMOVED
            and pool_key(device, pool_attrs) == pool_key(old, pool_attrs))


def _saved(part: Part, changes: HostChanges, address: str, row_id: int, generation: int,
           pool_id: int | None) -> None:
    device = part.devices[address]
    values = device_values(device)
    part.stored[address] = _Stored(row_id, generation, pool_id, values)
    changes.devices.append(DeviceChange(device_from_values(values), row_id, generation))


_STATUS = DEVICE_FIELDS.index("status")


def _guarded(session: Session, statement: Any, host: str, rows: list[dict[str, Any]]) -> None:
    if not rows:
        return
    rows.sort(key=lambda row: row["row_id"])  # device rows locked in id order
    updated = session.connection().execute(statement, rows).rowcount
    if updated != len(rows):
        raise StaleDataError(f"{len(rows) - updated} devices of host {host} changed while "
                             "this was applied")


def _pools_for(session: Session, part: Part, moved: Sequence[tuple[str, _Stored | None]],
               pool_attrs: Sequence[str] | None) -> tuple[dict[str, int], bool]:
    """The pool id of each live device that may have moved (new pools inserted), and
    whether any device joined, left or changed pools."""
    if not moved:
        return {}, False
    live = [a for a, _ in moved if part.devices[a].status is not DeviceStatus.REMOVED]
    if live and pool_attrs is None:
        raise AssertionError(f"devices of host {part.host} would move pools with no pool "
                             "attributes to group them by")
    keys = {a: pool_key(part.devices[a], pool_attrs or ()) for a in live}
    texts = {key: pool_key_text(key) for key in set(keys.values())}
    existing: dict[str, int] = {}
    for chunk in _chunks(set(texts.values())):
        existing.update(dict(session.connection().execute(
            _POOL_IDS, {"host": part.host_id, "keys": chunk}).all()))
    fresh = [pool_record(part.host_id, empty_pool(key)) for key, text in texts.items()
             if text not in existing]
    if fresh:
        existing.update(dict(session.connection().execute(
            insert(_POOLS).returning(_POOLS.c.key, _POOLS.c.id), fresh).all()))
    pool_of = {address: existing[texts[key]] for address, key in keys.items()}
    regrouped = any(was is None or was.pool_id != pool_of.get(a) for a, was in moved)
    return pool_of, regrouped


def _expire(session: Session, host_ids: Collection[int]) -> None:
    """ORM objects this session holds of what the statements changed are read again."""
    for obj in list(session.identity_map.values()):
        if isinstance(obj, DeviceRow | PoolRow | PciRequestRow):
            session.expire(obj)
        elif isinstance(obj, HostRow) and obj.id in host_ids:
            session.expire(obj, ["pools", "devices"])


def _events(session: Session, host: str, kind: EventKind, owner: str | None,
            messages: Mapping[str, str]) -> None:
    if messages:
        session.connection().execute(insert(_EVENTS), [
            {"kind": str(kind), "host": host, "device_address": address, "server": owner,
             "message": message} for address, message in messages.items()])


# --- the operations ---------------------------------------------------------------------


def claim(session: Session, host: StoredHost, selection: Selection, owner: str
          ) -> HostChanges:
    """available → claimed for the selected devices of `host` (whose row the caller
    locked), their relatives blocked. Each chosen row must still be at the generation the
    scheduler saw (`host.refs`) and available; else LostRaceError."""
    return claim_many(session, [(host, selection, owner)])[0]


#: The chosen rows (by id) and the PF/VF family of each chosen device, on the hosts
#: claimed on: rows of any of those hosts at any of the addresses (parents) or below any
#: of the heads, which `_read_claimed` narrows to each host's own. (A `(host_id, address)
#: IN` of pairs or an ORDER BY makes SQLite walk each host's whole `host_id` index.)
_HOSTS_IN = _DEVICES.c.host_id.in_(bindparam("hosts", expanding=True))
_CLAIMED_ROWS = select(_DEVICES.c.host_id, *_COLUMNS).where(or_(
    _DEVICES.c.id.in_(bindparam("ids", expanding=True)),
    and_(_HOSTS_IN, _DEVICES.c.address.in_(bindparam("wanted", expanding=True))),
    and_(_HOSTS_IN, _DEVICES.c.parent_addr.in_(bindparam("heads", expanding=True)))))
_ADDRESS_AT = 1 + len(_COLUMNS) - len(DEVICE_FIELDS) + DEVICE_FIELDS.index("address")
_PARENT_AT = 1 + len(_COLUMNS) - len(DEVICE_FIELDS) + DEVICE_FIELDS.index("parent_addr")
#: Claims whose rows one statement reads: well below SQLite's bound on parameters.
_CLAIMS_READ = 300


def claim_many(session: Session, wanted: Sequence[tuple[StoredHost, Selection, str]]
               ) -> list[HostChanges]:
    """`claim` of each (host, selection, owner), on hosts the caller locked, in one read
    of their rows and one write of those that changed (for a multi-create, whatever
    hosts its servers went to). Returns the change record of each host, in the order
    they come first in `wanted`; any chosen device no longer as the scheduler saw it
    raises LostRaceError, leaving the caller to roll back."""
    parts: dict[int, Part] = {}
    for first in range(0, len(wanted), _CLAIMS_READ):
        _read_claimed(session, wanted[first:first + _CLAIMS_READ], parts)
    changed: dict[int, dict[str, None]] = {}
    events: list[dict[str, Any]] = []
    for host, selection, owner in wanted:
        part = parts[host.id]
        chosen = {device.address: request_id
                  for request_id, picked in selection.devices.items() for device in picked}
        for address in sorted(chosen, key=lambda a: host.refs[a].id):
            was = part.stored.get(address)
            if was is None or was.generation != host.refs[address].generation:
                raise LostRaceError(host.name, address)
        try:
            done = lifecycle.claim(part.devices, selection, owner)
        except lifecycle.ClaimError:
            raise LostRaceError(host.name, next(
                a for a in chosen if not part.devices[a].is_free)) from None
        changed.setdefault(host.id, {}).update(dict.fromkeys(d.address for d in done))
        events += [{"kind": str(EventKind.DEVICE_CLAIMED), "host": host.name,
                    "device_address": address, "server": owner,
                    "message": f"claimed for request {request_id}"}
                   for address, request_id in chosen.items()]
    session.flush()  # the ORM's pending changes first: the statements below follow
    # A claim changes the use of devices only, never their pools.
    writes = [(parts[host_id], address, parts[host_id].stored[address])
              for host_id, addresses in changed.items() for address in addresses
              if device_values(parts[host_id].devices[address])
              != parts[host_id].stored[address].values]
    _guarded(session, _SET_USE, ", ".join(sorted({part.host for part, _, _ in writes})),
             [_use_row(part, address, was) for part, address, was in writes])
    records = {part.host: changes_for(session, part.host) for part in parts.values()}
    for part, address, was in writes:
        _saved(part, records[part.host], address, was.id, was.generation + 1, was.pool_id)
    if events:
        session.connection().execute(insert(_EVENTS), events)
    _expire(session, parts.keys())
    return [records[parts[host_id].host] for host_id in dict.fromkeys(
        host.id for host, _, _ in wanted)]


def _read_claimed(session: Session, wanted: Sequence[tuple[StoredHost, Selection, str]],
                  parts: dict[int, Part]) -> None:
    """Read the chosen rows of `wanted` and their family (`add_family`'s, found from the
    devices as the scheduler saw them: a row read at another generation is refused
    anyway) into `parts`, one per host."""
    ids: set[int] = set()
    hosts: set[int] = set()
    family: set[tuple[int, str]] = set()
    heads: set[tuple[int, str]] = set()
    for host, selection, _ in wanted:
        parts.setdefault(host.id, Part(host.id, host.name))
        hosts.add(host.id)
        seeds = [device for picked in selection.devices.values() for device in picked]
        chosen = {device.address for device in seeds}
        ids.update(host.refs[address].id for address in chosen)
        family.update((host.id, d.parent_addr) for d in seeds if d.dev_type is DevType.VF
                      and d.parent_addr is not None and d.parent_addr not in chosen)
        heads.update((host.id, d.address) for d in seeds if d.dev_type is not DevType.VF)
    rows: dict[int, list[Any]] = {}
    for row in session.connection().execute(_CLAIMED_ROWS, {
            "ids": sorted(ids), "hosts": sorted(hosts),
            "wanted": sorted({address for _, address in family}),
            "heads": sorted({address for _, address in heads})}):
        if (row[1] in ids or (row[0], row[_ADDRESS_AT]) in family
                or (row[0], row[_PARENT_AT]) in heads):
            rows.setdefault(row[0], []).append(row[1:])
    for host_id, found in rows.items():
        parts[host_id].add_rows(found)


def allocate(session: Session, host: HostRow, owner: str, server_name: str) -> list[str]:
    """claimed → allocated for what `owner` holds on `host` (locked by the caller), once
    its VM runs; returns their addresses."""
    part = Part(host.id, host.name)
    part.add_rows(session.connection().execute(_BY_OWNER, {"host": host.id, "owner": owner}))
    allocated = [d.address for d in lifecycle.allocate(part.devices, owner)]
    save(session, part, None, changed=allocated)
    _events(session, host.name, EventKind.DEVICE_ALLOCATED, owner,
            dict.fromkeys(allocated, f"allocated to server {server_name}"))
    return allocated


def hosts_holding(session: Session, owner: str) -> list[str]:
    """The hosts where `owner` holds devices, in name order (the order hosts are locked
    in, so that two frees never lock hosts crosswise)."""
    return sorted(session.scalars(_HOSTS_HOLDING, {"owner": owner}))


#: The hosts where an owner holds devices, locked in name order: the columns a free needs,
#: in one statement, no ORM object.
_LOCK_HOLDING = (select(_HOSTS.c.id, _HOSTS.c.name, _HOSTS.c.pool_attrs)
                 .where(_HOSTS.c.id.in_(select(_DEVICES.c.host_id)
                                        .where(_DEVICES.c.owner == bindparam("owner"))))
                 .order_by(_HOSTS.c.name).with_for_update())


def free(session: Session, owner: str, server_name: str) -> list[str]:
    """Free every device `owner` holds, on whatever host, unblocking relatives nothing
    else blocks; devices gone from their host become removed. Returns their addresses."""
    session.flush()  # the ORM's pending changes first: the statements below follow
    freed: list[str] = []
    for host_id, name, pool_attrs in session.connection().execute(
            _LOCK_HOLDING, {"owner": owner}).all():
        part = read_owner(session, host_id, name, owner)
        held = sorted(a for a, d in part.devices.items() if d.owner == owner)
        untainted = {a for a in held if part.devices[a].taint is None}
        changed = lifecycle.free(part.devices, owner)
        save(session, part, pool_attrs, changed=[d.address for d in changed])
        _events(session, name, EventKind.DEVICE_FREED, owner,
                dict.fromkeys(held, f"freed by server {server_name}"))
        _events(session, name, EventKind.DEVICE_TAINTED, owner, {
            a: str(part.devices[a].taint) for a in sorted(untainted)
            if part.devices[a].taint is not None})
        freed += held
    return freed


def set_taint(session: Session, host: HostRow, address: str, taint: str | None
              ) -> tuple[PciDevice, int | None, int]:
    """Taint one device of `host` (locked by the caller) with `taint`, a reason, or clear
    its taint (None); the device, its pool and its row's generation as they are then. A VM
    that holds it keeps it; no new one is given it while tainted."""
    part = read_addresses(session, host.id, host.name, [address])
    device = part.devices.get(address)
    if device is None or device.status is DeviceStatus.REMOVED:
        raise NotFoundError(f"host {host.name} has no device {address} (list them with "
                            f"passthru pci-device-list --host {host.name})")
    was = device.taint
    if was != taint:
        device.taint = taint
        save(session, part, None, changed=[address])
        kind = EventKind.DEVICE_TAINTED if taint is not None else EventKind.DEVICE_CLEARED
        _events(session, host.name, kind, device.owner,
                {address: taint if taint is not None else f"taint cleared (it was: {was})"})
    stored = part.stored[address]
    return device, stored.pool_id, stored.generation


def whole_host(session: Session, host: HostRow, part: Part) -> StoredHost:
    """The host as the scheduler holds it, from a whole-host `part` just saved: its pools
    grouped in memory, the rows' ids and generations, capacity, use and pinned CPUs."""
    pinned = set(session.scalars(select(CpuPinRow.cpu).where(CpuPinRow.host_id == host.id)))
    stored = stored_host(host, pinned)
    live = [d for d in part.devices.values() if d.status is not DeviceStatus.REMOVED]
    stored.pools = build_pools(live, host.pool_attrs)
    stored.refs = {a: DeviceRef(s.id, s.generation) for a, s in part.stored.items()}
    return stored
