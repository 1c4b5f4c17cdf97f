"""The boot path through the REST API: `POST /servers` latency, placements/s and the next
boot after a PCI flavor edit, on a live `passthru serve`; prints JSON.

    .venv/bin/python bench/boot_path.py [--quick] [--baseline REV]

Each part runs a real `passthru serve` (SQLite on disk, the sync mode it ships with, which
the JSON states) on a data dir whose fleet is bulk-inserted into the store beforehand, as
if its agents had reported; serve loads its scheduler from it at start-up. Boots go
through HTTP as an admin (admin tokens have no rate limit), each one GPU by the PCI
flavor `bigGPU` (a flavor's `pci_passthrough:pci_flavor` extra spec).

- `latency`: 10k hosts of 10 GPUs (100k devices; `--quick`: 1k hosts), one client booting
  one server at a time: p50/p99 of the 202, the controller's CPU-seconds per boot, and
  per `GET .../flavors/NAME` (the floor of any authenticated request).
  Then the next boot after a PCI flavor edit, at the same scale: after a change of the
  spec of `bigGPU` (which the boots name, matching the same devices) and after creating
  another PCI flavor, a few times each.
- `throughput`: the DRA-comparable shape, 500 hosts x 10 GPUs, 5,000 one-GPU servers
  booted by 8 clients at once, one server per request: placements/s and CPU-seconds per
  boot. The clients run on the same 2 cores as the controller, so they take some of its
  CPU. `throughput_multi_create`: the same fleet and servers booted by 2 clients as
  multi-creates of up to 100 servers each (Nova's max_count). `comparison_with_dra`
  says what each figure includes beside kube-scheduler's.

`--baseline REV` runs the same parts against the code of git revision REV (extracted with
`git archive`, run from its own source tree on this machine right after the new code).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from passthru.controller.settings import DATABASE_FILE
from passthru.controller.store.db import Store
from passthru.controller.store.mapping import pool_key_text
from passthru.controller.store.migrate import upgrade
from passthru.controller.store.models import (
    DeviceRow,
    HostRow,
    PciFlavorRow,
    PciFlavorSpecRow,
    PoolRow,
)
from scheduler import FLAVORS, _device_row, fleet
from serving import Serve, extract

ROOT = Path(__file__).resolve().parents[1]
BOOT = {"server": {"name": "vm", "flavorRef": "gpu1"}}
DURABILITY = {
    "FULL": "every commit is fsynced before the API answers: a 202's claim survives a "
            "crash of the process and a power loss",
    "NORMAL": "WAL fsynced at checkpoints only: a 202's claim survives a crash of the "
              "process, a power loss may drop the last ones",
}


DRA_COMPARISON = (
    "kube-scheduler's scheduler_perf (DRA, 500 nodes x 10 devices, 5,000 one-device pods) "
    "creates the pods through its API server first and measures the scheduler placing "
    "them: neither creating the pods nor their API requests are in its pods/s. "
    "'throughput' here is harder: each placement is its own authenticated POST /servers "
    "that creates the server and answers only once its claim is durable (fsynced). "
    "'throughput_multi_create' is the closer match: servers created in bulk (100 per "
    "request, as scheduler_perf creates pods in bulk), yet still created, placed and "
    "durably claimed within the figure, on the same 2 cores as the bench's clients.")


def populate(data: Path, hosts: int) -> None:
    """A data dir whose store holds `hosts` hosts of 10 GPUs that have reported."""
    data.mkdir(mode=0o700, parents=True)
    store = Store(f"sqlite:///{data / DATABASE_FILE}")
    upgrade(store.engine)
    host_rows: list[dict[str, Any]] = []
    pool_rows: list[dict[str, Any]] = []
    device_rows: list[dict[str, Any]] = []
    for host_id, (name, pools) in enumerate(fleet("gpu", hosts), 1):
        host_rows.append({"id": host_id, "name": name, "pool_attrs": []})
        for pool in pools:
            pool_id = len(pool_rows) + 1
            pool_rows.append({"id": pool_id, "host_id": host_id,
                              "key": pool_key_text(pool.key), "attrs": pool.attrs,
                              "dev_type": pool.dev_type, "numa_node": pool.numa_node,
                              "parent_addr": pool.parent_addr})
            device_rows += [{**_device_row(d), "host_id": host_id, "pool_id": pool_id}
                            for d in pool.devices]
    with store.write() as session:
        session.add_all(PciFlavorRow(name=f.name, specs=[
            PciFlavorSpecRow(key=k, value=v) for k, v in f.spec.items()])
            for f in FLAVORS.values())
        for table, rows in ((HostRow, host_rows), (PoolRow, pool_rows),
                            (DeviceRow, device_rows)):
            for start in range(0, len(rows), 50_000):
                session.execute(table.__table__.insert(), rows[start:start + 50_000])
    store.close()


def boot(http: httpx.Client) -> float:
    started = time.perf_counter()
    response = http.post("/servers", json=BOOT)
    elapsed = time.perf_counter() - started
    response.raise_for_status()
    if response.json()["server"]["status"] != "BUILD":
        raise RuntimeError(f"a boot was not placed: {response.text[:300]}")
    return elapsed


def boot_many(http: httpx.Client, count: int) -> int:
    """One multi-create of `count` servers; how many it placed. (min_count as well as
    max_count: revisions before max_count take min_count alone.)"""
    response = http.post("/servers", json={"server": {**BOOT["server"], "min_count": count,
                                                      "max_count": count}})
    response.raise_for_status()
    servers = response.json()["servers"]
    if any(server["status"] != "BUILD" for server in servers):
        raise RuntimeError(f"a multi-create was not placed: {response.text[:300]}")
    return len(servers)


def millis(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {"p50_ms": round(statistics.median(ordered) * 1e3, 2),
            "p99_ms": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1e3, 2),
            "max_ms": round(ordered[-1] * 1e3, 2), "samples": len(ordered)}


def prepare(serve: Serve) -> None:
    serve.http.post("/flavors", json={"flavor": {"name": "gpu1"}}).raise_for_status()
    specs = {"extra_specs": {"pci_passthrough:pci_flavor": "1:bigGPU"}}
    serve.http.post("/flavors/gpu1/os-extra_specs", json=specs).raise_for_status()


def part_latency(src: Path, work: Path, hosts: int, boots: int) -> dict[str, Any]:
    data = work / f"latency-{src.parent.name}"
    populate(data, hosts)
    started = time.perf_counter()
    serve = Serve(src, data, prefix="/v2/admin")
    try:
        up = time.perf_counter() - started
        prepare(serve)
        for _ in range(20):
            boot(serve.http)
        cpu = serve.cpu_seconds()
        samples = [boot(serve.http) for _ in range(boots)]
        cpu = serve.cpu_seconds() - cpu
        edits: dict[str, list[float]] = {"edited_flavor_the_boot_names": [],
                                         "created_another_flavor": []}
        specs = ({"product_id": "20b5"}, {"vendor_id": "10de", "product_id": "20b5"})
        for number in range(5):
            serve.http.put("/os-pci-flavors/bigGPU", json={
                "pci-flavor": specs[number % 2]}).raise_for_status()
            edits["edited_flavor_the_boot_names"].append(boot(serve.http))
            serve.http.post("/os-pci-flavors", json={"pci-flavor": {
                "name": f"other{number}", "vendor_id": "15b3"}}).raise_for_status()
            edits["created_another_flavor"].append(boot(serve.http))
        cpu_get = serve.cpu_seconds()
        for _ in range(boots):
            serve.http.get("/flavors/gpu1").raise_for_status()
        cpu_get = serve.cpu_seconds() - cpu_get
    finally:
        serve.stop()
    return {"hosts": hosts, "devices": hosts * 10, "serve_start_s": round(up, 1),
            "post_servers": millis(samples),
            "controller_cpu_ms_per_boot": round(cpu / boots * 1e3, 2),
            # The floor under any request: token, middleware, routing, one lookup, JSON.
            "controller_cpu_ms_per_flavor_get": round(cpu_get / boots * 1e3, 2),
            "next_boot_after_pci_flavor_edit": {
                what: {"median_ms": round(statistics.median(times) * 1e3, 2),
                       "max_ms": round(max(times) * 1e3, 2)}
                for what, times in edits.items()}}


def part_throughput(src: Path, work: Path, hosts: int, servers: int,
                    clients: int, batch: int = 1) -> dict[str, Any]:
    """`batch` 1: one server per request; more: multi-creates of up to `batch`."""
    data = work / f"throughput-{src.parent.name}-{batch}"
    populate(data, hosts)
    serve = Serve(src, data, prefix="/v2/admin")
    try:
        prepare(serve)
        boot(serve.http)
        left = iter(range(0, servers - 1, batch))
        lock = threading.Lock()
        failures: list[BaseException] = []
        counts: list[int] = []

        def client() -> None:
            with serve.client() as http:
                while True:
                    with lock:
                        first = next(left, None)
                    if first is None:
                        return
                    try:
                        if batch == 1:
                            boot(http)
                            counts.append(1)
                        else:
                            counts.append(boot_many(http, min(batch, servers - 1 - first)))
                    except Exception as error:
                        failures.append(error)

        threads = [threading.Thread(target=client) for _ in range(clients)]
        cpu = serve.cpu_seconds()
        started = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        elapsed = time.perf_counter() - started
        cpu = serve.cpu_seconds() - cpu
        placed = sum(counts)
    finally:
        serve.stop()
    return {"hosts": hosts, "gpus_per_host": 10, "servers": servers, "clients": clients,
            "servers_per_request": batch,
            "how": "one server per POST /servers" if batch == 1 else
                   f"multi-creates of {batch} servers: one POST /servers, one placement "
                   "loop and one transaction per batch",
            "placed": placed, "failures": len(failures),
            "first_failure": str(failures[0])[:300] if failures else None,
            "placements_per_s": round(placed / elapsed, 1),
            "wall_s": round(elapsed, 2),
            "controller_cpu_s": round(cpu, 2),
            "controller_cpu_ms_per_boot": round(cpu / max(placed, 1) * 1e3, 2)}


def run(src: Path, quick: bool) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="passthru-bench-", dir="/var/tmp") as work:
        sync = next((line.split("synchronous=", 1)[1].split('"')[0]
                     for line in (src / "passthru/controller/store/db.py").read_text().splitlines()
                     if "PRAGMA synchronous=" in line), "unknown")
        latency = part_latency(src, Path(work), 1_000 if quick else 10_000,
                               100 if quick else 300)
        hosts, servers = (50, 500) if quick else (500, 5_000)
        throughput = part_throughput(src, Path(work), hosts, servers, 8)
        batches = part_throughput(src, Path(work), hosts, servers, 2, batch=100)
    return {"sqlite_synchronous": sync, "durability": DURABILITY.get(sync, "unknown"),
            "latency": latency, "throughput": throughput,
            "throughput_multi_create": batches,
            "comparison_with_dra": DRA_COMPARISON}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1k hosts; 50 hosts x 10 GPUs")
    parser.add_argument("--baseline", metavar="REV",
                        help="also run the code of this git revision (main, say)")
    args = parser.parse_args()
    report: dict[str, Any] = {
        "benchmark": "the boot path through the REST API (POST /servers)",
        "store": "SQLite, WAL, data dir on disk; sqlite_synchronous says each run's mode",
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(),
                    "load_average": os.getloadavg()},
        "new": run(ROOT / "src", args.quick),
    }
    if args.baseline:
        with tempfile.TemporaryDirectory(prefix="passthru-baseline-") as tree:
            report["baseline"] = {"revision": args.baseline,
                                  "how": "git archive of the revision, run on the same "
                                  "machine right after the new code",
                                  **run(extract(args.baseline, Path(tree)), args.quick)}
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
