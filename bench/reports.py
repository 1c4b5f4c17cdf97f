"""Agent report benchmark: full reports and deltas through the REST API; prints JSON.

    .venv/bin/python bench/reports.py [--quick] [--baseline REV]

For each size (1k, 10k, 40k devices; `--quick`: 1k and 10k) a fresh `passthru serve` on
SQLite (its data dir on disk, WAL with synchronous=FULL as it ships: every commit is
fsynced) takes a full report of that many devices, then a delta adding
as many again. Devices are SR-IOV NICs, one PF with 39 VFs each (so 40k devices are
1,000 PFs), tagged with a physical network and grouped by the default pool attributes.
While the 40k full report is applied, another host heart-beats every 50 ms: its
latencies show whether a big report starves other hosts (SQLite has one writer).

`--baseline REV` runs the same against the code of git revision REV (extracted with
`git archive`, run from its own source tree on this machine, one after the other) and
adds the ratio old / new for every figure.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from serving import ROOT, Serve, extract

VFS_PER_PF = 39
HEARTBEAT_EVERY = 0.05


def nic_devices(count: int, first_bus: int = 0) -> list[dict[str, Any]]:
    """`count` devices: PFs each followed by their VFs, on consecutive buses."""
    devices: list[dict[str, Any]] = []
    tags = {"e.physical_network": "physnet1"}
    bus = first_bus
    while len(devices) < count:
        domain, number = divmod(bus, 256)
        pf = f"{domain:04x}:{number:02x}:00.0"
        devices.append({"address": pf, "vendor_id": "8086", "product_id": "1572",
                        "dev_type": "type-PF", "numa_node": 0, "tags": tags,
                        "sriov_totalvfs": 64, "sriov_numvfs": VFS_PER_PF})
        for vf in range(VFS_PER_PF):
            slot, function = divmod(vf + 8, 8)
            devices.append({"address": f"{domain:04x}:{number:02x}:{slot:02x}.{function}",
                            "vendor_id": "8086", "product_id": "154c",
                            "dev_type": "type-VF", "parent_addr": pf, "numa_node": 0,
                            "tags": tags})
        bus += 1
    return devices[:count]


def timed(call: Any) -> tuple[float, httpx.Response]:
    start = time.perf_counter()
    response = call()
    elapsed = time.perf_counter() - start
    response.raise_for_status()
    return elapsed, response


def heartbeats_while(serve: Serve, busy: threading.Event, host: str,
                     latencies: list[float], failures: list[str]) -> None:
    """Heart-beat `host` every 50 ms until `busy` is cleared, as an agent would (30 s
    timeout): each one's latency, and what became of those that failed."""
    with httpx.Client(base_url=serve.url, timeout=30.0,
                      headers=dict(serve.http.headers)) as http:
        while busy.is_set():
            start = time.perf_counter()
            try:
                response = http.post(f"/v2/agent/hosts/{host}/heartbeat")
                if response.status_code >= 400:
                    failures.append(f"HTTP {response.status_code}")
            except httpx.TransportError as error:
                failures.append(type(error).__name__)
            latencies.append(time.perf_counter() - start)
            time.sleep(HEARTBEAT_EVERY)


def run_size(src: Path, work: Path, count: int, watch: bool) -> dict[str, Any]:
    serve = Serve(src, work / f"data-{count}")
    try:
        path = "/v2/agent/hosts/bench-1/inventory"
        serve.http.post("/v2/agent/hosts/other-1/heartbeat").raise_for_status()
        full_body = {"devices": nic_devices(count)}
        latencies: list[float] = []
        failures: list[str] = []
        busy = threading.Event()
        watcher = None
        if watch:
            busy.set()
            watcher = threading.Thread(target=heartbeats_while,
                                       args=(serve, busy, "other-1", latencies, failures))
            watcher.start()
            time.sleep(0.5)
        full, response = timed(lambda: serve.http.put(path, json=full_body))
        busy.clear()
        if watcher is not None:
            watcher.join()
        generation = response.json()["generation"]
        added = nic_devices(count, first_bus=0x1000)
        delta, _ = timed(lambda: serve.http.patch(path, json={
            "base_generation": generation, "delta": {"added": added}}))
        result: dict[str, Any] = {"devices": count, "full_report_s": round(full, 3),
                                  "delta_adding_s": round(delta, 3)}
        if latencies:
            ordered = sorted(latencies)
            result["other_host_heartbeat"] = {
                "count": len(ordered), "median_s": round(statistics.median(ordered), 4),
                "p99_s": round(ordered[int(len(ordered) * 0.99) - 1], 4),
                "max_s": round(ordered[-1], 4), "failed": failures}
        return result
    finally:
        serve.stop()


def run_all(src: Path, sizes: list[int]) -> list[dict[str, Any]]:
    with tempfile.TemporaryDirectory(prefix="passthru-bench-", dir="/var/tmp") as work:
        return [run_size(src, Path(work), count, watch=count == max(sizes))
                for count in sizes]


def ratios(old: list[dict[str, Any]], new: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for before, after in zip(old, new, strict=True):
        entry: dict[str, Any] = {"devices": after["devices"]}
        for key in ("full_report_s", "delta_adding_s"):
            entry[key] = round(before[key] / after[key], 1)
        if "other_host_heartbeat" in after:
            entry["other_host_heartbeat_max"] = round(
                before["other_host_heartbeat"]["max_s"]
                / after["other_host_heartbeat"]["max_s"], 1)
        out.append(entry)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1k and 10k devices only")
    parser.add_argument("--baseline", metavar="REV",
                        help="also run the code of this git revision, and give ratios")
    args = parser.parse_args()
    sizes = [1000, 10_000] if args.quick else [1000, 10_000, 40_000]
    report: dict[str, Any] = {
        "benchmark": "agent reports through the REST API",
        "store": "SQLite, WAL, synchronous=FULL (as it ships), data dir on disk",
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count()},
        "shape": f"PFs with {VFS_PER_PF} VFs each, physical network tag, default pools",
        "new": run_all(ROOT / "src", sizes),
    }
    if args.baseline:
        with tempfile.TemporaryDirectory(prefix="passthru-baseline-") as tree:
            old = run_all(extract(args.baseline, Path(tree)), sizes)
        report["baseline"] = {"revision": args.baseline, "how": "git archive of the "
                              "revision, run on the same machine right after the new code",
                              "results": old}
        report["ratio_old_over_new"] = ratios(old, report["new"])
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
