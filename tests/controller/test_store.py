"""The store on SQLite and PostgreSQL: schema, device mapping, reports, generations, frees."""

from __future__ import annotations

from dataclasses import fields, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect, select, text
from sqlalchemy.orm.exc import StaleDataError

from passthru.controller import ledger
from passthru.controller.hosts.reports import (
    StaleInventoryError,
    heartbeat,
    mark_silent_hosts_down,
    report_delta,
    report_full,
)
from passthru.controller.servers.release import free_devices
from passthru.controller.store.db import Store
from passthru.controller.store.mapping import DEVICE_FIELDS, device_from_row, request_from_row
from passthru.controller.store.migrate import upgrade
from passthru.controller.store.models import (
    Base,
    DeviceRow,
    EventRow,
    HostRow,
    HostStatus,
    PciRequestRow,
    PoolRow,
    ServerRow,
)
from passthru.pci.device import DeviceStatus, DevType, PciDevice
from passthru.pci.fit import Selection
from passthru.pci.inventory import InventoryDelta
from passthru.pci.lifecycle import claim
from passthru.pci.request import NumaPolicy, PciRequest, RequestSource

POOL_ATTRS = ("vendor_id", "product_id", "e.*")


def nic(address: str, dev_type: DevType = DevType.VF, parent: str | None = "0000:0a:00.0",
        physnet: str = "physnet1") -> PciDevice:
    return PciDevice(address=address, vendor_id="8086", product_id="154c", dev_type=dev_type,
                     parent_addr=parent if dev_type is DevType.VF else None, numa_node=0,
                     tags={"e.physical_network": physnet})


PF = nic("0000:0a:00.0", DevType.PF)
VFS = [nic(f"0000:0a:10.{i}") for i in range(3)]
GPU = PciDevice(address="0000:81:00.0", vendor_id="10de", product_id="1db4", numa_node=1,
                dev_class="030200", tags={"e.group": "gpu"})


def devices_of(store: Store, host: str) -> dict[str, DeviceRow]:
    with store.read() as session:
        rows = session.scalars(select(DeviceRow).join(HostRow).where(HostRow.name == host))
        return {row.address: row for row in rows}


def test_migrations_build_exactly_the_models_schema(store: Store) -> None:
    with store.engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        assert compare_metadata(context, Base.metadata) == []


def test_every_device_field_has_a_column_and_survives_a_round_trip(store: Store) -> None:
    columns = {c.key for c in inspect(DeviceRow).columns}
    assert set(DEVICE_FIELDS) <= columns
    full = PciDevice(
        address="0000:0a:10.1", vendor_id="8086", product_id="154c", dev_type=DevType.VF,
        dev_class="020000", subsystem_vendor_id="8086", subsystem_device_id="0000",
        parent_addr="0000:0a:00.0", numa_node=1, iommu_group=42, driver="iavf",
        netdev="ens1f0v1", vendor_name="Intel", product_name="X710 VF", sriov_totalvfs=None,
        sriov_numvfs=None, tags={"e.physical_network": "physnet1", "e.group": "a"})
    assert {f.name for f in fields(full)} == set(DEVICE_FIELDS)
    with store.write() as session:
        report_full(session, "c1", [full], POOL_ATTRS)
    stored = device_from_row(devices_of(store, "c1")[full.address])
    assert stored == full


def test_a_full_report_stores_devices_and_pools_that_partition_them(store: Store) -> None:
    with store.write() as session:
        host = report_full(session, "c1", [PF, *VFS, GPU], POOL_ATTRS)
        generation = host.generation
    rows = devices_of(store, "c1")
    assert set(rows) == {PF.address, GPU.address, *(v.address for v in VFS)}
    with store.read() as session:
        pools = session.scalars(select(PoolRow)).all()
        members = {p.id: sorted(d.address for d in p.devices) for p in pools}
        kinds = sorted((p.dev_type.value, p.parent_addr or "") for p in pools)
    assert sorted(a for m in members.values() for a in m) == sorted(rows)
    assert kinds == [("type-PCI", ""), ("type-PF", ""), ("type-VF", PF.address)]
    vf_pool = rows[VFS[0].address].pool_id
    assert vf_pool is not None
    assert members[vf_pool] == [v.address for v in VFS]
    assert generation == 1


def test_an_unchanged_report_changes_nothing_and_a_change_bumps_generations(
        store: Store) -> None:
    with store.write() as session:
        report_full(session, "c1", [GPU, *VFS], POOL_ATTRS)
    before = {a: r.generation for a, r in devices_of(store, "c1").items()}
    with store.write() as session:
        assert report_full(session, "c1", [GPU, *VFS], POOL_ATTRS).generation == 1
    assert {a: r.generation for a, r in devices_of(store, "c1").items()} == before
    moved = replace(GPU, numa_node=0)
    with store.write() as session:
        assert report_full(session, "c1", [moved, *VFS], POOL_ATTRS).generation == 2
    after = devices_of(store, "c1")
    assert after[GPU.address].generation == before[GPU.address] + 1
    assert after[GPU.address].numa_node == 0
    assert after[VFS[0].address].generation == before[VFS[0].address]


def _claim_gpu(store: Store, server_uuid: str) -> str:
    """Claim GPU for a new server through the core rules; returns the request id."""
    request = PciRequest(count=1, alternatives=("bigGPU",))
    with store.write() as session:
        session.add(ServerRow(uuid=server_uuid, name="vm", project="p"))
        session.add(PciRequestRow(uuid=request.request_id, server_uuid=server_uuid, position=0,
                                  count=1, alternatives=["bigGPU"], source=RequestSource.FLAVOR,
                                  numa_policy=NumaPolicy.LEGACY))
        session.flush()
        host = ledger.lock_host(session, "c1")
        assert host is not None
        part = ledger.read_host(session, host.id, host.name)
        picked = {request.request_id: (part.devices[GPU.address],)}
        claim(part.devices, Selection(picked, None), server_uuid)
        ledger.save(session, part, None)
    return request.request_id


def test_a_requests_devices_are_found_from_the_request(store: Store) -> None:
    with store.write() as session:
        report_full(session, "c1", [GPU, *VFS], POOL_ATTRS)
    request_id = _claim_gpu(store, "11111111-1111-1111-1111-111111111111")
    with store.read() as session:
        row = session.get(PciRequestRow, request_id)
        assert row is not None
        assert [d.address for d in row.devices] == [GPU.address]
        assert request_from_row(row).alternatives == ("bigGPU",)


def test_a_removed_device_in_use_is_kept_until_freed(store: Store) -> None:
    server = "22222222-2222-2222-2222-222222222222"
    with store.write() as session:
        report_full(session, "c1", [GPU, *VFS], POOL_ATTRS)
    _claim_gpu(store, server)
    with store.write() as session:
        report_full(session, "c1", VFS[1:], POOL_ATTRS)
    rows = devices_of(store, "c1")
    assert (rows[GPU.address].status, rows[GPU.address].missing) == (DeviceStatus.CLAIMED, True)
    assert rows[VFS[0].address].status is DeviceStatus.REMOVED
    assert rows[VFS[0].address].pool_id is None
    with store.write() as session:
        freed = free_devices(session, session.get_one(ServerRow, server))
    assert freed == [GPU.address]
    gpu = devices_of(store, "c1")[GPU.address]
    assert (gpu.status, gpu.owner, gpu.request_id) == (DeviceStatus.REMOVED, None, None)
    with store.read() as session:
        kinds = session.scalars(select(EventRow.kind).order_by(EventRow.id)).all()
    assert kinds.count("device-added") == 4
    assert "device-missing" in kinds and "device-freed" in kinds


def test_another_card_under_a_claimed_device_is_an_alarm_that_says_what_changed(
        store: Store) -> None:
    with store.write() as session:
        report_full(session, "c1", [GPU, *VFS], POOL_ATTRS)
    _claim_gpu(store, "33333333-3333-3333-3333-333333333333")
    swapped = replace(GPU, product_id="2236", driver="nvidia")
    with store.write() as session:
        report_full(session, "c1", [swapped, *VFS], POOL_ATTRS)
    with store.read() as session:
        alarm = session.scalars(select(EventRow).where(
            EventRow.kind == "device-identity-changed")).one()
    assert (alarm.host, alarm.device_address) == ("c1", GPU.address)
    assert alarm.message == (
        f"product_id {GPU.product_id} → 2236; driver none → nvidia, while server "
        "33333333-3333-3333-3333-333333333333 holds it: check what was put in that slot; "
        "the device is tainted until cleared")
    gpu = devices_of(store, "c1")[GPU.address]
    assert (gpu.status, gpu.taint) == (DeviceStatus.CLAIMED, (
        "identity changed while server 33333333-3333-3333-3333-333333333333 held it: "
        f"product_id {GPU.product_id} → 2236; driver none → nvidia"))


def test_a_delta_applies_on_its_generation_only(store: Store) -> None:
    with store.write() as session:
        generation = report_full(session, "c1", [GPU], POOL_ATTRS).generation
    added = InventoryDelta(added=[VFS[0]])
    with store.write() as session:
        after = report_delta(session, "c1", added, POOL_ATTRS, generation).generation
    assert after == generation + 1
    assert set(devices_of(store, "c1")) == {GPU.address, VFS[0].address}
    with pytest.raises(StaleInventoryError, match="send a full report"), store.write() as s:
        report_delta(s, "c1", InventoryDelta(removed=[GPU.address]), POOL_ATTRS, generation)
    assert devices_of(store, "c1")[GPU.address].status is DeviceStatus.AVAILABLE


def test_writing_a_device_read_before_someone_else_changed_it_fails(store: Store) -> None:
    with store.write() as session:
        report_full(session, "c1", [GPU], POOL_ATTRS)
    with store.read() as session:
        stale = session.scalars(select(DeviceRow)).one()
    with store.write() as session:
        fresh = session.scalars(select(DeviceRow)).one()
        fresh.status = DeviceStatus.CLAIMED
    with pytest.raises(StaleDataError), store.write() as session:
        mine = session.merge(stale, load=False)
        mine.status = DeviceStatus.UNAVAILABLE
    row = devices_of(store, "c1")[GPU.address]
    assert (row.status, row.generation) == (DeviceStatus.CLAIMED, 2)


def test_hosts_that_stop_heart_beating_go_down_and_come_back(store: Store) -> None:
    start = datetime(2025, 1, 1, tzinfo=UTC)
    with store.write() as session:
        heartbeat(session, "c1", start)
        heartbeat(session, "c2", start + timedelta(seconds=100))
    with store.write() as session:
        down = mark_silent_hosts_down(session, 60, now=start + timedelta(seconds=120))
    assert down == ["c1"]
    with store.write() as session:
        assert mark_silent_hosts_down(session, 60, now=start + timedelta(seconds=121)) == []
        heartbeat(session, "c1", start + timedelta(seconds=130))
    with store.read() as session:
        status = {name: state for name, state in session.execute(
            select(HostRow.name, HostRow.status))}
        kinds = session.scalars(select(EventRow.kind).order_by(EventRow.id)).all()
    assert status == {"c1": HostStatus.UP, "c2": HostStatus.UP}
    assert kinds == ["host-added", "host-added", "host-down", "host-up"]


def test_sqlite_runs_in_wal_mode_with_foreign_keys_and_readers_pass_a_writer(
        tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'store.sqlite'}")
    upgrade(store.engine)
    with store.write() as writer:
        assert writer.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert writer.execute(text("PRAGMA foreign_keys")).scalar() == 1
        writer.add(HostRow(name="c1", pool_attrs=[]))
        writer.flush()
        # A reader does not queue behind the writer's lock; it sees the last commit.
        with store.read() as reader:
            assert reader.scalars(select(HostRow.name)).all() == []
    with store.read() as reader:
        assert reader.scalars(select(HostRow.name)).all() == ["c1"]
    store.close()
