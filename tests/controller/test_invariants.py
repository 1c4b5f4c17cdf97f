"""The fleet invariants of `tests.support.invariants` find what they promise to: a
healthy fleet passes, and each kind of breakage is named."""

from __future__ import annotations

from sqlalchemy import update

from passthru.controller.settings import Settings
from passthru.controller.store.db import Store
from passthru.controller.store.models import DeviceRow, HostRow, ServerRow, ServerStatus
from passthru.host.attach import domain_name
from tests.controller.conftest import Api
from tests.controller.test_boot_attach import Compute, boot, catalog, compute  # noqa: F401
from tests.support.invariants import problems


def test_a_healthy_fleet_passes_and_each_breakage_is_named(
        catalog: Api, compute: Compute, settings: Settings) -> None:  # noqa: F811
    gpu = boot(catalog, "vm-gpu", "m1.gpu")
    vf = boot(catalog, "vm-vf", uuid="prod", vnic_type="direct")
    building = boot(catalog, "vm-building")
    compute.worker.run_orders()
    url = settings.database_url
    running = {"compute-1": {"test", domain_name(gpu["id"]), domain_name(vf["id"])}}
    store = Store(url)
    with store.write() as session:
        session.execute(update(ServerRow).where(ServerRow.uuid == building["id"])
                        .values(status=ServerStatus.BUILD))
    assert problems(url, running) == [
        f"server vm-building ({building['id']}) is still BUILD on compute-1"]

    with store.write() as session:
        session.execute(update(ServerRow).where(ServerRow.uuid == building["id"])
                        .values(status=ServerStatus.ACTIVE))
        # A server failed without freeing what it holds, a count gone wrong.
        session.execute(update(ServerRow).where(ServerRow.uuid == gpu["id"])
                        .values(status=ServerStatus.ERROR))
        session.execute(update(HostRow).values(vcpus_used=HostRow.vcpus_used + 1))
        # A device owned by another server than the one it was claimed for.
        [device] = session.scalars(
            update(DeviceRow).where(DeviceRow.owner == vf["id"])
            .values(owner=building["id"]).returning(DeviceRow.address)).all()
    store.close()
    found = problems(url, {"compute-1": {*running["compute-1"], "passthru-orphan"}})

    def named(*words: str) -> bool:
        return any(all(word in problem for word in words) for problem in found)

    assert named("held by server vm-gpu", "which is ERROR")
    assert named(f"device {device}", f"owned by server {building['id']} but held for request")
    assert named("host compute-1 counts vcpus/ram_mb/disk_gb used")
    assert named("domain passthru-orphan on compute-1", "an orphan")
    assert named("domain", domain_name(gpu["id"]), "an orphan")
    assert named("server vm-building", "is ACTIVE on compute-1 but the host has no domain")
