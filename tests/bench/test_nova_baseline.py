"""The Nova baseline runs Placement's own allocation_candidates (openstack-placement in
its own virtualenv, made on first use) and Nova's filters over only those candidates'
hosts, on a tiny fleet. Counts are checked, never timings."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
HOSTS = 20


def _run(*command: str) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PASSTHRU_")}
    env["PYTHONPATH"] = str(ROOT / "src")
    done = subprocess.run(list(command), env=env, capture_output=True, text=True,
                          timeout=900, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    report: dict[str, Any] = json.loads(done.stdout)
    return report


@pytest.mark.slow
def test_nova_is_placement_then_filters_over_the_candidates() -> None:
    report = _run(sys.executable, str(ROOT / "bench" / "scheduler.py"), "--part", "nova",
                  str(HOSTS), "1")
    assert report["max_placement_results"] == 1000
    assert report["placement"]["providers"] == HOSTS * 7  # a root, 2 PFs' VFs, 4 GPUs
    kinds = report["per_kind"]
    # One VF provider on physnet1 per host; 4 GPUs x that VF provider; 4 x 3 GPU pairs.
    requests = {"vf": HOSTS, "gpu+vf": 4 * HOSTS, "2gpu-numa": 12 * HOSTS}
    for kind, expected in requests.items():
        assert kinds[kind]["placement_allocation_requests"] == expected
        assert kinds[kind]["nova_filtered_hosts"] == HOSTS
        assert kinds[kind]["nova_hosts_passing"] == HOSTS
        assert kinds[kind]["ratio_nova_total_over_passthru"] > 0


def test_placement_returns_at_most_the_limit() -> None:
    python = ROOT / "bench" / ".venv-placement" / "bin" / "python"
    if not python.exists():  # made by the test above, or here
        test_nova_is_placement_then_filters_over_the_candidates()
    report = _run(str(python), str(ROOT / "bench" / "placement_candidates.py"),
                  str(HOSTS), "100", "1")
    kinds = report["per_kind"]
    assert kinds["vf"]["allocation_requests"] == HOSTS
    assert kinds["2gpu-numa"]["allocation_requests"] == 100
