"""OpenStack Placement's own `allocation_candidates` over the benchmark fleet; prints JSON.

Runs inside the virtualenv `bench/nova_baseline.py` makes for it (openstack-placement
from PyPI and its oslo.* libraries, kept apart from passthru's), never in passthru's:

    bench/.venv-placement/bin/python bench/placement_candidates.py HOSTS LIMIT REPEATS

The fleet is the one `bench/scheduler.py` schedules onto, as Nova reports it with PCI in
Placement (`[pci] report_in_placement`): per compute node a root provider with VCPU,
MEMORY_MB and DISK_GB; a child provider per PCI device Nova tracks, its inventory in the
device's resource class: each A100 (10de:20b5) is one provider with CUSTOM_PCI_10DE_20B5
total 1, each X710 PF's VFs (8086:154c) one provider with CUSTOM_PCI_8086_154C total 32 and
the trait of its physical network (CUSTOM_PHYSNET_PHYSNET1 / _PHYSNET2). The rows are
written with bulk inserts into Placement's own schema (its models' `create_all`) in a
SQLite file; standard resource classes and traits are synced by Placement's own
`ensure_sync`, custom ones created through its objects.

Each VM kind becomes the request Nova's scheduler sends (`GET /allocation_candidates`,
here `AllocationCandidates.get_by_requests`, the code behind that handler): an unnumbered
group for the flavor's VCPU/MEMORY_MB/DISK_GB, and one numbered same-provider group per
requested device (`resources_pci-...`; a count of 2 is two groups, since each GPU is its
own provider), `group_policy=none`, `limit` = Nova's `[scheduler] max_placement_results`.
NUMA affinity is not in Placement; Nova's NUMATopologyFilter checks it afterwards.
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time
import uuid
import warnings
from pathlib import Path
from typing import Any

warnings.filterwarnings("ignore")

from oslo_config import cfg  # noqa: E402
from placement import conf, context, db_api, lib  # noqa: E402
from placement.db.sqlalchemy import migration, models  # noqa: E402
from placement.objects import allocation_candidate as ac_obj  # noqa: E402
from placement.objects import resource_class as rc_obj  # noqa: E402
from placement.objects import trait as trait_obj  # noqa: E402
from sqlalchemy import insert  # noqa: E402

GPU_RC = "CUSTOM_PCI_10DE_20B5"
VF_RC = "CUSTOM_PCI_8086_154C"
PHYSNETS = ("CUSTOM_PHYSNET_PHYSNET1", "CUSTOM_PHYSNET_PHYSNET2")
VFS_PER_PF, GPUS = 32, 4
FLAVOR = {"VCPU": 1, "MEMORY_MB": 512, "DISK_GB": 1}
HOST = {"VCPU": (64, 16.0), "MEMORY_MB": (262144, 1.0), "DISK_GB": (2000, 1.0)}


def open_placement(db: Path) -> Any:
    config = cfg.ConfigOpts()
    conf.register_opts(config)
    config.set_default("connection", f"sqlite:///{db}", group="placement_database")
    config([], default_config_files=[])
    db_api.configure(config)
    migration.create_schema(db_api.get_placement_engine())
    ctx = context.RequestContext()
    ctx.config = config
    trait_obj.ensure_sync(ctx)
    rc_obj.ensure_sync(ctx)
    for name in (GPU_RC, VF_RC):
        rc_obj.ResourceClass(ctx, name=name).create()
    for name in PHYSNETS:
        trait_obj.Trait(ctx, name=name).create()
    return ctx


def populate(ctx: Any, hosts: int) -> dict[str, int]:
    rc = {name: ctx.rc_cache.id_from_string(name) for name in (*HOST, GPU_RC, VF_RC)}
    trait = {name: ctx.trait_cache.id_from_string(name) for name in PHYSNETS}
    providers: list[dict[str, object]] = []
    inventories: list[dict[str, object]] = []
    traits: list[dict[str, object]] = []

    def provider(name: str, root: int | None) -> int:
        number = len(providers) + 1
        providers.append({"id": number, "uuid": str(uuid.uuid4()), "name": name,
                          "generation": 1, "root_provider_id": root or number,
                          "parent_provider_id": root})
        return number

    def inventory(rp: int, name: str, total: int, ratio: float = 1.0) -> None:
        inventories.append({"resource_provider_id": rp, "resource_class_id": rc[name],
                            "total": total, "reserved": 0, "min_unit": 1, "max_unit": total,
                            "step_size": 1, "allocation_ratio": ratio})

    for number in range(hosts):
        root = provider(f"compute-{number}", None)
        for name, (total, ratio) in HOST.items():
            inventory(root, name, total, ratio)
        for pf, physnet in enumerate(PHYSNETS):
            child = provider(f"compute-{number}_0000:{('3b', '5e')[pf]}:00.0", root)
            inventory(child, VF_RC, VFS_PER_PF)
            traits.append({"resource_provider_id": child, "trait_id": trait[physnet]})
        for gpu in range(GPUS):
            inventory(provider(f"compute-{number}_gpu{gpu}", root), GPU_RC, 1)
    with db_api.placement_context_manager.writer.using(ctx) as session:
        for table, rows in ((models.ResourceProvider, providers),
                            (models.Inventory, inventories),
                            (models.ResourceProviderTrait, traits)):
            for start in range(0, len(rows), 20_000):
                session.execute(insert(table.__table__), rows[start:start + 20_000])
    return {"providers": len(providers), "inventories": len(inventories)}


def groups_for(kind: str) -> dict[str, lib.RequestGroup]:
    groups = {"": lib.RequestGroup(use_same_provider=False, resources=dict(FLAVOR))}
    devices: dict[str, list[tuple[str, list[set[str]]]]] = {
        "vf": [(VF_RC, [{PHYSNETS[0]}])],
        "gpu+vf": [(GPU_RC, []), (VF_RC, [{PHYSNETS[0]}])],
        "2gpu-numa": [(GPU_RC, []), (GPU_RC, [])],
    }
    for number, (resource, required) in enumerate(devices[kind]):
        groups[f"_pci-{number}"] = lib.RequestGroup(
            use_same_provider=True, resources={resource: 1}, required_traits=required)
    return groups


def main(hosts: int, limit: int, repeats: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="passthru-placement-") as directory:
        ctx = open_placement(Path(directory) / "placement.sqlite")
        started = time.perf_counter()
        populated = populate(ctx, hosts)
        populate_s = time.perf_counter() - started
        kinds: dict[str, Any] = {}
        for kind in ("vf", "gpu+vf", "2gpu-numa"):
            params = lib.RequestWideParams(limit=limit, group_policy="none")
            samples, found = [], None
            for _ in range(repeats):
                started = time.perf_counter()
                found = ac_obj.AllocationCandidates.get_by_requests(
                    ctx, groups_for(kind), params)
                samples.append(time.perf_counter() - started)
            assert found is not None
            roots = {summary.resource_provider.root_provider_uuid
                     for summary in found.provider_summaries}
            kinds[kind] = {"allocation_candidates_ms": round(statistics.median(samples) * 1e3,
                                                            1),
                           "samples_ms": [round(s * 1e3, 1) for s in samples],
                           "allocation_requests": len(found.allocation_requests),
                           "candidate_hosts": len(roots)}
        return {"hosts": hosts, "limit": limit, **populated,
                "populate_s": round(populate_s, 1), "per_kind": kinds,
                "store": "SQLite file (Placement's schema, its code's queries)"}


if __name__ == "__main__":
    print(json.dumps(main(*(int(a) for a in sys.argv[1:4]))))
