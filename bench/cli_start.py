"""CLI start-up benchmark: how long a `passthru` command takes from exec to exit; prints JSON.

    .venv/bin/python bench/cli_start.py [--runs N] [--baseline REV]

Each command runs N times (default 21) as a fresh process, as a shell runs it, after one
untimed run; the figures are the median and the fastest run of wall time and of CPU time
(user + system, the child's own rusage). Measured:

- `python -c pass`: the interpreter's own start, the floor under every command;
- `passthru --help` and `passthru --version`: no request;
- `passthru list`: the server list of a project with a few servers, against a live
  `passthru serve` (SQLite in a temporary data dir) started here and kept up across
  runs, so the figure is the CLI's start-up plus two requests (whoami, servers).

Children run with bytecode caching on (PYTHONDONTWRITEBYTECODE unset): an installed
package has its .pyc files, and compiling the sources on every run would measure the
compiler. `--baseline REV` also times the commands of git revision REV (extracted with
`git archive`) against the same controller, and adds the ratio old / new.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from importlib.metadata import version
from pathlib import Path
from typing import Any

import httpx

from serving import extract, free_port

ROOT = Path(__file__).resolve().parents[1]
PASSTHRU = "from passthru.cli.main import main; main()"
#: Servers in the listed project: enough rows for the table to be drawn.
SERVERS = 3


def child_env(src: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("PASSTHRU_") and k != "PYTHONDONTWRITEBYTECODE"}
    return env | {"PYTHONPATH": str(src), "COLUMNS": "120"}


class Serve:
    """`passthru serve` on a fresh data dir, with a flavor and SERVERS servers."""

    def __init__(self, work: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        data = work / "data"
        self.log = (work / "serve.log").open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-c", PASSTHRU, "serve", "--data-dir", str(data),
             "--listen", f"127.0.0.1:{self.port}", "--rate-limit", "0"],
            env=child_env(ROOT / "src"), stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/openapi.json", timeout=1.0).is_success:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
        else:
            raise RuntimeError(f"passthru serve did not start; see {work / 'serve.log'}")
        self.token = (data / "admin-token").read_text().strip()
        self._seed()

    def _seed(self) -> None:
        with httpx.Client(base_url=self.url, timeout=30.0,
                          headers={"Authorization": f"Bearer {self.token}"}) as http:
            project = http.get("/v2/whoami").raise_for_status().json()["project"]
            http.post(f"/v2/{project}/flavors", json={"flavor": {
                "name": "small", "vcpus": 1, "ram": 512, "disk": 1}}).raise_for_status()
            for i in range(SERVERS):  # with no host they go to ERROR, and are listed so
                http.post(f"/v2/{project}/servers", json={"server": {
                    "name": f"vm{i}", "flavorRef": "small"}})
            listed = http.get(f"/v2/{project}/servers").raise_for_status().json()["servers"]
            if len(listed) != SERVERS:
                raise RuntimeError(f"the controller lists {len(listed)} servers, not {SERVERS}")

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)
        self.log.close()


def timed(argv: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Wall and CPU seconds of one run of `argv` (which must succeed)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    run = subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if run.returncode != 0:
        raise RuntimeError(f"{argv} failed: {run.stderr.decode()[-500:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def measure(argv: list[str], env: dict[str, str], runs: int) -> dict[str, float]:
    timed(argv, env)  # writes the .pyc files, warms the page cache
    walls, cpus = zip(*(timed(argv, env) for _ in range(runs)), strict=True)
    return {"wall_ms": round(statistics.median(walls) * 1000, 1),
            "wall_min_ms": round(min(walls) * 1000, 1),
            "cpu_ms": round(statistics.median(cpus) * 1000, 1),
            "cpu_min_ms": round(min(cpus) * 1000, 1)}


def commands(serve: Serve) -> dict[str, list[str]]:
    cli = [sys.executable, "-c", PASSTHRU]
    return {"python -c pass": [sys.executable, "-c", "pass"],
            "passthru --help": [*cli, "--help"],
            "passthru --version": [*cli, "--version"],
            "passthru list": [*cli, "list", "--url", serve.url, "--token", serve.token]}


def run_all(src: Path, serve: Serve, runs: int) -> dict[str, dict[str, float]]:
    env = child_env(src)
    figures: dict[str, dict[str, float]] = {}
    for name, argv in commands(serve).items():
        try:
            figures[name] = measure(argv, env, runs)
        except RuntimeError:
            if name != "passthru --version":  # older revisions have none
                raise
    floor = figures["python -c pass"]
    for figure in figures.values():
        figure["wall_over_floor_ms"] = round(figure["wall_ms"] - floor["wall_ms"], 1)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=21)
    parser.add_argument("--baseline", metavar="REV",
                        help="also time the CLI of this git revision, against the same "
                             "controller")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="passthru-cli-bench-") as tmp:
        work = Path(tmp)
        serve = Serve(work)
        try:
            load = os.getloadavg()
            result: dict[str, Any] = {
                "benchmark": "cli_start", "runs": args.runs,
                "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                            "load_before": [round(x, 2) for x in load]},
                # typer 0.29 coerces every option value through pydantic (about 100 ms
                # of `list`); pyproject keeps typer below it.
                "libraries": {name: version(name) for name in ("typer", "rich", "pydantic")},
                "listed_servers": SERVERS,
                "commands": run_all(ROOT / "src", serve, args.runs),
            }
            if args.baseline:
                old = run_all(extract(args.baseline, work / "baseline"), serve, args.runs)
                result["baseline"] = {"rev": args.baseline, "commands": old,
                                      "ratio_old_over_new": {
                    name: round(figure["wall_ms"] / result["commands"][name]["wall_ms"], 2)
                    for name, figure in old.items() if name in result["commands"]}}
            result["machine"]["load_after"] = [round(x, 2) for x in os.getloadavg()]
        finally:
            serve.stop()
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
