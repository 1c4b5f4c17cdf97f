"""Scheduler benchmark: passthru's placement against Nova's (Placement, then filters); prints JSON.

    .venv/bin/python bench/scheduler.py [--quick]

Fleet: every host has 2 Intel X710 PFs x 32 VFs (PF 0 on physnet1 / NUMA node 0, PF 1 on
physnet2 / node 1) and 4 NVIDIA A100 GPUs (2 per node). Mix: 60% one VF on a network
(a `--nic` of vnic-type direct, plan B), 30% one GPU + one VF, 10% two GPUs with NUMA
affinity required. Placement uses the pack weigher.

Each measurement runs in its own process (`--part NAME`), one after the other: memory
figures are that process's own, and the shared 2-core machine runs one thing at a time.
The store parts populate SQLite with bulk inserts in one process and schedule from a
fresh controller process that loads the index from the store, as `passthru serve` does.

`vs_nova` is Nova's scheduling of one VM of each kind on the same fresh fleet, both of its
steps: Placement's `allocation_candidates` (openstack-placement's own code in process,
`limit` = Nova's `max_placement_results`, 1,000) and Nova's PCI/NUMA filter checks over
only the hosts of those candidates (`bench/nova_baseline.py`), each against passthru's
decision, as ratios. Its first run makes Placement's virtualenv (`bench/.venv-placement`,
about a minute, from PyPI).

`dra_fill` is the in-process loop on the DRA-comparable shape (500 hosts x 10 GPUs,
5,000 one-GPU requests, one client, no HTTP); beside it, kube-scheduler's DRA
scheduler_perf figures as published, with their sources and CPU count (`bench/dra.py`),
which are not measured here. `bench/e2e.py` runs the same shape through the REST API.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypedDict

from sqlalchemy import insert, select
from sqlalchemy.orm import selectinload

from dra import CITATION as DRA_CITATION
from dra import ratio as dra_ratio
from passthru.controller.scheduler import HostIndex, NoValidHostError, place
from passthru.controller.scheduler.claim import ServerGoneError
from passthru.controller.scheduler.service import Scheduler
from passthru.controller.store.db import Store
from passthru.controller.store.mapping import DEVICE_FIELDS, pool_key_text, request_from_row
from passthru.controller.store.models import (
    Base,
    DeviceRow,
    HostRow,
    PciFlavorRow,
    PciFlavorSpecRow,
    PciRequestRow,
    PoolRow,
    ServerRow,
)
from passthru.pci.device import DevType, PciDevice
from passthru.pci.flavor import PciFlavor
from passthru.pci.pool import Pool, build_pools
from passthru.pci.request import NumaPolicy, PciRequest, RequestSource

BENCH = Path(__file__).resolve()
FLAVORS = {"bigGPU": PciFlavor("bigGPU", {"vendor_id": "10de", "product_id": "20b5"})}
SOCKETS = {0: 0, 1: 1}
NETWORKS = ("physnet1", "physnet2")
MIX = {"vf": 0.6, "gpu+vf": 0.3, "2gpu-numa": 0.1}


class Size(TypedDict):
    """How big each part of a run is (`--quick` or not)."""

    hosts: int
    vms: int
    durable_vms: int
    nova_hosts: int
    scale: tuple[int, int]
    scale_vms: int
    dra: tuple[int, int, int]
    placement_repeats: int


FULL: Size = {"hosts": 10_000, "vms": 20_000, "durable_vms": 5_000, "nova_hosts": 10_000,
              "scale": (1_000, 100_000), "scale_vms": 2_000, "dra": (500, 10, 5_000),
              "placement_repeats": 2}
QUICK: Size = {"hosts": 1_000, "vms": 2_000, "durable_vms": 500, "nova_hosts": 1_000,
               "scale": (100, 10_000), "scale_vms": 200, "dra": (50, 10, 500),
               "placement_repeats": 3}


# --- the fleet --------------------------------------------------------------------------


def mixed_host() -> list[PciDevice]:
    devices: list[PciDevice] = []
    for bus, network, node in (("3b", "physnet1", 0), ("5e", "physnet2", 1)):
        pf = f"0000:{bus}:00.0"
        devices.append(PciDevice(pf, "8086", "1572", DevType.PF, numa_node=node,
                                 tags={"e.physical_network": network}))
        devices += [PciDevice(f"0000:{bus}:{2 + i // 8:02x}.{i % 8}", "8086", "154c",
                              DevType.VF, parent_addr=pf, numa_node=node,
                              tags={"e.physical_network": network}) for i in range(32)]
    devices += [PciDevice(address, "10de", "20b5", numa_node=node) for address, node in (
        ("0000:17:00.0", 0), ("0000:65:00.0", 0), ("0000:b1:00.0", 1), ("0000:ca:00.0", 1))]
    return devices


def gpu_host() -> list[PciDevice]:
    """The DRA-comparable host: 10 GPUs, 5 per NUMA node."""
    return [PciDevice(f"0000:{0x17 + 0x10 * n:02x}:00.0", "10de", "20b5", numa_node=n // 5)
            for n in range(10)]


LAYOUTS: dict[str, Callable[[], list[PciDevice]]] = {"mixed": mixed_host, "gpu": gpu_host}


def fleet(layout: str, hosts: int) -> Iterator[tuple[str, list[Pool]]]:
    """Every host's pools, grouped like the template host's (without regrouping each)."""
    make = LAYOUTS[layout]
    template = build_pools(make())
    slot = {d.address: n for n, pool in enumerate(template) for d in pool.devices}
    for number in range(hosts):
        pools = [Pool(dict(p.attrs), p.dev_type, p.numa_node, p.parent_addr) for p in template]
        for device in make():
            pools[slot[device.address]].devices.append(device)
        yield f"compute-{number}", pools


def build_index(layout: str, hosts: int) -> HostIndex:
    index = HostIndex(FLAVORS)
    for name, pools in fleet(layout, hosts):
        index.report(name, pools, socket_of=SOCKETS)
    return index


def port(network: str) -> PciRequest:
    return PciRequest(1, (), source=RequestSource.PORT, physical_network=network,
                      dev_type=DevType.VF)


def mixed_vm(kind: str, network: str) -> list[PciRequest]:
    if kind == "vf":
        return [port(network)]
    if kind == "gpu+vf":
        return [PciRequest(1, ("bigGPU",)), port(network)]
    return [PciRequest(2, ("bigGPU",), numa_policy=NumaPolicy.REQUIRED)]


def vms(count: int, seed: int = 5) -> Iterator[tuple[str, list[PciRequest]]]:
    rng = random.Random(seed)
    kinds, weights = list(MIX), list(MIX.values())
    for _ in range(count):
        kind = rng.choices(kinds, weights)[0]
        yield kind, mixed_vm(kind, rng.choice(NETWORKS))


def one_gpu_vms(count: int) -> Iterator[tuple[str, list[PciRequest]]]:
    for _ in range(count):
        yield "gpu", [PciRequest(1, ("bigGPU",))]


# --- figures ------------------------------------------------------------------------------


def micros(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {"p50": round(ordered[len(ordered) // 2] * 1e6, 1),
            "p99": round(ordered[int(len(ordered) * 0.99)] * 1e6, 1),
            "mean": round(statistics.fmean(ordered) * 1e6, 1),
            "max": round(ordered[-1] * 1e6, 1)}


def memory_mib() -> dict[str, float]:
    status = Path("/proc/self/status").read_text()
    rss_kib = next(int(line.split()[1]) for line in status.splitlines()
                   if line.startswith("VmRSS:"))
    return {"rss_mib": round(rss_kib / 1024, 1),
            "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}


# --- parts (each in its own process) -------------------------------------------------------


def first_decisions(index: HostIndex) -> dict[str, float]:
    """The first decision of each kind builds its request shapes (once per index, O(hosts));
    timed apart from the steady state."""
    first: dict[str, float] = {}
    for kind in MIX:
        for network in NETWORKS:
            started = time.perf_counter()
            place(index, mixed_vm(kind, network))
            name = kind if kind == "2gpu-numa" else f"{kind} on {network}"
            first.setdefault(name, round((time.perf_counter() - started) * 1e3, 1))
    return first


def part_decisions(hosts: int, count: int) -> dict[str, Any]:
    """Decisions while the fleet fills up, each claimed in the index before the next."""
    started = time.perf_counter()
    index = build_index("mixed", hosts)
    built = time.perf_counter() - started
    memory = memory_mib()
    first = first_decisions(index)
    decisions: list[float] = []
    failures = 0
    started = time.perf_counter()
    for number, (_, vm) in enumerate(vms(count)):
        before = time.perf_counter()
        try:
            placement = place(index, vm)
        except NoValidHostError:
            failures += 1
            continue
        decisions.append(time.perf_counter() - before)
        index.claim(placement.host, placement.selection, f"vm{number}")
    elapsed = time.perf_counter() - started
    return {"hosts": hosts, "vms": count, "failures": failures,
            "index_build_s": round(built, 2), "first_decision_ms_with_shape_build": first,
            "decision_us": micros(decisions),
            "placements_per_s_in_memory": round(count / elapsed), "memory_after_build": memory}


def part_nova(hosts: int, repeats: int = 200, placement_repeats: int = 3) -> dict[str, Any]:
    """One VM of each kind on the fresh fleet: our decision against Nova's two steps,
    Placement's allocation candidates (limit 1,000) and the filters over their hosts."""
    import nova_baseline  # Nova loads only in this part's process

    index = build_index("mixed", hosts)
    first_decisions(index)
    try:
        placement: dict[str, Any] | None = nova_baseline.allocation_candidates(
            hosts, placement_repeats)
        unavailable = None
    except (subprocess.CalledProcessError, OSError) as error:
        placement = None
        unavailable = (f"openstack-placement could not be installed or run: {error}: "
                       f"{getattr(error, 'stderr', '')[-1000:]}")
    limit = nova_baseline.MAX_PLACEMENT_RESULTS
    started = time.perf_counter()
    nova_hosts = nova_baseline.scheduler_stats(mixed_host(), SOCKETS, min(hosts, limit))
    nova_build = time.perf_counter() - started
    kinds: dict[str, Any] = {}
    for kind in MIX:
        vm = mixed_vm(kind, NETWORKS[0])
        started = time.perf_counter()
        for _ in range(repeats):
            place(index, vm)
        ours = (time.perf_counter() - started) / repeats
        found = placement["per_kind"][kind] if placement else None
        candidates = found["candidate_hosts"] if found else min(hosts, limit)
        nova_vm = nova_baseline.nova_vm(vm, FLAVORS, sorted(SOCKETS))
        started = time.perf_counter()
        passing = nova_baseline.filter_pass(nova_hosts[:candidates], nova_vm)
        filters_ms = (time.perf_counter() - started) * 1e3
        entry: dict[str, Any] = {"passthru_decision_us": round(ours * 1e6, 1),
                                 "nova_filters_ms": round(filters_ms, 1),
                                 "nova_filtered_hosts": candidates,
                                 "nova_hosts_passing": passing}
        if found:
            total_ms = found["allocation_candidates_ms"] + filters_ms
            entry.update({
                "placement_allocation_candidates_ms": found["allocation_candidates_ms"],
                "placement_allocation_requests": found["allocation_requests"],
                "nova_total_ms": round(total_ms, 1),
                "ratio_placement_over_passthru": round(
                    found["allocation_candidates_ms"] * 1e3 / (ours * 1e6)),
                "ratio_filters_over_passthru": round(filters_ms * 1e3 / (ours * 1e6)),
                "ratio_nova_total_over_passthru": round(total_ms * 1e3 / (ours * 1e6))})
        kinds[kind] = entry
    result: dict[str, Any] = {
        "hosts": hosts, "nova_stats_build_s": round(nova_build, 1),
        "max_placement_results": limit, "per_kind": kinds,
        "what": "per VM: Placement's allocation_candidates (openstack-placement's code in "
                "process, SQLite, limit 1,000, median of runs) then Nova's PCI/NUMA filter "
                "checks over only the candidates' hosts; against passthru's decision on the "
                "same fleet (mean of runs). Not the same store: Placement on its own SQLite "
                "schema, passthru in memory"}
    if placement is None:
        result["placement"] = unavailable
        result["label"] = ("Placement not run: the filters ran over 1,000 hosts, the most "
                           "Placement would return; Nova's real cost is higher")
    else:
        result["placement"] = {k: v for k, v in placement.items() if k != "per_kind"}
        ours_mix = sum(MIX[k] * kinds[k]["passthru_decision_us"] for k in MIX)
        nova_mix = sum(MIX[k] * kinds[k]["nova_total_ms"] for k in MIX)
        result["mix_weighted"] = {"passthru_decision_us": round(ours_mix, 1),
                                  "nova_total_ms": round(nova_mix, 1),
                                  "ratio_nova_over_passthru": round(nova_mix * 1e3 / ours_mix)}
    return result


def _device_row(device: PciDevice) -> dict[str, Any]:
    return {name: getattr(device, name) for name in DEVICE_FIELDS}


def part_populate(db: str, layout: str, hosts: int, servers: int) -> dict[str, Any]:
    """The store of a fleet that has reported, and `servers` booted servers to place."""
    store = Store(f"sqlite:///{db}")
    Base.metadata.create_all(store.engine)
    started = time.perf_counter()
    host_rows: list[dict[str, Any]] = []
    pool_rows: list[dict[str, Any]] = []
    device_rows: list[dict[str, Any]] = []
    for host_id, (name, pools) in enumerate(fleet(layout, hosts), 1):
        host_rows.append({"id": host_id, "name": name, "pool_attrs": []})
        for pool in pools:
            pool_id = len(pool_rows) + 1
            pool_rows.append({"id": pool_id, "host_id": host_id, "key": pool_key_text(pool.key),
                              "attrs": pool.attrs, "dev_type": pool.dev_type,
                              "numa_node": pool.numa_node, "parent_addr": pool.parent_addr})
            device_rows += [{**_device_row(d), "host_id": host_id, "pool_id": pool_id}
                            for d in pool.devices]
    make_vms = vms(servers) if layout == "mixed" else one_gpu_vms(servers)
    server_rows, request_rows = [], []
    for number, (_, vm) in enumerate(make_vms):
        server = f"00000000-0000-4000-8000-{number:012d}"
        server_rows.append({"uuid": server, "name": f"vm{number}", "project": "bench"})
        request_rows += [{"uuid": r.request_id, "server_uuid": server, "position": position,
                          "count": r.count, "alternatives": list(r.alternatives),
                          "source": r.source, "numa_policy": r.numa_policy,
                          "physical_network": r.physical_network, "dev_type": r.dev_type,
                          "soft": r.soft} for position, r in enumerate(vm)]
    with store.write() as session:
        session.add_all(PciFlavorRow(name=f.name, specs=[
            PciFlavorSpecRow(key=k, value=v) for k, v in f.spec.items()])
            for f in FLAVORS.values())
        for table, rows in ((HostRow, host_rows), (PoolRow, pool_rows),
                            (DeviceRow, device_rows), (ServerRow, server_rows),
                            (PciRequestRow, request_rows)):
            for start in range(0, len(rows), 50_000):
                session.execute(insert(table.__table__), rows[start:start + 50_000])
    store.close()
    return {"devices": len(device_rows), "populate_s": round(time.perf_counter() - started, 1)}


def part_durable(db: str) -> dict[str, Any]:
    """A controller process: load the index from the store, then place and claim every
    waiting server, each claim its own transaction."""
    store = Store(f"sqlite:///{db}")
    with store.read() as session:
        query = select(ServerRow).options(selectinload(ServerRow.requests)).order_by(
            ServerRow.uuid)
        waiting = [(s.uuid, [request_from_row(r) for r in s.requests])
                   for s in session.scalars(query)]
    scheduler = Scheduler(store)
    started = time.perf_counter()
    scheduler.load()
    loaded = time.perf_counter() - started
    memory = memory_mib()
    failures = 0
    started = time.perf_counter()
    for owner, requests in waiting:
        try:
            scheduler.schedule(owner, requests)
        except NoValidHostError:
            failures += 1
    elapsed = time.perf_counter() - started
    with store.read() as session:
        claimed = session.scalars(select(DeviceRow.owner).where(
            DeviceRow.owner.is_not(None))).all()
    one_more = "placed"
    try:
        scheduler.schedule(waiting[0][0], waiting[0][1])
    except (NoValidHostError, ServerGoneError) as error:
        # The full fleet's refusal; a server already placed is refused once a host fits.
        one_more = str(error)
    store.close()
    return {"servers": len(waiting), "failures": failures,
            "devices_claimed": len(claimed), "servers_holding_devices": len(set(claimed)),
            "index_load_from_store_s": round(loaded, 2),
            "placements_per_s_with_durable_claim": round(len(waiting) / elapsed),
            "memory_after_load": memory, "placing_one_more": one_more}


# --- orchestration --------------------------------------------------------------------------


def run_part(*args: object) -> dict[str, Any]:
    print(f"  part {' '.join(map(str, args))} ...", file=sys.stderr, flush=True)
    started = time.perf_counter()
    output = subprocess.run([sys.executable, str(BENCH), "--part", *map(str, args)],
                            check=True, capture_output=True, text=True).stdout
    print(f"    {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)
    result: dict[str, Any] = json.loads(output)
    return result


def store_run(layout: str, hosts: int, servers: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="passthru-bench-") as directory:
        db = str(Path(directory) / "passthru.sqlite")
        populated = run_part("populate", db, layout, hosts, servers)
        return {**populated, **run_part("durable", db)}


def main(quick: bool) -> dict[str, Any]:
    size = QUICK if quick else FULL
    decisions = run_part("decisions", size["hosts"], size["vms"])
    nova = run_part("nova", size["nova_hosts"], size["placement_repeats"])
    durable = store_run("mixed", size["hosts"], size["durable_vms"])
    small, large = (run_part("decisions", hosts, size["scale_vms"]) for hosts in size["scale"])
    dra_hosts, per_host, dra_requests = size["dra"]
    dra = store_run("gpu", dra_hosts, dra_requests)
    scale_ratio = large["decision_us"]["mean"] / small["decision_us"]["mean"]
    rss = durable["memory_after_load"]["rss_mib"]
    nova_mix = nova.get("mix_weighted", {}).get("nova_total_ms")
    speedup = (nova_mix * 1e3 / decisions["decision_us"]["mean"]) if nova_mix else None
    return {
        "quick": quick,
        "fleet": {"hosts": size["hosts"], "per_host": "2 PFs x 32 VFs (physnet1, physnet2) "
                  "+ 4 GPUs on 2 NUMA nodes", "mix": MIX, "weigher": "pack"},
        "decision": decisions,
        "vs_nova": {**nova, "speedup_vs_mean_decision_while_filling": (
            round(speedup) if speedup else None)},
        "durable_sqlite": durable,
        "scale": {"small": small, "large": large, "mean_decision_ratio": round(scale_ratio, 2)},
        "dra_fill": {"hosts": dra_hosts, "devices_per_host": per_host, **dra,
                     "what": "in process, one client, no HTTP, durable claim on SQLite",
                     "kubernetes_dra": DRA_CITATION, "ratio_over_kubernetes_dra": dra_ratio(
                         dra["placements_per_s_with_durable_claim"])},
        "targets": {
            "decision_100x_faster_than_nova": speedup is not None and speedup >= 100,
            "placements_per_s_with_durable_claim_1000": (
                durable["placements_per_s_with_durable_claim"] >= 1000),
            "p99_decision_5ms": decisions["decision_us"]["p99"] <= 5000,
            "decision_at_large_within_2x_of_small": scale_ratio <= 2,
            "controller_rss_1GiB": rss <= 1024,
            "dra_fill_1000_per_s": dra["placements_per_s_with_durable_claim"] >= 1000,
        },
    }


PARTS: dict[str, Callable[..., dict[str, Any]]] = {
    "decisions": lambda hosts, count: part_decisions(int(hosts), int(count)),
    "nova": lambda hosts, placement_repeats: part_nova(
        int(hosts), placement_repeats=int(placement_repeats)),
    "populate": lambda db, layout, hosts, servers: part_populate(db, layout, int(hosts),
                                                                 int(servers)),
    "durable": part_durable,
}

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a scaled-down run (~1 min)")
    parser.add_argument("--part", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.part:
        name, *values = args.part
        print(json.dumps(PARTS[name](*values)))
    else:
        print(json.dumps(main(args.quick), indent=2))
