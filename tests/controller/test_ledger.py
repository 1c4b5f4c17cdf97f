"""The device ledger against the core's rules on the whole host: a claim, an allocation, a
free and an inventory delta that read only the devices involved and their PF/VF family
change the store exactly as the core's rules on every device of the host would, pools
included; and the change records bring the scheduler's index to what a fresh read of
the store gives."""

from __future__ import annotations

import copy
import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from passthru.controller import ledger
from passthru.controller.hosts.reports import report_delta, report_full
from passthru.controller.scheduler.claim import claim_in_store
from passthru.controller.scheduler.service import Scheduler
from passthru.controller.scheduler.snapshot import load_hosts
from passthru.controller.store.db import Store
from passthru.controller.store.mapping import device_from_row
from passthru.controller.store.migrate import upgrade
from passthru.controller.store.models import DeviceRow, HostRow, PciRequestRow, ServerRow
from passthru.pci import lifecycle
from passthru.pci.device import DeviceStatus, DevType, PciDevice
from passthru.pci.fit import Selection
from passthru.pci.inventory import InventoryDelta, apply_delta
from passthru.pci.pool import build_pools
from passthru.pci.request import NumaPolicy, RequestSource

POOL_ATTRS = ("vendor_id", "product_id", "e.*")
OWNERS = 3
_hosts = itertools.count()


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    path: Path = tmp_path_factory.mktemp("ledger") / "store.db"
    store = Store(f"sqlite:///{path}")
    upgrade(store.engine)
    yield store
    store.close()


def _device(address: str, dev_type: DevType, parent: str | None = None,
            group: str = "a") -> PciDevice:
    return PciDevice(address=address, vendor_id="8086", product_id="154c", dev_type=dev_type,
                     parent_addr=parent, numa_node=0, tags={"e.group": group})


@st.composite
def hosts(draw: st.DrawFn) -> list[PciDevice]:
    """PFs with a few VFs each (VFs in two groups, so pools split), plain devices, and VFs
    whose PF the host does not report."""
    devices = []
    for pf in range(draw(st.integers(0, 3))):
        parent = f"0000:0{pf}:00.0"
        devices.append(_device(parent, DevType.PF))
        devices += [_device(f"0000:0{pf}:10.{vf}", DevType.VF, parent,
                            draw(st.sampled_from("ab")))
                    for vf in range(draw(st.integers(0, 4)))]
    devices += [_device(f"0000:8{i}:00.0", DevType.PCI) for i in range(draw(st.integers(0, 2)))]
    devices += [_device(f"0000:9{i}:10.0", DevType.VF, f"0000:9{i}:00.0")
                for i in range(draw(st.integers(0, 1)))]
    return devices


OPS = st.lists(st.tuples(st.sampled_from(["claim", "claim", "allocate", "free", "remove",
                                          "retag", "add"]),
                         st.integers(0, OWNERS - 1), st.integers(0, 10**6)),
               min_size=1, max_size=12)


def _owners(store: Store, host: str) -> list[tuple[str, str]]:
    """A server and a PCI request row per owner (devices refer to both)."""
    made = []
    with store.write() as session:
        for i in range(OWNERS):
            server = ServerRow(name=f"{host}-vm{i}", project="p")
            session.add(server)
            session.flush()
            request = PciRequestRow(uuid=f"{server.uuid[:30]}-r{i}", server_uuid=server.uuid,
                                    position=0, count=1, alternatives=[],
                                    source=RequestSource.FLAVOR, numa_policy=NumaPolicy.LEGACY)
            session.add(request)
            made.append((server.uuid, request.uuid))
    return made


def _stored(store: Store, host: str) -> tuple[dict[str, PciDevice], list[set[str]],
                                               dict[str, int]]:
    """The host's devices as the store has them, its pools' members, the generations."""
    with store.read() as session:
        rows = session.scalars(select(DeviceRow).join(HostRow).where(HostRow.name == host)
                               .order_by(DeviceRow.id)).all()
        groups: dict[int, set[str]] = {}
        for row in rows:
            if row.pool_id is not None:
                groups.setdefault(row.pool_id, set()).add(row.address)
        return ({row.address: device_from_row(row) for row in rows}, list(groups.values()),
                {row.address: row.generation for row in rows})


def _groups(devices: dict[str, PciDevice]) -> list[set[str]]:
    live = [d for d in devices.values() if d.status is not DeviceStatus.REMOVED]
    return [{d.address for d in pool.devices} for pool in build_pools(live, POOL_ATTRS)]


def _state(device: PciDevice) -> tuple[object, ...]:
    return (device.status, device.owner, device.request_id, device.missing, device.tags)


def _sorted(groups: list[set[str]]) -> list[list[str]]:
    return sorted(sorted(group) for group in groups)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(devices=hosts(), ops=OPS, data=st.data())
def test_the_ledger_on_a_family_changes_what_the_core_on_the_whole_host_does(
        store: Store, devices: list[PciDevice], ops: list[tuple[str, int, int]],
        data: st.DataObject) -> None:
    host = f"h{next(_hosts)}"
    with store.write() as session:
        report_full(session, host, devices, POOL_ATTRS)
    owners = _owners(store, host)
    whole = {d.address: d for d in _stored(store, host)[0].values()}
    scheduler = Scheduler(store)
    scheduler.load()
    scheduler.index.loaded(host)  # its devices held from now on, kept up by records alone
    extra = itertools.count()
    for op, who, pick in ops:
        owner, request_id = owners[who]
        present = sorted(a for a, d in whole.items() if d.status is not DeviceStatus.REMOVED)
        with store.write() as session:
            if op == "claim":
                free = sorted(a for a, d in whole.items() if d.status is DeviceStatus.AVAILABLE)
                if not free:
                    continue
                chosen = data.draw(st.lists(st.sampled_from(free), min_size=1, max_size=2,
                                            unique=True))
                selection = Selection({request_id: tuple(whole[a] for a in chosen)}, None)
                try:
                    lifecycle.claim(copy.deepcopy(whole), selection, owner)
                except lifecycle.ClaimError:
                    continue  # a PF and its VF at once: the core refuses, so would the store
                lifecycle.claim(whole, selection, owner)
                loaded = next(load_hosts(session, [host]))
                claim_in_store(session, loaded, selection, owner)
            elif op == "allocate":
                lifecycle.allocate(whole, owner)
                row = ledger.lock_host(session, host)
                assert row is not None
                ledger.allocate(session, row, owner, "vm")
            elif op == "free":
                lifecycle.free(whole, owner)
                ledger.free(session, owner, "vm")
            else:
                row = ledger.lock_host(session, host)
                assert row is not None
                delta = InventoryDelta()
                if op == "remove" and present:
                    delta.removed = [present[pick % len(present)]]
                elif op == "retag" and present:
                    device = whole[present[pick % len(present)]]
                    changed = PciDevice(**{**{f: getattr(device, f) for f in (
                        "address", "vendor_id", "product_id", "dev_type", "parent_addr",
                        "numa_node")}, "tags": {"e.group": "b" if device.tags.get(
                            "e.group") == "a" else "a"}})
                    delta.changed = [changed]
                elif op == "add":
                    pfs = [a for a in present if whole[a].dev_type is DevType.PF]
                    parent = pfs[pick % len(pfs)] if pfs else None
                    address = f"0000:7{next(extra)}:10.0"
                    delta.added = [_device(address, DevType.VF, parent) if parent
                                   else _device(address, DevType.PCI)]
                if not delta:
                    continue
                apply_delta(whole, delta)
                report_delta(session, host, delta, POOL_ATTRS, row.generation)
            changes = ledger.changes_of(session)
        scheduler.apply(changes)

        stored, pools, generations = _stored(store, host)
        assert {a: _state(d) for a, d in stored.items()} == {
            a: _state(d) for a, d in whole.items()}, (op, who)
        assert _sorted(pools) == _sorted(_groups(whole)), (op, who)
        # The index, kept up by the records alone, is what a fresh read of the store gives.
        entry = scheduler.index.hosts[host]
        assert {a: _state(d) for a, d in entry.devices.items()} == {
            a: _state(d) for a, d in whole.items() if d.status is not DeviceStatus.REMOVED}
        assert _sorted([{d.address for d in p.devices} for p in entry.pools]) == _sorted(pools)
        assert all(slot.free == slot.pool.free for slot in entry.slots)
        assert {a: r.generation for a, r in scheduler._hosts[host].refs.items()} == generations
    fresh = Scheduler(store)
    fresh.load()
    assert ({a: _state(d) for a, d in fresh.index.loaded(host).devices.items()}
            == {a: _state(d) for a, d in scheduler.index.hosts[host].devices.items()})
