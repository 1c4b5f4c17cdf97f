"""bench/ledger.py runs one round against its baseline: the load/save path of before the
ledger, taken from git (which `scripts/setup.sh` installs) and imported into today's
package, whose modules have moved since. Only the shape of the output is checked, never a
timing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
STEPS = {"claim", "index", "allocate", "delta", "free", "lifecycle"}


def test_the_ledger_bench_measures_every_step_on_both_paths() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PASSTHRU_")}
    env["PYTHONPATH"] = str(ROOT / "src")
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "ledger.py"), "--rounds", "1"],
                          env=env, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout)
    assert [host["devices"] for host in report["hosts"]] == [10, 520, 2056]
    # The baseline is read from this repository's history: a clone without it (a shallow
    # one) measures the ledger alone, and says so.
    history = subprocess.run(["git", "cat-file", "-e", "0ef0178^"], cwd=ROOT,
                             capture_output=True, check=False).returncode == 0
    paths = ("ledger", "full_load_save") if history else ("ledger",)
    if not history:
        assert report["baseline"].startswith("unavailable: git show 0ef0178^ failed")
    for host in report["hosts"]:
        assert set(host) == {"devices", *paths}
        for path in paths:
            assert set(host[path]) == STEPS
            assert all(step["cpu_ms_median"] >= 0 for step in host[path].values())
            assert host[path]["lifecycle"]["cpu_ms_median"] > 0
