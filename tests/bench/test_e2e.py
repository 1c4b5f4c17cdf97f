"""bench/e2e.py runs end to end on a tiny fleet: a real `passthru serve`, three real
agents, every server ACTIVE, and JSON with every figure the benchmark promises. Only the
shape of the output is checked, never a timing."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_e2e_boots_every_server_and_reports_every_figure() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PASSTHRU_")}
    env["PYTHONPATH"] = str(ROOT / "src")
    # A session of its own: on a timeout the benchmark's controller and agents are
    # killed with it, not left running for the rest of the suite.
    bench = subprocess.Popen(
        [sys.executable, str(ROOT / "bench" / "e2e.py"), "--hosts", "3", "--vms", "6",
         "--clients", "2", "--idle-seconds", "1"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True)
    try:
        stdout, stderr = bench.communicate(timeout=600)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(bench.pid, signal.SIGKILL)
        bench.wait()
    assert bench.returncode == 0, stderr[-3000:]
    report = json.loads(stdout)

    assert report["store"]["engine"] == "sqlite"
    assert report["store"]["synchronous"] in ("OFF", "NORMAL", "FULL", "EXTRA")
    assert len(report["load_avg"]["before"]) == 3
    assert report["fleet"]["agent_processes"] == 3
    assert report["fleet"]["reported_only_hosts"] == 0

    throughput = report["throughput"]
    assert (throughput["placed"], throughput["errors"]) == (6, 0)
    assert throughput["active"] == throughput["expected_active"] == 6
    assert throughput["placements_per_s"] > 0
    for phase in ("placing", "until_active"):
        assert throughput[phase]["controller_cpu_s"] >= 0
        assert "controller_cpu_ms_per_boot" in throughput[phase]
    assert [run["clients"] for run in report["latency"]] == [1, 16]
    for run in [*report["latency"], throughput]:
        for figure in ("time_to_202", "time_to_active"):
            assert set(run[figure]) >= {"p50", "p99"}
            assert run[figure]["p50"] <= run[figure]["p99"]
    for run in report["latency"]:
        assert run["active"] == run["boots"] == 6
        assert "controller_cpu_ms_per_boot_net_of_idle" in run

    assert report["in_process"]["placements_per_s"] > 0
    assert report["ratio_rest_over_in_process_placements"] > 0
    assert report["kubernetes_dra"]["cpus"] == 6
    assert all(f["source"].startswith("https://github.com/kubernetes/")
               for f in report["kubernetes_dra"]["figures"])
