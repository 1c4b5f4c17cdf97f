"""Admin views benchmark: stats endpoints at 10k hosts, `GET /servers` at 50k servers and
what the fleet page costs the controller, through a real `passthru serve`; prints JSON.

    .venv/bin/python bench/views.py [--quick] [--baseline REV [--unpaged]] [--data DIR]
        [--start-only]

The store (SQLite in a fresh data dir) is populated directly with bulk inserts: 10,000
hosts (`--quick`: 1,000) that are up, each with 2 PFs of 32 VFs on two physical networks
and 4 GPUs on two NUMA nodes (70 devices), grouped into pools as an agent's report would
be; 4 PCI flavors; 50,000 servers (`--quick`: 5,000) ACTIVE in one project, one GPU or
VF claimed by every fifth. Then `passthru serve` starts on it (with a heart-beat timeout
long enough that no host goes down) and is asked over HTTP:

- each stats endpoint and `GET /servers` (its first page, a full page of 1,000, and a
  page in the middle by marker), several times; the median latency in ms. The fleet
  summary and PCI flavor stats also right after a change (a boot that claims a GPU, made
  before each request and not timed): what they cost when nothing is kept from before;
- the fleet page's rounds, as its script makes them every 10 s (`fleet.js`), each request
  with the ETag of the answer it has for that list (If-None-Match; a controller that
  gives none gets plain requests): a round at rest (the summary and the first page of
  hosts; events only when the summary's newest moved) and one after a change (a boot as
  above, then the summary, the events since, the first pages of hosts, pools and
  servers). The controller's CPU time per round is read from /proc around each round's
  requests (median of several), then scaled to a minute of the page open. Background
  work of the controller (its resync every 10 s) can fall into a round; the median keeps
  it out.

Start-up: the seconds from starting `passthru serve` to its first answer, and its
resident memory then (`rss_mib`) and at its peak by the end (`peak_rss_mib`, after the
views). `--start-only` measures start-up alone; `--data DIR` keeps the populated stores in
DIR/new (and DIR/old for a baseline) and reuses them on the next run (populating 10k
hosts takes about a minute).

`--baseline REV` measures the same against the code of git revision REV (its own source
tree from `git archive`, its own store populated the same way); with `--unpaged`, the
old way, for a revision before paged views: every list unpaged, the stats counted by the
store, and the old page's round (every list whole, every 10 s).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from serving import Serve, extract

ROOT = Path(__file__).resolve().parents[1]
FULL = {"hosts": 10_000, "servers": 50_000}
QUICK = {"hosts": 1_000, "servers": 5_000}
FLAVORS = {"bigGPU": {"vendor_id": "10de", "product_id": "20b5"},
           "VF1": {"product_id": "154c", "e.physical_network": "physnet1"},
           "VF2": {"product_id": "154c", "e.physical_network": "physnet2"},
           "PF": {"dev_type": "type-PF"}}
REPEATS = 5
ROUNDS = 9


# --- populating the store (runs in a child, with the tree under test on its path) -------


def _host_devices() -> list[dict[str, Any]]:
    devices: list[dict[str, Any]] = []
    for bus, network, node in (("3b", "physnet1", 0), ("5e", "physnet2", 1)):
        pf = f"0000:{bus}:00.0"
        tags = {"e.physical_network": network}
        devices.append({"address": pf, "vendor_id": "8086", "product_id": "1572",
                        "dev_type": "type-PF", "numa_node": node, "tags": tags})
        devices += [{"address": f"0000:{bus}:{2 + i // 8:02x}.{i % 8}", "vendor_id": "8086",
                     "product_id": "154c", "dev_type": "type-VF", "parent_addr": pf,
                     "numa_node": node, "tags": tags} for i in range(32)]
    devices += [{"address": address, "vendor_id": "10de", "product_id": "20b5",
                 "dev_type": "type-PCI", "numa_node": node, "tags": {}}
                for address, node in (("0000:17:00.0", 0), ("0000:65:00.0", 0),
                                      ("0000:b1:00.0", 1), ("0000:ca:00.0", 1))]
    return devices


def part_populate(data_dir: str, hosts: int, servers: int) -> dict[str, Any]:
    from sqlalchemy import insert

    from passthru.controller.settings import DATABASE_FILE
    from passthru.controller.store.db import Store
    from passthru.controller.store.mapping import DEVICE_FIELDS, pool_key_text
    from passthru.controller.store.migrate import upgrade
    from passthru.controller.store.models import (
        DeviceRow,
        HostRow,
        HostStatus,
        PciFlavorRow,
        PciFlavorSpecRow,
        PoolRow,
        ServerRow,
        ServerStatus,
    )
    from passthru.pci.device import DeviceStatus, DevType, PciDevice
    from passthru.pci.pool import build_pools

    started = time.perf_counter()
    Path(data_dir).mkdir(parents=True, exist_ok=True)
    store = Store(f"sqlite:///{Path(data_dir) / DATABASE_FILE}")
    upgrade(store.engine)
    attrs = ["vendor_id", "product_id", "e.physical_network"]
    template = build_pools([PciDevice(**{**d, "dev_type": DevType(d["dev_type"])})
                            for d in _host_devices()], attrs)
    now = datetime.now(UTC)
    host_rows: list[dict[str, Any]] = []
    pool_rows: list[dict[str, Any]] = []
    device_rows: list[dict[str, Any]] = []
    server_rows: list[dict[str, Any]] = []
    owners = iter(range(0, servers, 5))
    for host_id in range(1, hosts + 1):
        host_rows.append({"id": host_id, "name": f"compute-{host_id:05d}", "pool_attrs": attrs,
                          "status": HostStatus.UP, "last_heartbeat": now, "generation": 1})
        claimed = 0
        for pool in template:
            pool_rows.append({"id": len(pool_rows) + 1, "host_id": host_id,
                              "key": pool_key_text(pool.key), "attrs": pool.attrs,
                              "dev_type": pool.dev_type, "numa_node": pool.numa_node,
                              "parent_addr": pool.parent_addr})
            for device in pool.devices:
                row = {name: getattr(device, name) for name in DEVICE_FIELDS}
                row.update(host_id=host_id, pool_id=len(pool_rows))
                # One GPU and one VF of each host held by a server, while servers last.
                if claimed < 2 and device.dev_type != "type-PF" and (
                        (device.vendor_id == "10de") == (claimed == 0)):
                    owner = next(owners, None)
                    if owner is not None:
                        row.update(status=DeviceStatus.ALLOCATED,
                                   owner=f"00000000-0000-4000-8000-{owner:012d}")
                        claimed += 1
                device_rows.append(row)
    for number in range(servers):
        server_rows.append({"uuid": f"00000000-0000-4000-8000-{number:012d}",
                            "name": f"vm{number}", "project": "bench",
                            "status": ServerStatus.ACTIVE,
                            "created_at": now - timedelta(seconds=servers - number),
                            "updated_at": now})
    with store.write() as session:
        session.add_all(PciFlavorRow(name=name, specs=[
            PciFlavorSpecRow(key=k, value=v) for k, v in spec.items()])
            for name, spec in FLAVORS.items())
        for table, rows in ((HostRow, host_rows), (PoolRow, pool_rows),
                            (ServerRow, server_rows), (DeviceRow, device_rows)):
            for start in range(0, len(rows), 50_000):
                session.execute(insert(table.__table__), rows[start:start + 50_000])
    store.close()
    return {"hosts": hosts, "devices": len(device_rows), "servers": servers,
            "populate_s": round(time.perf_counter() - started, 1)}


# --- the controller -----------------------------------------------------------------------


def get(serve: Serve, path: str) -> httpx.Response:
    response = serve.http.get(f"/v2/admin{path}")
    response.raise_for_status()
    return response


def latency_ms(serve: Serve, path: str, repeats: int = REPEATS) -> dict[str, Any]:
    samples = []
    for _ in range(repeats):
        started = time.perf_counter()
        response = get(serve, path)
        samples.append((time.perf_counter() - started) * 1e3)
    return {"median_ms": round(statistics.median(samples), 1),
            "min_ms": round(min(samples), 1), "bytes": len(response.content)}


def _per_round(costs: list[float]) -> dict[str, Any]:
    per_round = statistics.median(costs)
    # The page makes one round every 10 s: 6 a minute.
    return {"cpu_ms_per_round": round(per_round, 1),
            "cpu_s_per_minute": round(per_round * 6 / 1e3, 3),
            "core_percent": round(per_round / 10_000 * 100, 2)}


def round_cpu_ms(serve: Serve, paths: list[str], rounds: int = ROUNDS) -> dict[str, Any]:
    """The controller CPU one round of plain requests costs (median of `rounds`)."""
    costs = []
    for _ in range(rounds):
        before = serve.cpu_seconds()
        for path in paths:
            get(serve, path)
        costs.append((serve.cpu_seconds() - before) * 1e3)
        time.sleep(0.5)
    return {"requests": paths, **_per_round(costs)}


class Page:
    """The fleet page's requests (`fleet.js`): each polled list asked with the ETag of the
    answer kept for it, the events since the newest one seen."""

    LISTS = {"hosts": "/os-hosts?limit=100", "pools": "/os-pci-stats?limit=1000",
             "servers": "/servers?all_projects=true&limit=100"}

    def __init__(self, serve: Serve) -> None:
        self.serve = serve
        self.kept: dict[str, httpx.Response] = {}
        self.newest: int | None = None
        self.statuses: dict[str, int] = {}

    def ask(self, path: str) -> httpx.Response:
        kept = self.kept.get(path)
        tag = kept.headers.get("ETag") if kept is not None else None
        response = self.serve.http.get(f"/v2/admin{path}",
                                       headers={"If-None-Match": tag} if tag else {})
        self.statuses[path.split("?")[0]] = response.status_code
        if response.status_code == 304 and kept is not None:
            return kept
        response.raise_for_status()
        self.kept[path] = response
        return response

    def round(self) -> dict[str, int]:
        """One round; the status of each answer."""
        self.statuses = {}
        before = self.kept.get("/os-fleet-summary")
        summary = self.ask("/os-fleet-summary")
        # As the page sees it: a 304, or the same summary (from a controller without
        # ETags, whose page compared them), has not moved.
        moved = before is None or summary.json() != before.json()
        newest = summary.json()["summary"]["last_event"]
        if newest != self.newest:
            get(self.serve, f"/os-events?limit=50&after={self.newest or 0}")
            self.statuses["/os-events"] = 200
            self.newest = newest
        for name in ("hosts", "pools", "servers") if moved else ("hosts",):
            self.ask(self.LISTS[name])
        return self.statuses


class Changes:
    """Boots that each claim a GPU: a change of the index, the summary and the lists."""

    FLAVOR = "bench.gpu"

    def __init__(self, serve: Serve) -> None:
        self.serve = serve
        self.made = 0
        http = serve.http
        http.post("/v2/admin/flavors", json={"flavor": {"name": self.FLAVOR}}
                  ).raise_for_status()
        http.post(f"/v2/admin/flavors/{self.FLAVOR}/os-extra_specs", json={
            "extra_specs": {"pci_passthrough:pci_flavor": "1:bigGPU"}}).raise_for_status()

    def make(self) -> None:
        self.made += 1
        self.serve.http.post("/v2/admin/servers", json={"server": {
            "name": f"changed-{self.made}", "flavorRef": self.FLAVOR}}).raise_for_status()


def page_cpu_ms(serve: Serve, page: Page, changes: Changes | None,
                rounds: int = ROUNDS) -> dict[str, Any]:
    """The controller CPU one round of the page costs (median of `rounds`), each after a
    change (not counted) if `changes`."""
    costs, statuses = [], []
    for _ in range(rounds):
        if changes is not None:
            changes.make()
        before = serve.cpu_seconds()
        statuses.append(page.round())
        costs.append((serve.cpu_seconds() - before) * 1e3)
        time.sleep(0.5)
    return {**_per_round(costs), "answers_of_the_last_round": statuses[-1]}


def latency_after_change_ms(serve: Serve, changes: Changes, path: str) -> dict[str, Any]:
    samples = []
    for _ in range(REPEATS):
        changes.make()
        started = time.perf_counter()
        response = get(serve, path)
        samples.append((time.perf_counter() - started) * 1e3)
    return {"median_ms": round(statistics.median(samples), 1),
            "min_ms": round(min(samples), 1), "bytes": len(response.content)}


def run_new(serve: Serve, servers: int) -> dict[str, Any]:
    middle = f"00000000-0000-4000-8000-{servers // 2:012d}"
    changes = Changes(serve)
    latency = {
        "os-hosts (a page of 100)": latency_ms(serve, "/os-hosts"),
        "os-hosts?limit=1000": latency_ms(serve, "/os-hosts?limit=1000"),
        "os-pci-stats (a page of 100)": latency_ms(serve, "/os-pci-stats"),
        "os-pci-stats?limit=1000": latency_ms(serve, "/os-pci-stats?limit=1000"),
        "os-pci-flavor-stats (every flavor, every host)":
            latency_ms(serve, "/os-pci-flavor-stats"),
        "os-fleet-summary": latency_ms(serve, "/os-fleet-summary"),
        "os-pci-flavor-stats right after a change": latency_after_change_ms(
            serve, changes, "/os-pci-flavor-stats"),
        "os-fleet-summary right after a change": latency_after_change_ms(
            serve, changes, "/os-fleet-summary"),
        "servers (a page of 100)": latency_ms(serve, "/servers?all_projects=true"),
        "servers?limit=1000": latency_ms(serve, "/servers?all_projects=true&limit=1000"),
        "servers?marker=<the middle one>": latency_ms(
            serve, f"/servers?all_projects=true&marker={middle}"),
    }
    page = Page(serve)
    page.round()  # the page's first round: everything
    return {
        "latency": latency,
        "fleet_page": {"round_at_rest": page_cpu_ms(serve, page, None),
                       "round_after_a_change": page_cpu_ms(serve, page, changes)},
        "summary": get(serve, "/os-fleet-summary").json()["summary"],
    }


def run_old(serve: Serve) -> dict[str, Any]:
    paths = ["/os-hosts", "/os-pci-stats", "/os-pci-flavor-stats",
             "/servers?all_projects=true", "/os-events?limit=50"]
    return {
        "latency": {"os-hosts (whole)": latency_ms(serve, "/os-hosts", 3),
                    "os-pci-stats (whole)": latency_ms(serve, "/os-pci-stats", 3),
                    "os-pci-flavor-stats (whole)": latency_ms(serve, "/os-pci-flavor-stats", 3),
                    "servers (whole)": latency_ms(serve, "/servers?all_projects=true", 3)},
        "fleet_page": {"round": round_cpu_ms(serve, paths, 3)},
    }


def rss_mib(pid: int, field: str = "VmRSS") -> int:
    """A process's resident memory (`VmHWM`: its peak so far), in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) // 1024
    raise RuntimeError(f"no {field} in /proc/{pid}/status")


def populated(src: Path, data: Path, size: dict[str, int]) -> dict[str, Any]:
    """The fleet in `data`: populated with the tree `src`, unless a run left it there."""
    figures = data / "fleet.json"
    if figures.exists() and json.loads(figures.read_text())["hosts"] == size["hosts"]:
        return {**json.loads(figures.read_text()), "reused": True}
    populate = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--part", "populate", str(data),
         str(size["hosts"]), str(size["servers"])],
        check=True, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(src)})
    figures.write_text(populate.stdout)
    return json.loads(populate.stdout)


def measure(src: Path, data: Path, size: dict[str, int], old: bool,
            start_only: bool = False) -> dict[str, Any]:
    fleet = populated(src, data, size)
    serve = Serve(src, data, "--heartbeat-timeout", "86400", start_timeout=900)
    try:
        start = {"serve_start_s": serve.start_s, "cpu_s": round(serve.cpu_seconds(), 1),
                 "rss_mib": rss_mib(serve.process.pid)}
        figures = ({} if start_only else
                   run_old(serve) if old else run_new(serve, size["servers"]))
        start["peak_rss_mib"] = rss_mib(serve.process.pid, "VmHWM")
        return {"fleet": fleet, "start": start, **figures}
    finally:
        serve.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--baseline", metavar="REV")
    parser.add_argument("--data", metavar="DIR", type=Path,
                        help="keep the populated store here, and reuse it next time")
    parser.add_argument("--start-only", action="store_true",
                        help="measure the controller's start-up only")
    parser.add_argument("--unpaged", action="store_true",
                        help="measure the baseline the old way (a revision before paged views)")
    parser.add_argument("--part", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.part:
        _, data_dir, hosts, servers = args.part
        print(json.dumps(part_populate(data_dir, int(hosts), int(servers))))
        return
    size = QUICK if args.quick else FULL
    result: dict[str, Any] = {"quick": args.quick, "machine": {
        "cpus": os.cpu_count(), "python": platform.python_version(),
        "load_1min": round(os.getloadavg()[0], 2)}}
    with tempfile.TemporaryDirectory(prefix="passthru-views-") as directory:
        work = Path(directory)
        (work / "new").mkdir()
        result["after"] = measure(
            ROOT / "src", args.data / "new" if args.data else work / "new" / "data", size,
            old=False, start_only=args.start_only)
        if args.baseline:
            (work / "old").mkdir()
            src = extract(args.baseline, work / "old")
            result["before"] = {"rev": args.baseline, **measure(
                src, args.data / "old" if args.data else work / "old" / "data", size,
                old=args.unpaged, start_only=args.start_only)}
    result["machine"]["load_1min_after"] = round(os.getloadavg()[0], 2)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
